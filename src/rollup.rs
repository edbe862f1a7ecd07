//! Monthly aggregates kept up to date by the database (PostgreSQL), so
//! that the KPIs read a few dozen rows instead of a million.
//!
//! Two of the plan's indicators scan whole tables: the stock-outs every
//! movement out (`stock_movements`), the days from invoice to payment every
//! paid invoice joined to its payments. At a million movements and a
//! quarter of a million invoices each takes 200–300 ms on the workshop's
//! machine, too slow for a page. On PostgreSQL, `repaero serve` therefore
//! keeps them in summary tables:
//!
//! - `_repaero_roll_moves (month, outs, zeros)`: movements out and those
//!   that left a part at 0, per month of `scanned_at`;
//! - `_repaero_roll_paid (invoice_id, month, days)`: each paid invoice's
//!   days from issue to its last payment, and
//!   `_repaero_roll_paid_months (month, days, n)` their sum per month.
//!
//! Statement-level triggers (with transition tables) on the source tables
//! apply every INSERT, UPDATE, DELETE and TRUNCATE to them, whoever writes
//! (a migration's COPY and upsert, a scan import, the bank feed, SQL by
//! hand). The definitions are those of [`crate::kpi`]'s direct queries,
//! which the tests check them against.
//!
//! `_repaero_rollups` records each summary with the identity (OID) of the
//! tables it was built from: a migration in `replace` mode swaps a new
//! table in (without the triggers), so a summary whose tables changed is
//! stale. Readers use a summary only when it is fresh; `repaero serve`
//! rebuilds the stale or missing ones when it starts and before computing
//! the KPIs. SQLite and Oracle targets have no summaries: the direct
//! queries run there.

use crate::db::{Conn, Dialect};
use crate::error::Result;

pub const REGISTRY: &str = "_repaero_rollups";
pub const MOVES: &str = "_repaero_roll_moves";
pub const PAID: &str = "_repaero_roll_paid";
pub const PAID_MONTHS: &str = "_repaero_roll_paid_months";

/// A summary and the tables it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollup {
    /// Stock-outs per month.
    Moves,
    /// Days from invoice to last payment per month.
    Paid,
}

impl Rollup {
    pub const ALL: [Rollup; 2] = [Rollup::Moves, Rollup::Paid];

    pub fn name(self) -> &'static str {
        match self {
            Rollup::Moves => "moves",
            Rollup::Paid => "paid",
        }
    }

    /// The tables whose changes it follows.
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            Rollup::Moves => &["stock_movements"],
            Rollup::Paid => &["invoices", "payments"],
        }
    }

    /// `(month, a, b)` per month, as the direct query of the KPI gives
    /// them: (stock-outs, movements out), (sum of days, invoices).
    pub fn read_sql(self) -> String {
        match self {
            Rollup::Moves => format!("SELECT month, zeros, outs FROM {MOVES} WHERE outs > 0"),
            Rollup::Paid => format!("SELECT month, days, n FROM {PAID_MONTHS} WHERE n > 0"),
        }
    }
}

/// The definitions' version: a summary built by another one is rebuilt.
const VERSION: &str = "v1";

/// The version and the OIDs of the tables, in order (`-` for a missing
/// one): what a fresh summary was built from.
fn oids_sql(tables: &[&str]) -> String {
    let parts: Vec<String> = tables
        .iter()
        .map(|t| format!("coalesce(to_regclass('{t}')::oid::text, '-')"))
        .collect();
    format!("concat_ws(',', '{VERSION}', {})", parts.join(", "))
}

/// Whether the summary exists and was built from the tables as they are.
pub fn fresh(conn: &mut dyn Conn, r: Rollup) -> Result<bool> {
    if conn.dialect() != Dialect::Postgres || !conn.table_exists(REGISTRY)? {
        return Ok(false);
    }
    let rows = conn.query(
        &format!(
            "SELECT 1 FROM {REGISTRY} WHERE name = '{}' AND oids = {}",
            r.name(),
            oids_sql(r.tables())
        ),
        &[],
    )?;
    Ok(!rows.is_empty())
}

/// The summaries that are stale or missing (PostgreSQL; none elsewhere).
pub fn stale(conn: &mut dyn Conn) -> Result<Vec<Rollup>> {
    if conn.dialect() != Dialect::Postgres {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for r in Rollup::ALL {
        if !fresh(conn, r)? {
            out.push(r);
        }
    }
    Ok(out)
}

/// A trigger function on `table` and its four triggers: `body` runs with
/// `old_rows` (UPDATE, DELETE) and `new_rows` (INSERT, UPDATE) bound.
fn triggers(func: &str, table: &str, body: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS $repaero$\nBEGIN\n{body}\nRETURN NULL;\nEND $repaero$;\n\
         DROP TRIGGER IF EXISTS {func}_i ON {table};\n\
         DROP TRIGGER IF EXISTS {func}_u ON {table};\n\
         DROP TRIGGER IF EXISTS {func}_d ON {table};\n\
         DROP TRIGGER IF EXISTS {func}_t ON {table};\n\
         CREATE TRIGGER {func}_i AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {func}();\n\
         CREATE TRIGGER {func}_u AFTER UPDATE ON {table} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {func}();\n\
         CREATE TRIGGER {func}_d AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {func}();\n\
         CREATE TRIGGER {func}_t AFTER TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {func}();\n"
    )
}

/// Movements out per month, added (`sign` 1) or taken away (-1).
fn moves_apply(from: &str, sign: i32) -> String {
    format!(
        "INSERT INTO {MOVES} AS r (month, outs, zeros) \
         SELECT substr(scanned_at::text, 1, 7), {sign} * count(*), {sign} * count(*) FILTER (WHERE stock_after = 0) \
         FROM {from} WHERE direction = 'OUT' GROUP BY 1 \
         ON CONFLICT (month) DO UPDATE SET outs = r.outs + excluded.outs, zeros = r.zeros + excluded.zeros;"
    )
}

fn moves_sql() -> String {
    let body = format!(
        "IF TG_OP = 'TRUNCATE' THEN DELETE FROM {MOVES}; RETURN NULL; END IF;\n\
         IF TG_OP IN ('UPDATE', 'DELETE') THEN {} END IF;\n\
         IF TG_OP IN ('UPDATE', 'INSERT') THEN {} END IF;",
        moves_apply("old_rows", -1),
        moves_apply("new_rows", 1)
    );
    format!(
        "DROP TABLE IF EXISTS {MOVES};\n\
         CREATE TABLE {MOVES} (month text PRIMARY KEY, outs bigint NOT NULL, zeros bigint NOT NULL);\n\
         {}\
         LOCK TABLE stock_movements IN SHARE ROW EXCLUSIVE MODE;\n{}\n",
        triggers(MOVES, "stock_movements", &body),
        moves_apply("stock_movements", 1)
    )
}

/// The paid invoices' days, `deleted` the soft-delete filter on `i`.
fn paid_sql(deleted: &str) -> String {
    let contribution = |ids: &str| {
        format!(
            "SELECT i.id, substr(max(p.paid_on)::text, 1, 7), max(p.paid_on) - i.issued_on \
             FROM invoices i JOIN payments p ON p.invoice_id = i.id \
             WHERE i.status = 'payée'{deleted}{ids} GROUP BY i.id, i.issued_on"
        )
    };
    let add_months = |from: &str, sign: &str| {
        format!(
            "INSERT INTO {PAID_MONTHS} AS r (month, days, n) SELECT month, {sign}sum(days), {sign}count(*) FROM {from} GROUP BY month \
             ON CONFLICT (month) DO UPDATE SET days = r.days + excluded.days, n = r.n + excluded.n"
        )
    };
    // the affected invoices: their old part taken away, their new one added
    let refresh = format!(
        "CREATE OR REPLACE FUNCTION {PAID}_refresh(ids bigint[]) RETURNS void LANGUAGE sql AS $repaero$\n\
         WITH gone AS (DELETE FROM {PAID} WHERE invoice_id = ANY(ids) RETURNING month, days) {};\n\
         WITH added AS (INSERT INTO {PAID} (invoice_id, month, days) {} RETURNING month, days) {};\n\
         $repaero$;\n",
        add_months("gone", "-"),
        contribution(" AND i.id = ANY(ids)"),
        add_months("added", "")
    );
    let on = |col: &str| {
        format!(
            "IF TG_OP = 'TRUNCATE' THEN PERFORM {PAID}_refresh(ARRAY(SELECT invoice_id FROM {PAID})); RETURN NULL; END IF;\n\
             IF TG_OP = 'INSERT' THEN PERFORM {PAID}_refresh(ARRAY(SELECT DISTINCT {col} FROM new_rows));\n\
             ELSIF TG_OP = 'DELETE' THEN PERFORM {PAID}_refresh(ARRAY(SELECT DISTINCT {col} FROM old_rows));\n\
             ELSE PERFORM {PAID}_refresh(ARRAY(SELECT {col} FROM old_rows UNION SELECT {col} FROM new_rows)); END IF;"
        )
    };
    format!(
        "DROP TABLE IF EXISTS {PAID}, {PAID_MONTHS};\n\
         CREATE TABLE {PAID} (invoice_id bigint PRIMARY KEY, month text NOT NULL, days numeric NOT NULL);\n\
         CREATE TABLE {PAID_MONTHS} (month text PRIMARY KEY, days numeric NOT NULL, n bigint NOT NULL);\n\
         {refresh}{}{}\
         LOCK TABLE invoices, payments IN SHARE ROW EXCLUSIVE MODE;\n\
         INSERT INTO {PAID} (invoice_id, month, days) {};\n\
         INSERT INTO {PAID_MONTHS} (month, days, n) SELECT month, sum(days), count(*) FROM {PAID} GROUP BY month;\n",
        triggers(&format!("{PAID}_inv"), "invoices", &on("id")),
        triggers(&format!("{PAID}_pay"), "payments", &on("invoice_id")),
        contribution("")
    )
}

/// The SQL that (re)builds a summary, or `None` when its tables or
/// columns are missing.
fn build_sql(conn: &mut dyn Conn, r: Rollup) -> Result<Option<String>> {
    let has = |cols: &[String], c: &str| cols.iter().any(|x| x.eq_ignore_ascii_case(c));
    match r {
        Rollup::Moves => {
            let cols = conn.columns("stock_movements")?;
            let need = ["scanned_at", "direction", "stock_after"];
            Ok(need.iter().all(|c| has(&cols, c)).then(moves_sql))
        }
        Rollup::Paid => {
            let inv = conn.columns("invoices")?;
            let pay = conn.columns("payments")?;
            let ok = ["id", "status", "issued_on"].iter().all(|c| has(&inv, c))
                && ["invoice_id", "paid_on"].iter().all(|c| has(&pay, c));
            let deleted = if has(&inv, "deleted_at") {
                " AND i.deleted_at IS NULL"
            } else {
                ""
            };
            Ok(ok.then(|| paid_sql(deleted)))
        }
    }
}

/// Build the summaries that are stale or missing (PostgreSQL only), each
/// in its own transaction, the source tables locked against writers
/// while it is filled. The ones built.
pub fn ensure(conn: &mut dyn Conn) -> Result<Vec<Rollup>> {
    let mut built = Vec::new();
    for r in stale(conn)? {
        let Some(sql) = build_sql(conn, r)? else {
            continue;
        };
        conn.begin()?;
        let done =             conn.batch(&format!(
            "CREATE TABLE IF NOT EXISTS {REGISTRY} (name text PRIMARY KEY, tables text NOT NULL, oids text NOT NULL, built_at timestamptz NOT NULL);\n\
             {sql}\
             INSERT INTO {REGISTRY} (name, tables, oids, built_at) VALUES ('{name}', '{tables}', {oids}, now()) \
             ON CONFLICT (name) DO UPDATE SET tables = excluded.tables, oids = excluded.oids, built_at = excluded.built_at;",
            name = r.name(),
            tables = r.tables().join(","),
            oids = oids_sql(r.tables()),
        ));
        match done {
            Ok(()) => conn.commit()?,
            Err(e) => {
                let _ = conn.rollback();
                return Err(e.context(format!("summary {}", r.name())));
            }
        }
        built.push(r);
    }
    Ok(built)
}
