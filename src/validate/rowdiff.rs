//! Row-level comparison of a job's table, source against target, by key,
//! across different stores (Access or Excel or PostgreSQL against SQLite,
//! PostgreSQL or Oracle).
//!
//! As data-diff does, neither side is copied to the other. Rows are
//! spread over segments by a hash of their key; each side sums, per
//! segment, a hash of each row's values in a canonical text form (the
//! target in SQL, on the server; the source while it is streamed through
//! the job's mapping, so that it is compared as the migration writes it).
//! Only the segments whose count or sum differ are read row by row, on
//! both sides, and their rows compared by key: a few changed rows in a
//! million cost one pass over the source and two queries on the target.
//! A PostgreSQL source whose mapping copies its columns as they are
//! hashes its segments in its own SQL too ([`super::pushdown`]): only the
//! rows of the segments read row by row then go through the mapping.
//!
//! Rows the mapping rejects, or folds into another by its dedupe, are not
//! differences: they are counted apart, as the run's report counts them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;

use super::pushdown::{self, SourceSql};
use crate::batch::{Cursor, ValueRef, cursors};
use crate::config::mapping::{ColumnType, Mapping};
use crate::config::{Config, Job};
use crate::db::dialect::hash40;
use crate::db::{ColumnDef, Conn, Dialect, TableDef};
use crate::error::{Error, Result};
use crate::sink::ledger;
use crate::source::Source;
use crate::transform::Mapper;
use crate::transform::dedupe::Dedupe;

/// How NULL is written in a row's canonical text.
const NULL: &str = "\\N";
/// Between two values of a row's canonical text.
const SEP: char = '\u{1f}';

/// A typed value's canonical text (what the target's SQL produces).
pub fn canonical(c: &ColumnDef, v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => NULL.to_string(),
        ValueRef::Text(s) => s.to_string(),
        ValueRef::Int(i) => i.to_string(),
        ValueRef::Float(f) => match c.ty {
            ColumnType::Decimal => decimal_text(f, c.scale),
            ColumnType::Integer => format!("{}", f as i64),
            _ => format!("{f:.6}"),
        },
        ValueRef::Bool(b) => if b { "t" } else { "f" }.to_string(),
        ValueRef::Date(d) => crate::batch::date_text(d),
        ValueRef::Datetime(ms) => {
            crate::batch::datetime_text(ms).replacen('T', " ", 1)
                + if ms.rem_euclid(1000) == 0 { ".000" } else { "" }
        }
        ValueRef::Time(ns) => {
            let secs = ns / 1_000_000_000;
            format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
        }
        ValueRef::Binary(b) => hex::encode(b),
    }
}

/// The SQL expression giving a column's canonical text.
pub fn canonical_sql(d: Dialect, c: &ColumnDef) -> String {
    let q = d.quote(&c.name);
    null_or(&q, &canonical_value_sql(d, c, &q))
}

/// `e`, or the canonical NULL where `q` is NULL. (SQLite's printf turns
/// NULL into 0.00: the column itself is tested.)
pub fn null_or(q: &str, e: &str) -> String {
    format!("CASE WHEN {q} IS NULL THEN '{NULL}' ELSE {e} END")
}

/// The canonical text in SQL of the non-NULL value of expression `q`,
/// held as column `c`'s type.
pub fn canonical_value_sql(d: Dialect, c: &ColumnDef, q: &str) -> String {
    match (d, c.ty) {
        (_, ColumnType::Text) => q.to_string(),
        (Dialect::Postgres, ColumnType::Integer) => format!("{q}::text"),
        (Dialect::Sqlite, ColumnType::Integer) => format!("CAST({q} AS TEXT)"),
        (Dialect::Oracle, ColumnType::Integer) => format!("TO_CHAR({q})"),
        (Dialect::Postgres, ColumnType::Decimal) => format!("round({q}, {})::text", c.scale),
        (Dialect::Sqlite, ColumnType::Decimal) => format!("printf('%.{}f', {q})", c.scale),
        (Dialect::Oracle, ColumnType::Decimal) => {
            let int = "9".repeat((c.precision.max(c.scale + 1) - c.scale - 1) as usize);
            let frac = if c.scale > 0 {
                format!(".{}", "0".repeat(c.scale as usize))
            } else {
                String::new()
            };
            format!("TO_CHAR({q}, 'FM{int}0{frac}')")
        }
        (Dialect::Postgres, ColumnType::Float) => format!("round({q}::numeric, 6)::text"),
        (Dialect::Sqlite, ColumnType::Float) => format!("printf('%.6f', {q})"),
        (Dialect::Oracle, ColumnType::Float) => {
            format!("TO_CHAR({q}, 'FM99999999999999999990.000000')")
        }
        (Dialect::Oracle, ColumnType::Boolean) => {
            format!("CASE WHEN {q} = 1 THEN 't' WHEN {q} = 0 THEN 'f' END")
        }
        (_, ColumnType::Boolean) => format!("CASE WHEN {q} THEN 't' WHEN NOT {q} THEN 'f' END"),
        (Dialect::Postgres, ColumnType::Date) => format!("to_char({q}, 'YYYY-MM-DD')"),
        (Dialect::Sqlite, ColumnType::Date) => format!("date({q})"),
        (Dialect::Oracle, ColumnType::Date) => format!("TO_CHAR({q}, 'YYYY-MM-DD')"),
        (Dialect::Postgres, ColumnType::Datetime) => {
            format!("to_char({q}, 'YYYY-MM-DD HH24:MI:SS.MS')")
        }
        (Dialect::Sqlite, ColumnType::Datetime) => format!("strftime('%Y-%m-%d %H:%M:%f', {q})"),
        (Dialect::Oracle, ColumnType::Datetime) => {
            format!("TO_CHAR({q}, 'YYYY-MM-DD HH24:MI:SS.FF3')")
        }
        (Dialect::Postgres, ColumnType::Time) => format!("to_char({q}, 'HH24:MI:SS')"),
        (Dialect::Sqlite, ColumnType::Time) => format!("strftime('%H:%M:%S', {q})"),
        (Dialect::Oracle, ColumnType::Time) => format!("SUBSTR(TO_CHAR({q}), 5, 8)"),
        (Dialect::Postgres, ColumnType::Binary) => format!("encode({q}, 'hex')"),
        (Dialect::Sqlite, ColumnType::Binary) => format!("lower(hex({q}))"),
        (Dialect::Oracle, ColumnType::Binary) => {
            format!("LOWER(RAWTOHEX(DBMS_LOB.SUBSTR({q}, 2000, 1)))")
        }
    }
}

fn concat_sql(d: Dialect, parts: &[String]) -> String {
    let sep = match d {
        Dialect::Postgres => "chr(31)",
        Dialect::Sqlite => "char(31)",
        Dialect::Oracle => "CHR(31)",
    };
    parts.join(&format!(" || {sep} || "))
}

/// Per segment: rows, the sum of their hashes, and the rows the source's
/// SQL is unsure of (see [`pushdown`]).
type Segments = HashMap<u64, (u64, u64, u64)>;

/// Per segment (count, sum of hashes, flagged), from the rows of a
/// segments query.
fn segments_of(rows: Vec<crate::db::Row>) -> Segments {
    let mut out: Segments = HashMap::new();
    for r in rows {
        let get = |i: usize| -> u64 {
            r.get(i)
                .cloned()
                .flatten()
                .and_then(|s| s.parse::<f64>().ok())
                .map_or(0, |v| v as u64)
        };
        // sums of 40-bit hashes stay exact in u64; read them as integers
        let sum = r
            .get(2)
            .cloned()
            .flatten()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| get(2));
        out.insert(get(0), (get(1), sum, get(3)));
    }
    out
}

/// One row that differs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RowDifference {
    pub key: String,
    /// (column, source value, target value), for the columns that differ.
    pub columns: Vec<(String, String, String)>,
}

/// What rowdiff found.
#[derive(Debug, Clone, Serialize)]
pub struct RowdiffResult {
    pub job: String,
    pub table: String,
    pub source: String,
    pub target: String,
    pub key: Vec<String>,
    pub source_rows: u64,
    pub target_rows: u64,
    /// Source rows the mapping rejects (in the quarantine, not differences).
    pub rejected: u64,
    /// Source rows folded into another by the dedupe.
    pub merged: u64,
    pub segments: u64,
    pub segments_differing: u64,
    /// Segments equal in count and sum, read row by row all the same: the
    /// source's SQL was not sure how the mapping renders a value.
    pub segments_unsure: u64,
    /// Whether the source hashed its rows in its own SQL (only the
    /// segments read row by row went through the mapping).
    pub source_hashed_in_sql: bool,
    /// Why every source row went through the mapping, when it did.
    pub streamed: Option<String>,
    /// Keys in the source (as migrated) and not in the target.
    pub missing: Vec<String>,
    /// Keys in the target and not in the source.
    pub extra: Vec<String>,
    pub different: Vec<RowDifference>,
    /// Keys whose rows were merged: their values differ by design.
    pub merged_keys: u64,
    pub seconds: f64,
}

impl RowdiffResult {
    pub fn is_equal(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.different.is_empty()
    }
}

/// The source as the migration maps it: typed batches, with the rows the
/// run would reject or merge set apart.
struct MappedSource<'a> {
    reader: crate::source::TableReader,
    mapper: Mapper,
    dedupe: Option<Dedupe>,
    def: &'a TableDef,
    rejected: u64,
    merged: u64,
    merged_keys: HashSet<String>,
}

impl<'a> MappedSource<'a> {
    /// The source of `plan`'s table, its rows limited by `filter`; the
    /// references checked against the sets in `known` (by target column),
    /// else against the target's keys.
    fn open(
        plan: &Plan<'a>,
        source: &dyn Source,
        target: &mut dyn Conn,
        filter: Option<String>,
        mut known: Vec<(String, crate::batch::KeySet)>,
    ) -> Result<MappedSource<'a>> {
        let (job, mapping, def) = (plan.job.name.as_str(), plan.mapping, plan.def);
        let batch = plan.cfg.run.batch_size;
        let mut mapper = Mapper::new(mapping)?;
        for (col, rtable, rcol) in mapper.references() {
            // (the keys a caller loaded already, else the target's)
            let values = match known.iter().position(|(c, _)| *c == col) {
                Some(i) => known.swap_remove(i).1,
                None => target.key_values(&rtable, &rcol)?,
            };
            mapper.set_reference_values(&col, values);
        }
        for (col, remap_to) in mapper.remaps() {
            // merged id → kept id, as the run recorded it
            let table = remap_to.split('.').next().unwrap_or_default().to_string();
            let map = ledger::merges(target, job, &table)?
                .into_iter()
                .filter_map(|(merged, kept)| Some((merged?, kept?)))
                .collect();
            mapper.set_remap(&col, map);
        }
        let mut req = crate::pipeline::table_request(mapping, batch)?;
        req.filter = filter;
        let reader = source.read(req)?;
        Ok(MappedSource {
            reader,
            mapper,
            dedupe: Dedupe::for_mapping(mapping),
            def,
            rejected: 0,
            merged: 0,
            merged_keys: HashSet::new(),
        })
    }

    /// Each kept row as (key text, row text), batch by batch (the texts
    /// are built in buffers reused from row to row).
    fn for_each(&mut self, f: &mut dyn FnMut(&str, &str) -> Result<()>) -> Result<()> {
        let key_idx = key_positions(self.def);
        let (mut row, mut key) = (String::new(), String::new());
        let mut ends: Vec<(usize, usize)> = Vec::with_capacity(self.def.columns.len());
        while let Some(raw) = self.reader.next_batch()? {
            let mapped = self.mapper.apply(&raw)?;
            self.rejected += mapped.rejects.len() as u64;
            let mut kept = match self.dedupe.as_mut() {
                Some(d) => {
                    let out = d.push(mapped.kept)?;
                    self.rejected += out.rejects.len() as u64;
                    self.merged += out.ops.len() as u64;
                    for op in &out.ops {
                        let key: Vec<String> = self
                            .def
                            .key
                            .iter()
                            .map(|k| {
                                let c = self.def.columns.iter().find(|c| &c.name == k);
                                op.key
                                    .iter()
                                    .find(|(n, _)| n == k)
                                    .map(|(_, v)| {
                                        c.map_or_else(String::new, |c| canonical(c, v.as_ref()))
                                    })
                                    .unwrap_or_default()
                            })
                            .collect();
                        self.merged_keys.insert(key.join(&SEP.to_string()));
                    }
                    out.kept
                }
                None => mapped.kept,
            };
            kept.rechunk_mut();
            let (names, cols) = cursors(&kept)?;
            let order = crate::sink::column_order(&self.def.columns, &names, &self.def.name)?;
            let cols: Vec<&Cursor<'_>> = order.iter().map(|&j| &cols[j]).collect();
            for i in 0..kept.height() {
                row.clear();
                ends.clear();
                for (n, (c, cur)) in self.def.columns.iter().zip(&cols).enumerate() {
                    if n > 0 {
                        row.push(SEP);
                    }
                    let start = row.len();
                    push_canonical(&mut row, c, cur.get(i));
                    ends.push((start, row.len()));
                }
                key.clear();
                for (n, &k) in key_idx.iter().enumerate() {
                    if n > 0 {
                        key.push(SEP);
                    }
                    let (a, b) = ends[k];
                    key.push_str(&row[a..b]);
                }
                f(&key, &row)?;
            }
        }
        Ok(())
    }
}

/// Where the key's columns stand among the table's.
fn key_positions(def: &TableDef) -> Vec<usize> {
    def.key
        .iter()
        .filter_map(|k| def.columns.iter().position(|c| &c.name == k))
        .collect()
}

/// A decimal rounded to `scale` places (half away from zero), as the
/// target's SQL writes it. From the scaled integer: formatting the float
/// itself with a precision took 15 % of rowdiff's time (perf, 1M lines).
fn decimal_text(f: f64, scale: u8) -> String {
    use crate::batch::parse::{pow10, round_half_away};
    let scaled = f * pow10(scale);
    if scaled.is_nan() || scaled.abs() >= 4.0e15 {
        let s = scale as usize;
        let r = crate::batch::parse::round_to(f, scale);
        return format!("{r:.s$}");
    }
    let n = round_half_away(scaled) as i64;
    let p = 10u64.pow(scale as u32);
    let (int, frac) = (n.unsigned_abs() / p, n.unsigned_abs() % p);
    let mut out = String::with_capacity(24);
    if n < 0 {
        out.push('-');
    }
    out.push_str(itoa::Buffer::new().format(int));
    if scale > 0 {
        out.push('.');
        let digits = itoa::Buffer::new().format(frac).to_string();
        out.extend(std::iter::repeat_n('0', scale as usize - digits.len()));
        out.push_str(&digits);
    }
    out
}

/// Append a typed value's canonical text to `out` ([`canonical`], without
/// an allocation for the common text and integer values).
fn push_canonical(out: &mut String, c: &ColumnDef, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => out.push_str(NULL),
        ValueRef::Text(s) => out.push_str(s),
        ValueRef::Int(i) => out.push_str(itoa::Buffer::new().format(i)),
        v => out.push_str(&canonical(c, v)),
    }
}

/// The source's rows as mapped, written once by the first pass and read
/// back by the second, so that the source is read and mapped only once.
/// A temporary file, removed when dropped: memory stays flat whatever the
/// table's size.
struct Spill {
    path: std::path::PathBuf,
    out: Option<std::io::BufWriter<std::fs::File>>,
}

impl Spill {
    fn create() -> Result<Spill> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "repaero-rowdiff-{}-{nanos}.spill",
            std::process::id()
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| spill_error(&path, e))?;
        Ok(Spill {
            path,
            out: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// One row: its segment, key and row texts, each length-prefixed.
    fn push(&mut self, seg: u64, key: &str, row: &str) -> Result<()> {
        use std::io::Write as _;
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        let mut write = || -> std::io::Result<()> {
            out.write_all(&seg.to_le_bytes())?;
            out.write_all(&(key.len() as u64).to_le_bytes())?;
            out.write_all(key.as_bytes())?;
            out.write_all(&(row.len() as u64).to_le_bytes())?;
            out.write_all(row.as_bytes())
        };
        write().map_err(|e| spill_error(&self.path, e))
    }

    /// Read the rows back, calling `f` with those of the `wanted` segments.
    fn read(&mut self, wanted: &HashSet<u64>, f: &mut dyn FnMut(String, String)) -> Result<()> {
        use std::io::{BufReader, Read as _, Write as _};
        let path = self.path.clone();
        let io = |e| spill_error(&path, e);
        if let Some(mut out) = self.out.take() {
            out.flush().map_err(io)?;
        }
        let mut r = BufReader::with_capacity(1 << 20, std::fs::File::open(&path).map_err(io)?);
        let mut word = [0u8; 8];
        let text = |r: &mut BufReader<std::fs::File>, skip: bool| -> std::io::Result<String> {
            let mut n = [0u8; 8];
            r.read_exact(&mut n)?;
            let n = u64::from_le_bytes(n);
            if skip {
                std::io::copy(&mut r.by_ref().take(n), &mut std::io::sink())?;
                return Ok(String::new());
            }
            let mut buf = vec![0u8; n as usize];
            r.read_exact(&mut buf)?;
            String::from_utf8(buf).map_err(std::io::Error::other)
        };
        loop {
            match r.read_exact(&mut word) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(io(e)),
            }
            let skip = !wanted.contains(&u64::from_le_bytes(word));
            let key = text(&mut r, skip).map_err(io)?;
            let row = text(&mut r, skip).map_err(io)?;
            if !skip {
                f(key, row);
            }
        }
    }
}

fn spill_error(path: &std::path::Path, e: std::io::Error) -> Error {
    Error::runtime(format!(
        "rowdiff: the temporary file {} (the source's rows as mapped): {e}",
        path.display()
    ))
}

impl Drop for Spill {
    fn drop(&mut self) {
        self.out = None;
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How rowdiff reads the source.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Map every source row, even where the source could hash its rows in
    /// its own SQL (`--stream`).
    pub stream: bool,
}

/// The SQL of a segment number: `e` modulo `n`.
fn modulo(d: Dialect, e: &str, n: u64) -> String {
    match d {
        Dialect::Oracle => format!("MOD({e}, {n})"),
        _ => format!("({e}) % {n}"),
    }
}

/// The SQL of a row's segment among `n`: a single integer key is its own
/// segment number, modulo the count (ten times cheaper for the database
/// than hashing its text); any other key's canonical text is hashed.
fn segment_sql(d: Dialect, integer_key: Option<&str>, key_text: &str, n: u64) -> String {
    match integer_key {
        Some(k) => modulo(d, &format!("{} + {n}", modulo(d, k, n)), n),
        None => modulo(d, &d.hash40(key_text), n),
    }
}

/// What one side's pass found: the source's rows of the segments to
/// compare row by row, and its counts.
struct Found {
    /// Source rows as migrated (read, less rejected and merged).
    source_rows: u64,
    /// Target rows (the sum of its segments' counts).
    target_rows: u64,
    rejected: u64,
    merged: u64,
    merged_keys: HashSet<String>,
    /// Segments whose count or sum differ.
    differing: Vec<u64>,
    /// Segments equal in count and sum but read row by row all the same:
    /// the source's SQL was not sure of a value.
    unsure: Vec<u64>,
    /// Source rows (key → canonical row) of `differing` and `unsure`.
    rows: BTreeMap<String, String>,
    /// Why the source was streamed whole, when it was.
    streamed: Option<String>,
    /// The target's rows (key → canonical row) of `differing` and
    /// `unsure`, when they were read beside the source's.
    target_rows_of: Option<BTreeMap<String, String>>,
}

impl Found {
    /// The segments read row by row: the differing, then the unsure.
    fn to_read(&self) -> Vec<u64> {
        self.differing.iter().chain(&self.unsure).copied().collect()
    }
}

/// The parts of the comparison both passes share.
struct Plan<'a> {
    cfg: &'a Config,
    job: &'a Job,
    mapping: &'a Mapping,
    def: &'a TableDef,
    table: &'a str,
    segments: u64,
    /// The target's segment number, and the hash of its rows' canonical
    /// text, in its SQL.
    seg_sql: String,
    text_hash: String,
    integer_key: bool,
    /// The target's key and row as canonical text, in its SQL.
    key_text: String,
    row_text: String,
}

impl Plan<'_> {
    /// A key's segment (the target's SQL computes the same).
    fn segment_of(&self, key: &str) -> u64 {
        // (a text key is never parsed as a number: only the integer key is)
        match self.integer_key.then(|| key.parse::<i64>().ok()).flatten() {
            Some(k) => k.rem_euclid(self.segments as i64) as u64,
            None => hash40(key) % self.segments,
        }
    }

    /// The target's segments, on a connection of their own, each row
    /// hashed by `rh` (SQL).
    fn target_segments(&self, rh: &str) -> Result<Segments> {
        self.on_own_connection(|conn| {
            let sql = format!(
                "SELECT seg, count(*), sum(rh) FROM (SELECT {} AS seg, {rh} AS rh FROM {}) s GROUP BY seg",
                self.seg_sql,
                conn.dialect().quote(self.table)
            );
            Ok(segments_of(conn.query(&sql, &[])?))
        })
    }

    /// `f` on a read-only connection to the target of its own (for a
    /// thread working beside the main one).
    fn on_own_connection<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        let mut conn = crate::db::open(&self.cfg.target.url, true)?;
        conn.begin_read_only()?;
        let out = f(conn.as_mut())?;
        conn.rollback()?;
        Ok(out)
    }

    /// The target's rows (key → canonical row) of segments `read`, in one
    /// scan (Oracle: in chunks of the 1,000 values an IN list may hold).
    fn target_rows_of(
        &self,
        conn: &mut dyn Conn,
        read: &[u64],
    ) -> Result<BTreeMap<String, String>> {
        let d = conn.dialect();
        let mut out = BTreeMap::new();
        let chunk = if d == Dialect::Oracle {
            1000
        } else {
            read.len().max(1)
        };
        for chunk in read.chunks(chunk) {
            let list: Vec<String> = chunk.iter().map(|s| s.to_string()).collect();
            let rows = conn.query(
                &format!(
                    "SELECT k, r FROM (SELECT {} AS k, {} AS r, {} AS seg FROM {}) s WHERE seg IN ({})",
                    self.key_text,
                    self.row_text,
                    self.seg_sql,
                    d.quote(self.table),
                    list.join(", ")
                ),
                &[],
            )?;
            for r in rows {
                if let (Some(Some(k)), Some(Some(v))) = (r.first(), r.get(1)) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        Ok(out)
    }

    /// Every source row through the mapping, hashed per segment and spilled
    /// to a temporary file, while the target hashes its rows in SQL.
    fn streamed(&self, source: &dyn Source, target: &mut dyn Conn, why: String) -> Result<Found> {
        let mut src = MappedSource::open(self, source, target, None, Vec::new())?;
        let mut spill = Spill::create()?;
        let mut source_segs: Segments = HashMap::new();
        let mut source_rows = 0u64;
        let (target_segs, streamed) = std::thread::scope(|scope| {
            let hashing = scope.spawn(|| self.target_segments(&self.text_hash));
            let streamed = src.for_each(&mut |key, row| {
                source_rows += 1;
                let seg = self.segment_of(key);
                let e = source_segs.entry(seg).or_insert((0, 0, 0));
                e.0 += 1;
                e.1 = e.1.wrapping_add(hash40(row));
                spill.push(seg, key, row)
            });
            (joined(hashing.join(), "target's hashing"), streamed)
        });
        streamed?;
        let target_segs = target_segs?;
        let (differing, unsure) = compare_segments(&source_segs, &target_segs);
        let mut rows = BTreeMap::new();
        if !differing.is_empty() {
            let wanted: HashSet<u64> = differing.iter().copied().collect();
            spill.read(&wanted, &mut |key, row| {
                rows.insert(key, row);
            })?;
        }
        Ok(Found {
            source_rows,
            target_rows: target_segs.values().map(|v| v.0).sum(),
            rejected: src.rejected,
            merged: src.merged,
            merged_keys: std::mem::take(&mut src.merged_keys),
            differing,
            unsure,
            rows,
            streamed: Some(why),
            target_rows_of: None,
        })
    }

    /// The source's segments in its own SQL: its rows, the condition of
    /// the rows the mapping is sure to reject (left out of the hashes),
    /// and the target's keys of each reference. `Ok(Err(why))`: the
    /// source is to be streamed whole.
    fn source_segments(
        &self,
        source: &dyn Source,
        target: &mut dyn Conn,
        sql: &SourceSql,
        seg: &str,
        hash: &str,
        unsure: &str,
    ) -> Result<std::result::Result<SourceSegments, String>> {
        let mut rejects = sql.rejects.clone();
        let mut known = Vec::new();
        for (i, rtable, rcol) in &sql.references {
            match missing_references(source, target, sql, *i, rtable, rcol)? {
                Ok((cond, keys)) => {
                    rejects.extend(cond);
                    known.push((self.def.columns[*i].name.clone(), keys));
                }
                Err(why) => return Ok(Err(why)),
            }
        }
        let rejected = if rejects.is_empty() {
            "false".to_string()
        } else {
            format!("COALESCE({}, false)", rejects.join(" OR "))
        };
        // (`r` a grouping key, computed once a row: read by three sums
        // of one group per segment, the condition was computed three
        // times, 2.4–2.75 s for 1M lines against 2.27–2.67 s; keeping the
        // inner query apart with `OFFSET 0` lost the parallel plan,
        // 2.7–3.9 s)
        let query = format!(
            "SELECT seg, r, count(*), sum(rh), sum(u) \
             FROM (SELECT {seg} AS seg, {hash} AS rh, {unsure} AS u, CASE WHEN {rejected} THEN 1 ELSE 0 END AS r FROM {}) s GROUP BY seg, r",
            sql.table
        );
        Ok(match source.query(&query) {
            Ok(rows) => Ok((rows, rejected, known)),
            Err(e) => Err(format!("the source's SQL failed: {e}")),
        })
    }

    /// The source's segments in its own SQL beside the target's, then only
    /// the segments that differ (or that the source is unsure of) read
    /// and mapped. `Ok(Err(why))`: the source is to be streamed whole.
    fn pushed(
        &self,
        source: &dyn Source,
        target: &mut dyn Conn,
        sql: &SourceSql,
    ) -> Result<std::result::Result<Found, String>> {
        let pg = Dialect::Postgres;
        let key_idx = key_positions(self.def);
        let key_text: Vec<String> = key_idx.iter().map(|&i| sql.texts[i].clone()).collect();
        let src_seg = segment_sql(
            pg,
            self.integer_key.then(|| sql.columns[key_idx[0]].as_str()),
            &concat_sql(pg, &key_text),
            self.segments,
        );
        let unsure = if sql.unsure.is_empty() {
            "0".to_string()
        } else {
            format!("CASE WHEN {} THEN 1 ELSE 0 END", sql.unsure.join(" OR "))
        };
        // Both ends PostgreSQL: each hashes its typed values (integers of
        // any width, numerics by value, timestamps with or without zone
        // hash alike), no text built: 0.9 s instead of 2.05 s for the
        // target's 1M lines. Otherwise the canonical text's SHA-256, the
        // hash every dialect computes alike.
        let typed = target.dialect() == Dialect::Postgres;
        let (source_hash, target_hash) = if typed {
            let target_cols: Vec<String> = self
                .def
                .columns
                .iter()
                .map(|c| match c.ty {
                    ColumnType::Text => format!("{} COLLATE \"C\"", pg.quote(&c.name)),
                    _ => pg.quote(&c.name),
                })
                .collect();
            (typed_hash(&sql.typed), typed_hash(&target_cols))
        } else {
            (
                pg.hash40(&concat_sql(pg, &sql.texts)),
                self.text_hash.clone(),
            )
        };
        // The target hashes its segments while the references are checked
        // and the source hashes its own.
        let (target_segs, source_side) = std::thread::scope(|scope| {
            let hashing = scope.spawn(|| self.target_segments(&target_hash));
            let source_side =
                self.source_segments(source, target, sql, &src_seg, &source_hash, &unsure);
            (joined(hashing.join(), "target's hashing"), source_side)
        });
        let (source_rows, rejected_sql, known) = match source_side? {
            Ok(v) => v,
            Err(why) => return Ok(Err(why)),
        };
        let target_segs = match target_segs {
            Ok(t) => t,
            Err(e) => return Ok(Err(format!("the target's SQL failed: {e}"))),
        };
        // (seg, r, count, sum, unsure): the rows kept per segment, and
        // the count of the rows the mapping is sure to reject
        let mut sure_rejects = 0u64;
        let kept: Vec<crate::db::Row> = source_rows
            .into_iter()
            .filter_map(|mut r| {
                if r.len() < 5 {
                    return None;
                }
                if r.remove(1).as_deref() == Some("1") {
                    sure_rejects += r[1]
                        .as_deref()
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                    return None;
                }
                Some(r)
            })
            .collect();
        let source_segs = segments_of(kept);
        let (differing, unsure) = compare_segments(&source_segs, &target_segs);
        let read = differing.len() + unsure.len();
        // past half the segments, one pass mapping every row beats a
        // filter listing most of them
        if read as u64 > self.segments / 2 {
            return Ok(Err(format!(
                "{read} of {} segments differ or are unsure in the source's SQL",
                self.segments
            )));
        }
        let total: u64 = source_segs.values().map(|v| v.0).sum();
        let mut found = Found {
            source_rows: total,
            target_rows: target_segs.values().map(|v| v.0).sum(),
            rejected: sure_rejects,
            merged: 0,
            merged_keys: HashSet::new(),
            differing,
            unsure,
            rows: BTreeMap::new(),
            streamed: None,
            target_rows_of: None,
        };
        if read > 0 {
            let segs = found.to_read();
            let list: Vec<String> = segs.iter().map(|s| s.to_string()).collect();
            let rows = &mut found.rows;
            // the target's rows of the same segments on a connection of
            // their own while the source's are read and mapped (0.11 s and
            // 0.15 s, one after the other before)
            let (target_rows, counts) = std::thread::scope(|scope| {
                let reading =
                    scope.spawn(|| self.on_own_connection(|conn| self.target_rows_of(conn, &segs)));
                let counts = (|| -> Result<(u64, u64)> {
                    let mut src = MappedSource::open(
                        self,
                        source,
                        target,
                        Some(format!(
                            "{src_seg} IN ({}) AND NOT {rejected_sql}",
                            list.join(", ")
                        )),
                        known,
                    )?;
                    src.for_each(&mut |key, row| {
                        rows.insert(key.to_string(), row.to_string());
                        Ok(())
                    })?;
                    Ok((src.rejected, src.merged))
                })();
                (joined(reading.join(), "target's reading"), counts)
            });
            let (rejected, merged) = counts?;
            found.target_rows_of = Some(target_rows?);
            found.rejected += rejected;
            found.merged = merged;
            found.source_rows = total.saturating_sub(rejected + merged);
        }
        Ok(Ok(found))
    }
}

/// A row's hash from its typed values (PostgreSQL 14 and later), 40 bits
/// so that a segment's sum stays exact.
fn typed_hash(values: &[String]) -> String {
    format!(
        "(hash_record_extended(ROW({}), 0) & 1099511627775)",
        values.join(", ")
    )
}

/// The condition of the source rows whose reference (column `i`, an
/// integer) names a key missing from the target's `rtable.rcol`, and the
/// target's keys (for the mapping of the rows read later). The values
/// the source may hold: those of the table its foreign key names when it
/// declares one (a quarter of the benchmark's lines, and no DISTINCT),
/// else its distinct values; read while the target's keys load. A value
/// missed there only makes its row's segment be read and mapped.
/// `Ok(Err(why))`: too many to list, or the source's SQL failed.
fn missing_references(
    source: &dyn Source,
    target: &mut dyn Conn,
    sql: &SourceSql,
    i: usize,
    rtable: &str,
    rcol: &str,
) -> Result<std::result::Result<(Option<String>, crate::batch::KeySet), String>> {
    let x = &sql.columns[i];
    let q = crate::source::postgres::quote_name;
    let declared = source
        .keys(&sql.table_name)?
        .and_then(|k| {
            k.foreign
                .into_iter()
                .find(|f| f.enforced && f.columns == [sql.names[i].clone()])
        })
        .and_then(|f| Some((f.ref_table, f.ref_columns.into_iter().next()?)));
    let values_sql = match declared {
        Some((t, c)) => format!(
            "SELECT {c}::text FROM {t} WHERE {c} IS NOT NULL",
            c = q(&c),
            t = q(&t)
        ),
        None => format!(
            "SELECT DISTINCT {x}::text FROM {} WHERE {x} IS NOT NULL",
            sql.table
        ),
    };
    let (keys, values) = std::thread::scope(|scope| {
        let values = scope.spawn(|| source.query(&values_sql));
        let keys = target.key_values(rtable, rcol);
        let values = joined(values.join(), "source's");
        (keys, values)
    });
    let keys = keys?;
    let values = match values {
        Ok(rows) => rows,
        Err(e) => return Ok(Err(format!("the source's SQL failed: {e}"))),
    };
    let mut missing = Vec::new();
    for v in values
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
    {
        if !keys.contains(&v) {
            // (an integer column's text: digits and a sign)
            missing.push(
                v.parse::<i64>().map_err(|_| {
                    Error::runtime(format!("rowdiff: {x} = {v:?} is not an integer"))
                })?,
            );
        }
    }
    if missing.len() > 100_000 {
        return Ok(Err(format!(
            "{} values of {x} are missing from {rtable}",
            missing.len()
        )));
    }
    let cond = (!missing.is_empty()).then(|| {
        let list: Vec<String> = missing.iter().map(|v| v.to_string()).collect();
        format!("{x} IN ({})", list.join(", "))
    });
    Ok(Ok((cond, keys)))
}

/// The source's segment rows, the condition of its sure rejects, and the
/// target's keys of each reference (by target column).
type SourceSegments = (
    Vec<crate::db::Row>,
    String,
    Vec<(String, crate::batch::KeySet)>,
);

/// A hashing thread's result.
fn joined<T>(
    r: std::result::Result<Result<T>, Box<dyn std::any::Any + Send>>,
    what: &str,
) -> Result<T> {
    r.unwrap_or_else(|_| {
        Err(Error::runtime(format!(
            "rowdiff: the {what} thread panicked"
        )))
    })
}

/// Segments whose count or sum differ, and segments equal in both that
/// the source flagged (sorted).
fn compare_segments(source: &Segments, target: &Segments) -> (Vec<u64>, Vec<u64>) {
    let all: HashSet<u64> = source.keys().chain(target.keys()).copied().collect();
    let (mut differing, mut unsure) = (Vec::new(), Vec::new());
    for s in all {
        let (a, b) = (source.get(&s), target.get(&s));
        let sums = |v: Option<&(u64, u64, u64)>| v.map(|v| (v.0, v.1));
        let flagged = |v: Option<&(u64, u64, u64)>| v.is_some_and(|v| v.2 > 0);
        if sums(a) != sums(b) {
            differing.push(s);
        } else if flagged(a) || flagged(b) {
            unsure.push(s);
        }
    }
    differing.sort_unstable();
    unsure.sort_unstable();
    (differing, unsure)
}

/// Compare `table` of `job` between its source and the target.
pub fn rowdiff(cfg: &Config, job: &Job, table: &str, opts: Options) -> Result<RowdiffResult> {
    let t0 = Instant::now();
    let mapping = job
        .tables
        .iter()
        .map(|(m, _)| m)
        .find(|m| m.target.table == table)
        .ok_or_else(|| {
            Error::config(format!(
                "job {} does not write a table `{table}` (it writes {})",
                job.name,
                job.tables
                    .iter()
                    .map(|(m, _)| m.target.table.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let def = TableDef::from_mapping(mapping);
    if def.key.is_empty() {
        return Err(Error::config(format!(
            "{}: rowdiff compares rows by key; this mapping has no target.key",
            mapping.file
        )));
    }
    let source = crate::source::open(&job.source, cfg.source(&job.source)?)?;
    let mut target = crate::db::open(&cfg.target.url, true)?;
    target.begin_read_only()?;
    let d = target.dialect();
    // (the segments' number only: the rows are counted by the segments)
    let estimated_rows = target.estimated_rows(table)?.ok_or_else(|| {
        Error::config(format!(
            "{}: no table {table}; run `repaero migrate {}` first",
            target.describe(),
            job.name
        ))
    })?;
    // about 32 rows a segment
    let segments = (estimated_rows / 32).clamp(16, 65_536);

    let row_text = concat_sql(
        d,
        &def.columns
            .iter()
            .map(|c| canonical_sql(d, c))
            .collect::<Vec<_>>(),
    );
    let key_cols: Vec<&ColumnDef> = def
        .key
        .iter()
        .filter_map(|k| def.columns.iter().find(|c| &c.name == k))
        .collect();
    let key_text = concat_sql(
        d,
        &key_cols
            .iter()
            .map(|c| canonical_sql(d, c))
            .collect::<Vec<_>>(),
    );
    let integer_key = matches!(key_cols.as_slice(), [c] if c.ty == ColumnType::Integer);
    let seg_sql = segment_sql(
        d,
        integer_key.then(|| d.quote(&key_cols[0].name)).as_deref(),
        &key_text,
        segments,
    );
    let plan = Plan {
        cfg,
        job,
        mapping,
        def: &def,
        table,
        segments,
        seg_sql,
        text_hash: d.hash40(&row_text),
        integer_key,
        key_text,
        row_text,
    };

    let pushed = if opts.stream {
        Err("--stream".to_string())
    } else if source.capabilities().sql != Some(Dialect::Postgres) {
        Err("the source is not a PostgreSQL database".to_string())
    } else {
        let declared = match &mapping.source.table {
            Some(t) if mapping.source.query.is_none() => source.declared_columns(t)?,
            _ => None,
        };
        pushdown::plan(mapping, &def, declared.as_deref())
    };
    let mut found = match pushed {
        Ok(sql) => match plan.pushed(source.as_ref(), target.as_mut(), &sql)? {
            Ok(found) => found,
            Err(why) => plan.streamed(source.as_ref(), target.as_mut(), why)?,
        },
        Err(why) => plan.streamed(source.as_ref(), target.as_mut(), why)?,
    };

    let mut missing = Vec::new();
    let mut extra = Vec::new();
    let mut different = Vec::new();
    let mut merged_differing = 0u64;
    let read = found.to_read();
    if !read.is_empty() {
        let target_rows_of = match found.target_rows_of.take() {
            Some(rows) => rows,
            None => plan.target_rows_of(target.as_mut(), &read)?,
        };
        let source_rows_of = &found.rows;
        let show_key = |k: &str| k.replace(SEP, ", ");
        for (k, srow) in source_rows_of {
            match target_rows_of.get(k) {
                None => missing.push(show_key(k)),
                Some(trow) if trow != srow => {
                    if found.merged_keys.contains(k) {
                        merged_differing += 1;
                        continue;
                    }
                    let columns = def
                        .columns
                        .iter()
                        .zip(srow.split(SEP).zip(trow.split(SEP)))
                        .filter(|(_, (a, b))| a != b)
                        .map(|(c, (a, b))| (c.name.clone(), a.to_string(), b.to_string()))
                        .collect();
                    different.push(RowDifference {
                        key: show_key(k),
                        columns,
                    });
                }
                Some(_) => {}
            }
        }
        for k in target_rows_of.keys() {
            if !source_rows_of.contains_key(k) {
                extra.push(show_key(k));
            }
        }
    }
    target.rollback()?;
    Ok(RowdiffResult {
        job: job.name.clone(),
        table: table.to_string(),
        source: source.describe(),
        target: target.describe(),
        key: def.key.clone(),
        source_rows: found.source_rows,
        target_rows: found.target_rows,
        rejected: found.rejected,
        merged: found.merged,
        segments,
        segments_differing: found.differing.len() as u64,
        segments_unsure: found.unsure.len() as u64,
        source_hashed_in_sql: found.streamed.is_none(),
        streamed: found.streamed,
        missing,
        extra,
        different,
        merged_keys: merged_differing,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The result as people read it.
pub fn render(r: &RowdiffResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "rowdiff {} {}: {} ↔ {} by ({})",
        r.job,
        r.table,
        r.source,
        r.target,
        r.key.join(", ")
    );
    let _ = writeln!(
        s,
        "  source {} rows as migrated ({} rejected, {} merged apart), target {} rows; {} of {} segments differ; {:.2}s",
        r.source_rows,
        r.rejected,
        r.merged,
        r.target_rows,
        r.segments_differing,
        r.segments,
        r.seconds
    );
    let _ = match &r.streamed {
        None => writeln!(
            s,
            "  source hashed in its own SQL; {} more segments read to be sure",
            r.segments_unsure
        ),
        Some(why) => writeln!(s, "  every source row mapped ({why})"),
    };
    const SHOWN: usize = 100;
    for k in r.missing.iter().take(SHOWN) {
        let _ = writeln!(s, "  missing in the target: {k}");
    }
    for k in r.extra.iter().take(SHOWN) {
        let _ = writeln!(s, "  not in the source: {k}");
    }
    for dfr in r.different.iter().take(SHOWN) {
        let cols: Vec<String> = dfr
            .columns
            .iter()
            .map(|(c, a, b)| format!("{c}: {a:?} → {b:?}"))
            .collect();
        let _ = writeln!(s, "  different {}: {}", dfr.key, cols.join("; "));
    }
    let more = r.missing.len().saturating_sub(SHOWN)
        + r.extra.len().saturating_sub(SHOWN)
        + r.different.len().saturating_sub(SHOWN);
    if more > 0 {
        let _ = writeln!(s, "  … and {more} more (--json lists them all)");
    }
    let _ = writeln!(
        s,
        "  {}: {} missing, {} extra, {} different{}",
        if r.is_equal() { "equal" } else { "DIFFERENT" },
        r.missing.len(),
        r.extra.len(),
        r.different.len(),
        if r.merged_keys > 0 {
            format!(" ({} merged keys differ by design)", r.merged_keys)
        } else {
            String::new()
        }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: ColumnType, scale: u8) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            ty,
            precision: 14,
            scale,
            not_null: false,
            length: None,
        }
    }

    #[test]
    fn canonical_text_per_type() {
        assert_eq!(
            canonical(&col("a", ColumnType::Decimal, 2), ValueRef::Float(12.3)),
            "12.30"
        );
        assert_eq!(
            canonical(&col("a", ColumnType::Decimal, 2), ValueRef::Float(-0.001)),
            "0.00"
        );
        assert_eq!(
            canonical(&col("a", ColumnType::Integer, 0), ValueRef::Int(-7)),
            "-7"
        );
        assert_eq!(
            canonical(&col("a", ColumnType::Boolean, 0), ValueRef::Bool(true)),
            "t"
        );
        assert_eq!(
            canonical(&col("a", ColumnType::Date, 0), ValueRef::Date(20_000)),
            "2024-10-04"
        );
        assert_eq!(
            canonical(
                &col("a", ColumnType::Datetime, 0),
                ValueRef::Datetime(1_700_000_000_123)
            ),
            "2023-11-14 22:13:20.123"
        );
        assert_eq!(
            canonical(
                &col("a", ColumnType::Datetime, 0),
                ValueRef::Datetime(1_700_000_000_000)
            ),
            "2023-11-14 22:13:20.000"
        );
        assert_eq!(
            canonical(
                &col("a", ColumnType::Time, 0),
                ValueRef::Time(30_600_000_000_000)
            ),
            "08:30:00"
        );
        assert_eq!(
            canonical(&col("a", ColumnType::Text, 0), ValueRef::Null),
            "\\N"
        );
    }

    #[test]
    fn hashes_agree_with_the_sql() {
        // sha256("abc") = ba7816bf 8f…
        assert_eq!(hash40("abc"), 0xba7816bf8f);
        assert_eq!(
            Dialect::Postgres.hash40("x"),
            "('x' || substr(encode(sha256(convert_to(x, 'UTF8')), 'hex'), 1, 10))::bit(40)::bigint"
        );
        assert_eq!(
            canonical_sql(Dialect::Oracle, &col("amount", ColumnType::Decimal, 2)),
            "CASE WHEN \"AMOUNT\" IS NULL THEN '\\N' ELSE TO_CHAR(\"AMOUNT\", 'FM999999999990.00') END"
        );
        assert_eq!(
            canonical_sql(Dialect::Sqlite, &col("on", ColumnType::Datetime, 0)),
            "CASE WHEN \"on\" IS NULL THEN '\\N' ELSE strftime('%Y-%m-%d %H:%M:%f', \"on\") END"
        );
    }

    #[test]
    fn the_spill_gives_back_the_rows_of_the_wanted_segments() {
        let mut spill = Spill::create().expect("spill");
        let path = spill.path.clone();
        for i in 0..1000u64 {
            let row = format!("{i}{SEP}désignation {i}{SEP}\\N");
            spill.push(i % 7, &i.to_string(), &row).expect("push");
        }
        let wanted: HashSet<u64> = [3, 5].into_iter().collect();
        let mut got = Vec::new();
        spill
            .read(&wanted, &mut |k, r| got.push((k, r)))
            .expect("read");
        let expected: Vec<(String, String)> = (0..1000u64)
            .filter(|i| i % 7 == 3 || i % 7 == 5)
            .map(|i| (i.to_string(), format!("{i}{SEP}désignation {i}{SEP}\\N")))
            .collect();
        assert_eq!(got, expected);
        drop(spill);
        assert!(!path.exists(), "the spill file is removed");
    }

    #[test]
    fn decimal_text_equals_the_rounded_float_formatted() {
        let old = |f: f64, scale: u8| {
            let s = scale as usize;
            let r = crate::batch::parse::round_to(f, scale);
            format!("{:.s$}", if r == 0.0 { 0.0 } else { r })
        };
        let mut x = 0.000_7_f64;
        for i in 0..20_000 {
            for f in [x, -x, (i as f64) / 8.0, -(i as f64) * 0.005, x * 1e9] {
                for scale in [0u8, 1, 2, 4, 6] {
                    assert_eq!(
                        decimal_text(f, scale),
                        old(f, scale),
                        "{f} at scale {scale}"
                    );
                }
            }
            x = x * 1.37 + 0.013;
            if x > 1e7 {
                x /= 9.9e6;
            }
        }
        assert_eq!(decimal_text(-0.001, 2), "0.00");
        assert_eq!(decimal_text(2.675, 2), old(2.675, 2));
        assert_eq!(decimal_text(1e300, 2), old(1e300, 2));
    }
}
