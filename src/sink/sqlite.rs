//! SQLite target (the embedded default): prepared statements inside one
//! large transaction per job.
//!
//! Types: text → TEXT, integer/boolean → INTEGER, decimal → NUMERIC(p,s)
//! (stored as REAL), float → REAL, date → `YYYY-MM-DD` text, datetime →
//! `YYYY-MM-DD HH:MM:SS[.fff]` text, the forms SQLite's date functions read.

use polars::prelude::DataFrame;

use super::{KEYS_TABLE, Sink, WriteOutcome, ledger, merge_sql, staging_name};
use crate::batch::{MergeOp, cursors};
use crate::config::mapping::WriteMode;
use crate::db::sqlite::{SqliteConn, bind, db_err};
use crate::db::{Conn, Dialect, TableDef};
use crate::error::{Error, Result};

pub struct SqliteSink {
    conn: SqliteConn,
    table: Option<Current>,
}

impl SqliteSink {
    pub fn new(conn: SqliteConn) -> SqliteSink {
        SqliteSink { conn, table: None }
    }

    /// The sink of the SQLite file `path` (see [`SqliteConn::open`]).
    pub fn open(path: &str, dry_run: bool) -> Result<SqliteSink> {
        Ok(SqliteSink::new(SqliteConn::open(path, dry_run)?))
    }

    /// The underlying connection (tests read through it).
    pub fn connection(&self) -> &rusqlite::Connection {
        &self.conn.conn
    }
}

struct Current {
    def: TableDef,
    mode: WriteMode,
    /// Table the rows go into (the staging table for `replace`).
    into: String,
    insert_sql: String,
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

impl Sink for SqliteSink {
    fn describe(&self) -> String {
        self.conn.label.clone()
    }

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn conn(&mut self) -> Result<&mut dyn Conn> {
        Ok(&mut self.conn)
    }

    fn begin(&mut self) -> Result<()> {
        self.conn.begin()?;
        ledger::ensure(&mut self.conn)
    }

    fn commit(&mut self) -> Result<()> {
        self.conn.commit()
    }

    fn rollback(&mut self) -> Result<()> {
        self.table = None;
        self.conn.rollback()
    }

    fn start_table(&mut self, def: &TableDef, mode: WriteMode) -> Result<()> {
        let q = |s: &str| Dialect::Sqlite.quote(s);
        let into = match mode {
            WriteMode::Replace => {
                let stage = staging_name(&def.name);
                self.conn
                    .conn
                    .execute_batch(&format!(
                        "DROP TABLE IF EXISTS {};\n{};",
                        q(&stage),
                        Dialect::Sqlite.create_table(def, &stage, false)
                    ))
                    .map_err(db_err(&format!(
                        "{}: creating {}",
                        self.conn.label, def.name
                    )))?;
                stage
            }
            WriteMode::Upsert | WriteMode::Append => {
                let existing = self.conn.columns(&def.name)?;
                if existing.is_empty() {
                    self.conn
                        .conn
                        .execute_batch(&Dialect::Sqlite.create_table(def, &def.name, false))
                        .map_err(db_err(&format!(
                            "{}: creating {}",
                            self.conn.label, def.name
                        )))?;
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
                            self.conn.label,
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
            .conn
            .prepare_cached(&cur.insert_sql)
            .map_err(db_err(&self.conn.label))?;
        let mut out = WriteOutcome::default();
        let mut refused = Vec::new();
        for i in 0..batch.height() {
            for (p, &j) in order.iter().enumerate() {
                bind(&mut stmt, p + 1, cols[j].get(i)).map_err(db_err(&self.conn.label))?;
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
                        self.conn.label, cur.def.name
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
                .conn
                .prepare_cached(&sql)
                .map_err(db_err(&self.conn.label))?;
            let values = op
                .sets
                .iter()
                .map(|(_, _, v)| v)
                .chain(op.key.iter().map(|(_, v)| v));
            for (i, v) in values.enumerate() {
                bind(&mut stmt, i + 1, v.as_ref()).map_err(db_err(&self.conn.label))?;
            }
            let changed = stmt.raw_execute().map_err(|e| {
                Error::runtime(format!(
                    "{}: merging into {}: {e}",
                    self.conn.label, cur.def.name
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
                .conn
                .execute_batch(&format!(
                    "DROP TABLE IF EXISTS {0};\nALTER TABLE {1} RENAME TO {0};",
                    q(&cur.def.name),
                    q(&cur.into)
                ))
                .map_err(db_err(&format!(
                    "{}: swapping in {}",
                    self.conn.label, cur.def.name
                )))?;
        }
        Ok(())
    }

    fn check_integrity(&mut self) -> Result<()> {
        let mut stmt = self
            .conn
            .conn
            .prepare("SELECT \"table\", rowid, parent FROM pragma_foreign_key_check")
            .map_err(db_err(&self.conn.label))?;
        let bad: Vec<(String, Option<i64>, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(db_err(&self.conn.label))?
            .collect::<std::result::Result<_, _>>()
            .map_err(db_err(&self.conn.label))?;
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
            self.conn.label,
            bad.len(),
            shown.join("; ")
        )))
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
            self.conn.label, def.name
        );
        let cols: Vec<String> = kdef.columns.iter().map(|c| q(&c.name)).collect();
        // typed as in the table: the same affinity lets the lookup use the key
        let typed: Vec<String> = kdef
            .columns
            .iter()
            .map(|c| format!("{} {}", q(&c.name), Dialect::Sqlite.type_sql(c)))
            .collect();
        self.conn
            .conn
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
            let mut stmt = self
                .conn
                .conn
                .prepare_cached(&insert)
                .map_err(db_err(&ctx))?;
            for i in 0..batch.height() {
                for (p, &j) in order.iter().enumerate() {
                    bind(&mut stmt, p + 1, cursors[j].get(i)).map_err(db_err(&ctx))?;
                }
                stmt.raw_execute().map_err(db_err(&ctx))?;
            }
        }
        let n = self
            .conn
            .conn
            .execute(
                &super::delete_missing_sql(Dialect::Sqlite, def, KEYS_TABLE, now),
                [],
            )
            .map_err(db_err(&ctx))?;
        self.conn
            .conn
            .execute_batch(&format!("DROP TABLE temp.{}", q(KEYS_TABLE)))
            .map_err(db_err(&ctx))?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Value, frame_from_rows};
    use crate::config::ColumnType;
    use crate::db::ColumnDef;
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
            .conn()
            .unwrap()
            .query(
                "SELECT count(*) FROM \"parts\" WHERE \"categroy\" = 'categroy'",
                &[],
            )
            .unwrap_err();
        assert!(err.to_string().contains("no such column"), "{err}");
        assert_eq!(
            s.conn()
                .unwrap()
                .query(
                    "SELECT count(*) FROM \"parts\" WHERE \"reference\" = 'A'",
                    &[]
                )
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
        s.conn().unwrap().begin_read_only().unwrap();
        let err = s
            .conn()
            .unwrap()
            .query("DELETE FROM \"parts\" RETURNING 1", &[])
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
