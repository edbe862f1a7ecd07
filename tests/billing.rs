//! The billing job: a generated PostgreSQL billing base (with its ground
//! truth) into SQLite and into a second PostgreSQL database, then the
//! incremental runs that follow inserts, updates and deletes in the source.
//! Needs the local PostgreSQL (127.0.0.1:5432, user postgres).

mod common;

use std::path::Path;

use common::pg::TempDb;
use common::*;
use repaero::fixtures::billing::{BillingTruth, TableTruth, generate};
use serde_json::Value;

const SEED: u64 = 42;

/// Run the billing job from `source` into `target`; the JSON report.
fn migrate(source: &str, target: &str, q: &Path, extra: &[&str]) -> (i32, Value, String) {
    let s = format!("sources.billing.url={source}");
    let t = format!("target.url={target}");
    let qd = format!("paths.quarantine={}", q.display());
    let mut args = vec![
        "--set", &s, "--set", &t, "--set", &qd, "migrate", "billing", "--json",
    ];
    args.extend_from_slice(extra);
    let out = repaero(&args);
    (
        code(&out),
        serde_json::from_str(&stdout(&out)).unwrap_or(Value::Null),
        stderr(&out),
    )
}

fn table<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["runs"][0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {report}"))
}

fn map_of(v: &Value) -> std::collections::BTreeMap<String, u64> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

fn assert_tally(report: &Value, name: &str, truth: &TableTruth) {
    let t = table(report, name);
    assert_eq!(t["read"], truth.read, "{name} read");
    assert_eq!(t["written"], truth.written, "{name} written");
    assert_eq!(t["rejected"], truth.rejected, "{name} rejected");
    assert_eq!(map_of(&t["reasons"]), truth.reasons, "{name} reasons");
    assert_eq!(map_of(&t["flagged"]), truth.flagged, "{name} flagged");
    assert_eq!(map_of(&t["rounded"]), truth.rounded, "{name} rounded");
    assert_eq!(
        t["watermark"]["null_rows"], truth.null_update_key,
        "{name} NULL update keys"
    );
    assert_eq!(t["inserted"], truth.written, "{name} inserted");
}

fn cents(db: &Db, sql: &str) -> i64 {
    (db.one(sql).parse::<f64>().unwrap() * 100.0).round() as i64
}

/// What a first load must leave in the target, checked by value.
fn assert_loaded(db: &Db, truth: &BillingTruth) {
    assert_eq!(
        db.one("SELECT count(*) FROM invoices"),
        truth.invoices.written.to_string()
    );
    for (status, n) in &truth.invoices_by_status {
        assert_eq!(
            db.one(&format!(
                "SELECT count(*) FROM invoices WHERE status = '{status}'"
            )),
            n.to_string(),
            "invoices {status}"
        );
    }
    assert_eq!(
        cents(db, "SELECT sum(total_incl_tax) FROM invoices"),
        truth.written_total_incl_tax_cents
    );
    assert_eq!(
        cents(db, "SELECT sum(amount) FROM payments"),
        truth.written_payments_cents
    );
    assert_eq!(
        db.one("SELECT count(*) FROM invoices WHERE NOT lines_match"),
        truth.invoices.flagged["lines do not add up"].to_string()
    );
    assert_eq!(
        db.one("SELECT count(*) FROM invoices WHERE NOT total_excl_tax_valid"),
        truth.invoices.flagged["total_excl_tax: below 0"].to_string()
    );
    assert_eq!(
        db.one("SELECT count(*) FROM invoice_lines"),
        truth.invoice_lines.written.to_string()
    );
    // no line points to a missing invoice, none has stray spaces
    assert_eq!(
        db.one(
            "SELECT count(*) FROM invoice_lines l WHERE NOT EXISTS (SELECT 1 FROM invoices i WHERE i.id = l.invoice_id)"
        ),
        "0"
    );
    assert_eq!(
        db.one("SELECT count(*) FROM invoice_lines WHERE designation LIKE ' %' OR designation LIKE '% '"),
        "0"
    );
    assert_eq!(
        db.one("SELECT count(*) FROM _repaero_state WHERE job = 'billing'"),
        "3"
    );
}

#[test]
fn billing_lands_in_sqlite_and_postgres_as_the_ground_truth_says() {
    let src = TempDb::new("billing_src");
    let truth = generate(&src.url(), 6_000, SEED).unwrap();
    assert_eq!(truth.invoice_lines.read, 6_000);
    assert!(truth.invoices.reasons.len() == 2 && truth.invoices.flagged.len() == 2);
    let dir = tempfile::tempdir().unwrap();
    let pg = TempDb::new("billing_dst");
    for db in [Db::Sqlite(dir.path().join("t.db")), Db::Pg(pg.url())] {
        let (code, report, err) = migrate(&src.url(), &db.url(), &dir.path().join("q"), &[]);
        assert_eq!(code, 0, "{err}");
        assert_tally(&report, "invoices", &truth.invoices);
        assert_tally(&report, "invoice_lines", &truth.invoice_lines);
        assert_tally(&report, "payments", &truth.payments);
        assert_loaded(&db, &truth);
        // the rejected invoices are in the quarantine with their reason
        let invoices = report["runs"][0]["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| {
                f.as_str()
                    .unwrap()
                    .ends_with("billing.invoices.rejects.csv")
            })
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        let csv = std::fs::read_to_string(&invoices).unwrap();
        assert_eq!(csv.lines().count() as u64, truth.invoices.rejected + 1);
        assert!(csv.contains("already used by source row"), "{csv}");
    }
}

/// Inserts, updates and deletes in the source; returns the ids involved:
/// (new invoice, updated invoice, line updated, deleted invoice, deleted
/// payment, a number reused by the new duplicate).
struct Changes {
    new_invoice: i64,
    updated_invoice: i64,
    updated_line: i64,
    deleted_invoice: i64,
    deleted_invoice_lines: u64,
    deleted_invoice_payments: u64,
    deleted_payment: i64,
    reused_number: String,
}

fn change_source(src: &TempDb) -> Changes {
    // invoices that were written (clean, with a modification time)
    let clean = "client_id IS NOT NULL AND modifie_le IS NOT NULL AND total_ht >= 0 \
                 AND numero IN (SELECT numero FROM factures GROUP BY numero HAVING count(*) = 1)";
    let ids: Vec<i64> = src
        .query(&format!(
            "SELECT id FROM factures f WHERE {clean} AND EXISTS (SELECT 1 FROM paiements p WHERE p.facture_id = f.id) ORDER BY id LIMIT 3"
        ))
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let (updated_invoice, deleted_invoice, paid_invoice) = (ids[0], ids[1], ids[2]);
    let new_invoice: i64 = src
        .query("SELECT max(id) + 1 FROM factures")
        .parse()
        .unwrap();
    let reused_number = src.query(&format!(
        "SELECT numero FROM factures WHERE id = {updated_invoice}"
    ));
    let updated_line: i64 = src
        .query(&format!(
            "SELECT min(id) FROM lignes_facture WHERE facture_id = {paid_invoice}"
        ))
        .parse()
        .unwrap();
    let deleted_payment: i64 = src
        .query(&format!(
            "SELECT min(id) FROM paiements WHERE facture_id = {paid_invoice}"
        ))
        .parse()
        .unwrap();
    let deleted_invoice_lines: u64 = src
        .query(&format!(
            "SELECT count(*) FROM lignes_facture WHERE facture_id = {deleted_invoice}"
        ))
        .parse()
        .unwrap();
    let deleted_invoice_payments: u64 = src
        .query(&format!(
            "SELECT count(*) FROM paiements WHERE facture_id = {deleted_invoice}"
        ))
        .parse()
        .unwrap();
    src.query(&format!(
        "BEGIN;
         INSERT INTO factures VALUES ({new_invoice}, 'FA-2026-{new_invoice:06}', 1, '2026-11-28', '2026-12-28',
           'en attente', 150.0000, 30.0000, 180.0000, now());
         INSERT INTO lignes_facture VALUES (9000001, {new_invoice}, 1, 'Visite 100 heures', 1.00, 100.0000, 20.00, now()),
           (9000002, {new_invoice}, 2, 'Main d''œuvre atelier (heure)', 2.00, 25.0000, 20.00, now());
         INSERT INTO paiements VALUES (9000001, {new_invoice}, '2026-11-29', 90.0000, 'carte', 'REG-NEW', now());
         -- a new invoice reusing the number of an invoice already migrated
         INSERT INTO factures VALUES ({dup}, '{reused_number}', 1, '2026-11-28', NULL,
           'en attente', 10.0000, 2.0000, 12.0000, now());
         UPDATE factures SET statut = 'payée', modifie_le = now() WHERE id = {updated_invoice};
         UPDATE lignes_facture SET designation = 'Révision hélice', modifie_le = now() WHERE id = {updated_line};
         DELETE FROM paiements WHERE id = {deleted_payment};
         DELETE FROM factures WHERE id = {deleted_invoice};
         COMMIT;",
        dup = new_invoice + 1
    ));
    Changes {
        new_invoice,
        updated_invoice,
        updated_line,
        deleted_invoice,
        deleted_invoice_lines,
        deleted_invoice_payments,
        deleted_payment,
        reused_number,
    }
}

#[test]
fn a_second_run_moves_exactly_the_changes() {
    let src = TempDb::new("sync_src");
    let truth = generate(&src.url(), 3_000, SEED + 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pg = TempDb::new("sync_dst");
    let targets = [Db::Sqlite(dir.path().join("t.db")), Db::Pg(pg.url())];
    let q = dir.path().join("q");
    for db in &targets {
        let (code, _, err) = migrate(&src.url(), &db.url(), &q, &[]);
        assert_eq!(code, 0, "{err}");
    }
    let watermark_before =
        targets[1].one("SELECT watermark FROM _repaero_state WHERE table_name = 'invoices'");
    let ch = change_source(&src);
    // rows without a modification time are read on every run; those
    // rejected in the first run are rejected again
    let null_invoices = truth.invoices.null_update_key;
    let count = |sql: &str| -> u64 { src.query(sql).parse().unwrap() };
    let null_no_client =
        count("SELECT count(*) FROM factures WHERE modifie_le IS NULL AND client_id IS NULL");
    let null_dups = count(
        "SELECT count(*) FROM factures f WHERE modifie_le IS NULL \
         AND EXISTS (SELECT 1 FROM factures g WHERE g.numero = f.numero AND g.id < f.id)",
    );
    let null_rejected = null_no_client + null_dups;
    let null_lines = truth.invoice_lines.null_update_key;
    for db in &targets {
        let (code, report, err) = migrate(&src.url(), &db.url(), &q, &[]);
        assert_eq!(code, 0, "{err}");
        let inv = table(&report, "invoices");
        // new, updated, and the duplicate number; plus the NULL-stamped
        assert_eq!(inv["read"], 3 + null_invoices, "{inv}");
        assert_eq!(inv["rejected"], 1 + null_rejected, "{inv}");
        assert_eq!(inv["reasons"]["number: duplicate"], 1 + null_dups, "{inv}");
        assert_eq!(inv["inserted"], 1, "{inv}");
        assert_eq!(inv["updated"], 1 + null_invoices - null_rejected, "{inv}");
        assert_eq!(inv["deleted"], 1, "{inv}");
        assert_eq!(inv["watermark"]["from"], watermark_before.as_str());
        assert_ne!(inv["watermark"]["to"], inv["watermark"]["from"]);
        let lines = table(&report, "invoice_lines");
        assert_eq!(lines["read"], 3 + null_lines, "{lines}");
        assert_eq!(lines["inserted"], 2, "{lines}");
        assert_eq!(lines["deleted"], ch.deleted_invoice_lines, "{lines}");
        let pay = table(&report, "payments");
        assert_eq!(pay["read"], 1, "{pay}");
        assert_eq!(pay["inserted"], 1, "{pay}");
        assert_eq!(pay["deleted"], 1 + ch.deleted_invoice_payments, "{pay}");

        // the values moved
        assert_eq!(
            db.one(&format!(
                "SELECT status FROM invoices WHERE id = {}",
                ch.updated_invoice
            )),
            "payée"
        );
        assert_eq!(
            db.one(&format!(
                "SELECT number FROM invoices WHERE id = {}",
                ch.new_invoice
            )),
            format!("FA-2026-{:06}", ch.new_invoice)
        );
        assert_eq!(
            db.one(&format!(
                "SELECT count(*) FROM invoices WHERE number = '{}'",
                ch.reused_number
            )),
            "1"
        );
        assert_eq!(
            db.one(&format!(
                "SELECT designation FROM invoice_lines WHERE id = {}",
                ch.updated_line
            )),
            "Révision hélice"
        );
        // the deleted invoice is kept, stamped; its lines and payments are gone
        assert_ne!(
            db.one(&format!(
                "SELECT deleted_at FROM invoices WHERE id = {}",
                ch.deleted_invoice
            )),
            ""
        );
        assert_eq!(
            db.one("SELECT count(*) FROM invoices WHERE deleted_at IS NOT NULL"),
            "1"
        );
        assert_eq!(
            db.one(&format!(
                "SELECT count(*) FROM invoice_lines WHERE invoice_id = {}",
                ch.deleted_invoice
            )),
            "0"
        );
        assert_eq!(
            db.one(&format!(
                "SELECT count(*) FROM payments WHERE id = {}",
                ch.deleted_payment
            )),
            "0"
        );
        assert_eq!(
            db.one("SELECT count(*) FROM invoices"),
            (truth.invoices.written + 1).to_string()
        );
    }

    // nothing changed since: only the NULL-stamped rows are read again, and
    // a dry run leaves the watermark where it is
    let pg_state =
        targets[1].one("SELECT string_agg(watermark, ',' ORDER BY table_name) FROM _repaero_state");
    src.query("UPDATE paiements SET modifie_le = now() WHERE id = 9000001");
    let (code, report, err) = migrate(&src.url(), &targets[1].url(), &q, &["--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(table(&report, "payments")["read"], 1);
    assert_eq!(
        targets[1].one("SELECT string_agg(watermark, ',' ORDER BY table_name) FROM _repaero_state"),
        pg_state,
        "a dry run must not move the watermark"
    );
    let (code, report, err) = migrate(&src.url(), &targets[1].url(), &q, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(table(&report, "invoices")["read"], null_invoices);
    assert_eq!(table(&report, "invoices")["deleted"], 0);
    assert_eq!(table(&report, "payments")["read"], 1);
    assert_eq!(table(&report, "payments")["updated"], 1);
}

#[test]
fn a_row_the_target_refuses_is_quarantined_and_the_sync_goes_on() {
    let src = TempDb::new("refuse_src");
    generate(&src.url(), 1_000, SEED + 2).unwrap();
    let dst = TempDb::new("refuse_dst");
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let (code, _, err) = migrate(&src.url(), &dst.url(), &q, &[]);
    assert_eq!(code, 0, "{err}");
    // the target has since gained a rule the source does not know
    dst.query(
        "ALTER TABLE invoices ADD CONSTRAINT no_cancel CHECK (status <> 'annulée') NOT VALID",
    );
    let ids: Vec<i64> = src
        .query("SELECT id FROM factures WHERE client_id IS NOT NULL AND modifie_le IS NOT NULL AND statut = 'en attente' ORDER BY id LIMIT 2")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    src.query(&format!(
        "UPDATE factures SET statut = 'annulée', modifie_le = now() WHERE id = {};
         UPDATE factures SET statut = 'payée', modifie_le = now() WHERE id = {};",
        ids[0], ids[1]
    ));
    let (code, report, err) = migrate(&src.url(), &dst.url(), &q, &[]);
    assert_eq!(code, 0, "{err}");
    let inv = table(&report, "invoices");
    let refused: Vec<(&String, &Value)> = inv["reasons"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("target refused"))
        .collect();
    assert_eq!(refused.len(), 1, "{inv}");
    assert!(refused[0].0.contains("no_cancel"), "{inv}");
    assert_eq!(refused[0].1, 1);
    assert_eq!(
        dst.query(&format!(
            "SELECT status FROM invoices WHERE id = {}",
            ids[0]
        )),
        "en attente"
    );
    assert_eq!(
        dst.query(&format!(
            "SELECT status FROM invoices WHERE id = {}",
            ids[1]
        )),
        "payée"
    );
    assert_eq!(
        dst.query("SELECT count(*) FROM _rejects WHERE reason LIKE 'target refused%no_cancel%'"),
        "1"
    );
}

#[test]
fn source_errors_name_the_job_and_hide_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let target = format!("sqlite://{}", dir.path().join("t.db").display());
    let q = dir.path().join("q");
    // nothing listens there
    let (status, _, err) = migrate(
        "postgres://postgres@127.0.0.1:5439/billing",
        &target,
        &q,
        &[],
    );
    assert_eq!(status, 1, "{err}");
    assert!(err.contains("job billing, source `billing`"), "{err}");
    assert!(err.contains("Connection refused"), "{err}");
    // a role that does not exist, with a password from the environment
    let s = "sources.billing.url=postgres://intrus:${BILLING_PW}@127.0.0.1:5432/postgres";
    let t = format!("target.url={target}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_repaero"))
        .current_dir(root())
        .env("BILLING_PW", "s3cr3t-facturation")
        .args(["--set", s, "--set", &t, "migrate", "billing"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(err.contains("intrus:***@"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");
    assert!(err.contains("SQLSTATE 28000"), "{err}");
}
