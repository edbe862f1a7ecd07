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
use crate::batch::{BatchBuilder, MAX_BATCH_CELLS};
use crate::config::mapping::ColumnType;
use crate::config::redact_url;
use crate::db::pg_binary::{self, Step, Wire};
use crate::db::postgres::{PgConn, pg_error};
use crate::db::{Dialect, Row};
use crate::error::{Error, Result};
use polars::prelude::*;

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
    // every selected column of a type read in binary: the binary COPY,
    // values the mapper takes typed carried without a text round-trip
    let wires: Option<Vec<Wire>> = selected
        .iter()
        .flatten()
        .map(|i| Wire::of(&described[*i].1))
        .collect();
    if let Some(wires) = wires.filter(|w| !w.is_empty()) {
        let carry: Vec<Option<ColumnType>> = match req.columns.as_deref() {
            Some(w) => w.iter().map(|c| c.carry).collect(),
            None => vec![None; names.len()],
        };
        let copy = format!(
            "COPY (SELECT {} FROM ({select}) AS repaero_s) TO STDOUT (FORMAT binary)",
            cols.join(", ")
        );
        return read_binary(
            &conn,
            origin,
            &copy,
            names,
            &selected,
            &wires,
            &carry,
            update_slot,
            req.batch_size,
            tx,
        );
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

/// One column of a binary read, as it is built.
enum Slot {
    /// Text: of a text column, or the server's text of a value the mapper
    /// reads as text (typed, canonical).
    Text {
        b: StringChunkedBuilder,
        typed: Vec<bool>,
        wire: Wire,
    },
    /// A column the source does not have: NULLs.
    Missing(StringChunkedBuilder),
    /// Integers carried as they are (int2, int4, int8 → Int64).
    Int(Vec<Option<i64>>),
    /// Numerics carried as the f64 their text reads as, with their display
    /// scale, or their text when the f64 cannot show it back.
    Num {
        v: Vec<Option<f64>>,
        scale: Vec<Option<i32>>,
        text: Vec<Option<String>>,
    },
    /// Timestamps carried in microseconds since 2000-01-01 (timestamptz:
    /// in UTC).
    Micros(Vec<Option<i64>>, bool),
}

impl Slot {
    fn new(wire: Option<Wire>, carry: Option<ColumnType>, name: &str, cap: usize) -> Slot {
        match (wire, carry) {
            (None, _) => Slot::Missing(StringChunkedBuilder::new(name.into(), cap)),
            (Some(Wire::Int2 | Wire::Int4 | Wire::Int8), Some(ColumnType::Integer)) => {
                Slot::Int(Vec::with_capacity(cap))
            }
            (Some(Wire::Numeric), Some(ColumnType::Decimal)) => Slot::Num {
                v: Vec::with_capacity(cap),
                scale: Vec::with_capacity(cap),
                text: Vec::new(),
            },
            (Some(Wire::Timestamp), Some(ColumnType::Datetime)) => {
                Slot::Micros(Vec::with_capacity(cap), false)
            }
            (Some(Wire::Timestamptz), Some(ColumnType::Datetime)) => {
                Slot::Micros(Vec::with_capacity(cap), true)
            }
            (Some(wire), _) => Slot::Text {
                b: StringChunkedBuilder::new(name.into(), cap),
                typed: Vec::with_capacity(cap),
                wire,
            },
        }
    }

    /// The column built so far, and its typed flags (text columns with a
    /// typed value) or its decimals' scales and texts; the slot starts over.
    fn take(&mut self, name: &str, cap: usize) -> (Column, Vec<Column>) {
        let fresh = |wire: Option<Wire>, carry| Slot::new(wire, carry, name, cap);
        let next = match self {
            Slot::Text { wire, .. } => fresh(Some(*wire), None),
            Slot::Missing(_) => fresh(None, None),
            Slot::Int(_) => fresh(Some(Wire::Int8), Some(ColumnType::Integer)),
            Slot::Num { .. } => fresh(Some(Wire::Numeric), Some(ColumnType::Decimal)),
            Slot::Micros(_, tz) => fresh(
                Some(if *tz {
                    Wire::Timestamptz
                } else {
                    Wire::Timestamp
                }),
                Some(ColumnType::Datetime),
            ),
        };
        let label = name;
        let name: PlSmallStr = name.into();
        match std::mem::replace(self, next) {
            Slot::Text { b, typed, .. } => {
                let mut extra = Vec::new();
                if typed.iter().any(|t| *t) {
                    extra.push(
                        BooleanChunked::from_iter_values(
                            crate::batch::typed_column(label).as_str().into(),
                            typed.into_iter(),
                        )
                        .into_series()
                        .into_column(),
                    );
                }
                (b.finish().into_series().into_column(), extra)
            }
            Slot::Missing(b) => (b.finish().into_series().into_column(), Vec::new()),
            Slot::Int(v) => (
                Int64Chunked::from_iter_options(name, v.into_iter())
                    .into_series()
                    .into_column(),
                Vec::new(),
            ),
            Slot::Num { v, scale, mut text } => {
                let mut extra = vec![
                    Int32Chunked::from_iter_options(
                        crate::batch::carried_scale_column(label).as_str().into(),
                        scale.into_iter(),
                    )
                    .into_series()
                    .into_column(),
                ];
                if !text.is_empty() {
                    text.resize(v.len(), None);
                    extra.push(
                        StringChunked::from_iter_options(
                            crate::batch::carried_text_column(label).as_str().into(),
                            text.iter().map(|t| t.as_deref()),
                        )
                        .into_series()
                        .into_column(),
                    );
                }
                (
                    Float64Chunked::from_iter_options(name, v.into_iter())
                        .into_series()
                        .into_column(),
                    extra,
                )
            }
            Slot::Micros(v, tz) => (
                Int64Chunked::from_iter_options(name, v.into_iter())
                    .into_datetime(
                        TimeUnit::Microseconds,
                        tz.then_some(polars::prelude::TimeZone::UTC),
                    )
                    .into_series()
                    .into_column(),
                Vec::new(),
            ),
        }
    }
}

/// A value as a binary read takes it.
enum Got {
    Null,
    Int(i64),
    /// A numeric, with its display scale (`None`: its text is in the
    /// numeric scratch buffer).
    Num(f64, Option<u8>),
    Micros(i64),
    /// Its text is in the scratch buffer; `true` when typed.
    Text(bool),
    /// Its text is the field's bytes.
    Raw,
}

/// Read one field for its slot; `Err` names what it is not.
fn take_field(
    slot: &Slot,
    field: Option<&[u8]>,
    scratch: &mut String,
    num_scratch: &mut String,
) -> std::result::Result<Got, &'static str> {
    let Some(f) = field else {
        return Ok(Got::Null);
    };
    let wire = match slot {
        Slot::Missing(_) => return Ok(Got::Null),
        Slot::Int(_) => return pg_binary::int(f).map(Got::Int).ok_or("an integer"),
        Slot::Num { .. } => {
            return pg_binary::numeric_carried(f, num_scratch)
                .map(|(v, scale)| Got::Num(v, scale))
                .ok_or("a numeric");
        }
        Slot::Micros(..) => return pg_binary::i64_of(f).map(Got::Micros).ok_or("a timestamp"),
        Slot::Text { wire, .. } => *wire,
    };
    scratch.clear();
    match wire {
        Wire::Text => return Ok(Got::Raw),
        Wire::Bool => match f {
            [0] => scratch.push('f'),
            [_] => scratch.push('t'),
            _ => return Err("a boolean"),
        },
        Wire::Int2 | Wire::Int4 | Wire::Int8 => {
            scratch.push_str(itoa::Buffer::new().format(pg_binary::int(f).ok_or("an integer")?))
        }
        Wire::Numeric => {
            if !pg_binary::numeric_text(f, scratch) {
                return Err("a numeric");
            }
        }
        Wire::Timestamp | Wire::Timestamptz => pg_binary::timestamp_text(
            pg_binary::i64_of(f).ok_or("a timestamp")?,
            wire == Wire::Timestamptz,
            scratch,
        ),
        Wire::Date => pg_binary::date_text(pg_binary::i32_of(f).ok_or("a date")?, scratch),
    }
    Ok(Got::Text(true))
}

/// What reading the binary COPY builds.
struct BinRows<'a> {
    names: Vec<String>,
    slots: Vec<Slot>,
    /// Per wanted column, its field in the COPY's tuples.
    field_of: Vec<Option<usize>>,
    kinds: Vec<CellKinds>,
    rows: Vec<u64>,
    capacity: usize,
    update_slot: Option<(usize, Order)>,
    /// The highest update key, as text.
    max_key: Option<String>,
    /// The highest update key of a carried column (integer or
    /// microseconds), turned into its text at the end.
    max_carried: Option<i64>,
    null_keys: u64,
    n: u64,
    scratch: String,
    num_scratch: String,
    fields: Vec<Option<(usize, usize)>>,
    origin: &'a str,
    tx: &'a SyncSender<Message>,
}

impl BinRows<'_> {
    /// One tuple (its fields in `self.fields`, ranges of `b`); `false`
    /// when the reader is no longer wanted.
    fn tuple(&mut self, b: &[u8]) -> Result<bool> {
        self.n += 1;
        self.rows.push(self.n);
        for slot in 0..self.slots.len() {
            let field = self.field_of[slot]
                .and_then(|f| self.fields.get(f).copied())
                .flatten()
                .and_then(|(x, y)| b.get(x..y));
            let got = take_field(
                &self.slots[slot],
                field,
                &mut self.scratch,
                &mut self.num_scratch,
            )
            .map_err(|what| {
                Error::runtime(format!(
                    "{}: row {}, column {}: not {what} in the binary COPY",
                    self.origin, self.n, self.names[slot]
                ))
            })?;
            let key = self.update_slot.is_some_and(|(k, _)| k == slot);
            let kinds = &mut self.kinds[slot];
            match (&mut self.slots[slot], got) {
                (s, Got::Null) => {
                    kinds.empty += 1;
                    if key {
                        self.null_keys += 1;
                    }
                    match s {
                        Slot::Text { b, typed, .. } => {
                            b.append_null();
                            typed.push(false);
                        }
                        Slot::Missing(b) => b.append_null(),
                        Slot::Int(v) | Slot::Micros(v, _) => v.push(None),
                        Slot::Num { v, scale, .. } => {
                            v.push(None);
                            scale.push(None);
                        }
                    }
                }
                (Slot::Int(v), Got::Int(x)) | (Slot::Micros(v, _), Got::Micros(x)) => {
                    kinds.number += 1;
                    v.push(Some(x));
                    if key {
                        self.max_carried = Some(self.max_carried.map_or(x, |m| m.max(x)));
                    }
                }
                (Slot::Num { v, scale, text }, Got::Num(x, d)) => {
                    kinds.number += 1;
                    if d.is_none() {
                        text.resize(v.len(), None);
                        text.push(Some(self.num_scratch.clone()));
                    }
                    v.push(Some(x));
                    scale.push(d.map(i32::from));
                }
                (
                    Slot::Text {
                        b: builder, typed, ..
                    },
                    got,
                ) => {
                    let is_typed = matches!(got, Got::Text(true));
                    let text: std::borrow::Cow<'_, str> = match got {
                        Got::Raw => {
                            let f = field.unwrap_or_default();
                            // a value that is not UTF-8 is read with U+FFFD
                            match std::str::from_utf8(f) {
                                Ok(s) => std::borrow::Cow::Borrowed(s),
                                Err(_) => String::from_utf8_lossy(f),
                            }
                        }
                        _ => std::borrow::Cow::Borrowed(self.scratch.as_str()),
                    };
                    if is_typed {
                        kinds.number += 1;
                    } else {
                        kinds.text += 1;
                    }
                    if let Some((_, order)) = self.update_slot.filter(|_| key)
                        && self
                            .max_key
                            .as_deref()
                            .is_none_or(|m| above(order, &text, m))
                    {
                        self.max_key = Some(text.to_string());
                    }
                    builder.append_value(&text);
                    typed.push(is_typed);
                }
                _ => {
                    return Err(Error::runtime(format!(
                        "{}: column {}: a value read for another slot (this is a bug in repaero)",
                        self.origin, self.names[slot]
                    )));
                }
            }
        }
        if self.rows.len() >= self.capacity {
            let df = self.take()?;
            if self.tx.send(Message::Batch(df)).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn take(&mut self) -> Result<DataFrame> {
        let height = self.rows.len();
        let mut columns = Vec::with_capacity(self.slots.len() * 2 + 1);
        let mut flags = Vec::new();
        for (slot, name) in self.slots.iter_mut().zip(&self.names) {
            let (col, extra) = slot.take(name, self.capacity);
            columns.push(col);
            flags.extend(extra);
        }
        columns.extend(flags);
        let rows = std::mem::replace(&mut self.rows, Vec::with_capacity(self.capacity));
        columns.push(
            UInt64Chunked::from_vec(crate::batch::ROW_COLUMN.into(), rows)
                .into_series()
                .into_column(),
        );
        DataFrame::new(height, columns)
            .map_err(|e| Error::runtime(format!("building a batch: {e}")))
    }
}

/// Read a table through the binary COPY.
#[allow(clippy::too_many_arguments)]
fn read_binary(
    conn: &PgConn,
    origin: &str,
    copy: &str,
    names: Vec<String>,
    selected: &[Option<usize>],
    wires: &[Wire],
    carry: &[Option<ColumnType>],
    update_slot: Option<(usize, Order)>,
    batch_size: usize,
    tx: &SyncSender<Message>,
) -> Result<()> {
    let capacity = batch_size.min((MAX_BATCH_CELLS / names.len().max(1)).max(1));
    let mut field_of = Vec::with_capacity(selected.len());
    let mut slots = Vec::with_capacity(selected.len());
    let mut k = 0;
    for (slot, s) in selected.iter().enumerate() {
        let field = s.map(|_| {
            k += 1;
            k - 1
        });
        field_of.push(field);
        let wire = field.and_then(|f| wires.get(f).copied());
        slots.push(Slot::new(
            wire,
            carry.get(slot).copied().flatten(),
            &names[slot],
            capacity,
        ));
    }
    // the update key's watermark is the text the server writes: a carried
    // one is kept as a number and written once at the end
    let key_carried = update_slot.and_then(|(k, _)| match &slots[k] {
        Slot::Int(_) => Some(None),
        Slot::Micros(_, tz) => Some(Some(*tz)),
        _ => None,
    });
    let mut rows = BinRows {
        kinds: vec![CellKinds::default(); names.len()],
        names,
        slots,
        field_of,
        rows: Vec::with_capacity(capacity),
        capacity,
        update_slot,
        max_key: None,
        max_carried: None,
        null_keys: 0,
        n: 0,
        scratch: String::new(),
        num_scratch: String::new(),
        fields: Vec::new(),
        origin,
        tx,
    };
    let broken = |e: String| Error::runtime(format!("{origin}: {e}"));
    let result: Result<bool> = conn.run(async {
        let stream = conn
            .client
            .copy_out(copy)
            .await
            .map_err(|e| Error::input(format!("{origin}: {}", pg_error(&e))))?;
        let stream = stream.ready_chunks(256);
        futures_util::pin_mut!(stream);
        let mut pending: Vec<u8> = Vec::new();
        let mut header = false;
        let mut end = false;
        // tuples read where they are: in the chunk as received, or in
        // `pending` when one spans two chunks
        let eat = |b: &[u8],
                   header: &mut bool,
                   end: &mut bool,
                   rows: &mut BinRows<'_>|
         -> Result<Option<usize>> {
            let mut at = 0;
            if !*header {
                match pg_binary::header(b).map_err(broken)? {
                    Some(n) => {
                        at = n;
                        *header = true;
                    }
                    None => return Ok(Some(0)),
                }
            }
            while !*end {
                match pg_binary::tuple(&b[at..], &mut rows.fields).map_err(broken)? {
                    Step::Row(n) => {
                        if !rows.tuple(&b[at..at + n])? {
                            return Ok(None);
                        }
                        at += n;
                    }
                    Step::End => {
                        *end = true;
                        at += 2;
                    }
                    Step::More => break,
                }
            }
            Ok(Some(at))
        };
        while let Some(chunks) = stream.next().await {
            for chunk in chunks {
                let chunk =
                    chunk.map_err(|e| Error::runtime(format!("{origin}: {}", pg_error(&e))))?;
                if pending.is_empty() {
                    match eat(&chunk, &mut header, &mut end, &mut rows)? {
                        None => return Ok(false),
                        Some(used) => pending.extend_from_slice(&chunk[used..]),
                    }
                    continue;
                }
                pending.extend_from_slice(&chunk);
                match eat(&pending, &mut header, &mut end, &mut rows)? {
                    None => return Ok(false),
                    Some(used) => {
                        pending.drain(..used);
                    }
                }
            }
        }
        if !end || !pending.is_empty() {
            return Err(broken(
                "the binary COPY ended in the middle of a tuple".into(),
            ));
        }
        Ok(true)
    });
    if !result? {
        return Ok(());
    }
    if !rows.rows.is_empty() {
        let df = rows.take()?;
        if tx.send(Message::Batch(df)).is_err() {
            return Ok(());
        }
    }
    let max_update_key = match (key_carried, rows.max_carried) {
        (Some(None), Some(x)) => Some(x.to_string()),
        (Some(Some(tz)), Some(us)) => {
            let mut s = String::new();
            pg_binary::timestamp_text(us, tz, &mut s);
            Some(s)
        }
        (Some(_), None) => None,
        (None, _) => rows.max_key,
    };
    let _ = tx.send(Message::Done(ReadStats {
        data_rows: rows.n,
        kinds: rows.names.into_iter().zip(rows.kinds).collect(),
        max_update_key,
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
