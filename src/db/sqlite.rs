//! SQLite (the embedded default target): one connection per file, set up
//! as every repaero writer expects it, and its [`Conn`] face.
//!
//! Values are stored as SQLite holds them: dates as `YYYY-MM-DD` text,
//! date-times as `YYYY-MM-DD HH:MM:SS[.fff]` text (the forms SQLite's date
//! functions read), booleans as 0/1.

use std::path::Path;

use rusqlite::Connection;

use super::{Conn, Dialect, Row};
use crate::batch::{Value, ValueRef, date_text, format_float, time_text};
use crate::error::{Error, Result};

/// An error of this connection, with what it was doing.
pub fn db_err(ctx: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::runtime(format!("{ctx}: {e}"))
}

/// A date-time as SQLite stores it.
pub fn datetime_sql(ms: i64) -> String {
    crate::batch::datetime_text_sep(ms, ' ')
}

/// Bind one value as SQLite stores it (dates and date-times as text).
pub fn bind(
    stmt: &mut rusqlite::Statement<'_>,
    idx: usize,
    v: ValueRef<'_>,
) -> rusqlite::Result<()> {
    match v {
        ValueRef::Null => stmt.raw_bind_parameter(idx, rusqlite::types::Null),
        ValueRef::Text(s) => stmt.raw_bind_parameter(idx, s),
        ValueRef::Int(v) => stmt.raw_bind_parameter(idx, v),
        ValueRef::Float(v) => stmt.raw_bind_parameter(idx, v),
        ValueRef::Bool(b) => stmt.raw_bind_parameter(idx, b as i64),
        ValueRef::Date(d) => stmt.raw_bind_parameter(idx, date_text(d)),
        ValueRef::Datetime(t) => stmt.raw_bind_parameter(idx, datetime_sql(t)),
        ValueRef::Time(t) => stmt.raw_bind_parameter(idx, time_text(t)),
        ValueRef::Binary(b) => stmt.raw_bind_parameter(idx, b),
    }
}

/// A connection to a SQLite file.
pub struct SqliteConn {
    pub conn: Connection,
    pub label: String,
}

impl SqliteConn {
    /// Open `path` (created if missing). A dry run against a file that does
    /// not exist works in memory, so that it leaves no file behind.
    pub fn open(path: &str, dry_run: bool) -> Result<SqliteConn> {
        let label = format!("sqlite://{path}");
        let conn = if path == ":memory:" || (dry_run && !Path::new(path).exists()) {
            Connection::open_in_memory()
        } else {
            if let Some(parent) = Path::new(path).parent()
                && !parent.as_os_str().is_empty()
                && !parent.exists()
            {
                return Err(Error::config(format!(
                    "{label}: directory {} does not exist; create it or change target.url",
                    parent.display()
                )));
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
                Ok(text.map(|t| super::dialect::hash40(&t) as i64))
            },
        )
        .map_err(db_err(&label))?;
        Ok(SqliteConn { conn, label })
    }

    fn prepared(&self, sql: &str, params: &[Value]) -> Result<rusqlite::CachedStatement<'_>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_err(&self.label))?;
        for (i, v) in params.iter().enumerate() {
            bind(&mut stmt, i + 1, v.as_ref()).map_err(db_err(&self.label))?;
        }
        Ok(stmt)
    }
}

/// A stored value as text: integers as written, reals in their shortest
/// form (`12`, `12.5`), blobs in hex.
fn text_of(v: rusqlite::types::ValueRef<'_>) -> Option<String> {
    use rusqlite::types::ValueRef as V;
    match v {
        V::Null => None,
        V::Integer(i) => Some(i.to_string()),
        V::Real(f) => Some(format_float(f)),
        V::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        V::Blob(b) => Some(hex::encode(b)),
    }
}

impl Conn for SqliteConn {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn describe(&self) -> String {
        self.label.clone()
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.conn.execute_batch(sql).map_err(db_err(&self.label))
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let mut stmt = self.prepared(sql, params)?;
        let n = stmt.raw_execute().map_err(db_err(&self.label))?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let mut stmt = self.prepared(sql, params)?;
        let n = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(db_err(&self.label))? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(text_of(r.get_ref(i).map_err(db_err(&self.label))?));
            }
            out.push(row);
        }
        Ok(out)
    }

    fn for_each_text(&mut self, sql: &str, f: &mut dyn FnMut(&str)) -> Result<()> {
        let mut stmt = self.prepared(sql, &[])?;
        let mut rows = stmt.raw_query();
        while let Some(r) = rows.next().map_err(db_err(&self.label))? {
            if let Some(v) = text_of(r.get_ref(0).map_err(db_err(&self.label))?) {
                f(&v);
            }
        }
        Ok(())
    }

    fn columns(&mut self, table: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name FROM pragma_table_info(?1)")
            .map_err(db_err(&self.label))?;
        let cols = stmt
            .query_map([table], |r| r.get::<_, String>(0))
            .map_err(db_err(&self.label))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(db_err(&self.label))?;
        Ok(cols)
    }

    fn begin(&mut self) -> Result<()> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| Error::runtime(format!("{}: cannot start a transaction: {e}", self.label)))
    }

    fn begin_read_only(&mut self) -> Result<()> {
        self.conn
            .execute_batch("PRAGMA query_only = ON")
            .map_err(db_err(&self.label))
    }

    fn commit(&mut self) -> Result<()> {
        self.conn
            .execute_batch("COMMIT")
            .map_err(|e| Error::runtime(format!("{}: commit failed: {e}", self.label)))
    }

    fn rollback(&mut self) -> Result<()> {
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

    #[test]
    fn parameters_bind_by_type_and_values_read_back_as_text() {
        let mut c = SqliteConn::open(":memory:", false).unwrap();
        let conn: &mut dyn Conn = &mut c;
        conn.batch("CREATE TABLE t (a TEXT, b INTEGER, c REAL, d DATE, e DATETIME)")
            .unwrap();
        let d = conn.dialect();
        let sql = format!(
            "INSERT INTO t VALUES ({}, {}, {}, {}, {})",
            d.param(1, crate::config::ColumnType::Text),
            d.param(2, crate::config::ColumnType::Integer),
            d.param(3, crate::config::ColumnType::Float),
            d.param(4, crate::config::ColumnType::Date),
            d.param(5, crate::config::ColumnType::Datetime),
        );
        let n = conn
            .execute(
                &sql,
                &[
                    Value::Text("x".into()),
                    Value::Int(12),
                    Value::Float(12.0),
                    Value::Date(20_422),
                    Value::Datetime(1_764_460_800_250),
                ],
            )
            .unwrap();
        assert_eq!(n, 1);
        let rows = conn.query("SELECT a, b, c, d, e FROM t", &[]).unwrap();
        assert_eq!(
            rows,
            vec![vec![
                Some("x".to_string()),
                Some("12".to_string()),
                Some("12".to_string()),
                Some("2025-11-30".to_string()),
                Some("2025-11-30 00:00:00.250".to_string()),
            ]]
        );
        assert_eq!(conn.count_rows("t").unwrap(), Some(1));
        assert_eq!(conn.count_rows("missing").unwrap(), None);
        assert_eq!(
            conn.key_values("t", "b").unwrap(),
            ["12"].into_iter().collect()
        );
    }
}
