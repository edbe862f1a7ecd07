//! PostgreSQL source: a table or a query, streamed with `COPY (…) TO
//! STDOUT` in text format, parsed chunk by chunk (never a whole table in
//! memory). Every type has a text form, so any column reads; values of
//! non-text types are flagged as typed (canonical) text. TLS and errors as
//! for the PostgreSQL target (`sslmode`, the password never shown).

use std::sync::mpsc::SyncSender;

use futures_util::StreamExt;
use tokio_postgres::types::Type;

use serde::Deserialize;

use super::{
    Capabilities, CellKinds, DeclaredColumn, ForeignKey, Kind, Message, ReadStats, Source,
    SourceColumn, TableInfo, TableKeys, TableReader, TableRequest, select_columns,
};
use crate::batch::BatchBuilder;
use crate::config::mapping::ColumnType;
use crate::config::redact_url;
use crate::db::postgres::{PgConn, pg_error};
use crate::db::{Dialect, Row};
use crate::error::{Error, Result};

pub struct PgSource {
    url: String,
    label: String,
    tables: Vec<TableInfo>,
    /// The connection queries reuse (validation, rowdiff), opened on first use.
    queries: std::sync::Mutex<Option<PgConn>>,
}

/// Quote an identifier, or each part of a `schema.table` name.
pub fn quote_name(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

fn is_text(t: &Type) -> bool {
    matches!(
        *t,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::CHAR
    )
}

impl PgSource {
    /// Connect once: check the URL and list the tables of the current schema
    /// with their estimated row counts.
    pub fn open(url: &str) -> Result<PgSource> {
        let conn = PgConn::connect(url)?;
        let rows = conn.rows(
            "SELECT c.relname::text, GREATEST(c.reltuples, 0)::bigint
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm')
               AND c.relname NOT LIKE '\\_repaero%' AND c.relname NOT IN ('_rejects', '_merges')
             ORDER BY 1",
            &[],
        )?;
        let tables = rows
            .iter()
            .map(|r| TableInfo {
                name: r.get(0),
                hidden: false,
                rows: Some(r.get::<_, i64>(1) as u64),
            })
            .collect();
        Ok(PgSource {
            url: url.to_string(),
            label: redact_url(url),
            tables,
            queries: std::sync::Mutex::new(None),
        })
    }
}

/// `[sources.<name>]` with `kind = "postgres"`: a PostgreSQL database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgConfig {
    /// `postgres://user:${PGPASSWORD}@host/db?sslmode=require`, or the
    /// libpq `host=… dbname=…` form.
    pub url: String,
}

pub const KIND: Kind = Kind {
    name: "postgres",
    open: |name, settings| {
        let c: PgConfig = super::settings(name, "postgres", settings)?;
        Ok(Box::new(PgSource::open(&c.url)?))
    },
    check: |settings| super::read_settings::<PgConfig>(settings).map(drop),
    open_file: None,
    sniff: None,
};

impl Source for PgSource {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn tables(&self) -> Result<Vec<TableInfo>> {
        Ok(self.tables.clone())
    }

    fn read(&self, req: TableRequest) -> Result<TableReader> {
        let origin = format!(
            "{} › {}",
            self.label,
            req.query.as_deref().map_or(req.table.as_str(), |_| "query")
        );
        let estimate = self
            .tables
            .iter()
            .find(|t| t.name == req.table)
            .and_then(|t| t.rows);
        let url = self.url.clone();
        let origin2 = origin.clone();
        TableReader::spawn(origin, estimate, move |tx| {
            read_table(&url, &origin2, req, tx)
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            incremental: true,
            sql: Some(Dialect::Postgres),
        }
    }

    fn declared_columns(&self, table: &str) -> Result<Option<Vec<DeclaredColumn>>> {
        let conn = PgConn::connect_local(&self.url)?;
        let rows = conn.rows(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                    t.typname::text
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_type t ON t.oid = a.atttypid
             WHERE n.nspname = current_schema() AND c.relname = $1
               AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&table],
        )?;
        Ok(Some(
            rows.iter()
                .map(|r| {
                    let typname: String = r.get(3);
                    DeclaredColumn {
                        name: r.get(0),
                        source_type: r.get(1),
                        nullable: !r.get::<_, bool>(2),
                        target_type: pg_target_type(&typname),
                    }
                })
                .collect(),
        ))
    }

    fn keys(&self, table: &str) -> Result<Option<TableKeys>> {
        let conn = PgConn::connect_local(&self.url)?;
        let rows = conn.rows(
            "SELECT k.conname::text, k.contype::text,
                    ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
                          JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n
                          ORDER BY u.i),
                    f.relname::text,
                    ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
                          JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n
                          ORDER BY u.i)
             FROM pg_constraint k
             JOIN pg_class c ON c.oid = k.conrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_class f ON f.oid = k.confrelid
             WHERE n.nspname = current_schema() AND c.relname = $1 AND k.contype IN ('p', 'f')
             ORDER BY k.conname",
            &[&table],
        )?;
        let mut keys = TableKeys::default();
        for r in &rows {
            let name: String = r.get(0);
            let kind: String = r.get(1);
            let columns: Vec<String> = r.get(2);
            if kind == "p" {
                keys.primary = columns;
                keys.primary_name = Some(name);
            } else if let Some(ref_table) = r.get::<_, Option<String>>(3) {
                keys.foreign.push(ForeignKey {
                    name,
                    columns,
                    ref_table,
                    ref_columns: r.get(4),
                    enforced: true,
                });
            }
        }
        Ok(Some(keys))
    }

    /// Run a query on the source (validation, rowdiff); values as text.
    fn query(&self, sql: &str) -> Result<Vec<Row>> {
        let mut guard = self
            .queries
            .lock()
            .map_err(|_| Error::runtime("the source's query connection was poisoned"))?;
        if guard.is_none() {
            let conn = PgConn::connect_local(&self.url)?;
            // these queries only read (validation, rowdiff), whatever SQL
            // a validation file holds: every transaction read-only
            conn.batch(
                "SET DateStyle = ISO, YMD; SET TimeZone = 'UTC'; SET extra_float_digits = 3; \
                 SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            )?;
            *guard = Some(conn);
        }
        let conn = guard
            .as_ref()
            .ok_or_else(|| Error::runtime("no source connection"))?;
        conn.simple(sql)
            .map_err(|e| Error::input(format!("{}: {e}", self.label)))
    }
}

/// The target type of a PostgreSQL type (`pg_type.typname`).
fn pg_target_type(typname: &str) -> ColumnType {
    match typname {
        "int2" | "int4" | "int8" | "oid" => ColumnType::Integer,
        "numeric" | "money" => ColumnType::Decimal,
        "float4" | "float8" => ColumnType::Float,
        "bool" => ColumnType::Boolean,
        "date" => ColumnType::Date,
        "timestamp" | "timestamptz" => ColumnType::Datetime,
        "time" => ColumnType::Time,
        "bytea" => ColumnType::Binary,
        _ => ColumnType::Text,
    }
}

/// The SELECT a request reads: its query, or its table; with its filter.
fn select_sql(req: &TableRequest) -> String {
    let base = match &req.query {
        Some(q) => format!("SELECT * FROM ({q}) AS repaero_q"),
        None => format!("SELECT * FROM {}", quote_name(&req.table)),
    };
    match &req.filter {
        Some(f) => format!("SELECT * FROM ({base}) AS repaero_f WHERE {f}"),
        None => base,
    }
}

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The condition of an incremental read: rows changed since the watermark,
/// and rows whose update key is NULL (never skipped: they cannot be known
/// unchanged).
fn since_filter(column: &str, after: &str) -> String {
    let c = quote_name(column);
    format!("({c} > {} OR {c} IS NULL)", literal(after))
}

/// How values of a type compare in their text form.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Order {
    Integer,
    Number,
    /// ISO dates and times (with the session in UTC), text.
    Lexical,
}

fn order_of(t: &Type) -> Order {
    match *t {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => Order::Integer,
        Type::NUMERIC | Type::FLOAT4 | Type::FLOAT8 => Order::Number,
        _ => Order::Lexical,
    }
}

/// Whether `a` is above `b`, both text forms of one type.
fn above(order: Order, a: &str, b: &str) -> bool {
    match order {
        Order::Integer => match (a.parse::<i128>(), b.parse::<i128>()) {
            (Ok(x), Ok(y)) => x > y,
            _ => a > b,
        },
        Order::Number => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => x > y,
            _ => a > b,
        },
        Order::Lexical => a > b,
    }
}

fn read_table(url: &str, origin: &str, req: TableRequest, tx: &SyncSender<Message>) -> Result<()> {
    let conn = PgConn::connect_local(url)?;
    // canonical text forms whatever the server's settings: ISO dates,
    // timestamptz in UTC, floats that read back exactly, bytea as hex; and
    // a source is only read (a mapping's query cannot write, whoever runs it)
    conn.batch(
        "SET DateStyle = ISO, YMD; SET TimeZone = 'UTC'; SET extra_float_digits = 3; \
         SET bytea_output = hex; SET IntervalStyle = iso_8601; \
         SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    )?;
    let mut select = select_sql(&req);
    // a query the server refuses is the configuration's fault (exit 2)
    let stmt = conn
        .run(conn.client.prepare(&format!("{select} LIMIT 0")))
        .map_err(|e| Error::input(format!("{origin}: {}", pg_error(&e))))?;
    let described: Vec<(String, Type)> = stmt
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.type_().clone()))
        .collect();
    let mut headers: Vec<SourceColumn> = described
        .iter()
        .enumerate()
        .map(|(i, (n, _))| SourceColumn {
            header: n.clone(),
            index: i as u32,
            hidden: false,
            feeds: None,
        })
        .collect();
    let (names, selected) = select_columns(origin, &mut headers, req.columns.as_deref())?;
    // read only the columns asked for, in the order they are asked
    let cols: Vec<String> = selected
        .iter()
        .flatten()
        .map(|i| quote_name(&described[*i].0))
        .collect();
    let typed: Vec<bool> = selected
        .iter()
        .map(|s| s.is_some_and(|i| !is_text(&described[i].1)))
        .collect();
    // incremental: which selected slot holds the update key, and how it orders
    let mut update_slot = None;
    if let Some(uk) = &req.update_key {
        let slot = names.iter().position(|n| *n == uk.column);
        let Some((slot, col)) = slot.and_then(|k| selected[k].map(|i| (k, i))) else {
            return Err(Error::config(format!(
                "{origin}: the update key `{}` is not a column of the source",
                uk.column
            )));
        };
        let (name, ty) = &described[col];
        if let Some(after) = &uk.after {
            select = format!(
                "SELECT * FROM ({select}) AS repaero_u WHERE {}",
                since_filter(name, after)
            );
        }
        update_slot = Some((slot, order_of(ty)));
    }
    if tx.send(Message::Columns(headers)).is_err() {
        return Ok(());
    }
    let copy = format!(
        "COPY (SELECT {} FROM ({select}) AS repaero_s) TO STDOUT",
        if cols.is_empty() {
            "1".to_string()
        } else {
            cols.join(", ")
        }
    );
    // where each selected slot is among the COPY's fields
    let mut field_of = Vec::with_capacity(selected.len());
    let mut k = 0;
    for s in &selected {
        field_of.push(s.map(|_| {
            k += 1;
            k - 1
        }));
    }
    let mut rows = Rows {
        builder: BatchBuilder::new(names.clone(), req.batch_size),
        kinds: vec![CellKinds::default(); names.len()],
        field_of,
        typed,
        update_slot,
        fields: Vec::new(),
        scratch: String::new(),
        n: 0,
        max_key: None,
        null_keys: 0,
        tx,
    };
    let result: Result<bool> = conn.run(async {
        let stream = conn
            .client
            .copy_out(copy.as_str())
            .await
            .map_err(|e| Error::input(format!("{origin}: {}", pg_error(&e))))?;
        // rows as they are ready, many per wake-up (one message per row)
        let stream = stream.ready_chunks(256);
        futures_util::pin_mut!(stream);
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunks) = stream.next().await {
            for chunk in chunks {
                let chunk =
                    chunk.map_err(|e| Error::runtime(format!("{origin}: {}", pg_error(&e))))?;
                // the server sends whole rows: read them where they are
                if pending.is_empty() && chunk.last() == Some(&b'\n') {
                    for line in chunk[..chunk.len() - 1].split(|b| *b == b'\n') {
                        if !rows.line(line)? {
                            return Ok(false);
                        }
                    }
                    continue;
                }
                pending.extend_from_slice(&chunk);
                let mut start = 0;
                while let Some(nl) = pending[start..].iter().position(|b| *b == b'\n') {
                    let line = &pending[start..start + nl];
                    start += nl + 1;
                    if !rows.line(line)? {
                        return Ok(false);
                    }
                }
                pending.drain(..start);
            }
        }
        Ok(true)
    });
    if !result? {
        return Ok(());
    }
    if !rows.builder.is_empty() {
        let df = rows.builder.take()?;
        if tx.send(Message::Batch(df)).is_err() {
            return Ok(());
        }
    }
    let _ = tx.send(Message::Done(ReadStats {
        data_rows: rows.n,
        kinds: names.into_iter().zip(rows.kinds).collect(),
        max_update_key: rows.max_key,
        null_update_key: rows.null_keys,
        ..Default::default()
    }));
    Ok(())
}

/// What reading the COPY's lines builds.
struct Rows<'a> {
    builder: BatchBuilder,
    kinds: Vec<CellKinds>,
    /// Per wanted column, its field in the COPY's lines.
    field_of: Vec<Option<usize>>,
    /// Per wanted column, whether its values are typed (not text).
    typed: Vec<bool>,
    /// The update key's slot and how it orders.
    update_slot: Option<(usize, Order)>,
    fields: Vec<Span>,
    scratch: String,
    n: u64,
    max_key: Option<String>,
    null_keys: u64,
    tx: &'a SyncSender<Message>,
}

impl Rows<'_> {
    /// One line of the COPY; `false` when the reader is no longer wanted.
    fn line(&mut self, line: &[u8]) -> Result<bool> {
        // one UTF-8 check per line; a line that fails it (the server's
        // encoding is not UTF-8) is read with U+FFFD
        let line: std::borrow::Cow<'_, str> = match std::str::from_utf8(line) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(line),
        };
        let line: &str = &line;
        split_fields(line, &mut self.fields, &mut self.scratch);
        let (fields, scratch, field_of) = (&self.fields, &self.scratch, &self.field_of);
        let value = |slot: usize| -> Option<&str> {
            field_of[slot]
                .and_then(|f| fields.get(f))
                .and_then(|sp| sp.get(line, scratch))
        };
        self.n += 1;
        if let Some((slot, order)) = self.update_slot {
            match value(slot) {
                None => self.null_keys += 1,
                Some(v) => {
                    if self.max_key.as_deref().is_none_or(|m| above(order, v, m)) {
                        self.max_key = Some(v.to_string());
                    }
                }
            }
        }
        for (slot, k) in self.kinds.iter_mut().enumerate() {
            match value(slot) {
                None => k.empty += 1,
                Some(_) if self.typed[slot] => k.number += 1,
                Some(_) => k.text += 1,
            }
        }
        let typed = &self.typed;
        self.builder.push_row(
            self.n,
            (0..field_of.len()).map(|slot| value(slot).map(|s| (s, typed[slot]))),
        );
        if self.builder.is_full() {
            let df = self.builder.take()?;
            if self.tx.send(Message::Batch(df)).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Where a field's text is: in the line as received, or decoded into the
/// scratch buffer (it had escapes, or was not UTF-8).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Span {
    Null,
    Line(usize, usize),
    Scratch(usize, usize),
}

impl Span {
    fn get<'a>(&self, line: &'a str, scratch: &'a str) -> Option<&'a str> {
        match *self {
            Span::Null => None,
            Span::Line(a, b) => line.get(a..b),
            Span::Scratch(a, b) => scratch.get(a..b),
        }
    }
}

/// Split one line of COPY text format into fields: tab-separated, `\N` is
/// NULL, backslash escapes decoded. A field without escapes stays in the
/// line (no copy).
fn split_fields(line: &str, out: &mut Vec<Span>, scratch: &mut String) {
    out.clear();
    scratch.clear();
    let mut start = 0;
    // tabs are ASCII: every split falls on a character boundary
    for raw in line.as_bytes().split(|b| *b == b'\t') {
        let (a, b) = (start, start + raw.len());
        start = b + 1;
        if raw == b"\\N" {
            out.push(Span::Null);
            continue;
        }
        if !raw.contains(&b'\\') {
            out.push(Span::Line(a, b));
            continue;
        }
        let mut bytes = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            let c = raw[i];
            if c != b'\\' || i + 1 == raw.len() {
                bytes.push(c);
                i += 1;
                continue;
            }
            let e = raw[i + 1];
            i += 2;
            match e {
                b'b' => bytes.push(8),
                b'f' => bytes.push(12),
                b'n' => bytes.push(b'\n'),
                b'r' => bytes.push(b'\r'),
                b't' => bytes.push(b'\t'),
                b'v' => bytes.push(11),
                b'0'..=b'7' => {
                    let mut v = (e - b'0') as u32;
                    let mut k = 0;
                    while k < 2 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                        v = v * 8 + (raw[i] - b'0') as u32;
                        i += 1;
                        k += 1;
                    }
                    bytes.push(v as u8);
                }
                b'x' => {
                    let mut v = 0u32;
                    let mut k = 0;
                    while k < 2 && i < raw.len() && raw[i].is_ascii_hexdigit() {
                        v = v * 16 + (raw[i] as char).to_digit(16).unwrap_or(0);
                        i += 1;
                        k += 1;
                    }
                    bytes.push(v as u8);
                }
                other => bytes.push(other),
            }
        }
        let at = scratch.len();
        scratch.push_str(&String::from_utf8_lossy(&bytes));
        out.push(Span::Scratch(at, scratch.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &[u8]) -> Vec<Option<String>> {
        let (mut out, mut scratch) = (Vec::new(), String::new());
        let line = String::from_utf8_lossy(line);
        let line: &str = &line;
        split_fields(line, &mut out, &mut scratch);
        out.iter()
            .map(|sp| sp.get(line, &scratch).map(|s| s.to_string()))
            .collect()
    }

    #[test]
    fn copy_text_fields() {
        assert_eq!(
            fields(b"1\t\\N\tligne 1\\nligne 2\tun\\ttab\t\\\\x01\tcaf\xc3\xa9"),
            vec![
                Some("1".into()),
                None,
                Some("ligne 1\nligne 2".into()),
                Some("un\ttab".into()),
                Some("\\x01".into()),
                Some("café".into())
            ]
        );
        assert_eq!(fields(b"\\101\\x42"), vec![Some("AB".into())]);
        assert_eq!(fields(b""), vec![Some(String::new())]);
        // not UTF-8: kept, with the replacement character
        assert_eq!(
            fields(b"a\xffb\t2"),
            vec![Some("a\u{fffd}b".into()), Some("2".into())]
        );
    }

    #[test]
    fn selects() {
        let mut req = TableRequest::all("factures");
        req.filter = Some("\"modifie_le\" >= '2026-01-01'".into());
        assert_eq!(
            select_sql(&req),
            "SELECT * FROM (SELECT * FROM \"factures\") AS repaero_f WHERE \"modifie_le\" >= '2026-01-01'"
        );
        assert_eq!(quote_name("billing.factures"), "\"billing\".\"factures\"");
        assert_eq!(
            since_filter("modifie_le", "2026-11-29 10:00:00+00"),
            "(\"modifie_le\" > '2026-11-29 10:00:00+00' OR \"modifie_le\" IS NULL)"
        );
        assert_eq!(literal("l'an"), "'l''an'");
    }

    #[test]
    fn watermarks_compare_by_type() {
        assert!(above(Order::Integer, "10", "9"));
        assert!(!above(Order::Integer, "9", "10"));
        assert!(above(Order::Number, "10.5", "9.75"));
        assert!(above(
            Order::Lexical,
            "2026-11-29 10:00:00.5+00",
            "2026-11-29 10:00:00+00"
        ));
        assert!(above(
            Order::Lexical,
            "2026-11-29 10:00:00.5",
            "2026-11-29 10:00:00"
        ));
        assert!(!above(Order::Lexical, "2026-01-09", "2026-01-10"));
    }
}
