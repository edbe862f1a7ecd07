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
