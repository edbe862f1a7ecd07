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
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;

use calamine::{Data, DataRef, Ods, Reader, SheetVisible, Xls, Xlsb, Xlsx};

use super::{
    BatchBuilder, CellKinds, Message, ReadStats, SourceColumn, TableInfo, TableReader,
    TableRequest, header_key, resolve_columns,
};
use crate::error::{Error, Result};
use crate::transform::parse::looks_numeric;

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
    sheets: Vec<(String, bool)>,
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
            .map(|s| (s.name.clone(), s.visible != SheetVisible::Visible))
            .collect();
        Ok(ExcelSource {
            path: path.to_path_buf(),
            format,
            sheets,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn tables(&self) -> Result<Vec<TableInfo>> {
        Ok(self
            .sheets
            .iter()
            .map(|(name, hidden)| TableInfo {
                name: name.clone(),
                hidden: *hidden,
                rows: None,
            })
            .collect())
    }

    /// Read one sheet in batches on a reader thread.
    pub fn read(&self, req: TableRequest) -> Result<TableReader> {
        let origin = format!("{} › {}", self.path.display(), req.table);
        if !self.sheets.iter().any(|(n, _)| *n == req.table) {
            let visible: Vec<String> = self
                .sheets
                .iter()
                .map(|(n, h)| {
                    if *h {
                        format!("{n:?} (hidden)")
                    } else {
                        format!("{n:?}")
                    }
                })
                .collect();
            let hint = self
                .sheets
                .iter()
                .find(|(n, _)| header_key(n) == header_key(&req.table))
                .map(|(n, _)| format!(" Did you mean {n:?}?"))
                .unwrap_or_default();
            return Err(Error::input(format!(
                "{}: no sheet named {:?}. Sheets: {}.{hint} Set `sheet` in the mapping to one of them.",
                self.path.display(),
                req.table,
                visible.join(", ")
            )));
        }
        let path = self.path.clone();
        let format = self.format;
        let origin2 = origin.clone();
        TableReader::spawn(origin, None, move |tx| {
            read_sheet(&path, format, &origin2, req, tx)
        })
    }
}

/// Recognise the container by its first bytes.
pub fn sniff(path: &Path) -> Result<Format> {
    let name = path.display();
    let mut f = File::open(path).map_err(|e| {
        Error::input(format!(
            "{name}: cannot open: {e}. Check `path` in the source configuration"
        ))
    })?;
    let mut head = [0u8; 8];
    let n = f
        .read(&mut head)
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
    let text_like = head
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace() || *b >= 0x80);
    if text_like {
        return Err(Error::input(format!(
            "{name}: this is a text file, not a spreadsheet (a CSV saved with a .{ext} name?); configure it as a csv source or save it as .xlsx"
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

/// A cell reduced to what a batch holds: its text, and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Number,
    Date,
    Bool,
    Error,
    /// A text cell holding only spaces: empty, but counted.
    Blank,
}

struct CellVal {
    col: u32,
    text: String,
    kind: Kind,
}

fn number_text(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

fn datetime_text(dt: &calamine::ExcelDateTime) -> String {
    if dt.is_duration() {
        let ms = (dt.as_f64() * 86_400_000.0).round() as i64;
        let s = ms / 1000;
        return format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
    }
    let (y, mo, d, h, mi, s, ms) = dt.to_ymd_hms_milli();
    if h == 0 && mi == 0 && s == 0 && ms == 0 {
        format!("{y:04}-{mo:02}-{d:02}")
    } else if ms == 0 {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}")
    }
}

/// A string cell; one holding only whitespace is `Blank`.
fn string_cell(s: &str) -> (String, Kind) {
    if s.chars()
        .all(|c| c.is_whitespace() || c == '\u{200b}' || c == '\u{feff}')
    {
        (String::new(), Kind::Blank)
    } else {
        (s.to_string(), Kind::Text)
    }
}

fn from_ref(col: u32, v: &DataRef<'_>) -> Option<CellVal> {
    let (text, kind) = match v {
        DataRef::Empty => return None,
        DataRef::String(s) => string_cell(s),
        DataRef::SharedString(s) => string_cell(s),
        DataRef::Int(i) => (i.to_string(), Kind::Number),
        DataRef::Float(f) => (number_text(*f), Kind::Number),
        DataRef::Bool(b) => (b.to_string(), Kind::Bool),
        DataRef::DateTime(dt) => (datetime_text(dt), Kind::Date),
        DataRef::DateTimeIso(s) => (s.clone(), Kind::Date),
        DataRef::DurationIso(s) => (s.clone(), Kind::Date),
        DataRef::Error(e) => (e.to_string(), Kind::Error),
    };
    Some(CellVal { col, text, kind })
}

fn from_data(col: u32, v: &Data) -> Option<CellVal> {
    let (text, kind) = match v {
        Data::Empty => return None,
        Data::String(s) => string_cell(s),
        Data::Int(i) => (i.to_string(), Kind::Number),
        Data::Float(f) => (number_text(*f), Kind::Number),
        Data::Bool(b) => (b.to_string(), Kind::Bool),
        Data::DateTime(dt) => (datetime_text(dt), Kind::Date),
        Data::DateTimeIso(s) => (s.clone(), Kind::Date),
        Data::DurationIso(s) => (s.clone(), Kind::Date),
        Data::Error(e) => (e.to_string(), Kind::Error),
    };
    Some(CellVal { col, text, kind })
}

fn read_sheet(
    path: &Path,
    format: Format,
    origin: &str,
    req: TableRequest,
    tx: &SyncSender<Message>,
) -> Result<()> {
    let mut book = open_book(path, format)?;
    let hidden_cols = if format == Format::Xlsx {
        xlsx_hidden_columns(path, &req.table).unwrap_or_default()
    } else {
        HashSet::new()
    };
    let mut walker = Walker::new(origin.to_string(), req, hidden_cols, tx.clone());
    let name = walker.req.table.clone();
    match &mut book {
        calamine::Sheets::Xlsx(x) => {
            let mut cells = x
                .worksheet_cells_reader(&name)
                .map_err(|e| book_error(origin, &e.to_string()))?;
            let mut row: Vec<CellVal> = Vec::new();
            let mut row_idx: Option<u32> = None;
            loop {
                let cell = cells
                    .next_cell()
                    .map_err(|e| Error::input(format!("{origin}: malformed sheet data: {e}")))?;
                let Some(cell) = cell else { break };
                let (r, c) = cell.get_position();
                if row_idx != Some(r) {
                    if let Some(prev) = row_idx {
                        if walker.row(prev, &mut row)? == Flow::Stop {
                            return Ok(());
                        }
                    }
                    row.clear();
                    row_idx = Some(r);
                }
                if let Some(v) = from_ref(c, cell.get_value()) {
                    row.push(v);
                }
            }
            if let Some(prev) = row_idx {
                if walker.row(prev, &mut row)? == Flow::Stop {
                    return Ok(());
                }
            }
        }
        other => {
            let range = other
                .worksheet_range(&name)
                .map_err(|e| book_error(origin, &e.to_string()))?;
            let (r0, c0) = range.start().unwrap_or((0, 0));
            let mut row: Vec<CellVal> = Vec::new();
            for (i, cells) in range.rows().enumerate() {
                row.clear();
                for (j, v) in cells.iter().enumerate() {
                    if let Some(cv) = from_data(c0 + j as u32, v) {
                        row.push(cv);
                    }
                }
                if walker.row(r0 + i as u32, &mut row)? == Flow::Stop {
                    return Ok(());
                }
            }
        }
    }
    walker.finish()
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
    pending: Vec<(u32, Vec<CellVal>)>,
    /// Once the header is known: source column index per batch column.
    selected: Option<Vec<Option<u32>>>,
    header_row: u32,
    last_row: Option<u32>,
    builder: Option<BatchBuilder>,
    stats: ReadStats,
    kinds: Vec<CellKinds>,
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
            header_row: 0,
            last_row: None,
            builder: None,
            stats: ReadStats::default(),
            kinds: Vec::new(),
        }
    }

    /// One sheet row (0-based index), cells in any order.
    fn row(&mut self, r: u32, cells: &mut Vec<CellVal>) -> Result<Flow> {
        if self.selected.is_none() {
            let scan_end = match self.req.header_row {
                Some(h) => h.saturating_sub(1),
                None => self.req.header_scan_rows.saturating_sub(1),
            };
            cells.sort_by_key(|c| c.col);
            self.pending.push((r, std::mem::take(cells)));
            if r < scan_end {
                return Ok(Flow::Go);
            }
            return self.settle_header();
        }
        self.data_row(r, cells)
    }

    /// Choose the header among the buffered rows, then replay the rest.
    fn settle_header(&mut self) -> Result<Flow> {
        let pending = std::mem::take(&mut self.pending);
        let pos = match self.req.header_row {
            Some(h) => pending.iter().position(|(r, _)| *r + 1 == h).ok_or_else(|| {
                Error::input(format!(
                    "{}: header_row = {h} is empty; set source.header_row to the row that holds the column names",
                    self.origin
                ))
            })?,
            None => self.detect_header(&pending)?,
        };
        let (hr, header_cells) = &pending[pos];
        self.header_row = hr + 1;
        self.stats.header_row = hr + 1;
        self.stats.rows_above_header = pending[..pos]
            .iter()
            .filter(|(_, c)| c.iter().any(|c| c.kind != Kind::Blank))
            .count() as u64;
        self.last_row = Some(*hr);
        let headers: Vec<SourceColumn> = header_cells
            .iter()
            .filter(|c| c.kind != Kind::Blank)
            .map(|c| SourceColumn {
                header: c.text.trim().to_string(),
                index: c.col,
                hidden: self.hidden_cols.contains(&c.col),
                feeds: None,
            })
            .collect();
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
                let mut used = HashSet::new();
                let mut headers = headers;
                for h in headers.iter_mut() {
                    if h.hidden || h.header.is_empty() {
                        continue;
                    }
                    let mut name = h.header.clone();
                    let mut k = 2;
                    while !used.insert(name.clone()) {
                        name = format!("{} ({k})", h.header);
                        k += 1;
                    }
                    h.feeds = Some(name.clone());
                    names.push(name);
                    sel.push(Some(h.index));
                }
                (names, sel, headers)
            }
        };
        headers.sort_by_key(|h| h.index);
        self.kinds = vec![CellKinds::default(); names.len()];
        self.builder = Some(BatchBuilder::new(names, self.req.batch_size));
        self.selected = Some(selected);
        if self.tx.send(Message::Columns(headers)).is_err() {
            return Ok(Flow::Stop);
        }
        let mut flow = Flow::Go;
        for (r, mut cells) in pending.into_iter().skip(pos + 1) {
            flow = self.data_row(r, &mut cells)?;
            if flow == Flow::Stop {
                break;
            }
        }
        Ok(flow)
    }

    fn detect_header(&self, pending: &[(u32, Vec<CellVal>)]) -> Result<usize> {
        let score = |cells: &Vec<CellVal>| -> usize {
            match &self.req.columns {
                Some(wanted) => {
                    let keys: HashSet<String> = cells
                        .iter()
                        .filter(|c| c.kind == Kind::Text)
                        .map(|c| header_key(&c.text))
                        .collect();
                    wanted
                        .iter()
                        .filter(|w| w.headers.iter().any(|h| keys.contains(&header_key(h))))
                        .count()
                }
                None => cells.iter().filter(|c| c.kind == Kind::Text).count(),
            }
        };
        let mut best: Option<(usize, usize)> = None;
        for (i, (_, cells)) in pending.iter().enumerate() {
            let s = score(cells);
            if s > 0 && best.is_none_or(|(_, bs)| s > bs) {
                best = Some((i, s));
            }
        }
        match best {
            Some((i, _)) => Ok(i),
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
                    "{}: no header row found in the first {} rows: {what}. Set source.header_row in the mapping",
                    self.origin, self.req.header_scan_rows
                )))
            }
        }
    }

    fn data_row(&mut self, r: u32, cells: &mut [CellVal]) -> Result<Flow> {
        if let Some(last) = self.last_row {
            // rows absent from the sheet data between two rows are blank too
            self.stats.blank_rows += r.saturating_sub(last + 1) as u64;
        }
        self.last_row = Some(r);
        if cells.iter().all(|c| c.kind == Kind::Blank) {
            self.stats.blank_rows += 1;
            return Ok(Flow::Go);
        }
        if let Some(footer) = &self.req.footer {
            let first = cells
                .iter()
                .filter(|c| c.kind != Kind::Blank)
                .min_by_key(|c| c.col);
            if first.is_some_and(|c| footer.is_match(c.text.trim())) {
                self.stats.footer_rows += 1;
                return Ok(Flow::Go);
            }
        }
        let Some(selected) = &self.selected else {
            return Ok(Flow::Go);
        };
        let mut values: Vec<Option<String>> = vec![None; selected.len()];
        for c in cells.iter_mut() {
            for (slot, sel) in selected.iter().enumerate() {
                if *sel == Some(c.col) {
                    let k = &mut self.kinds[slot];
                    match c.kind {
                        Kind::Text => {
                            k.text += 1;
                            if looks_numeric(&c.text) {
                                k.numeric_text += 1;
                            }
                        }
                        Kind::Number => k.number += 1,
                        Kind::Date => k.date += 1,
                        Kind::Bool => k.boolean += 1,
                        Kind::Error => k.error += 1,
                        Kind::Blank => {
                            k.whitespace_only += 1;
                            continue;
                        }
                    }
                    values[slot] = Some(std::mem::take(&mut c.text));
                }
            }
        }
        for (slot, v) in values.iter().enumerate() {
            if v.is_none() {
                self.kinds[slot].empty += 1;
            }
        }
        self.stats.data_rows += 1;
        let builder = self.builder.as_mut().expect("builder set with the header");
        builder.push(r as u64 + 1, values);
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
        if let Some(b) = self.builder.as_mut() {
            if !b.is_empty() {
                let df = b.take()?;
                if self.tx.send(Message::Batch(df)).is_err() {
                    return Ok(());
                }
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
