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
//!   `_repaero_roll_paid_months (month, days, n)` their sum per month;
//! - `_repaero_roll_invoices (status, due_on, n, total, totals)` and
//!   `_repaero_roll_methods (method, n, amount, amounts)`: the billing
//!   page's invoices per state (late depends on the day: kept per due
//!   date) and payments per method, 60–100 ms each at 250k invoices.
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
//! rebuilds the stale or missing ones when it starts and before the KPI
//! and billing pages read them. SQLite and Oracle targets have no summaries: the direct
//! queries run there.

use crate::db::{Conn, Dialect};
use crate::error::Result;

pub const REGISTRY: &str = "_repaero_rollups";
pub const MOVES: &str = "_repaero_roll_moves";
pub const PAID: &str = "_repaero_roll_paid";
pub const PAID_MONTHS: &str = "_repaero_roll_paid_months";
pub const INVOICES: &str = "_repaero_roll_invoices";
pub const METHODS: &str = "_repaero_roll_methods";

/// A summary and the tables it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollup {
    /// Stock-outs per month.
    Moves,
    /// Days from invoice to last payment per month.
    Paid,
    /// Invoices (not soft-deleted) per status and due date: the billing
    /// page's paid / pending / late / cancelled on any day.
    Invoices,
    /// Payments per method.
    Methods,
}

impl Rollup {
    pub const ALL: [Rollup; 4] = [
        Rollup::Moves,
        Rollup::Paid,
        Rollup::Invoices,
        Rollup::Methods,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rollup::Moves => "moves",
            Rollup::Paid => "paid",
            Rollup::Invoices => "invoices",
            Rollup::Methods => "methods",
        }
    }

    /// The tables whose changes it follows.
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            Rollup::Moves => &["stock_movements"],
            Rollup::Paid => &["invoices", "payments"],
            Rollup::Invoices => &["invoices"],
            Rollup::Methods => &["payments"],
        }
    }

    /// The summary's rows as its direct query gives them: `(month, a, b)`
    /// for the KPIs, (stock-outs, movements out) and (sum of days,
    /// invoices); `(status, due_on, invoices, total incl. tax)` (NULLs
    /// back) for the invoices; `(method, payments, amount)` for the
    /// payments.
    pub fn read_sql(self) -> String {
        match self {
            Rollup::Moves => format!("SELECT month, zeros, outs FROM {MOVES} WHERE outs > 0"),
            Rollup::Paid => format!("SELECT month, days, n FROM {PAID_MONTHS} WHERE n > 0"),
            Rollup::Invoices => format!(
                "SELECT NULLIF(status, '') AS status, NULLIF(due_on, 'infinity') AS due_on, n, \
                 CASE WHEN totals > 0 THEN total END AS total_incl_tax FROM {INVOICES} WHERE n > 0"
            ),
            Rollup::Methods => format!(
                "SELECT NULLIF(method, ''), n, (CASE WHEN amounts > 0 THEN amount END)::text FROM {METHODS} WHERE n > 0 ORDER BY method"
            ),
        }
    }
}

/// The definitions' version: a summary built by another one is rebuilt.
const VERSION: &str = "v2";

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

/// A summary that adds up: rows of `source` passing `filter`, grouped
/// by `keys` (name, type, expression; never NULL), the `measures` (name,
/// type, aggregate; never NULL) summed.
struct Additive {
    summary: &'static str,
    source: &'static str,
    keys: Vec<(&'static str, &'static str, String)>,
    filter: String,
    measures: Vec<(&'static str, &'static str, String)>,
}

impl Additive {
    /// The rows of `from` added (`sign` 1) or taken away (-1).
    fn apply(&self, from: &str, sign: i32) -> String {
        let names: Vec<&str> = self
            .keys
            .iter()
            .map(|k| k.0)
            .chain(self.measures.iter().map(|m| m.0))
            .collect();
        let keys: Vec<&str> = self.keys.iter().map(|k| k.0).collect();
        let exprs: Vec<String> = self.keys.iter().map(|k| k.2.clone()).collect();
        let aggs: Vec<String> = self
            .measures
            .iter()
            .map(|m| format!("{sign} * {}", m.2))
            .collect();
        let sets: Vec<String> = self
            .measures
            .iter()
            .map(|m| format!("{0} = r.{0} + excluded.{0}", m.0))
            .collect();
        let groups: Vec<String> = (1..=keys.len()).map(|i| i.to_string()).collect();
        format!(
            "INSERT INTO {} AS r ({}) SELECT {}, {} FROM {from} WHERE {} GROUP BY {} \
             ON CONFLICT ({}) DO UPDATE SET {};",
            self.summary,
            names.join(", "),
            exprs.join(", "),
            aggs.join(", "),
            self.filter,
            groups.join(", "),
            keys.join(", "),
            sets.join(", ")
        )
    }

    fn sql(&self) -> String {
        let cols: Vec<String> = self
            .keys
            .iter()
            .chain(self.measures.iter())
            .map(|c| format!("{} {} NOT NULL", c.0, c.1))
            .collect();
        let keys: Vec<&str> = self.keys.iter().map(|k| k.0).collect();
        let body = format!(
            "IF TG_OP = 'TRUNCATE' THEN DELETE FROM {}; RETURN NULL; END IF;\n\
             IF TG_OP IN ('UPDATE', 'DELETE') THEN {} END IF;\n\
             IF TG_OP IN ('UPDATE', 'INSERT') THEN {} END IF;",
            self.summary,
            self.apply("old_rows", -1),
            self.apply("new_rows", 1)
        );
        format!(
            "DROP TABLE IF EXISTS {s};\n\
             CREATE TABLE {s} ({}, PRIMARY KEY ({}));\n\
             {}\
             LOCK TABLE {src} IN SHARE ROW EXCLUSIVE MODE;\n{}\n",
            cols.join(", "),
            keys.join(", "),
            triggers(self.summary, self.source, &body),
            self.apply(self.source, 1),
            s = self.summary,
            src = self.source,
        )
    }
}

fn moves() -> Additive {
    Additive {
        summary: MOVES,
        source: "stock_movements",
        keys: vec![("month", "text", "substr(scanned_at::text, 1, 7)".into())],
        filter: "direction = 'OUT'".into(),
        measures: vec![
            ("outs", "bigint", "count(*)".into()),
            (
                "zeros",
                "bigint",
                "count(*) FILTER (WHERE stock_after = 0)".into(),
            ),
        ],
    }
}

/// Invoices per status and due date (NULLs as '' and 'infinity', which
/// the billing page's states treat as it treats NULL).
fn invoices(deleted: &str) -> Additive {
    Additive {
        summary: INVOICES,
        source: "invoices",
        keys: vec![
            ("status", "text", "coalesce(status, '')".into()),
            ("due_on", "date", "coalesce(due_on, 'infinity')".into()),
        ],
        filter: if deleted.is_empty() {
            "true".into()
        } else {
            deleted.into()
        },
        measures: vec![
            ("n", "bigint", "count(*)".into()),
            (
                "total",
                "numeric",
                "coalesce(sum(total_incl_tax), 0)".into(),
            ),
            ("totals", "bigint", "count(total_incl_tax)".into()),
        ],
    }
}

fn methods() -> Additive {
    Additive {
        summary: METHODS,
        source: "payments",
        keys: vec![("method", "text", "coalesce(method, '')".into())],
        filter: "true".into(),
        measures: vec![
            ("n", "bigint", "count(*)".into()),
            ("amount", "numeric", "coalesce(sum(amount), 0)".into()),
            ("amounts", "bigint", "count(amount)".into()),
        ],
    }
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
            Ok(need.iter().all(|c| has(&cols, c)).then(|| moves().sql()))
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
        Rollup::Invoices => {
            let inv = conn.columns("invoices")?;
            let ok = ["status", "due_on", "total_incl_tax"]
                .iter()
                .all(|c| has(&inv, c));
            let deleted = if has(&inv, "deleted_at") {
                "deleted_at IS NULL"
            } else {
                ""
            };
            Ok(ok.then(|| invoices(deleted).sql()))
        }
        Rollup::Methods => {
            let pay = conn.columns("payments")?;
            let ok = ["method", "amount"].iter().all(|c| has(&pay, c));
            Ok(ok.then(|| methods().sql()))
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
