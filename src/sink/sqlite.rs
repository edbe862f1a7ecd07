//! SQLite target (the embedded default): prepared statements inside one
//! large transaction per job.
//!
//! Types: text → TEXT, integer/boolean → INTEGER, decimal → NUMERIC(p,s)
//! (stored as REAL), float → REAL, date → `YYYY-MM-DD` text, datetime →
//! `YYYY-MM-DD HH:MM:SS[.fff]` text, the forms SQLite's date functions read.

use std::collections::HashSet;
use std::path::Path;

use polars::prelude::DataFrame;
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Dialect, KEYS_TABLE, MERGES_TABLE, REJECTS_TABLE, RUNS_TABLE, RunRecord, STATE_TABLE, Sink,
    SyncState, TableDef, WriteOutcome, merge_sql, record_json, staging_name,
};
use crate::batch::Reject;
use crate::batch::{MergeOp, MergeRecord};
use crate::batch::{ValueRef, cursors, date_text};
use crate::config::mapping::WriteMode;
use crate::error::{Error, Result};

pub struct SqliteSink {
    conn: Connection,
    label: String,
    table: Option<Current>,
}

struct Current {
    def: TableDef,
    mode: WriteMode,
    /// Table the rows go into (the staging table for `replace`).
    into: String,
    insert_sql: String,
}

fn db_err(ctx: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::runtime(format!("{ctx}: {e}"))
}

impl SqliteSink {
    /// Open `path` (created if missing). A dry run against a file that does
    /// not exist works in memory, so that it leaves no file behind.
    pub fn open(path: &str, dry_run: bool) -> Result<SqliteSink> {
        let label = format!("sqlite://{path}");
        let conn = if path == ":memory:" || (dry_run && !Path::new(path).exists()) {
            Connection::open_in_memory()
        } else {
            if let Some(parent) = Path::new(path).parent() {
                if !parent.as_os_str().is_empty() && !parent.exists() {
                    return Err(Error::config(format!(
                        "{label}: directory {} does not exist; create it or change target.url",
                        parent.display()
                    )));
                }
            }
            Connection::open(path)
        }
        .map_err(|e| Error::runtime(format!("{label}: cannot open: {e}")))?;
        // Foreign keys are checked once, before the commit (check_integrity):
        // a `replace` swap drops and renames tables that others reference,
        // which per-statement enforcement would refuse. A 64 MiB page cache
        // (the default is 2 MiB): a bulk load into an indexed table larger
        // than the cache otherwise reads its index pages back for each
        // insert (measured in docs/benchmarks.md, scans).
        conn.execute_batch(
            "PRAGMA foreign_keys = OFF; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; \
             PRAGMA cache_size = -65536;",
        )
        .map_err(db_err(&label))?;
        // A double-quoted name SQLite does not know is an error, never the
        // string literal it falls back to by default (a misspelled column
        // in a filter would compare a string with itself)
        for c in [
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_DQS_DML,
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_DQS_DDL,
        ] {
            conn.set_db_config(c, false).map_err(db_err(&label))?;
        }
        // rowdiff's row hash, as PostgreSQL and Oracle compute it in SQL
        conn.create_scalar_function(
            "repaero_hash40",
            1,
            rusqlite::functions::FunctionFlags::SQLITE_UTF8
                | rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC,
            |ctx| {
                let text = ctx.get::<Option<String>>(0)?;
                Ok(text.map(|t| crate::validate::rowdiff::hash40(&t) as i64))
            },
        )
        .map_err(db_err(&label))?;
        Ok(SqliteSink {
            conn,
            label,
            table: None,
        })
    }

    /// The underlying connection (tests and validation read through it).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn existing_columns(&self, table: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .map_err(db_err(&self.label))?;
        let cols = stmt
            .query_map([table], |r| r.get::<_, String>(0))
            .map_err(db_err(&self.label))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(db_err(&self.label))?;
        Ok(cols)
    }
}

fn insert_sql(def: &TableDef, into: &str, mode: WriteMode) -> String {
    let q = |s: &str| Dialect::Sqlite.quote(s);
    let cols: Vec<String> = def.columns.iter().map(|c| q(&c.name)).collect();
    let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        q(into),
        cols.join(", "),
        marks.join(", ")
    );
    if mode == WriteMode::Upsert {
        let key: Vec<String> = def.key.iter().map(|k| q(k)).collect();
        let sets = super::upsert_sets(Dialect::Sqlite, def, "excluded");
        if sets.is_empty() {
            sql.push_str(&format!(" ON CONFLICT ({}) DO NOTHING", key.join(", ")));
        } else {
            sql.push_str(&format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                key.join(", "),
                sets.join(", ")
            ));
        }
    }
    sql
}

fn datetime_sql(ms: i64) -> String {
    crate::batch::datetime_text(ms).replacen('T', " ", 1)
}

/// Bind one value as SQLite stores it (dates and date-times as text).
fn bind(stmt: &mut rusqlite::Statement<'_>, idx: usize, v: ValueRef<'_>) -> rusqlite::Result<()> {
    match v {
        ValueRef::Null => stmt.raw_bind_parameter(idx, rusqlite::types::Null),
        ValueRef::Text(s) => stmt.raw_bind_parameter(idx, s),
        ValueRef::Int(v) => stmt.raw_bind_parameter(idx, v),
        ValueRef::Float(v) => stmt.raw_bind_parameter(idx, v),
        ValueRef::Bool(b) => stmt.raw_bind_parameter(idx, b as i64),
        ValueRef::Date(d) => stmt.raw_bind_parameter(idx, date_text(d)),
        ValueRef::Datetime(t) => stmt.raw_bind_parameter(idx, datetime_sql(t)),
        ValueRef::Time(t) => stmt.raw_bind_parameter(idx, crate::batch::time_text(t)),
        ValueRef::Binary(b) => stmt.raw_bind_parameter(idx, b),
    }
}

impl Sink for SqliteSink {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn begin(&mut self) -> Result<()> {
        self.conn
            .execute_batch(&format!(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS {REJECTS_TABLE} (
                   run_id TEXT NOT NULL, job TEXT NOT NULL, table_name TEXT NOT NULL,
                   source TEXT NOT NULL, source_row INTEGER, reason TEXT NOT NULL,
                   detail TEXT NOT NULL, record TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS {MERGES_TABLE} (
                   run_id TEXT NOT NULL, job TEXT NOT NULL, table_name TEXT NOT NULL,
                   merge_key TEXT NOT NULL, kept_row INTEGER, merged_row INTEGER,
                   kept_id TEXT, merged_id TEXT);
                 CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (
                   run_id TEXT NOT NULL, job TEXT NOT NULL, started_at TEXT NOT NULL,
                   finished_at TEXT NOT NULL, status TEXT NOT NULL, dry_run INTEGER NOT NULL,
                   source TEXT NOT NULL, tally TEXT NOT NULL, PRIMARY KEY (run_id, job));
                 CREATE TABLE IF NOT EXISTS {STATE_TABLE} (
                   job TEXT NOT NULL, table_name TEXT NOT NULL, update_key TEXT NOT NULL,
                   watermark TEXT NOT NULL, run_id TEXT NOT NULL, updated_at TEXT NOT NULL,
                   PRIMARY KEY (job, table_name));"
            ))
            .map_err(|e| Error::runtime(format!("{}: cannot start a transaction: {e}", self.label)))
    }

    fn begin_read_only(&mut self) -> Result<()> {
        self.conn
            .execute_batch("PRAGMA query_only = ON")
            .map_err(db_err(&self.label))
    }

    fn start_table(&mut self, def: &TableDef, mode: WriteMode) -> Result<()> {
        let q = |s: &str| Dialect::Sqlite.quote(s);
        let into = match mode {
            WriteMode::Replace => {
                let stage = staging_name(&def.name);
                self.conn
                    .execute_batch(&format!(
                        "DROP TABLE IF EXISTS {};\n{};",
                        q(&stage),
                        Dialect::Sqlite.create_table(def, &stage, false)
                    ))
                    .map_err(db_err(&format!("{}: creating {}", self.label, def.name)))?;
                stage
            }
            WriteMode::Upsert | WriteMode::Append => {
                let existing = self.existing_columns(&def.name)?;
                if existing.is_empty() {
                    self.conn
                        .execute_batch(&Dialect::Sqlite.create_table(def, &def.name, false))
                        .map_err(db_err(&format!("{}: creating {}", self.label, def.name)))?;
                } else {
                    let missing: Vec<&str> = def
                        .columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .chain(def.soft_delete.as_deref())
                        .filter(|c| !existing.iter().any(|e| e == c))
                        .collect();
                    if !missing.is_empty() {
                        return Err(Error::config(format!(
                            "{}: table {} exists without column(s) {}; add them, or write it with mode = \"replace\"",
                            self.label,
                            def.name,
                            missing.join(", ")
                        )));
                    }
                }
                def.name.clone()
            }
        };
        let sql = insert_sql(def, &into, mode);
        self.table = Some(Current {
            def: def.clone(),
            mode,
            into,
            insert_sql: sql,
        });
        Ok(())
    }

    fn write(&mut self, batch: &DataFrame) -> Result<WriteOutcome> {
        let cur = self
            .table
            .as_ref()
            .ok_or_else(|| Error::runtime("write before start_table"))?;
        let mut batch = batch.clone();
        batch.rechunk_mut();
        let (names, cols) = cursors(&batch)?;
        let order = super::column_order(&cur.def.columns, &names, &cur.def.name)?;
        let mut stmt = self
            .conn
            .prepare_cached(&cur.insert_sql)
            .map_err(db_err(&self.label))?;
        let mut out = WriteOutcome::default();
        let mut refused = Vec::new();
        for i in 0..batch.height() {
            for (p, &j) in order.iter().enumerate() {
                bind(&mut stmt, p + 1, cols[j].get(i)).map_err(db_err(&self.label))?;
            }
            match stmt.raw_execute() {
                Ok(_) => out.written += 1,
                Err(rusqlite::Error::SqliteFailure(code, msg))
                    if code.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    refused.push((i, msg.unwrap_or_else(|| code.to_string())));
                }
                Err(e) => {
                    return Err(Error::runtime(format!(
                        "{}: writing {}: {e}",
                        self.label, cur.def.name
                    )));
                }
            }
        }
        drop(stmt);
        out.refused = super::refused_rejects(&batch, &refused)?;
        Ok(out)
    }

    fn merge(&mut self, ops: &[MergeOp]) -> Result<Vec<usize>> {
        let cur = self
            .table
            .as_ref()
            .ok_or_else(|| Error::runtime("merge before start_table"))?;
        let mut missing = Vec::new();
        for (k, op) in ops.iter().enumerate() {
            let sql = merge_sql(Dialect::Sqlite, &cur.into, &cur.def, op);
            let mut stmt = self
                .conn
                .prepare_cached(&sql)
                .map_err(db_err(&self.label))?;
            let values = op
                .sets
                .iter()
                .map(|(_, _, v)| v)
                .chain(op.key.iter().map(|(_, v)| v));
            for (i, v) in values.enumerate() {
                bind(&mut stmt, i + 1, v.as_ref()).map_err(db_err(&self.label))?;
            }
            let changed = stmt.raw_execute().map_err(|e| {
                Error::runtime(format!(
                    "{}: merging into {}: {e}",
                    self.label, cur.def.name
                ))
            })?;
            if changed == 0 {
                missing.push(k);
            }
        }
        Ok(missing)
    }

    fn finish_table(&mut self) -> Result<()> {
        let Some(cur) = self.table.take() else {
            return Ok(());
        };
        if cur.mode == WriteMode::Replace {
            let q = |s: &str| Dialect::Sqlite.quote(s);
            self.conn
                .execute_batch(&format!(
                    "DROP TABLE IF EXISTS {0};\nALTER TABLE {1} RENAME TO {0};",
                    q(&cur.def.name),
                    q(&cur.into)
                ))
                .map_err(db_err(&format!(
                    "{}: swapping in {}",
                    self.label, cur.def.name
                )))?;
        }
        Ok(())
    }

    fn key_values(&mut self, table: &str, column: &str) -> Result<HashSet<String>> {
        let q = |s: &str| Dialect::Sqlite.quote(s);
        if self.existing_columns(table)?.iter().all(|c| c != column) {
            return Err(Error::config(format!(
                "{}: reference to {table}.{column}: no such table or column in the target; write {table} earlier in the job",
                self.label
            )));
        }
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT DISTINCT CAST({} AS TEXT) FROM {} WHERE {0} IS NOT NULL",
                q(column),
                q(table)
            ))
            .map_err(db_err(&self.label))?;
        let vals = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(db_err(&self.label))?
            .collect::<std::result::Result<HashSet<_>, _>>()
            .map_err(db_err(&self.label))?;
        Ok(vals)
    }

    fn clear_rejects(&mut self, job: &str, table: &str) -> Result<()> {
        self.conn
            .execute(
                &format!("DELETE FROM {REJECTS_TABLE} WHERE job = ?1 AND table_name = ?2"),
                params![job, table],
            )
            .map_err(db_err(&self.label))?;
        Ok(())
    }

    fn write_rejects(
        &mut self,
        run_id: &str,
        job: &str,
        table: &str,
        origin: &str,
        rejects: &[Reject],
    ) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "INSERT INTO {REJECTS_TABLE} (run_id, job, table_name, source, source_row, reason, detail, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))
            .map_err(db_err(&self.label))?;
        for r in rejects {
            stmt.execute(params![
                run_id,
                job,
                table,
                origin,
                r.row as i64,
                r.reason,
                r.detail,
                record_json(&r.record)
            ])
            .map_err(db_err(&self.label))?;
        }
        Ok(())
    }

    fn record_merges(
        &mut self,
        run_id: &str,
        job: &str,
        table: &str,
        merges: &[MergeRecord],
    ) -> Result<()> {
        self.conn
            .execute(
                &format!("DELETE FROM {MERGES_TABLE} WHERE job = ?1 AND table_name = ?2"),
                params![job, table],
            )
            .map_err(db_err(&self.label))?;
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "INSERT INTO {MERGES_TABLE} (run_id, job, table_name, merge_key, kept_row, merged_row, kept_id, merged_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))
            .map_err(db_err(&self.label))?;
        for m in merges {
            stmt.execute(params![
                run_id,
                job,
                table,
                m.key,
                m.kept_row as i64,
                m.merged_row as i64,
                m.kept_id,
                m.merged_id
            ])
            .map_err(db_err(&self.label))?;
        }
        Ok(())
    }

    fn check_integrity(&mut self) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare("SELECT \"table\", rowid, parent FROM pragma_foreign_key_check")
            .map_err(db_err(&self.label))?;
        let bad: Vec<(String, Option<i64>, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(db_err(&self.label))?
            .collect::<std::result::Result<_, _>>()
            .map_err(db_err(&self.label))?;
        if bad.is_empty() {
            return Ok(());
        }
        let shown: Vec<String> = bad
            .iter()
            .take(5)
            .map(|(t, rowid, p)| {
                format!(
                    "{t} rowid {} → {p}",
                    rowid.map_or("?".into(), |r| r.to_string())
                )
            })
            .collect();
        Err(Error::runtime(format!(
            "{}: {} row(s) break a foreign key ({}); nothing was committed. Add a `references` rule to the mapping so that such rows are rejected",
            self.label,
            bad.len(),
            shown.join("; ")
        )))
    }

    fn record_run(&mut self, rec: &RunRecord) -> Result<()> {
        self.conn
            .execute(
                &format!(
                    "INSERT OR REPLACE INTO {RUNS_TABLE} (run_id, job, started_at, finished_at, status, dry_run, source, tally)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ),
                params![
                    rec.run_id,
                    rec.job,
                    rec.started_at,
                    rec.finished_at,
                    rec.status,
                    rec.dry_run as i64,
                    rec.source,
                    rec.tally
                ],
            )
            .map_err(db_err(&self.label))?;
        Ok(())
    }

    fn get_state(&mut self, job: &str, table: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                &format!("SELECT watermark FROM {STATE_TABLE} WHERE job = ?1 AND table_name = ?2"),
                [job, table],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(db_err(&self.label))
    }

    fn set_state(&mut self, st: &SyncState) -> Result<()> {
        self.conn
            .execute(
                &format!(
                    "INSERT INTO {STATE_TABLE} (job, table_name, update_key, watermark, run_id, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, CURRENT_TIMESTAMP)
                     ON CONFLICT (job, table_name) DO UPDATE SET update_key = excluded.update_key,
                       watermark = excluded.watermark, run_id = excluded.run_id, updated_at = excluded.updated_at"
                ),
                [&st.job, &st.table, &st.update_key, &st.watermark, &st.run_id],
            )
            .map_err(db_err(&self.label))?;
        Ok(())
    }

    fn query_text(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut stmt = self.conn.prepare(sql).map_err(db_err(&self.label))?;
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        Ok(match r.get::<_, rusqlite::types::Value>(i)? {
                            rusqlite::types::Value::Null => None,
                            rusqlite::types::Value::Integer(v) => Some(v.to_string()),
                            rusqlite::types::Value::Real(v) => Some(crate::batch::format_float(v)),
                            rusqlite::types::Value::Text(t) => Some(t),
                            rusqlite::types::Value::Blob(b) => Some(hex::encode(b)),
                        })
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db_err(&self.label))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err(&self.label))?;
        Ok(rows)
    }

    fn count_rows(&mut self, table: &str) -> Result<Option<u64>> {
        if self.existing_columns(table)?.is_empty() {
            return Ok(None);
        }
        let n: i64 = self
            .conn
            .query_row(
                &format!("SELECT count(*) FROM {}", Dialect::Sqlite.quote(table)),
                [],
                |r| r.get(0),
            )
            .map_err(db_err(&self.label))?;
        Ok(Some(n as u64))
    }

    fn delete_missing(
        &mut self,
        def: &TableDef,
        keys: &mut dyn Iterator<Item = Result<DataFrame>>,
        now: &str,
    ) -> Result<u64> {
        let q = |s: &str| Dialect::Sqlite.quote(s);
        let kdef = def.keys_only(KEYS_TABLE);
        let ctx = format!(
            "{}: finding rows gone from the source of {}",
            self.label, def.name
        );
        let cols: Vec<String> = kdef.columns.iter().map(|c| q(&c.name)).collect();
        // typed as in the table: the same affinity lets the lookup use the key
        let typed: Vec<String> = kdef
            .columns
            .iter()
            .map(|c| format!("{} {}", q(&c.name), Dialect::Sqlite.type_sql(c)))
            .collect();
        self.conn
            .execute_batch(&format!(
                "DROP TABLE IF EXISTS temp.{0}; CREATE TEMP TABLE {0} ({1}, PRIMARY KEY ({2}));",
                q(KEYS_TABLE),
                typed.join(", "),
                cols.join(", ")
            ))
            .map_err(db_err(&ctx))?;
        let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
        let insert = format!(
            "INSERT OR IGNORE INTO temp.{} ({}) VALUES ({})",
            q(KEYS_TABLE),
            cols.join(", "),
            marks.join(", ")
        );
        for batch in keys {
            let mut batch = batch?;
            batch.rechunk_mut();
            let (names, cursors) = cursors(&batch)?;
            let order = super::column_order(&kdef.columns, &names, &def.name)?;
            let mut stmt = self.conn.prepare_cached(&insert).map_err(db_err(&ctx))?;
            for i in 0..batch.height() {
                for (p, &j) in order.iter().enumerate() {
                    bind(&mut stmt, p + 1, cursors[j].get(i)).map_err(db_err(&ctx))?;
                }
                stmt.raw_execute().map_err(db_err(&ctx))?;
            }
        }
        let n = self
            .conn
            .execute(
                &super::delete_missing_sql(Dialect::Sqlite, def, KEYS_TABLE, now),
                [],
            )
            .map_err(db_err(&ctx))?;
        self.conn
            .execute_batch(&format!("DROP TABLE temp.{}", q(KEYS_TABLE)))
            .map_err(db_err(&ctx))?;
        Ok(n as u64)
    }

    fn commit(&mut self) -> Result<()> {
        self.conn
            .execute_batch("COMMIT")
            .map_err(|e| Error::runtime(format!("{}: commit failed: {e}", self.label)))
    }

    fn rollback(&mut self) -> Result<()> {
        self.table = None;
        if self.conn.is_autocommit() {
            return Ok(());
        }
        self.conn
            .execute_batch("ROLLBACK")
            .map_err(|e| Error::runtime(format!("{}: rollback failed: {e}", self.label)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Value, frame_from_rows};
    use crate::config::ColumnType;
    use crate::sink::ColumnDef;
    use polars::prelude::DataType;

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
                    name: "quantity".into(),
                    ty: ColumnType::Integer,
                    precision: 18,
                    scale: 2,
                    not_null: false,
                    length: None,
                },
                ColumnDef {
                    name: "received".into(),
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

    fn batch(rows: &[(&str, i64)]) -> DataFrame {
        let schema = vec![
            ("reference".to_string(), DataType::String),
            ("quantity".to_string(), DataType::Int64),
            ("received".to_string(), DataType::Date),
        ];
        let rows: Vec<Vec<Value>> = rows
            .iter()
            .map(|(r, q)| {
                vec![
                    Value::Text(r.to_string()),
                    Value::Int(*q),
                    Value::Date(20_000),
                ]
            })
            .collect();
        frame_from_rows(&schema, &rows).unwrap()
    }

    fn count(s: &SqliteSink, sql: &str) -> i64 {
        s.connection().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn an_unknown_double_quoted_name_is_an_error_not_a_string() {
        let mut s = SqliteSink::open(":memory:", false).unwrap();
        s.begin().unwrap();
        s.start_table(&def(), WriteMode::Append).unwrap();
        let err = s
            .query_text("SELECT count(*) FROM \"parts\" WHERE \"categroy\" = 'categroy'")
            .unwrap_err();
        assert!(err.to_string().contains("no such column"), "{err}");
        assert_eq!(
            s.query_text("SELECT count(*) FROM \"parts\" WHERE \"reference\" = 'A'")
                .unwrap(),
            vec![vec![Some("0".to_string())]]
        );
    }

    #[test]
    fn read_only_refuses_writes() {
        let mut s = SqliteSink::open(":memory:", false).unwrap();
        s.begin().unwrap();
        s.start_table(&def(), WriteMode::Append).unwrap();
        s.write(&batch(&[("A", 1)])).unwrap();
        s.finish_table().unwrap();
        s.commit().unwrap();
        s.begin_read_only().unwrap();
        let err = s
            .query_text("DELETE FROM \"parts\" RETURNING 1")
            .unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
        assert_eq!(count(&s, "SELECT count(*) FROM parts"), 1);
    }

    #[test]
    fn replace_swaps_and_refuses_duplicate_keys_row_by_row() {
        let mut s = SqliteSink::open(":memory:", false).unwrap();
        s.begin().unwrap();
        s.start_table(&def(), WriteMode::Replace).unwrap();
        let out = s.write(&batch(&[("A", 1), ("B", 2), ("A", 3)])).unwrap();
        assert_eq!(out.written, 2);
        assert_eq!(out.refused.len(), 1);
        // the third row of the batch (source row 0: the test frame has none)
        assert_eq!(
            out.refused[0].record[0],
            ("reference".to_string(), Some("A".to_string()))
        );
        assert_eq!(
            out.refused[0].record[1],
            ("quantity".to_string(), Some("3".to_string()))
        );
        assert!(
            out.refused[0].reason.contains("UNIQUE"),
            "{}",
            out.refused[0].reason
        );
        s.finish_table().unwrap();
        s.commit().unwrap();
        assert_eq!(count(&s, "SELECT count(*) FROM parts"), 2);
        assert_eq!(
            count(
                &s,
                "SELECT count(*) FROM sqlite_master WHERE name = 'parts__repaero_new'"
            ),
            0
        );
        let d: String = s
            .connection()
            .query_row("SELECT received FROM parts LIMIT 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(d, "2024-10-04");
    }

    #[test]
    fn upsert_updates_on_the_key_and_rollback_undoes() {
        let mut s = SqliteSink::open(":memory:", false).unwrap();
        s.begin().unwrap();
        s.start_table(&def(), WriteMode::Upsert).unwrap();
        s.write(&batch(&[("A", 1), ("B", 2)])).unwrap();
        s.finish_table().unwrap();
        s.commit().unwrap();
        s.begin().unwrap();
        s.start_table(&def(), WriteMode::Upsert).unwrap();
        s.write(&batch(&[("A", 10), ("C", 3)])).unwrap();
        s.finish_table().unwrap();
        s.commit().unwrap();
        assert_eq!(
            count(&s, "SELECT quantity FROM parts WHERE reference = 'A'"),
            10
        );
        assert_eq!(count(&s, "SELECT count(*) FROM parts"), 3);
        s.begin().unwrap();
        s.start_table(&def(), WriteMode::Replace).unwrap();
        s.write(&batch(&[("Z", 1)])).unwrap();
        s.finish_table().unwrap();
        s.rollback().unwrap();
        assert_eq!(count(&s, "SELECT count(*) FROM parts"), 3);
    }
}
