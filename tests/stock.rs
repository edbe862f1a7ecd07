//! The stock migration, end to end, through the real binary, into SQLite.
//! Expected values come from the fixture generator's ground truth
//! (fixtures/stock/stock.expected.json), never from a previous run.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use rusqlite::Connection;
use serde_json::Value;

fn truth() -> Value {
    let text = std::fs::read_to_string(root().join("fixtures/stock/stock.expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn migrate_json(dir: &Path, extra: &[&str]) -> (i32, Value, String) {
    let (t, q) = sqlite_target(dir);
    let mut args = vec!["--set", &t, "--set", &q, "migrate", "stock", "--json"];
    args.extend_from_slice(extra);
    let out = repaero(&args);
    let json = serde_json::from_str(&stdout(&out)).unwrap_or(Value::Null);
    (code(&out), json, stderr(&out))
}

fn dump(db: &Path, sql: &str) -> Vec<Vec<String>> {
    let c = Connection::open(db).unwrap();
    let mut st = c.prepare(sql).unwrap();
    let n = st.column_count();
    st.query_map([], |r| {
        (0..n)
            .map(|i| {
                let v: rusqlite::types::Value = r.get(i)?;
                Ok(format!("{v:?}"))
            })
            .collect::<rusqlite::Result<Vec<_>>>()
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

fn scalar<T: rusqlite::types::FromSql>(db: &Path, sql: &str) -> T {
    Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

fn table_report<'a>(report: &'a Value, table: &str) -> &'a Value {
    report["runs"][0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == table)
        .unwrap_or_else(|| panic!("no table {table} in {report}"))
}

#[test]
fn migrate_stock_matches_the_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let (code, report, err) = migrate_json(dir.path(), &[]);
    assert_eq!(code, 0, "{err}\n{report}");
    let truth = truth();
    for table in [
        "parts",
        "stock_receipts",
        "part_reservations",
        "part_barcodes",
    ] {
        let got = table_report(&report, table);
        let want = &truth[table];
        for k in ["read", "written", "merged"] {
            assert_eq!(got[k], want[k], "{table}.{k}");
        }
        let reasons: BTreeMap<String, u64> =
            serde_json::from_value(got["reasons"].clone()).unwrap();
        let expected: BTreeMap<String, u64> =
            serde_json::from_value(want["rejected"].clone()).unwrap();
        assert_eq!(reasons, expected, "{table} rejects by reason");
        assert_eq!(
            got["rejected"].as_u64().unwrap(),
            expected.values().sum::<u64>()
        );
        assert_eq!(
            got["skipped"]["rows_above_header"], want["rows_above_header"],
            "{table}"
        );
        assert_eq!(got["skipped"]["blank_rows"], want["blank_rows"], "{table}");
        assert_eq!(
            got["skipped"]["footer_rows"], want["footer_rows"],
            "{table}"
        );
    }
    // the state kept until a table ends is declared with its size: the
    // dedupe's keys (one per distinct reference) and the reference rule's
    // keys (the parts written before part_barcodes)
    let held = |table: &str, what: &str| -> (u64, u64, u64) {
        let h = table_report(&report, table)["held"]
            .as_array()
            .unwrap_or_else(|| panic!("{table}: no held state in the report"))
            .iter()
            .find(|h| h["what"].as_str().is_some_and(|w| w.starts_with(what)))
            .unwrap_or_else(|| panic!("{table}: no held {what}"))
            .clone();
        let n = |k: &str| h[k].as_u64().unwrap();
        (n("entries"), n("bytes"), n("peak_bytes"))
    };
    let distinct = truth["parts"]["distinct_keys"].as_u64().unwrap();
    let (keys, bytes, peak) = held("parts", "dedupe keys");
    assert_eq!(
        keys, distinct,
        "parts: one dedupe key per distinct reference"
    );
    assert!(bytes >= keys * 32 && bytes <= peak, "{bytes} {peak}");
    let (refs, bytes, _) = held("part_barcodes", "reference keys of parts.reference");
    assert_eq!(refs, truth["parts"]["written"].as_u64().unwrap());
    assert!(bytes >= refs * 16, "{bytes}");
    let db = dir.path().join("t.db");
    let parts = &truth["parts"];
    assert_eq!(
        scalar::<i64>(&db, "SELECT count(*) FROM parts"),
        parts["written"].as_i64().unwrap()
    );
    assert_eq!(
        scalar::<i64>(&db, "SELECT count(DISTINCT reference) FROM parts"),
        parts["distinct_keys"].as_i64().unwrap()
    );
    assert_eq!(
        scalar::<i64>(&db, "SELECT sum(quantity) FROM parts"),
        parts["total_quantity"].as_i64().unwrap()
    );
    for (reference, v) in truth["part_values"].as_object().unwrap() {
        let (qty, date): (i64, Option<String>) = Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT quantity, last_receipt_date FROM parts WHERE reference = ?1",
                [reference],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or_else(|e| panic!("part {reference}: {e}"));
        assert_eq!(qty, v[0].as_i64().unwrap(), "{reference} quantity");
        assert_eq!(date.as_deref(), v[1].as_str(), "{reference} date");
    }
    assert_eq!(
        scalar::<i64>(&db, "SELECT count(*) FROM parts WHERE supplier IS NULL"),
        truth["parts_without_supplier"].as_i64().unwrap()
    );
    // values written in French forms, read right
    let price = |r: &str| -> Option<f64> {
        Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT unit_price FROM parts WHERE reference = ?1",
                [r],
                |row| row.get(0),
            )
            .unwrap()
    };
    assert_eq!(price("MOT-1003"), Some(3.75)); // "3,75"
    assert_eq!(price("MOT-1006"), Some(89.9)); // "89,90 €"
    assert_eq!(price("AVI-3001"), Some(2450.0)); // "2 450,00"
    assert_eq!(price("AVI-3003"), None); // "sur devis"
    assert_eq!(price("HYD-2040"), Some(212.4));
    // the hidden column of 2019 prices (all 9.99) is never read
    assert_eq!(
        scalar::<i64>(&db, "SELECT count(*) FROM parts WHERE unit_price = 9.99"),
        0
    );
    // the merged category cell is filled down to every row of its block
    assert_eq!(
        scalar::<i64>(&db, "SELECT count(*) FROM parts WHERE category IS NULL"),
        0
    );
    assert_eq!(
        scalar::<String>(
            &db,
            "SELECT category FROM parts WHERE reference = 'MOT-1006'"
        ),
        "Moteur"
    );
    // two bins of one part: quantities added, first location kept
    assert_eq!(
        scalar::<String>(
            &db,
            "SELECT location FROM parts WHERE reference = 'HYD-2040'"
        ),
        "B2-04"
    );
    let receipts = &truth["stock_receipts"];
    assert_eq!(
        scalar::<i64>(&db, "SELECT count(*) FROM stock_receipts"),
        receipts["written"].as_i64().unwrap()
    );
    assert_eq!(
        scalar::<i64>(&db, "SELECT sum(quantity) FROM stock_receipts"),
        receipts["total_quantity"].as_i64().unwrap()
    );
    // reservations: references cleaned to the parts' form, per intervention
    for (intervention, rows) in truth["reservations"].as_object().unwrap() {
        let got: Vec<(String, i64)> = Connection::open(&db)
            .unwrap()
            .prepare("SELECT reference, quantity FROM part_reservations WHERE intervention_id = ?1 ORDER BY reference, quantity")
            .unwrap()
            .query_map([intervention.parse::<i64>().unwrap()], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let want: Vec<(String, i64)> = serde_json::from_value(rows.clone()).unwrap();
        assert_eq!(got, want, "reservations of intervention {intervention}");
    }
    // barcodes: every valid EAN-13 maps to its part, nothing else is loaded
    let got: BTreeMap<String, String> = Connection::open(&db)
        .unwrap()
        .prepare("SELECT barcode, reference FROM part_barcodes")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let want: BTreeMap<String, String> = serde_json::from_value(truth["barcodes"].clone()).unwrap();
    assert_eq!(got, want, "part_barcodes");
    // every reject is in the target's _rejects and in the quarantine file
    let rejected: i64 = [
        "parts",
        "stock_receipts",
        "part_reservations",
        "part_barcodes",
    ]
    .iter()
    .map(|t| {
        truth[t]["rejected"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_i64().unwrap())
            .sum::<i64>()
    })
    .sum();
    assert_eq!(
        scalar::<i64>(&db, "SELECT count(*) FROM _rejects"),
        rejected
    );
    assert_eq!(
        scalar::<String>(
            &db,
            "SELECT detail FROM _rejects WHERE reason = 'quantity: not an integer'"
        ),
        "quantity = \"n/a\" is not an integer"
    );
    assert_eq!(
        scalar::<i64>(
            &db,
            "SELECT source_row FROM _rejects WHERE reason = 'reference: required'"
        ),
        17
    );
    let files: Vec<String> = report["runs"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    let rejects_csv = files
        .iter()
        .find(|f| f.ends_with("stock.parts.rejects.csv"))
        .expect("parts rejects file");
    let text = std::fs::read_to_string(rejects_csv).unwrap();
    assert_eq!(text.lines().count(), 1 + 3, "{text}");
    assert!(
        text.contains("› Stock,9,quantity: not an integer"),
        "{text}"
    );
    let merges = files
        .iter()
        .find(|f| f.ends_with("stock.parts.merges.csv"))
        .expect("merges file");
    assert_eq!(
        std::fs::read_to_string(merges).unwrap(),
        "key,kept_row,merged_row\nHYD-2040,16,29\n"
    );
    // the run is logged in the target
    assert_eq!(
        scalar::<String>(&db, "SELECT status FROM _repaero_runs"),
        "committed"
    );
}

const DATA_TABLES: [&str; 3] = [
    "SELECT * FROM parts ORDER BY reference",
    "SELECT * FROM stock_receipts ORDER BY 1, 2, 3, 4, 5",
    "SELECT job, table_name, source, source_row, reason, detail, record FROM _rejects ORDER BY 2, 4",
];

#[test]
fn rerun_gives_the_same_target_and_dry_run_leaves_it_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let (c, _, err) = migrate_json(dir.path(), &[]);
    assert_eq!(c, 0, "{err}");
    let first: Vec<_> = DATA_TABLES.iter().map(|q| dump(&db, q)).collect();
    assert_eq!(first[0].len(), 18);
    let (c, _, err) = migrate_json(dir.path(), &[]);
    assert_eq!(c, 0, "{err}");
    let second: Vec<_> = DATA_TABLES.iter().map(|q| dump(&db, q)).collect();
    assert_eq!(first, second, "a re-run changes the target");
    assert_eq!(scalar::<i64>(&db, "SELECT count(*) FROM _repaero_runs"), 2);

    // tamper, then dry-run: the tampering stays, nothing is written
    Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE parts SET quantity = 0 WHERE reference = 'MOT-1001'",
            [],
        )
        .unwrap();
    let before: Vec<_> = DATA_TABLES.iter().map(|q| dump(&db, q)).collect();
    let (c, report, err) = migrate_json(dir.path(), &["--dry-run"]);
    assert_eq!(c, 0, "{err}");
    assert_eq!(report["runs"][0]["dry_run"], true);
    assert_eq!(
        table_report(&report, "parts")["written"],
        18,
        "a dry run still reports what it would write"
    );
    let after: Vec<_> = DATA_TABLES.iter().map(|q| dump(&db, q)).collect();
    assert_eq!(before, after, "a dry run wrote to the target");
    assert_eq!(scalar::<i64>(&db, "SELECT count(*) FROM _repaero_runs"), 2);
}

#[test]
fn dry_run_creates_no_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _, err) = migrate_json(dir.path(), &["--dry-run"]);
    assert_eq!(c, 0, "{err}");
    assert!(!dir.path().join("t.db").exists());
    let out = repaero(&[
        "--set",
        &sqlite_target(dir.path()).0,
        "migrate",
        "stock",
        "--dry-run",
    ]);
    assert!(
        stdout(&out).contains(
            "dry run: rolled back, nothing written (would have written 53 rows into 4 tables)"
        ),
        "{}",
        stdout(&out)
    );
}

#[test]
fn profile_lists_every_defect_class_of_the_fixture() {
    let out = repaero(&["profile", "stock", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let p: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let hidden: Vec<&str> = p["sheets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["hidden"] == true)
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(hidden, vec!["Stock 2019"], "hidden stale sheet");
    let parts = &p["tables"][0];
    assert_eq!(parts["table"], "parts");
    assert_eq!(parts["stats"]["header_row"], 4);
    assert_eq!(
        parts["stats"]["rows_above_header"], 2,
        "title and 'updated on' rows"
    );
    assert_eq!(parts["stats"]["blank_rows"], 5);
    assert_eq!(parts["stats"]["footer_rows"], 1, "TOTAL row");
    let ignored = parts["ignored_columns"].as_array().unwrap();
    assert!(
        ignored
            .iter()
            .any(|c| c["hidden"] == true && c["header"] == "Prix unitaire"),
        "hidden column: {ignored:?}"
    );
    let col = |name: &str| {
        parts["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    assert!(
        col("category")["filled_down"].as_u64().unwrap() >= 15,
        "merged category cells"
    );
    assert_eq!(
        col("quantity")["kinds"]["numeric_text"],
        3,
        "quantities typed as text"
    );
    assert_eq!(col("quantity")["failures"]["quantity: not an integer"], 1);
    assert_eq!(col("quantity")["failures"]["quantity: below 0"], 1);
    assert_eq!(col("reference")["failures"]["reference: required"], 1);
    assert_eq!(
        col("supplier")["kinds"]["whitespace_only"],
        1,
        "cell holding only spaces"
    );
    assert!(
        col("unit_price")["kinds"]["numeric_text"].as_u64().unwrap() >= 4,
        "French numbers as text"
    );
    assert!(
        col("last_receipt_date")["kinds"]["text"].as_u64().unwrap() >= 3,
        "dates as text"
    );
    assert_eq!(parts["duplicate_keys"], 1);
    let dup = &parts["duplicate_examples"][0];
    assert_eq!(dup["key"], "HYD-2040");
    assert_eq!(
        dup["raw"],
        serde_json::json!(["HYD-2040", "hyd-2040\u{a0}"])
    );
    assert_eq!(parts["rejected_rows"], 3);
    let receipts = &p["tables"][1];
    assert_eq!(receipts["exact_duplicate_rows"], 2);
    assert_eq!(
        receipts["rejected_rows"], 2,
        "zero quantity and unknown part"
    );
    let rcol = receipts["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "reference")
        .unwrap();
    assert_eq!(rcol["failures"]["reference: unknown parts.reference"], 1);

    let out = repaero(&["profile", "stock"]);
    let text = stdout(&out);
    assert!(text.contains("\"Stock 2019\" (hidden)"), "{text}");
    assert!(text.contains("(hidden)"), "{text}");
    assert!(text.contains("1 duplicated key(s)"), "{text}");
}

#[test]
fn the_committed_fixture_is_what_the_generator_writes() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("stock.xlsx");
    let out = repaero(&["fixtures", "stock", "--out", out_path.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&out_path).unwrap(),
        std::fs::read(root().join("fixtures/stock/stock.xlsx")).unwrap(),
        "fixtures/stock/stock.xlsx is stale: run `repaero fixtures stock`"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("stock.expected.json")).unwrap(),
        std::fs::read_to_string(root().join("fixtures/stock/stock.expected.json")).unwrap()
    );
}

#[test]
fn jobs_lists_source_and_target() {
    let out = repaero(&["jobs"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("stock"), "{text}");
    assert!(text.contains("Stock → parts (replace)"), "{text}");
    assert!(
        text.contains("Entrées → stock_receipts (replace)"),
        "{text}"
    );
    assert!(text.contains("sqlite://"), "{text}");
}
