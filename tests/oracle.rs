//! The Oracle target (feature `oracle`). No Oracle server runs on the
//! development and CI machines: the SQL repaero generates is unit-tested in
//! `src/sink/oracle.rs`; the end-to-end tests here run against a server
//! only when `REPAERO_ORACLE_URL` names one
//! (`oracle://user:password@host:1521/service`, a scratch schema: the test
//! drops and recreates its tables), and say why they did nothing otherwise.

#![cfg(feature = "oracle")]

mod common;

use common::pg::TempDb;
use common::*;
use repaero::fixtures::billing::generate;

fn oracle_url() -> Option<String> {
    match std::env::var("REPAERO_ORACLE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!(
                "skipped: REPAERO_ORACLE_URL is not set (oracle://user:password@host:1521/service of a scratch schema); no Oracle server runs here"
            );
            None
        }
    }
}

#[test]
fn without_the_client_libraries_the_error_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let q = format!("paths.quarantine={}", dir.path().join("q").display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_repaero"))
        .current_dir(root())
        .env("ORACLE_TEST_PW", "tr3s-secret")
        .args([
            "--set",
            "target.url=oracle://repaero:${ORACLE_TEST_PW}@127.0.0.1:1/NOWHERE",
            "--set",
            &q,
            "migrate",
            "stock",
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!err.contains("tr3s-secret"), "{err}");
    assert!(
        err.contains("oracle://repaero:***@127.0.0.1:1/NOWHERE"),
        "{err}"
    );
    if err.contains("DPI-1047") {
        assert_eq!(code(&out), 2, "{err}");
        assert!(err.contains("Instant Client"), "{err}");
        assert!(err.contains("LD_LIBRARY_PATH"), "{err}");
    } else {
        // the client libraries are installed: nothing listens on port 1
        eprintln!("Oracle client libraries present; checked the connection error instead");
        assert_ne!(code(&out), 0, "{err}");
    }
}

/// A connection for checking what landed.
fn connect(url: &str) -> oracle::Connection {
    let u = repaero::db::oracle::parse_url(url).unwrap();
    oracle::Connection::connect(&u.user, &u.password, &u.connect).unwrap()
}

fn count(conn: &oracle::Connection, sql: &str) -> u64 {
    conn.query_row_as::<i64>(sql, &[]).unwrap() as u64
}

fn drop_tables(conn: &oracle::Connection, tables: &[&str]) {
    for t in tables {
        if let Err(e) = conn.execute(
            &format!("DROP TABLE \"{t}\" CASCADE CONSTRAINTS PURGE"),
            &[],
        ) {
            assert!(e.to_string().contains("ORA-00942"), "{e}");
        }
    }
}

#[test]
fn stock_into_oracle() {
    let Some(url) = oracle_url() else { return };
    let conn = connect(&url);
    drop_tables(&conn, &["PARTS", "STOCK_RECEIPTS"]);
    let dir = tempfile::tempdir().unwrap();
    let t = format!("target.url={url}");
    let q = format!("paths.quarantine={}", dir.path().join("q").display());
    for _ in 0..2 {
        // twice: the second run replaces inside the transaction
        let out = repaero(&["--set", &t, "--set", &q, "migrate", "stock"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/stock/stock.expected.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        count(&conn, "SELECT count(*) FROM parts"),
        truth["parts"]["written"].as_u64().unwrap()
    );
    assert_eq!(
        count(
            &conn,
            "SELECT quantity FROM parts WHERE reference = 'HYD-2040'"
        ),
        5
    );
}

#[test]
fn billing_into_oracle_then_an_incremental_run() {
    let Some(url) = oracle_url() else { return };
    let conn = connect(&url);
    drop_tables(&conn, &["PAYMENTS", "INVOICE_LINES", "INVOICES"]);
    conn.execute("DELETE FROM \"_REPAERO_STATE\" WHERE JOB = 'billing'", &[])
        .ok();
    conn.commit().unwrap();
    let src = TempDb::new("oracle_src");
    let truth = generate(&src.url(), 2_000, 5).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = format!("sources.billing.url={}", src.url());
    let t = format!("target.url={url}");
    let q = format!("paths.quarantine={}", dir.path().join("q").display());
    let out = repaero(&["--set", &s, "--set", &t, "--set", &q, "migrate", "billing"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        count(&conn, "SELECT count(*) FROM invoices"),
        truth.invoices.written
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM invoice_lines"),
        truth.invoice_lines.written
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM payments"),
        truth.payments.written
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM invoices WHERE lines_match = 0"),
        truth.invoices.flagged["lines do not add up"]
    );
    let id: i64 = src
        .query("SELECT min(id) FROM factures WHERE client_id IS NOT NULL AND statut = 'en attente'")
        .parse()
        .unwrap();
    src.query(&format!(
        "UPDATE factures SET statut = 'payée', modifie_le = now() WHERE id = {id}"
    ));
    let out = repaero(&["--set", &s, "--set", &t, "--set", &q, "migrate", "billing"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        conn.query_row_as::<String>(&format!("SELECT status FROM invoices WHERE id = {id}"), &[])
            .unwrap(),
        "payée"
    );
}
