//! Database connections and the SQL dialect: what every floor above that
//! talks to a database shares.
//!
//! A [`Conn`] is one connection to a target or a database source, whatever
//! the engine: statements with typed parameters, queries whose values come
//! back as text, transactions (read-only ones for validation), and a few
//! named queries ([`Conn::count_rows`], [`Conn::key_values`], …) that the
//! pipeline, validation, the stock service and the daemons ask for by name.
//! Engines: [`sqlite`] (the embedded default), [`postgres`], [`oracle`]
//! (cargo feature `oracle`). The SQL each one speaks is in [`dialect`].

pub mod dialect;
pub mod oracle;
pub mod pg_binary;
pub mod postgres;
pub mod sqlite;

use std::collections::HashSet;

pub use dialect::{ColumnDef, Dialect, ForeignKey, TableDef};

use crate::batch::Value;
use crate::error::{Error, Result};

/// A row read back: every value as text, NULL as `None`.
pub type Row = Vec<Option<String>>;

/// One connection to a database.
///
/// Parameters are written in the SQL with [`Dialect::param`] (`?1` in
/// SQLite, `$1::text::bigint` in PostgreSQL, `:1` in Oracle) and passed as
/// [`Value`]s; values come back as text in the form the database writes
/// them (`2026-11-30`, `12.50`, `t`).
pub trait Conn: Send {
    fn dialect(&self) -> Dialect;
    /// The database, password redacted (for messages).
    fn describe(&self) -> String;
    /// Statements without parameters or results (DDL, several at once).
    fn batch(&mut self, sql: &str) -> Result<()>;
    /// One statement with parameters; the rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;
    /// One query with parameters; its rows, every value as text.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;
    /// One query without parameters, the first column's non-NULL values
    /// handed to `f` one at a time as text, never held as rows: for sets
    /// too large to hold twice (a reference rule's keys: 800,000 of them
    /// held as rows took 84 MB of PostgreSQL messages beside the set).
    fn for_each_text(&mut self, sql: &str, f: &mut dyn FnMut(&str)) -> Result<()> {
        for row in self.query(sql, &[])? {
            if let Some(Some(v)) = row.into_iter().next() {
                f(&v);
            }
        }
        Ok(())
    }
    /// The columns of `table`, as the database names them; empty when the
    /// table does not exist.
    fn columns(&mut self, table: &str) -> Result<Vec<String>>;
    /// What the catalog says of `table.column` (as [`Conn::columns`]
    /// names it), for the query of its distinct values; nothing when the
    /// connection cannot tell.
    fn column_facts(&mut self, _table: &str, _column: &str) -> Result<ColumnFacts> {
        Ok(ColumnFacts::default())
    }
    /// Start a unit of work (SQLite takes the write lock at once).
    fn begin(&mut self) -> Result<()>;
    /// Make what follows read-only: a statement that would write fails
    /// (validation and rowdiff run trusted, but never writing, SQL).
    fn begin_read_only(&mut self) -> Result<()>;
    fn commit(&mut self) -> Result<()>;
    /// Undo the unit of work; nothing to undo is not an error.
    fn rollback(&mut self) -> Result<()>;
    /// The connection is lost (the server went away): open another.
    fn is_closed(&self) -> bool {
        false
    }
}

/// What a catalog says of a column.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ColumnFacts {
    /// It holds integers of some width: equal integers have one text, so
    /// their distinct values may be found before the cast to text.
    pub integer: bool,
    /// A unique index covers it alone: its values are distinct already
    /// (and so are their texts: unequal values never print alike).
    pub unique: bool,
}

/// The named queries: what the floors above ask a database for.
impl dyn Conn + '_ {
    /// Whether `table` exists.
    pub fn table_exists(&mut self, table: &str) -> Result<bool> {
        Ok(!self.columns(table)?.is_empty())
    }

    /// Rows of `table`, or `None` when it does not exist.
    pub fn count_rows(&mut self, table: &str) -> Result<Option<u64>> {
        if !self.table_exists(table)? {
            return Ok(None);
        }
        let d = self.dialect();
        let rows = self.query(&format!("SELECT count(*) FROM {}", d.quote(table)), &[])?;
        let n = rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| Error::runtime(format!("{}: count of {table}", self.describe())))?;
        Ok(Some(n))
    }

    /// About how many rows `table` holds, or `None` when it does not
    /// exist: on PostgreSQL its statistics' rows per page times its pages
    /// now (what the planner estimates; 1 ms, where counting 1M rows takes
    /// 70–120 ms), else, or when it was never analysed, a count.
    pub fn estimated_rows(&mut self, table: &str) -> Result<Option<u64>> {
        let d = self.dialect();
        if d == Dialect::Postgres {
            // (no row for a table that does not exist: the count says so)
            let estimate = self.query_one(
                &format!(
                    "SELECT (c.reltuples / c.relpages * (pg_relation_size(c.oid) / current_setting('block_size')::int))::bigint \
                     FROM pg_catalog.pg_class c WHERE c.oid = to_regclass({}) AND c.relpages > 0 AND c.reltuples >= 0",
                    d.param(1, crate::config::mapping::ColumnType::Text)
                ),
                &[Value::Text(d.quote(table))],
            )?;
            if let Some(n) = estimate.and_then(|v| v.parse::<u64>().ok()) {
                return Ok(Some(n));
            }
        }
        self.count_rows(table)
    }

    /// Distinct non-NULL values of `table.column`, as a set of hashes
    /// (reference rules).
    pub fn key_values(&mut self, table: &str, column: &str) -> Result<crate::batch::KeySet> {
        let sql = self.distinct_sql(table, column)?;
        let mut hashes = Vec::new();
        self.for_each_text(&sql, &mut |v| {
            hashes.push(crate::batch::hash128(v.as_bytes()));
        })?;
        Ok(crate::batch::KeySet::from_hashes(hashes))
    }

    /// Distinct non-NULL values of `table.column` as text.
    pub fn key_texts(&mut self, table: &str, column: &str) -> Result<HashSet<String>> {
        let sql = self.distinct_sql(table, column)?;
        let mut set = HashSet::new();
        self.for_each_text(&sql, &mut |v| {
            set.insert(v.to_string());
        })?;
        Ok(set)
    }

    /// The query of the distinct non-NULL values of `table.column`, as text.
    fn distinct_sql(&mut self, table: &str, column: &str) -> Result<String> {
        let d = self.dialect();
        let wanted = d.column_name(column);
        let Some(name) = self
            .columns(table)?
            .into_iter()
            .find(|c| c.eq_ignore_ascii_case(&wanted))
        else {
            return Err(Error::config(format!(
                "{}: reference to {table}.{column}: no such table or column in the target; write {table} earlier in the job",
                self.describe()
            )));
        };
        let c = d.quote(column);
        let (text, rows) = (
            d.as_text(&c),
            format!("FROM {} WHERE {c} IS NOT NULL", d.quote(table)),
        );
        let facts = self.column_facts(table, &name)?;
        Ok(if facts.unique {
            // a key: no DISTINCT (the 200,000 parts' references in 0.46 s
            // with it, under load)
            format!("SELECT {text} {rows}")
        } else if facts.integer {
            // the integers made distinct, then cast: 250,000 keys in 0.10 s
            // against 0.22–0.29 s for the distinct texts (PostgreSQL)
            format!("SELECT {text} FROM (SELECT DISTINCT {c} {rows}) s")
        } else {
            format!("SELECT DISTINCT {text} {rows}")
        })
    }

    /// Every row of `table`, these columns only, as text.
    pub fn select_text(&mut self, table: &str, columns: &[String]) -> Result<Vec<Row>> {
        let d = self.dialect();
        // as stored: SQLite's integers stay `12`, not CAST's `12.0`; Oracle
        // hands every type over as text only through TO_CHAR
        let cols: Vec<String> = columns
            .iter()
            .map(|c| match d {
                Dialect::Oracle => d.as_text(&d.quote(c)),
                _ => d.quote(c),
            })
            .collect();
        self.query(
            &format!("SELECT {} FROM {}", cols.join(", "), d.quote(table)),
            &[],
        )
    }

    /// Hold `table` against concurrent writers until the unit of work ends
    /// (PostgreSQL; SQLite's `BEGIN IMMEDIATE` already serialises writers).
    /// Nothing to lock when the table does not exist yet.
    pub fn lock_table(&mut self, table: &str) -> Result<()> {
        if self.dialect() == Dialect::Postgres && self.table_exists(table)? {
            self.batch(&format!(
                "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
                Dialect::Postgres.quote(table)
            ))?;
        }
        Ok(())
    }

    /// The single value of a query (first column of the first row).
    pub fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Option<String>> {
        Ok(self
            .query(sql, params)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten()))
    }
}

/// Open a connection to a target URL: `sqlite://path`, `postgres://…` (or
/// a libpq `key=value` string), `oracle://…`. A dry run against a SQLite
/// file that does not exist works in memory and leaves no file.
pub fn open(url: &str, dry_run: bool) -> Result<Box<dyn Conn>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Box::new(sqlite::SqliteConn::open(path, dry_run)?));
    }
    if postgres::is_postgres(url) {
        return Ok(Box::new(postgres::PgConn::connect(url)?));
    }
    if url.starts_with("oracle://") {
        #[cfg(feature = "oracle")]
        return Ok(Box::new(oracle::OracleConn::connect(url)?));
        #[cfg(not(feature = "oracle"))]
        return Err(oracle::not_built(url));
    }
    Err(unsupported(url))
}

/// The error for a target URL of no known engine.
pub fn unsupported(url: &str) -> Error {
    Error::config(format!(
        "target.url {:?} is not supported; use sqlite://path/to/file.db, postgres://user@host/db (or host=… dbname=…) or oracle://user@host:1521/service",
        crate::config::redact_url(url)
    ))
}
