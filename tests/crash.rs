//! Crash safety: `repaero migrate billing` killed with SIGKILL in the middle
//! of a large load, then run again, leaves the target exactly as a run that
//! was never interrupted (row counts, a checksum of every row, and the
//! incremental watermarks). Needs the local PostgreSQL.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pg::TempDb;
use common::*;
use repaero::fixtures::billing::generate;

const TABLES: [&str; 3] = ["invoices", "invoice_lines", "payments"];

fn migrate_cmd(source: &str, target: &str, q: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_repaero"));
    cmd.current_dir(root())
        .arg("--config")
        .arg(root().join("repaero.toml"))
        .args(["--set", &format!("sources.billing.url={source}")])
        .args(["--set", &format!("target.url={target}")])
        .args(["--set", &format!("paths.quarantine={}", q.display())])
        .args(["migrate", "billing"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn migrate(source: &str, target: &str, q: &std::path::Path) {
    let out = migrate_cmd(source, target, q).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Start the job and kill it with SIGKILL once `busy` says it is in the
/// middle of writing; returns how long it ran.
fn kill_midway(mut child: Child, busy: &dyn Fn() -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the job ended ({status}) before it could be killed mid-load");
        }
        if busy() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the load never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // into the COPY, not past it: the binary read made the copy of 400,000
    // lines last about a second
    std::thread::sleep(Duration::from_millis(50));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    t0.elapsed()
}

/// Counts and a checksum of every row of every table, and the watermarks.
fn fingerprint(db: &TempDb) -> Vec<String> {
    let mut out: Vec<String> = TABLES
        .iter()
        .map(|t| {
            db.query(&format!(
                "SELECT count(*) || ' ' || md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) FROM {t} t"
            ))
        })
        .collect();
    out.push(db.query(
        "SELECT string_agg(table_name || '=' || watermark, ',' ORDER BY table_name) FROM _repaero_state",
    ));
    out.push(db.query(
        "SELECT string_agg(table_name || ':' || reason || ':' || n, ',' ORDER BY table_name, reason) \
         FROM (SELECT table_name, reason, count(*) AS n FROM _rejects GROUP BY 1, 2) r",
    ));
    out
}

/// A COPY by repaero into `db` is under way.
fn copying(db: &TempDb, into: &str) -> bool {
    let n = common::pg::psql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'repaero' AND query LIKE 'COPY \"{into}\"%'",
            db.name
        ),
    );
    n != "0"
}

#[test]
fn a_killed_billing_run_then_a_rerun_equals_a_clean_load() {
    let src = TempDb::new("crash_src");
    generate(&src.url(), 400_000, 11).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let clean = TempDb::new("crash_clean");
    let crashed = TempDb::new("crash_killed");

    // first load: killed while invoice lines are being copied
    migrate(&src.url(), &clean.url(), &q);
    let child = migrate_cmd(&src.url(), &crashed.url(), &q).spawn().unwrap();
    kill_midway(child, &|| copying(&crashed, "invoice_lines"));
    // nothing of the killed run is visible: it was one transaction
    assert_eq!(crashed.query("SELECT to_regclass('invoices') IS NULL"), "t");
    migrate(&src.url(), &crashed.url(), &q);
    assert_eq!(fingerprint(&crashed), fingerprint(&clean));

    // an incremental run over many changed rows, killed in the middle: the
    // watermark must not have moved, and the rerun catches up
    src.query(
        "UPDATE lignes_facture SET quantite = quantite + 1, modifie_le = now();
         UPDATE factures SET statut = 'payée', modifie_le = now() WHERE statut = 'en attente';",
    );
    let state_before =
        crashed.query("SELECT string_agg(watermark, ',' ORDER BY table_name) FROM _repaero_state");
    migrate(&src.url(), &clean.url(), &q);
    let child = migrate_cmd(&src.url(), &crashed.url(), &q).spawn().unwrap();
    kill_midway(child, &|| copying(&crashed, "_repaero_stage_invoice_lines"));
    assert_eq!(
        crashed.query("SELECT string_agg(watermark, ',' ORDER BY table_name) FROM _repaero_state"),
        state_before,
        "a killed run must leave the watermarks where they were"
    );
    migrate(&src.url(), &crashed.url(), &q);
    let (a, b) = (fingerprint(&crashed), fingerprint(&clean));
    assert_eq!(a, b);
    // the rerun did move the changes
    assert_eq!(
        crashed.query("SELECT count(*) FROM invoices WHERE status = 'en attente'"),
        "0"
    );
}
