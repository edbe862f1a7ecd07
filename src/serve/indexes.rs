//! What the dashboard's pages need from the target to answer fast at real
//! volumes, made sure of when `repaero serve` starts: the indexes of its
//! bounded lists (`CREATE INDEX IF NOT EXISTS`, on the tables and columns
//! that exist) and, on PostgreSQL, the KPI summaries of [`crate::rollup`].
//!
//! Here rather than where each table is created: most of these tables are
//! written by the generic migration sink from a mapping, and a migration
//! in `replace` mode swaps in a new table without them; the dashboard is
//! what needs them, so it (re)creates them.

use crate::db::{Conn, Dialect};
use crate::error::Result;

/// An index: name, table, columns, and a partial-index condition.
pub struct Index {
    pub name: &'static str,
    pub table: &'static str,
    pub columns: &'static [&'static str],
    pub only: Option<(&'static str, &'static str)>,
}

const fn ix(name: &'static str, table: &'static str, columns: &'static [&'static str]) -> Index {
    Index {
        name,
        table,
        columns,
        only: None,
    }
}

/// The indexes, each with the page query it serves.
pub const INDEXES: &[Index] = &[
    // a part's movements: WHERE reference = ? ORDER BY scanned_at DESC, line_id DESC LIMIT 500
    ix(
        "repaero_movements_part",
        "stock_movements",
        &["reference", "scanned_at", "line_id"],
    ),
    // the last payments: ORDER BY paid_on DESC, id DESC LIMIT 50
    ix("repaero_payments_paid_on", "payments", &["paid_on", "id"]),
    // an invoice's payments (the KPI summary's refresh, the bank feed)
    ix("repaero_payments_invoice", "payments", &["invoice_id"]),
    // the late invoices: … AND due_on < today ORDER BY due_on LIMIT 50
    ix("repaero_invoices_due_on", "invoices", &["due_on"]),
    // the open alerts: WHERE cleared_at IS NULL ORDER BY raised_at DESC LIMIT 200
    Index {
        name: "repaero_alerts_open",
        table: "stock_alerts",
        columns: &["raised_at"],
        only: Some(("cleared_at", "cleared_at IS NULL")),
    },
    // a run's rejected rows: WHERE run_id = ? AND job = ?
    ix("repaero_rejects_run", "_rejects", &["run_id", "job"]),
    // the last runs: ORDER BY started_at DESC LIMIT 50
    ix("repaero_runs_started", "_repaero_runs", &["started_at"]),
    // the latest orders: ORDER BY placed_at DESC LIMIT 100
    ix("repaero_orders_placed", "supplier_orders", &["placed_at"]),
    // the latest completed interventions: ORDER BY performed_at DESC LIMIT 50
    ix(
        "repaero_interventions_performed",
        "interventions",
        &["performed_at"],
    ),
];

/// Create the missing indexes (SQLite, PostgreSQL; Oracle targets are left
/// to their DBA) and, on PostgreSQL, build the stale KPI summaries. The
/// indexes created.
pub fn prepare(conn: &mut dyn Conn) -> Result<Vec<&'static str>> {
    let d = conn.dialect();
    let mut created = Vec::new();
    if d == Dialect::Oracle {
        return Ok(created);
    }
    for ix in INDEXES {
        let cols = conn.columns(ix.table)?;
        let has = |c: &str| cols.iter().any(|x| x.eq_ignore_ascii_case(c));
        if cols.is_empty()
            || !ix.columns.iter().all(|c| has(c))
            || ix.only.is_some_and(|(c, _)| !has(c))
        {
            continue;
        }
        let exists = match d {
            Dialect::Postgres => conn.query(
                &format!(
                    "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = '{}'",
                    ix.name
                ),
                &[],
            )?,
            _ => conn.query(
                &format!(
                    "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = '{}'",
                    ix.name
                ),
                &[],
            )?,
        };
        if !exists.is_empty() {
            continue;
        }
        let cols: Vec<String> = ix.columns.iter().map(|c| d.quote(c)).collect();
        let only = ix
            .only
            .map(|(_, w)| format!(" WHERE {w}"))
            .unwrap_or_default();
        conn.batch(&format!(
            "CREATE INDEX IF NOT EXISTS {} ON {} ({}){only}",
            d.quote(ix.name),
            d.quote(ix.table),
            cols.join(", ")
        ))?;
        created.push(ix.name);
    }
    for r in crate::rollup::ensure(conn)? {
        tracing::info!("dashboard: KPI summary {} built", r.name());
    }
    Ok(created)
}
