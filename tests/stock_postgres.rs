//! The stock migration into a real PostgreSQL (127.0.0.1:5432, user
//! postgres): COPY path, identical counts to SQLite, TLS, refused rows,
//! connection errors. Each test creates and drops its own database.

mod common;

use common::pg::TempDb;
use common::*;
use serde_json::Value;

fn migrate(url: &str, q: &std::path::Path, extra: &[&str]) -> (i32, Value, String) {
    let t = format!("target.url={url}");
    let qd = format!("paths.quarantine={}", q.display());
    let mut args = vec!["--set", &t, "--set", &qd, "migrate", "stock", "--json"];
    args.extend_from_slice(extra);
    let out = repaero(&args);
    (
        code(&out),
        serde_json::from_str(&stdout(&out)).unwrap_or(Value::Null),
        stderr(&out),
    )
}

fn tallies(report: &Value) -> Vec<Value> {
    report["runs"][0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            serde_json::json!({
                "table": t["table"], "read": t["read"], "written": t["written"],
                "merged": t["merged"], "rejected": t["rejected"], "reasons": t["reasons"],
                "skipped": t["skipped"],
            })
        })
        .collect()
}

#[test]
fn postgres_gets_the_same_rows_as_sqlite() {
    let db = TempDb::new("stock");
    let dir = tempfile::tempdir().unwrap();
    let (c, pg_report, err) = migrate(&db.url(), dir.path(), &[]);
    assert_eq!(c, 0, "{err}");
    let (c, lite_report, err) = migrate(
        &format!("sqlite://{}", dir.path().join("t.db").display()),
        dir.path(),
        &[],
    );
    assert_eq!(c, 0, "{err}");
    assert_eq!(tallies(&pg_report), tallies(&lite_report));

    assert_eq!(db.query("SELECT count(*) FROM parts"), "18");
    assert_eq!(db.query("SELECT sum(quantity) FROM parts"), "1883");
    assert_eq!(
        db.query("SELECT quantity || '|' || unit_price || '|' || last_receipt_date || '|' || location FROM parts WHERE reference = 'HYD-2040'"),
        "5|212.40|2026-10-20|B2-04"
    );
    assert_eq!(
        db.query("SELECT unit_price FROM parts WHERE reference = 'MOT-1003'"),
        "3.75"
    );
    assert_eq!(
        db.query("SELECT count(*) FROM parts WHERE unit_price IS NULL"),
        "1"
    );
    assert_eq!(
        db.query("SELECT data_type FROM information_schema.columns WHERE table_name = 'parts' AND column_name = 'unit_price'"),
        "numeric"
    );
    assert_eq!(
        db.query("SELECT string_agg(a.attname, ',') FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'parts'::regclass AND i.indisprimary"),
        "reference"
    );
    assert_eq!(primary_key(&db, "parts"), "parts_pkey");
    assert_eq!(
        db.query("SELECT count(*), sum(quantity) FROM stock_receipts"),
        "10|1711"
    );
    // 3 parts, 2 receipts, 2 reservations
    assert_eq!(db.query("SELECT count(*) FROM _rejects"), "9");
    assert_eq!(
        db.query("SELECT string_agg(reference || ':' || quantity, ',' ORDER BY reference) FROM part_reservations WHERE intervention_id = 4711"),
        "CON-4002:4,HYD-2040:2,MOT-1001:1"
    );
    assert_eq!(
        db.query(
            "SELECT record->>'quantity' FROM _rejects WHERE reason = 'quantity: not an integer'"
        ),
        "n/a"
    );

    // a second run gives the same tables (the swap renames the key back)
    let before = db.query("SELECT md5(string_agg(p::text, ';' ORDER BY reference)) FROM parts p");
    let (c, _, err) = migrate(&db.url(), dir.path(), &[]);
    assert_eq!(c, 0, "{err}");
    assert_eq!(
        db.query("SELECT md5(string_agg(p::text, ';' ORDER BY reference)) FROM parts p"),
        before
    );
    assert_eq!(db.query("SELECT count(*) FROM _rejects"), "9");
    assert_eq!(db.query("SELECT count(*) FROM _repaero_runs"), "2");

    // a dry run writes nothing
    db.query("UPDATE parts SET quantity = 0 WHERE reference = 'MOT-1001'");
    let (c, report, err) = migrate(&db.url(), dir.path(), &["--dry-run"]);
    assert_eq!(c, 0, "{err}");
    assert_eq!(report["runs"][0]["status"], "rolled back (dry run)");
    assert_eq!(
        db.query("SELECT quantity FROM parts WHERE reference = 'MOT-1001'"),
        "0"
    );
    assert_eq!(db.query("SELECT count(*) FROM _repaero_runs"), "2");

    // the second run replaced `parts` and the tables referencing it: their
    // keys to it are back, checked
    let fks = "SELECT string_agg(conrelid::regclass || ':' || convalidated, ',' ORDER BY conrelid::regclass::text) FROM pg_constraint WHERE contype = 'f' AND confrelid = 'parts'::regclass";
    assert_eq!(
        db.query(fks),
        "part_barcodes:true,part_reservations:true,stock_receipts:true"
    );
}

#[test]
fn tls_modes() {
    let db = TempDb::new("tls");
    let dir = tempfile::tempdir().unwrap();
    let (c, _, err) = migrate(&format!("{}?sslmode=require", db.url()), dir.path(), &[]);
    assert_eq!(c, 0, "sslmode=require: {err}");
    assert_eq!(db.query("SELECT count(*) FROM parts"), "18");
    let (c, _, err) = migrate(&format!("{}?sslmode=disable", db.url()), dir.path(), &[]);
    assert_eq!(c, 0, "sslmode=disable: {err}");
    // the local server's certificate is self-signed: verification fails, clearly
    let (c, _, err) = migrate(
        &format!("{}?sslmode=verify-full", db.url()),
        dir.path(),
        &[],
    );
    assert_eq!(c, 1, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn connection_errors_name_the_target_and_hide_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _, err) = migrate(
        "postgres://postgres:s3cr3t-pw@127.0.0.1:1/nowhere",
        dir.path(),
        &[],
    );
    assert_eq!(c, 1, "{err}");
    assert!(
        err.contains("postgres://postgres:***@127.0.0.1:1/nowhere"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t-pw"), "{err}");
    let (c, _, err) = migrate(
        "postgres://postgres@127.0.0.1:5432/repaero_no_such_db",
        dir.path(),
        &[],
    );
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("repaero_no_such_db"), "{err}");
    assert!(err.contains("does not exist"), "{err}");
}

/// A project whose parts mapping has no [dedupe]: the duplicate reference
/// reaches the target, which refuses it; its neighbours are written.
fn project_without_dedupe() -> tempfile::TempDir {
    let mapping = std::fs::read_to_string(root().join("mappings/stock_parts.toml")).unwrap();
    let cut = mapping.find("[dedupe]").unwrap();
    project(
        &excel_stock_config(&root().join("fixtures/stock/stock.xlsx")),
        &[
            (
                "jobs/parts.toml",
                "source = \"stock\"\n[[tables]]\nmapping = \"parts\"\n",
            ),
            ("mappings/parts.toml", &mapping[..cut]),
        ],
    )
}

/// The name of `table`'s primary-key constraint.
fn primary_key(db: &TempDb, table: &str) -> String {
    db.query(&format!(
        "SELECT conname FROM pg_constraint WHERE conrelid = '{table}'::regclass AND contype = 'p'"
    ))
}

/// A table's tally figures, in the order named.
fn figures(t: &Value, names: &[&str]) -> Vec<Value> {
    names.iter().map(|n| t[*n].clone()).collect()
}

/// Files under `dir` whose path ends with `suffix`.
fn files_ending(dir: &std::path::Path, suffix: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(files_ending(&p, suffix));
        } else if p.to_string_lossy().ends_with(suffix) {
            found.push(p.display().to_string());
        }
    }
    found
}

/// The parts table's report and what the run said on stderr.
fn refused_run(url: &str, dir: &std::path::Path) -> (Value, String) {
    let out = repaero_in(
        dir,
        &[
            "--set",
            &format!("target.url={url}"),
            "migrate",
            "parts",
            "--json",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    (report["runs"][0]["tables"][0].clone(), stderr(&out))
}

#[test]
fn a_row_the_target_refuses_is_quarantined_and_its_neighbours_written() {
    let proj = project_without_dedupe();
    let db = TempDb::new("refused");
    let (t, err) = refused_run(&db.url(), proj.path());
    // the key, added after the load, found the repeated reference: the
    // load was undone and run again with the key checked row by row
    assert!(
        err.contains("the rows of parts repeat a key")
            && err.contains("loading parts again with its key checked row by row"),
        "{err}"
    );
    assert_eq!(t["read"], 22);
    assert_eq!(t["written"], 18);
    assert_eq!(t["merged"], 0);
    assert_eq!(t["rejected"], 4);
    let reasons = t["reasons"].as_object().unwrap();
    let refused: Vec<&String> = reasons
        .keys()
        .filter(|k| k.starts_with("target refused"))
        .collect();
    assert_eq!(refused.len(), 1, "{reasons:?}");
    assert!(
        refused[0].contains("duplicate key value violates unique constraint"),
        "{refused:?}"
    );
    assert_eq!(db.query("SELECT count(*) FROM parts"), "18");
    assert_eq!(primary_key(&db, "parts"), "parts_pkey");
    // one rejects file, of the second load only
    let files = files_ending(proj.path(), "parts.parts.rejects.csv");
    assert_eq!(files.len(), 1, "{files:?}");
    let csv = std::fs::read_to_string(&files[0]).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4, "{csv}");
    assert_eq!(
        db.query("SELECT quantity FROM parts WHERE reference = 'HYD-2040'"),
        "3"
    );
    assert_eq!(
        db.query("SELECT source_row || ' ' || (record->>'reference') FROM _rejects WHERE reason LIKE 'target refused%'"),
        "29 HYD-2040"
    );

    let (lite, _) = refused_run(
        &format!("sqlite://{}", proj.path().join("t.db").display()),
        proj.path(),
    );
    assert_eq!(lite["written"], 18);
    assert_eq!(lite["rejected"], 4);
    let lite_refused: Vec<String> = lite["reasons"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("target refused"))
        .cloned()
        .collect();
    assert_eq!(
        lite_refused,
        vec!["target refused: UNIQUE constraint failed: parts__repaero_new.reference"]
    );
}

/// A table the run creates in `upsert` mode (keyed, no `[dedupe]`): its
/// key comes after the load too; the repeated reference sends it round
/// again, and a second run, into the table now there, updates every row.
#[test]
fn a_created_upsert_table_repeating_its_key_is_loaded_again() {
    let proj = project_without_dedupe();
    std::fs::write(
        proj.path().join("jobs/parts.toml"),
        "source = \"stock\"\n[[tables]]\nmapping = \"parts\"\nmode = \"upsert\"\n",
    )
    .unwrap();
    let db = TempDb::new("refused_upsert");
    let (t, err) = refused_run(&db.url(), proj.path());
    assert!(err.contains("loading parts again"), "{err}");
    assert_eq!(
        figures(&t, &["read", "written", "rejected", "inserted"]),
        [22, 18, 4, 18].map(Value::from)
    );
    assert_eq!(db.query("SELECT count(*) FROM parts"), "18");
    assert_eq!(primary_key(&db, "parts"), "parts_pkey");
    // the table exists now: no key to add, nothing loaded twice
    let (t, err) = refused_run(&db.url(), proj.path());
    assert!(!err.contains("loading parts again"), "{err}");
    assert_eq!(
        figures(&t, &["written", "rejected", "inserted", "updated"]),
        [18, 4, 0, 18].map(Value::from)
    );
}
