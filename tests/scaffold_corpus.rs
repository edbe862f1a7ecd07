//! `repaero scaffold` on every file of the corpus (`REPAERO_CORPUS`): each
//! Access file and each readable workbook is scaffolded, migrated and
//! validated, through the real binary, with no hand edit. Files repaero
//! cannot read are refused with exit 2, as `inspect` refuses them.

mod common;

use std::path::Path;
use std::time::Instant;

use common::{code, corpus, pg, repaero_in, stderr, stdout};

/// Files scaffold refuses (exit 2, the message naming the file and why),
/// and why. Every other file is scaffolded, migrated and validated.
const REFUSED: &[(&str, &str)] = &[
    ("adox_jet4.mdb", "no user table at all"),
    // the workbooks the reader cannot open (tests/excel_corpus.rs, UNREADABLE)
    ("sheetjs__BlankSheetTypes.xlsb", "XLM macro sheet"),
    ("sheetjs__BlankSheetTypes.xlsm", "XLM macro sheet"),
    (
        "sheetjs__artifacts_quattro_write_57.xls",
        "Quattro Pro codepage",
    ),
    ("sheetjs__crlf_CRLFX5_2_biff2.xls", "bare BIFF2 stream"),
    ("sheetjs__crlf_CRLFX5_3_biff3.xls", "bare BIFF3 stream"),
    ("sheetjs__crlf_CRLFX5_4_biff4.xls", "bare BIFF4 stream"),
    ("sheetjs__wtf_path.xlsb", "parts outside xl/"),
    ("xlrd__biff4_no_format_no_window2.xls", "bare BIFF4 stream"),
    // password-protected: "the workbook is password-protected"
    ("calamine__issue_385.xls", "encrypted"),
    ("calamine__pass_protected.ods", "encrypted"),
    ("calamine__pass_protected.xlsb", "encrypted"),
    ("calamine__pass_protected.xlsx", "encrypted"),
    (
        "libreoffice__export-conditional-formatting.xls",
        "encrypted",
    ),
    ("libreoffice__simple-encryption-2007.xlsx", "encrypted"),
    ("libreoffice__simple-encryption-2010.xlsx", "encrypted"),
    ("sheetjs__password_2002_128_strong.xls", "encrypted"),
    ("sheetjs__password_2002_40_basecrypto.xls", "encrypted"),
    ("sheetjs__password_2002_40_xor.xls", "encrypted"),
    // damaged, or not a spreadsheet
    ("calamine__OOM_alloc3.xls", "corrupt compound file"),
    ("calamine__issue252.xlsx", "corrupt zip"),
    (
        "calamine__issue_594_dos.ods",
        "a billion repeated cells: cell limit",
    ),
    ("calamine__too_small.xls", "68 bytes of text"),
    ("libreoffice__malformed-quotes.xls", "CSV text named .xls"),
    // no value in any cell of any sheet (the reference counts none):
    // "no table to scaffold", each sheet "empty"
    ("calamine__capitalized_wbook_stream.xls", "no cell"),
    ("calamine__empty_sheet.xlsx", "no cell"),
    ("calamine__issue127.ods", "no cell"),
    ("calamine__issue127.xls", "no cell"),
    ("calamine__issue127.xlsb", "no cell"),
    ("calamine__issue127.xlsx", "no cell"),
    ("calamine__issue281.xlsm", "no cell"),
    ("calamine__issue343.xls", "no cell"),
    ("calamine__issue_666_lost_sheets.xlsb", "no cell"),
    ("calamine__issue_666_panic.xlsb", "no cell"),
    ("calamine__misc_biff5_parsing.xls", "no cell"),
    ("calamine__picture.ods", "pictures, no cell"),
    ("calamine__picture.xls", "pictures, no cell"),
    ("calamine__picture.xlsb", "pictures, no cell"),
    ("calamine__picture.xlsx", "pictures, no cell"),
    ("calamine__vba.xlsm", "no cell"),
    ("sheetjs__BlankSheetTypes.ods", "no cell"),
    (
        "sheetjs__BlankSheetTypes.xls",
        "no cell; chart, macro and dialog sheets",
    ),
    ("sheetjs__author_snowman.ods", "no cell"),
    ("sheetjs__author_snowman_biff5.xls", "no cell"),
    ("xlrd__picture_in_cell.xls", "a picture, no cell"),
    ("xlrd__sample.ods", "no cell"),
    ("xlrd__sample.xlsx", "a comment, no cell"),
];

fn files(dir: &Path, exts: &[&str]) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| exts.contains(&e.to_string_lossy().to_lowercase().as_str()))
        })
        .collect();
    v.sort();
    v
}

/// Scaffold, migrate, validate one file in a fresh project; the failures
/// as text.
fn prove(file: &Path, targets: &[String], failures: &mut Vec<String>, refused: &mut Vec<String>) {
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("repaero.toml"),
        "[target]\nurl = \"sqlite://t.db\"\n",
    )
    .unwrap();
    let out = repaero_in(
        d,
        &[
            "--config",
            "repaero.toml",
            "scaffold",
            file.to_str().unwrap(),
            "--job",
            "j",
        ],
    );
    if code(&out) != 0 {
        if code(&out) == 2
            && REFUSED.iter().any(|(f, _)| *f == name)
            && stderr(&out).contains(&name)
        {
            refused.push(name);
        } else {
            failures.push(format!(
                "{name}: scaffold exit {}: {}",
                code(&out),
                stderr(&out)
            ));
        }
        return;
    }
    if let Some((_, why)) = REFUSED.iter().find(|(f, _)| *f == name) {
        failures.push(format!("{name}: expected a refusal ({why}), scaffolded"));
        return;
    }
    for t in targets {
        let set = format!("target.url={t}");
        for cmd in ["migrate", "validate"] {
            let out = repaero_in(d, &["--config", "repaero.toml", "--set", &set, cmd, "j"]);
            if code(&out) != 0 {
                failures.push(format!(
                    "{name}: {cmd} into {} exit {}: {}{}",
                    t.split(':').next().unwrap_or(""),
                    code(&out),
                    stderr(&out),
                    if cmd == "validate" {
                        stdout(&out)
                    } else {
                        String::new()
                    }
                ));
                return;
            }
        }
    }
}

#[test]
#[cfg_attr(not(repaero_corpus), ignore = "no corpus: set REPAERO_CORPUS")]
fn every_access_file_scaffolds_migrates_and_validates() {
    let started = Instant::now();
    let all = files(&corpus().join("access"), &["mdb", "accdb"]);
    let (failures, refused) = prove_all(&all, "scaffold_access", 3);
    eprintln!(
        "{} Access files: {} proved in SQLite and PostgreSQL, refused: {refused:?}, in {:.1?}",
        all.len(),
        all.len() - refused.len() - failures.len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(refused, ["adox_jet4.mdb"]);
}

/// Scaffold, migrate and validate every file of `all` on `threads`
/// threads, each with its own PostgreSQL database (the corpus reuses
/// table names); the failures and the refused files, sorted.
fn prove_all(
    all: &[std::path::PathBuf],
    prefix: &str,
    threads: usize,
) -> (Vec<String>, Vec<String>) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out = std::sync::Mutex::new((Vec::new(), Vec::new()));
    std::thread::scope(|s| {
        for t in 0..threads {
            let (next, out) = (&next, &out);
            s.spawn(move || {
                let db = pg::TempDb::new(&format!("{prefix}{t}"));
                let (mut failures, mut refused) = (Vec::new(), Vec::new());
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(f) = all.get(i) else { break };
                    db.query("DROP SCHEMA public CASCADE; CREATE SCHEMA public");
                    prove(
                        f,
                        &["sqlite://t.db".into(), db.url()],
                        &mut failures,
                        &mut refused,
                    );
                }
                let mut o = out.lock().unwrap();
                o.0.extend(failures);
                o.1.extend(refused);
            });
        }
    });
    let (mut failures, mut refused) = out.into_inner().unwrap();
    failures.sort();
    refused.sort();
    (failures, refused)
}

#[test]
#[cfg_attr(not(repaero_corpus), ignore = "no corpus: set REPAERO_CORPUS")]
fn every_readable_workbook_scaffolds_migrates_and_validates() {
    let started = Instant::now();
    let all = files(
        &corpus().join("excel"),
        &["xlsx", "xlsm", "xlsb", "xls", "ods"],
    );
    // every file the reference expects refused is listed here, with why
    let text = std::fs::read_to_string(corpus().join("excel/reference.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (name, entry) in reference["files"].as_object().unwrap() {
        let listed = REFUSED.iter().any(|(f, _)| f == name);
        let expect = entry["expect"].as_str().unwrap_or("open");
        let read = all.iter().any(|p| p.ends_with(name));
        assert!(
            !read || expect == "open" || listed,
            "{name}: expected refused ({expect}), not in REFUSED"
        );
    }
    let (failures, refused) = prove_all(&all, "scaffold_excel", 3);
    eprintln!(
        "{} workbooks: {} proved in SQLite and PostgreSQL, {} refused, {} failed, in {:.1?}",
        all.len(),
        all.len() - refused.len() - failures.len(),
        refused.len(),
        failures.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let mut expected: Vec<&str> = REFUSED
        .iter()
        .map(|(f, _)| *f)
        .filter(|f| !f.ends_with(".mdb"))
        .collect();
    expected.sort();
    assert_eq!(refused, expected);
}
