//! The stock service end to end through the real binary: scanner files
//! into stock movements (SQLite and PostgreSQL), stock alerts to a real
//! SMTP listener and an HTTP SMS double started here on 127.0.0.1,
//! supplier catalogues and order suggestions. Expected values come from
//! the fixture generators' ground truth (fixtures/*/…expected.json).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn json_file(rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join(rel)).unwrap()).unwrap()
}

/// `repaero` with the project's configuration, a target, a quarantine in
/// `dir`, extra `--set`s and environment.
fn command(
    target: &str,
    dir: &Path,
    sets: &[String],
    env: &[(&str, &str)],
    args: &[&str],
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_repaero"));
    cmd.current_dir(root())
        .arg("--config")
        .arg(root().join("repaero.toml"))
        .arg("--set")
        .arg(format!("target.url={target}"))
        .arg("--set")
        .arg(format!("paths.quarantine={}", dir.join("q").display()));
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    cmd.args(args)
        .env_remove("REPAERO_TARGET")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn run(target: &str, dir: &Path, sets: &[String], env: &[(&str, &str)], args: &[&str]) -> Output {
    command(target, dir, sets, env, args)
        .output()
        .expect("run repaero")
}

/// The same, started in the background, its output kept.
fn spawn(target: &str, dir: &Path, sets: &[String], args: &[&str]) -> std::process::Child {
    command(target, dir, sets, &[], args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start repaero")
}

/// Run a scenario on a fresh SQLite target.
fn on_sqlite(scenario: fn(&Db, &Path)) {
    let dir = tempfile::tempdir().unwrap();
    scenario(&Db::Sqlite(dir.path().join("t.db")), dir.path());
}

/// Run a scenario on a fresh PostgreSQL database (`name` keeps tests apart).
fn on_postgres(name: &str, scenario: fn(&Db, &Path)) {
    let dir = tempfile::tempdir().unwrap();
    let pg = pg::TempDb::new(name);
    scenario(&Db::Pg(pg.url()), dir.path());
}

fn ok(o: Output) -> String {
    assert_eq!(code(&o), 0, "{}\n{}", stdout(&o), stderr(&o));
    stdout(&o)
}

fn import(target: &str, dir: &Path, sets: &[String], files: &[&Path]) -> Vec<Value> {
    let mut args = vec!["scans", "import", "--json"];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let out = ok(run(target, dir, sets, &[], &args));
    serde_json::from_str::<Vec<Value>>(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn quantities(db: &Db) -> BTreeMap<String, i64> {
    db.rows("SELECT reference, quantity FROM parts")
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap(),
                r[1].as_deref().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

fn scans_fixture() -> PathBuf {
    root().join("fixtures/scans/scans.csv")
}

/// Import the fixture file into a freshly migrated stock and check every
/// count and every stock level against the truth; then import it again.
fn scans_match_the_truth(db: &Db, dir: &Path) {
    let url = db.url();
    ok(run(&url, dir, &[], &[], &["migrate", "stock"]));
    let stock = json_file("fixtures/stock/stock.expected.json");
    let truth = json_file("fixtures/scans/scans.expected.json");
    let before = quantities(db);
    for (r, v) in stock["part_values"].as_object().unwrap() {
        assert_eq!(before[r], v[0].as_i64().unwrap(), "{r} after the migration");
    }

    let reports = import(&url, dir, &[], &[&scans_fixture()]);
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r["status"], "imported");
    for k in ["lines", "accepted", "already", "incomplete"] {
        assert_eq!(r[k], truth[k], "{k}");
    }
    let want: BTreeMap<String, u64> = serde_json::from_value(truth["rejected"].clone()).unwrap();
    let got: BTreeMap<String, u64> = serde_json::from_value(r["reasons"].clone()).unwrap();
    assert_eq!(got, want, "rejects by reason");
    assert_eq!(r["rejected"].as_u64().unwrap(), want.values().sum::<u64>());

    // each part's stock moved by exactly its net movement, the others not
    let after = quantities(db);
    let net: BTreeMap<String, i64> = serde_json::from_value(truth["net"].clone()).unwrap();
    for (reference, q) in &before {
        assert_eq!(
            after[reference],
            q + net.get(reference).copied().unwrap_or(0),
            "{reference}"
        );
    }
    assert_eq!(
        db.one("SELECT count(*) FROM stock_movements"),
        truth["accepted"].to_string()
    );
    // the last movement of a part records the stock it left
    for (reference, q) in &after {
        let last = db.rows(&format!(
            "SELECT stock_after FROM stock_movements WHERE reference = '{reference}' ORDER BY scanned_at DESC, line DESC"
        ));
        if let Some(row) = last.first() {
            assert_eq!(
                row[0].as_deref(),
                Some(q.to_string().as_str()),
                "{reference}"
            );
        }
    }
    // every rejected line is in _rejects, with the file and its line number
    assert_eq!(
        db.one("SELECT count(*) FROM _rejects WHERE job = 'scans'"),
        r["rejected"].to_string()
    );
    let lines: Vec<i64> = db
        .rows("SELECT source_row FROM _rejects WHERE job = 'scans' AND source LIKE '%scans.csv' ORDER BY source_row")
        .into_iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(lines.len() as u64, r["rejected"].as_u64().unwrap());
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "{lines:?}");
    // the 2 MB line is rejected by its start, not stored whole
    let longest: usize = db
        .rows("SELECT record FROM _rejects WHERE job = 'scans'")
        .into_iter()
        .map(|r| r[0].as_deref().map_or(0, str::len))
        .max()
        .unwrap();
    assert!(longest < 70_000, "a rejected record of {longest} bytes");
    let quarantine = r["quarantine"].as_str().expect("quarantine file");
    let text = std::fs::read_to_string(quarantine).unwrap();
    assert_eq!(
        text.lines().count() as u64,
        1 + r["rejected"].as_u64().unwrap()
    );
    assert!(text.contains("stock: would go below zero"), "{text}");

    // the same file again: nothing changes
    let movements = db.rows("SELECT * FROM stock_movements ORDER BY line_id");
    let again = import(&url, dir, &[], &[&scans_fixture()]);
    assert!(
        again[0]["status"]
            .as_str()
            .unwrap()
            .starts_with("already imported"),
        "{again:?}"
    );
    assert_eq!(again[0]["accepted"], 0);
    assert_eq!(quantities(db), after);
    assert_eq!(
        db.rows("SELECT * FROM stock_movements ORDER BY line_id"),
        movements
    );
    assert_eq!(
        db.one("SELECT count(*) FROM _rejects WHERE job = 'scans'"),
        r["rejected"].to_string()
    );

    // a new export that repeats three lines already imported: only the new
    // line is applied
    let text = std::fs::read(scans_fixture()).unwrap();
    let mut repeat: Vec<&[u8]> = text.split(|b| *b == b'\n').take(4).collect();
    let new_line = b"2026-11-20T10:00:00;MOT-1001;2;OUT;J. Martin;A-01\r".to_vec();
    repeat.push(&new_line);
    let mut second = repeat.join(&b'\n');
    second.push(b'\n');
    let path = dir.join("export-2.csv");
    std::fs::write(&path, second).unwrap();
    let r2 = import(&url, dir, &[], &[&path]);
    assert_eq!(
        (r2[0]["lines"].as_u64(), r2[0]["already"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(r2[0]["accepted"], 1);
    assert_eq!(quantities(db)["MOT-1001"], after["MOT-1001"] - 2);
    assert_ledger(db, &before);
}

#[test]
fn scans_import_into_sqlite_matches_the_truth_and_a_reimport_is_a_no_op() {
    on_sqlite(scans_match_the_truth);
}

#[test]
fn scans_import_into_postgres_matches_the_truth_and_a_reimport_is_a_no_op() {
    on_postgres("scans", scans_match_the_truth);
}

#[test]
fn below_zero_accept_applies_the_movement_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::Sqlite(dir.path().join("t.db"));
    let url = db.url();
    ok(run(&url, dir.path(), &[], &[], &["migrate", "stock"]));
    let before = quantities(&db);
    let sets = vec!["scans.below_zero=\"accept\"".to_string()];
    let r = &import(&url, dir.path(), &sets, &[&scans_fixture()])[0];
    let truth = json_file("fixtures/scans/scans.expected.json");
    assert_eq!(
        r["accepted"].as_u64(),
        truth["accepted"].as_u64().map(|n| n + 1)
    );
    // each OUT that left the stock under zero is counted, the first being
    // the fixture's OUT of 100000 (later clean OUTs of the part follow)
    let under = db.rows(
        "SELECT quantity FROM stock_movements WHERE direction = 'OUT' AND stock_after < 0 ORDER BY line",
    );
    assert_eq!(r["below_zero"].as_u64(), Some(under.len() as u64));
    assert_eq!(under[0][0].as_deref(), Some("100000"));
    assert!(r["reasons"].get("stock: would go below zero").is_none());
    // the fixture's below-zero line: HYD-2040 (by its EAN-13) OUT 100000
    let hyd = json_file("fixtures/stock/stock.expected.json")["barcodes"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, r)| *r == "HYD-2040")
        .map(|(b, _)| b.clone())
        .unwrap();
    let text = String::from_utf8_lossy(&std::fs::read(scans_fixture()).unwrap()).into_owned();
    assert!(text.contains(&format!(";{hyd};100000;OUT;")));
    let net = truth["net"]["HYD-2040"].as_i64().unwrap();
    assert_eq!(
        quantities(&db)["HYD-2040"],
        before["HYD-2040"] + net - 100_000
    );
    assert_ledger(&db, &before);
}

// ---------------------------------------------------------------------------
// Test peers: an SMTP listener and an HTTP SMS gateway double.

/// A message as the SMTP listener received it.
#[derive(Debug, Clone)]
struct Mail {
    from: String,
    to: Vec<String>,
    data: String,
    /// Received over TLS (STARTTLS or smtps).
    tls: bool,
}

/// How the SMTP listener secures its sessions.
#[derive(Clone)]
enum Secure {
    Plain,
    /// Offers STARTTLS, and refuses mail before it.
    StartTls(Arc<rustls::ServerConfig>),
    /// TLS from the first byte (smtps).
    Tls(Arc<rustls::ServerConfig>),
}

/// A minimal SMTP server (the RFC 5321 commands lettre sends, STARTTLS
/// included), keeping every message it accepts.
fn smtp_listener() -> (u16, Arc<Mutex<Vec<Mail>>>) {
    smtp_listener_with(Secure::Plain)
}

fn smtp_listener_with(secure: Secure) -> (u16, Arc<Mutex<Vec<Mail>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mails = Arc::new(Mutex::new(Vec::new()));
    let store = mails.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let store = store.clone();
            let secure = secure.clone();
            std::thread::spawn(move || match secure {
                Secure::Plain => smtp_session(Box::new(conn), &store, None, false, true),
                Secure::StartTls(cfg) => {
                    smtp_session(Box::new(conn), &store, Some(cfg), false, true)
                }
                Secure::Tls(cfg) => {
                    let tls =
                        rustls::StreamOwned::new(rustls::ServerConnection::new(cfg).unwrap(), conn);
                    smtp_session(Box::new(tls), &store, None, true, true)
                }
            });
        }
    });
    (port, mails)
}

/// A byte stream, plain or TLS.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One session over `conn`; `starttls` offers the upgrade, `secured`
/// says the session is encrypted, `greet` sends the banner (not after
/// STARTTLS: the client goes on with EHLO).
fn smtp_session(
    conn: Box<dyn Stream>,
    store: &Mutex<Vec<Mail>>,
    starttls: Option<Arc<rustls::ServerConfig>>,
    secured: bool,
    greet: bool,
) {
    let mut input = BufReader::new(conn);
    let say = |input: &mut BufReader<Box<dyn Stream>>, s: &str| {
        let _ = input.get_mut().write_all(s.as_bytes());
        let _ = input.get_mut().flush();
    };
    if greet {
        say(&mut input, "220 test-smtp ESMTP\r\n");
    }
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_string();
        let verb = cmd
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" if starttls.is_some() => say(
                &mut input,
                "250-test-smtp\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
            ),
            "EHLO" => say(&mut input, "250-test-smtp\r\n250 8BITMIME\r\n"),
            "STARTTLS" if starttls.is_some() => {
                say(&mut input, "220 go ahead\r\n");
                let cfg = starttls.unwrap();
                let conn = input.into_inner();
                let tls =
                    rustls::StreamOwned::new(rustls::ServerConnection::new(cfg).unwrap(), conn);
                return smtp_session(Box::new(tls), store, None, true, false);
            }
            "MAIL" if starttls.is_some() => say(&mut input, "530 must issue STARTTLS first\r\n"),
            "HELO" | "NOOP" => say(&mut input, "250 ok\r\n"),
            "RSET" => {
                from.clear();
                to.clear();
                say(&mut input, "250 ok\r\n")
            }
            "MAIL" => {
                from = cmd[cmd.find(':').unwrap() + 1..].trim().to_string();
                say(&mut input, "250 ok\r\n")
            }
            "RCPT" => {
                to.push(cmd[cmd.find(':').unwrap() + 1..].trim().to_string());
                say(&mut input, "250 ok\r\n")
            }
            "DATA" => {
                say(&mut input, "354 end with <CRLF>.<CRLF>\r\n");
                let mut data = String::new();
                loop {
                    line.clear();
                    if input.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    data.push_str(&line);
                }
                store.lock().unwrap().push(Mail {
                    from: from.clone(),
                    to: std::mem::take(&mut to),
                    data,
                    tls: secured,
                });
                say(&mut input, "250 queued\r\n")
            }
            "QUIT" => {
                say(&mut input, "221 bye\r\n");
                return;
            }
            _ => say(&mut input, "502 not implemented\r\n"),
        }
    }
}

/// A request as the SMS double received it.
#[derive(Debug, Clone)]
struct Sms {
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: String,
}

/// An HTTP SMS gateway double: records each request and answers the next
/// status of `statuses` (200 when none is left).
type Shared<T> = Arc<Mutex<Vec<T>>>;

fn sms_double() -> (u16, Shared<Sms>, Shared<u16>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let statuses = Arc::new(Mutex::new(Vec::<u16>::new()));
    let (g, s) = (got.clone(), statuses.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut out = conn.try_clone().unwrap();
            let mut input = BufReader::new(conn);
            let mut request_line = String::new();
            if input.read_line(&mut request_line).unwrap_or(0) == 0 {
                continue;
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            let mut headers = BTreeMap::new();
            loop {
                let mut h = String::new();
                if input.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            input.read_exact(&mut body).unwrap();
            g.lock().unwrap().push(Sms {
                path,
                authorization: headers.get("authorization").cloned(),
                content_type: headers.get("content-type").cloned(),
                body: String::from_utf8(body).unwrap(),
            });
            let status = {
                let mut q = s.lock().unwrap();
                if q.is_empty() { 200 } else { q.remove(0) }
            };
            let answer = if status == 200 {
                "{\"status\":\"queued\"}"
            } else {
                "{\"error\":\"gateway overloaded\"}"
            };
            let _ = write!(
                out,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (port, got, statuses)
}

fn scan_file(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let p = dir.join(name);
    let mut text = String::from("horodatage;code;quantité;sens;opérateur;emplacement\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn an_alert_reaches_mail_and_sms_once_per_crossing_of_the_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = Db::Sqlite(d.join("t.db"));
    let url = db.url();
    let (smtp, mails) = smtp_listener();
    let (http, sms, statuses) = sms_double();
    let sets: Vec<String> = vec![
        format!("alerts.email.server=smtp+plain://127.0.0.1:{smtp}"),
        "alerts.email.from=repaero@repaero.fr".into(),
        "alerts.email.to=[\"magasin@repaero.fr\", \"bras-droit@repaero.fr\"]".into(),
        format!("alerts.sms.url=http://127.0.0.1:{http}/v1/sms"),
        "alerts.sms.to=[\"+33600000001\"]".into(),
        "alerts.sms.body={\"to\": \"{to}\", \"text\": \"Stock bas {reference} ({designation}) : {quantity} <= {minimum}\"}".into(),
        "alerts.sms.authorization=Bearer ${SMS_TOKEN}".into(),
        // the workbook has two parts already at their minimum: keep them
        // out, so the messages are those of the movements below
        "alerts.minimums.AVI-3001=0".into(),
        "alerts.minimums.TRN-2005=0".into(),
    ];
    let env = [("SMS_TOKEN", "tok-123")];
    let imp = |name: &str, lines: &[&str]| -> Value {
        let f = scan_file(d, name, lines);
        let out = ok(run(
            &url,
            d,
            &sets,
            &env,
            &["scans", "import", "--json", f.to_str().unwrap()],
        ));
        serde_json::from_str::<Vec<Value>>(&out).unwrap().remove(0)
    };
    ok(run(&url, d, &sets, &env, &["migrate", "stock"]));
    let counts = || (mails.lock().unwrap().len(), sms.lock().unwrap().len());
    assert_eq!(counts(), (0, 0));
    let hyd = |db: &Db| db.one("SELECT quantity FROM parts WHERE reference = 'HYD-2040'");
    assert_eq!(hyd(&db), "5");
    assert_eq!(
        db.one("SELECT min_quantity FROM parts WHERE reference = 'HYD-2040'"),
        "2"
    );

    // 5 → 2: at its minimum, in two movements of one file: one alert
    let r = imp(
        "1.csv",
        &[
            "2026-11-21T08:00:00;HYD-2040;1;OUT;J. Martin;B2-04",
            "2026-11-21T08:00:05;3762843147577;2;OUT;J. Martin;B2-04",
        ],
    );
    assert_eq!(r["accepted"], 2);
    assert_eq!(r["alerts_raised"], serde_json::json!(["HYD-2040 (2 ≤ 2)"]));
    assert_eq!(hyd(&db), "2");
    assert_eq!(counts(), (1, 1));
    {
        let m = &mails.lock().unwrap()[0];
        assert_eq!(m.from, "<repaero@repaero.fr>");
        assert_eq!(
            m.to,
            vec!["<magasin@repaero.fr>", "<bras-droit@repaero.fr>"]
        );
        assert!(m.data.contains("HYD-2040"), "{}", m.data);
        assert!(m.data.contains("Subject: "), "{}", m.data);
        let s = &sms.lock().unwrap()[0];
        assert_eq!(s.path, "/v1/sms");
        assert_eq!(s.authorization.as_deref(), Some("Bearer tok-123"));
        assert_eq!(s.content_type.as_deref(), Some("application/json"));
        let body: Value = serde_json::from_str(&s.body).unwrap();
        let designation = db.one("SELECT designation FROM parts WHERE reference = 'HYD-2040'");
        assert_eq!(
            body,
            serde_json::json!({"to": "+33600000001", "text": format!("Stock bas HYD-2040 ({designation}) : 2 <= 2")})
        );
    }

    // 2 → 1: still under its minimum, no new message
    let r = imp(
        "2.csv",
        &["2026-11-21T09:00:00;HYD-2040;1;OUT;C. Lefèvre;B2-04"],
    );
    assert_eq!(r["alerts_raised"], serde_json::json!([]));
    assert_eq!(counts(), (1, 1));
    // `alerts check` finds nothing to send either
    ok(run(&url, d, &sets, &env, &["alerts", "check"]));
    assert_eq!(counts(), (1, 1));

    // 1 → 6: back above, the alert is cleared
    let r = imp(
        "3.csv",
        &["2026-11-22T10:00:00;HYD-2040;5;IN;A. Nguyen;B2-04"],
    );
    assert_eq!(r["alerts_cleared"], serde_json::json!(["HYD-2040 (6 > 2)"]));
    let list: Vec<Value> = serde_json::from_str(&ok(run(
        &url,
        d,
        &sets,
        &env,
        &["alerts", "list", "--all", "--json"],
    )))
    .unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0]["cleared_at"].is_string(), "{list:?}");
    assert!(list[0]["email_sent_at"].is_string() && list[0]["sms_sent_at"].is_string());
    assert_eq!(
        ok(run(&url, d, &sets, &env, &["alerts", "list"])).trim(),
        "no open alert"
    );

    // 6 → 1: a second crossing, a second alert; the gateway fails this time
    statuses.lock().unwrap().push(503);
    let out = run(
        &url,
        d,
        &sets,
        &env,
        &[
            "scans",
            "import",
            scan_file(
                d,
                "4.csv",
                &["2026-11-23T07:00:00;HYD-2040;5;OUT;J. Martin;B2-04"],
            )
            .to_str()
            .unwrap(),
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("SMS for HYD-2040") && stderr(&out).contains("503"),
        "{}",
        stderr(&out)
    );
    assert_eq!(counts(), (2, 2), "the mail went, the SMS was tried");
    assert!(mails.lock().unwrap()[1].data.contains("HYD-2040"));
    // the check retries the SMS only
    let out: Value = serde_json::from_str(&ok(run(
        &url,
        d,
        &sets,
        &env,
        &["alerts", "check", "--json"],
    )))
    .unwrap();
    assert_eq!(out["sent"]["sms"], serde_json::json!(["HYD-2040"]));
    assert_eq!(out["sent"]["email"], serde_json::json!([]));
    assert_eq!(counts(), (2, 3));
    ok(run(&url, d, &sets, &env, &["alerts", "check"]));
    assert_eq!(counts(), (2, 3));
    assert_eq!(db.one("SELECT count(*) FROM stock_alerts"), "2");
    assert_eq!(
        db.one("SELECT count(*) FROM stock_alerts WHERE cleared_at IS NULL"),
        "1"
    );
    // the token is never printed
    for o in [
        run(&url, d, &sets, &env, &["alerts", "list", "--all"]),
        run(&url, d, &sets, &env, &["alerts", "check", "--json"]),
    ] {
        assert!(!stdout(&o).contains("tok-123") && !stderr(&o).contains("tok-123"));
    }
}

#[test]
fn alerts_check_raises_from_the_current_stock_and_sends_once() {
    // stock changed outside scans (a migration): `alerts check` catches up
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = Db::Sqlite(d.join("t.db"));
    let url = db.url();
    let (smtp, mails) = smtp_listener();
    let sets: Vec<String> = vec![
        format!("alerts.email.server=smtp+plain://127.0.0.1:{smtp}"),
        "alerts.email.from=repaero@repaero.fr".into(),
        "alerts.email.to=[\"magasin@repaero.fr\"]".into(),
    ];
    ok(run(&url, d, &sets, &[], &["migrate", "stock"]));
    // parts at or under their workbook minimum, from the ground truth
    let stock = json_file("fixtures/stock/stock.expected.json");
    let mins: BTreeMap<String, i64> = db
        .rows("SELECT reference, min_quantity FROM parts")
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap(),
                r[1].as_deref().unwrap().parse().unwrap(),
            )
        })
        .collect();
    let mut low: Vec<String> = stock["part_values"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(r, v)| v[0].as_i64().unwrap() <= mins[*r])
        .map(|(r, _)| r.clone())
        .collect();
    low.sort();
    assert!(!low.is_empty());
    let out: Value = serde_json::from_str(&ok(run(
        &url,
        d,
        &sets,
        &[],
        &["alerts", "check", "--json"],
    )))
    .unwrap();
    let raised: Vec<String> = out["raised"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(raised, low);
    assert_eq!(out["sent"]["email"], serde_json::json!(low));
    let mut mailed: Vec<String> = mails
        .lock()
        .unwrap()
        .iter()
        .map(|m| {
            low.iter()
                .find(|r| m.data.contains(r.as_str()))
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    mailed.sort();
    assert_eq!(mailed, low);
    let out: Value = serde_json::from_str(&ok(run(
        &url,
        d,
        &sets,
        &[],
        &["alerts", "check", "--json"],
    )))
    .unwrap();
    assert_eq!(out["raised"], serde_json::json!([]));
    assert_eq!(mails.lock().unwrap().len(), low.len());
}

#[test]
fn an_unreachable_smtp_server_is_reported_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = Db::Sqlite(d.join("t.db")).url();
    // a port nobody listens on: bind, note it, close
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sets: Vec<String> = vec![
        format!("alerts.email.server=smtp+plain://127.0.0.1:{port}"),
        "alerts.email.from=repaero@repaero.fr".into(),
        "alerts.email.to=[\"magasin@repaero.fr\"]".into(),
        "alerts.email.password=${SMTP_PASSWORD}".into(),
        "alerts.email.username=repaero".into(),
    ];
    let env = [("SMTP_PASSWORD", "hunter2-secret")];
    ok(run(&url, d, &sets, &env, &["migrate", "stock"]));
    let out = run(&url, d, &sets, &env, &["alerts", "check"]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!("SMTP 127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("hunter2") && !stdout(&out).contains("hunter2"));
    // now the server is up: the same alerts go out
    let (smtp, mails) = smtp_listener();
    let mut sets = sets;
    sets[0] = format!("alerts.email.server=smtp+plain://127.0.0.1:{smtp}");
    // the listener does not offer AUTH: send without credentials
    sets.truncate(3);
    let out: Value = serde_json::from_str(&ok(run(
        &url,
        d,
        &sets,
        &[],
        &["alerts", "check", "--json"],
    )))
    .unwrap();
    assert_eq!(
        out["raised"],
        serde_json::json!([]),
        "already raised by the failed check"
    );
    let sent = out["sent"]["email"].as_array().unwrap().len();
    assert!(sent > 0);
    assert_eq!(mails.lock().unwrap().len(), sent);
}

// ---------------------------------------------------------------------------
// Supplier catalogues and orders.

#[test]
fn supplier_catalogues_match_the_truth_and_orders_pick_cheapest_and_fastest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = Db::Sqlite(d.join("t.db"));
    let url = db.url();
    let truth = json_file("fixtures/suppliers/suppliers.expected.json");
    ok(run(&url, d, &[], &[], &["migrate", "stock"]));
    let report: Value = serde_json::from_str(&ok(run(
        &url,
        d,
        &[],
        &[],
        &["migrate", "suppliers", "--json"],
    )))
    .unwrap();
    let table = |name: &str| {
        report["runs"][0]["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == name)
            .cloned()
            .unwrap()
    };
    let sp = table("supplier_parts");
    assert_eq!(sp["written"], truth["supplier_parts_written"]);
    assert_eq!(sp["merged"], truth["supplier_parts_merged"]);
    let want: BTreeMap<String, u64> =
        serde_json::from_value(truth["supplier_parts_rejected"].clone()).unwrap();
    let got: BTreeMap<String, u64> = serde_json::from_value(sp["reasons"].clone()).unwrap();
    assert_eq!(got, want);
    let names: Vec<String> = db
        .rows("SELECT name FROM suppliers ORDER BY name")
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    assert_eq!(serde_json::json!(names), truth["suppliers"]);
    // every offer, with its price (none when "sur devis"), lead time, MOQ
    let mut offers = BTreeMap::new();
    for r in db.rows(
        "SELECT supplier, reference, unit_price, lead_time_days, min_order FROM supplier_parts",
    ) {
        let f = |i: usize| r[i].as_deref().map(|v| v.parse::<f64>().unwrap());
        offers.insert(
            format!(
                "{} | {}",
                r[0].as_deref().unwrap(),
                r[1].as_deref().unwrap()
            ),
            serde_json::json!([f(2), f(3).map(|v| v as i64), f(4).map(|v| v as i64)]),
        );
    }
    assert_eq!(serde_json::json!(offers), truth["offers"]);
    assert_eq!(
        db.one("SELECT count(*) FROM supplier_parts WHERE unit_price IS NULL"),
        truth["prices_on_request"].to_string()
    );
    assert_eq!(
        db.one("SELECT count(*) FROM supplier_parts WHERE reference_valid = 0"),
        truth["unknown_parts"].to_string()
    );

    // orders: parts at or under minimum; need = 2 × minimum − stock;
    // cheapest = lowest total for what must be bought (MOQ included),
    // fastest = shortest lead time; computed here from the truth
    let suggestions: Vec<Value> =
        serde_json::from_str(&ok(run(&url, d, &[], &[], &["order", "suggest", "--json"]))).unwrap();
    let stock = json_file("fixtures/stock/stock.expected.json");
    let mut expected = Vec::new();
    for r in db.rows("SELECT reference, min_quantity FROM parts ORDER BY reference") {
        let reference = r[0].clone().unwrap();
        let min: i64 = r[1].as_deref().unwrap().parse().unwrap();
        let q = stock["part_values"][&reference][0].as_i64().unwrap();
        if q > min {
            continue;
        }
        let need = (2 * min - q).max(1);
        let mut cheapest: Option<(f64, String)> = None;
        let mut fastest: Option<(i64, String)> = None;
        for (k, o) in truth["offers"].as_object().unwrap() {
            let (supplier, part) = k.split_once(" | ").unwrap();
            if part != reference {
                continue;
            }
            let qty = need.max(o[2].as_i64().unwrap());
            if let Some(p) = o[0].as_f64() {
                let total = p * qty as f64;
                if cheapest.as_ref().is_none_or(|(t, _)| total < *t) {
                    cheapest = Some((total, supplier.to_string()));
                }
            }
            let lead = o[1].as_i64().unwrap();
            if fastest.as_ref().is_none_or(|(l, _)| lead < *l) {
                fastest = Some((lead, supplier.to_string()));
            }
        }
        expected.push((reference, need, cheapest, fastest));
    }
    assert!(!expected.is_empty());
    assert_eq!(suggestions.len(), expected.len(), "{suggestions:?}");
    for (s, (reference, need, cheapest, fastest)) in suggestions.iter().zip(&expected) {
        assert_eq!(s["reference"], *reference);
        assert_eq!(s["need"], *need, "{reference}");
        let (total, name) = cheapest.clone().unwrap();
        assert_eq!(s["cheapest"]["supplier"], name, "{reference}");
        assert_eq!(s["cheapest"]["total"].as_f64(), Some(total), "{reference}");
        let (lead, name) = fastest.clone().unwrap();
        assert_eq!(s["fastest"]["supplier"], name, "{reference}");
        assert_eq!(s["fastest"]["lead_time_days"], lead, "{reference}");
    }
    let text = ok(run(&url, d, &[], &[], &["order", "suggest"]));
    for (reference, ..) in &expected {
        assert!(text.contains(reference.as_str()), "{text}");
    }
}

/// Two scanner files imported at the same time by two processes: both
/// apply in full, one after the other; no movement of either is lost.
fn concurrent_imports_lose_nothing(db: &Db, dir: &Path) {
    let url = db.url();
    ok(run(&url, dir, &[], &[], &["migrate", "stock"]));
    let start = quantities(db);
    let before = start["MOT-1001"];
    let files: Vec<PathBuf> = (0..2)
        .map(|f| {
            let lines: Vec<String> = (0..300)
                .map(|i| {
                    format!(
                        "2026-11-2{f}T08:{:02}:{:02};MOT-1001;1;IN;Op {f};A-01",
                        i / 60,
                        i % 60
                    )
                })
                .collect();
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            scan_file(dir, &format!("c{f}.csv"), &lines)
        })
        .collect();
    let children: Vec<_> = files
        .iter()
        .map(|f| spawn(&url, dir, &[], &["scans", "import", f.to_str().unwrap()]))
        .collect();
    for c in children {
        ok(c.wait_with_output().unwrap());
    }
    assert_eq!(quantities(db)["MOT-1001"], before + 600);
    assert_eq!(db.one("SELECT count(*) FROM stock_movements"), "600");
    assert_eq!(db.one("SELECT count(*) FROM scan_files"), "2");
    assert_ledger(db, &start);
}

#[test]
fn concurrent_imports_into_sqlite_lose_nothing() {
    on_sqlite(concurrent_imports_lose_nothing);
}

#[test]
fn concurrent_imports_into_postgres_lose_nothing() {
    on_postgres("scans_concurrent", concurrent_imports_lose_nothing);
}

/// A line repeated far down a long file (another 10,000-line batch) is
/// still recognised: counted as already imported, applied once.
fn a_repeat_in_a_later_batch_is_applied_once(db: &Db, dir: &Path) {
    let url = db.url();
    ok(run(&url, dir, &[], &[], &["migrate", "stock"]));
    let start = quantities(db);
    let before = start["CON-4001"];
    let mut lines: Vec<String> = (0..10_050)
        .map(|i| {
            format!(
                "2026-11-20T{:02}:{:02}:{:02};CON-4001;1;IN;J. Martin;C-01",
                i / 3600,
                (i / 60) % 60,
                i % 60
            )
        })
        .collect();
    lines.push(lines[0].clone());
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let f = scan_file(dir, "long.csv", &lines);
    let r = &import(&url, dir, &[], &[&f])[0];
    assert_eq!(r["lines"], 10_051);
    assert_eq!(r["accepted"], 10_050);
    assert_eq!(r["already"], 1);
    assert_eq!(quantities(db)["CON-4001"], before + 10_050);
    assert_ledger(db, &start);
}

#[test]
fn a_repeat_in_a_later_batch_is_applied_once_in_sqlite() {
    on_sqlite(a_repeat_in_a_later_batch_is_applied_once);
}

#[test]
fn a_repeat_in_a_later_batch_is_applied_once_in_postgres() {
    on_postgres("scans_repeat", a_repeat_in_a_later_batch_is_applied_once);
}

/// A CA and a server certificate for 127.0.0.1 signed by it (openssl),
/// and the listener's TLS configuration; returns the CA's PEM path.
fn test_pki(dir: &Path) -> (PathBuf, Arc<rustls::ServerConfig>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let sh = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let rsa = ["-newkey", "rsa:2048", "-nodes"];
    sh(&[
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
            "/CN=repaero test CA",
        ],
    ]
    .concat());
    sh(&[
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
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    sh(&[
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
    ]);
    let certs = CertificateDer::pem_file_iter(dir.join("srv.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("srv.key")).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    (dir.join("ca.pem"), Arc::new(cfg))
}

#[test]
fn alerts_go_by_starttls_and_by_tls_and_an_unknown_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = Db::Sqlite(d.join("t.db")).url();
    let (ca, tls) = test_pki(d);
    let (starttls_port, starttls_mails) = smtp_listener_with(Secure::StartTls(tls.clone()));
    let (tls_port, tls_mails) = smtp_listener_with(Secure::Tls(tls));
    let sets = |server: String, ca: Option<&Path>| {
        let mut v = vec![
            format!("alerts.email.server={server}"),
            "alerts.email.from=repaero@repaero.fr".to_string(),
            "alerts.email.to=[\"magasin@repaero.fr\"]".to_string(),
        ];
        if let Some(ca) = ca {
            v.push(format!("alerts.email.ca_file={}", ca.display()));
        }
        v
    };
    ok(run(&url, d, &[], &[], &["migrate", "stock"]));

    // the relay's certificate is not signed by a public root: refused
    let out = run(
        &url,
        d,
        &sets(format!("smtp://127.0.0.1:{starttls_port}"), None),
        &[],
        &["alerts", "check"],
    );
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(
        stderr(&out).contains(&format!("SMTP 127.0.0.1:{starttls_port}")),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).to_lowercase().contains("certificate"),
        "{}",
        stderr(&out)
    );
    assert!(starttls_mails.lock().unwrap().is_empty());

    // trusting its CA: the pending alerts go, encrypted
    let out: Value = serde_json::from_str(&ok(run(
        &url,
        d,
        &sets(format!("smtp://127.0.0.1:{starttls_port}"), Some(&ca)),
        &[],
        &["alerts", "check", "--json"],
    )))
    .unwrap();
    let sent = out["sent"]["email"].as_array().unwrap().len();
    assert!(sent > 0, "{out}");
    let mails = starttls_mails.lock().unwrap().clone();
    assert_eq!(mails.len(), sent);
    assert!(mails.iter().all(|m| m.tls), "{mails:?}");

    // implicit TLS (smtps): a new crossing, mailed once, encrypted
    let f = scan_file(
        d,
        "tls.csv",
        &["2026-11-24T08:00:00;MOT-1002;8;OUT;J. Martin;A-02"],
    );
    let sets_tls = sets(format!("smtps://127.0.0.1:{tls_port}"), Some(&ca));
    ok(run(
        &url,
        d,
        &sets_tls,
        &[],
        &["scans", "import", f.to_str().unwrap()],
    ));
    let mails = tls_mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].tls && mails[0].data.contains("MOT-1002"));
    assert_eq!(starttls_mails.lock().unwrap().len(), sent);
}

/// A dry run of several jobs sees what the jobs before it would have
/// written (suppliers' offers are checked against the stock job's parts)
/// and leaves nothing behind.
#[test]
fn a_dry_run_of_stock_then_suppliers_checks_offers_against_the_parts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let truth = json_file("fixtures/suppliers/suppliers.expected.json");
    let check = |db: &Db| {
        let out = ok(run(
            &db.url(),
            d,
            &[],
            &[],
            &["migrate", "stock", "suppliers", "--dry-run", "--json"],
        ));
        let report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["errors"], serde_json::json!([]), "{report}");
        let sp = report["runs"][1]["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == "supplier_parts")
            .cloned()
            .unwrap();
        assert_eq!(sp["written"], truth["supplier_parts_written"]);
        assert_eq!(report["runs"][1]["dry_run"], true);
    };
    check(&Db::Sqlite(d.join("t.db")));
    assert!(!d.join("t.db").exists(), "a dry run created the database");
    let pg = pg::TempDb::new("dry_suppliers");
    let db = Db::Pg(pg.url());
    check(&db);
    assert_eq!(
        db.one("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"),
        "0"
    );
}

/// A supplier who sends an Excel workbook: the same column rules, read
/// from a sheet (the project's mappings with the sheet in place of the
/// CSV file pattern), with a title row above the header, numbers typed as
/// numbers, "sur devis" and a bad minimum order.
#[test]
fn an_excel_supplier_catalogue_goes_through_the_same_rules() {
    use rust_xlsxwriter::Workbook;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = Db::Sqlite(d.join("t.db"));
    ok(run(&db.url(), d, &[], &[], &["migrate", "stock"]));

    let xlsx = d.join("hydrauliques-du-sud.xlsx");
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("Catalogue").unwrap();
    ws.write_string(0, 0, "Tarifs 2026 — Hydrauliques du Sud")
        .unwrap();
    let header = [
        "Fournisseur",
        "Référence",
        "Désignation",
        "Prix unitaire HT",
        "Délai (jours)",
        "Minimum de commande",
    ];
    for (c, h) in header.iter().enumerate() {
        ws.write_string(2, c as u16, *h).unwrap();
    }
    let rows: [(&str, &str, Option<f64>, f64, f64); 3] = [
        ("HYD-2040", "Joint torique HP", Some(10.5), 4.0, 20.0),
        ("avi-3001", "Transpondeur mode S", None, 30.0, 1.0),
        ("TRN-2005", "Pneu 5.00-5", Some(160.0), 9.0, 0.0),
    ];
    for (i, (r, des, price, lead, moq)) in rows.iter().enumerate() {
        let row = 3 + i as u32;
        ws.write_string(row, 0, " hydrauliques du sud").unwrap();
        ws.write_string(row, 1, *r).unwrap();
        ws.write_string(row, 2, *des).unwrap();
        match price {
            Some(p) => ws.write_number(row, 3, *p).unwrap(),
            None => ws.write_string(row, 3, "sur devis").unwrap(),
        };
        ws.write_number(row, 4, *lead).unwrap();
        ws.write_number(row, 5, *moq).unwrap();
    }
    wb.save(&xlsx).unwrap();

    // a project of its own: the same target, an Excel source, the
    // project's two mappings reading the sheet
    let mappings: Vec<(String, String)> = ["suppliers", "supplier_parts"]
        .iter()
        .map(|m| {
            let name = format!("mappings/{m}.toml");
            let text = std::fs::read_to_string(root().join(&name)).unwrap();
            assert!(text.contains("table = \"catalogue_*.csv\""));
            (
                name,
                text.replace("table = \"catalogue_*.csv\"", "sheet = \"Catalogue\""),
            )
        })
        .collect();
    let mut files: Vec<(&str, &str)> = mappings
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    files.push((
        "jobs/suppliers_xlsx.toml",
        "source = \"catalogue\"\n[[tables]]\nmapping = \"suppliers\"\n[[tables]]\nmapping = \"supplier_parts\"\n",
    ));
    let project = project(
        &format!(
            "[target]\nurl = \"{}\"\n[sources.catalogue]\nkind = \"excel\"\npath = \"{}\"\n",
            db.url(),
            xlsx.display()
        ),
        &files,
    );
    let p = project.path();
    let out = repaero_in(p, &["migrate", "suppliers_xlsx", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let sp = &report["runs"][0]["tables"][1];
    assert_eq!(sp["table"], "supplier_parts");
    assert_eq!(
        (
            sp["read"].as_u64(),
            sp["written"].as_u64(),
            sp["rejected"].as_u64()
        ),
        (Some(3), Some(2), Some(1))
    );
    assert_eq!(sp["reasons"]["min_order: below 1"], 1);
    assert_eq!(
        db.rows("SELECT supplier, reference, unit_price, lead_time_days, min_order FROM supplier_parts ORDER BY reference"),
        vec![
            vec![
                Some("HYDRAULIQUES DU SUD".into()),
                Some("AVI-3001".into()),
                None,
                Some("30".into()),
                Some("1".into()),
            ],
            vec![
                Some("HYDRAULIQUES DU SUD".into()),
                Some("HYD-2040".into()),
                Some("10.5".into()),
                Some("4".into()),
                Some("20".into()),
            ],
        ]
    );
}

/// A file imported while the scanner was still writing it, then again
/// once complete: the cut last line is not a line yet (no end of line): it
/// is neither applied nor rejected but reported as waiting; the complete
/// file applies it, once, under its own line number.
#[test]
fn a_file_caught_half_written_is_completed_by_the_next_import() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = Db::Sqlite(d.join("t.db"));
    let url = db.url();
    ok(run(&url, d, &[], &[], &["migrate", "stock"]));
    let start = quantities(&db);
    let before = start["CON-4002"];
    let full = "horodatage;code;quantité;sens;opérateur;emplacement\n\
                2026-11-25T08:00:00;CON-4002;1;OUT;J. Martin;C-02\n\
                2026-11-25T08:00:10;CON-4002;2;OUT;J. Martin;C-02\n\
                2026-11-25T08:00:20;CON-4002;4;OUT;J. Martin;C-02\n";
    let path = d.join("export.csv");
    // caught writing its header: nothing to read yet, nothing recorded
    std::fs::write(&path, &full[..20]).unwrap();
    let r = &import(&url, d, &[], &[&path])[0];
    assert_eq!(r["status"], "waiting (no complete line yet)", "{r}");
    assert_eq!(
        (r["lines"].as_u64(), r["incomplete"].as_u64()),
        (Some(0), Some(1))
    );
    // cut inside the third line
    std::fs::write(&path, &full[..full.len() - 12]).unwrap();
    let r = &import(&url, d, &[], &[&path])[0];
    assert_eq!(
        (
            r["lines"].as_u64(),
            r["accepted"].as_u64(),
            r["rejected"].as_u64(),
            r["incomplete"].as_u64()
        ),
        (Some(2), Some(2), Some(0), Some(1)),
        "{r}"
    );
    assert_eq!(r["quarantine"], Value::Null, "{r}");
    assert_eq!(quantities(&db)["CON-4002"], before - 3);
    // the same half-written file again: nothing new, the cut line still waits
    let r = &import(&url, d, &[], &[&path])[0];
    assert!(
        r["status"]
            .as_str()
            .unwrap()
            .starts_with("already imported"),
        "{r}"
    );
    assert_eq!(r["incomplete"], 1, "{r}");
    let out = ok(run(
        &url,
        d,
        &[],
        &[],
        &["scans", "import", path.to_str().unwrap()],
    ));
    assert!(out.contains("line 4 has no end of line yet"), "{out}");
    std::fs::write(&path, full).unwrap();
    let r = &import(&url, d, &[], &[&path])[0];
    assert_eq!(
        (
            r["accepted"].as_u64(),
            r["already"].as_u64(),
            r["rejected"].as_u64(),
            r["incomplete"].as_u64()
        ),
        (Some(1), Some(2), Some(0), Some(0))
    );
    assert_eq!(quantities(&db)["CON-4002"], before - 7);
    assert_eq!(
        db.rows("SELECT line, quantity, stock_after FROM stock_movements ORDER BY line"),
        [(2, 1), (3, 2), (4, 4)]
            .iter()
            .scan(before, |q, (line, n)| {
                *q -= n;
                Some(vec![
                    Some(line.to_string()),
                    Some(n.to_string()),
                    Some(q.to_string()),
                ])
            })
            .collect::<Vec<_>>()
    );
    assert_eq!(
        db.one("SELECT count(*) FROM sqlite_master WHERE name = '_rejects'"),
        "1"
    );
    assert_eq!(
        db.one("SELECT count(*) FROM _rejects WHERE job = 'scans'"),
        "0"
    );
    assert_ledger(&db, &start);
}

/// A file that grows while it is imported (the scanner appends while the
/// import waits for the database): the import reads the file as it was
/// when its checksum was taken, up to its last complete line, so a line
/// is never cut in two and line numbers never shift; the next import
/// takes the rest.
#[test]
fn a_file_growing_during_its_import_is_read_up_to_its_last_complete_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = Db::Sqlite(d.join("t.db"));
    let url = db.url();
    ok(run(&url, d, &[], &[], &["migrate", "stock"]));
    let start = quantities(&db);
    let head = "horodatage;code;quantité;sens;opérateur;emplacement\n\
                2026-11-25T09:00:00;CON-4002;1;IN;J. Martin;C-02\n\
                2026-11-25T09:00:10;CON-4002;2;IN;J. Martin;C-02\n\
                2026-11-25T09:00:20;CON-";
    let rest = "4002;4;IN;J. Martin;C-02\n\
                2026-11-25T09:00:30;CON-4002;8;IN;J. Martin;C-02\n";
    let path = d.join("growing.csv");
    std::fs::write(&path, head).unwrap();
    // the import's transaction waits for this one; it has read the file's
    // checksum by the time it opens the database
    let lock = rusqlite::Connection::open(d.join("t.db")).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let child = spawn(
        &url,
        d,
        &[],
        &["scans", "import", "--json", path.to_str().unwrap()],
    );
    let fd_dir = PathBuf::from(format!("/proc/{}/fd", child.id()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_dir(&fd_dir)
        .map(|fds| {
            fds.flatten()
                .any(|f| std::fs::read_link(f.path()).is_ok_and(|t| t.ends_with("t.db")))
        })
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "the import never opened the database"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(rest.as_bytes())
        .unwrap();
    lock.execute_batch("ROLLBACK").unwrap();
    let out = ok(child.wait_with_output().unwrap());
    let r: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            r[0]["lines"].as_u64(),
            r[0]["accepted"].as_u64(),
            r[0]["rejected"].as_u64(),
            r[0]["incomplete"].as_u64()
        ),
        (Some(2), Some(2), Some(0), Some(1)),
        "{out}"
    );
    let r = &import(&url, d, &[], &[&path])[0];
    assert_eq!(
        (
            r["lines"].as_u64(),
            r["accepted"].as_u64(),
            r["already"].as_u64(),
            r["incomplete"].as_u64()
        ),
        (Some(4), Some(2), Some(2), Some(0)),
        "{r}"
    );
    assert_eq!(
        db.rows("SELECT line, quantity FROM stock_movements ORDER BY line"),
        [(2, 1), (3, 2), (4, 4), (5, 8)]
            .iter()
            .map(|(l, q)| vec![Some(l.to_string()), Some(q.to_string())])
            .collect::<Vec<_>>()
    );
    assert_eq!(quantities(&db)["CON-4002"], start["CON-4002"] + 15);
    assert_ledger(&db, &start);
}

/// Two `alerts check` at once (cron and a hand, or two hosts): each
/// crossing is raised once and mailed once.
fn concurrent_checks_mail_once(db: &Db, dir: &Path) {
    let url = db.url();
    let (smtp, mails) = smtp_listener();
    let sets: Vec<String> = vec![
        format!("alerts.email.server=smtp+plain://127.0.0.1:{smtp}"),
        "alerts.email.from=repaero@repaero.fr".into(),
        "alerts.email.to=[\"magasin@repaero.fr\"]".into(),
    ];
    ok(run(&url, dir, &sets, &[], &["migrate", "stock"]));
    let low: usize = db
        .one("SELECT count(*) FROM parts WHERE quantity <= min_quantity")
        .parse()
        .unwrap();
    assert!(low > 0);
    for _ in 0..3 {
        let children: Vec<_> = (0..3)
            .map(|_| spawn(&url, dir, &sets, &["alerts", "check"]))
            .collect();
        for c in children {
            ok(c.wait_with_output().unwrap());
        }
    }
    assert_eq!(db.one("SELECT count(*) FROM stock_alerts"), low.to_string());
    assert_eq!(mails.lock().unwrap().len(), low);
}

#[test]
fn concurrent_alert_checks_mail_once_in_sqlite() {
    on_sqlite(concurrent_checks_mail_once);
}

#[test]
fn concurrent_alert_checks_mail_once_in_postgres() {
    on_postgres("alerts_concurrent", concurrent_checks_mail_once);
}

#[test]
fn a_dry_run_import_counts_everything_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = Db::Sqlite(d.join("t.db"));
    let url = db.url();
    ok(run(&url, d, &[], &[], &["migrate", "stock"]));
    let before = quantities(&db);
    let truth = json_file("fixtures/scans/scans.expected.json");
    let out = ok(run(
        &url,
        d,
        &[],
        &[],
        &[
            "scans",
            "import",
            "--dry-run",
            "--json",
            scans_fixture().to_str().unwrap(),
        ],
    ));
    let r: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(r[0]["status"], "rolled back (dry run)");
    assert_eq!(r[0]["accepted"], truth["accepted"]);
    assert_eq!(quantities(&db), before);
    assert_eq!(
        db.one(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('stock_movements', 'scan_files')"
        ),
        "0"
    );
    // and the real import afterwards is not "already imported"
    let r = &import(&url, d, &[], &[&scans_fixture()])[0];
    assert_eq!(r["status"], "imported");
}

// ---------------------------------------------------------------------------
// The ledger, bad files among good ones, and a mail server that never answers.

/// The ledger and the stock agree: each part's quantity moved from
/// `before` by exactly the sum of its movements (IN less OUT), and no
/// movement names something that is not a part.
fn assert_ledger(db: &Db, before: &BTreeMap<String, i64>) {
    let net: BTreeMap<String, i64> = db
        .rows(
            "SELECT reference, SUM(CASE WHEN direction = 'IN' THEN quantity ELSE -quantity END) \
             FROM stock_movements GROUP BY reference",
        )
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap(),
                r[1].as_deref().unwrap().parse::<f64>().unwrap() as i64,
            )
        })
        .collect();
    let after = quantities(db);
    for (reference, q) in before {
        assert_eq!(
            after[reference],
            q + net.get(reference).copied().unwrap_or(0),
            "{reference}: parts.quantity against the sum of its stock_movements"
        );
    }
    for reference in net.keys() {
        assert!(before.contains_key(reference), "a movement of {reference}");
    }
}

/// A line holding a value the target cannot store (a NUL byte: PostgreSQL
/// text refuses it) is a rejected line with the target's reason, in the
/// quarantine and `_rejects`, counted; the stock moves only by the
/// movements written, and the movements after it record the stock as it
/// really is.
fn a_value_the_target_cannot_store_is_a_rejected_line(db: &Db, dir: &Path) {
    let url = db.url();
    ok(run(&url, dir, &[], &[], &["migrate", "stock"]));
    let before = quantities(db);
    let start = before["MOT-1003"];
    let path = dir.join("nul.csv");
    std::fs::write(
        &path,
        "horodatage;code;quantité;sens;opérateur;emplacement\n\
         2026-11-02T08:31:10;MOT-1003;2;IN;J. Martin;B-02\n\
         2026-11-02T08:31:14;MOT-1003;5;IN;Z\0Z;B-02\n\
         2026-11-02T08:31:20;MOT-1003;1;OUT;J. Martin;B-02\n",
    )
    .unwrap();
    let r = &import(&url, dir, &[], &[&path])[0];
    assert_eq!(r["status"], "imported", "{r}");
    assert_eq!(r["lines"], 3, "{r}");
    let (accepted, rejected) = (
        r["accepted"].as_u64().unwrap(),
        r["rejected"].as_u64().unwrap(),
    );
    assert_eq!(accepted + rejected, 3, "{r}");
    if matches!(db, Db::Pg(_)) {
        assert_eq!((accepted, rejected), (2, 1), "{r}");
        let reasons = r["reasons"].as_object().unwrap();
        assert_eq!(reasons.len(), 1, "{r}");
        let (reason, n) = reasons.iter().next().unwrap();
        assert!(reason.starts_with("target refused"), "{reason}");
        assert_eq!(n, 1);
        assert_eq!(
            db.rows("SELECT source_row, reason FROM _rejects WHERE job = 'scans'"),
            vec![vec![Some("3".into()), Some(reason.clone())]]
        );
        let q = std::fs::read_to_string(r["quarantine"].as_str().expect("a quarantine")).unwrap();
        assert_eq!(q.lines().count(), 2, "{q}");
        assert!(q.contains("target refused"), "{q}");
        assert_eq!(quantities(db)["MOT-1003"], start + 1);
        // the OUT after the refused line left 2 - 1 above the start
        assert_eq!(
            db.rows("SELECT line, stock_after FROM stock_movements ORDER BY line"),
            vec![
                vec![Some("2".into()), Some((start + 2).to_string())],
                vec![Some("4".into()), Some((start + 1).to_string())],
            ]
        );
    }
    assert_eq!(
        db.one("SELECT rejected FROM scan_files"),
        rejected.to_string()
    );
    assert_eq!(
        db.one("SELECT count(*) FROM stock_movements"),
        accepted.to_string()
    );
    assert_ledger(db, &before);
}

#[test]
fn a_value_postgres_cannot_store_is_a_rejected_line() {
    on_postgres(
        "scans_nul",
        a_value_the_target_cannot_store_is_a_rejected_line,
    );
}

#[test]
fn a_value_in_a_scan_line_keeps_the_ledger_in_sqlite() {
    on_sqlite(a_value_the_target_cannot_store_is_a_rejected_line);
}

/// `scans import a.csv empty.csv b.csv`: each file is its own unit. The
/// empty one fails and is reported; the others are imported and reported;
/// the exit code is the worst failure's.
#[test]
fn a_bad_file_among_several_is_reported_and_the_others_imported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = Db::Sqlite(d.join("t.db"));
    let url = db.url();
    ok(run(&url, d, &[], &[], &["migrate", "stock"]));
    let before = quantities(&db);
    let a = scan_file(
        d,
        "a.csv",
        &["2026-11-26T08:00:00;MOT-1001;1;IN;J. Martin;A-01"],
    );
    let empty = d.join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let b = scan_file(
        d,
        "b.csv",
        &["2026-11-26T09:00:00;MOT-1001;2;IN;J. Martin;A-01"],
    );
    let files = [&a, &empty, &b].map(|p| p.to_str().unwrap().to_string());
    let mut args = vec!["scans", "import", "--json"];
    args.extend(files.iter().map(String::as_str));
    let out = run(&url, d, &[], &[], &args);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let r: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        r.iter()
            .map(|r| r["status"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["imported", "failed", "imported"],
        "{r:?}"
    );
    assert!(
        r[1]["error"].as_str().unwrap().contains("empty file"),
        "{r:?}"
    );
    assert_eq!(
        (r[0]["accepted"].as_u64(), r[2]["accepted"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(stderr(&out).contains("empty.csv"), "{}", stderr(&out));
    assert_eq!(quantities(&db)["MOT-1001"], before["MOT-1001"] + 3);
    assert_eq!(db.one("SELECT count(*) FROM scan_files"), "2");

    // the text report names every file; a missing file fails alone too
    let c = scan_file(
        d,
        "c.csv",
        &["2026-11-26T10:00:00;MOT-1001;4;IN;J. Martin;A-01"],
    );
    let missing = d.join("missing.csv");
    let out = run(
        &url,
        d,
        &[],
        &[],
        &[
            "scans",
            "import",
            missing.to_str().unwrap(),
            a.to_str().unwrap(),
            c.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("missing.csv: failed"), "{text}");
    assert!(text.contains("a.csv: already imported"), "{text}");
    assert!(text.contains("c.csv: imported"), "{text}");
    assert!(stderr(&out).contains("missing.csv"), "{}", stderr(&out));
    assert_eq!(quantities(&db)["MOT-1001"], before["MOT-1001"] + 7);
    assert_ledger(&db, &before);
}

/// A TCP listener that accepts and never says a word: a mail server that
/// hangs, or STARTTLS spoken to a port that expects TLS (each side waits
/// for the other). Each connection accepted is signalled, and held open.
fn silent_listener() -> (u16, std::sync::mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
            let _ = tx.send(());
        }
    });
    (port, rx)
}

/// Wait for `child` at most `limit`: past it, kill it and fail.
fn wait_at_most(mut child: std::process::Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "{what}: still running after {limit:?}\n{}\n{}",
                stdout(&o),
                stderr(&o)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn mail_sets(server: String, timeout: u64) -> Vec<String> {
    vec![
        format!("alerts.email.server={server}"),
        "alerts.email.from=repaero@repaero.fr".into(),
        "alerts.email.to=[\"magasin@repaero.fr\"]".into(),
        format!("alerts.send_timeout={timeout}"),
    ]
}

fn references(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

/// `alerts check` waiting on a mail server that accepts and never greets:
/// the stock job, a scans import that raises an alert and a second check
/// all go through meanwhile; the check ends within its send bound, the
/// send recorded as failed, and the next check with a live server sends
/// every open alert once.
fn a_dead_mail_server_delays_only_its_own_send(db: &Db, dir: &Path) {
    const BOUND: u64 = 15;
    let url = db.url();
    let (port, accepted) = silent_listener();
    let dead = mail_sets(format!("smtp://127.0.0.1:{port}"), BOUND);
    ok(run(&url, dir, &[], &[], &["migrate", "stock"]));
    let t0 = Instant::now();
    let check = spawn(&url, dir, &dead, &["alerts", "check", "--json"]);
    accepted
        .recv_timeout(Duration::from_secs(60))
        .expect("the check connects to the server");
    // while it waits for a greeting, the writers go through
    ok(wait_at_most(
        spawn(&url, dir, &[], &["migrate", "stock"]),
        Duration::from_secs(BOUND),
        "migrate stock during the send",
    ));
    let before = quantities(db);
    let f = scan_file(
        dir,
        "dead.csv",
        &["2026-11-24T08:00:00;MOT-1002;8;OUT;J. Martin;A-02"],
    );
    let out = ok(wait_at_most(
        spawn(
            &url,
            dir,
            &[],
            &["scans", "import", "--json", f.to_str().unwrap()],
        ),
        Duration::from_secs(BOUND),
        "scans import during the send",
    ));
    let r: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(r[0]["accepted"], 1, "{out}");
    assert_eq!(r[0]["alerts_raised"].as_array().unwrap().len(), 1, "{out}");
    // a second check does not wait for the first: the alert the first is
    // sending is left to it, the next one is tried (and fails alike)
    let t2 = Instant::now();
    let check2 = spawn(&url, dir, &dead, &["alerts", "check", "--json"]);
    let mut check = check;
    assert!(
        check.try_wait().unwrap().is_none(),
        "the first check ended before the writers were done: the test proves nothing"
    );
    let o1 = wait_at_most(check, Duration::from_secs(3 * BOUND), "alerts check");
    let took = t0.elapsed();
    assert_eq!(code(&o1), 1, "{}\n{}", stdout(&o1), stderr(&o1));
    assert!(
        took >= Duration::from_secs(BOUND - 1) && took < Duration::from_secs(BOUND + 10),
        "the check took {took:?} for a bound of {BOUND} s"
    );
    assert!(
        stderr(&o1).contains(&format!("no answer within {BOUND} s")),
        "{}",
        stderr(&o1)
    );
    let first: Value = serde_json::from_str(&stdout(&o1)).unwrap();
    assert_eq!(first["sent"]["email"], serde_json::json!([]));
    // one send tried and timed out; the others not tried (the server is dead)
    let failed: Vec<&str> = first["sent"]["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        failed
            .iter()
            .filter(|f| f.contains("no answer within"))
            .count(),
        1,
        "{first}"
    );
    assert!(
        failed[1..].iter().all(|f| f.contains("not tried")),
        "{first}"
    );
    let o2 = wait_at_most(
        check2,
        Duration::from_secs(3 * BOUND),
        "second alerts check",
    );
    assert_eq!(code(&o2), 1, "{}\n{}", stdout(&o2), stderr(&o2));
    let second: Value = serde_json::from_str(&stdout(&o2)).unwrap();
    assert!(
        t2.elapsed() < Duration::from_secs(BOUND + 10),
        "the second check took {:?}",
        t2.elapsed()
    );
    assert_eq!(second["raised"], serde_json::json!([]), "{second}");
    // each check tried one send and gave the channel up; never the same
    // alert at once
    let tried = |v: &Value| -> Vec<String> {
        v["sent"]["failed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .filter(|f| f.contains("no answer within"))
            .map(|f| {
                f["mail for ".len()..]
                    .split(':')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let (tried1, tried2) = (tried(&first), tried(&second));
    assert_eq!((tried1.len(), tried2.len()), (1, 1), "{first}\n{second}");
    assert_ne!(tried1, tried2, "{first}\n{second}");

    // nothing was sent; each failure is on its alert, to retry
    let list: Vec<Value> =
        serde_json::from_str(&ok(run(&url, dir, &[], &[], &["alerts", "list", "--json"]))).unwrap();
    assert!(list.len() >= 2, "{list:?}");
    assert!(
        list.iter().all(|a| a["email_sent_at"].is_null()),
        "{list:?}"
    );
    let failed: Vec<&Value> = list
        .iter()
        .filter(|a| a["email_error"].is_string())
        .collect();
    assert_eq!(failed.len(), 2, "{list:?}");
    assert!(
        failed.iter().all(|a| a["email_error"]
            .as_str()
            .unwrap()
            .contains("no answer within")),
        "{list:?}"
    );
    let open: Vec<String> = {
        let mut v: Vec<String> = list
            .iter()
            .map(|a| a["reference"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };

    // the server is back: every open alert goes, once
    let (smtp, mails) = smtp_listener();
    let live = mail_sets(format!("smtp+plain://127.0.0.1:{smtp}"), BOUND);
    let out: Value = serde_json::from_str(&ok(run(
        &url,
        dir,
        &live,
        &[],
        &["alerts", "check", "--json"],
    )))
    .unwrap();
    assert_eq!(references(&out["sent"]["email"]), open, "{out}");
    assert_eq!(mails.lock().unwrap().len(), open.len());
    ok(run(&url, dir, &live, &[], &["alerts", "check"]));
    assert_eq!(mails.lock().unwrap().len(), open.len());
    assert_ledger(db, &before);
}

#[test]
fn a_dead_mail_server_delays_only_its_own_send_in_sqlite() {
    on_sqlite(a_dead_mail_server_delays_only_its_own_send);
}

#[test]
fn a_dead_mail_server_delays_only_its_own_send_in_postgres() {
    on_postgres(
        "alerts_dead_smtp",
        a_dead_mail_server_delays_only_its_own_send,
    );
}

/// A check killed in the middle of a send: the send was claimed, not
/// stamped. Another check leaves it alone while the claim may still be
/// alive (the other alerts go), and sends it once the claim has lapsed:
/// interrupted sends are retried (at least once), sent ones never repeat.
#[test]
fn a_send_cut_short_by_a_kill_is_retried_once_its_claim_lapses() {
    const BOUND: u64 = 2;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = Db::Sqlite(d.join("t.db"));
    let url = db.url();
    let (port, accepted) = silent_listener();
    ok(run(&url, d, &[], &[], &["migrate", "stock"]));
    let mut check = spawn(
        &url,
        d,
        &mail_sets(format!("smtp://127.0.0.1:{port}"), BOUND),
        &["alerts", "check"],
    );
    accepted
        .recv_timeout(Duration::from_secs(60))
        .expect("the check connects to the server");
    check.kill().unwrap();
    let killed = Instant::now();
    let _ = check.wait();
    let (smtp, mails) = smtp_listener();
    let live = mail_sets(format!("smtp+plain://127.0.0.1:{smtp}"), BOUND);
    let out: Value = serde_json::from_str(&ok(run(
        &url,
        d,
        &live,
        &[],
        &["alerts", "check", "--json"],
    )))
    .unwrap();
    let busy = references(&out["sent"]["busy"]);
    assert_eq!(busy.len(), 1, "{out}");
    let mut open = references(&out["sent"]["email"]);
    assert!(!open.contains(&busy[0]), "{out}");
    // the claim of a check with a 2 s bound lapses 2 + 10 s after it
    std::thread::sleep(
        (killed + Duration::from_secs(13)).saturating_duration_since(Instant::now()),
    );
    let out: Value = serde_json::from_str(&ok(run(
        &url,
        d,
        &live,
        &[],
        &["alerts", "check", "--json"],
    )))
    .unwrap();
    assert_eq!(references(&out["sent"]["email"]), busy, "{out}");
    open.extend(busy);
    open.sort();
    let mut mailed: Vec<String> = mails
        .lock()
        .unwrap()
        .iter()
        .map(|m| {
            open.iter()
                .find(|r| m.data.contains(r.as_str()))
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    mailed.sort();
    assert_eq!(mailed, open);
    ok(run(&url, d, &live, &[], &["alerts", "check"]));
    assert_eq!(mails.lock().unwrap().len(), open.len());
}
