//! What a validation file, a report file and a report path can no longer do
//! (issue 15): validation SQL cannot write, a misspelled column is an error
//! instead of a string, `diff` cannot be fooled, and a failed report write
//! leaves nothing half-written. Needs the local PostgreSQL.

mod common;

use std::path::Path;

use common::pg::TempDb;
use common::*;
use serde_json::Value;

/// A PostgreSQL source holding `things` (3 rows), the job `things` copying
/// it into the target's `things`, and an empty `validation/`.
struct Tiny {
    src: TempDb,
    dir: tempfile::TempDir,
}

const MAPPING: &str = r#"[source]
table = "things"
[target]
table = "things"
key = ["id"]
[[columns]]
name = "id"
type = "integer"
[[columns]]
name = "name"
[[columns]]
name = "category"
"#;

impl Tiny {
    fn new(prefix: &str) -> Tiny {
        let src = TempDb::new(prefix);
        src.query(
            "CREATE TABLE things (id integer PRIMARY KEY, name text, category text);
             INSERT INTO things VALUES (1, 'a', 'x'), (2, 'b', 'y'), (3, 'c', 'x')",
        );
        let dir = project(
            &format!(
                "[sources.src]\nkind = \"postgres\"\nurl = \"{}\"\n",
                src.url()
            ),
            &[
                ("mappings/things.toml", MAPPING),
                (
                    "jobs/things.toml",
                    "source = \"src\"\n[[tables]]\nmapping = \"things\"\n",
                ),
            ],
        );
        std::fs::create_dir_all(dir.path().join("validation")).unwrap();
        Tiny { src, dir }
    }

    fn sqlite(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("t.db").display())
    }

    fn run(&self, target: &str, args: &[&str]) -> std::process::Output {
        let t = format!("target.url={target}");
        let mut all = vec!["--set", &t];
        all.extend_from_slice(args);
        repaero_in(self.dir.path(), &all)
    }

    fn migrate(&self, target: &str) {
        let out = self.run(target, &["migrate", "things"]);
        assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    }

    fn validation(&self, text: &str) {
        std::fs::write(self.dir.path().join("validation/things.toml"), text).unwrap();
    }

    /// `validate things --json`: exit code, the report, stderr.
    fn validate(&self, target: &str) -> (i32, Value, String) {
        let out = self.run(target, &["validate", "things", "--json"]);
        let report = serde_json::from_str(&stdout(&out)).unwrap_or(Value::Null);
        (code(&out), report, stderr(&out))
    }
}

fn metric<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["reports"][0]["metrics"]
        .as_array()
        .unwrap_or_else(|| panic!("no metrics in {report}"))
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("no metric {id} in {report}"))
}

/// The metric failed because the validation may not write.
fn refused_as_read_only(report: &Value, id: &str) {
    let m = metric(report, id);
    assert_eq!(m["verdict"], "error", "{m}");
    let why = m["differences"][0].as_str().unwrap_or_default();
    assert!(why.contains("read-only"), "{why}");
}

const DELETE_ON_TARGET: &str = r#"[[metrics]]
id = "D1"
title = "a metric that deletes"
kind = "count"
explain = "things"
target = { sql = "DELETE FROM things RETURNING 1" }
"#;

const DELETE_ON_SOURCE: &str = r#"[[metrics]]
id = "D2"
title = "a metric that deletes in the source"
kind = "count"
explain = "things"
source = { sql = "DELETE FROM things RETURNING 1" }
"#;

#[test]
fn validation_sql_cannot_write_into_a_sqlite_target() {
    let t = Tiny::new("ro_lite");
    let target = t.sqlite();
    t.migrate(&target);
    t.validation(DELETE_ON_TARGET);
    let (c, report, err) = t.validate(&target);
    assert_eq!(c, 3, "{report}\n{err}");
    refused_as_read_only(&report, "D1");
    let db = Db::Sqlite(t.dir.path().join("t.db"));
    assert_eq!(db.one("SELECT count(*) FROM things"), "3");
}

#[test]
fn validation_sql_cannot_write_into_a_postgres_target_or_source() {
    let t = Tiny::new("ro_pg_src");
    let target_db = TempDb::new("ro_pg_tgt");
    let target = target_db.url();
    t.migrate(&target);
    t.validation(DELETE_ON_TARGET);
    let (c, report, err) = t.validate(&target);
    assert_eq!(c, 3, "{report}\n{err}");
    refused_as_read_only(&report, "D1");
    assert_eq!(target_db.query("SELECT count(*) FROM things"), "3");

    // a statement that ends the transaction first gains nothing
    t.validation(&DELETE_ON_TARGET.replace("DELETE", "COMMIT; DELETE"));
    let (c, report, err) = t.validate(&target);
    assert_eq!(c, 3, "{report}\n{err}");
    refused_as_read_only(&report, "D1");
    assert_eq!(target_db.query("SELECT count(*) FROM things"), "3");

    // the source is read-only too
    t.validation(DELETE_ON_SOURCE);
    let (c, report, err) = t.validate(&target);
    assert_eq!(c, 3, "{report}\n{err}");
    refused_as_read_only(&report, "D2");
    assert_eq!(t.src.query("SELECT count(*) FROM things"), "3");
}

#[test]
fn validation_sql_on_a_sqlite_target_and_a_postgres_source_cannot_write_the_source() {
    let t = Tiny::new("ro_lite_src");
    let target = t.sqlite();
    t.migrate(&target);
    t.validation(DELETE_ON_SOURCE);
    let (c, report, err) = t.validate(&target);
    assert_eq!(c, 3, "{report}\n{err}");
    refused_as_read_only(&report, "D2");
    assert_eq!(t.src.query("SELECT count(*) FROM things"), "3");
}

#[test]
fn rowdiff_cannot_write_into_a_postgres_source() {
    let t = Tiny::new("ro_rowdiff");
    let target = t.sqlite();
    t.migrate(&target);
    // a mapping query calling a function that deletes
    t.src.query(
        "CREATE FUNCTION zap() RETURNS bigint LANGUAGE sql AS 'DELETE FROM things RETURNING 1'",
    );
    std::fs::write(
        t.dir.path().join("mappings/things.toml"),
        MAPPING.replace(
            "table = \"things\"\n[target]",
            "table = \"things\"\nquery = \"SELECT t.*, zap() AS z FROM things t\"\n[target]",
        ),
    )
    .unwrap();
    let out = t.run(&target, &["rowdiff", "things", "things"]);
    assert_ne!(code(&out), 0, "{}", stdout(&out));
    assert!(
        stderr(&out).contains("read-only transaction"),
        "{}",
        stderr(&out)
    );
    assert_eq!(t.src.query("SELECT count(*) FROM things"), "3");
}

// ---------------------------------------------------------------------
// A misspelled column is an error, never a string (SQLite) or a metric
// that quietly fails

const VALUE_TYPO: &str = r#"[[metrics]]
id = "T1"
title = "a sum of a column that does not exist"
kind = "sum"
explain = "things"
value = { source = "id", target = "no_such_col", type = "integer", scale = 0 }
"#;

const WHERE_TYPO: &str = r#"[[metrics]]
id = "T2"
title = "a filter on a column that does not exist"
kind = "count"
explain = "things"
target = { where = { categroy = "categroy" } }
"#;

const SOURCE_TYPO: &str = r#"[[metrics]]
id = "T3"
title = "a source column that does not exist"
kind = "count_distinct"
explain = "things"
value = { source = "no_such_src", target = "category" }
"#;

fn no_such_column(t: &Tiny, target: &str, id: &str, col: &str) {
    let (c, report, err) = t.validate(target);
    assert_eq!(c, 2, "{report}\n{err}");
    assert!(
        err.contains("validation/things.toml")
            && err.contains(&format!("metric {id}"))
            && err.contains(&format!("no such column `{col}`")),
        "{err}"
    );
}

#[test]
fn a_misspelled_column_is_an_error_in_sqlite() {
    let t = Tiny::new("typo_lite");
    let target = t.sqlite();
    t.migrate(&target);
    // the same file without the typos passes
    t.validation(&WHERE_TYPO.replace(
        "target = { where = { categroy = \"categroy\" } }",
        "source = { where = { category = \"x\" } }\ntarget = { where = { category = \"x\" } }",
    ));
    let (c, report, err) = t.validate(&target);
    assert_eq!(c, 0, "{report}\n{err}");
    assert_eq!(metric(&report, "T2")["target"], 2.0);
    t.validation(VALUE_TYPO);
    no_such_column(&t, &target, "T1", "no_such_col");
    // SQLite read "categroy" as the string 'categroy': always true, so the
    // count matched and the typo passed
    t.validation(WHERE_TYPO);
    no_such_column(&t, &target, "T2", "categroy");
    t.validation(SOURCE_TYPO);
    no_such_column(&t, &target, "T3", "no_such_src");
    // a typo in raw SQL is refused by SQLite, not read as a string
    t.validation(
        r#"[[metrics]]
id = "T4"
title = "raw SQL with a typo"
kind = "count"
explain = "things"
target = { sql = "SELECT count(*) FROM things WHERE \"categroy\" = 'categroy'" }
"#,
    );
    let (c, report, _) = t.validate(&target);
    assert_eq!(c, 3);
    let m = metric(&report, "T4");
    assert_eq!(m["verdict"], "error", "{m}");
    assert!(
        m["differences"][0]
            .as_str()
            .unwrap()
            .contains("no such column: \"categroy\""),
        "{m}"
    );
}

#[test]
fn a_misspelled_column_is_an_error_in_postgres() {
    let t = Tiny::new("typo_pg_src");
    let target_db = TempDb::new("typo_pg_tgt");
    let target = target_db.url();
    t.migrate(&target);
    t.validation(VALUE_TYPO);
    no_such_column(&t, &target, "T1", "no_such_col");
    t.validation(WHERE_TYPO);
    no_such_column(&t, &target, "T2", "categroy");
    t.validation(SOURCE_TYPO);
    no_such_column(&t, &target, "T3", "no_such_src");
}

#[test]
fn a_misspelled_column_of_a_workbook_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (t, q) = sqlite_target(dir.path());
    let v = format!("paths.validation={}", dir.path().display());
    let out = repaero(&["--set", &t, "--set", &q, "migrate", "stock"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    std::fs::write(
        dir.path().join("stock.toml"),
        r#"[[metrics]]
id = "S1"
title = "a header that is not in the sheet"
kind = "sum"
explain = "parts"
value = { source = "Quantitée", target = "quantity", type = "integer", scale = 0 }
"#,
    )
    .unwrap();
    let out = repaero(&["--set", &t, "--set", &q, "--set", &v, "validate", "stock"]);
    assert_eq!(code(&out), 2, "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("metric S1") && stderr(&out).contains("no such column `Quantitée`"),
        "{}",
        stderr(&out)
    );
}
// ---------------------------------------------------------------------
// diff: reports of different jobs, metrics that disappeared

fn report_file(job: &str, ids: &[&str]) -> String {
    let metrics: Vec<Value> = ids
        .iter()
        .map(|id| {
            serde_json::json!({
                "id": id, "title": format!("metric {id}"), "kind": "count",
                "source": 3.0, "target": 3.0, "rejected": 0.0, "merged": 0.0,
                "reconciliation": "source 3 = target 3 + merged 0 + rejected 0",
                "verdict": "ok", "differences": [],
                "source_digest": "a", "target_digest": "a"
            })
        })
        .collect();
    serde_json::json!({ "reports": [{
        "job": job, "source": "s", "target": "t", "run_id": "r",
        "generated_at": "2026-11-29T00:00:00Z", "params": {}, "metrics": metrics
    }]})
    .to_string()
}

#[test]
fn diff_refuses_reports_of_different_jobs_and_counts_lost_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let stock = file("stock.json", report_file("stock", &["M5", "M6", "M7"]));
    let clients = file("clients.json", report_file("clients", &["M1", "M2", "M4"]));
    let empty = file("empty.json", report_file("stock", &[]));
    let fewer = file("fewer.json", report_file("stock", &["M5", "M7"]));

    let out = repaero(&["diff", &stock, &clients]);
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    assert!(
        stderr(&out).contains("stock") && stderr(&out).contains("clients"),
        "{}",
        stderr(&out)
    );
    // validation lost all its metrics: each is a regression
    let out = repaero(&["diff", &stock, &empty]);
    assert_eq!(code(&out), 3, "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(
        stdout(&out).matches("REGRESSION stock").count(),
        3,
        "{}",
        stdout(&out)
    );
    let out = repaero(&["diff", &stock, &fewer, "--json"]);
    assert_eq!(code(&out), 3);
    let changes: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(changes[0]["metric"], "M6");
    assert_eq!(changes[0]["what"], "removed");
    assert_eq!(changes[0]["regression"], true);
    // a metric added is not a regression, and nothing changed is no change
    let out = repaero(&["diff", &fewer, &stock]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let out = repaero(&["diff", &stock, &stock]);
    assert_eq!((code(&out), stdout(&out)), (0, "no change\n".to_string()));
}

#[test]
fn a_validation_file_without_metrics_is_an_error() {
    let t = Tiny::new("no_metrics");
    let target = t.sqlite();
    t.migrate(&target);
    t.validation("[params]\nas_of = \"2026-11-14\"\n");
    let (c, report, err) = t.validate(&target);
    assert_eq!(c, 2, "{report}\n{err}");
    assert!(
        err.contains("validation/things.toml: no [[metrics]]"),
        "{err}"
    );
}
// ---------------------------------------------------------------------
// A report written whole or not at all

const FIVE_METRICS: &str = r#"
[[metrics]]
id = "C1"
title = "things"
kind = "count"
explain = "things"

[[metrics]]
id = "C2"
title = "categories"
kind = "count_distinct"
explain = "things"
value = { source = "category", target = "category" }

[[metrics]]
id = "C3"
title = "names"
kind = "set"
explain = "things"
columns = [{ source = "name", target = "name" }]

[[metrics]]
id = "C4"
title = "per category"
kind = "grouped"
explain = "things"
key = { source = "category", target = "category" }

[[metrics]]
id = "C5"
title = "sum of ids"
kind = "sum"
explain = "things"
value = { source = "id", target = "id", type = "integer", scale = 0 }
"#;

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_failed_report_write_leaves_no_partial_file() {
    let t = Tiny::new("atomic");
    let target = t.sqlite();
    t.migrate(&target);
    t.validation(FIVE_METRICS);
    let reports = t.dir.path().join("reports");
    std::fs::create_dir_all(reports.join("a_directory")).unwrap();
    let out_json = reports.join("r.json").display().to_string();
    let out_html = reports.join("r.html").display().to_string();
    let out = t.run(
        &target,
        &[
            "validate", "things", "--out", &out_json, "--html", &out_html,
        ],
    );
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    let before_json = std::fs::read(&out_json).unwrap();
    let before_html = std::fs::read(&out_html).unwrap();
    // larger than the limit below
    assert!(
        before_json.len() > 1024 && before_html.len() > 1024,
        "{} {}",
        before_json.len(),
        before_html.len()
    );
    let before = listing(&reports);

    // the disk fills up while writing (a file size limit of 512 bytes):
    // the existing reports stay whole, no temporary file stays behind
    let t_set = format!("target.url={target}");
    let limited = std::process::Command::new("sh")
        .current_dir(t.dir.path())
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 1; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_repaero"))
        .args(["--set", &t_set, "validate", "things", "--out", &out_json])
        .output()
        .unwrap();
    assert_eq!(code(&limited), 1, "{}", stderr(&limited));
    assert!(
        stderr(&limited).contains(&format!("writing {out_json}")),
        "{}",
        stderr(&limited)
    );
    let after = std::fs::read(&out_json).unwrap();
    assert!(
        after == before_json,
        "the report was cut: {} bytes, was {}",
        after.len(),
        before_json.len()
    );
    let limited = std::process::Command::new("sh")
        .current_dir(t.dir.path())
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 1; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_repaero"))
        .args(["--set", &t_set, "validate", "things", "--html", &out_html])
        .output()
        .unwrap();
    assert_eq!(code(&limited), 1, "{}", stderr(&limited));
    let after = std::fs::read(&out_html).unwrap();
    assert!(
        after == before_html,
        "the report was cut: {} bytes, was {}",
        after.len(),
        before_html.len()
    );
    assert_eq!(listing(&reports), before);

    // the final name is a directory; the directory cannot be written
    for bad in [
        reports.join("a_directory").display().to_string(),
        "/proc/repaero-report.json".to_string(),
        reports.join("no_such_dir/r.md").display().to_string(),
    ] {
        let out = t.run(&target, &["validate", "things", "--md", &bad]);
        assert_eq!(code(&out), 1, "{bad}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("writing {bad}")),
            "{}",
            stderr(&out)
        );
        assert_eq!(listing(&reports), before, "{bad}");
        assert!(listing(&reports.join("a_directory")).is_empty());
    }
    assert!(!Path::new("/proc/repaero-report.json").exists());
}
