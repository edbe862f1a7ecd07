//! The manufacturers' documents feed against a real FTP server (Debian's
//! pure-ftpd, explicit TLS, a virtual user, started by the test on a free
//! port with a temporary root) and against an in-process server that
//! injects the faults a real one cannot show on demand (tests/ftp_support).
//!
//! Polls are driven one at a time (`daemon::ftp::poll`), so every step is
//! a value to assert, never a timing.

mod common;
#[path = "ftp_support/fake.rs"]
mod fake;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::free_port;
use repaero::config::Config;
use repaero::daemon::Db;
use repaero::daemon::ftp::register::{self, DocRow};
use repaero::daemon::ftp::{self as ftp, Manufacturer, PollReport, Settings};
use sha2::{Digest, Sha256};

fn pdf(text: &str) -> Vec<u8> {
    format!("%PDF-1.4\n% {text}\n1 0 obj << >> endobj\n%%EOF\n").into_bytes()
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Settings for one manufacturer `acme` from a `[daemons.ftp]` text; the
/// password comes from `${ACME_FTP_PASSWORD}`.
fn settings(dir: &Path, body: &str, password: &str) -> Settings {
    let text = format!(
        "[daemons.ftp]\nstore = \"{}\"\ntimeout = 20\n[daemons.ftp.manufacturers.acme]\nuser = \"manu\"\npassword = \"${{ACME_FTP_PASSWORD}}\"\n{body}",
        dir.join("store").display()
    );
    let pw = password.to_string();
    let env = move |k: &str| (k == "ACME_FTP_PASSWORD").then(|| pw.clone());
    let cfg = Config::from_text(&text, "repaero.toml", dir, &[], &env).unwrap();
    Settings::from_config(&cfg).unwrap()
}

async fn poll(m: &Manufacturer, db: &Db) -> PollReport {
    ftp::poll(m, db, &|| false).await.unwrap()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn reasons(r: &PollReport) -> BTreeMap<String, String> {
    r.quarantined
        .iter()
        .map(|(p, why)| (p.clone(), why.split(':').next().unwrap_or("").to_string()))
        .collect()
}

/// The register as (reference, language, revision, version, status),
/// sorted here (collations differ between engines).
fn register_rows(url: &str) -> Vec<(String, String, i64, i64, String)> {
    let mut rows: Vec<_> = documents(url)
        .into_iter()
        .map(|d| (d.reference, d.language, d.revision, d.version, d.status))
        .collect();
    rows.sort();
    rows
}

/// The register (read on a thread of its own: the PostgreSQL connection
/// runs its own runtime, not inside the test's).
fn documents(url: &str) -> Vec<DocRow> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let mut conn = repaero::db::open(&url, false).unwrap();
        register::all_documents(conn.as_mut()).unwrap()
    })
    .join()
    .unwrap()
}

/// Every file of the store but the partial and quarantined ones, with its
/// SHA-256; and the partial files.
fn store_files(store: &Path) -> (BTreeMap<String, String>, Vec<PathBuf>) {
    let mut files = BTreeMap::new();
    let mut partial = Vec::new();
    let mut stack = vec![store.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if name != ".quarantine" {
                    stack.push(p);
                }
            } else if p.parent().is_some_and(|d| d.ends_with(".partial")) {
                partial.push(p);
            } else {
                files.insert(p.display().to_string(), sha(&std::fs::read(&p).unwrap()));
            }
        }
    }
    (files, partial)
}

/// The store holds exactly the registered files, each with its checksum,
/// and no partial file.
fn assert_store_matches_register(url: &str, store: &Path) {
    let (files, partial) = store_files(store);
    assert!(partial.is_empty(), "partial files left: {partial:?}");
    let registered: BTreeMap<String, String> = documents(url)
        .into_iter()
        .map(|d| (d.local_path, d.sha256))
        .collect();
    assert_eq!(files, registered);
}

// ---------------------------------------------------------------- pure-ftpd

struct PureFtpd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl PureFtpd {
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    /// Downloads in the transfer log, by path under the root.
    fn gets(&self) -> BTreeMap<String, usize> {
        let log = std::fs::read(self.dir.path().join("xfer.log")).unwrap_or_default();
        let root = self.root().display().to_string();
        let mut out = BTreeMap::new();
        for line in log.split(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(line);
            if let Some(rest) = line.split("\"GET ").nth(1) {
                let path = rest.split('"').next().unwrap_or("");
                let rel = path
                    .strip_prefix(&root)
                    .unwrap_or(path)
                    .trim_start_matches('/');
                *out.entry(rel.to_string()).or_insert(0) += 1;
            }
        }
        out
    }
}

impl Drop for PureFtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sh(dir: &Path, prog: &str, args: &[&str]) {
    let o = Command::new(prog)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e} (scripts/test installs it)"));
    assert!(
        o.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// pure-ftpd on 127.0.0.1 with explicit TLS (a certificate for 127.0.0.1
/// signed by a test CA), one virtual user `manu` mapped to `nobody`,
/// chrooted in a temporary root, downloads logged.
fn start_pure_ftpd() -> PureFtpd {
    let dir = tempfile::Builder::new()
        .prefix("repaero-ftp")
        .tempdir()
        .unwrap();
    let d = dir.path();
    let mut perms = std::fs::metadata(d).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(d, perms).unwrap();
    std::fs::create_dir_all(d.join("root")).unwrap();
    let rsa = ["-newkey", "rsa:2048", "-nodes"];
    sh(
        d,
        "openssl",
        &[
            &["req", "-x509"],
            &rsa[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=repaero FTP test CA",
            ],
        ]
        .concat(),
    );
    sh(
        d,
        "openssl",
        &[
            &["req"],
            &rsa[..],
            &[
                "-keyout",
                "srv.key",
                "-out",
                "srv.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    sh(
        d,
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    let pem = [
        std::fs::read(d.join("srv.key")).unwrap(),
        std::fs::read(d.join("srv.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(d.join("pure.pem"), pem).unwrap();
    // the virtual user
    let mut pw = Command::new("pure-pw")
        .args(["useradd", "manu", "-u", "65534", "-g", "65534", "-d"])
        .arg(d.join("root"))
        .arg("-f")
        .arg(d.join("passwd"))
        .arg("-F")
        .arg(d.join("pdb"))
        .arg("-m")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pure-pw (apt install pure-ftpd; scripts/test does)");
    {
        use std::io::Write;
        let stdin = pw.stdin.as_mut().unwrap();
        stdin.write_all(b"s3cret-pw\ns3cret-pw\n").unwrap();
    }
    assert!(pw.wait().unwrap().success());
    let port = free_port();
    let child = Command::new("pure-ftpd")
        .arg("-S")
        .arg(format!("127.0.0.1,{port}"))
        .arg("-l")
        .arg(format!("puredb:{}", d.join("pdb").display()))
        .args(["-E", "-A", "-H", "-4", "-Y", "1", "-2"])
        .arg(d.join("pure.pem"))
        .arg("-O")
        .arg(format!("clf:{}", d.join("xfer.log").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pure-ftpd (apt install pure-ftpd; scripts/test does)");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    PureFtpd { child, port, dir }
}

fn write(root: &Path, rel: &[u8], content: &[u8], minute: u64) {
    use std::os::unix::ffi::OsStrExt;
    let p = root.join(std::ffi::OsStr::from_bytes(rel));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, content).unwrap();
    set_minute(&p, minute);
}

fn set_minute(p: &Path, minute: u64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_793_000_000 + minute * 60);
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn chmod(p: &Path, mode: u32) {
    let mut perms = std::fs::metadata(p).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, mode);
    std::fs::set_permissions(p, perms).unwrap();
}

const LATIN1: &[u8] = b"C172/SL/SL-S\xe9curit\xe9-01_R0_FR.pdf";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_server_tree_ends_in_the_expected_register_and_store() {
    let srv = start_pure_ftpd();
    let root = srv.root().join("outgoing");
    let a = pdf("SB-26-014 R2 FR");
    let b = pdf("SB-26-015 R0");
    write(&root, b"C172/SB/SB-26-014_R2_FR.pdf", &a, 1);
    write(&root, b"C172/SB/SB-26-015_R0.pdf", &b, 1);
    write(&root, b"C172/SB/SB-26-099_R0.pdf", &pdf("to be removed"), 1);
    let manifest = format!(
        "reference;revision;title;ata_chapter;effective_date;sha256;file\nSB-26-014;2;Fire extinguisher bottle;26;2026-10-01;{};SB-26-014_R2_FR.pdf\nSB-26-015;0;Seat rail;25;2026-10-02;{};SB-26-015_R0.pdf\n",
        sha(&a),
        sha(b"something else")
    );
    write(&root, b"C172/SB/MANIFEST.csv", manifest.as_bytes(), 1);
    write(&root, b"IO-360/MM/MM-IO360-72_R11.pdf", &pdf("MM R11"), 1);
    write(
        &root,
        b"PA-28/SL/SL-28-003_R0.pdf",
        &pdf("SL-28-003 first"),
        1,
    );
    write(&root, b"PA-28/SL/SL-28-004_R1.pdf", &pdf("SL-28-004"), 1);
    write(&root, b"PA-28/SI/notes.pdf", &pdf("no pattern"), 1);
    write(&root, b"PA-28/SI/SI-28-001_R0.pdf", b"", 1);
    write(
        &root,
        b"PA-28/IPC/IPC-28-100_R3.pdf",
        b"<html>not a pdf</html>",
        1,
    );
    write(&root, LATIN1, &pdf("Latin-1"), 1);
    write(&root, b"C172/MM/MM-172-05_R0.pdf", &pdf("growing")[..20], 1);
    write(&root, b"secret/SB-00-000_R0.pdf", &pdf("secret"), 1);
    write(&root, b"README.txt", b"read me", 1);
    // everything readable by the virtual user, but the secret folder
    sh(&srv.root(), "chmod", &["-R", "a+rX", "."]);
    chmod(&root.join("secret"), 0o000);

    let dir = tempfile::tempdir().unwrap();
    let s = settings(
        dir.path(),
        &format!(
            "host = \"127.0.0.1\"\nport = {}\ntls = \"explicit\"\nca_file = \"{}\"\nroot = \"/outgoing\"\n",
            srv.port,
            srv.ca().display()
        ),
        "s3cret-pw",
    );
    let m = &s.manufacturers[0];
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let db = Db::new(&url).unwrap();

    // 1: everything is new: listed, nothing fetched
    let r1 = poll(m, &db).await;
    assert_eq!(r1.listing, "mlsd");
    assert_eq!(r1.listed, 12, "{r1:#?}");
    assert_eq!(r1.waiting.len(), 12);
    assert_eq!((r1.retr, r1.registered.len()), (0, 0));
    assert_eq!(r1.unreadable.len(), 1);
    assert_eq!(r1.unreadable[0].0, "secret");
    assert!(r1.unreadable[0].1.starts_with("550"), "{:?}", r1.unreadable);

    // the growing file grows
    {
        use std::io::Write;
        let p = root.join("C172/MM/MM-172-05_R0.pdf");
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&pdf("growing")[20..]).unwrap();
        drop(f);
        set_minute(&p, 2);
    }
    // 2: the stable files are fetched, checked, registered or refused
    let r2 = poll(m, &db).await;
    assert_eq!(
        sorted(r2.registered.clone()),
        vec![
            "C172/SB/SB-26-014_R2_FR.pdf",
            "C172/SB/SB-26-099_R0.pdf",
            "C172/SL/SL-Sécurité-01_R0_FR.pdf",
            "IO-360/MM/MM-IO360-72_R11.pdf",
            "PA-28/SL/SL-28-003_R0.pdf",
            "PA-28/SL/SL-28-004_R1.pdf",
        ]
    );
    assert_eq!(r2.manifests, vec!["C172/SB/MANIFEST.csv"]);
    assert_eq!(
        reasons(&r2),
        BTreeMap::from([
            (
                "C172/SB/SB-26-015_R0.pdf".to_string(),
                "checksum mismatch".to_string()
            ),
            (
                "PA-28/IPC/IPC-28-100_R3.pdf".to_string(),
                "not a .pdf file".to_string()
            ),
            (
                "PA-28/SI/SI-28-001_R0.pdf".to_string(),
                "empty file".to_string()
            ),
            (
                "PA-28/SI/notes.pdf".to_string(),
                "the name does not follow the manufacturer's pattern".to_string()
            ),
        ])
    );
    assert_eq!(r2.waiting, vec!["C172/MM/MM-172-05_R0.pdf"]);
    assert_eq!(
        r2.retr, 9,
        "the manifest and 8 documents; not the bad name nor the empty file"
    );

    // the server changes: a new revision, a file replaced in place, a file
    // touched with the same content, a file removed
    write(&root, b"IO-360/MM/MM-IO360-72_R12.pdf", &pdf("MM R12"), 3);
    write(
        &root,
        b"PA-28/SL/SL-28-003_R0.pdf",
        &pdf("SL-28-003 corrected text"),
        3,
    );
    set_minute(&root.join("PA-28/SL/SL-28-004_R1.pdf"), 3);
    std::fs::remove_file(root.join("C172/SB/SB-26-099_R0.pdf")).unwrap();
    sh(
        &srv.root(),
        "chmod",
        &["-R", "a+rX", "outgoing/IO-360", "outgoing/PA-28"],
    );

    // 3: the grown file is fetched; the changed ones wait for a second
    //    listing; the checksum refusal is fetched again; the removed file's
    //    document is withdrawn
    let r3 = poll(m, &db).await;
    assert_eq!(r3.registered, vec!["C172/MM/MM-172-05_R0.pdf"]);
    assert_eq!(
        sorted(r3.waiting.clone()),
        vec![
            "IO-360/MM/MM-IO360-72_R12.pdf",
            "PA-28/SL/SL-28-003_R0.pdf",
            "PA-28/SL/SL-28-004_R1.pdf"
        ]
    );
    assert_eq!(r3.removed, vec!["C172/SB/SB-26-099_R0.pdf"]);
    assert_eq!(reasons(&r3).len(), 1);
    // 4: the changes are fetched
    let r4 = poll(m, &db).await;
    assert_eq!(
        sorted(r4.registered.clone()),
        vec!["IO-360/MM/MM-IO360-72_R12.pdf", "PA-28/SL/SL-28-003_R0.pdf"]
    );
    assert_eq!(r4.unchanged, vec!["PA-28/SL/SL-28-004_R1.pdf"]);
    assert_eq!(
        reasons(&r4).len(),
        1,
        "third and last try of the checksum refusal"
    );
    // 5: nothing left to fetch
    let r5 = poll(m, &db).await;
    assert_eq!(
        (r5.retr, r5.registered.len(), r5.waiting.len()),
        (0, 0, 0),
        "{r5:#?}"
    );

    let s = |x: &str| x.to_string();
    let expected = vec![
        (s("MM-172-05"), s("EN"), 0, 1, s("current")),
        (s("MM-IO360-72"), s("EN"), 11, 1, s("superseded")),
        (s("MM-IO360-72"), s("EN"), 12, 1, s("current")),
        (s("SB-26-014"), s("FR"), 2, 1, s("current")),
        (s("SB-26-099"), s("EN"), 0, 1, s("withdrawn")),
        (s("SL-28-003"), s("EN"), 0, 1, s("superseded")),
        (s("SL-28-003"), s("EN"), 0, 2, s("current")),
        (s("SL-28-004"), s("EN"), 1, 1, s("current")),
        (s("SL-Sécurité-01"), s("FR"), 0, 1, s("current")),
    ];
    assert_eq!(register_rows(&url), expected);
    let docs = documents(&url);
    let sb = docs.iter().find(|d| d.reference == "SB-26-014").unwrap();
    assert_eq!(
        (
            sb.title.as_deref(),
            sb.ata_chapter.as_deref(),
            sb.effective_date.as_deref(),
            sb.model.as_deref(),
            sb.doc_type.as_deref()
        ),
        (
            Some("Fire extinguisher bottle"),
            Some("26"),
            Some("2026-10-01"),
            Some("C172"),
            Some("SB")
        )
    );
    assert_eq!(sb.sha256, sha(&a));
    assert_eq!(sb.size, a.len() as i64);
    assert_store_matches_register(&url, &dir.path().join("store"));
    // the refused contents are kept apart for an operator
    let q = dir.path().join("store/acme/.quarantine");
    assert_eq!(
        std::fs::read(q.join("PA-28/IPC/IPC-28-100_R3.pdf")).unwrap(),
        b"<html>not a pdf</html>"
    );
    assert_eq!(
        std::fs::read(q.join("C172/SB/SB-26-015_R0.pdf")).unwrap(),
        b
    );

    // a restarted daemon (new connection, new session) fetches nothing
    let before = srv.gets();
    let db2 = Db::new(&url).unwrap();
    let r6 = poll(m, &db2).await;
    assert_eq!(
        (r6.retr, r6.registered.len(), r6.unchanged.len()),
        (0, 0, 0)
    );
    assert_eq!(srv.gets(), before);
    // each file fetched as often as it changed (three tries for the checksum)
    let want: BTreeMap<String, usize> = [
        ("outgoing/C172/SB/MANIFEST.csv", 1),
        ("outgoing/C172/SB/SB-26-014_R2_FR.pdf", 1),
        ("outgoing/C172/SB/SB-26-015_R0.pdf", 3),
        ("outgoing/C172/SB/SB-26-099_R0.pdf", 1),
        ("outgoing/C172/MM/MM-172-05_R0.pdf", 1),
        ("outgoing/IO-360/MM/MM-IO360-72_R11.pdf", 1),
        ("outgoing/IO-360/MM/MM-IO360-72_R12.pdf", 1),
        ("outgoing/PA-28/IPC/IPC-28-100_R3.pdf", 1),
        ("outgoing/PA-28/SL/SL-28-003_R0.pdf", 2),
        ("outgoing/PA-28/SL/SL-28-004_R1.pdf", 2),
    ]
    .into_iter()
    .map(|(p, n)| (p.to_string(), n))
    .collect();
    let mut got = before.clone();
    // the Latin-1 name, as the log writes its bytes
    let latin1: Vec<String> = got.keys().filter(|k| k.contains("SL-S")).cloned().collect();
    assert_eq!(latin1.len(), 1, "{got:?}");
    assert_eq!(got.remove(&latin1[0]), Some(1));
    assert_eq!(got, want);

    // the technician's commands
    let project = dir.path();
    std::fs::write(
        project.join("repaero.toml"),
        format!("[target]\nurl = \"{url}\"\n"),
    )
    .unwrap();
    let out = common::repaero_in(project, &["docs", "path", "SL-28-003"]);
    assert_eq!(common::code(&out), 0, "{}", common::stderr(&out));
    let v2 = docs
        .iter()
        .find(|d| d.reference == "SL-28-003" && d.version == 2)
        .unwrap();
    assert_eq!(common::stdout(&out).trim(), v2.local_path);
    assert_eq!(
        std::fs::read(&v2.local_path).unwrap(),
        pdf("SL-28-003 corrected text")
    );
    let out = common::repaero_in(
        project,
        &[
            "docs",
            "search",
            "extinguisher",
            "--model",
            "c172",
            "--json",
        ],
    );
    let found: serde_json::Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["reference"], "SB-26-014");
    let out = common::repaero_in(project, &["docs", "search", "securite", "--type", "SL"]);
    assert!(
        common::stdout(&out).contains("SL-Sécurité-01"),
        "{}",
        common::stdout(&out)
    );
    let out = common::repaero_in(project, &["docs", "path", "SB-26-099"]);
    assert_eq!(common::code(&out), 2, "withdrawn: no current revision");
    let out = common::repaero_in(project, &["docs", "quarantined"]);
    assert_eq!(
        common::stdout(&out).lines().count(),
        4,
        "{}",
        common::stdout(&out)
    );
    chmod(&root.join("secret"), 0o755);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_an_error_that_does_not_show_the_password() {
    let srv = start_pure_ftpd();
    let dir = tempfile::tempdir().unwrap();
    let s = settings(
        dir.path(),
        &format!(
            "host = \"127.0.0.1\"\nport = {}\ntls = \"explicit\"\nca_file = \"{}\"\n",
            srv.port,
            srv.ca().display()
        ),
        "wrong-Pa55word",
    );
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let db = Db::new(&url).unwrap();
    let e = ftp::poll(&s.manufacturers[0], &db, &|| false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("login refused for user manu: 530"), "{e}");
    assert!(!e.contains("wrong-Pa55word"));
    // and a certificate not trusted is refused
    let s = settings(
        dir.path(),
        &format!(
            "host = \"127.0.0.1\"\nport = {}\ntls = \"explicit\"\n",
            srv.port
        ),
        "s3cret-pw",
    );
    let e = ftp::poll(&s.manufacturers[0], &db, &|| false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("AUTH TLS") && e.to_lowercase().contains("certificate"),
        "{e}"
    );
}

// ---------------------------------------------------------------- faults

fn fake_settings(dir: &Path, port: u16, extra: &str) -> Settings {
    settings(
        dir,
        &format!("host = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nroot = \"/out\"\n{extra}"),
        "pw",
    )
}

fn big(n: usize) -> Vec<u8> {
    let mut v = b"%PDF-1.5\n".to_vec();
    let mut x: u32 = 7;
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push((x & 0xff) as u8);
    }
    v
}

const BIG: &[u8] = b"/out/C172/MM/MM-172-01_R4.pdf";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_transfer_is_resumed_with_rest_and_registered_whole_once() {
    let content = big(1 << 20);
    let mut st = fake::State {
        password: "pw".into(),
        ..Default::default()
    };
    st.put(BIG, &content, 1);
    st.cut.insert(BIG.to_vec(), (300_000, 2));
    let srv = fake::Fake::start(st).await;
    let dir = tempfile::tempdir().unwrap();
    let s = fake_settings(dir.path(), srv.port, "");
    let m = &s.manufacturers[0];
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let db = Db::new(&url).unwrap();
    assert_eq!(poll(m, &db).await.waiting.len(), 1);
    let r = poll(m, &db).await;
    assert_eq!(r.registered, vec!["C172/MM/MM-172-01_R4.pdf"]);
    assert_eq!(r.resumed, 2);
    assert_eq!(
        srv.state.lock().unwrap().retr_of(BIG),
        vec![0, 300_000, 600_000]
    );
    let docs = documents(&url);
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].sha256, sha(&content));
    assert_eq!(std::fs::read(&docs[0].local_path).unwrap(), content);
    assert_store_matches_register(&url, &dir.path().join("store"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rest_a_cut_transfer_starts_again() {
    let content = big(700_000);
    let mut st = fake::State {
        password: "pw".into(),
        no_rest: true,
        ..Default::default()
    };
    st.put(BIG, &content, 1);
    st.cut.insert(BIG.to_vec(), (300_000, 1));
    let srv = fake::Fake::start(st).await;
    let dir = tempfile::tempdir().unwrap();
    let s = fake_settings(dir.path(), srv.port, "");
    let m = &s.manufacturers[0];
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let db = Db::new(&url).unwrap();
    poll(m, &db).await;
    let r = poll(m, &db).await;
    assert_eq!(r.registered.len(), 1, "{r:#?}");
    // the first attempt, the refused resume, the fresh start
    let offsets = srv.state.lock().unwrap().retr_of(BIG);
    assert_eq!(offsets.first(), Some(&0));
    assert_eq!(offsets.last(), Some(&0));
    assert_eq!(documents(&url)[0].sha256, sha(&content));
    assert_store_matches_register(&url, &dir.path().join("store"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_cut_too_often_is_not_registered_and_resumes_after_a_restart() {
    let content = big(1 << 20);
    let mut st = fake::State {
        password: "pw".into(),
        ..Default::default()
    };
    st.put(BIG, &content, 1);
    st.cut.insert(BIG.to_vec(), (300_000, 5));
    let srv = fake::Fake::start(st).await;
    let dir = tempfile::tempdir().unwrap();
    let s = fake_settings(dir.path(), srv.port, "");
    let m = &s.manufacturers[0];
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    {
        let db = Db::new(&url).unwrap();
        poll(m, &db).await;
        let r = poll(m, &db).await;
        assert_eq!(r.registered.len(), 0);
        assert_eq!(r.failed.len(), 1, "{r:#?}");
        assert!(documents(&url).is_empty(), "nothing registered half-done");
        let (files, partial) = store_files(&dir.path().join("store"));
        assert!(files.is_empty());
        assert_eq!(partial.len(), 1);
        assert_eq!(std::fs::metadata(&partial[0]).unwrap().len(), 900_000);
    }
    // a restart: a new connection to the target, the partial file resumed
    let db = Db::new(&url).unwrap();
    let r = poll(m, &db).await;
    assert_eq!(r.registered.len(), 1, "{r:#?}");
    assert_eq!(
        srv.state.lock().unwrap().retr_of(BIG),
        vec![0, 300_000, 600_000, 900_000]
    );
    assert_eq!(documents(&url)[0].sha256, sha(&content));
    assert_store_matches_register(&url, &dir.path().join("store"));
}

/// The tree of the fault tests: Latin-1 name, growing file, unreadable
/// folder, bad name, fake PDF; checked with a listing format.
async fn fake_tree(format: fake::ListFormat, url: &str) {
    let mut st = fake::State {
        password: "pw".into(),
        format: Some(format),
        ..Default::default()
    };
    st.put(b"/out/C172/SB/SB-26-014_R2_FR.pdf", &pdf("a"), 1);
    st.put(
        b"/out/C172/SL/SL-S\xe9curit\xe9-01_R0_FR.pdf",
        &pdf("latin-1"),
        1,
    );
    st.put(b"/out/C172/MM/MM-172-05_R0.pdf", &pdf("grow")[..10], 1);
    st.put(b"/out/PA-28/IPC/IPC-28-100_R3.pdf", b"GIF89a", 1);
    st.put(b"/out/PA-28/SI/notes.pdf", &pdf("x"), 1);
    st.put(b"/out/locked/SB-00-000_R0.pdf", &pdf("locked"), 1);
    st.denied.insert(b"/out/locked".to_vec());
    let srv = fake::Fake::start(st).await;
    let dir = tempfile::tempdir().unwrap();
    let s = fake_settings(dir.path(), srv.port, "");
    let m = &s.manufacturers[0];
    let db = Db::new(url).unwrap();
    let r1 = poll(m, &db).await;
    assert_eq!(
        r1.listing,
        if format == fake::ListFormat::Mlsd {
            "mlsd"
        } else {
            "list"
        }
    );
    assert_eq!(r1.listed, 5, "{r1:#?}");
    assert_eq!(r1.unreadable.len(), 1);
    assert_eq!(r1.unreadable[0].0, "locked");
    // grows between the listings (same minute: the size tells)
    srv.state
        .lock()
        .unwrap()
        .put(b"/out/C172/MM/MM-172-05_R0.pdf", &pdf("grow")[..30], 1);
    let r2 = poll(m, &db).await;
    assert_eq!(
        sorted(r2.registered.clone()),
        vec![
            "C172/SB/SB-26-014_R2_FR.pdf",
            "C172/SL/SL-Sécurité-01_R0_FR.pdf"
        ]
    );
    assert_eq!(r2.waiting, vec!["C172/MM/MM-172-05_R0.pdf"]);
    assert_eq!(reasons(&r2).len(), 2);
    srv.state
        .lock()
        .unwrap()
        .put(b"/out/C172/MM/MM-172-05_R0.pdf", &pdf("grow"), 2);
    let r3 = poll(m, &db).await;
    assert_eq!(r3.waiting.len(), 1);
    let r4 = poll(m, &db).await;
    assert_eq!(r4.registered, vec!["C172/MM/MM-172-05_R0.pdf"]);
    let r5 = poll(m, &db).await;
    assert_eq!(r5.retr, 0);
    // the growing file was fetched once, complete
    let st = srv.state.lock().unwrap();
    assert_eq!(st.retr_of(b"/out/C172/MM/MM-172-05_R0.pdf"), vec![0]);
    assert_eq!(
        st.retr_of(b"/out/C172/SL/SL-S\xe9curit\xe9-01_R0_FR.pdf"),
        vec![0]
    );
    let s = |x: &str| x.to_string();
    assert_eq!(
        register_rows(url),
        vec![
            (s("MM-172-05"), s("EN"), 0, 1, s("current")),
            (s("SB-26-014"), s("FR"), 2, 1, s("current")),
            (s("SL-Sécurité-01"), s("FR"), 0, 1, s("current")),
        ]
    );
    let grown = documents(url)
        .into_iter()
        .find(|d| d.reference == "MM-172-05")
        .unwrap();
    assert_eq!(std::fs::read(&grown.local_path).unwrap(), pdf("grow"));
    assert_store_matches_register(url, &dir.path().join("store"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_by_mlsd_unix_list_and_dos_list_give_the_same_register() {
    for format in [
        fake::ListFormat::Mlsd,
        fake::ListFormat::Unix,
        fake::ListFormat::Dos,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        fake_tree(format, &url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_register_lives_in_postgresql_too() {
    let db = common::pg::TempDb::new("ftp");
    fake_tree(fake::ListFormat::Mlsd, &db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_polls_on_its_interval_then_stops_with_its_heartbeat_written() {
    let mut st = fake::State {
        password: "pw".into(),
        ..Default::default()
    };
    st.put(b"/out/C172/SB/SB-26-014_R2_FR.pdf", &pdf("a"), 1);
    st.put(b"/out/C172/SB/SB-26-015_R0.pdf", b"not a pdf", 1);
    let srv = fake::Fake::start(st).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let text = format!(
        "[target]\nurl = \"{url}\"\n[daemons]\nheartbeat = 1\nbackoff_min = 0.1\nbackoff_max = 1.0\n[daemons.ftp]\nstore = \"{}\"\npoll_interval = 1\n[daemons.ftp.manufacturers.acme]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"manu\"\npassword = \"${{ACME_FTP_PASSWORD}}\"\ntls = \"none\"\nroot = \"/out\"\n",
        dir.path().join("store").display(),
        srv.port
    );
    let env = |k: &str| (k == "ACME_FTP_PASSWORD").then(|| "pw".to_string());
    let cfg = Config::from_text(&text, "repaero.toml", dir.path(), &[], &env).unwrap();
    let feeds = vec![repaero::daemon::feed("ftp", &cfg).unwrap()];
    let rc = repaero::daemon::RuntimeConfig::from_config(&cfg).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(repaero::daemon::supervise(
        std::sync::Arc::new(cfg),
        feeds,
        rc,
        rx,
    ));
    // the second poll (a second later) fetches; wait for it, bounded
    let mut registered = 0;
    for _ in 0..400 {
        registered = documents(&url).len();
        if registered == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(registered, 1);
    tx.send(true).unwrap();
    task.await.unwrap().unwrap();
    let beats = std::thread::spawn(move || {
        let mut conn = repaero::db::open(&url, false).unwrap();
        repaero::daemon::read_heartbeats(conn.as_mut()).unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(beats.len(), 1);
    let b = &beats[0];
    assert_eq!(b["feed"].as_deref(), Some("ftp"));
    assert_eq!(b["state"].as_deref(), Some("stopped"));
    assert_eq!(b["processed"].as_deref(), Some("1"));
    assert_eq!(b["failed"].as_deref(), Some("1"), "the fake PDF");
    let details: serde_json::Value =
        serde_json::from_str(b["details"].as_deref().unwrap()).unwrap();
    assert_eq!(details["manufacturers"]["acme"]["listed"], 2, "{details}");
    // each file fetched once, however many polls ran
    let st = srv.state.lock().unwrap();
    assert_eq!(st.retr_of(b"/out/C172/SB/SB-26-014_R2_FR.pdf"), vec![0]);
    assert_eq!(st.retr_of(b"/out/C172/SB/SB-26-015_R0.pdf"), vec![0]);
}
