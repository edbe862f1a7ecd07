//! Bad input: every case exits with the right code and one message naming
//! the file, sheet or column at fault and what to do; nothing is
//! half-written. Also: a workbook that is not the fixture, as a new user
//! would bring one.

mod common;

use std::path::Path;

use common::*;
use rusqlite::Connection;

/// A throw-away project reading `workbook`, with the given files.
fn stock_project(workbook: &Path, files: &[(&str, &str)]) -> tempfile::TempDir {
    project(&excel_stock_config(workbook), files)
}

fn fixture() -> std::path::PathBuf {
    root().join("fixtures/stock/stock.xlsx")
}

fn mapping(name: &str) -> String {
    std::fs::read_to_string(root().join("mappings").join(format!("{name}.toml"))).unwrap()
}

const STOCK_JOB: &str = "source = \"stock\"\n[[tables]]\nmapping = \"stock_parts\"\n[[tables]]\nmapping = \"stock_receipts\"\n";

#[test]
fn missing_workbook() {
    let out = repaero(&[
        "--set",
        "sources.stock.path=/nonexistent/stock.xlsx",
        "migrate",
        "stock",
        "--dry-run",
    ]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("/nonexistent/stock.xlsx: cannot open"),
        "{err}"
    );
    assert!(err.contains("Check `path`"), "{err}");
}

#[test]
fn corrupt_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("stock.xlsx");
    std::fs::write(&corrupt, b"PK\x03\x04 this is not a zip archive at all").unwrap();
    let out = repaero(&[
        "--set",
        &format!("sources.stock.path={}", corrupt.display()),
        "migrate",
        "stock",
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("corrupt spreadsheet"),
        "{}",
        stderr(&out)
    );

    let csv = dir.path().join("export.xls");
    std::fs::write(&csv, "Référence;Quantité\nMOT-1;3\n").unwrap();
    let out = repaero(&[
        "--set",
        &format!("sources.stock.path={}", csv.display()),
        "migrate",
        "stock",
    ]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("this is a text file, not a spreadsheet"),
        "{}",
        stderr(&out)
    );

    // a truncated copy of the real fixture
    let bytes = std::fs::read(fixture()).unwrap();
    let cut = dir.path().join("cut.xlsx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = repaero(&[
        "--set",
        &format!("sources.stock.path={}", cut.display()),
        "migrate",
        "stock",
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("cut.xlsx"), "{}", stderr(&out));
}

#[test]
#[cfg_attr(
    not(repaero_corpus),
    ignore = "no corpus of real files: set REPAERO_CORPUS (README, \"The corpus\")"
)]
fn password_protected_workbook() {
    let locked = corpus().join("excel/calamine__pass_protected.xlsx");
    let out = repaero(&[
        "--set",
        &format!("sources.stock.path={}", locked.display()),
        "migrate",
        "stock",
    ]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("calamine__pass_protected.xlsx: the workbook is password-protected"),
        "{err}"
    );
    assert!(err.contains("save an unprotected copy"), "{err}");
}

#[test]
fn unknown_sheet_lists_the_sheets() {
    let m = mapping("stock_parts").replace("sheet = \"Stock\"", "sheet = \"stock\"");
    let p = stock_project(
        &fixture(),
        &[
            ("jobs/stock.toml", STOCK_JOB),
            ("mappings/stock_parts.toml", &m),
            ("mappings/stock_receipts.toml", &mapping("stock_receipts")),
        ],
    );
    let out = repaero_in(p.path(), &["migrate", "stock"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("no sheet named \"stock\""), "{err}");
    assert!(err.contains("\"Stock 2019\" (hidden)"), "{err}");
    assert!(err.contains("Did you mean \"Stock\"?"), "{err}");
}

#[test]
fn missing_mapped_column_says_what_to_change() {
    let m = mapping("stock_parts").replace(
        "from = [\"Quantité\", \"Qté\"]",
        "from = \"Quantité en stock\"",
    );
    let p = stock_project(
        &fixture(),
        &[
            ("jobs/stock.toml", STOCK_JOB),
            ("mappings/stock_parts.toml", &m),
            ("mappings/stock_receipts.toml", &mapping("stock_receipts")),
        ],
    );
    let out = repaero_in(p.path(), &["migrate", "stock"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("stock.xlsx › Stock"), "{err}");
    assert!(
        err.contains("column `quantity` (from \"Quantité en stock\")"),
        "{err}"
    );
    assert!(
        err.contains("\"Quantité\""),
        "headers found are listed: {err}"
    );
    assert!(
        err.contains("Add the workbook's header text to `from`"),
        "{err}"
    );
}

#[test]
fn unknown_configuration_key_names_file_line_and_key() {
    let p = stock_project(&fixture(), &[("jobs/stock.toml", STOCK_JOB)]);
    std::fs::write(
        p.path().join("repaero.toml"),
        "[target]\nurl = \"sqlite://x.db\"\nbatch = 10\n",
    )
    .unwrap();
    let out = repaero_in(p.path(), &["migrate", "stock"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("repaero.toml:3:1: unknown field `batch`"),
        "{err}"
    );
    // and in a mapping
    let m = mapping("stock_parts").replace("fill_down = true", "fill_dwn = true");
    let p = stock_project(
        &fixture(),
        &[
            ("jobs/stock.toml", STOCK_JOB),
            ("mappings/stock_parts.toml", &m),
            ("mappings/stock_receipts.toml", &mapping("stock_receipts")),
        ],
    );
    let out = repaero_in(p.path(), &["migrate", "stock"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("stock_parts.toml:"), "{err}");
    assert!(err.contains("unknown field `fill_dwn`"), "{err}");
    // an unknown job
    let out = repaero_in(p.path(), &["migrate", "stok"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("no job `stok`"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("known jobs: stock"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_failure_in_the_second_table_leaves_the_target_as_it_was() {
    let receipts = mapping("stock_receipts").replace("sheet = \"Entrées\"", "sheet = \"Sorties\"");
    let p = stock_project(
        &fixture(),
        &[
            ("jobs/stock.toml", STOCK_JOB),
            ("mappings/stock_parts.toml", &mapping("stock_parts")),
            ("mappings/stock_receipts.toml", &receipts),
        ],
    );
    let out = repaero_in(p.path(), &["migrate", "stock"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("table stock_receipts"),
        "{}",
        stderr(&out)
    );
    let db = p.path().join("repaero.db");
    let c = Connection::open(&db).unwrap();
    let tables: i64 = c
        .query_row("SELECT count(*) FROM sqlite_master WHERE name IN ('parts', 'parts__repaero_new', '_rejects')", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 0, "parts was written although the job failed");

    // with a good first run in place, a failed run keeps it whole
    std::fs::write(
        p.path().join("mappings/stock_receipts.toml"),
        mapping("stock_receipts"),
    )
    .unwrap();
    assert_eq!(code(&repaero_in(p.path(), &["migrate", "stock"])), 0);
    std::fs::write(p.path().join("mappings/stock_receipts.toml"), &receipts).unwrap();
    let parts = std::fs::read_to_string(p.path().join("mappings/stock_parts.toml")).unwrap();
    std::fs::write(
        p.path().join("mappings/stock_parts.toml"),
        parts.replace("min = 0\n", "min = 100000\n"),
    )
    .unwrap();
    assert_eq!(code(&repaero_in(p.path(), &["migrate", "stock"])), 2);
    let c = Connection::open(&db).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM parts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 18);
    let r: i64 = c
        .query_row("SELECT count(*) FROM _rejects", [], |r| r.get(0))
        .unwrap();
    assert_eq!(r, 5);
}

/// A workbook the fixture generator did not write, with its own header
/// texts, mapped by a user.
fn users_workbook(path: &Path) {
    use rust_xlsxwriter::Workbook;
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("Inventaire").unwrap();
    let header = ["Réf.", "Libellé", "Qté", "PU HT", "Emplacement"];
    for (c, h) in header.iter().enumerate() {
        ws.write_string(0, c as u16, *h).unwrap();
    }
    let rows = [
        ("A-1", "Rondelle", "10", "0,12 €"),
        ("a-1 ", "Rondelle", "5", "0,12 €"),
        ("B-2", "Écrou", "abc", "1,5"),
    ];
    for (i, (r, d, q, p)) in rows.iter().enumerate() {
        let row = i as u32 + 1;
        ws.write_string(row, 0, *r).unwrap();
        ws.write_string(row, 1, *d).unwrap();
        ws.write_string(row, 2, *q).unwrap();
        ws.write_string(row, 3, *p).unwrap();
        ws.write_string(row, 4, "Z9").unwrap();
    }
    wb.save(path).unwrap();
}

const USER_MAPPING: &str = r#"
[source]
sheet = "Inventaire"
[target]
table = "parts"
key = ["reference"]
[[columns]]
name = "reference"
from = ["Référence", "Réf."]
case = "upper"
required = true
[[columns]]
name = "designation"
from = ["Désignation", "Libellé"]
[[columns]]
name = "quantity"
from = ["Quantité", "Qté"]
type = "integer"
[[columns]]
name = "unit_price"
from = ["Prix unitaire", "PU HT"]
type = "decimal"
[dedupe]
merge = { quantity = "sum" }
"#;

#[test]
fn a_users_own_workbook_with_other_headers() {
    let dir = tempfile::tempdir().unwrap();
    let wb = dir.path().join("inventaire.xlsx");
    users_workbook(&wb);
    let job = "source = \"stock\"\n[[tables]]\nmapping = \"inv\"\n";
    let p = stock_project(
        &wb,
        &[("jobs/inv.toml", job), ("mappings/inv.toml", USER_MAPPING)],
    );
    let out = repaero_in(p.path(), &["migrate", "inv", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let t = &report["runs"][0]["tables"][0];
    assert_eq!(
        (
            t["read"].as_u64(),
            t["written"].as_u64(),
            t["merged"].as_u64(),
            t["rejected"].as_u64()
        ),
        (Some(3), Some(1), Some(1), Some(1))
    );
    assert_eq!(t["reasons"]["quantity: not an integer"], 1);
    let c = Connection::open(p.path().join("repaero.db")).unwrap();
    let (q, price): (i64, f64) = c
        .query_row(
            "SELECT quantity, unit_price FROM parts WHERE reference = 'A-1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((q, price), (15, 0.12));

    // a header the mapping does not know: the message says what to add
    let p = stock_project(
        &wb,
        &[
            ("jobs/inv.toml", job),
            (
                "mappings/inv.toml",
                &USER_MAPPING.replace("\"Prix unitaire\", \"PU HT\"", "\"Prix unitaire\""),
            ),
        ],
    );
    let out = repaero_in(p.path(), &["migrate", "inv"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("column `unit_price` (from \"Prix unitaire\")"),
        "{err}"
    );
    assert!(err.contains("\"PU HT\""), "{err}");
}

#[test]
fn a_duplicate_of_a_row_the_target_refused_is_rejected_too() {
    use rust_xlsxwriter::Workbook;
    let dir = tempfile::tempdir().unwrap();
    let wb_path = dir.path().join("dups.xlsx");
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("Inventaire").unwrap();
    for (c, h) in ["Réf.", "Qté"].iter().enumerate() {
        ws.write_string(0, c as u16, *h).unwrap();
    }
    // A-1 twice with another quantity: the key is refused the second time;
    // the third line repeats the second exactly
    for (i, (r, q)) in [("A-1", 1.0), ("A-1", 2.0), ("A-1", 2.0), ("B-2", 5.0)]
        .iter()
        .enumerate()
    {
        ws.write_string(i as u32 + 1, 0, *r).unwrap();
        ws.write_number(i as u32 + 1, 1, *q).unwrap();
    }
    wb.save(&wb_path).unwrap();
    let mapping = r#"
[source]
sheet = "Inventaire"
[target]
table = "parts"
key = ["reference"]
[[columns]]
name = "reference"
from = "Réf."
[[columns]]
name = "quantity"
from = "Qté"
type = "integer"
[dedupe]
key = ["*"]
"#;
    let job = "source = \"stock\"\n[[tables]]\nmapping = \"inv\"\n";
    let p = stock_project(
        &wb_path,
        &[("jobs/inv.toml", job), ("mappings/inv.toml", mapping)],
    );
    let out = repaero_in(p.path(), &["migrate", "inv", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let t = &report["runs"][0]["tables"][0];
    assert_eq!(t["read"], 4);
    assert_eq!(t["written"], 2);
    assert_eq!(
        t["merged"], 0,
        "nothing may be merged into a refused row: {t}"
    );
    assert_eq!(t["rejected"], 2);
    assert_eq!(
        t["reasons"]["duplicate of a row the target refused"], 1,
        "{t}"
    );
    assert_eq!(
        t["reasons"]["target refused: UNIQUE constraint failed: parts__repaero_new.reference"], 1,
        "{t}"
    );
    let c = Connection::open(p.path().join("repaero.db")).unwrap();
    let rows: Vec<i64> = c
        .prepare("SELECT source_row FROM _rejects ORDER BY source_row")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows, vec![3, 4]);
}
