//! repaero's own bookkeeping in every target, written once over the
//! dialect: `_rejects` (the latest run's rejected rows per job and table),
//! `_merges` (the rows folded into others), `_repaero_runs` (every run with
//! its tally) and `_repaero_state` (incremental sync watermarks).
//!
//! The tables are created when missing, at the start of a unit of work,
//! with the types each engine stores best; their rows go in through the
//! job's own connection, inside its transaction.

use std::borrow::Cow;

use serde::Serialize;

use crate::batch::{MergeRecord, Reject, Value};
use crate::db::{Conn, Dialect};
use crate::error::Result;

/// Tables repaero keeps in every target.
pub const REJECTS_TABLE: &str = "_rejects";
pub const RUNS_TABLE: &str = "_repaero_runs";
pub const MERGES_TABLE: &str = "_merges";
pub const STATE_TABLE: &str = "_repaero_state";

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

/// What a bookkeeping column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A short name (Oracle: VARCHAR2 of this many bytes).
    Name(u16),
    /// Free text (Oracle: VARCHAR2(4000), cut to 1,000 characters).
    Text,
    /// JSON (PostgreSQL: jsonb; Oracle: CLOB).
    Json,
    Int,
    Bool,
    /// An RFC 3339 instant (PostgreSQL: timestamptz; Oracle: text).
    Instant,
    /// The time of the write, set by the database.
    Now,
}

struct Col {
    name: &'static str,
    kind: Kind,
    not_null: bool,
}

const fn col(name: &'static str, kind: Kind, not_null: bool) -> Col {
    Col {
        name,
        kind,
        not_null,
    }
}

struct Table {
    name: &'static str,
    cols: &'static [Col],
    key: &'static [&'static str],
}

const RUN_ID: Kind = Kind::Name(64);
const NAME: Kind = Kind::Name(128);

const TABLES: [Table; 4] = [
    Table {
        name: REJECTS_TABLE,
        cols: &[
            col("run_id", RUN_ID, true),
            col("job", NAME, true),
            col("table_name", NAME, true),
            col("source", Kind::Text, true),
            col("source_row", Kind::Int, false),
            col("reason", Kind::Text, true),
            col("detail", Kind::Text, true),
            col("record", Kind::Json, true),
        ],
        key: &[],
    },
    Table {
        name: MERGES_TABLE,
        cols: &[
            col("run_id", RUN_ID, true),
            col("job", NAME, true),
            col("table_name", NAME, true),
            col("merge_key", Kind::Text, true),
            col("kept_row", Kind::Int, false),
            col("merged_row", Kind::Int, false),
            col("kept_id", Kind::Text, false),
            col("merged_id", Kind::Text, false),
        ],
        key: &[],
    },
    Table {
        name: RUNS_TABLE,
        cols: &[
            col("run_id", RUN_ID, true),
            col("job", NAME, true),
            col("started_at", Kind::Instant, true),
            col("finished_at", Kind::Instant, true),
            col("status", Kind::Name(64), true),
            col("dry_run", Kind::Bool, true),
            col("source", Kind::Text, true),
            col("tally", Kind::Json, true),
        ],
        key: &["run_id", "job"],
    },
    Table {
        name: STATE_TABLE,
        cols: &[
            col("job", NAME, true),
            col("table_name", NAME, true),
            col("update_key", NAME, true),
            col("watermark", Kind::Name(400), true),
            col("run_id", RUN_ID, true),
            col("updated_at", Kind::Now, true),
        ],
        key: &["job", "table_name"],
    },
];

/// Longest text repaero writes into its own VARCHAR2(4000) columns on
/// Oracle, in characters (4 bytes each at worst).
const ORACLE_TEXT_CHARS: usize = 1_000;

fn column_type(d: Dialect, kind: Kind) -> Cow<'static, str> {
    match (d, kind) {
        (Dialect::Sqlite, Kind::Int | Kind::Bool) => "INTEGER".into(),
        (Dialect::Sqlite, _) => "TEXT".into(),
        (Dialect::Postgres, Kind::Name(_) | Kind::Text) => "text".into(),
        (Dialect::Postgres, Kind::Json) => "jsonb".into(),
        (Dialect::Postgres, Kind::Int) => "bigint".into(),
        (Dialect::Postgres, Kind::Bool) => "boolean".into(),
        (Dialect::Postgres, Kind::Instant | Kind::Now) => "timestamptz".into(),
        (Dialect::Oracle, Kind::Name(n)) => format!("VARCHAR2({n})").into(),
        (Dialect::Oracle, Kind::Text) => "VARCHAR2(4000)".into(),
        (Dialect::Oracle, Kind::Json) => "CLOB".into(),
        (Dialect::Oracle, Kind::Int) => "NUMBER(19)".into(),
        (Dialect::Oracle, Kind::Bool) => "NUMBER(1)".into(),
        (Dialect::Oracle, Kind::Instant) => "VARCHAR2(40)".into(),
        (Dialect::Oracle, Kind::Now) => "TIMESTAMP DEFAULT SYS_EXTRACT_UTC(SYSTIMESTAMP)".into(),
    }
}

/// The SQL of "now", as the database keeps it.
fn now_sql(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "CURRENT_TIMESTAMP",
        Dialect::Postgres => "now()",
        Dialect::Oracle => "SYS_EXTRACT_UTC(SYSTIMESTAMP)",
    }
}

fn create_sql(d: Dialect, t: &Table) -> String {
    let mut cols: Vec<String> = t
        .cols
        .iter()
        .map(|c| {
            format!(
                "{} {}{}",
                d.quote(c.name),
                column_type(d, c.kind),
                if c.not_null { " NOT NULL" } else { "" }
            )
        })
        .collect();
    if !t.key.is_empty() {
        let key: Vec<String> = t.key.iter().map(|k| d.quote(k)).collect();
        cols.push(match d {
            Dialect::Oracle => format!(
                "CONSTRAINT {} PRIMARY KEY ({})",
                d.quote(&format!("{}_pk", t.name)),
                key.join(", ")
            ),
            _ => format!("PRIMARY KEY ({})", key.join(", ")),
        });
    }
    format!(
        "CREATE TABLE {}{} ({})",
        // Oracle knows IF NOT EXISTS only from 23ai: [`ensure`] checks first
        if d == Dialect::Oracle {
            ""
        } else {
            "IF NOT EXISTS "
        },
        d.quote(t.name),
        cols.join(", ")
    )
}

/// Create repaero's tables that are missing. On Oracle this is DDL, which
/// commits: call it first in a unit of work.
pub fn ensure(conn: &mut dyn Conn) -> Result<()> {
    let d = conn.dialect();
    for t in &TABLES {
        if d == Dialect::Oracle && conn.table_exists(t.name)? {
            continue;
        }
        conn.batch(&create_sql(d, t))?;
    }
    Ok(())
}

fn table(name: &str) -> &'static Table {
    TABLES.iter().find(|t| t.name == name).unwrap_or(&TABLES[0])
}

/// A value as this database can keep it in a bookkeeping column:
/// PostgreSQL's text holds no NUL character (often why the row was
/// rejected: it is written ␀, U+2400); Oracle's VARCHAR2(4000) is cut.
fn fit(d: Dialect, kind: Kind, v: Value) -> Value {
    match (d, kind, v) {
        (Dialect::Postgres, _, Value::Text(s)) if s.contains('\0') => Value::Text(no_nul(d, &s)),
        (Dialect::Oracle, Kind::Text, Value::Text(s)) if s.chars().count() > ORACLE_TEXT_CHARS => {
            Value::Text(s.chars().take(ORACLE_TEXT_CHARS).collect())
        }
        (_, _, v) => v,
    }
}

/// Text without NUL characters where the database cannot keep them.
fn no_nul(d: Dialect, s: &str) -> String {
    match d {
        Dialect::Postgres => s.replace('\0', "\u{2400}"),
        _ => s.to_string(),
    }
}

/// `INSERT` (or, for a table with a key, upsert) of one row of `t`.
fn insert_sql(d: Dialect, t: &Table) -> String {
    let mut n = 0;
    let cols: Vec<(&str, String)> = t
        .cols
        .iter()
        .map(|c| {
            let p = match c.kind {
                Kind::Now => now_sql(d).to_string(),
                kind => {
                    n += 1;
                    let pg = column_type(Dialect::Postgres, kind);
                    d.param_as(n, &pg)
                }
            };
            (c.name, p)
        })
        .collect();
    if t.key.is_empty() {
        let names: Vec<String> = cols.iter().map(|(c, _)| d.quote(c)).collect();
        let values: Vec<&str> = cols.iter().map(|(_, p)| p.as_str()).collect();
        format!(
            "INSERT INTO {} ({}) VALUES ({})",
            d.quote(t.name),
            names.join(", "),
            values.join(", ")
        )
    } else {
        d.upsert_sql(t.name, &cols, t.key)
    }
}

/// Write one row of `name`; `values` in its column order, `Now` columns left out.
fn insert(conn: &mut dyn Conn, name: &str, values: Vec<Value>) -> Result<()> {
    let d = conn.dialect();
    let t = table(name);
    let kinds = t.cols.iter().map(|c| c.kind).filter(|k| *k != Kind::Now);
    let values: Vec<Value> = kinds.zip(values).map(|(k, v)| fit(d, k, v)).collect();
    conn.execute(&insert_sql(d, t), &values)?;
    Ok(())
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn opt(s: &Option<String>) -> Value {
    s.as_deref().map_or(Value::Null, text)
}

fn delete_of(conn: &mut dyn Conn, name: &str, job: &str, table: &str) -> Result<()> {
    let d = conn.dialect();
    conn.execute(
        &format!(
            "DELETE FROM {} WHERE {} = {} AND {} = {}",
            d.quote(name),
            d.quote("job"),
            d.param_as(1, "text"),
            d.quote("table_name"),
            d.param_as(2, "text")
        ),
        &[text(job), text(table)],
    )?;
    Ok(())
}

/// Forget the rejects of a previous run of `job` into `table`.
pub fn clear_rejects(conn: &mut dyn Conn, job: &str, table: &str) -> Result<()> {
    delete_of(conn, REJECTS_TABLE, job, table)
}

/// Record rejected rows in `_rejects`.
pub fn write_rejects(
    conn: &mut dyn Conn,
    run_id: &str,
    job: &str,
    table: &str,
    origin: &str,
    rejects: &[Reject],
) -> Result<()> {
    let d = conn.dialect();
    for r in rejects {
        // the record is JSON: its values are made to fit before encoding
        let record: Vec<(String, Option<String>)> = r
            .record
            .iter()
            .map(|(k, v)| (no_nul(d, k), v.as_deref().map(|v| no_nul(d, v))))
            .collect();
        insert(
            conn,
            REJECTS_TABLE,
            vec![
                text(run_id),
                text(job),
                text(table),
                text(origin),
                Value::Int(r.row as i64),
                text(&r.reason),
                text(&r.detail),
                Value::Text(record_json(&record)),
            ],
        )?;
    }
    Ok(())
}

/// Record a table's merges in `_merges`, replacing the previous run's.
pub fn record_merges(
    conn: &mut dyn Conn,
    run_id: &str,
    job: &str,
    table: &str,
    merges: &[MergeRecord],
) -> Result<()> {
    delete_of(conn, MERGES_TABLE, job, table)?;
    for m in merges {
        insert(
            conn,
            MERGES_TABLE,
            vec![
                text(run_id),
                text(job),
                text(table),
                text(&m.key),
                Value::Int(m.kept_row as i64),
                Value::Int(m.merged_row as i64),
                opt(&m.kept_id),
                opt(&m.merged_id),
            ],
        )?;
    }
    Ok(())
}

/// Record the run in `_repaero_runs` (again, for a run recorded before).
pub fn record_run(conn: &mut dyn Conn, rec: &RunRecord) -> Result<()> {
    insert(
        conn,
        RUNS_TABLE,
        vec![
            text(&rec.run_id),
            text(&rec.job),
            text(&rec.started_at),
            text(&rec.finished_at),
            text(&rec.status),
            Value::Bool(rec.dry_run),
            text(&rec.source),
            text(&rec.tally),
        ],
    )
}

/// The watermark of `job`'s last incremental sync of `table`.
pub fn get_state(conn: &mut dyn Conn, job: &str, table: &str) -> Result<Option<String>> {
    let d = conn.dialect();
    conn.query_one(
        &format!(
            "SELECT {} FROM {} WHERE {} = {} AND {} = {}",
            d.quote("watermark"),
            d.quote(STATE_TABLE),
            d.quote("job"),
            d.param_as(1, "text"),
            d.quote("table_name"),
            d.param_as(2, "text")
        ),
        &[text(job), text(table)],
    )
}

/// Keep a watermark, in the job's transaction: it is committed with the
/// rows it covers, or not at all.
pub fn set_state(conn: &mut dyn Conn, st: &SyncState) -> Result<()> {
    insert(
        conn,
        STATE_TABLE,
        vec![
            text(&st.job),
            text(&st.table),
            text(&st.update_key),
            text(&st.watermark),
            text(&st.run_id),
        ],
    )
}

/// The latest committed (not dry) run of `job`, if any.
pub fn latest_run(conn: &mut dyn Conn, job: &str) -> Result<Option<String>> {
    if !conn.table_exists(RUNS_TABLE)? {
        return Ok(None);
    }
    let d = conn.dialect();
    let q = |c: &str| d.quote(c);
    conn.query_one(
        &format!(
            "SELECT {} FROM {} WHERE {} = {} AND {} = 'committed' ORDER BY {} DESC",
            q("run_id"),
            q(RUNS_TABLE),
            q("job"),
            d.param_as(1, "text"),
            q("status"),
            q("finished_at")
        ),
        &[text(job)],
    )
}

/// `WHERE job = $1 AND table_name = $2`.
fn of_job_table(d: Dialect) -> String {
    format!(
        "{} = {} AND {} = {}",
        d.quote("job"),
        d.param_as(1, "text"),
        d.quote("table_name"),
        d.param_as(2, "text")
    )
}

/// The records (as read, JSON text) of the rows the latest run of `job`
/// rejected from `table`, each once.
pub fn rejected_records(conn: &mut dyn Conn, job: &str, table: &str) -> Result<Vec<String>> {
    let d = conn.dialect();
    let record = match d {
        // a CLOB compares only as text
        Dialect::Oracle => "TO_CHAR(RECORD)".to_string(),
        _ => d.quote("record"),
    };
    let rows = conn.query(
        &format!(
            "SELECT DISTINCT {record} FROM {} WHERE {}",
            d.quote(REJECTS_TABLE),
            of_job_table(d)
        ),
        &[text(job), text(table)],
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect())
}

/// The merges the latest run of `job` made in `table`: (merged id, kept
/// id), ids `None` when the dedupe has no `id`.
pub fn merges(
    conn: &mut dyn Conn,
    job: &str,
    table: &str,
) -> Result<Vec<(Option<String>, Option<String>)>> {
    let d = conn.dialect();
    let rows = conn.query(
        &format!(
            "SELECT {}, {} FROM {} WHERE {}",
            d.quote("merged_id"),
            d.quote("kept_id"),
            d.quote(MERGES_TABLE),
            of_job_table(d)
        ),
        &[text(job), text(table)],
    )?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let mut r = r.into_iter();
            (r.next().flatten(), r.next().flatten())
        })
        .collect())
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

    fn squash(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn the_tables_are_the_ones_each_engine_had() {
        // the DDL each engine's sink wrote before the ledger was shared
        assert_eq!(
            create_sql(Dialect::Sqlite, table(REJECTS_TABLE)),
            "CREATE TABLE IF NOT EXISTS \"_rejects\" (\"run_id\" TEXT NOT NULL, \"job\" TEXT NOT NULL, \"table_name\" TEXT NOT NULL, \"source\" TEXT NOT NULL, \"source_row\" INTEGER, \"reason\" TEXT NOT NULL, \"detail\" TEXT NOT NULL, \"record\" TEXT NOT NULL)"
        );
        assert_eq!(
            create_sql(Dialect::Postgres, table(RUNS_TABLE)),
            "CREATE TABLE IF NOT EXISTS \"_repaero_runs\" (\"run_id\" text NOT NULL, \"job\" text NOT NULL, \"started_at\" timestamptz NOT NULL, \"finished_at\" timestamptz NOT NULL, \"status\" text NOT NULL, \"dry_run\" boolean NOT NULL, \"source\" text NOT NULL, \"tally\" jsonb NOT NULL, PRIMARY KEY (\"run_id\", \"job\"))"
        );
        assert_eq!(
            squash(&create_sql(Dialect::Oracle, table(STATE_TABLE))),
            squash(
                "CREATE TABLE \"_REPAERO_STATE\" (\"JOB\" VARCHAR2(128) NOT NULL, \"TABLE_NAME\" VARCHAR2(128) NOT NULL, \
                 \"UPDATE_KEY\" VARCHAR2(128) NOT NULL, \"WATERMARK\" VARCHAR2(400) NOT NULL, \"RUN_ID\" VARCHAR2(64) NOT NULL, \
                 \"UPDATED_AT\" TIMESTAMP DEFAULT SYS_EXTRACT_UTC(SYSTIMESTAMP) NOT NULL, \
                 CONSTRAINT \"_REPAERO_STATE_PK\" PRIMARY KEY (\"JOB\", \"TABLE_NAME\"))"
            )
        );
        assert_eq!(
            squash(&create_sql(Dialect::Oracle, table(REJECTS_TABLE))),
            squash(
                "CREATE TABLE \"_REJECTS\" (\"RUN_ID\" VARCHAR2(64) NOT NULL, \"JOB\" VARCHAR2(128) NOT NULL, \
                 \"TABLE_NAME\" VARCHAR2(128) NOT NULL, \"SOURCE\" VARCHAR2(4000) NOT NULL, \"SOURCE_ROW\" NUMBER(19), \
                 \"REASON\" VARCHAR2(4000) NOT NULL, \"DETAIL\" VARCHAR2(4000) NOT NULL, \"RECORD\" CLOB NOT NULL)"
            )
        );
    }

    #[test]
    fn rows_go_in_with_typed_parameters_per_engine() {
        assert_eq!(
            insert_sql(Dialect::Postgres, table(STATE_TABLE)),
            "INSERT INTO \"_repaero_state\" (\"job\", \"table_name\", \"update_key\", \"watermark\", \"run_id\", \"updated_at\") VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, now()) ON CONFLICT (\"job\", \"table_name\") DO UPDATE SET \"update_key\" = excluded.\"update_key\", \"watermark\" = excluded.\"watermark\", \"run_id\" = excluded.\"run_id\", \"updated_at\" = excluded.\"updated_at\""
        );
        let runs = insert_sql(Dialect::Postgres, table(RUNS_TABLE));
        assert!(runs.contains("$3::text::timestamptz"), "{runs}");
        assert!(runs.contains("$8::text::jsonb"), "{runs}");
        let ora = insert_sql(Dialect::Oracle, table(STATE_TABLE));
        assert!(
            ora.starts_with("MERGE INTO \"_REPAERO_STATE\" t USING (SELECT :1 AS \"JOB\""),
            "{ora}"
        );
        assert!(
            ora.contains("SYS_EXTRACT_UTC(SYSTIMESTAMP) AS \"UPDATED_AT\""),
            "{ora}"
        );
    }

    #[test]
    fn text_a_database_cannot_keep_is_made_to_fit() {
        assert_eq!(
            fit(Dialect::Postgres, Kind::Text, text("Z\0Z")),
            text("Z\u{2400}Z")
        );
        assert_eq!(fit(Dialect::Sqlite, Kind::Text, text("Z\0Z")), text("Z\0Z"));
        let long = "é".repeat(1500);
        let Value::Text(cut) = fit(Dialect::Oracle, Kind::Text, text(&long)) else {
            panic!()
        };
        assert_eq!(cut.chars().count(), ORACLE_TEXT_CHARS);
    }

    #[test]
    fn record_json_keeps_order_and_nulls() {
        let r = vec![
            ("b".to_string(), Some("1".to_string())),
            ("a".to_string(), None),
        ];
        assert_eq!(record_json(&r), "{\"b\":\"1\",\"a\":null}");
    }

    #[test]
    fn the_ledger_round_trips_in_sqlite() {
        let mut c = crate::db::sqlite::SqliteConn::open(":memory:", false).unwrap();
        let conn: &mut dyn Conn = &mut c;
        ensure(conn).unwrap();
        ensure(conn).unwrap();
        let st = SyncState {
            job: "billing".into(),
            table: "invoices".into(),
            update_key: "modifie_le".into(),
            watermark: "2026-11-01 10:00:00".into(),
            run_id: "r1".into(),
        };
        set_state(conn, &st).unwrap();
        set_state(
            conn,
            &SyncState {
                watermark: "2026-11-02 10:00:00".into(),
                ..st.clone()
            },
        )
        .unwrap();
        assert_eq!(
            get_state(conn, "billing", "invoices").unwrap().as_deref(),
            Some("2026-11-02 10:00:00")
        );
        let rec = RunRecord {
            run_id: "r1".into(),
            job: "billing".into(),
            started_at: "2026-11-30T10:00:00+00:00".into(),
            finished_at: "2026-11-30T10:00:01+00:00".into(),
            status: "committed".into(),
            dry_run: false,
            source: "pg".into(),
            tally: "[]".into(),
        };
        record_run(conn, &rec).unwrap();
        record_run(conn, &rec).unwrap();
        assert_eq!(conn.count_rows(RUNS_TABLE).unwrap(), Some(1));
        assert_eq!(latest_run(conn, "billing").unwrap().as_deref(), Some("r1"));
        let r = Reject {
            row: 7,
            reason: "quantity: below 0".into(),
            detail: "-2".into(),
            record: vec![("quantity".into(), Some("-2".into()))],
        };
        write_rejects(conn, "r1", "stock", "parts", "stock.xlsx", &[r.clone(), r]).unwrap();
        assert_eq!(conn.count_rows(REJECTS_TABLE).unwrap(), Some(2));
        clear_rejects(conn, "stock", "parts").unwrap();
        assert_eq!(conn.count_rows(REJECTS_TABLE).unwrap(), Some(0));
    }
}
