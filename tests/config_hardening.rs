//! What a configuration can no longer do (issue 15): a mapping cannot write
//! into repaero's own tables, and a libpq key=value connection string is
//! accepted with its password never shown. Needs the local PostgreSQL.

mod common;

use common::*;

const CSV: &str = "id;name;category\n1;a;x\n2;b;y\n3;c;x\n";

fn mapping(table: &str) -> String {
    format!(
        r#"[source]
table = "things.csv"
[target]
table = "{table}"
key = ["id"]
[[columns]]
name = "id"
type = "integer"
[[columns]]
name = "name"
[[columns]]
name = "category"
"#
    )
}

/// A CSV source `data/things.csv`, the job `ok` writing `things` and the
/// job `bad` writing `table`.
fn csv_project(table: &str) -> tempfile::TempDir {
    let dir = project(
        "[sources.csv]\nkind = \"csv\"\npath = \"data\"\n",
        &[
            ("mappings/things.toml", &mapping("things")),
            ("mappings/bad.toml", &mapping(table)),
            (
                "jobs/ok.toml",
                "source = \"csv\"\n[[tables]]\nmapping = \"things\"\n",
            ),
            (
                "jobs/bad.toml",
                "source = \"csv\"\n[[tables]]\nmapping = \"bad\"\n",
            ),
        ],
    );
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/things.csv"), CSV).unwrap();
    dir
}

#[test]
fn a_mapping_cannot_write_into_repaeros_own_tables() {
    for table in [
        "_rejects",
        "_merges",
        "_repaero_runs",
        "_repaero_state",
        "_repaero_keys",
        "_repaero_anything",
        "_repaeroish",
        "_dead_letters",
        "things__repaero_new",
        "stock_movements",
        "scan_files",
        "stock_alerts",
    ] {
        let dir = csv_project(table);
        let p = dir.path();
        let target = format!("target.url=sqlite://{}", p.join("t.db").display());
        // the good job first: nothing is written, the bad one is found when
        // the jobs are loaded
        let out = repaero_in(p, &["--set", &target, "migrate", "ok", "bad"]);
        assert_eq!(code(&out), 2, "{table}: {}\n{}", stdout(&out), stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("mappings/bad.toml") && err.contains(&format!("`{table}`")),
            "{table}: {err}"
        );
        assert!(err.contains("reserved"), "{table}: {err}");
        assert!(!p.join("t.db").exists(), "{table}: the target was written");
        // every command that loads the job says the same
        let out = repaero_in(p, &["--set", &target, "jobs"]);
        assert_eq!(code(&out), 2, "{table}: {}", stderr(&out));
        assert!(stderr(&out).contains("reserved"), "{table}");
    }
    // an ordinary name next to them is fine
    let dir = csv_project("rejects");
    let p = dir.path();
    let target = format!("target.url=sqlite://{}", p.join("t.db").display());
    let out = repaero_in(p, &["--set", &target, "migrate", "ok", "bad"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // and the history of rejects stays readable by later runs
    let out = repaero_in(p, &["--set", &target, "migrate", "ok"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn every_table_repaero_keeps_is_reserved() {
    use repaero::config::mapping::is_reserved_table;
    let staging = repaero::sink::staging_name("parts");
    for t in [
        repaero::sink::REJECTS_TABLE,
        repaero::sink::MERGES_TABLE,
        repaero::sink::RUNS_TABLE,
        repaero::sink::STATE_TABLE,
        repaero::sink::KEYS_TABLE,
        repaero::stock::scans::MOVEMENTS,
        repaero::stock::scans::FILES,
        repaero::stock::alerts::ALERTS,
        &staging,
    ] {
        assert!(is_reserved_table(t), "{t} is not reserved");
    }
}
