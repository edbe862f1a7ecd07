//! Sinks: where rows go.
//!
//! A sink prepares a target table for a write mode, writes typed batches
//! inside one unit of work (one transaction per job), and commits or rolls
//! back; `--dry-run` always rolls back. A row the database refuses is
//! returned to the caller with the database's reason, never dropped.

pub mod ledger;
pub mod oracle;
pub mod postgres;
pub mod sqlite;

use polars::prelude::DataFrame;

use crate::batch::{MergeOp, Reject};
use crate::config::mapping::{Merge, WriteMode};
use crate::db::{ColumnDef, Conn, Dialect, TableDef};
use crate::error::{Error, Result};

/// Where each of `columns` is among a batch's column `names`.
pub fn column_order(columns: &[ColumnDef], names: &[String], table: &str) -> Result<Vec<usize>> {
    columns
        .iter()
        .map(|c| {
            names.iter().position(|n| *n == c.name).ok_or_else(|| {
                Error::runtime(format!(
                    "column {} missing from the batch for {table}",
                    c.name
                ))
            })
        })
        .collect()
}

/// Name of the temporary table holding the source's keys.
pub const KEYS_TABLE: &str = "_repaero_keys";

/// The statement that deletes (or, with a soft-delete column, stamps with
/// `now`) the rows of `def` whose key is not in `keys`.
pub fn delete_missing_sql(d: Dialect, def: &TableDef, keys: &str, now: &str) -> String {
    let q = |s: &str| d.quote(s);
    let t = q(&def.name);
    let join: Vec<String> = def
        .key
        .iter()
        .map(|k| format!("k.{0} = {t}.{0}", q(k)))
        .collect();
    let missing = format!(
        "NOT EXISTS (SELECT 1 FROM {} AS k WHERE {})",
        q(keys),
        join.join(" AND ")
    );
    match &def.soft_delete {
        None => format!("DELETE FROM {t} WHERE {missing}"),
        Some(col) => format!(
            "UPDATE {t} SET {0} = '{now}' WHERE {0} IS NULL AND {missing}",
            q(col)
        ),
    }
}

/// `UPDATE` applying one merge to the row with its key. Parameters are
/// numbered in the order of `op.sets` then `op.key`; for PostgreSQL each is
/// sent as text and cast to its column's type.
pub fn merge_sql(d: Dialect, table: &str, def: &TableDef, op: &MergeOp) -> String {
    let mut n = 0;
    let mut param = |col: &str| {
        n += 1;
        match d {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Oracle => format!(":{n}"),
            Dialect::Postgres => {
                let ty = def
                    .columns
                    .iter()
                    .find(|c| c.name == col)
                    .map(|c| d.type_sql(c))
                    .unwrap_or_else(|| "text".into());
                format!("${n}::text::{ty}")
            }
        }
    };
    let sets: Vec<String> = op
        .sets
        .iter()
        .map(|(col, how, _)| {
            let c = d.quote(col);
            let p = param(col);
            match how {
                Merge::First => format!("{c} = COALESCE({c}, {p})"),
                Merge::Last => format!("{c} = {p}"),
                Merge::Sum => format!("{c} = COALESCE({c}, 0) + {p}"),
                Merge::Max => {
                    format!("{c} = CASE WHEN {c} IS NULL OR {c} < {p} THEN {p} ELSE {c} END")
                }
                Merge::Min => {
                    format!("{c} = CASE WHEN {c} IS NULL OR {c} > {p} THEN {p} ELSE {c} END")
                }
            }
        })
        .collect();
    let wheres: Vec<String> = op
        .key
        .iter()
        .map(|(col, _)| format!("{} = {}", d.quote(col), param(col)))
        .collect();
    format!(
        "UPDATE {} SET {} WHERE {}",
        d.quote(table),
        sets.join(", "),
        wheres.join(" AND ")
    )
}

/// Name of the table a `replace` load goes into before the swap.
pub fn staging_name(table: &str) -> String {
    format!("{table}__repaero_new")
}

/// What writing did, for the rows whose fate is known.
#[derive(Debug, Default)]
pub struct WriteOutcome {
    pub written: u64,
    /// Rows the database refused, with its reason.
    pub refused: Vec<Reject>,
}

/// Rejects for rows of `batch` (by index) the target refused, with the
/// database's message.
pub fn refused_rejects(batch: &DataFrame, refused: &[(usize, String)]) -> Result<Vec<Reject>> {
    let mut batch = batch.clone();
    batch.rechunk_mut();
    let (names, cols) = crate::batch::cursors(&batch)?;
    let rows = crate::batch::row_numbers(&batch);
    Ok(refused
        .iter()
        .map(|(i, msg)| Reject {
            row: rows.get(*i).copied().unwrap_or(0),
            // PostgreSQL puts values in the detail, SQLite the column list
            // in the message: the first part is stable for one constraint
            reason: format!(
                "target refused: {}",
                msg.split(';').next().unwrap_or(msg).trim()
            ),
            detail: format!("the target refused the row: {msg}"),
            record: names
                .iter()
                .zip(&cols)
                .map(|(n, c)| (n.clone(), c.get(*i).to_text()))
                .collect(),
        })
        .collect())
}

/// Columns that `upsert` sets from the incoming row, then the soft-delete
/// column cleared: `(column, expression)` pairs, `excluded` being the
/// incoming row.
pub fn upsert_sets(d: Dialect, def: &TableDef, excluded: &str) -> Vec<String> {
    def.columns
        .iter()
        .filter(|c| !def.key.contains(&c.name))
        .map(|c| format!("{0} = {excluded}.{0}", d.quote(&c.name)))
        .chain(
            def.soft_delete
                .iter()
                .map(|c| format!("{} = NULL", d.quote(c))),
        )
        .collect()
}

/// A target database's table writer: it prepares a table for a write
/// mode, writes typed batches inside one unit of work (one transaction per
/// job), and commits or rolls back. Everything else goes through its
/// connection ([`Sink::conn`]): repaero's bookkeeping ([`ledger`]) and the
/// named queries of [`Conn`].
pub trait Sink {
    /// The target, password redacted.
    fn describe(&self) -> String;
    fn dialect(&self) -> Dialect;
    /// The connection, once the writes under way are done.
    fn conn(&mut self) -> Result<&mut dyn Conn>;
    /// Start the unit of work and make sure repaero's own tables exist.
    fn begin(&mut self) -> Result<()>;
    /// Prepare `def` for writing in `mode`.
    fn start_table(&mut self, def: &TableDef, mode: WriteMode) -> Result<()>;
    /// Write a typed batch into the table being written. The outcome may
    /// cover earlier batches and leave this one's for later: every row is
    /// reported once, by a `write` or by [`Sink::flush`].
    fn write(&mut self, batch: &DataFrame) -> Result<WriteOutcome>;
    /// Wait for the rows written so far and report those not reported yet.
    fn flush(&mut self) -> Result<WriteOutcome> {
        Ok(WriteOutcome::default())
    }
    /// Fold duplicates into rows already written to the current table;
    /// returns the positions in `ops` of merges whose row is not there
    /// (its first row was refused).
    fn merge(&mut self, ops: &[MergeOp]) -> Result<Vec<usize>>;
    /// Finish the table (swap for `replace`, merge for `upsert`).
    fn finish_table(&mut self) -> Result<()>;
    /// Delete (or stamp, with `def.soft_delete`) the rows of `def` whose
    /// key is not among `keys` (batches of key columns, typed); returns how
    /// many. `now` is the stamp, `YYYY-MM-DD HH:MM:SS` UTC.
    fn delete_missing(
        &mut self,
        def: &TableDef,
        keys: &mut dyn Iterator<Item = Result<DataFrame>>,
        now: &str,
    ) -> Result<u64>;
    /// Check referential integrity before the commit: the job fails, and
    /// nothing is committed, when a foreign key does not hold.
    fn check_integrity(&mut self) -> Result<()>;
    /// Tables this sink creates from now on may get their primary key
    /// after their rows are in (PostgreSQL: one index build instead of an
    /// index insert per row). Only for a writer that does not look rows up
    /// by the key while loading, and that runs a table again when
    /// [`Sink::load_again`] asks: the migration pipeline.
    fn keys_after_load(&mut self) {}
    /// After a table's write failed: `Some(why)` when the sink undid that
    /// table's load and it is to be run again (a primary key added after
    /// a PostgreSQL load found the rows repeating it: the next load checks
    /// the key row by row). Taken once.
    fn load_again(&mut self) -> Option<String> {
        None
    }
    fn commit(&mut self) -> Result<()>;
    fn rollback(&mut self) -> Result<()>;
}

/// Open the sink a target URL names.
pub fn open(url: &str, dry_run: bool) -> Result<Box<dyn Sink>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Box::new(sqlite::SqliteSink::open(path, dry_run)?));
    }
    if crate::db::postgres::is_postgres(url) {
        return Ok(Box::new(postgres::PgSink::connect(url)?));
    }
    if url.starts_with("oracle://") {
        #[cfg(feature = "oracle")]
        return Ok(Box::new(oracle::OracleSink::new(
            crate::db::oracle::OracleConn::connect(url)?,
        )));
        #[cfg(not(feature = "oracle"))]
        return Err(crate::db::oracle::not_built(url));
    }
    Err(crate::db::unsupported(url))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::mapping::ColumnType;

    fn def() -> TableDef {
        crate::db::dialect::tests::parts()
    }

    #[test]
    fn merge_statements_per_dialect() {
        use crate::batch::Value;
        let mut d = def();
        d.columns.push(ColumnDef {
            name: "quantity".into(),
            ty: ColumnType::Integer,
            precision: 18,
            scale: 2,
            not_null: false,
            length: None,
        });
        let op = MergeOp {
            key: vec![("reference".into(), Value::Text("HYD-2040".into()))],
            sets: vec![
                ("quantity".into(), Merge::Sum, Value::Int(2)),
                ("last_receipt_date".into(), Merge::Max, Value::Date(20_000)),
                ("unit_price".into(), Merge::First, Value::Float(1.5)),
            ],
            row: 29,
            kept_row: 16,
            record: vec![],
        };
        assert_eq!(
            merge_sql(Dialect::Sqlite, "parts__repaero_new", &d, &op),
            "UPDATE \"parts__repaero_new\" SET \"quantity\" = COALESCE(\"quantity\", 0) + ?1, \"last_receipt_date\" = CASE WHEN \"last_receipt_date\" IS NULL OR \"last_receipt_date\" < ?2 THEN ?2 ELSE \"last_receipt_date\" END, \"unit_price\" = COALESCE(\"unit_price\", ?3) WHERE \"reference\" = ?4"
        );
        assert_eq!(
            merge_sql(Dialect::Postgres, "parts", &d, &op),
            "UPDATE \"parts\" SET \"quantity\" = COALESCE(\"quantity\", 0) + $1::text::bigint, \"last_receipt_date\" = CASE WHEN \"last_receipt_date\" IS NULL OR \"last_receipt_date\" < $2::text::date THEN $2::text::date ELSE \"last_receipt_date\" END, \"unit_price\" = COALESCE(\"unit_price\", $3::text::numeric(12,2)) WHERE \"reference\" = $4::text::text"
        );
    }
}
