//! The plan's ten validation metrics after `migrate --all`, in SQLite and
//! PostgreSQL; then a tampered target: the matching metrics fail (exit 3)
//! naming the keys, `diff` shows exactly those changes and `rowdiff` finds
//! exactly the tampered keys. Needs the local PostgreSQL (the billing base).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::pg::TempDb;
use common::*;
use serde_json::Value;

struct Project {
    billing: TempDb,
    dir: tempfile::TempDir,
}

impl Project {
    fn new(prefix: &str) -> Project {
        let billing = TempDb::new(&format!("{prefix}_billing"));
        repaero::fixtures::billing::generate(&billing.url(), 2_000, 9).unwrap();
        Project {
            billing,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, target: &str, args: &[&str]) -> std::process::Output {
        let s = format!("sources.billing.url={}", self.billing.url());
        let t = format!("target.url={target}");
        let q = format!("paths.quarantine={}", self.dir.path().join("q").display());
        let mut all = vec!["--set", &s, "--set", &t, "--set", &q];
        all.extend_from_slice(args);
        repaero(&all)
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn metrics(report: &Value) -> Vec<(String, String, Vec<String>)> {
    report["reports"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["metrics"].as_array().unwrap().iter())
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["verdict"].as_str().unwrap().to_string(),
                m["differences"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

fn read_json(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// migrate --all, then validate --all: every metric passes.
fn migrate_and_validate(p: &Project, target: &str) -> Value {
    let out = p.run(target, &["migrate", "--all"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let before = p.path("before.json");
    let out = p.run(
        target,
        &[
            "validate",
            "--all",
            "--out",
            &before,
            "--html",
            &p.path("v.html"),
            "--md",
            &p.path("v.md"),
        ],
    );
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    let report = read_json(&before);
    let m = metrics(&report);
    let ids: BTreeSet<&str> = m.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        // the plan's ten, and the billing volumes
        [
            "M1", "M2", "M3", "M4", "M5", "M6", "M7", "M8", "M9", "M10", "B1", "B2", "B3"
        ]
        .into_iter()
        .collect()
    );
    for (id, verdict, diffs) in &m {
        assert!(
            verdict == "ok" || verdict == "explained",
            "{id}: {verdict} {diffs:?}\n{}",
            stdout(&out)
        );
    }
    // what the run set apart explains the differences: clients merged,
    // orphan interventions, a slot ending before it starts, rejected parts
    let text = stdout(&out);
    assert!(
        text.contains("source 600 = target 570 + merged 30 + rejected 0"),
        "{text}"
    );
    assert!(
        text.contains("232 source rows − 1 rejected = 231 expected; 231 target rows"),
        "{text}"
    );
    let html = std::fs::read_to_string(p.path("v.html")).unwrap();
    assert!(html.contains("13 indicateur(s), 0 en écart"), "{html}");
    assert!(
        std::fs::read_to_string(p.path("v.md"))
            .unwrap()
            .contains("| M9 |")
    );
    report
}

#[test]
fn the_ten_metrics_pass_in_sqlite() {
    let p = Project::new("val_lite");
    let db = format!("sqlite://{}", p.path("t.db"));
    migrate_and_validate(&p, &db);
}

/// Tamper with the target; returns the keys touched.
struct Tampered {
    client: String,
    steps: (String, String),
    tool: (String, String),
    slot: String,
    invoice: String,
}

fn tamper(db: &Db) -> Tampered {
    let one = |sql: &str| db.one(sql);
    let run = |sql: &str| {
        db.rows(sql);
    };
    let client = one(
        "SELECT min(id) FROM clients c WHERE NOT EXISTS (SELECT 1 FROM interventions i WHERE i.client_id = c.id)",
    );
    run(&format!("DELETE FROM clients WHERE id = {client}"));
    let steps: Vec<String> = db
        .rows("SELECT id FROM workflow_steps WHERE workflow_id = 7 ORDER BY position")
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    let (a, b) = (steps[1].clone(), steps[2].clone());
    let pa = one(&format!(
        "SELECT position FROM workflow_steps WHERE id = {a}"
    ));
    let pb = one(&format!(
        "SELECT position FROM workflow_steps WHERE id = {b}"
    ));
    run(&format!(
        "UPDATE workflow_steps SET position = {pb} WHERE id = {a}"
    ));
    run(&format!(
        "UPDATE workflow_steps SET position = {pa} WHERE id = {b}"
    ));
    let tool = one(
        "SELECT min(id) FROM tools t WHERE NOT EXISTS (SELECT 1 FROM workflow_steps s WHERE s.tool_id = t.id)",
    );
    let code = one(&format!("SELECT code FROM tools WHERE id = {tool}"));
    run(&format!("DELETE FROM tools WHERE id = {tool}"));
    let slot = one("SELECT min(id) FROM availabilities WHERE technician_id = 3");
    run(&format!(
        "UPDATE availabilities SET ends_at = '23:59:00' WHERE id = {slot}"
    ));
    let invoice = one("SELECT min(id) FROM invoices WHERE status = 'payée'");
    run(&format!(
        "UPDATE invoices SET status = 'en attente' WHERE id = {invoice}"
    ));
    Tampered {
        client,
        steps: (a, b),
        tool: (tool, code),
        slot,
        invoice,
    }
}

fn rowdiff(p: &Project, target: &str, job: &str, table: &str) -> (i32, Value) {
    let out = p.run(target, &["rowdiff", job, table, "--json"]);
    (
        code(&out),
        serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out))),
    )
}

fn keys(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|k| {
            k.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| k["key"].as_str().unwrap().to_string())
        })
        .collect()
}

fn check_tampering(p: &Project, db: &Db) {
    let target = db.url();
    migrate_and_validate(p, &target);
    let t = tamper(db);
    let after = p.path("after.json");
    let out = p.run(&target, &["validate", "--all", "--out", &after]);
    assert_eq!(code(&out), 3, "{}\n{}", stdout(&out), stderr(&out));
    let m = metrics(&read_json(&after));
    let failing: BTreeSet<&str> = m
        .iter()
        .filter(|(_, v, _)| v == "mismatch")
        .map(|(id, _, _)| id.as_str())
        .collect();
    assert_eq!(
        failing,
        ["M1", "M3", "M4", "M9", "M10"].into_iter().collect()
    );
    let diffs = |id: &str| m.iter().find(|(i, _, _)| i == id).unwrap().2.join("\n");
    assert!(
        diffs("M1").contains(&format!("id missing in the target: ({})", t.client)),
        "{}",
        diffs("M1")
    );
    assert!(
        diffs("M3").contains("status payée: expected"),
        "{}",
        diffs("M3")
    );
    assert!(diffs("M4").contains("23:59:00"), "{}", diffs("M4"));
    assert!(
        diffs("M9").starts_with("position 2: expected"),
        "{}",
        diffs("M9")
    );
    assert!(
        diffs("M10").contains(&format!("missing in the target: ({})", t.tool.1)),
        "{}",
        diffs("M10")
    );

    // the diff of the two reports: exactly those metrics, all regressions
    let out = p.run(&target, &["diff", &p.path("before.json"), &after, "--json"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let changes: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let changed: BTreeSet<&str> = changes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["metric"].as_str().unwrap())
        .collect();
    assert_eq!(
        changed,
        ["M1", "M3", "M4", "M9", "M10"].into_iter().collect()
    );
    let regressions: BTreeSet<&str> = changes
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["regression"] == true)
        .map(|c| c["metric"].as_str().unwrap())
        .collect();
    assert_eq!(regressions, changed);
    let out = p.run(&target, &["diff", &after, &after]);
    assert_eq!((code(&out), stdout(&out)), (0, "no change\n".to_string()));

    // rowdiff finds exactly the tampered keys
    let (c, r) = rowdiff(p, &target, "clients", "clients");
    assert_eq!(c, 3);
    assert_eq!(keys(&r["missing"]), vec![t.client.clone()]);
    assert!(
        keys(&r["extra"]).is_empty() && keys(&r["different"]).is_empty(),
        "{r}"
    );
    let (_, r) = rowdiff(p, &target, "production", "workflow_steps");
    let mut want = vec![t.steps.0.clone(), t.steps.1.clone()];
    want.sort();
    let mut got = keys(&r["different"]);
    got.sort();
    assert_eq!(got, want, "{r}");
    assert_eq!(r["different"][0]["columns"][0][0], "position");
    let (_, r) = rowdiff(p, &target, "production", "tools");
    assert_eq!(keys(&r["missing"]), vec![t.tool.0.clone()], "{r}");
    let (_, r) = rowdiff(p, &target, "clients", "availabilities");
    assert_eq!(keys(&r["different"]), vec![t.slot.clone()], "{r}");
    assert_eq!(r["different"][0]["columns"][0][0], "ends_at");
    assert_eq!(r["different"][0]["columns"][0][2], "23:59:00");
    let (_, r) = rowdiff(p, &target, "billing", "invoices");
    assert_eq!(keys(&r["different"]), vec![t.invoice.clone()], "{r}");
    assert!(
        keys(&r["missing"]).is_empty() && keys(&r["extra"]).is_empty(),
        "{r}"
    );
    // an untouched table is equal, though the run rejected and merged rows
    let (c, r) = rowdiff(p, &target, "stock", "parts");
    assert_eq!(c, 0, "{r}");
    assert_eq!(
        (r["rejected"].as_u64(), r["merged"].as_u64()),
        (Some(3), Some(1))
    );
}

#[test]
fn tampering_is_caught_in_postgres() {
    let p = Project::new("val_pg");
    let db = TempDb::new("val_pg_target");
    check_tampering(&p, &Db::Pg(db.url()));
}

#[test]
fn tampering_is_caught_in_sqlite() {
    let p = Project::new("val_lite2");
    check_tampering(&p, &Db::Sqlite(Path::new(&p.path("t.db")).to_path_buf()));
}

#[test]
fn a_validation_file_error_names_the_metric() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("validation")).unwrap();
    std::fs::create_dir_all(p.join("jobs")).unwrap();
    std::fs::create_dir_all(p.join("mappings")).unwrap();
    std::fs::copy(
        root().join("mappings/tools.toml"),
        p.join("mappings/tools.toml"),
    )
    .unwrap();
    std::fs::write(
        p.join("repaero.toml"),
        format!(
            "[sources.production]\nkind = \"access\"\npath = \"{}\"\n",
            root().join("fixtures/access/production.mdb").display()
        ),
    )
    .unwrap();
    std::fs::write(
        p.join("jobs/prod.toml"),
        "source = \"production\"\n[[tables]]\nmapping = \"tools\"\n",
    )
    .unwrap();
    std::fs::write(
        p.join("validation/prod.toml"),
        "[[metrics]]\nid = \"M10\"\ntitle = \"t\"\nkind = \"set\"\nexplain = \"outils\"\ncolumns = [{ source = \"Code\", target = \"code\" }]\n",
    )
    .unwrap();
    let out = repaero_in(p, &["validate", "prod"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("metric M10: names table `outils`, which job prod does not write"),
        "{}",
        stderr(&out)
    );
    // a job that never ran has nothing to validate yet
    std::fs::write(
        p.join("validation/prod.toml"),
        "[[metrics]]\nid = \"M10\"\ntitle = \"t\"\nkind = \"set\"\nexplain = \"tools\"\ncolumns = [{ source = \"Code\", target = \"code\" }]\n",
    )
    .unwrap();
    let out = repaero_in(
        p,
        &[
            "--set",
            &format!("target.url=sqlite://{}", p.join("t.db").display()),
            "validate",
            "prod",
        ],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("has no committed run"),
        "{}",
        stderr(&out)
    );
}

/// rowdiff of `billing invoice_lines`, pushed down and `--stream`.
fn rowdiff_both(p: &Project, target: &str) -> (Value, Value) {
    let (c1, pushed) = rowdiff(p, target, "billing", "invoice_lines");
    let out = p.run(
        target,
        &["rowdiff", "billing", "invoice_lines", "--stream", "--json"],
    );
    let streamed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(c1, code(&out), "{pushed}\n{streamed}");
    assert_eq!(pushed["source_hashed_in_sql"], true, "{pushed}");
    assert_eq!(streamed["source_hashed_in_sql"], false, "{streamed}");
    assert_eq!(streamed["streamed"], "--stream");
    // the same answer and the same accounting, whichever side hashed
    for field in [
        "missing",
        "extra",
        "different",
        "rejected",
        "merged",
        "source_rows",
        "target_rows",
    ] {
        assert_eq!(
            pushed[field], streamed[field],
            "{field}\n{pushed}\n{streamed}"
        );
    }
    (pushed, streamed)
}

/// rowdiff hashes a PostgreSQL source in its own SQL where the mapping
/// allows, and finds what mapping every row finds: values the cleaning
/// changes, rounds or rejects in the source; changed, missing and extra
/// rows and rows whose reference is gone in the target.
/// `keep_fk`: the source keeps its foreign key from lines to invoices
/// (rowdiff then lists the invoices' keys; without it, the lines' distinct
/// invoice numbers), and the line that points nowhere points to an invoice
/// the migration rejected instead of one that does not exist.
fn check_pushed_rowdiff(p: &Project, db: &Db, keep_fk: bool) {
    let target = db.url();
    let out = p.run(&target, &["migrate", "billing"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (f, rows) = {
        let f = db.one("SELECT min(id) FROM invoices");
        let n = db.one("SELECT count(*) FROM invoice_lines");
        (f, n.parse::<u64>().unwrap())
    };
    let (fk, nowhere) = if keep_fk {
        let kept: BTreeSet<String> = db
            .rows("SELECT id FROM invoices")
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect();
        let rejected = p
            .billing
            .query("SELECT id FROM factures ORDER BY id")
            .lines()
            .find(|id| !kept.contains(*id))
            .expect("an invoice the migration rejected")
            .to_string();
        ("", rejected)
    } else {
        (
            "ALTER TABLE lignes_facture DROP CONSTRAINT lignes_facture_facture_id_fkey;",
            "999999999".to_string(),
        )
    };
    // source values the SQL cannot render as the mapping does
    p.billing.query(&format!(
        "ALTER TABLE lignes_facture ALTER COLUMN designation DROP NOT NULL;
         {fk}
         ALTER TABLE lignes_facture ALTER COLUMN quantite TYPE numeric(12,4);
         INSERT INTO lignes_facture VALUES
          (900001, {f}, 91, E'Joint\\u00a0torique', 1, 2.5, 20, now()),
          (900002, {f}, 92, '  Révision   moteur ', 1, 2.5, 20, now()),
          (900003, {f}, 93, E'Cafe\\u0301', 1, 2.5, 20, now()),
          (900004, {f}, 94, NULL, 1, 2.5, 20, now()),
          (900005, {f}, 95, 'Durite', 2.125, 2.5, 20, now()),
          (900006, {f}, 96, 'Filtre', 1, 2.5, 20, '2030-01-01 10:00:00.123456+00'),
          (900007, {nowhere}, 97, 'Orpheline', 1, 2.5, 20, now()),
          (900008, {f}, 98, '', 1, 2.5, 20, now()),
          (900009, {f}, 99, 'Bougie', 3.1000, 2.5, 20, now())"
    ));
    let out = p.run(&target, &["migrate", "billing"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        db.one("SELECT count(*) FROM invoice_lines WHERE id > 900000"),
        "6"
    );
    let (pushed, _) = rowdiff_both(p, &target);
    assert!(keys(&pushed["missing"]).is_empty(), "{pushed}");
    assert!(keys(&pushed["different"]).is_empty(), "{pushed}");
    assert!(keys(&pushed["extra"]).is_empty(), "{pushed}");
    assert_eq!(pushed["target_rows"].as_u64(), Some(rows + 6));
    // the values the mapping cleans, rounds or floors are read, not
    // reported: SQLite's canonical texts floor the µs alike (equal sums,
    // read only to be sure); PostgreSQL's typed hashes see them differ
    let read = |k: &str| pushed[k].as_u64().unwrap();
    match db {
        Db::Sqlite(_) => assert!(read("segments_unsure") >= 1, "{pushed}"),
        Db::Pg(_) => assert!(read("segments_differing") >= 4, "{pushed}"),
    }
    let rejected = pushed["rejected"].as_u64().unwrap();
    assert!(rejected >= 3, "{pushed}");

    // the target changed behind the migration's back
    // (the invoice with the most lines: some sit in segments nothing else
    // changes, found only because their reference is gone)
    let lost = db.one(&format!(
        "SELECT invoice_id FROM invoice_lines WHERE invoice_id <> {f}
         GROUP BY invoice_id ORDER BY count(*) DESC, invoice_id DESC LIMIT 1"
    ));
    let line = |n: u32| {
        db.one(&format!(
            "SELECT id FROM invoice_lines WHERE invoice_id NOT IN ({f}, {lost}) ORDER BY id LIMIT 1 OFFSET {n}"
        ))
    };
    let (changed, padded, deleted, copied) = (line(10), line(20), line(30), line(40));
    let mut orphans: Vec<String> = db
        .rows(&format!(
            "SELECT id FROM invoice_lines WHERE invoice_id = {lost}"
        ))
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    assert!(!orphans.is_empty());
    db.execute(&format!(
        "UPDATE invoice_lines SET quantity = quantity + 1 WHERE id = {changed};
         UPDATE invoice_lines SET designation = ' ' || designation WHERE id = {padded};
         DELETE FROM invoice_lines WHERE id = {deleted};
         INSERT INTO invoice_lines (id, invoice_id, line_no, designation, quantity,
           unit_price, vat_rate, updated_at) SELECT 990000, invoice_id, line_no, designation, quantity,
           unit_price, vat_rate, updated_at FROM invoice_lines WHERE id = {copied}"
    ));
    let drop_invoice = format!("DELETE FROM invoices WHERE id = {lost}");
    match db {
        // the target's foreign keys hold; a session that skips them does not
        Db::Pg(_) => db.execute(&format!(
            "SET session_replication_role = replica; {drop_invoice}"
        )),
        Db::Sqlite(_) => db.execute(&format!("PRAGMA foreign_keys = OFF; {drop_invoice}")),
    }
    let (pushed, _) = rowdiff_both(p, &target);
    assert_eq!(keys(&pushed["missing"]), vec![deleted.clone()], "{pushed}");
    let mut different = keys(&pushed["different"]);
    different.sort_by_key(|k| k.parse::<u64>().unwrap());
    let mut want = vec![changed.clone(), padded.clone()];
    want.sort_by_key(|k| k.parse::<u64>().unwrap());
    assert_eq!(different, want, "{pushed}");
    let columns: BTreeSet<String> = pushed["different"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["columns"][0][0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        columns,
        ["designation", "quantity"].map(String::from).into()
    );
    // the lines of the lost invoice are rejected now, so they are extra
    orphans.push("990000".into());
    orphans.sort_by_key(|k| k.parse::<u64>().unwrap());
    let mut extra = keys(&pushed["extra"]);
    extra.sort_by_key(|k| k.parse::<u64>().unwrap());
    assert_eq!(extra, orphans, "{pushed}");
    assert_eq!(
        pushed["rejected"].as_u64(),
        Some(rejected + orphans.len() as u64 - 1)
    );
}

#[test]
fn rowdiff_pushed_down_finds_what_the_stream_finds_in_sqlite() {
    let p = Project::new("rd_push_lite");
    check_pushed_rowdiff(
        &p,
        &Db::Sqlite(Path::new(&p.path("t.db")).to_path_buf()),
        false,
    );
}

#[test]
fn rowdiff_pushed_down_finds_what_the_stream_finds_in_postgres() {
    let p = Project::new("rd_push_pg");
    let db = TempDb::new("rd_push_pg_target");
    check_pushed_rowdiff(&p, &Db::Pg(db.url()), true);
}

/// rowdiff sizes its segments by PostgreSQL's estimate (a count when the
/// table was never analysed); a reference's keys are read without DISTINCT
/// when a unique index covers the column, integers are made distinct
/// before their cast to text, and a numeric's values keep their texts.
#[test]
fn postgres_row_estimates_and_distinct_integer_keys() {
    let db = TempDb::new("estimate");
    db.query(
        "CREATE TABLE t (id bigint PRIMARY KEY, n numeric(6,2), k integer, code text UNIQUE);
         INSERT INTO t SELECT g, g % 7, g % 3, 'P-' || g FROM generate_series(1, 5000) g;
         INSERT INTO t VALUES (5001, NULL, NULL, NULL)",
    );
    let mut conn = repaero::db::open(&db.url(), false).expect("connect");
    // not analysed yet (or analysed whole by autovacuum): the exact count
    assert_eq!(conn.estimated_rows("t").expect("estimate"), Some(5001));
    assert_eq!(conn.estimated_rows("missing").expect("estimate"), None);
    db.query("ANALYZE t; INSERT INTO t SELECT g, 1, 1 FROM generate_series(5002, 10001) g");
    // analysed at 5,001 rows, then doubled: the statistics scaled by the
    // table's pages now
    let estimate = conn
        .estimated_rows("t")
        .expect("estimate")
        .expect("a table");
    assert!((9_000..=11_000).contains(&estimate), "{estimate}");

    let mut facts = |c: &str| conn.column_facts("t", c).expect("catalog");
    let (id, n, k, code) = (facts("id"), facts("n"), facts("k"), facts("code"));
    assert!(id.integer && id.unique, "{id:?}");
    assert!(!n.integer && !n.unique, "{n:?}");
    assert!(k.integer && !k.unique, "{k:?}");
    assert!(!code.integer && code.unique, "{code:?}");
    let ids = conn.key_values("t", "id").expect("keys");
    assert_eq!(ids.len(), 10_001);
    assert!(ids.contains("1") && ids.contains("10001") && !ids.contains("0"));
    let amounts = conn.key_texts("t", "n").expect("keys");
    let want: std::collections::HashSet<String> = (0..7).map(|v| format!("{v}.00")).collect();
    assert_eq!(amounts, want);
    let ks = conn.key_texts("t", "k").expect("keys");
    assert_eq!(ks, ["0", "1", "2"].map(String::from).into());
    let codes = conn.key_values("t", "code").expect("keys");
    assert_eq!(codes.len(), 5000);
    assert!(codes.contains("P-1") && !codes.contains("P-5001"));
}
