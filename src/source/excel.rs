//! Excel source: .xlsx/.xlsm (streamed cell by cell), .xlsb, .xls and .ods
//! (through calamine's whole-sheet ranges).
//!
//! A sheet is chosen by name, never by position. The header row is given or
//! detected from the mapped header texts; rows above it (titles, "updated
//! on" lines), blank rows and footer rows (a TOTAL line) are not data rows
//! and are counted apart. Hidden sheets are read only when named; a hidden
//! column loses to a visible one with the same header. Formulas are read by
//! their cached value. A cell holding only spaces is empty.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};

use calamine::{
    CellErrorType, Data, DataRef, ExcelDateTime, ExcelDateTimeType, Ods, Reader, SheetType,
    SheetVisible, Xls, Xlsb, Xlsx,
};

use serde::Deserialize;

use super::{
    BadValue, CellKinds, DEFAULT_MAX_CELL_BYTES, Kind, Message, ReadStats, Source, SourceColumn,
    TableInfo, TableReader, TableRequest, UniqueNames, check_size, column_index, column_letter,
    header_key, resolve_columns,
};
use crate::batch::BatchBuilder;
use crate::batch::parse::{excel_datetime, looks_numeric};
use crate::error::{Error, Result};

/// Spreadsheet container formats, recognised by content, not extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Xlsx,
    Xlsb,
    Xls,
    Ods,
}

/// An opened workbook file.
pub struct ExcelSource {
    path: PathBuf,
    format: Format,
    sheets: Vec<SheetInfo>,
    /// The open workbook, lent to each table read in turn: opening parses
    /// the whole shared-string table, which costs as much as reading
    /// 30,000 rows.
    book: Arc<Mutex<Option<Book>>>,
    /// Largest cell handed over, in bytes; a row with a larger one is
    /// rejected.
    max_cell: usize,
}

struct SheetInfo {
    name: String,
    hidden: bool,
    /// Chart, dialog and macro sheets hold no cells to read.
    kind: SheetType,
}

type Book = calamine::Sheets<BufReader<File>>;

impl ExcelSource {
    /// Open a workbook and list its sheets. Fails with an input error for a
    /// missing, unreadable, encrypted or unsupported file.
    pub fn open(path: &Path) -> Result<ExcelSource> {
        let format = sniff(path)?;
        let book = open_book(path, format)?;
        let sheets = book
            .sheets_metadata()
            .iter()
            .map(|s| SheetInfo {
                name: s.name.clone(),
                hidden: s.visible != SheetVisible::Visible,
                kind: s.typ,
            })
            .collect();
        Ok(ExcelSource {
            path: path.to_path_buf(),
            format,
            sheets,
            book: Arc::new(Mutex::new(Some(book))),
            max_cell: DEFAULT_MAX_CELL_BYTES,
        })
    }

    /// Reject rows holding a cell larger than `max` bytes.
    pub fn max_cell_bytes(mut self, max: usize) -> Self {
        self.max_cell = max;
        self
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The sheet exists and is a worksheet, or an input error saying what
    /// sheets there are.
    pub fn check_sheet(&self, name: &str) -> Result<()> {
        match self.sheets.iter().find(|s| s.name == name) {
            Some(s) if s.kind == SheetType::WorkSheet => Ok(()),
            Some(s) => Err(Error::input(format!(
                "{}: sheet {name:?} is a {} sheet, which holds no cells to read",
                self.path.display(),
                match s.kind {
                    SheetType::ChartSheet => "chart",
                    SheetType::DialogSheet => "dialog",
                    SheetType::MacroSheet => "macro",
                    _ => "non-worksheet",
                }
            ))),
            None => {
                let listed: Vec<String> = self
                    .sheets
                    .iter()
                    .map(|s| {
                        if s.hidden {
                            format!("{:?} (hidden)", s.name)
                        } else {
                            format!("{:?}", s.name)
                        }
                    })
                    .collect();
                let hint = self
                    .sheets
                    .iter()
                    .find(|s| header_key(&s.name) == header_key(name))
                    .map(|s| format!(" Did you mean {:?}?", s.name))
                    .unwrap_or_default();
                Err(Error::input(format!(
                    "{}: no sheet named {name:?}. Sheets: {}.{hint} Set `sheet` in the mapping to one of them.",
                    self.path.display(),
                    listed.join(", ")
                )))
            }
        }
    }
}

/// `[sources.<name>]` with `kind = "excel"`: a workbook (.xlsx, .xlsm,
/// .xlsb, .xls, .ods).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExcelConfig {
    /// The workbook, relative to repaero.toml.
    pub path: PathBuf,
    /// Largest cell handed over, in bytes (default 4 MiB).
    pub max_cell_bytes: Option<usize>,
}

pub const KIND: Kind = Kind {
    name: "excel",
    open: |name, settings| {
        let c: ExcelConfig = super::settings(name, "excel", settings)?;
        Ok(Box::new(ExcelSource::open(&c.path)?.max_cell_bytes(
            c.max_cell_bytes.unwrap_or(DEFAULT_MAX_CELL_BYTES),
        )))
    },
    check: |settings| super::read_settings::<ExcelConfig>(settings).map(drop),
    open_file: Some(|path| Ok(Box::new(ExcelSource::open(path)?))),
    // the fallback of `open_path`: it names best what a file is not
    sniff: None,
};

impl Source for ExcelSource {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn tables(&self) -> Result<Vec<TableInfo>> {
        Ok(self
            .sheets
            .iter()
            .map(|s| TableInfo {
                name: s.name.clone(),
                hidden: s.hidden,
                rows: None,
            })
            .collect())
    }

    /// Read one sheet in batches on a reader thread.
    fn read(&self, req: TableRequest) -> Result<TableReader> {
        let origin = format!("{} › {}", self.path.display(), req.table);
        self.check_sheet(&req.table)?;
        let path = self.path.clone();
        let format = self.format;
        let origin2 = origin.clone();
        let book = Arc::clone(&self.book);
        let max_cell = self.max_cell;
        TableReader::spawn(origin, None, move |tx| {
            // a read that ended in a panic leaves no book behind: reopen
            let lent = book.lock().ok().and_then(|mut b| b.take());
            let mut wb = match lent {
                Some(b) => b,
                None => open_book(&path, format)?,
            };
            let result = read_sheet(&mut wb, &path, format, &origin2, req, max_cell, tx);
            if let Ok(mut slot) = book.lock() {
                *slot = Some(wb);
            }
            result
        })
    }

    fn holds_rows(&self, table: &str) -> bool {
        self.check_sheet(table).is_ok()
    }
}

/// Bytes looked at to tell a text file from a binary one.
const SNIFF_BYTES: usize = 4096;

/// Whether a file's first bytes read as text (any encoding): no control
/// byte but tab, line feed, form feed and carriage return. Random bytes
/// hold one within a few dozen bytes; 4 KiB of them never pass.
fn looks_like_text(head: &[u8]) -> bool {
    head.iter()
        .all(|&b| b >= 0x20 || matches!(b, b'\t' | b'\n' | b'\r' | 0x0c))
}

/// Recognise the container by its first bytes.
pub fn sniff(path: &Path) -> Result<Format> {
    let name = path.display();
    let f = File::open(path).map_err(|e| {
        Error::input(format!(
            "{name}: cannot open: {e}. Check `path` in the source configuration"
        ))
    })?;
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    let n = f
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::input(format!("{name}: cannot read: {e}")))?;
    let head = &head[..n];
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if head.starts_with(b"PK\x03\x04") {
        let file = File::open(path).map_err(|e| Error::input(format!("{name}: {e}")))?;
        let zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
            Error::input(format!(
                "{name}: corrupt spreadsheet (bad zip archive: {e})"
            ))
        })?;
        let owned: Vec<String> = zip
            .file_names()
            .filter_map(|n| n.ok())
            .map(|n| n.into_owned())
            .collect();
        let names: HashSet<&str> = owned.iter().map(|s| s.as_str()).collect();
        if names.contains("content.xml")
            || names.contains("mimetype") && !names.iter().any(|n| n.starts_with("xl/"))
        {
            if names
                .iter()
                .any(|n| n.starts_with("Index/") && n.ends_with(".iwa"))
            {
                return Err(Error::input(format!(
                    "{name}: this is an Apple Numbers file; export it from Numbers as .xlsx"
                )));
            }
            return Ok(Format::Ods);
        }
        if names
            .iter()
            .any(|n| n.starts_with("Index/") && n.ends_with(".iwa"))
        {
            return Err(Error::input(format!(
                "{name}: this is an Apple Numbers file; export it from Numbers as .xlsx"
            )));
        }
        if names.iter().any(|n| n.ends_with("workbook.bin")) {
            return Ok(Format::Xlsb);
        }
        return Ok(Format::Xlsx);
    }
    if head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        // An OLE container: a .xls, or an encrypted OOXML workbook.
        if matches!(ext.as_str(), "xlsx" | "xlsm" | "xlsb") {
            return Ok(Format::Xlsx);
        }
        return Ok(Format::Xls);
    }
    if head.len() >= 4
        && head[1] == 0x00
        && matches!(head[0], 0x09)
        && matches!(head[2], 0x04 | 0x06)
    {
        return Err(Error::input(format!(
            "{name}: an Excel 2.x–4.0 worksheet (BIFF2–4 without OLE container) is not supported; open it in Excel or LibreOffice and save it as .xlsx"
        )));
    }
    if n == 0 {
        return Err(Error::input(format!("{name}: the file is empty")));
    }
    if looks_like_text(head) {
        return Err(Error::input(format!(
            "{name}: this is a text file, not a spreadsheet (a CSV saved with a .{ext} name?); configure it as a csv source or save it as .xlsx"
        )));
    }
    if matches!(ext.as_str(), "xlsx" | "xlsm" | "xlsb") {
        return Err(Error::input(format!(
            "{name}: not an Excel workbook: a .{ext} file is a zip archive and this one is not (damaged, or another kind of file renamed); open it in Excel or LibreOffice and save it as .xlsx"
        )));
    }
    Err(Error::input(format!(
        "{name}: not a spreadsheet this tool can read (expected .xlsx, .xlsm, .xlsb, .xls or .ods)"
    )))
}

fn open_book(path: &Path, format: Format) -> Result<Book> {
    let name = path.display().to_string();
    // calamine parses untrusted bytes; a panic on a malformed file must
    // become a clean error, never a crash.
    let p = path.to_path_buf();
    let opened = std::panic::catch_unwind(move || -> std::result::Result<Book, String> {
        Ok(match format {
            Format::Xlsx => calamine::Sheets::Xlsx(
                calamine::open_workbook::<Xlsx<_>, _>(&p).map_err(|e| e.to_string())?,
            ),
            Format::Xlsb => calamine::Sheets::Xlsb(
                calamine::open_workbook::<Xlsb<_>, _>(&p).map_err(|e| e.to_string())?,
            ),
            Format::Xls => calamine::Sheets::Xls(
                calamine::open_workbook::<Xls<_>, _>(&p).map_err(|e| e.to_string())?,
            ),
            Format::Ods => calamine::Sheets::Ods(
                calamine::open_workbook::<Ods<_>, _>(&p).map_err(|e| e.to_string())?,
            ),
        })
    });
    match opened {
        Ok(Ok(book)) => Ok(book),
        Ok(Err(msg)) => Err(book_error(&name, &msg)),
        Err(_) => Err(Error::input(format!(
            "{name}: the spreadsheet is malformed (the reader gave up on it); open and re-save it in Excel or LibreOffice"
        ))),
    }
}

fn book_error(name: &str, msg: &str) -> Error {
    let lower = msg.to_lowercase();
    if lower.contains("password") || lower.contains("encrypt") {
        Error::input(format!(
            "{name}: the workbook is password-protected; save an unprotected copy (Excel: File › Info › Protect Workbook › Encrypt with Password, clear the password) and point the source at it"
        ))
    } else if lower.contains("codepage d7d4") {
        // XOR-obfuscated .xls: calamine does not see the FILEPASS record.
        Error::input(format!(
            "{name}: the workbook is password-protected (XOR obfuscation); save an unprotected copy and point the source at it"
        ))
    } else {
        Error::input(format!(
            "{name}: cannot read the spreadsheet: {msg}. If Excel or LibreOffice opens it, save it again as .xlsx"
        ))
    }
}

/// What a cell held in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CellKind {
    Text,
    Number,
    Date,
    Bool,
    Error,
    /// A text cell holding only spaces: empty, but counted.
    Blank,
    /// A value that cannot be handed over (a date that is no date, a cell
    /// above the size cap): the row holding it is rejected.
    Invalid,
}

/// A cell of a [`Row`]: its column, kind, and where its text lies in the
/// row's buffer.
#[derive(Debug, Clone, Copy)]
struct CellVal {
    col: u32,
    start: u32,
    end: u32,
    kind: CellKind,
}

/// One sheet row. The cells' texts share one buffer, reused from row to
/// row, so that reading allocates nothing per cell.
#[derive(Debug, Default, Clone)]
struct Row {
    text: String,
    cells: Vec<CellVal>,
    /// Why each `Invalid` cell is, by column.
    bad: Vec<(u32, BadValue)>,
}

/// A cell value as calamine gives it, borrowed from either of its forms.
enum CellRef<'a> {
    Empty,
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    DateTime(&'a ExcelDateTime),
    Iso(&'a str),
    Error(&'a CellErrorType),
}

impl<'a> From<&'a DataRef<'_>> for CellRef<'a> {
    fn from(v: &'a DataRef<'_>) -> Self {
        match v {
            DataRef::Empty => CellRef::Empty,
            DataRef::String(s) => CellRef::Str(s),
            DataRef::SharedString(s) => CellRef::Str(s),
            DataRef::Int(i) => CellRef::Int(*i),
            DataRef::Float(f) => CellRef::Float(*f),
            DataRef::Bool(x) => CellRef::Bool(*x),
            DataRef::DateTime(dt) => CellRef::DateTime(dt),
            DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => CellRef::Iso(s),
            DataRef::Error(e) => CellRef::Error(e),
        }
    }
}

impl<'a> From<&'a Data> for CellRef<'a> {
    fn from(v: &'a Data) -> Self {
        match v {
            Data::Empty => CellRef::Empty,
            Data::String(s) => CellRef::Str(s),
            Data::Int(i) => CellRef::Int(*i),
            Data::Float(f) => CellRef::Float(*f),
            Data::Bool(x) => CellRef::Bool(*x),
            Data::DateTime(dt) => CellRef::DateTime(dt),
            Data::DateTimeIso(s) | Data::DurationIso(s) => CellRef::Iso(s),
            Data::Error(e) => CellRef::Error(e),
        }
    }
}

/// A string cell holding only whitespace reads as empty.
fn is_blank(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_whitespace() || c == '\u{200b}' || c == '\u{feff}')
}

/// Append a cell's canonical text to `b`: its kind, `None` when empty, or
/// why it cannot be read (then `b` may hold a partial text: the caller
/// truncates it). The size cap is checked before anything is copied.
fn convert(v: CellRef<'_>, max_cell: usize, b: &mut String) -> Result<Option<CellKind>, BadValue> {
    Ok(Some(match v {
        CellRef::Empty => return Ok(None),
        CellRef::Str(s) => {
            check_size(s.len(), max_cell)?;
            if is_blank(s) {
                CellKind::Blank
            } else {
                b.push_str(s);
                CellKind::Text
            }
        }
        CellRef::Int(i) => {
            write_int(b, i);
            CellKind::Number
        }
        CellRef::Float(f) => {
            if !f.is_finite() {
                return Err(BadValue::NotFinite(f));
            }
            write_number(b, f);
            CellKind::Number
        }
        CellRef::Bool(x) => {
            b.push_str(if x { "true" } else { "false" });
            CellKind::Bool
        }
        CellRef::DateTime(dt) => {
            write_datetime(b, dt)?;
            CellKind::Date
        }
        CellRef::Iso(s) => {
            check_size(s.len(), max_cell)?;
            b.push_str(s);
            CellKind::Date
        }
        CellRef::Error(e) => {
            let _ = write!(b, "{e}");
            CellKind::Error
        }
    }))
}

impl Row {
    fn clear(&mut self) {
        self.text.clear();
        self.cells.clear();
        self.bad.clear();
    }

    fn text(&self, c: &CellVal) -> &str {
        &self.text[c.start as usize..c.end as usize]
    }

    /// Why the `Invalid` cell of column `col` is.
    fn bad(&self, col: u32) -> Option<&BadValue> {
        self.bad.iter().find(|(c, _)| *c == col).map(|(_, b)| b)
    }

    fn push(&mut self, col: u32, v: CellRef<'_>, max_cell: usize) {
        let start = self.text.len();
        let kind = match convert(v, max_cell, &mut self.text) {
            Ok(Some(kind)) => kind,
            Ok(None) => return,
            Err(bad) => {
                self.text.truncate(start);
                self.bad.push((col, bad));
                CellKind::Invalid
            }
        };
        self.cells.push(CellVal {
            col,
            start: start as u32,
            end: self.text.len() as u32,
            kind,
        });
    }

    fn push_ref(&mut self, col: u32, v: &DataRef<'_>, max_cell: usize) {
        self.push(col, v.into(), max_cell);
    }

    fn push_data(&mut self, col: u32, v: &Data, max_cell: usize) {
        if let Data::String(s) = v
            && let Some(fixed) = repair_nul_interleaved(s)
        {
            return self.push(col, CellRef::Str(&fixed), max_cell);
        }
        self.push(col, v.into(), max_cell);
    }
}

/// One cell through the conversion every read uses: its kind and text,
/// `None` when empty, or why the row holding it is rejected. (The entry
/// point of the Excel cell fuzz target, tests/fuzz.rs.)
pub fn cell_text(v: &Data, max_cell: usize) -> Result<Option<(CellKind, String)>, BadValue> {
    let mut row = Row::default();
    row.push_data(0, v, max_cell);
    if let Some((_, bad)) = row.bad.pop() {
        return Err(bad);
    }
    Ok(row.cells.first().map(|c| (c.kind, row.text(c).to_string())))
}

fn write_int(b: &mut String, i: i64) {
    b.push_str(itoa::Buffer::new().format(i));
}

/// Shortest text that reads back as the same number; whole numbers without
/// a fraction. (`ryu` may write an exponent, `1e-7`: canonical text is
/// only ever read back by Rust's float parser.) Finite numbers only.
fn write_number(b: &mut String, f: f64) {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        write_int(b, f as i64);
    } else {
        b.push_str(ryu::Buffer::new().format_finite(f));
    }
}

/// Longest duration read, in days (about 27,000 years): beyond it a
/// duration cell is damage, not a time.
const MAX_DURATION_DAYS: f64 = 1.0e7;

/// ISO 8601 text of an Excel date (`2026-03-15`, `2026-03-15T14:05:00`,
/// with milliseconds when there are some), or `[h]:mm:ss` for a duration.
/// A serial that is no date (NaN, an infinity, out of the years 1–9999,
/// or the 29/02/1900 Excel invented) is refused, never guessed.
fn write_datetime(b: &mut String, dt: &ExcelDateTime) -> Result<(), BadValue> {
    let serial = dt.as_f64();
    if dt.is_duration() {
        if !serial.is_finite() || serial.abs() >= MAX_DURATION_DAYS {
            return Err(BadValue::Date(format!(
                "the duration cell holds {serial:?} days, which is not a duration"
            )));
        }
        let ms = (serial * 86_400_000.0).round() as i64;
        let s = ms.abs() / 1000;
        let sign = if ms < 0 { "-" } else { "" };
        let _ = write!(
            b,
            "{sign}{:02}:{:02}:{:02}",
            s / 3600,
            (s / 60) % 60,
            s % 60
        );
        return Ok(());
    }
    // calamine keeps the workbook's date system to itself; a value made
    // with the 1900 system compares equal to this one only if it is one
    let is_1904 = *dt != ExcelDateTime::new(serial, ExcelDateTimeType::DateTime, false);
    // A negative serial has no Excel meaning (Excel shows #####); LibreOffice
    // writes them and counts from 1899-12-30, which is what it displayed.
    let n = excel_datetime(serial, is_1904).map_err(|e| BadValue::Date(e.describe(serial)))?;
    // (years 1–9999: `excel_datetime` refuses the others; written by hand,
    // the formatting machinery was 1.3 % of the sheet reader's samples)
    crate::batch::push_iso_datetime(b, &n, None);
    Ok(())
}

#[cfg(test)]
fn datetime_text(dt: &ExcelDateTime) -> String {
    let mut s = String::new();
    match write_datetime(&mut s, dt) {
        Ok(()) => s,
        Err(e) => format!("bad: {}", e.detail()),
    }
}

/// calamine 0.38 decodes some BIFF8 strings byte by byte, leaving the
/// UTF-16 high bytes as NULs between the characters ("T\0i\0t\0…"). A
/// NUL never belongs in a cell: when every second character is one, drop
/// them (exact for characters below U+0100, the case these files show).
fn repair_nul_interleaved(s: &str) -> Option<String> {
    if !s.contains('\0') {
        return None;
    }
    let chars: Vec<char> = s.chars().collect();
    let interleaved =
        chars.len().is_multiple_of(2) && chars.iter().skip(1).step_by(2).all(|c| *c == '\0');
    interleaved.then(|| chars.iter().step_by(2).collect())
}

fn read_sheet(
    book: &mut Book,
    path: &Path,
    format: Format,
    origin: &str,
    req: TableRequest,
    max_cell: usize,
    tx: &SyncSender<Message>,
) -> Result<()> {
    let hidden_cols = if format == Format::Xlsx {
        xlsx_hidden_columns(path, &req.table).unwrap_or_default()
    } else {
        HashSet::new()
    };
    let name = req.table.clone();
    let walker = Walker::new(origin.to_string(), req, hidden_cols, tx.clone());
    // calamine's parse and the cells' conversion on this thread; the header
    // walk and the batches on another, fed chunks of rows whose buffers
    // come back to be reused (the parse alone kept one core busy while the
    // batches were built after it: "Stock workbook" in docs/benchmarks.md)
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Chunk>(2);
    let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Chunk>(4);
    std::thread::scope(|scope| {
        let walk = std::thread::Builder::new()
            .name("repaero-sheet".into())
            .spawn_scoped(scope, move || walk_chunks(walker, full_rx, empty_tx))
            .map_err(|e| Error::runtime(format!("{origin}: starting a reader thread: {e}")))?;
        let mut chunk = Chunk::default();
        let parsed = for_each_row(book, &name, origin, max_cell, &mut |r, row| {
            chunk.put(r, row);
            if chunk.len == CHUNK_ROWS {
                let next = empty_rx.try_recv().unwrap_or_default();
                if full_tx.send(std::mem::replace(&mut chunk, next)).is_err() {
                    return Ok(Flow::Stop);
                }
            }
            Ok(Flow::Go)
        });
        let parsed = match parsed {
            Ok(Flow::Go) => {
                chunk.end = true;
                // (a walk that stopped says why below)
                let _ = full_tx.send(chunk);
                Ok(())
            }
            Ok(Flow::Stop) => Ok(()),
            Err(e) => Err(e),
        };
        drop(full_tx);
        let walked = walk
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        // the parse's error first: the walk then only saw a cut stream
        parsed.and(walked)
    })
}

/// Rows a chunk carries from the parse to the walk.
const CHUNK_ROWS: usize = 512;

/// Sheet rows on their way from the parse to the walk; `rows[..len]` are
/// this chunk's, the rest are buffers kept for reuse.
#[derive(Default)]
struct Chunk {
    rows: Vec<(u32, Row)>,
    len: usize,
    /// The sheet's last rows: the walk may finish.
    end: bool,
}

impl Chunk {
    /// Take `row`'s cells, leaving it a buffer of an earlier row to clear.
    fn put(&mut self, r: u32, row: &mut Row) {
        if self.len < self.rows.len() {
            let slot = &mut self.rows[self.len];
            slot.0 = r;
            std::mem::swap(&mut slot.1, row);
        } else {
            self.rows.push((r, std::mem::take(row)));
        }
        self.len += 1;
    }
}

/// The walk's side of [`read_sheet`]: rows through the walker, chunks back
/// for reuse; the walker finishes only on the sheet's last chunk (a cut
/// stream is the parse's error, which it returns).
fn walk_chunks(
    mut walker: Walker,
    full: std::sync::mpsc::Receiver<Chunk>,
    empty: SyncSender<Chunk>,
) -> Result<()> {
    for mut chunk in full {
        for (r, row) in &mut chunk.rows[..chunk.len] {
            if walker.row(*r, row)? == Flow::Stop {
                return Ok(());
            }
        }
        if chunk.end {
            return walker.finish();
        }
        chunk.len = 0;
        // (a full pool: this chunk is dropped)
        let _ = empty.try_send(chunk);
    }
    Ok(())
}

/// Call `f` with every row of a sheet that holds a cell (0-based row
/// index, cells in column order), streaming for .xlsx.
fn for_each_row(
    book: &mut Book,
    name: &str,
    origin: &str,
    max_cell: usize,
    f: &mut dyn FnMut(u32, &mut Row) -> Result<Flow>,
) -> Result<Flow> {
    let mut row = Row::default();
    match book {
        calamine::Sheets::Xlsx(x) => {
            let mut cells = x
                .worksheet_cells_reader(name)
                .map_err(|e| book_error(origin, &e.to_string()))?;
            let mut row_idx: Option<u32> = None;
            loop {
                let cell = cells
                    .next_cell()
                    .map_err(|e| Error::input(format!("{origin}: malformed sheet data: {e}")))?;
                let Some(cell) = cell else { break };
                let (r, c) = cell.get_position();
                if row_idx != Some(r) {
                    if let Some(prev) = row_idx {
                        row.cells.sort_by_key(|c| c.col);
                        if f(prev, &mut row)? == Flow::Stop {
                            return Ok(Flow::Stop);
                        }
                    }
                    row.clear();
                    row_idx = Some(r);
                }
                row.push_ref(c, cell.get_value(), max_cell);
            }
            if let Some(prev) = row_idx {
                row.cells.sort_by_key(|c| c.col);
                return f(prev, &mut row);
            }
            Ok(Flow::Go)
        }
        other => {
            let range = other
                .worksheet_range(name)
                .map_err(|e| book_error(origin, &e.to_string()))?;
            let (r0, c0) = range.start().unwrap_or((0, 0));
            for (i, cells) in range.rows().enumerate() {
                row.clear();
                for (j, v) in cells.iter().enumerate() {
                    row.push_data(c0 + j as u32, v, max_cell);
                }
                if f(r0 + i as u32, &mut row)? == Flow::Stop {
                    return Ok(Flow::Stop);
                }
            }
            Ok(Flow::Go)
        }
    }
}

/// One cell as the source sees it, for `inspect` and the corpus tests.
#[derive(Debug, Clone, PartialEq)]
pub struct ScannedCell {
    /// 0-based row and column.
    pub row: u32,
    pub col: u32,
    /// The value as text (numbers in shortest form, dates in ISO 8601);
    /// for an `Invalid` cell, why it is.
    pub text: String,
    pub kind: CellKind,
}

/// Read every non-empty cell of a sheet, in row order, through the same
/// conversion the migrations use. A reader panic on a malformed file is an
/// input error.
pub fn scan(path: &Path, sheet: &str, f: &mut dyn FnMut(ScannedCell)) -> Result<()> {
    let origin = format!("{} › {sheet}", path.display());
    ExcelSource::open(path)?.check_sheet(sheet)?;
    let format = sniff(path)?;
    let mut book = open_book(path, format)?;
    let run = std::panic::AssertUnwindSafe(|| {
        for_each_row(
            &mut book,
            sheet,
            &origin,
            DEFAULT_MAX_CELL_BYTES,
            &mut |r, row| {
                for c in &row.cells {
                    let text = match row.bad(c.col) {
                        Some(bad) if c.kind == CellKind::Invalid => bad.detail(),
                        _ => row.text(c).to_string(),
                    };
                    f(ScannedCell {
                        row: r,
                        col: c.col,
                        text,
                        kind: c.kind,
                    });
                }
                Ok(Flow::Go)
            },
        )
    });
    match std::panic::catch_unwind(run) {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(Error::input(format!(
            "{origin}: the sheet is malformed (the reader gave up on it); open and re-save it in Excel or LibreOffice"
        ))),
    }
}

#[derive(PartialEq, Eq)]
enum Flow {
    Go,
    /// The consumer went away: stop reading.
    Stop,
}

/// Turns a stream of rows into a header and batches of data rows.
struct Walker {
    origin: String,
    req: TableRequest,
    hidden_cols: HashSet<u32>,
    tx: SyncSender<Message>,
    /// Rows buffered while looking for the header.
    pending: Vec<(u32, Row)>,
    /// Once the header is known: source column index per batch column.
    selected: Option<Vec<Option<u32>>>,
    last_row: Option<u32>,
    builder: Option<BatchBuilder>,
    stats: ReadStats,
    kinds: Vec<CellKinds>,
    /// Per batch column, the cell of the current row that feeds it.
    slots: Vec<Option<usize>>,
    /// Per source column index, the batch columns it feeds.
    feeds: Vec<Vec<usize>>,
    /// Per source column index, its header text (for reject details).
    header_of: std::collections::HashMap<u32, String>,
}

impl Walker {
    fn new(
        origin: String,
        req: TableRequest,
        hidden_cols: HashSet<u32>,
        tx: SyncSender<Message>,
    ) -> Self {
        Walker {
            origin,
            req,
            hidden_cols,
            tx,
            pending: Vec::new(),
            selected: None,
            last_row: None,
            builder: None,
            stats: ReadStats::default(),
            kinds: Vec::new(),
            slots: Vec::new(),
            feeds: Vec::new(),
            header_of: std::collections::HashMap::new(),
        }
    }

    /// One sheet row (0-based index), cells in column order.
    fn row(&mut self, r: u32, row: &mut Row) -> Result<Flow> {
        if self.selected.is_none() {
            let scan_end = match self.req.header_row {
                Some(h) if h > 0 => h - 1,
                // detecting, or headerless: the first rows say which
                // columns hold values
                _ => self.req.header_scan_rows.saturating_sub(1),
            };
            self.pending.push((r, row.clone()));
            if r < scan_end {
                return Ok(Flow::Go);
            }
            return self.settle_header();
        }
        self.data_row(r, row)
    }

    /// Choose the header among the buffered rows, then replay the rest.
    fn settle_header(&mut self) -> Result<Flow> {
        let pending = std::mem::take(&mut self.pending);
        let pos = match self.req.header_row {
            Some(0) => None,
            Some(h) => Some(pending.iter().position(|(r, _)| *r + 1 == h).ok_or_else(|| {
                Error::input(format!(
                    "{}: header_row = {h} is empty; set source.header_row to the row that holds the column names (0 when the sheet has none)",
                    self.origin
                ))
            })?),
            None => self.detect_header(&pending)?,
        };
        let headers: Vec<SourceColumn> = match pos {
            Some(pos) => {
                let (hr, header) = &pending[pos];
                self.stats.header_row = hr + 1;
                self.stats.rows_above_header = pending[..pos]
                    .iter()
                    .filter(|(_, row)| row.cells.iter().any(|c| c.kind != CellKind::Blank))
                    .count() as u64;
                self.last_row = Some(*hr);
                header
                    .cells
                    .iter()
                    .filter(|c| !matches!(c.kind, CellKind::Blank | CellKind::Invalid))
                    .map(|c| SourceColumn {
                        header: header.text(c).trim().to_string(),
                        index: c.col,
                        hidden: self.hidden_cols.contains(&c.col),
                        feeds: None,
                    })
                    .collect()
            }
            None => {
                self.stats.headerless = true;
                self.letter_headers(&pending)
            }
        };
        let first_data = pos.map_or(0, |p| p + 1);
        let (names, selected, mut headers) = match &self.req.columns {
            Some(wanted) => {
                let found = resolve_columns(&self.origin, &headers, wanted)?;
                let mut headers = headers;
                for (w, f) in wanted.iter().zip(&found) {
                    if let Some(i) = f {
                        headers[*i].feeds = Some(w.name.clone());
                    }
                }
                let sel = found.iter().map(|f| f.map(|i| headers[i].index)).collect();
                (
                    wanted.iter().map(|w| w.name.clone()).collect::<Vec<_>>(),
                    sel,
                    headers,
                )
            }
            None => {
                let mut names = Vec::new();
                let mut sel = Vec::new();
                let mut unique = UniqueNames::default();
                let mut headers = headers;
                for h in headers.iter_mut() {
                    if h.hidden || h.header.is_empty() {
                        continue;
                    }
                    let name = unique.name(&h.header);
                    h.feeds = Some(name.clone());
                    names.push(name);
                    sel.push(Some(h.index));
                }
                (names, sel, headers)
            }
        };
        headers.sort_by_key(|h| h.index);
        self.header_of = headers
            .iter()
            .filter(|h| h.feeds.is_some())
            .map(|h| (h.index, h.header.clone()))
            .collect();
        self.kinds = vec![CellKinds::default(); names.len()];
        self.slots = vec![None; names.len()];
        let width = selected
            .iter()
            .flatten()
            .map(|c| *c as usize + 1)
            .max()
            .unwrap_or(0);
        self.feeds = vec![Vec::new(); width];
        for (slot, sel) in selected.iter().enumerate() {
            if let Some(c) = sel {
                self.feeds[*c as usize].push(slot);
            }
        }
        self.builder = Some(BatchBuilder::new(names, self.req.batch_size));
        self.selected = Some(selected);
        if self.tx.send(Message::Columns(headers)).is_err() {
            return Ok(Flow::Stop);
        }
        let mut flow = Flow::Go;
        for (r, row) in pending.iter().skip(first_data) {
            flow = self.data_row(*r, row)?;
            if flow == Flow::Stop {
                break;
            }
        }
        Ok(flow)
    }

    /// A headerless sheet's columns, named by their letters: those holding
    /// a value in the rows read so far, and those a mapping names.
    fn letter_headers(&self, pending: &[(u32, Row)]) -> Vec<SourceColumn> {
        let mut cols: std::collections::BTreeSet<u32> = pending
            .iter()
            .flat_map(|(_, row)| row.cells.iter())
            .filter(|c| c.kind != CellKind::Blank)
            .map(|c| c.col)
            .collect();
        for w in self.req.columns.iter().flatten() {
            cols.extend(w.headers.iter().filter_map(|h| column_index(h)));
        }
        cols.into_iter()
            .map(|i| SourceColumn {
                header: column_letter(i),
                index: i,
                hidden: self.hidden_cols.contains(&i),
                feeds: None,
            })
            .collect()
    }

    /// The header row among the first rows (an index into `pending`);
    /// `None` when every column is wanted and no row holds text but some
    /// hold values: a sheet of figures without a header, read headerless.
    fn detect_header(&self, pending: &[(u32, Row)]) -> Result<Option<usize>> {
        let score = |row: &Row| -> usize {
            let texts = row.cells.iter().filter(|c| c.kind == CellKind::Text);
            match &self.req.columns {
                Some(wanted) => {
                    let keys: HashSet<String> = texts.map(|c| header_key(row.text(c))).collect();
                    wanted
                        .iter()
                        .filter(|w| w.headers.iter().any(|h| keys.contains(&header_key(h))))
                        .count()
                }
                None => texts.count(),
            }
        };
        let mut best: Option<(usize, usize)> = None;
        for (i, (_, row)) in pending.iter().enumerate() {
            let s = score(row);
            if s > 0 && best.is_none_or(|(_, bs)| s > bs) {
                best = Some((i, s));
            }
        }
        let values = || {
            pending
                .iter()
                .any(|(_, row)| row.cells.iter().any(|c| c.kind != CellKind::Blank))
        };
        match best {
            Some((i, _)) => Ok(Some(i)),
            // cells formatted, none holding a value
            None if !values() => Err(Error::input(format!(
                "{}: the sheet is empty; there is no header and no data",
                self.origin
            ))),
            None if self.req.columns.is_none() => Ok(None),
            None => {
                let what = match &self.req.columns {
                    Some(w) => {
                        let names: Vec<String> = w
                            .iter()
                            .flat_map(|w| w.headers.first().cloned())
                            .map(|h| format!("{h:?}"))
                            .collect();
                        format!("none of the mapped headers ({}) appear", names.join(", "))
                    }
                    None => "no row holds text".to_string(),
                };
                Err(Error::input(format!(
                    "{}: no header row found in the first {} rows: {what}. Set source.header_row in the mapping (0 when the sheet has none: its columns are then named by their letters)",
                    self.origin, self.req.header_scan_rows
                )))
            }
        }
    }

    fn data_row(&mut self, r: u32, row: &Row) -> Result<Flow> {
        if let Some(last) = self.last_row {
            // rows absent from the sheet data between two rows are blank too
            self.stats.blank_rows += r.saturating_sub(last + 1) as u64;
        }
        self.last_row = Some(r);
        if row.cells.iter().all(|c| c.kind == CellKind::Blank) {
            self.stats.blank_rows += 1;
            return Ok(Flow::Go);
        }
        if let Some(footer) = &self.req.footer {
            let first = row.cells.iter().find(|c| c.kind != CellKind::Blank);
            if first.is_some_and(|c| footer.is_match(row.text(c).trim())) {
                self.stats.footer_rows += 1;
                return Ok(Flow::Go);
            }
        }
        if self.selected.is_none() {
            return Ok(Flow::Go);
        }
        self.slots.iter_mut().for_each(|s| *s = None);
        // the first mapped cell that cannot be handed over: the row is
        // rejected for it
        let mut bad: Option<(usize, u32)> = None;
        for (ci, c) in row.cells.iter().enumerate() {
            let Some(slots) = self.feeds.get(c.col as usize) else {
                continue;
            };
            for &slot in slots {
                let k = &mut self.kinds[slot];
                match c.kind {
                    CellKind::Text => {
                        k.text += 1;
                        if looks_numeric(row.text(c)) {
                            k.numeric_text += 1;
                        }
                    }
                    CellKind::Number => k.number += 1,
                    CellKind::Date => k.date += 1,
                    CellKind::Bool => k.boolean += 1,
                    CellKind::Error => k.error += 1,
                    CellKind::Blank => {
                        k.whitespace_only += 1;
                        continue;
                    }
                    CellKind::Invalid => {
                        k.error += 1;
                        bad.get_or_insert((slot, c.col));
                        continue;
                    }
                }
                self.slots[slot] = Some(ci);
            }
        }
        for (slot, k) in self.kinds.iter_mut().enumerate() {
            if self.slots[slot].is_none() {
                k.empty += 1;
            }
        }
        self.stats.data_rows += 1;
        let builder = self
            .builder
            .as_mut()
            .ok_or_else(|| Error::runtime(format!("{}: no header before data", self.origin)))?;
        let values = self.slots.iter().map(|s| {
            s.map(|ci| {
                let c = &row.cells[ci];
                // typed cells hold canonical text (numbers with a dot,
                // ISO dates): the mapper must not read them as French
                (row.text(c), !matches!(c.kind, CellKind::Text))
            })
        });
        match bad.and_then(|(slot, col)| Some((slot, col, row.bad(col)?))) {
            None => builder.push_row(r as u64 + 1, values),
            Some((slot, col, why)) => {
                let reason = why.reason(&builder.names()[slot]);
                let detail = format!(
                    "{}, row {}, column {} ({:?}): {}",
                    self.origin,
                    r as u64 + 1,
                    column_letter(col),
                    self.header_of.get(&col).map(String::as_str).unwrap_or(""),
                    why.detail()
                );
                builder.push_row_error(r as u64 + 1, values, reason, detail);
            }
        }
        if builder.is_full() {
            let df = builder.take()?;
            if self.tx.send(Message::Batch(df)).is_err() {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Go)
    }

    fn finish(mut self) -> Result<()> {
        if self.selected.is_none() {
            if self.pending.is_empty() && self.req.header_row.is_none() {
                return Err(Error::input(format!(
                    "{}: the sheet is empty; there is no header and no data",
                    self.origin
                )));
            }
            if self.settle_header()? == Flow::Stop {
                return Ok(());
            }
        }
        if let Some(b) = self.builder.as_mut()
            && !b.is_empty()
        {
            let df = b.take()?;
            if self.tx.send(Message::Batch(df)).is_err() {
                return Ok(());
            }
        }
        if let Some(b) = &self.builder {
            self.stats.kinds = b.names().iter().cloned().zip(self.kinds.clone()).collect();
        }
        let _ = self.tx.send(Message::Done(self.stats));
        Ok(())
    }
}

/// Hidden columns of an .xlsx sheet (0-based), from its `<cols>` element.
///
/// calamine does not expose column visibility, so this reads the sheet
/// part's `<cols>` directly: the workbook names the sheet's relationship,
/// the relationships name its part.
pub fn xlsx_hidden_columns(path: &Path, sheet: &str) -> Option<HashSet<u32>> {
    use quick_xml::events::Event;
    let file = File::open(path).ok()?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).ok()?;
    let read_part = |zip: &mut zip::ZipArchive<BufReader<File>>, name: &str| -> Option<String> {
        let mut s = String::new();
        zip.by_name(name).ok()?.read_to_string(&mut s).ok()?;
        Some(s)
    };
    let workbook = read_part(&mut zip, "xl/workbook.xml")?;
    let rels = read_part(&mut zip, "xl/_rels/workbook.xml.rels")?;
    let attr = |e: &quick_xml::events::BytesStart<'_>, want: &str| -> Option<String> {
        e.attributes().flatten().find_map(|a| {
            let key: &str = a.key.as_ref();
            (key == want)
                .then(|| {
                    quick_xml::escape::unescape(&a.value)
                        .ok()
                        .map(|v| v.into_owned())
                })
                .flatten()
        })
    };
    let mut rid = None;
    let mut rd = quick_xml::Reader::from_str(&workbook);
    loop {
        match rd.read_event() {
            Ok(Event::Empty(e)) | Ok(Event::Start(e))
                if e.local_name().as_ref() == "sheet"
                    && attr(&e, "name").as_deref() == Some(sheet) =>
            {
                rid = attr(&e, "r:id");
                break;
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    let rid = rid?;
    let mut target = None;
    let mut rd = quick_xml::Reader::from_str(&rels);
    loop {
        match rd.read_event() {
            Ok(Event::Empty(e)) | Ok(Event::Start(e))
                if e.local_name().as_ref() == "Relationship"
                    && attr(&e, "Id").as_deref() == Some(rid.as_str()) =>
            {
                target = attr(&e, "Target");
                break;
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    let target = target?;
    let part = match target.strip_prefix('/') {
        Some(abs) => abs.to_string(),
        None => format!("xl/{target}"),
    };
    let f = zip.by_name(&part).ok()?;
    let mut rd = quick_xml::Reader::from_reader(BufReader::new(f));
    let mut buf = Vec::new();
    let mut hidden = HashSet::new();
    loop {
        buf.clear();
        match rd.read_event_into(&mut buf) {
            Ok(Event::Empty(e)) | Ok(Event::Start(e)) => match e.local_name().as_ref() {
                "col" => {
                    let is_hidden =
                        matches!(attr(&e, "hidden").as_deref(), Some("1") | Some("true"));
                    if is_hidden {
                        let min: u32 = attr(&e, "min").and_then(|v| v.parse().ok()).unwrap_or(0);
                        let max: u32 = attr(&e, "max").and_then(|v| v.parse().ok()).unwrap_or(min);
                        if min >= 1 && max >= min && max - min < 16_384 {
                            hidden.extend((min - 1)..max);
                        }
                    }
                }
                "sheetData" => break,
                _ => {}
            },
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    Some(hidden)
}

#[cfg(test)]
mod tests {
    use super::*;
    use calamine::{ExcelDateTime, ExcelDateTimeType};

    #[test]
    fn nul_interleaved_strings_are_repaired() {
        assert_eq!(
            repair_nul_interleaved("T\0i\0t\0e\0l\0").as_deref(),
            Some("Titel")
        );
        assert_eq!(
            repair_nul_interleaved("R\0e\0g\0i\0s\0s\0ö\0r\0").as_deref(),
            Some("Regissör")
        );
        assert_eq!(repair_nul_interleaved("plain"), None);
        assert_eq!(repair_nul_interleaved("a\0\0b"), None);
    }

    #[test]
    fn excel_dates_to_text() {
        let dt =
            |v: f64, is_1904: bool| ExcelDateTime::new(v, ExcelDateTimeType::DateTime, is_1904);
        assert_eq!(datetime_text(&dt(46096.0, false)), "2026-03-15");
        assert_eq!(datetime_text(&dt(46096.5, false)), "2026-03-15T12:00:00");
        assert_eq!(datetime_text(&dt(44634.0, true)), "2026-03-15");
        assert_eq!(datetime_text(&dt(-1.2, false)), "1899-12-28T19:12:00");
        assert_eq!(datetime_text(&dt(1.0, false)), "1900-01-01");
        // padded: a year below 1000, milliseconds below 100
        assert_eq!(datetime_text(&dt(-693_593.0, false)), "0001-01-01");
        assert_eq!(
            datetime_text(&dt(46096.0 + 3_723_007.0 / 86_400_000.0, false)),
            "2026-03-15T01:02:03.007"
        );
        let dur = ExcelDateTime::new(10.632060185185185, ExcelDateTimeType::TimeDelta, false);
        assert_eq!(datetime_text(&dur), "255:10:10");
        // Excel's 1900 system: 59 is 28/02, 60 the 29/02 that never was
        assert_eq!(datetime_text(&dt(59.0, false)), "1900-02-28");
        assert!(datetime_text(&dt(60.0, false)).contains("29/02/1900"));
        assert_eq!(datetime_text(&dt(61.0, false)), "1900-03-01");
        assert_eq!(datetime_text(&dt(60.0, true)), "1904-03-01");
        // damage: reported, never a panic nor 1899-12-30
        for (v, said) in [
            (f64::NAN, "holds NaN"),
            (f64::NEG_INFINITY, "holds -inf"),
            (f64::INFINITY, "holds inf"),
            (1e300, "not a date of the years 1 to 9999"),
            (-1e300, "not a date of the years 1 to 9999"),
        ] {
            let text = datetime_text(&dt(v, false));
            assert!(
                text.starts_with("bad: ") && text.contains(said),
                "{v}: {text}"
            );
        }
        let dur = |v| ExcelDateTime::new(v, ExcelDateTimeType::TimeDelta, false);
        assert!(datetime_text(&dur(f64::NAN)).starts_with("bad: "));
        assert!(datetime_text(&dur(-1e300)).starts_with("bad: "));
        assert_eq!(datetime_text(&dur(-0.5)), "-12:00:00");
    }

    #[test]
    fn cells_that_cannot_be_handed_over() {
        assert_eq!(
            cell_text(&Data::Float(1.5), 10),
            Ok(Some((CellKind::Number, "1.5".into())))
        );
        assert_eq!(cell_text(&Data::Empty, 10), Ok(None));
        assert_eq!(
            cell_text(&Data::String("   ".into()), 10),
            Ok(Some((CellKind::Blank, String::new())))
        );
        assert_eq!(
            cell_text(&Data::Float(f64::NEG_INFINITY), 10),
            Err(BadValue::NotFinite(f64::NEG_INFINITY))
        );
        assert_eq!(
            cell_text(&Data::String("x".repeat(11)), 10),
            Err(BadValue::TooLarge { bytes: 11, max: 10 })
        );
        assert_eq!(
            cell_text(&Data::String("x".repeat(10)), 10),
            Ok(Some((CellKind::Text, "x".repeat(10))))
        );
        let nan = Data::DateTime(ExcelDateTime::new(
            f64::NAN,
            ExcelDateTimeType::DateTime,
            false,
        ));
        let err = cell_text(&nan, 10).unwrap_err();
        assert_eq!(err.reason("received_at"), "received_at: not a date");
    }

    #[test]
    fn formats_are_recognised_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.xls");
        std::fs::write(&p, [0x09u8, 0x00, 0x04, 0x00, 0x07, 0x00, 0x10, 0x00]).unwrap();
        assert!(sniff(&p).unwrap_err().to_string().contains("BIFF2–4"));
        std::fs::write(&p, b"").unwrap();
        assert!(sniff(&p).unwrap_err().to_string().contains("empty"));
        std::fs::write(&p, [0u8, 1, 2, 3, 4, 5, 6, 7]).unwrap();
        assert!(
            sniff(&p)
                .unwrap_err()
                .to_string()
                .contains("not a spreadsheet")
        );
        // random bytes whose first 8 happen to be printable: still binary
        let mut random: Vec<u8> = b"Q9#kx~R!".to_vec();
        let mut x: u32 = 0x9e37_79b9;
        random.extend((0..4096).map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        }));
        std::fs::write(&p, &random).unwrap();
        let err = sniff(&p).unwrap_err().to_string();
        assert!(err.contains("not a spreadsheet"), "{err}");
        let xlsx = dir.path().join("random.xlsx");
        std::fs::write(&xlsx, &random).unwrap();
        let err = sniff(&xlsx).unwrap_err().to_string();
        assert!(err.contains("not an Excel workbook"), "{err}");
        // text stays text, in any encoding
        std::fs::write(&xlsx, "Réf;Qté\r\nA-1;3\r\n\x0cB;\t4\n").unwrap();
        let err = sniff(&xlsx).unwrap_err().to_string();
        assert!(err.contains("this is a text file"), "{err}");
    }
}
