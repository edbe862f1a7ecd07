//! What a configuration can no longer do (issue 15): a mapping cannot write
//! into repaero's own tables, and a libpq key=value connection string is
//! accepted with its password never shown. Needs the local PostgreSQL.

mod common;

use common::pg::TempDb;
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
        "stock_alert_sends",
        "payment_attempts",
        "payment_notifications",
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
        repaero::sink::ledger::REJECTS_TABLE,
        repaero::sink::ledger::MERGES_TABLE,
        repaero::sink::ledger::RUNS_TABLE,
        repaero::sink::ledger::STATE_TABLE,
        repaero::sink::KEYS_TABLE,
        repaero::stock::scans::MOVEMENTS,
        repaero::stock::scans::FILES,
        repaero::stock::alerts::ALERTS,
        repaero::stock::alerts::SENDS,
        &staging,
    ] {
        assert!(is_reserved_table(t), "{t} is not reserved");
    }
}

const SECRET: &str = "Sup3rS3cr3tPw";

/// Every output of a command, stdout and stderr.
fn all_output(o: &std::process::Output) -> String {
    format!("{}\n{}", stdout(o), stderr(o))
}

fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the password:\n{text}");
}

#[test]
fn a_key_value_target_is_accepted_and_its_password_never_shown() {
    let db = TempDb::new("kv_target");
    let dir = csv_project("things_too");
    let p = dir.path();
    // trust authentication: the server ignores the password, repaero must
    // still never print it
    let kv = format!(
        "host=127.0.0.1 port=5432 user=postgres dbname={} password='{SECRET}' application_name=repaero_kv",
        db.name
    );
    let target = format!("target.url={kv}");
    std::fs::create_dir_all(p.join("validation")).unwrap();
    std::fs::write(
        p.join("validation/ok.toml"),
        "[[metrics]]\nid = \"K1\"\ntitle = \"things\"\nkind = \"count\"\nexplain = \"things\"\n",
    )
    .unwrap();
    let report = p.join("r.json").display().to_string();
    for args in [
        vec!["migrate", "ok"],
        vec!["migrate", "ok", "--json"],
        vec!["-vv", "migrate", "ok", "--dry-run"],
        vec!["jobs"],
        vec!["jobs", "--json"],
        vec!["rowdiff", "ok", "things"],
        vec!["validate", "ok", "--out", &report],
    ] {
        let mut all = vec!["--set", &target];
        all.extend_from_slice(&args);
        let out = repaero_in(p, &all);
        assert_eq!(code(&out), 0, "{args:?}: {}", all_output(&out));
        assert_no_secret(&format!("{args:?}"), &all_output(&out));
    }
    assert_eq!(db.query("SELECT count(*) FROM things"), "3");
    let report = std::fs::read_to_string(&report).unwrap();
    assert!(report.contains("password=***"), "{report}");
    assert_no_secret("the validation report", &report);
    assert_no_secret(
        "_repaero_runs",
        &db.query("SELECT string_agg(r::text, ' ') FROM _repaero_runs r"),
    );
    assert!(
        db.query("SELECT string_agg(source, ' ') FROM _repaero_runs")
            .contains("data"),
        "the runs name their source"
    );

    // failing: an unknown database, a key tokio-postgres does not know, a
    // quoted password with spaces, the password first
    for bad in [
        kv.replace(&db.name, "repaero_no_such_db"),
        format!("hots=127.0.0.1 password={SECRET}"),
        format!("host=127.0.0.1 password='{SECRET} x' dbname=repaero_no_such_db"),
        format!("password={SECRET} host=127.0.0.1 port=1 connect_timeout=2"),
        format!("user=postgres PassWord = {SECRET} host=127.0.0.1 dbname=repaero_no_such_db"),
    ] {
        let target = format!("target.url={bad}");
        for args in [vec!["migrate", "ok"], vec!["jobs"], vec!["validate", "ok"]] {
            let mut all = vec!["--set", &target];
            all.extend_from_slice(&args);
            let out = repaero_in(p, &all);
            assert_no_secret(&format!("{bad:?} {args:?}"), &all_output(&out));
        }
        let out = repaero_in(p, &["--set", &target, "migrate", "ok"]);
        assert_ne!(code(&out), 0, "{bad}: {}", all_output(&out));
    }
}

#[test]
fn a_key_value_source_is_accepted_and_its_password_never_shown() {
    let src = TempDb::new("kv_source");
    src.query(
        "CREATE TABLE things (id integer PRIMARY KEY, name text, category text);
         INSERT INTO things VALUES (1, 'a', 'x'), (2, 'b', 'y'), (3, 'c', 'x')",
    );
    let kv =
        |db: &str| format!("host=127.0.0.1 port=5432 user=postgres dbname={db} password={SECRET}");
    let config = |db: &str| format!("[sources.pg]\nkind = \"postgres\"\nurl = \"{}\"\n", kv(db));
    let mapping = mapping("things").replace("things.csv", "things");
    let dir = project(
        &config(&src.name),
        &[
            ("mappings/things.toml", &mapping),
            (
                "jobs/ok.toml",
                "source = \"pg\"\n[[tables]]\nmapping = \"things\"\n",
            ),
        ],
    );
    let p = dir.path();
    let target = format!("target.url=sqlite://{}", p.join("t.db").display());
    for args in [
        vec!["migrate", "ok"],
        vec!["migrate", "ok", "--json"],
        vec!["jobs", "--json"],
        vec!["profile", "ok"],
        vec!["rowdiff", "ok", "things"],
    ] {
        let mut all = vec!["--set", &target];
        all.extend_from_slice(&args);
        let out = repaero_in(p, &all);
        assert_eq!(code(&out), 0, "{args:?}: {}", all_output(&out));
        assert_no_secret(&format!("{args:?}"), &all_output(&out));
    }
    let db = Db::Sqlite(p.join("t.db"));
    assert_eq!(db.one("SELECT count(*) FROM things"), "3");
    let runs: Vec<String> = db
        .rows("SELECT source || ' ' || tally FROM _repaero_runs")
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    assert!(!runs.is_empty());
    assert_no_secret("_repaero_runs", &runs.join("\n"));

    // an unknown source database
    std::fs::write(p.join("repaero.toml"), config("repaero_no_such_db")).unwrap();
    let out = repaero_in(p, &["--set", &target, "migrate", "ok"]);
    assert_eq!(code(&out), 2, "{}", all_output(&out));
    assert_no_secret("a failed connection", &all_output(&out));
}
