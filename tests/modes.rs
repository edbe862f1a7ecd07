//! Write modes (replace, upsert, append) into SQLite and PostgreSQL, an
//! explicit header row, and the small command-line verbs.

mod common;

use std::path::Path;

use common::pg::TempDb;
use common::*;

/// A project using the repository's mappings with the given job text.
fn project(job: &str) -> tempfile::TempDir {
    let mappings: Vec<(String, String)> = ["stock_parts", "stock_receipts"]
        .iter()
        .map(|m| {
            let name = format!("mappings/{m}.toml");
            let text = std::fs::read_to_string(root().join(&name)).unwrap();
            (name, text)
        })
        .collect();
    let mut files: Vec<(&str, &str)> = mappings
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    files.push(("jobs/stock.toml", job));
    common::project(
        &excel_stock_config(&root().join("fixtures/stock/stock.xlsx")),
        &files,
    )
}

const MODES_JOB: &str = "source = \"stock\"\n[[tables]]\nmapping = \"stock_parts\"\nmode = \"upsert\"\n[[tables]]\nmapping = \"stock_receipts\"\nmode = \"append\"\n";

fn run(dir: &Path, url: &str, workbook: Option<&Path>) {
    let mut args = vec!["--set".to_string(), format!("target.url={url}")];
    if let Some(w) = workbook {
        args.push("--set".into());
        args.push(format!("sources.stock.path={}", w.display()));
    }
    args.extend(["migrate".into(), "stock".into()]);
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let out = repaero_in(dir, &args);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
}

/// The fixture with 10 more parts (GEN-000001…10) and 5 more receipts.
fn bigger_workbook(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("bigger.xlsx");
    let out = repaero_in(
        dir,
        &[
            "fixtures",
            "stock",
            "--rows",
            "10",
            "--out",
            path.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    path
}

fn check_modes(count: &dyn Fn(&str) -> String, dir: &Path, url: &str) {
    run(dir, url, None);
    assert_eq!(count("SELECT count(*) FROM parts"), "18");
    assert_eq!(count("SELECT count(*) FROM stock_receipts"), "10");
    // upsert: the same 18 parts updated, 10 new ones inserted; append: the
    // receipts are added again
    run(dir, url, Some(&bigger_workbook(dir)));
    assert_eq!(count("SELECT count(*) FROM parts"), "28");
    assert_eq!(
        count("SELECT quantity FROM parts WHERE reference = 'HYD-2040'"),
        "5"
    );
    assert_eq!(count("SELECT count(*) FROM stock_receipts"), "25");
    // upsert again with the same data changes nothing
    run(dir, url, Some(&dir.join("bigger.xlsx")));
    assert_eq!(count("SELECT count(*) FROM parts"), "28");
    assert_eq!(
        count("SELECT quantity FROM parts WHERE reference = 'HYD-2040'"),
        "5"
    );
}

#[test]
fn upsert_and_append_into_sqlite() {
    let p = project(MODES_JOB);
    let db = p.path().join("modes.db");
    let url = format!("sqlite://{}", db.display());
    let count = |sql: &str| -> String {
        let c = rusqlite::Connection::open(&db).unwrap();
        let v: rusqlite::types::Value = c.query_row(sql, [], |r| r.get(0)).unwrap();
        match v {
            rusqlite::types::Value::Integer(i) => i.to_string(),
            other => format!("{other:?}"),
        }
    };
    check_modes(&count, p.path(), &url);
}

#[test]
fn upsert_and_append_into_postgres() {
    let p = project(MODES_JOB);
    let db = TempDb::new("modes");
    let count = |sql: &str| db.query(sql);
    check_modes(&count, p.path(), &db.url());
    // the upsert kept the table's primary key
    assert_eq!(
        db.query(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'parts'::regclass AND contype = 'p'"
        ),
        "parts_pkey"
    );
}

const SNAPSHOT_JOB: &str =
    "source = \"stock\"\n[[tables]]\nmapping = \"stock_parts\"\nmode = \"snapshot\"\n";

fn check_snapshots(db: &Db, dir: &Path) {
    run(dir, &db.url(), None);
    std::thread::sleep(std::time::Duration::from_millis(20));
    run(dir, &db.url(), None);
    // one full copy per run, each stamped with its run's time, the merges
    // of each applied to its own copy only
    assert_eq!(db.one("SELECT count(*) FROM parts"), "36");
    assert_eq!(db.one("SELECT count(DISTINCT snapshot_at) FROM parts"), "2");
    assert_eq!(
        db.one("SELECT count(*) FROM parts WHERE reference = 'HYD-2040' AND quantity = 5"),
        "2"
    );
}

#[test]
fn snapshots_into_sqlite_and_postgres() {
    let p = project(SNAPSHOT_JOB);
    check_snapshots(&Db::Sqlite(p.path().join("snap.db")), p.path());
    let pg = TempDb::new("snapshots");
    check_snapshots(&Db::Pg(pg.url()), p.path());
    // the key is the part's reference and the snapshot's time
    assert_eq!(
        pg.query("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'parts'::regclass AND contype = 'p'"),
        "PRIMARY KEY (reference, snapshot_at)"
    );
}

#[test]
fn incremental_needs_an_update_key_and_a_database_source() {
    let p = project(
        "source = \"stock\"\n[[tables]]\nmapping = \"stock_parts\"\nmode = \"incremental\"\n",
    );
    let out = repaero_in(p.path(), &["migrate", "stock"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("needs target.update_key"),
        "{}",
        stderr(&out)
    );
    let mapping = p.path().join("mappings/stock_parts.toml");
    let text = std::fs::read_to_string(&mapping).unwrap();
    std::fs::write(
        &mapping,
        text.replace(
            "[target]\n",
            "[target]\nupdate_key = \"last_receipt_date\"\n",
        ),
    )
    .unwrap();
    let out = repaero_in(p.path(), &["migrate", "stock"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("needs a source that can filter rows"),
        "{}",
        stderr(&out)
    );
    let p =
        project("source = \"stock\"\n[[tables]]\nmapping = \"stock_parts\"\nmode = \"replace\"\n");
    let mapping = p.path().join("mappings/stock_parts.toml");
    let text = std::fs::read_to_string(&mapping).unwrap();
    std::fs::write(
        &mapping,
        text.replace("[target]\n", "[target]\ndeletes = \"hard\"\n"),
    )
    .unwrap();
    let out = repaero_in(p.path(), &["migrate", "stock"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("target.deletes only applies to mode = \"incremental\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn explicit_header_row() {
    let p = project("source = \"stock\"\n[[tables]]\nmapping = \"stock_parts\"\n");
    let mapping = std::fs::read_to_string(p.path().join("mappings/stock_parts.toml")).unwrap();
    let with_header = |row: u32| {
        std::fs::write(
            p.path().join("mappings/stock_parts.toml"),
            mapping.replace("[source]\n", &format!("[source]\nheader_row = {row}\n")),
        )
        .unwrap();
        repaero_in(p.path(), &["migrate", "stock", "--json"])
    };
    let out = with_header(4);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["runs"][0]["tables"][0]["written"], 18);
    let out = with_header(3);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("header_row = 3 is empty"),
        "{}",
        stderr(&out)
    );
    let out = with_header(2);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("mapped column not found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn version_and_completions() {
    let out = repaero(&["--version"]);
    assert_eq!(code(&out), 0);
    assert_eq!(
        stdout(&out).trim(),
        format!("repaero {}", env!("CARGO_PKG_VERSION"))
    );
    let out = repaero(&["completions", "bash"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    assert!(
        text.contains("_repaero()"),
        "{}",
        &text[..text.len().min(300)]
    );
    assert!(text.contains("migrate"));
    // usage errors exit 2
    let out = repaero(&["migrate"]);
    assert_eq!(code(&out), 2);
    let out = repaero(&["frobnicate"]);
    assert_eq!(code(&out), 2);
}

/// A reference rule's keys are loaded once for the tables of a job that
/// check them, and again once a table has written the referenced table: a
/// move naming a part the job's parts file adds is rejected before that
/// table and kept after it.
#[test]
fn reference_keys_follow_the_tables_a_job_wrote() {
    let parts = |table: &str, mode: &str| {
        format!(
            "[source]\ntable = \"{table}.csv\"\n[target]\ntable = \"parts\"\nkey = [\"reference\"]\nmode = \"{mode}\"\n[[columns]]\nname = \"reference\"\n"
        )
    };
    let moves = |table: &str| {
        format!(
            "[source]\ntable = \"{table}.csv\"\n[target]\ntable = \"{table}\"\n[[columns]]\nname = \"line\"\ntype = \"integer\"\n[[columns]]\nname = \"reference\"\nreferences = {{ table = \"parts\", column = \"reference\" }}\n"
        )
    };
    let job = |tables: &[&str]| {
        tables
            .iter()
            .map(|m| format!("[[tables]]\nmapping = \"{m}\"\n"))
            .collect::<String>()
    };
    let dir = common::project(
        "[sources.csv]\nkind = \"csv\"\npath = \"data\"\n",
        &[
            ("mappings/parts_a.toml", &parts("parts_a", "replace")),
            ("mappings/parts_b.toml", &parts("parts_b", "append")),
            ("mappings/moves_1.toml", &moves("moves_1")),
            ("mappings/moves_2.toml", &moves("moves_2")),
            ("mappings/moves_3.toml", &moves("moves_3")),
            (
                "jobs/first.toml",
                &format!("source = \"csv\"\n{}", job(&["parts_a"])),
            ),
            (
                "jobs/j.toml",
                &format!(
                    "source = \"csv\"\n{}",
                    job(&["moves_1", "moves_2", "parts_b", "moves_3"])
                ),
            ),
        ],
    );
    let p = dir.path();
    std::fs::create_dir_all(p.join("data")).unwrap();
    for (name, text) in [
        ("parts_a", "reference\nA\nB\n"),
        ("parts_b", "reference\nC\n"),
        ("moves_1", "line;reference\n1;A\n2;C\n"),
        ("moves_2", "line;reference\n1;B\n2;C\n3;D\n"),
        ("moves_3", "line;reference\n1;A\n2;C\n3;D\n"),
    ] {
        std::fs::write(p.join(format!("data/{name}.csv")), text).unwrap();
    }
    let db = p.join("t.db");
    let target = format!("target.url=sqlite://{}", db.display());
    let out = repaero_in(p, &["--set", &target, "migrate", "first"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    let out = repaero_in(p, &["--set", &target, "migrate", "j", "--json"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let counts: Vec<(String, u64, u64)> = report["runs"][0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_string(),
                t["written"].as_u64().unwrap(),
                t["rejected"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64, u64)> = [
        ("moves_1", 1, 1),
        ("moves_2", 1, 2),
        ("parts", 1, 0),
        ("moves_3", 2, 1),
    ]
    .iter()
    .map(|(t, w, r)| (t.to_string(), *w, *r))
    .collect();
    assert_eq!(counts, want);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let refs = |table: &str| -> Vec<String> {
        conn.prepare(&format!("SELECT reference FROM {table} ORDER BY line"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    assert_eq!(refs("moves_2"), ["B"]);
    assert_eq!(refs("moves_3"), ["A", "C"]);
}
