//! Sinks: where rows go.
//!
//! A sink prepares a target table for a write mode, writes typed batches
//! inside one unit of work (one transaction per job), and commits or rolls
//! back; `--dry-run` always rolls back. A row the database refuses is
//! returned to the caller with the database's reason, never dropped.

pub mod oracle;
pub mod postgres;
pub mod sqlite;

use std::collections::HashSet;

use polars::prelude::DataFrame;
use serde::Serialize;

use crate::batch::Reject;
use crate::batch::{MergeOp, MergeRecord};
use crate::config::mapping::{ColumnType, Mapping, Merge, WriteMode};
use crate::error::{Error, Result};

/// A target column.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnDef {
    pub name: String,
    pub ty: ColumnType,
    pub precision: u8,
    pub scale: u8,
    pub not_null: bool,
    /// Longest text, in characters (Oracle: VARCHAR2(n CHAR), or CLOB
    /// above 4000); `None`: VARCHAR2(4000 CHAR) on Oracle, unbounded elsewhere.
    pub length: Option<u32>,
}

impl ColumnDef {
    /// A column of a table repaero owns (no mapping): integers and
    /// decimals 18 digits, text unbounded.
    pub fn new(name: &str, ty: ColumnType, not_null: bool) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            ty,
            precision: 18,
            scale: 0,
            not_null,
            length: None,
        }
    }
}

/// A foreign key: `column` references `table.references`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ForeignKey {
    pub column: String,
    pub table: String,
    pub references: String,
}

/// A target table as the mapping declares it.
#[derive(Debug, Clone, Serialize)]
pub struct TableDef {
    pub name: String,
    pub columns: Vec<ColumnDef>,
    pub key: Vec<String>,
    pub foreign_keys: Vec<ForeignKey>,
    /// Incremental sync with soft deletes: the column stamped when a row
    /// vanishes from the source (never written from batches; an upsert
    /// clears it).
    pub soft_delete: Option<String>,
}

impl TableDef {
    pub fn from_mapping(m: &Mapping) -> TableDef {
        TableDef {
            name: m.target.table.clone(),
            columns: m
                .columns
                .iter()
                .flat_map(|c| {
                    let col = ColumnDef {
                        name: c.name.clone(),
                        ty: c.ty,
                        precision: c.precision(),
                        scale: c.scale(),
                        not_null: c.required || m.target.key.contains(&c.name),
                        length: c.length,
                    };
                    // a flagging column carries its verdict beside it
                    let valid = c.flag_only().then(|| ColumnDef {
                        name: c.valid_column(),
                        ty: ColumnType::Boolean,
                        precision: 1,
                        scale: 0,
                        not_null: false,
                        length: None,
                    });
                    std::iter::once(col).chain(valid)
                })
                .chain(m.checks.iter().filter_map(|c| {
                    c.flag.as_ref().map(|f| ColumnDef {
                        name: f.clone(),
                        ty: ColumnType::Boolean,
                        precision: 1,
                        scale: 0,
                        not_null: false,
                        length: None,
                    })
                }))
                .collect(),
            key: m.target.key.clone(),
            // a reference whose failures only flag the row is not a constraint
            foreign_keys: m
                .columns
                .iter()
                .filter(|c| !c.flag_only())
                .filter_map(|c| {
                    c.references.as_ref().map(|r| ForeignKey {
                        column: c.name.clone(),
                        table: r.table.clone(),
                        references: r.column.clone(),
                    })
                })
                .collect(),
            soft_delete: None,
        }
    }

    /// The table of this table's keys only (for finding deleted rows).
    pub fn keys_only(&self, name: &str) -> TableDef {
        TableDef {
            name: name.to_string(),
            columns: self
                .columns
                .iter()
                .filter(|c| self.key.contains(&c.name))
                .cloned()
                .collect(),
            key: self.key.clone(),
            foreign_keys: Vec::new(),
            soft_delete: None,
        }
    }
}

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

/// SQL dialects repaero writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    Oracle,
}

impl Dialect {
    /// The column type for a target type.
    pub fn type_sql(self, c: &ColumnDef) -> String {
        match (self, c.ty) {
            (Dialect::Sqlite, ColumnType::Text) => "TEXT".into(),
            (Dialect::Sqlite, ColumnType::Integer) => "INTEGER".into(),
            (Dialect::Sqlite, ColumnType::Decimal) => {
                format!("NUMERIC({},{})", c.precision, c.scale)
            }
            (Dialect::Sqlite, ColumnType::Float) => "REAL".into(),
            (Dialect::Sqlite, ColumnType::Boolean) => "INTEGER".into(),
            (Dialect::Sqlite, ColumnType::Date) => "DATE".into(),
            (Dialect::Sqlite, ColumnType::Datetime) => "DATETIME".into(),
            (Dialect::Sqlite, ColumnType::Time) => "TIME".into(),
            (Dialect::Sqlite, ColumnType::Binary) => "BLOB".into(),
            (Dialect::Postgres, ColumnType::Text) => "text".into(),
            (Dialect::Postgres, ColumnType::Integer) => "bigint".into(),
            (Dialect::Postgres, ColumnType::Decimal) => {
                format!("numeric({},{})", c.precision, c.scale)
            }
            (Dialect::Postgres, ColumnType::Float) => "double precision".into(),
            (Dialect::Postgres, ColumnType::Boolean) => "boolean".into(),
            (Dialect::Postgres, ColumnType::Date) => "date".into(),
            (Dialect::Postgres, ColumnType::Datetime) => "timestamp".into(),
            (Dialect::Postgres, ColumnType::Time) => "time".into(),
            (Dialect::Postgres, ColumnType::Binary) => "bytea".into(),
            (Dialect::Oracle, _) => oracle::column_type(c, false),
        }
    }

    /// Quote an identifier (Oracle: upper case, at most 30 bytes).
    pub fn quote(self, ident: &str) -> String {
        match self {
            Dialect::Oracle => oracle::quote(ident),
            _ => format!("\"{}\"", ident.replace('"', "\"\"")),
        }
    }

    /// A foreign key clause. Deferred: checked when the job commits, so
    /// that a job may replace a referenced table before the tables that
    /// reference it. Named after the final table (foreign-key names need
    /// not be unique, so the staging table of a swap can carry it already).
    pub fn foreign_key(self, def: &TableDef, fk: &ForeignKey) -> String {
        let body = format!(
            "FOREIGN KEY ({}) REFERENCES {} ({}) DEFERRABLE INITIALLY DEFERRED",
            self.quote(&fk.column),
            self.quote(&fk.table),
            self.quote(&fk.references)
        );
        match self {
            Dialect::Postgres | Dialect::Oracle => format!(
                "CONSTRAINT {} {body}",
                self.quote(&format!("{}_{}_fkey", def.name, fk.column))
            ),
            Dialect::Sqlite => body,
        }
    }

    /// `ALTER TABLE … ADD` for each foreign key of `def`, on table `name`.
    pub fn add_foreign_keys(self, def: &TableDef, name: &str) -> String {
        def.foreign_keys
            .iter()
            .map(|fk| {
                format!(
                    "ALTER TABLE {} ADD {};\n",
                    self.quote(name),
                    self.foreign_key(def, fk)
                )
            })
            .collect()
    }

    /// `CREATE TABLE` for `def`, named `name`.
    pub fn create_table(self, def: &TableDef, name: &str, if_not_exists: bool) -> String {
        let mut cols: Vec<String> = def
            .columns
            .iter()
            .map(|c| {
                // Oracle has no boolean column before 23ai: NUMBER(1), 0 or 1
                let check = if self == Dialect::Oracle && c.ty == ColumnType::Boolean {
                    format!(" CHECK ({} IN (0, 1))", self.quote(&c.name))
                } else {
                    String::new()
                };
                format!(
                    "{} {}{}{check}",
                    self.quote(&c.name),
                    self.type_sql(c),
                    if c.not_null { " NOT NULL" } else { "" }
                )
            })
            .collect();
        if let Some(col) = &def.soft_delete {
            let stamp = ColumnDef {
                name: col.clone(),
                ty: ColumnType::Datetime,
                precision: 0,
                scale: 0,
                not_null: false,
                length: None,
            };
            cols.push(format!("{} {}", self.quote(col), self.type_sql(&stamp)));
        }
        if !def.key.is_empty() {
            let key: Vec<String> = def.key.iter().map(|k| self.quote(k)).collect();
            cols.push(match self {
                // PostgreSQL names the index after the constraint; name it
                // so that the swap of a `replace` load can rename it.
                Dialect::Postgres | Dialect::Oracle => format!(
                    "CONSTRAINT {} PRIMARY KEY ({})",
                    self.quote(&format!("{name}_pkey")),
                    key.join(", ")
                ),
                Dialect::Sqlite => format!("PRIMARY KEY ({})", key.join(", ")),
            });
        }
        // SQLite cannot add a constraint to a table later; PostgreSQL adds
        // them after the load (add_foreign_keys), one bulk check instead of
        // a trigger per row
        if self == Dialect::Sqlite {
            cols.extend(def.foreign_keys.iter().map(|fk| self.foreign_key(def, fk)));
        }
        format!(
            "CREATE TABLE {}{} (\n  {}\n)",
            // Oracle knows IF NOT EXISTS only from 23ai: it checks first
            if if_not_exists && self != Dialect::Oracle {
                "IF NOT EXISTS "
            } else {
                ""
            },
            self.quote(name),
            cols.join(",\n  ")
        )
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

/// One line of `_repaero_runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub job: String,
    pub started_at: String,
    pub finished_at: String,
    pub status: String,
    pub dry_run: bool,
    pub source: String,
    /// The run's tally as JSON.
    pub tally: String,
}

/// Tables repaero keeps in every target.
pub const REJECTS_TABLE: &str = "_rejects";
pub const RUNS_TABLE: &str = "_repaero_runs";
pub const MERGES_TABLE: &str = "_merges";
pub const STATE_TABLE: &str = "_repaero_state";

/// An incremental sync's watermark, as kept in `_repaero_state`.
#[derive(Debug, Clone, Serialize)]
pub struct SyncState {
    pub job: String,
    pub table: String,
    /// Source column followed.
    pub update_key: String,
    /// Its highest value synced, in the source's text form.
    pub watermark: String,
    pub run_id: String,
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

/// A target database.
pub trait Sink {
    /// The target, password redacted.
    fn describe(&self) -> String;
    fn dialect(&self) -> Dialect;
    /// Start the unit of work and make sure repaero's own tables exist.
    fn begin(&mut self) -> Result<()>;
    /// Refuse every write on this connection from now on: validation and
    /// rowdiff only read, whatever SQL a validation file holds. SQLite:
    /// `query_only`; PostgreSQL: every transaction of the session read-only;
    /// Oracle: a read-only transaction, until [`Sink::rollback`].
    fn begin_read_only(&mut self) -> Result<()>;
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
    /// Distinct values of `table.column` as text (for reference rules).
    fn key_values(&mut self, table: &str, column: &str) -> Result<HashSet<String>>;
    /// Forget the rejects of a previous run of `job` into `table`.
    fn clear_rejects(&mut self, job: &str, table: &str) -> Result<()>;
    /// Record rejected rows in `_rejects`.
    fn write_rejects(
        &mut self,
        run_id: &str,
        job: &str,
        table: &str,
        origin: &str,
        rejects: &[Reject],
    ) -> Result<()>;
    /// Record a table's merges in `_merges` (replacing the previous run's).
    fn record_merges(
        &mut self,
        run_id: &str,
        job: &str,
        table: &str,
        merges: &[MergeRecord],
    ) -> Result<()>;
    /// Record the run in `_repaero_runs`.
    fn record_run(&mut self, rec: &RunRecord) -> Result<()>;
    /// The watermark of `job`'s last incremental sync of `table`.
    fn get_state(&mut self, job: &str, table: &str) -> Result<Option<String>>;
    /// Keep a watermark, in the job's transaction: it is committed with
    /// the rows it covers, or not at all.
    fn set_state(&mut self, state: &SyncState) -> Result<()>;
    /// Every row of `table`, these columns only, as text (NULL as `None`).
    fn select_text(&mut self, table: &str, columns: &[String]) -> Result<Vec<Vec<Option<String>>>> {
        let d = self.dialect();
        let cols: Vec<String> = columns.iter().map(|c| d.quote(c)).collect();
        self.query_text(&format!(
            "SELECT {} FROM {}",
            cols.join(", "),
            d.quote(table)
        ))
    }
    /// Run a query; every value as text (NULL as `None`). Validation and
    /// rowdiff read the target through this.
    fn query_text(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>>;
    /// Rows of `table`, or `None` when it does not exist.
    fn count_rows(&mut self, table: &str) -> Result<Option<u64>>;
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
    fn commit(&mut self) -> Result<()>;
    fn rollback(&mut self) -> Result<()>;
}

/// Open the sink a target URL names.
pub fn open(url: &str, dry_run: bool) -> Result<Box<dyn Sink>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Box::new(sqlite::SqliteSink::open(path, dry_run)?));
    }
    if url.starts_with("postgres://")
        || url.starts_with("postgresql://")
        || crate::config::is_conninfo(url)
    {
        return Ok(Box::new(postgres::PgSink::connect(url)?));
    }
    if url.starts_with("oracle://") {
        #[cfg(feature = "oracle")]
        return Ok(Box::new(oracle::OracleSink::connect(url)?));
        #[cfg(not(feature = "oracle"))]
        return Err(Error::config(format!(
            "{}: this repaero was built without Oracle; build it with `cargo build --release --features oracle` (Oracle Instant Client is needed at run time only)",
            crate::config::redact_url(url)
        )));
    }
    Err(Error::config(format!(
        "target.url {:?} is not supported; use sqlite://path/to/file.db, postgres://user@host/db (or host=… dbname=…) or oracle://user@host:1521/service",
        crate::config::redact_url(url)
    )))
}

/// The reject record as JSON text (`{"column": "value", …}`, in order).
pub fn record_json(record: &[(String, Option<String>)]) -> String {
    let mut map = serde_json::Map::new();
    for (k, v) in record {
        map.insert(
            k.clone(),
            v.as_ref()
                .map(|s| serde_json::Value::String(s.clone()))
                .unwrap_or(serde_json::Value::Null),
        );
    }
    serde_json::Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> TableDef {
        TableDef {
            name: "parts".into(),
            columns: vec![
                ColumnDef {
                    name: "reference".into(),
                    ty: ColumnType::Text,
                    precision: 18,
                    scale: 2,
                    not_null: true,
                    length: None,
                },
                ColumnDef {
                    name: "unit_price".into(),
                    ty: ColumnType::Decimal,
                    precision: 12,
                    scale: 2,
                    not_null: false,
                    length: None,
                },
                ColumnDef {
                    name: "last_receipt_date".into(),
                    ty: ColumnType::Date,
                    precision: 18,
                    scale: 2,
                    not_null: false,
                    length: None,
                },
            ],
            key: vec!["reference".into()],
            foreign_keys: vec![],
            soft_delete: None,
        }
    }

    #[test]
    fn ddl_per_dialect() {
        let pg = Dialect::Postgres.create_table(&def(), "parts", false);
        assert_eq!(
            pg,
            "CREATE TABLE \"parts\" (\n  \"reference\" text NOT NULL,\n  \"unit_price\" numeric(12,2),\n  \"last_receipt_date\" date,\n  CONSTRAINT \"parts_pkey\" PRIMARY KEY (\"reference\")\n)"
        );
        let lite = Dialect::Sqlite.create_table(&def(), "parts__repaero_new", true);
        assert!(
            lite.starts_with("CREATE TABLE IF NOT EXISTS \"parts__repaero_new\""),
            "{lite}"
        );
        assert!(lite.contains("\"unit_price\" NUMERIC(12,2)"), "{lite}");
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

    #[test]
    fn record_json_keeps_order_and_nulls() {
        let r = vec![
            ("b".to_string(), Some("1".to_string())),
            ("a".to_string(), None),
        ];
        assert_eq!(record_json(&r), "{\"b\":\"1\",\"a\":null}");
    }
}
