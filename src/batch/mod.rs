//! Typed batches: the polars `DataFrame`s that flow from transforms to
//! sinks, and row-wise access to them.
//!
//! Columns are typed after the mapping (`text` → String, `integer` → Int64,
//! `decimal`/`float` → Float64, `boolean`, `date` → Date, `datetime` →
//! Datetime(ms)). Columns whose name starts with `__` (the source row
//! number) travel with the rows but are never written.

pub mod outcome;
pub mod parse;
pub mod raw;

pub use outcome::{MergeOp, MergeRecord, Reject};
pub use raw::{
    BatchBuilder, ERROR_COLUMN, ERROR_DETAIL_COLUMN, MAX_BATCH_CELLS, ROW_COLUMN,
    carried_scale_column, carried_text_column, typed_column,
};

use std::fmt::Write as _;

use polars::prelude::*;

use crate::config::ColumnType;
use crate::error::{Error, Result};

/// The polars type a target column is held in.
pub fn dtype_of(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::Text => DataType::String,
        ColumnType::Integer => DataType::Int64,
        ColumnType::Decimal | ColumnType::Float => DataType::Float64,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Date => DataType::Date,
        ColumnType::Datetime => DataType::Datetime(TimeUnit::Milliseconds, None),
        ColumnType::Time => DataType::Time,
        ColumnType::Binary => DataType::Binary,
    }
}

/// A value of a target column read back from a database as text (the
/// form `select_text` returns); `Null` when it does not parse.
pub fn value_from_text(ty: ColumnType, s: &str) -> Value {
    use crate::batch::parse;
    let v = match ty {
        ColumnType::Text => Some(Value::Text(s.to_string())),
        ColumnType::Integer => s.parse().ok().map(Value::Int),
        ColumnType::Decimal | ColumnType::Float => s.parse().ok().map(Value::Float),
        ColumnType::Boolean => parse::parse_bool(s).map(Value::Bool),
        ColumnType::Date => parse::parse_date(s, &[]).map(|d| Value::Date(parse::epoch_days(d))),
        ColumnType::Datetime => {
            parse::parse_datetime(s, &[]).map(|d| Value::Datetime(parse::epoch_millis(d)))
        }
        ColumnType::Time => parse::parse_time_of_day(s).map(Value::Time),
        ColumnType::Binary => hex::decode(s.strip_prefix("\\x").unwrap_or(s))
            .ok()
            .map(Value::Binary),
    };
    v.unwrap_or(Value::Null)
}

/// Whether a column is bookkeeping (never written).
pub fn is_internal(name: &str) -> bool {
    name.starts_with("__")
}

/// One value, borrowed from a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Null,
    Text(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Days since 1970-01-01.
    Date(i32),
    /// Milliseconds since 1970-01-01T00:00:00.
    Datetime(i64),
    /// Nanoseconds since midnight.
    Time(i64),
    Binary(&'a [u8]),
}

/// One owned value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Date(i32),
    Datetime(i64),
    Time(i64),
    Binary(Vec<u8>),
}

impl ValueRef<'_> {
    pub fn to_owned(self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::Text(s) => Value::Text(s.to_string()),
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Float(f) => Value::Float(f),
            ValueRef::Bool(b) => Value::Bool(b),
            ValueRef::Date(d) => Value::Date(d),
            ValueRef::Datetime(t) => Value::Datetime(t),
            ValueRef::Time(t) => Value::Time(t),
            ValueRef::Binary(b) => Value::Binary(b.to_vec()),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, ValueRef::Null)
    }

    /// Canonical text, as used for keys, reference checks and reports.
    pub fn to_text(&self) -> Option<String> {
        match self {
            ValueRef::Null => None,
            ValueRef::Text(s) => Some(s.to_string()),
            ValueRef::Int(i) => Some(i.to_string()),
            ValueRef::Float(f) => Some(format_float(*f)),
            ValueRef::Bool(b) => Some(b.to_string()),
            ValueRef::Date(d) => Some(date_text(*d)),
            ValueRef::Datetime(t) => Some(datetime_text(*t)),
            ValueRef::Time(t) => Some(time_text(*t)),
            ValueRef::Binary(b) => Some(hex::encode(b)),
        }
    }

    /// Append a type-tagged, unambiguous encoding (for dedupe keys).
    pub fn encode_key(&self, out: &mut Vec<u8>) {
        match self {
            ValueRef::Null => out.push(0),
            ValueRef::Text(s) => {
                out.push(1);
                out.extend_from_slice(&(s.len() as u64).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            ValueRef::Int(i) => {
                out.push(2);
                out.extend_from_slice(&i.to_le_bytes());
            }
            ValueRef::Float(f) => {
                out.push(3);
                // -0.0 and 0.0 are the same key.
                let f = if *f == 0.0 { 0.0 } else { *f };
                out.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            ValueRef::Bool(b) => out.extend_from_slice(&[4, *b as u8]),
            ValueRef::Date(d) => {
                out.push(5);
                out.extend_from_slice(&d.to_le_bytes());
            }
            ValueRef::Datetime(t) => {
                out.push(6);
                out.extend_from_slice(&t.to_le_bytes());
            }
            ValueRef::Time(t) => {
                out.push(7);
                out.extend_from_slice(&t.to_le_bytes());
            }
            ValueRef::Binary(b) => {
                out.push(8);
                out.extend_from_slice(&(b.len() as u64).to_le_bytes());
                out.extend_from_slice(b);
            }
        }
    }
}

impl Value {
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Text(s) => ValueRef::Text(s),
            Value::Int(i) => ValueRef::Int(*i),
            Value::Float(f) => ValueRef::Float(*f),
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Date(d) => ValueRef::Date(*d),
            Value::Datetime(t) => ValueRef::Datetime(*t),
            Value::Time(t) => ValueRef::Time(*t),
            Value::Binary(b) => ValueRef::Binary(b),
        }
    }
}

/// Shortest text that reads back as the same float.
pub fn format_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// `YYYY-MM-DD` for days since the Unix epoch.
pub fn date_text(days: i32) -> String {
    use chrono::Datelike;
    match chrono::NaiveDate::from_num_days_from_ce_opt(days + 719_163) {
        Some(d) => format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()),
        None => format!("day {days}"),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]` for milliseconds since the Unix epoch.
pub fn datetime_text(ms: i64) -> String {
    datetime_text_sep(ms, 'T')
}

/// [`datetime_text`] with `sep` between the date and the time (SQLite
/// stores a space). Digits are written by hand for the years 0–9999: a
/// bulk write formats one per row (4 % of the scans import on SQLite
/// through `format!`, docs/benchmarks.md).
pub fn datetime_text_sep(ms: i64, sep: char) -> String {
    use chrono::{Datelike, Timelike};
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(dt) => {
            let n = dt.naive_utc();
            let frac = ms.rem_euclid(1000) as u32;
            if !(0..=9999).contains(&n.year()) {
                let mut s = format!(
                    "{:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}",
                    n.year(),
                    n.month(),
                    n.day(),
                    n.hour(),
                    n.minute(),
                    n.second()
                );
                if frac != 0 {
                    s.push_str(&format!(".{frac:03}"));
                }
                return s;
            }
            let mut s = String::with_capacity(23);
            push_iso_datetime(&mut s, &n, Some(sep));
            s
        }
        None => format!("ms {ms}"),
    }
}

/// Append `YYYY-MM-DD`, then `<sep>hh:mm:ss`, then `.fff` when there are
/// milliseconds; with `sep = None`, the time (after a `T`) only when it is
/// not midnight. Years 0–9999 (a caller refuses or formats the others).
pub fn push_iso_datetime(b: &mut String, n: &chrono::NaiveDateTime, sep: Option<char>) {
    use chrono::{Datelike, Timelike};
    push_padded(b, n.year() as u32, 4);
    b.push('-');
    push_padded(b, n.month(), 2);
    b.push('-');
    push_padded(b, n.day(), 2);
    let ms = n.nanosecond() / 1_000_000;
    let sep = match sep {
        Some(c) => c,
        None if n.num_seconds_from_midnight() != 0 || ms != 0 => 'T',
        None => return,
    };
    b.push(sep);
    push_padded(b, n.hour(), 2);
    b.push(':');
    push_padded(b, n.minute(), 2);
    b.push(':');
    push_padded(b, n.second(), 2);
    if ms != 0 {
        b.push('.');
        push_padded(b, ms, 3);
    }
}

/// Append `v` in decimal, left-padded with zeros to `width` digits (a
/// wider value in full). Written by hand: date-times and scan line ids are
/// built once per value, and the formatting machinery took 4 % of a scans
/// import (docs/benchmarks.md).
pub fn push_padded(s: &mut String, v: u32, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(v);
    for _ in digits.len()..width {
        s.push('0');
    }
    s.push_str(digits);
}

/// `HH:MM:SS[.fff]` for nanoseconds since midnight.
pub fn time_text(ns: i64) -> String {
    let ms = ns.div_euclid(1_000_000);
    let s = ms / 1000;
    let mut t = format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
    if ms % 1000 != 0 {
        t.push_str(&format!(".{:03}", ms % 1000));
    }
    t
}

/// Typed, random access to one column of a batch.
#[derive(Clone, Copy)]
pub enum Cursor<'a> {
    Text(&'a <StringType as PolarsDataType>::Array),
    Int(&'a <Int64Type as PolarsDataType>::Array),
    UInt(&'a <UInt64Type as PolarsDataType>::Array),
    Float(&'a <Float64Type as PolarsDataType>::Array),
    Bool(&'a <BooleanType as PolarsDataType>::Array),
    Date(&'a <Int32Type as PolarsDataType>::Array),
    Datetime(&'a <Int64Type as PolarsDataType>::Array),
    Time(&'a <Int64Type as PolarsDataType>::Array),
    Binary(&'a <BinaryType as PolarsDataType>::Array),
    /// A column with no rows.
    Empty,
}

/// The single array of a rechunked column, or `None` when it has no rows.
fn single<'a, T: PolarsDataType>(
    ca: &'a ChunkedArray<T>,
    name: &str,
) -> Result<Option<&'a T::Array>> {
    let mut arrays = ca.downcast_iter();
    let first = arrays.next();
    if arrays.next().is_some() {
        return Err(Error::runtime(format!(
            "column {name}: a cursor needs a rechunked column (this is a bug in repaero)"
        )));
    }
    Ok(first)
}

impl<'a> Cursor<'a> {
    /// Access a column of a rechunked frame: O(1) `get`, straight on its
    /// Arrow array.
    pub fn new(col: &'a Column) -> Result<Cursor<'a>> {
        let name = col.name().to_string();
        let bad = |e: PolarsError| Error::runtime(format!("column {name}: {e}"));
        macro_rules! arr {
            ($ca:expr, $variant:ident) => {
                match single($ca, &name)? {
                    Some(a) => Cursor::$variant(a),
                    None => Cursor::Empty,
                }
            };
        }
        Ok(match col.dtype() {
            DataType::String => arr!(col.str().map_err(bad)?, Text),
            DataType::Int64 => arr!(col.i64().map_err(bad)?, Int),
            DataType::UInt64 => arr!(col.u64().map_err(bad)?, UInt),
            DataType::Float64 => arr!(col.f64().map_err(bad)?, Float),
            DataType::Boolean => arr!(col.bool().map_err(bad)?, Bool),
            DataType::Date => arr!(col.date().map_err(bad)?.physical(), Date),
            DataType::Datetime(TimeUnit::Milliseconds, _) => {
                arr!(col.datetime().map_err(bad)?.physical(), Datetime)
            }
            DataType::Time => arr!(
                col.as_materialized_series().time().map_err(bad)?.physical(),
                Time
            ),
            DataType::Binary => arr!(col.binary().map_err(bad)?, Binary),
            other => {
                return Err(Error::runtime(format!(
                    "column {}: unsupported type {other} in a batch",
                    col.name()
                )));
            }
        })
    }

    #[inline]
    pub fn get(&self, i: usize) -> ValueRef<'a> {
        match self {
            Cursor::Text(a) => a.get(i).map_or(ValueRef::Null, ValueRef::Text),
            Cursor::Int(a) => a.get(i).map_or(ValueRef::Null, ValueRef::Int),
            Cursor::UInt(a) => a.get(i).map_or(ValueRef::Null, |v| ValueRef::Int(v as i64)),
            Cursor::Float(a) => a.get(i).map_or(ValueRef::Null, ValueRef::Float),
            Cursor::Bool(a) => a.get(i).map_or(ValueRef::Null, ValueRef::Bool),
            Cursor::Date(a) => a.get(i).map_or(ValueRef::Null, ValueRef::Date),
            Cursor::Datetime(a) => a.get(i).map_or(ValueRef::Null, ValueRef::Datetime),
            Cursor::Time(a) => a.get(i).map_or(ValueRef::Null, ValueRef::Time),
            Cursor::Binary(a) => a.get(i).map_or(ValueRef::Null, ValueRef::Binary),
            Cursor::Empty => ValueRef::Null,
        }
    }
}

/// Cursors over the written (non-internal) columns of a rechunked frame.
pub fn cursors(df: &DataFrame) -> Result<(Vec<String>, Vec<Cursor<'_>>)> {
    let mut names = Vec::new();
    let mut cur = Vec::new();
    for c in df.columns() {
        if is_internal(c.name()) {
            continue;
        }
        names.push(c.name().to_string());
        cur.push(Cursor::new(c)?);
    }
    Ok((names, cur))
}

/// The source row numbers of a batch.
pub fn row_numbers(df: &DataFrame) -> Vec<u64> {
    df.column(ROW_COLUMN)
        .ok()
        .and_then(|c| c.u64().ok())
        .map(|ca| ca.iter().map(|v| v.unwrap_or(0)).collect())
        .unwrap_or_else(|| vec![0; df.height()])
}

/// Build a typed column from owned values.
pub fn column_from_values(name: &str, dtype: &DataType, values: &[Value]) -> Result<Column> {
    let name: PlSmallStr = name.into();
    let series = match dtype {
        DataType::String => StringChunked::from_iter_options(
            name,
            values.iter().map(|v| match v {
                Value::Text(s) => Some(s.as_str()),
                _ => None,
            }),
        )
        .into_series(),
        DataType::Int64 => Int64Chunked::from_iter_options(
            name,
            values.iter().map(|v| match v {
                Value::Int(i) => Some(*i),
                _ => None,
            }),
        )
        .into_series(),
        DataType::UInt64 => UInt64Chunked::from_iter_options(
            name,
            values.iter().map(|v| match v {
                Value::Int(i) => Some(*i as u64),
                _ => None,
            }),
        )
        .into_series(),
        DataType::Float64 => Float64Chunked::from_iter_options(
            name,
            values.iter().map(|v| match v {
                Value::Float(f) => Some(*f),
                _ => None,
            }),
        )
        .into_series(),
        DataType::Boolean => BooleanChunked::from_iter_options(
            name,
            values.iter().map(|v| match v {
                Value::Bool(b) => Some(*b),
                _ => None,
            }),
        )
        .into_series(),
        DataType::Date => Int32Chunked::from_iter_options(
            name,
            values.iter().map(|v| match v {
                Value::Date(d) => Some(*d),
                _ => None,
            }),
        )
        .into_date()
        .into_series(),
        DataType::Time => Int64Chunked::from_iter_options(
            name,
            values.iter().map(|v| match v {
                Value::Time(t) => Some(*t),
                _ => None,
            }),
        )
        .into_time()
        .into_series(),
        DataType::Binary => BinaryChunked::from_iter_options(
            name,
            values.iter().map(|v| match v {
                Value::Binary(b) => Some(b.as_slice()),
                _ => None,
            }),
        )
        .into_series(),
        DataType::Datetime(tu, tz) => Int64Chunked::from_iter_options(
            name,
            values.iter().map(|v| match v {
                Value::Datetime(t) => Some(*t),
                _ => None,
            }),
        )
        .into_datetime(*tu, tz.clone())
        .into_series(),
        other => {
            return Err(Error::runtime(format!("unsupported column type {other}")));
        }
    };
    Ok(series.into_column())
}

/// Build a frame from owned rows with the given schema (names and types).
pub fn frame_from_rows(schema: &[(String, DataType)], rows: &[Vec<Value>]) -> Result<DataFrame> {
    let mut cols = Vec::with_capacity(schema.len());
    let mut buf: Vec<Value> = Vec::with_capacity(rows.len());
    for (j, (name, dtype)) in schema.iter().enumerate() {
        buf.clear();
        buf.extend(
            rows.iter()
                .map(|r| r.get(j).cloned().unwrap_or(Value::Null)),
        );
        cols.push(column_from_values(name, dtype, &buf)?);
    }
    DataFrame::new(rows.len(), cols).map_err(|e| Error::runtime(format!("building rows: {e}")))
}

/// The schema of a frame as (name, type) pairs.
pub fn schema_of(df: &DataFrame) -> Vec<(String, DataType)> {
    df.columns()
        .iter()
        .map(|c| (c.name().to_string(), c.dtype().clone()))
        .collect()
}

/// Render a row of values as `a=1, b="x"` for messages.
pub fn describe_row(names: &[String], values: &[ValueRef<'_>]) -> String {
    let mut s = String::new();
    for (n, v) in names.iter().zip(values) {
        if !s.is_empty() {
            s.push_str(", ");
        }
        let _ = match v.to_text() {
            Some(t) => write!(s, "{n}={t:?}"),
            None => write!(s, "{n}=NULL"),
        };
    }
    s
}

/// A 128-bit hash of bytes (XXH3-128): the chance that two distinct keys
/// of one table collide is negligible (about n²/2¹²⁹). Dedupe state and
/// reference sets hold keys this way, 16 bytes a key whatever its length.
/// (Two SipHash-1-3 before: 5-8 % of a stock migration's CPU went to
/// hashing keys, docs/benchmarks.md.) Not a defence against keys crafted
/// to collide: the sources are the company's own files and databases.
pub fn hash128(bytes: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(bytes)
}

/// The hasher of maps keyed by a [`hash128`]: the key is a hash already,
/// so its two halves folded are the map's hash (hashing it again with
/// SipHash cost as much as the check itself).
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // not used by u128 keys; any other key still spreads
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }

    fn write_u128(&mut self, n: u128) {
        self.0 ^= (n as u64) ^ ((n >> 64) as u64);
    }
}

/// Build [`KeyHasher`]s.
pub type KeyHash = std::hash::BuildHasherDefault<KeyHasher>;

/// A set of key texts held as [`hash128`]s: what a reference rule checks
/// values against. The hashes are kept sorted in one vector, with a
/// directory of where each value of their leading bits starts (about 16
/// hashes each): 16.5 bytes a key, where a hash set took 17 bytes a bucket
/// at up to 2 buckets a key (800,000 parts' references: 12.7 MiB against
/// 17.8; decision 59). Built whole, then only looked up.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySet {
    /// Sorted, distinct.
    hashes: Vec<u128>,
    /// `dir[b]..dir[b + 1]`: the hashes whose leading `128 - shift` bits
    /// are `b`.
    dir: Vec<usize>,
    shift: u32,
}

impl Default for KeySet {
    fn default() -> Self {
        KeySet::from_hashes(Vec::new())
    }
}

impl KeySet {
    /// The set of these hashes (in any order, repeats allowed).
    pub fn from_hashes(mut hashes: Vec<u128>) -> KeySet {
        hashes.sort_unstable();
        hashes.dedup();
        hashes.shrink_to_fit();
        let bits = (hashes.len() / 16).max(1).ilog2() + 1;
        let shift = 128 - bits;
        let mut dir = Vec::with_capacity((1usize << bits) + 1);
        let mut i = 0;
        for b in 0..=(1u128 << bits) {
            while i < hashes.len() && (hashes[i] >> shift) < b {
                i += 1;
            }
            dir.push(i);
        }
        KeySet { hashes, dir, shift }
    }

    pub fn contains(&self, key: &str) -> bool {
        let h = hash128(key.as_bytes());
        let b = (h >> self.shift) as usize;
        let (lo, hi) = (self.dir[b], self.dir[b + 1]);
        self.hashes[lo..hi].binary_search(&h).is_ok()
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The set's memory, as a run report declares it: the hashes and the
    /// directory, and at most while the hashes were gathered (a vector
    /// doubling from half the size, then sorted in place).
    pub fn held(&self, what: impl Into<String>) -> Held {
        let hashes = (self.hashes.capacity() * std::mem::size_of::<u128>()) as u64;
        let bytes = hashes + (self.dir.capacity() * std::mem::size_of::<usize>()) as u64;
        Held {
            what: what.into(),
            entries: self.hashes.len() as u64,
            bytes,
            peak_bytes: bytes + hashes / 2,
        }
    }
}

/// One piece of state a table keeps in memory until it ends.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Held {
    /// What it is: `dedupe keys`, `reference keys of parts.reference`.
    pub what: String,
    pub entries: u64,
    /// Bytes at the table's end.
    pub bytes: u64,
    /// Bytes at most: while its hash table last doubled, the old table was
    /// live beside the new one.
    pub peak_bytes: u64,
}

/// The memory of a hash table (std's `HashMap`/`HashSet`, hashbrown
/// underneath) of `capacity` entries of `entry` bytes: its buckets (a power
/// of two holding 8/7 of the capacity) with one control byte each.
/// `peak` adds the table it grew from: while a table doubles, the old one
/// is still live (both were seen at once in heaptrack's peak).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableBytes {
    pub now: u64,
    pub peak: u64,
}

impl TableBytes {
    pub fn of(capacity: usize, entry: usize) -> TableBytes {
        if capacity == 0 {
            return TableBytes { now: 0, peak: 0 };
        }
        let buckets = if capacity < 8 {
            (capacity + 1).next_power_of_two()
        } else {
            (capacity.saturating_mul(8) / 7).next_power_of_two()
        } as u64;
        let bytes = |b: u64| b * (entry as u64 + 1) + 16;
        let now = bytes(buckets);
        let peak = if buckets > 4 {
            now + bytes(buckets / 2)
        } else {
            now
        };
        TableBytes { now, peak }
    }
}

impl<S: AsRef<str>> FromIterator<S> for KeySet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> KeySet {
        KeySet::from_hashes(
            iter.into_iter()
                .map(|k| hash128(k.as_ref().as_bytes()))
                .collect(),
        )
    }
}

impl<S: AsRef<str>> Extend<S> for KeySet {
    /// Add keys: the set is sorted again (merged, not re-sorted whole:
    /// `profile` adds a table's keys batch by batch).
    fn extend<I: IntoIterator<Item = S>>(&mut self, iter: I) {
        let mut new: Vec<u128> = iter
            .into_iter()
            .map(|k| hash128(k.as_ref().as_bytes()))
            .collect();
        if new.is_empty() {
            return;
        }
        new.sort_unstable();
        let old = std::mem::take(&mut self.hashes);
        let mut merged = Vec::with_capacity(old.len() + new.len());
        let (mut a, mut b) = (old.into_iter().peekable(), new.into_iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x <= y => a.next(),
                (Some(_), Some(_)) | (None, Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, None) => break,
            };
            merged.extend(next);
        }
        *self = KeySet::from_hashes(merged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_bytes_count_buckets_control_bytes_and_the_table_grown_from() {
        assert_eq!(TableBytes::of(0, 16), TableBytes { now: 0, peak: 0 });
        // 3 entries: 4 buckets of 16 + 1 bytes, nothing grown from
        assert_eq!(TableBytes::of(3, 16), TableBytes { now: 84, peak: 84 });
        // 896 entries fill 1,024 buckets (7/8); the 512-bucket table it
        // doubled from was live beside it
        let t = TableBytes::of(896, 16);
        assert_eq!(t.now, 1024 * 17 + 16);
        assert_eq!(t.peak, 1024 * 17 + 16 + 512 * 17 + 16);
        // one more needs the next power of two
        assert_eq!(TableBytes::of(897, 16).now, 2048 * 17 + 16);
    }

    #[test]
    fn key_sets_hold_what_was_put_in_and_nothing_else() {
        let keys: KeySet = (0..1000).map(|i| format!("REF-{i}")).collect();
        assert_eq!(keys.len(), 1000);
        assert!((0..1000).all(|i| keys.contains(&format!("REF-{i}"))));
        assert!(!(1000..3000).any(|i| keys.contains(&format!("REF-{i}"))));
        assert!(!keys.contains("") && !keys.contains("ref-1"));
        // 16 bytes a hash and the directory (64 buckets of about 16)
        let h = keys.held("reference keys");
        assert_eq!(h.entries, 1000);
        assert_eq!(h.bytes, 1000 * 16 + 65 * 8);
        assert_eq!(h.peak_bytes, h.bytes + 1000 * 8);
        // repeats count once; adding merges, the old keys stay
        let mut keys: KeySet = ["A", "B", "A", "C"].into_iter().collect();
        assert_eq!(keys.len(), 3);
        keys.extend((0..500).map(|i| format!("N{i}")).chain(["B".to_string()]));
        assert_eq!(keys.len(), 503);
        assert!(
            ["A", "B", "C", "N0", "N499"]
                .iter()
                .all(|k| keys.contains(k))
        );
        assert!(!keys.contains("N500") && !keys.contains("D"));
        let empty = KeySet::default();
        assert!(empty.is_empty() && !empty.contains("A") && !empty.contains(""));
    }

    #[test]
    fn datetime_text_as_format_writes_it() {
        use chrono::{Datelike, Timelike};
        for ms in [
            0i64,
            1_764_404_102_000,
            1_764_404_102_007,
            1_764_404_102_120,
            -1_000,
            -62_135_596_800_000,
            253_402_300_799_999,
            253_402_300_800_000,
            -62_135_596_800_001,
        ] {
            let n = chrono::DateTime::from_timestamp_millis(ms)
                .unwrap()
                .naive_utc();
            let mut want = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                n.year(),
                n.month(),
                n.day(),
                n.hour(),
                n.minute(),
                n.second()
            );
            if ms.rem_euclid(1000) != 0 {
                want.push_str(&format!(".{:03}", ms.rem_euclid(1000)));
            }
            assert_eq!(datetime_text(ms), want);
            assert_eq!(datetime_text_sep(ms, ' '), want.replacen('T', " ", 1));
        }
    }

    #[test]
    fn rows_round_trip_through_frames() {
        let schema = vec![
            ("reference".to_string(), DataType::String),
            ("quantity".to_string(), DataType::Int64),
            ("price".to_string(), DataType::Float64),
            ("ok".to_string(), DataType::Boolean),
            ("day".to_string(), DataType::Date),
            (
                "at".to_string(),
                DataType::Datetime(TimeUnit::Milliseconds, None),
            ),
        ];
        let rows = vec![
            vec![
                Value::Text("A-1".into()),
                Value::Int(3),
                Value::Float(12.5),
                Value::Bool(true),
                Value::Date(19_000),
                Value::Datetime(1_700_000_000_000),
            ],
            vec![
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
            ],
        ];
        let df = frame_from_rows(&schema, &rows).unwrap();
        let (names, cur) = cursors(&df).unwrap();
        assert_eq!(names.len(), 6);
        let back: Vec<Vec<Value>> = (0..2)
            .map(|i| cur.iter().map(|c| c.get(i).to_owned()).collect())
            .collect();
        assert_eq!(back, rows);
        assert_eq!(date_text(19_000), "2022-01-08");
        assert_eq!(datetime_text(1_700_000_000_000), "2023-11-14T22:13:20");
    }

    #[test]
    fn key_encoding_separates_types_and_lengths() {
        let mut a = Vec::new();
        ValueRef::Text("ab").encode_key(&mut a);
        ValueRef::Text("c").encode_key(&mut a);
        let mut b = Vec::new();
        ValueRef::Text("a").encode_key(&mut b);
        ValueRef::Text("bc").encode_key(&mut b);
        assert_ne!(a, b);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        ValueRef::Int(1).encode_key(&mut x);
        ValueRef::Text("1").encode_key(&mut y);
        assert_ne!(x, y);
    }
}
