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

// ---------------------------------------------------------------------
// Hardening (issue 15): values a source cannot hand over reject their row
// with a reason; nothing panics, nothing is guessed.

/// Rewrite one part of an .xlsx (a zip archive) through `edit`.
fn patch_xlsx(path: &Path, part: &str, edit: impl Fn(&str) -> String) {
    use std::io::{Read, Write};
    let mut zin = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut parts = Vec::new();
    for i in 0..zin.len() {
        let mut f = zin.by_index(i).unwrap();
        let name = f.name().unwrap().to_string();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        parts.push((name, bytes));
    }
    assert!(parts.iter().any(|(n, _)| n == part), "no part {part}");
    let mut zout = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in parts {
        let bytes = if name == part {
            edit(std::str::from_utf8(&bytes).unwrap()).into_bytes()
        } else {
            bytes
        };
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zout.start_file(name, opts).unwrap();
        zout.write_all(&bytes).unwrap();
    }
    zout.finish().unwrap();
}

/// A sheet "Inventaire" with the header `Réf.`, `Date` and one row per
/// entry: a date serial (formatted as a date) or a text.
enum DateCell {
    Serial(f64),
    Text(&'static str),
}

fn dates_workbook(path: &Path, rows: &[(&str, DateCell)]) {
    use rust_xlsxwriter::{Format, Workbook};
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("Inventaire").unwrap();
    ws.write_string(0, 0, "Réf.").unwrap();
    ws.write_string(0, 1, "Date").unwrap();
    let date = Format::new().set_num_format("dd/mm/yyyy");
    for (i, (r, d)) in rows.iter().enumerate() {
        let row = i as u32 + 1;
        ws.write_string(row, 0, *r).unwrap();
        match d {
            DateCell::Serial(v) => ws.write_number_with_format(row, 1, *v, &date).unwrap(),
            DateCell::Text(t) => ws.write_string(row, 1, *t).unwrap(),
        };
    }
    wb.save(path).unwrap();
}

const DATES_MAPPING: &str = r#"
[source]
sheet = "Inventaire"
[target]
table = "receipts"
key = ["reference"]
[[columns]]
name = "reference"
from = "Réf."
[[columns]]
name = "received_at"
from = "Date"
type = "date"
"#;

const INV_JOB: &str = "source = \"stock\"\n[[tables]]\nmapping = \"inv\"\n";

/// Run the `inv` job on `workbook`; the report of its table, the
/// project (for its target) and stderr.
fn run_inv(
    workbook: &Path,
    mapping: &str,
    extra_config: &str,
) -> (serde_json::Value, tempfile::TempDir, String) {
    let config = format!("{}{extra_config}", excel_stock_config(workbook));
    let p = project(
        &config,
        &[("jobs/inv.toml", INV_JOB), ("mappings/inv.toml", mapping)],
    );
    let out = repaero_in(p.path(), &["migrate", "inv", "--json"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    (report["runs"][0]["tables"][0].clone(), p, err)
}

/// `(source_row, reason, detail)` of the run's rejects.
fn rejects(db: &Path) -> Vec<(i64, String, String)> {
    let c = Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT source_row, reason, detail FROM _rejects ORDER BY source_row")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn an_infinite_date_cell_rejects_its_row_instead_of_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let wb = dir.path().join("dates.xlsx");
    dates_workbook(
        &wb,
        &[
            ("A-1", DateCell::Serial(46096.0)),
            ("B-2", DateCell::Serial(11111.0)),
            ("C-3", DateCell::Serial(46097.0)),
        ],
    );
    // what a damaged or hand-made file holds, and calamine reads as -inf
    patch_xlsx(&wb, "xl/worksheets/sheet1.xml", |x| {
        x.replace("<v>11111</v>", "<v>-inf</v>")
    });
    let (t, p, _) = run_inv(&wb, DATES_MAPPING, "");
    assert_eq!(
        (&t["read"], &t["written"], &t["rejected"]),
        (&3.into(), &2.into(), &1.into()),
        "{t}"
    );
    assert_eq!(t["reasons"]["received_at: not a date"], 1, "{t}");
    let r = rejects(&p.path().join("repaero.db"));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, 3);
    for part in [
        "dates.xlsx › Inventaire",
        "row 3",
        "column B (\"Date\")",
        "-inf",
    ] {
        assert!(r[0].2.contains(part), "{part:?} in {}", r[0].2);
    }
}

#[test]
fn excel_dates_that_never_were_are_rejected_not_guessed() {
    let dir = tempfile::tempdir().unwrap();
    let wb = dir.path().join("dates.xlsx");
    dates_workbook(
        &wb,
        &[
            ("S59", DateCell::Serial(59.0)),
            ("S60", DateCell::Serial(60.0)),
            ("S61", DateCell::Serial(61.0)),
            ("NAN", DateCell::Serial(22222.0)),
            ("T59", DateCell::Text("59")),
            ("T60", DateCell::Text("60")),
            ("T1", DateCell::Text("1")),
        ],
    );
    patch_xlsx(&wb, "xl/worksheets/sheet1.xml", |x| {
        x.replace("<v>22222</v>", "<v>NaN</v>")
    });
    let (t, p, _) = run_inv(&wb, DATES_MAPPING, "");
    assert_eq!(t["reasons"]["received_at: not a date"], 3, "{t}");
    let db = p.path().join("repaero.db");
    let c = Connection::open(&db).unwrap();
    let written: Vec<(String, String)> = c
        .prepare("SELECT reference, received_at FROM receipts ORDER BY reference")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let want = [
        ("S59", "1900-02-28"),
        ("S61", "1900-03-01"),
        ("T1", "1900-01-01"),
        ("T59", "1900-02-28"),
    ];
    assert_eq!(
        written,
        want.map(|(a, b)| (a.to_string(), b.to_string())),
        "59 and 60 were both 1900-02-28, NaN was 1899-12-30"
    );
    let r = rejects(&db);
    let detail = |row: i64| {
        r.iter()
            .find(|x| x.0 == row)
            .map(|x| x.2.clone())
            .unwrap_or_default()
    };
    assert!(detail(3).contains("29/02/1900"), "{}", detail(3));
    assert!(detail(3).contains("row 3, column B"), "{}", detail(3));
    assert!(detail(5).contains("holds NaN"), "{}", detail(5));
    assert!(detail(7).contains("29/02/1900"), "text 60: {}", detail(7));
}

const LABELS_MAPPING: &str = r#"
[source]
sheet = "Inventaire"
[target]
table = "parts"
key = ["reference"]
[[columns]]
name = "reference"
from = "Réf."
[[columns]]
name = "designation"
from = "Libellé"
"#;

#[test]
fn a_cell_above_the_cap_is_rejected_not_written() {
    use rust_xlsxwriter::Workbook;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.xlsx");
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("Inventaire").unwrap();
    for (r, (a, b)) in [
        ("Réf.", "Libellé"),
        ("A-1", "Rondelle"),
        ("B-2", "PLACEHOLDER"),
    ]
    .iter()
    .enumerate()
    {
        ws.write_string(r as u32, 0, *a).unwrap();
        ws.write_string(r as u32, 1, *b).unwrap();
    }
    wb.save(&path).unwrap();
    // Excel's own limit is 32,767 characters; a 5 MiB cell comes from
    // another writer (or a damaged file), and compresses to almost nothing
    let big = 5 * 1024 * 1024;
    patch_xlsx(&path, "xl/sharedStrings.xml", |x| {
        x.replacen("PLACEHOLDER", &"É".repeat(big / 2), 1)
    });
    assert!(std::fs::metadata(&path).unwrap().len() < 100_000);
    let (t, p, _) = run_inv(&path, LABELS_MAPPING, "");
    assert_eq!(
        (&t["written"], &t["rejected"]),
        (&1.into(), &1.into()),
        "{t}"
    );
    assert_eq!(t["reasons"]["designation: cell too large"], 1, "{t}");
    let db = p.path().join("repaero.db");
    let r = rejects(&db);
    assert_eq!(r[0].0, 3);
    for part in [
        "big.xlsx › Inventaire",
        "row 3, column B (\"Libellé\")",
        &format!("{big} bytes, above max_cell_bytes = 4194304"),
    ] {
        assert!(r[0].2.contains(part), "{part:?} in {}", r[0].2);
    }
    // the 5 MiB reached neither the table nor _rejects
    assert!(std::fs::metadata(&db).unwrap().len() < 1_000_000);

    // a source that means it raises the cap
    let (t, p, _) = run_inv(&path, LABELS_MAPPING, "max_cell_bytes = 8388608\n");
    assert_eq!(
        (&t["written"], &t["rejected"]),
        (&2.into(), &0.into()),
        "{t}"
    );
    let c = Connection::open(p.path().join("repaero.db")).unwrap();
    let len: i64 = c
        .query_row(
            "SELECT max(length(CAST(designation AS BLOB))) FROM parts",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(len as usize, big);
}

#[test]
fn csv_fields_and_access_memos_above_the_cap_are_rejected() {
    // CSV: a field above a (small) cap
    let p = project(
        "[sources.cat]\nkind = \"csv\"\npath = \"cat.csv\"\nmax_cell_bytes = 10\n",
        &[
            (
                "cat.csv",
                "ref;label\nA-1;short\nB-2;much longer than ten\n",
            ),
            (
                "jobs/cat.toml",
                "source = \"cat\"\n[[tables]]\nmapping = \"cat\"\n",
            ),
            (
                "mappings/cat.toml",
                "[source]\ntable = \"cat.csv\"\n[target]\ntable = \"cat\"\n[[columns]]\nname = \"reference\"\nfrom = \"ref\"\n[[columns]]\nname = \"label\"\nfrom = \"label\"\n",
            ),
        ],
    );
    let out = repaero_in(p.path(), &["migrate", "cat", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let t = &report["runs"][0]["tables"][0];
    assert_eq!(
        (&t["written"], &t["rejected"]),
        (&1.into(), &1.into()),
        "{t}"
    );
    assert_eq!(t["reasons"]["label: cell too large"], 1, "{t}");
    let r = rejects(&p.path().join("repaero.db"));
    assert!(
        r[0].2
            .contains("cat.csv, line 3, field 2 (\"label\"): 20 bytes"),
        "{}",
        r[0].2
    );

    // Access: memos above the cap
    let dir = tempfile::tempdir().unwrap();
    let (url, q) = sqlite_target(dir.path());
    let out = repaero(&[
        "--set",
        &url,
        "--set",
        &q,
        "--set",
        "sources.clients.max_cell_bytes=60",
        "migrate",
        "clients",
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let t = report["runs"][0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "interventions")
        .unwrap()
        .clone();
    let too_large = t["reasons"]["comment: cell too large"]
        .as_u64()
        .unwrap_or(0);
    assert!(too_large > 0, "{t}");
    let c = Connection::open(dir.path().join("t.db")).unwrap();
    let longest: i64 = c
        .query_row(
            "SELECT max(length(CAST(comment AS BLOB))) FROM interventions",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(longest <= 60, "{longest}");
    let detail: String = c
        .query_row(
            "SELECT detail FROM _rejects WHERE reason = 'comment: cell too large' LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        detail.contains("clients.mdb › Interventions, row ")
            && detail.contains(", column Commentaire: ")
            && detail.contains("bytes, above max_cell_bytes = 60"),
        "{detail}"
    );
}

#[test]
fn a_damaged_access_date_rejects_its_row_instead_of_a_panic() {
    // two byte flips in the Date/Time of the first two interventions
    // (2024-04-18 09:45 and 2019-03-22 13:15): the first becomes 1.2e308
    // days (chrono panicked: TimeDelta::days out of bounds), the second NaN
    // (read as 1899-12-30)
    let mut bytes = std::fs::read(root().join("fixtures/access/clients.mdb")).unwrap();
    let find = |bytes: &[u8], v: f64| {
        let pat = v.to_le_bytes();
        let hits: Vec<usize> = (0..bytes.len() - 8)
            .filter(|&i| bytes[i..i + 8] == pat)
            .collect();
        assert_eq!(hits.len(), 1, "{v}");
        hits[0]
    };
    let ole = |days: f64, h: f64, m: f64| days + (h * 60.0 + m) / 1440.0;
    let first = find(&bytes, ole(45400.0, 9.0, 45.0));
    bytes[first + 7] = 0x7f;
    let second = find(&bytes, ole(43546.0, 13.0, 15.0));
    bytes[second + 6] = 0xf8;
    bytes[second + 7] = 0x7f;
    let dir = tempfile::tempdir().unwrap();
    let mdb = dir.path().join("damaged.mdb");
    std::fs::write(&mdb, &bytes).unwrap();
    let (url, q) = sqlite_target(dir.path());
    let out = repaero(&[
        "--set",
        &url,
        "--set",
        &q,
        "--set",
        &format!("sources.clients.path={}", mdb.display()),
        "migrate",
        "clients",
        "--json",
    ]);
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let t = report["runs"][0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "interventions")
        .unwrap()
        .clone();
    // the fixture's own 14 orphans, and the two damaged rows
    assert_eq!(
        t["reasons"],
        serde_json::json!({"client_id: unknown clients.id": 14, "performed_at: not a date": 2}),
        "{t}"
    );
    assert_eq!(t["written"], 4984);
    let r: Vec<(i64, String, String)> = rejects(&dir.path().join("t.db"))
        .into_iter()
        .filter(|r| r.1 == "performed_at: not a date")
        .collect();
    assert_eq!(r.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2]);
    assert!(
        r[0].2.contains(
            "damaged.mdb › Interventions, row 1, column DateIntervention: the Date/Time value 1.2"
        ),
        "{}",
        r[0].2
    );
    assert!(
        r[1].2
            .contains("row 2, column DateIntervention: the Date/Time value is NaN"),
        "{}",
        r[1].2
    );
}

#[test]
fn quarantine_csv_cells_do_not_run_as_formulas() {
    use rust_xlsxwriter::Workbook;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inv.xlsx");
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("Inventaire").unwrap();
    for (c, h) in ["Réf.", "Libellé", "Qté", "PU HT"].iter().enumerate() {
        ws.write_string(0, c as u16, *h).unwrap();
    }
    let rows = [
        ("A-1", "=HYPERLINK(\"http://evil.example\",\"clic\")", "abc"),
        ("B-2", "=1+1", "5"),
        ("C-3", "-2+3+cmd|' /C calc'!A0", "x"),
        ("D-4", "@SUM(1)", "-3,5"),
    ];
    for (i, (r, d, q)) in rows.iter().enumerate() {
        let row = i as u32 + 1;
        ws.write_string(row, 0, *r).unwrap();
        ws.write_string(row, 1, *d).unwrap();
        ws.write_string(row, 2, *q).unwrap();
        ws.write_string(row, 3, "1").unwrap();
    }
    wb.save(&path).unwrap();
    let (t, p, _) = run_inv(&path, USER_MAPPING, "");
    assert_eq!(
        (&t["written"], &t["rejected"]),
        (&1.into(), &3.into()),
        "{t}"
    );
    let file = t["reasons"].clone();
    assert_eq!(file["quantity: not an integer"], 3, "{t}");
    let rejects_csv = walk(&p.path().join("quarantine"))
        .into_iter()
        .find(|f| f.to_string_lossy().ends_with("inv.parts.rejects.csv"))
        .expect("a rejects file");
    let mut rd = csv::Reader::from_path(&rejects_csv).unwrap();
    let header = rd.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
    let cells: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r[col("designation")].to_string(),
                r[col("quantity")].to_string(),
            )
        })
        .collect();
    assert_eq!(
        cells,
        [
            (
                "'=HYPERLINK(\"http://evil.example\",\"clic\")".to_string(),
                "abc".to_string()
            ),
            ("'-2+3+cmd|' /C calc'!A0".to_string(), "x".to_string()),
            ("'@SUM(1)".to_string(), "-3,5".to_string()),
        ]
    );
    // the target keeps the data as it is
    let c = Connection::open(p.path().join("repaero.db")).unwrap();
    let d: String = c
        .query_row("SELECT designation FROM parts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(d, "=1+1");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Random bytes whose first 8 happen to be printable, as the issue's probe.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = b"Q9#kx~R!".to_vec();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    out.extend((0..n).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 24) as u8
    }));
    out
}

#[test]
fn random_bytes_are_called_what_they_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = random_bytes(8192);
    for (name, said) in [
        (
            "random.mdb",
            "random.mdb: not an Access database (no Jet/ACE header)",
        ),
        (
            "random.accdb",
            "random.accdb: not an Access database (no Jet/ACE header)",
        ),
        ("random.xlsx", "random.xlsx: not an Excel workbook"),
        (
            "random.xls",
            "random.xls: not a spreadsheet this tool can read",
        ),
    ] {
        let f = dir.path().join(name);
        std::fs::write(&f, &bytes).unwrap();
        let out = repaero_in(dir.path(), &["inspect", name]);
        assert_eq!(code(&out), 2, "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(said), "{name}: {}", stderr(&out));
        assert!(!stderr(&out).contains("text file"), "{}", stderr(&out));
    }
    // a configured Access source too
    std::fs::write(
        dir.path().join("repaero.toml"),
        "[sources.old]\nkind = \"access\"\npath = \"random.mdb\"\n",
    )
    .unwrap();
    let out = repaero_in(dir.path(), &["inspect", "old"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("not an Access database (no Jet/ACE header)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn replacing_a_table_with_an_empty_sheet_is_refused_unless_allowed() {
    use rust_xlsxwriter::Workbook;
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.xlsx");
    users_workbook(&full);
    let empty = dir.path().join("empty.xlsx");
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("Inventaire").unwrap();
    for (c, h) in ["Réf.", "Libellé", "Qté", "PU HT"].iter().enumerate() {
        ws.write_string(0, c as u16, *h).unwrap();
    }
    wb.save(&empty).unwrap();
    let p = project(
        &excel_stock_config(&full),
        &[
            ("jobs/inv.toml", INV_JOB),
            ("mappings/inv.toml", USER_MAPPING),
        ],
    );
    assert_eq!(code(&repaero_in(p.path(), &["migrate", "inv"])), 0);
    let parts = || -> i64 {
        Connection::open(p.path().join("repaero.db"))
            .unwrap()
            .query_row("SELECT count(*) FROM parts", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(parts(), 1);

    let empty_source = format!("sources.stock.path={}", empty.display());
    let out = repaero_in(p.path(), &["--set", &empty_source, "migrate", "inv"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    for part in [
        "table parts",
        "no data row",
        "nothing was committed",
        "allow_empty = true",
        "mappings/inv.toml",
    ] {
        assert!(err.contains(part), "{part:?} in {err}");
    }
    assert_eq!(parts(), 1, "the table was emptied");

    // meant: the table is emptied
    std::fs::write(
        p.path().join("mappings/inv.toml"),
        USER_MAPPING.replace(
            "key = [\"reference\"]",
            "key = [\"reference\"]\nallow_empty = true",
        ),
    )
    .unwrap();
    let out = repaero_in(p.path(), &["--set", &empty_source, "migrate", "inv"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(parts(), 0);
}

#[test]
fn rows_read_and_all_rejected_still_replace() {
    // not the empty-source case: the rows were there, the tally says why
    // each went to the quarantine
    use rust_xlsxwriter::Workbook;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.xlsx");
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("Inventaire").unwrap();
    for (c, h) in ["Réf.", "Qté"].iter().enumerate() {
        ws.write_string(0, c as u16, *h).unwrap();
    }
    ws.write_string(1, 0, "A-1").unwrap();
    ws.write_string(1, 1, "beaucoup").unwrap();
    wb.save(&path).unwrap();
    let mapping = "[source]\nsheet = \"Inventaire\"\n[target]\ntable = \"parts\"\n[[columns]]\nname = \"reference\"\nfrom = \"Réf.\"\n[[columns]]\nname = \"quantity\"\nfrom = \"Qté\"\ntype = \"integer\"\n";
    let (t, _, _) = run_inv(&path, mapping, "");
    assert_eq!(
        (&t["read"], &t["written"], &t["rejected"]),
        (&1.into(), &0.into(), &1.into())
    );
}

#[test]
fn thousands_of_identical_headers_are_numbered() {
    // CSV: `inspect` failed (a batch cannot hold two columns of one name)
    let n = 8_000;
    let header = vec!["Réf"; n].join(";");
    let line = vec!["x"; n].join(";");
    let p = project(
        "[sources.wide]\nkind = \"csv\"\npath = \"wide.csv\"\n",
        &[("wide.csv", &format!("{header}\n{line}\n{line}\n"))],
    );
    let check = |out: &std::process::Output| {
        assert_eq!(code(out), 0, "{}", stderr(out));
        let tables: serde_json::Value = serde_json::from_str(&stdout(out)).unwrap();
        let t = &tables[0];
        assert_eq!(t["rows"], 2);
        let names: Vec<&str> = t["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), n);
        assert_eq!(names[0], "Réf");
        assert_eq!(names[1], "Réf (2)");
        assert_eq!(names[n - 1], format!("Réf ({n})"));
    };
    check(&repaero_in(p.path(), &["inspect", "wide", "--json"]));

    // Excel: numbered as before, in linear time (scripts/bench-inspect)
    use rust_xlsxwriter::Workbook;
    let xlsx = p.path().join("wide.xlsx");
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    for c in 0..n as u16 {
        ws.write_string(0, c, "Réf").unwrap();
        ws.write_string(1, c, "x").unwrap();
        ws.write_string(2, c, "y").unwrap();
    }
    wb.save(&xlsx).unwrap();
    check(&repaero_in(p.path(), &["inspect", "wide.xlsx", "--json"]));
}

/// A sheet whose XML breaks after thousands of rows (read in chunks by one
/// thread, walked into batches by another): the run fails naming the
/// sheet, and nothing of the rows before the break is kept.
#[test]
fn a_sheet_broken_past_its_first_rows_fails_the_job_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("big.xlsx");
    let out = repaero_in(
        dir.path(),
        &[
            "fixtures",
            "stock",
            "--rows",
            "3000",
            "--out",
            book.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    patch_xlsx(&book, "xl/worksheets/sheet1.xml", |xml| {
        let at = xml.find("<row r=\"2000\"").expect("row 2000");
        format!(
            "{}<row r=\"2000\"><c r=\"A2000\" t=\"s\"><v>1</v></x></row>{}",
            &xml[..at],
            &xml[at..]
        )
    });
    let p = stock_project(
        &book,
        &[
            ("jobs/stock.toml", STOCK_JOB),
            ("mappings/stock_parts.toml", &mapping("stock_parts")),
            ("mappings/stock_receipts.toml", &mapping("stock_receipts")),
        ],
    );
    let out = repaero_in(p.path(), &["migrate", "stock"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("big.xlsx › Stock: malformed sheet data"),
        "{}",
        stderr(&out)
    );
    let c = Connection::open(p.path().join("repaero.db")).unwrap();
    let tables: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('parts', 'parts__repaero_new')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "rows before the break were kept");
}
