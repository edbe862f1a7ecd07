//! `repaero scans import`: barcode scanner exports become stock movements.
//!
//! The format is in `docs/scan-format.md`. A file is read line by line
//! (never whole; a line is never held past 64 KiB); each line is checked
//! and becomes a row of `stock_movements` that changes `parts.quantity`,
//! or a rejected line in the quarantine with the file, the line number and
//! the reason; the import goes on. One file is one transaction: its
//! movements, the stock they change, the alerts they raise and the record
//! of the file commit together. A file already imported (same SHA-256) is
//! skipped, and a line already imported from any file (same content) is
//! counted, not applied twice: importing twice changes nothing.
//!
//! A file is read as it was when its checksum was taken, up to the end of
//! its last complete line: a scanner still appending to it cannot cut a
//! line in two, and a last line without its end of line waits for the
//! next import (reported as `incomplete`). A movement the target refuses
//! to store is a rejected line with the target's reason: the file is
//! imported again without it, so that the stock never moves by a movement
//! that is not in `stock_movements`. Each file is its own unit: one that
//! fails is reported and the next file goes on.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use chrono::NaiveDateTime;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::batch::MergeOp;
use crate::batch::Reject;
use crate::batch::parse::{epoch_millis, parse_datetime};
use crate::batch::{Value, dtype_of, frame_from_rows, push_padded};
use crate::config::mapping::{ColumnType, Merge, WriteMode};
use crate::config::{BelowZero, Config};
use crate::db::{ColumnDef, TableDef};
use crate::error::{Error, Result};
use crate::pipeline::quarantine::RejectFile;
use crate::sink::{Sink, ledger};
use crate::source::csv::{Encoding, LineContent, LineReader, MAX_LINE, shown, split_record};
use crate::source::header_key;
use crate::transform::clean::is_ean13;

/// Target tables.
pub const MOVEMENTS: &str = "stock_movements";
pub const FILES: &str = "scan_files";
const JOB: &str = "scans";
/// Lines checked together against the movements already imported.
const BATCH: usize = 10_000;

fn col(name: &str, ty: ColumnType, not_null: bool) -> ColumnDef {
    ColumnDef::new(name, ty, not_null)
}

/// `stock_movements`: one row per scanned line applied.
pub fn movements_def() -> TableDef {
    use ColumnType::*;
    TableDef {
        name: MOVEMENTS.into(),
        columns: vec![
            col("line_id", Text, true),
            col("scanned_at", Datetime, true),
            col("barcode", Text, true),
            col("reference", Text, true),
            col("quantity", Integer, true),
            col("direction", Text, true),
            col("operator", Text, true),
            col("location", Text, false),
            col("stock_after", Integer, true),
            col("file", Text, true),
            col("line", Integer, true),
        ],
        key: vec!["line_id".into()],
        foreign_keys: Vec::new(),
        soft_delete: None,
    }
}

/// `scan_files`: the files imported, by checksum.
pub fn files_def() -> TableDef {
    use ColumnType::*;
    TableDef {
        name: FILES.into(),
        columns: vec![
            col("checksum", Text, true),
            col("file", Text, true),
            col("imported_at", Datetime, true),
            col("lines", Integer, true),
            col("accepted", Integer, true),
            col("already", Integer, true),
            col("rejected", Integer, true),
        ],
        key: vec!["checksum".into()],
        foreign_keys: Vec::new(),
        soft_delete: None,
    }
}

fn schema(def: &TableDef) -> Vec<(String, polars::prelude::DataType)> {
    def.columns
        .iter()
        .map(|c| (c.name.clone(), dtype_of(c.ty)))
        .collect()
}

/// What importing one file did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ScanReport {
    pub file: String,
    /// SHA-256 of the file up to the end of its last complete line.
    pub checksum: String,
    /// `imported`, `already imported (…)`, `rolled back (dry run)`,
    /// `waiting (no complete line yet)`, or `failed`.
    pub status: String,
    /// Lines read: `accepted + already + rejected`.
    pub lines: u64,
    pub accepted: u64,
    /// Lines whose movement was already imported (from this or another file).
    pub already: u64,
    pub rejected: u64,
    /// A last line without its end of line (the file still being written):
    /// not read, left for the next import of the file.
    pub incomplete: u64,
    /// Its line number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete_line: Option<u64>,
    pub reasons: BTreeMap<String, u64>,
    /// OUT movements accepted although they took the stock below zero
    /// (`below_zero = "accept"`).
    pub below_zero: u64,
    pub parts_changed: u64,
    pub alerts_raised: Vec<String>,
    pub alerts_cleared: Vec<String>,
    pub quarantine: Option<String>,
    pub seconds: f64,
    /// Why the file failed (`status = "failed"`); nothing of it is imported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The exit code its failure stands for (0 when it did not fail).
    #[serde(skip_serializing_if = "is_zero")]
    pub exit_code: u8,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

/// A checked line, before it is known whether it was imported already.
/// Its texts are spans of its batch's [`Arena`]: a line costs no heap
/// allocation of its own (freeing five Strings a line took 8 % of an
/// import, docs/benchmarks.md).
struct Candidate {
    line: u64,
    id: Span,
    at: NaiveDateTime,
    barcode: Span,
    /// Upper-case reference.
    reference: Span,
    quantity: i64,
    out: bool,
    operator: Span,
    location: Option<Span>,
    /// The line as read, for the quarantine if it is refused later.
    line_text: Span,
}

type Span = std::ops::Range<usize>;

/// The texts of a batch's candidates, one after the other.
#[derive(Default)]
struct Arena(String);

impl Arena {
    fn push(&mut self, s: &str) -> Span {
        let start = self.0.len();
        self.0.push_str(s);
        start..self.0.len()
    }

    fn get(&self, span: &Span) -> &str {
        self.0.get(span.clone()).unwrap_or_default()
    }
}

/// Where each field is in the file's lines.
struct Layout {
    timestamp: usize,
    barcode: usize,
    quantity: usize,
    direction: usize,
    operator: usize,
    location: Option<usize>,
    fields: usize,
}

fn layout(header: &[String], file: &str) -> Result<Layout> {
    let keys: Vec<String> = header.iter().map(|h| header_key(h)).collect();
    let find = |aliases: &[&str]| {
        aliases
            .iter()
            .find_map(|a| keys.iter().position(|k| *k == header_key(a)))
    };
    let need = |aliases: &[&str]| {
        find(aliases).ok_or_else(|| {
            Error::input(format!(
                "{file}: line 1: no column {:?} in the header ({})",
                aliases[0],
                header.join(", ")
            ))
        })
    };
    Ok(Layout {
        timestamp: need(&["horodatage", "timestamp", "date"])?,
        barcode: need(&["code", "barcode", "code-barres", "code barre"])?,
        quantity: need(&["quantite", "quantity", "qte"])?,
        direction: need(&["sens", "direction"])?,
        operator: need(&["operateur", "operator"])?,
        location: find(&["emplacement", "location"]),
        fields: header.len(),
    })
}

/// What of a file an import reads: its bytes up to the end of its last
/// complete line, as they were when it started.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// SHA-256 of those bytes: the file's identity in `scan_files`.
    pub checksum: String,
    /// How many bytes.
    pub complete: u64,
    /// The number of a last line without its end of line (not blank).
    pub incomplete_line: Option<u64>,
}

/// Take a file's [`Snapshot`], streamed.
pub fn snapshot(path: &Path) -> Result<Snapshot> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::input(format!("{}: cannot open: {e}", path.display())))?;
    let mut h = Sha256::new();
    // the hash as it stood at the last end of line seen
    let mut at_line_end = h.clone();
    let (mut read, mut complete, mut line_ends) = (0u64, 0u64, 0u64);
    let mut tail_blank = true;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::input(format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        let blank = |b: &[u8]| b.iter().all(u8::is_ascii_whitespace);
        match chunk.iter().rposition(|b| *b == b'\n') {
            Some(i) => {
                h.update(&chunk[..=i]);
                at_line_end = h.clone();
                h.update(&chunk[i + 1..]);
                complete = read + i as u64 + 1;
                line_ends += chunk.iter().filter(|b| **b == b'\n').count() as u64;
                tail_blank = blank(&chunk[i + 1..]);
            }
            None => {
                h.update(chunk);
                tail_blank = tail_blank && blank(chunk);
            }
        }
        read += n as u64;
    }
    Ok(Snapshot {
        checksum: hex::encode(at_line_end.finalize()),
        complete,
        incomplete_line: (!tail_blank).then_some(line_ends + 1),
    })
}

/// A reader of the first bytes of a file that hashes what it reads, so
/// that the import can check it read what the snapshot saw.
struct Hashing<R> {
    inner: R,
    hash: Rc<RefCell<Sha256>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.borrow_mut().update(&buf[..n]);
        Ok(n)
    }
}

/// The parts' stock and minimum, by upper-case reference.
pub fn load_parts(sink: &mut dyn Sink) -> Result<HashMap<String, (i64, Option<i64>)>> {
    if sink.conn()?.count_rows("parts")?.is_none() {
        return Err(Error::config(format!(
            "{}: no parts table; run `repaero migrate stock` first",
            sink.describe()
        )));
    }
    Ok(super::levels(sink.conn()?)?
        .into_iter()
        .map(|l| (l.reference.to_uppercase(), (l.quantity, l.min_quantity)))
        .collect())
}

fn load_barcodes(sink: &mut dyn Sink) -> Result<HashMap<String, String>> {
    if sink.conn()?.count_rows("part_barcodes")?.is_none() {
        return Ok(HashMap::new());
    }
    Ok(sink
        .conn()?
        .select_text("part_barcodes", &["barcode".into(), "reference".into()])?
        .into_iter()
        .filter_map(|r| Some((r.first()?.clone()?, r.get(1)?.clone()?.to_uppercase())))
        .collect())
}

/// Check one line; the movement it stands for, or why not.
fn check_line(
    text: &str,
    delim: char,
    lay: &Layout,
    parts: &HashMap<String, (i64, Option<i64>)>,
    barcodes: &HashMap<String, String>,
    arena: &mut Arena,
) -> std::result::Result<Candidate, (String, String)> {
    // a line without quotes splits at each delimiter (what `split_record`
    // does then), without a String per field
    let quoted;
    let fields: Vec<&str> = if text.contains('"') {
        quoted = split_record(text, delim);
        quoted.iter().map(String::as_str).collect()
    } else {
        text.split(delim).collect()
    };
    if fields.len() != lay.fields {
        return Err((
            "line: wrong number of fields".into(),
            format!("{} fields, the header has {}", fields.len(), lay.fields),
        ));
    }
    let f = |i: usize| fields[i].trim();
    let ts = f(lay.timestamp);
    let at = parse_datetime(ts, &[]).ok_or_else(|| {
        (
            "timestamp: not a date-time".to_string(),
            format!("timestamp = {ts:?}"),
        )
    })?;
    let code = f(lay.barcode);
    let mark = arena.0.len();
    let reference = if code.len() == 13 && code.bytes().all(|b| b.is_ascii_digit()) {
        if !is_ean13(code) {
            return Err((
                "barcode: not an EAN-13 (check digit)".into(),
                format!("barcode = {code:?} has a wrong check digit"),
            ));
        }
        let r = barcodes.get(code).ok_or_else(|| {
            (
                "barcode: unknown".to_string(),
                format!("barcode {code} is not in part_barcodes"),
            )
        })?;
        arena.push(r)
    } else if code.bytes().all(|b| b.is_ascii_digit()) {
        return Err((
            "barcode: not an EAN-13 (check digit)".into(),
            format!("barcode = {code:?} is digits but not 13 of them"),
        ));
    } else {
        // a Code128 label carries the part number itself
        let r = if code.is_ascii() {
            arena.0.extend(code.chars().map(|c| c.to_ascii_uppercase()));
            mark..arena.0.len()
        } else {
            arena.push(&code.to_uppercase())
        };
        if !parts.contains_key(arena.get(&r)) {
            arena.0.truncate(mark);
            return Err((
                "barcode: unknown".into(),
                format!("part number {code:?} is not in parts"),
            ));
        }
        r
    };
    // the checks below truncate the arena back to where this line began
    let fail = |arena: &mut Arena, e: (String, String)| {
        arena.0.truncate(mark);
        Err(e)
    };
    let q = f(lay.quantity);
    let Some(quantity) = q.parse::<i64>().ok().filter(|v| *v > 0) else {
        return fail(
            arena,
            (
                "quantity: not a whole number above 0".to_string(),
                format!("quantity = {q:?}"),
            ),
        );
    };
    let out = match f(lay.direction) {
        // what scanners write, without an upper-case copy
        "IN" => false,
        "OUT" => true,
        d => match d.to_uppercase().as_str() {
            "IN" | "E" | "ENTREE" | "ENTRÉE" => false,
            "OUT" | "S" | "SORTIE" => true,
            _ => {
                return fail(
                    arena,
                    (
                        "direction: not IN or OUT".into(),
                        format!("direction = {:?}", f(lay.direction)),
                    ),
                );
            }
        },
    };
    let operator = f(lay.operator);
    if operator.is_empty() {
        return fail(
            arena,
            ("operator: required".into(), "operator is empty".into()),
        );
    }
    let location = lay.location.map(f).filter(|s| !s.is_empty());
    // a line's identity: what it says, whatever file it comes in; its
    // key is led by the time, so that the key (and its index) grows at
    // its end as a scanner's export does, instead of at random places
    let mut qty = itoa::Buffer::new();
    let start = arena.0.len();
    push_line_id(
        &mut arena.0,
        at,
        &[
            code,
            qty.format(quantity),
            if out { "OUT" } else { "IN" },
            operator,
            location.unwrap_or(""),
        ],
    );
    let id = start..arena.0.len();
    Ok(Candidate {
        line: 0,
        id,
        at,
        barcode: arena.push(code),
        reference,
        quantity,
        out,
        operator: arena.push(operator),
        location: location.map(|l| arena.push(l)),
        line_text: arena.push(text),
    })
}

/// `YYYYMMDDHHMMSS.mmm-` and 24 hex digits of the SHA-256 of the time
/// (to the nanosecond) and the fields, `|`-separated.
fn line_id(at: NaiveDateTime, fields: &[&str]) -> String {
    let mut id = String::with_capacity(48);
    push_line_id(&mut id, at, fields);
    id
}

/// [`line_id`] written at the end of `stamp`.
fn push_line_id(stamp: &mut String, at: NaiveDateTime, fields: &[&str]) {
    use chrono::{Datelike, Timelike};
    let from = stamp.len();
    let year = at.year();
    if (0..=9999).contains(&year) {
        push_padded(stamp, year as u32, 4);
    } else {
        use std::fmt::Write as _;
        let _ = write!(stamp, "{year:04}");
    }
    for v in [at.month(), at.day(), at.hour(), at.minute(), at.second()] {
        push_padded(stamp, v, 2);
    }
    let nanos = at.nanosecond();
    let mut h = Sha256::new();
    h.update(&stamp.as_bytes()[from..]);
    h.update(nanos.to_le_bytes());
    for f in fields {
        h.update(b"|");
        h.update(f.as_bytes());
    }
    stamp.push('.');
    push_padded(stamp, nanos / 1_000_000, 3);
    stamp.push('-');
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in &h.finalize()[..12] {
        stamp.push(char::from(HEX[usize::from(b >> 4)]));
        stamp.push(char::from(HEX[usize::from(b & 15)]));
    }
}

/// The import of one file, inside the sink's transaction.
struct Import<'a> {
    sink: &'a mut dyn Sink,
    cfg: &'a Config,
    file: String,
    run_id: String,
    rejects: RejectFile,
    report: ScanReport,
    parts: HashMap<String, (i64, Option<i64>)>,
    changed: HashSet<String>,
    pending: Vec<Candidate>,
    /// The texts of `pending`.
    arena: Arena,
    /// Lines whose movement the target refused in an earlier attempt at
    /// this file, with its reason and detail: rejected this time.
    refused_before: &'a HashMap<u64, (String, String)>,
    /// Lines whose movement the target refuses in this attempt.
    refused_now: Vec<(u64, (String, String))>,
}

impl Import<'_> {
    /// Note the movements the target refused (whenever it reports them:
    /// PostgreSQL's COPY tells at a later write or at the flush).
    fn note_refused(&mut self, out: crate::sink::WriteOutcome) -> Result<()> {
        for r in out.refused {
            let line = r
                .record
                .iter()
                .find(|(k, _)| k == "line")
                .and_then(|(_, v)| v.as_deref())
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| {
                    Error::runtime(format!(
                        "{}: the target refused a movement without its line: {}",
                        self.file, r.detail
                    ))
                })? as u64;
            self.refused_now.push((line, (r.reason, r.detail)));
        }
        Ok(())
    }

    fn reject(
        &mut self,
        line: u64,
        reason: String,
        detail: String,
        record: Vec<(String, Option<String>)>,
    ) -> Result<()> {
        self.report.rejected += 1;
        *self.report.reasons.entry(reason.clone()).or_default() += 1;
        let r = Reject {
            row: line,
            reason,
            detail: format!("{}, line {line}: {detail}", self.file),
            record,
        };
        self.rejects.write(&self.file, std::slice::from_ref(&r))?;
        ledger::write_rejects(
            self.sink.conn()?,
            &self.run_id,
            JOB,
            MOVEMENTS,
            &self.file,
            &[r],
        )
    }

    /// The ids of `pending` already in `stock_movements`. Keys lead with
    /// the scan time, so a batch of a file in time order spans a narrow
    /// key range: reading the range is one index range scan (4 ms for
    /// 10,000 keys on PostgreSQL, where an `IN` list of 10,000 made the
    /// planner scan the whole table: 100 ms a batch). When the range holds
    /// many more rows than the batch (a file out of time order), the ids
    /// are looked up one by one with an `IN` list instead.
    ///
    /// The answer may hold ids in the range that are not the batch's: the
    /// caller only asks it about the batch's.
    fn known_ids(&mut self, pending: &[Candidate], arena: &Arena) -> Result<HashSet<String>> {
        let d = self.sink.dialect();
        let (Some(lo), Some(hi)) = (
            pending.iter().map(|c| arena.get(&c.id)).min(),
            pending.iter().map(|c| arena.get(&c.id)).max(),
        ) else {
            return Ok(HashSet::new());
        };
        let cap = 4 * pending.len() + 1;
        let limit = match d {
            crate::db::Dialect::Oracle => format!(" FETCH FIRST {cap} ROWS ONLY"),
            _ => format!(" LIMIT {cap}"),
        };
        let col = d.quote("line_id");
        let table = d.quote(MOVEMENTS);
        let text = |s: &str| Value::Text(s.to_string());
        let in_range = self.sink.conn()?.query(
            &format!(
                "SELECT {col} FROM {table} WHERE {col} >= {} AND {col} <= {}{limit}",
                d.param(1, ColumnType::Text),
                d.param(2, ColumnType::Text)
            ),
            &[text(lo), text(hi)],
        )?;
        let rows = if in_range.len() < cap {
            in_range
        } else {
            let marks: Vec<String> = (1..=pending.len())
                .map(|i| d.param(i, ColumnType::Text))
                .collect();
            let ids: Vec<Value> = pending.iter().map(|c| text(arena.get(&c.id))).collect();
            self.sink.conn()?.query(
                &format!(
                    "SELECT {col} FROM {table} WHERE {col} IN ({})",
                    marks.join(",")
                ),
                &ids,
            )?
        };
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect())
    }

    /// Apply the pending lines, in order: those not imported yet change the
    /// stock and are written.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let arena = std::mem::take(&mut self.arena);
        let known = self.known_ids(&pending, &arena)?;
        // the lines of earlier batches are in the table already (the query
        // above sees them, in this transaction): only this batch's are kept
        let first: Vec<bool> = {
            let mut seen: HashSet<&str> = HashSet::with_capacity(pending.len());
            pending
                .iter()
                .map(|c| {
                    let id = arena.get(&c.id);
                    !known.contains(id) && seen.insert(id)
                })
                .collect()
        };
        let mut rows = Movements(Vec::with_capacity(pending.len()));
        for (c, first) in pending.into_iter().zip(first) {
            if !first {
                self.report.already += 1;
                continue;
            }
            if let Some((reason, detail)) = self.refused_before.get(&c.line) {
                self.reject(
                    c.line,
                    reason.clone(),
                    detail.clone(),
                    vec![(
                        "line".to_string(),
                        Some(shown(arena.get(&c.line_text).as_bytes())),
                    )],
                )?;
                continue;
            }
            let reference = arena.get(&c.reference);
            let Some(stock) = self.parts.get_mut(reference) else {
                self.reject(
                    c.line,
                    "barcode: unknown".into(),
                    format!("part {reference} is not in parts"),
                    vec![(
                        "line".to_string(),
                        Some(shown(arena.get(&c.line_text).as_bytes())),
                    )],
                )?;
                continue;
            };
            let after = if c.out {
                stock.0 - c.quantity
            } else {
                stock.0 + c.quantity
            };
            // an IN never is refused, even onto a negative stock
            if c.out && after < 0 {
                match self.cfg.scans.below_zero {
                    BelowZero::Reject => {
                        let detail = format!(
                            "OUT {} of {reference} would leave {after} (stock {})",
                            c.quantity, stock.0
                        );
                        self.reject(
                            c.line,
                            "stock: would go below zero".into(),
                            detail,
                            vec![(
                                "line".to_string(),
                                Some(shown(arena.get(&c.line_text).as_bytes())),
                            )],
                        )?;
                        continue;
                    }
                    BelowZero::Accept => self.report.below_zero += 1,
                }
            }
            stock.0 = after;
            if !self.changed.contains(reference) {
                self.changed.insert(reference.to_string());
            }
            self.report.accepted += 1;
            rows.0.push((c, after));
        }
        if !rows.0.is_empty() {
            let df = rows.frame(&arena, &self.file)?;
            let out = self.sink.write(&df)?;
            self.note_refused(out)?;
        }
        // its room serves the next batch
        let mut arena = arena;
        arena.0.clear();
        self.arena = arena;
        Ok(())
    }
}

/// A batch's movements (with the stock after each): the frame of
/// `stock_movements` is built from them column by column, without a row of
/// [`Value`]s per line (building and dropping those rows took 30 % of an
/// import, docs/benchmarks.md).
struct Movements(Vec<(Candidate, i64)>);

impl Movements {
    /// The frame, with the columns and types of [`movements_def`].
    fn frame(&self, arena: &Arena, file: &str) -> Result<polars::prelude::DataFrame> {
        use polars::prelude::*;
        let rows = &self.0;
        let text = |name: &str, f: fn(&Candidate) -> &Span| {
            StringChunked::from_iter_values(name.into(), rows.iter().map(|(c, _)| arena.get(f(c))))
                .into_series()
                .into_column()
        };
        let int = |name: &str, f: fn(&(Candidate, i64)) -> i64| {
            Int64Chunked::from_vec(name.into(), rows.iter().map(f).collect()).into_column()
        };
        let cols = vec![
            text("line_id", |c| &c.id),
            Int64Chunked::from_vec(
                "scanned_at".into(),
                rows.iter().map(|(c, _)| epoch_millis(c.at)).collect(),
            )
            .into_datetime(TimeUnit::Milliseconds, None)
            .into_series()
            .into_column(),
            text("barcode", |c| &c.barcode),
            text("reference", |c| &c.reference),
            int("quantity", |(c, _)| c.quantity),
            StringChunked::from_iter_values(
                "direction".into(),
                rows.iter().map(|(c, _)| if c.out { "OUT" } else { "IN" }),
            )
            .into_series()
            .into_column(),
            text("operator", |c| &c.operator),
            StringChunked::from_iter_options(
                "location".into(),
                rows.iter()
                    .map(|(c, _)| c.location.as_ref().map(|l| arena.get(l))),
            )
            .into_series()
            .into_column(),
            int("stock_after", |(_, after)| *after),
            StringChunked::from_iter_values("file".into(), std::iter::repeat_n(file, rows.len()))
                .into_series()
                .into_column(),
            int("line", |(c, _)| c.line as i64),
        ];
        DataFrame::new(rows.len(), cols).map_err(|e| Error::runtime(format!("building rows: {e}")))
    }
}

/// Import scan files into the configured target, each file on its own:
/// one that fails is reported (`status = "failed"`, its error and exit
/// code) and the next file goes on.
pub fn import(cfg: &Config, files: &[PathBuf], dry_run: bool) -> Vec<ScanReport> {
    files
        .iter()
        .map(|path| {
            let t0 = Instant::now();
            import_file(cfg, path, dry_run).unwrap_or_else(|e| ScanReport {
                file: path.display().to_string(),
                status: "failed".into(),
                seconds: t0.elapsed().as_secs_f64(),
                error: Some(e.to_string()),
                exit_code: e.exit_code(),
                ..Default::default()
            })
        })
        .collect()
}

/// The exit code of an import: the worst failure's, 0 when none failed.
pub fn exit_code(reports: &[ScanReport]) -> u8 {
    reports.iter().map(|r| r.exit_code).max().unwrap_or(0)
}

/// How one attempt at a file ended.
enum Attempt {
    Done(Box<ScanReport>),
    /// The target refused these lines' movements: the attempt was rolled
    /// back, to be made again with them rejected.
    Refused(Vec<(u64, (String, String))>),
}

fn import_file(cfg: &Config, path: &Path, dry_run: bool) -> Result<ScanReport> {
    let t0 = Instant::now();
    let file = path.display().to_string();
    let snap = snapshot(path)?;
    let run_id = crate::pipeline::new_run_id();
    let rejects_path = RejectFile::new(&cfg.quarantine_dir().join(&run_id), JOB, MOVEMENTS)
        .path()
        .to_path_buf();
    let mut refused: HashMap<u64, (String, String)> = HashMap::new();
    loop {
        let attempt = attempt_file(cfg, path, &snap, &run_id, dry_run, &refused);
        match attempt {
            Ok(Attempt::Done(mut report)) => {
                report.seconds = t0.elapsed().as_secs_f64();
                return Ok(*report);
            }
            Ok(Attempt::Refused(lines)) => {
                // each attempt refuses at least one line more, or stops
                let known = refused.len();
                refused.extend(lines);
                if refused.len() == known {
                    return Err(Error::runtime(format!(
                        "importing {file}: the target refused lines it had refused before; nothing imported"
                    )));
                }
                tracing::info!(
                    file,
                    refused = refused.len(),
                    "the target refused movements: importing the file again without them"
                );
                let _ = std::fs::remove_file(&rejects_path);
            }
            Err(e) => {
                // nothing of the file is in the target: nor in the quarantine
                let _ = std::fs::remove_file(&rejects_path);
                return Err(e.context(format!("importing {file}")));
            }
        }
    }
}

/// One attempt at importing a file, in one transaction.
fn attempt_file(
    cfg: &Config,
    path: &Path,
    snap: &Snapshot,
    run_id: &str,
    dry_run: bool,
    refused_before: &HashMap<u64, (String, String)>,
) -> Result<Attempt> {
    let file = path.display().to_string();
    let sum = snap.checksum.clone();
    let mut report = ScanReport {
        file: file.clone(),
        checksum: sum.clone(),
        incomplete: u64::from(snap.incomplete_line.is_some()),
        incomplete_line: snap.incomplete_line,
        ..Default::default()
    };
    if snap.complete == 0 && snap.incomplete_line.is_some() {
        // a header still being written: nothing to read yet, nothing recorded
        report.status = "waiting (no complete line yet)".into();
        return Ok(Attempt::Done(Box::new(report)));
    }
    let mut sink = crate::sink::open(&cfg.target.url, dry_run)?;
    sink.begin()?;
    let result = (|| -> Result<Attempt> {
        let d = sink.dialect();
        // imports of other files (or any other stock writer) wait until
        // this one commits: the tables it creates, the files and the stock
        // read below are those written back
        super::lock(sink.as_mut(), "parts")?;
        // the file record first: a file already imported is not read again
        sink.start_table(&files_def(), WriteMode::Append)?;
        sink.finish_table()?;
        let done = sink.conn()?.query(
            &format!(
                "SELECT {} FROM {} WHERE {} = {}",
                d.quote("imported_at"),
                d.quote(FILES),
                d.quote("checksum"),
                d.param(1, ColumnType::Text)
            ),
            &[Value::Text(sum.clone())],
        )?;
        if let Some(at) = done.first().and_then(|r| r.first().cloned().flatten()) {
            report.status = format!("already imported ({at})");
            return Ok(Attempt::Done(Box::new(report)));
        }
        let parts = load_parts(sink.as_mut())?;
        let barcodes = load_barcodes(sink.as_mut())?;
        sink.start_table(&movements_def(), WriteMode::Append)?;
        let qdir = cfg.quarantine_dir().join(run_id);
        let mut imp = Import {
            sink: sink.as_mut(),
            cfg,
            file: file.clone(),
            run_id: run_id.to_string(),
            rejects: RejectFile::new(&qdir, JOB, MOVEMENTS),
            report,
            parts,
            changed: HashSet::new(),
            pending: Vec::new(),
            arena: Arena::default(),
            refused_before,
            refused_now: Vec::new(),
        };
        // the bytes the snapshot saw, and no more: a scanner appending now
        // cannot cut the last line in two
        let hash = Rc::new(RefCell::new(Sha256::new()));
        let f = std::fs::File::open(path)
            .map_err(|e| Error::input(format!("{file}: cannot open: {e}")))?;
        let mut lines = LineReader::new(
            Hashing {
                inner: f.take(snap.complete),
                hash: hash.clone(),
            },
            MAX_LINE,
        );
        let mut buf = Vec::new();
        let (header, delim) = lines.header(&mut buf, &file, Encoding::Utf8, None)?;
        let lay = layout(&header, &file)?;
        while let Some(line) = lines
            .next_line(&mut buf)
            .map_err(|e| Error::input(format!("{file}: {e}")))?
        {
            let raw = || vec![("line".to_string(), Some(shown(&buf)))];
            let checked = match lines.content(&line, &buf, Encoding::Utf8) {
                LineContent::Rejected { reason, detail } => Err((reason, detail)),
                LineContent::Blank => continue,
                LineContent::Text(text) => {
                    check_line(&text, delim, &lay, &imp.parts, &barcodes, &mut imp.arena)
                }
            };
            imp.report.lines += 1;
            match checked {
                Ok(mut c) => {
                    c.line = line.number;
                    imp.pending.push(c);
                    if imp.pending.len() >= BATCH {
                        imp.flush()?;
                    }
                }
                Err((reason, detail)) => {
                    let record = if line.too_long { Vec::new() } else { raw() };
                    imp.reject(line.number, reason, detail, record)?;
                }
            }
        }
        let read = hex::encode(hash.borrow().clone().finalize());
        if read != sum {
            return Err(Error::input(format!(
                "{file}: the file changed while it was read (rewritten, not only appended to); nothing of it is imported: import it again"
            )));
        }
        imp.flush()?;
        let out = imp.sink.flush()?;
        imp.note_refused(out)?;
        if !imp.refused_now.is_empty() {
            return Ok(Attempt::Refused(std::mem::take(&mut imp.refused_now)));
        }
        imp.sink.finish_table()?;
        // the stock the movements changed
        let changed: Vec<String> = {
            let mut v: Vec<String> = imp.changed.iter().cloned().collect();
            v.sort();
            v
        };
        let mut report = imp.report;
        report.parts_changed = changed.len() as u64;
        let quarantine = imp.rejects.finish()?;
        let parts = imp.parts;
        write_quantities(sink.as_mut(), &changed, &parts)?;
        let (raised, cleared) = super::alerts::evaluate(sink.as_mut(), cfg)?;
        report.alerts_raised = raised;
        report.alerts_cleared = cleared;
        let now = chrono::Utc::now().naive_utc();
        sink.start_table(&files_def(), WriteMode::Append)?;
        let row = vec![vec![
            Value::Text(sum.clone()),
            Value::Text(file.clone()),
            Value::Datetime(epoch_millis(now)),
            Value::Int(report.lines as i64),
            Value::Int(report.accepted as i64),
            Value::Int(report.already as i64),
            Value::Int(report.rejected as i64),
        ]];
        let mut out = sink.write(&frame_from_rows(&schema(&files_def()), &row)?)?;
        out.refused.extend(sink.flush()?.refused);
        if let Some(r) = out.refused.first() {
            return Err(Error::runtime(format!(
                "recording the file in {FILES}: {}",
                r.detail
            )));
        }
        sink.finish_table()?;
        report.quarantine = quarantine.map(|p| p.display().to_string());
        report.status = if dry_run {
            "rolled back (dry run)".into()
        } else {
            "imported".into()
        };
        Ok(Attempt::Done(Box::new(report)))
    })();
    match result {
        Ok(Attempt::Done(report)) => {
            if dry_run || report.status.starts_with("already") {
                sink.rollback()?;
            } else {
                sink.check_integrity()?;
                sink.commit()?;
            }
            Ok(Attempt::Done(report))
        }
        Ok(refused) => {
            sink.rollback()?;
            Ok(refused)
        }
        Err(e) => {
            let _ = sink.rollback();
            Err(e)
        }
    }
}

/// Write back the stock of the parts in `changed` (upper-case references)
/// from `parts`: what every stock movement ends with, scans or consumption.
pub(crate) fn write_quantities(
    sink: &mut dyn Sink,
    changed: &[String],
    parts: &HashMap<String, (i64, Option<i64>)>,
) -> Result<()> {
    if changed.is_empty() {
        return Ok(());
    }
    let def = TableDef {
        name: "parts".into(),
        columns: vec![
            col("reference", ColumnType::Text, true),
            col("quantity", ColumnType::Integer, false),
        ],
        key: vec!["reference".into()],
        foreign_keys: Vec::new(),
        soft_delete: None,
    };
    sink.start_table(&def, WriteMode::Append)?;
    let exact = reference_case(sink)?;
    let ops: Vec<MergeOp> = changed
        .iter()
        .map(|r| MergeOp {
            key: vec![(
                "reference".into(),
                Value::Text(exact.get(r).cloned().unwrap_or_else(|| r.clone())),
            )],
            sets: vec![(
                "quantity".into(),
                Merge::Last,
                Value::Int(parts.get(r).map_or(0, |p| p.0)),
            )],
            row: 0,
            kept_row: 0,
            record: Vec::new(),
        })
        .collect();
    sink.merge(&ops)?;
    sink.finish_table()
}

/// Parts taken from the stores by other means than a scan (an
/// intervention closed on the iPad: the booking queue): one OUT movement
/// per part, written to `stock_movements` like a scanned line (`file` says
/// where it comes from), the parts' stock changed, the alerts evaluated:
/// the scans' path. A consumption is a fact: it is applied even when it
/// takes a stock below zero (reported), and a reference the stock does not
/// know is reported (`unknown`), not applied. Runs in the caller's
/// transaction.
#[derive(Debug, Clone)]
pub struct Consumption {
    /// When the parts left (an intervention's completion).
    pub at: NaiveDateTime,
    /// Upper-case, space-free reference.
    pub reference: String,
    pub quantity: i64,
    /// Who took them (a technician).
    pub operator: String,
    /// Where it comes from (`queue:INT-2026-0107`), in `stock_movements.file`.
    pub origin: String,
    /// Its position in the origin (1-based), in `stock_movements.line`.
    pub line: u64,
}

/// What [`consume`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConsumeReport {
    pub applied: u64,
    /// `origin reference` of the consumptions of a part the stock does not know.
    pub unknown: Vec<String>,
    /// References whose stock went below zero.
    pub below_zero: Vec<String>,
    pub alerts_raised: Vec<String>,
    pub alerts_cleared: Vec<String>,
}

/// Apply `items` (see [`Consumption`]).
pub fn consume(sink: &mut dyn Sink, cfg: &Config, items: &[Consumption]) -> Result<ConsumeReport> {
    let mut report = ConsumeReport::default();
    if items.is_empty() {
        return Ok(report);
    }
    super::lock(sink, "parts")?;
    let mut parts = load_parts(sink)?;
    let mut changed: Vec<String> = Vec::new();
    let mut rows = Vec::with_capacity(items.len());
    for c in items {
        let Some(stock) = parts.get_mut(&c.reference) else {
            report.unknown.push(format!("{} {}", c.origin, c.reference));
            continue;
        };
        stock.0 -= c.quantity;
        if stock.0 < 0 && !report.below_zero.contains(&c.reference) {
            report.below_zero.push(c.reference.clone());
        }
        if !changed.contains(&c.reference) {
            changed.push(c.reference.clone());
        }
        report.applied += 1;
        let id = line_id(
            c.at,
            &[&c.origin, &c.reference, &c.quantity.to_string(), "OUT"],
        );
        rows.push(vec![
            Value::Text(id),
            Value::Datetime(epoch_millis(c.at)),
            Value::Text(c.reference.clone()),
            Value::Text(c.reference.clone()),
            Value::Int(c.quantity),
            Value::Text("OUT".into()),
            Value::Text(c.operator.clone()),
            Value::Null,
            Value::Int(stock.0),
            Value::Text(c.origin.clone()),
            Value::Int(c.line as i64),
        ]);
    }
    sink.start_table(&movements_def(), WriteMode::Append)?;
    if !rows.is_empty() {
        let mut out = sink.write(&frame_from_rows(&schema(&movements_def()), &rows)?)?;
        out.refused.extend(sink.flush()?.refused);
        if let Some(r) = out.refused.first() {
            return Err(Error::runtime(format!(
                "{}: the target refused a stock movement: {}",
                sink.describe(),
                r.detail
            )));
        }
    }
    sink.finish_table()?;
    changed.sort();
    write_quantities(sink, &changed, &parts)?;
    let (raised, cleared) = super::alerts::evaluate(sink, cfg)?;
    report.alerts_raised = raised;
    report.alerts_cleared = cleared;
    Ok(report)
}

/// Upper-case reference → the reference as the parts table writes it.
fn reference_case(sink: &mut dyn Sink) -> Result<HashMap<String, String>> {
    Ok(sink
        .conn()?
        .select_text("parts", &["reference".into()])?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .map(|r| (r.to_uppercase(), r))
        .collect())
}

/// Reports as people read them.
pub fn render(reports: &[ScanReport]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for r in reports {
        if r.error.is_some() {
            // the error itself goes to stderr
            let _ = writeln!(
                s,
                "{}: failed, nothing imported ({:.2}s)",
                r.file, r.seconds
            );
            continue;
        }
        let _ = writeln!(s, "{}: {} ({:.2}s)", r.file, r.status, r.seconds);
        if let Some(n) = r.incomplete_line {
            let _ = writeln!(
                s,
                "  line {n} has no end of line yet: not read; the next import takes it once the file is complete (a complete file ends its last line)"
            );
        }
        if r.lines == 0 && !r.status.starts_with("imported") && !r.status.starts_with("rolled") {
            continue;
        }
        let _ = writeln!(
            s,
            "  {} lines: {} movements applied, {} already imported, {} rejected; {} parts changed",
            r.lines, r.accepted, r.already, r.rejected, r.parts_changed
        );
        for (reason, n) in &r.reasons {
            let _ = writeln!(s, "  rejected {n:>6}  {reason}");
        }
        if r.below_zero > 0 {
            let _ = writeln!(
                s,
                "  {} movements took a stock below zero (accepted by below_zero = \"accept\")",
                r.below_zero
            );
        }
        for a in &r.alerts_raised {
            let _ = writeln!(s, "  alert raised: {a}");
        }
        for a in &r.alerts_cleared {
            let _ = writeln!(s, "  alert cleared: {a}");
        }
        if let Some(q) = &r.quarantine {
            let _ = writeln!(s, "  quarantine: {q}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lay() -> Layout {
        layout(
            &[
                "horodatage",
                "code",
                "quantité",
                "sens",
                "opérateur",
                "emplacement",
            ]
            .map(String::from),
            "scans.csv",
        )
        .unwrap()
    }

    fn parts() -> HashMap<String, (i64, Option<i64>)> {
        [("HYD-2040".to_string(), (5, Some(2)))].into()
    }

    /// A checked line and its texts.
    struct Checked {
        c: Candidate,
        arena: Arena,
    }

    impl Checked {
        fn id(&self) -> &str {
            self.arena.get(&self.c.id)
        }
        fn reference(&self) -> &str {
            self.arena.get(&self.c.reference)
        }
    }

    fn check(line: &str) -> std::result::Result<Checked, String> {
        let codes: HashMap<String, String> =
            [("4006381333931".to_string(), "HYD-2040".to_string())].into();
        let mut arena = Arena::default();
        let c = check_line(line, ';', &lay(), &parts(), &codes, &mut arena).map_err(|(r, _)| {
            // a line refused leaves nothing in the arena
            assert_eq!(arena.0, "");
            r
        })?;
        Ok(Checked { c, arena })
    }

    #[test]
    fn a_snapshot_ends_at_the_last_complete_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        let sha = |b: &[u8]| hex::encode(Sha256::digest(b));
        let snap = |bytes: &[u8]| {
            std::fs::write(&p, bytes).unwrap();
            snapshot(&p).unwrap()
        };
        let s = snap(b"h\na\r\nb\n");
        assert_eq!((s.complete, s.incomplete_line), (7, None));
        assert_eq!(s.checksum, sha(b"h\na\r\nb\n"));
        // a cut last line is left out of the checksum and reported
        let s = snap(b"h\na\nb;2;I");
        assert_eq!((s.complete, s.incomplete_line), (4, Some(3)));
        assert_eq!(s.checksum, sha(b"h\na\n"));
        // trailing spaces are not a line
        let s = snap(b"h\na\n \r");
        assert_eq!((s.complete, s.incomplete_line), (4, None));
        let s = snap(b"horodatage;co");
        assert_eq!((s.complete, s.incomplete_line), (0, Some(1)));
        assert_eq!(s.checksum, sha(b""));
        // lines across read chunks
        let mut big = vec![b'x'; 300 * 1024];
        big.push(b'\n');
        big.extend_from_slice(b"yy");
        let s = snap(&big);
        assert_eq!((s.complete, s.incomplete_line), (300 * 1024 + 1, Some(2)));
        assert_eq!(s.checksum, sha(&big[..300 * 1024 + 1]));
    }

    #[test]
    fn a_line_id_is_what_it_always_was() {
        // computed by the formatting of the first version: ids already in
        // stock_movements must keep matching (idempotence)
        let at = |s: &str| parse_datetime(s, &[]).unwrap();
        assert_eq!(
            line_id(
                at("2026-11-29T08:15:02"),
                &["4006381333931", "2", "OUT", "J. Martin", "B-12"]
            ),
            "20261129081502.000-e660ecce3b7fec143c4adfd2"
        );
        assert_eq!(
            line_id(
                at("2026-11-29T08:15:02.123"),
                &["HYD-2040", "12", "IN", "É. Dubois", ""]
            ),
            "20261129081502.123-6b3e73a08c519bec8d9b7430"
        );
        let ok = check("2026-11-29T08:15:02;4006381333931;2;OUT;J. Martin;B-12").unwrap();
        assert_eq!(ok.id(), "20261129081502.000-e660ecce3b7fec143c4adfd2");
    }

    #[test]
    fn a_batch_frame_is_the_rows_frame() {
        let codes: HashMap<String, String> =
            [("4006381333931".to_string(), "HYD-2040".to_string())].into();
        let mut arena = Arena::default();
        let mut line = |text: &str, n: u64| {
            let mut c = check_line(text, ';', &lay(), &parts(), &codes, &mut arena).unwrap();
            c.line = n;
            c
        };
        let a = line("2026-11-29T08:15:02;4006381333931;2;OUT;J. Martin;B-12", 2);
        let b = line("29/11/2026 08:15:03;hyd-2040;1;E;A. Nguyen;", 3);
        let rows: Vec<Vec<Value>> = [(&a, 3), (&b, 4)]
            .iter()
            .map(|(c, after)| {
                let t = |s: &Span| Value::Text(arena.get(s).to_string());
                vec![
                    t(&c.id),
                    Value::Datetime(epoch_millis(c.at)),
                    t(&c.barcode),
                    t(&c.reference),
                    Value::Int(c.quantity),
                    Value::Text(if c.out { "OUT" } else { "IN" }.into()),
                    t(&c.operator),
                    c.location.as_ref().map_or(Value::Null, t),
                    Value::Int(*after),
                    Value::Text("scans.csv".into()),
                    Value::Int(c.line as i64),
                ]
            })
            .collect();
        let want = frame_from_rows(&schema(&movements_def()), &rows).unwrap();
        let got = Movements(vec![(a, 3), (b, 4)])
            .frame(&arena, "scans.csv")
            .unwrap();
        assert_eq!(got.schema(), want.schema());
        assert!(got.equals_missing(&want), "{got}\n{want}");
    }

    #[test]
    fn each_check_has_its_reason() {
        let ok = check("2026-11-29T08:15:02;4006381333931;2;OUT;J. Martin;B-12").unwrap();
        assert_eq!(
            (ok.reference(), ok.c.quantity, ok.c.out),
            ("HYD-2040", 2, true)
        );
        assert_eq!(
            check("29/11/2026 08:15:02;hyd-2040;1;E;J. Martin;")
                .unwrap()
                .reference(),
            "HYD-2040"
        );
        let r = |l: &str| check(l).err().unwrap();
        assert_eq!(
            r("2026-11-29T08:15:02;4006381333932;2;OUT;J;x"),
            "barcode: not an EAN-13 (check digit)"
        );
        assert_eq!(
            r("2026-11-29T08:15:02;4006381333948;2;OUT;J;x"),
            "barcode: unknown"
        );
        assert_eq!(r("2026-11-29T08:15:02;XXX-1;2;OUT;J;x"), "barcode: unknown");
        assert_eq!(
            r("2026-11-29T08:15:02;4006381333931;0;OUT;J;x"),
            "quantity: not a whole number above 0"
        );
        assert_eq!(
            r("2026-11-29T08:15:02;4006381333931;2.5;OUT;J;x"),
            "quantity: not a whole number above 0"
        );
        assert_eq!(
            r("2026-11-29T08:15:02;4006381333931;2;INOUT;J;x"),
            "direction: not IN or OUT"
        );
        assert_eq!(
            r("hier;4006381333931;2;IN;J;x"),
            "timestamp: not a date-time"
        );
        assert_eq!(
            r("2026-11-29T08:15:02;4006381333931;2;IN;J"),
            "line: wrong number of fields"
        );
        assert_eq!(
            r("2026-11-29T08:15:02;4006381333931;2;IN; ;x"),
            "operator: required"
        );
        // the same scan read twice has one identity
        let a = check("2026-11-29T08:15:02;4006381333931;2;OUT;J. Martin;B-12").unwrap();
        let b = check("2026-11-29T08:15:02; 4006381333931 ;2;OUT;J. Martin;B-12").unwrap();
        assert_eq!(a.id(), b.id());
    }
}
