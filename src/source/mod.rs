//! Sources: where rows come from.
//!
//! A source lists its tables (sheets) and reads one of them as a stream of
//! bounded batches. Each batch is a polars `DataFrame` of text columns named
//! after the target columns they feed, plus a `__row` column holding each
//! row's position in the source (the sheet row number), so that a rejected
//! row can be found again. Reading runs on its own thread and hands batches
//! over through a bounded channel: memory stays flat whatever the table
//! size, and reading overlaps with cleaning and writing.

pub mod access;
pub mod csv;
pub mod excel;
#[cfg(feature = "odbc")]
pub mod odbc;
pub mod postgres;

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender};

use polars::prelude::*;
use serde::Serialize;

use crate::config::mapping::ColumnType;
use crate::config::{SettingsError, SourceConfig};
use crate::db::{Dialect, Row};
use crate::error::{Error, Result};

/// Largest value a source hands over, in bytes, unless its
/// `max_cell_bytes` says otherwise: a row with a larger cell (a 200 MB
/// text pasted in a workbook) is rejected, not written.
pub const DEFAULT_MAX_CELL_BYTES: usize = 4 * 1024 * 1024;

/// A source value that cannot become batch text: the row holding it is
/// rejected with [`BadValue::reason`] and [`BadValue::detail`].
#[derive(Debug, Clone, PartialEq)]
pub enum BadValue {
    /// Above the source's `max_cell_bytes`.
    TooLarge { bytes: usize, max: usize },
    /// A date (or time) that is no date: NaN, an infinity, out of the years
    /// 1 to 9999, or Excel's 29/02/1900. What it is, said for people.
    Date(String),
    /// A number cell holding NaN or an infinity.
    NotFinite(f64),
}

impl BadValue {
    /// The reject reason, counted in the report (`column: not a date`).
    pub fn reason(&self, column: &str) -> String {
        match self {
            BadValue::TooLarge { .. } => format!("{column}: cell too large"),
            BadValue::Date(_) => format!("{column}: not a date"),
            BadValue::NotFinite(_) => format!("{column}: not a number"),
        }
    }

    /// What is wrong with the value and what to do.
    pub fn detail(&self) -> String {
        match self {
            BadValue::TooLarge { bytes, max } => format!(
                "{bytes} bytes, above max_cell_bytes = {max}; shorten the value, or raise `max_cell_bytes` in the source's [sources.…] if it is meant"
            ),
            BadValue::Date(what) => what.clone(),
            BadValue::NotFinite(v) => format!("the cell holds {v:?}, which is not a number"),
        }
    }
}

/// The cap check shared by the sources.
pub fn check_size(bytes: usize, max: usize) -> std::result::Result<(), BadValue> {
    if bytes > max {
        Err(BadValue::TooLarge { bytes, max })
    } else {
        Ok(())
    }
}

/// A column a reader should extract, by header text.
#[derive(Debug, Clone)]
pub struct WantedColumn {
    /// Name of the column in the batch (the target column name).
    pub name: String,
    /// Header texts to look for, in order of preference.
    pub headers: Vec<String>,
    /// When absent from the source, yield NULLs instead of failing.
    pub optional: bool,
    /// The mapper takes this column's values typed as they are (no text
    /// rule applies to it, see `Mapper::carries`): a source that holds
    /// values of exactly this type may hand them over typed, not as text.
    pub carry: Option<crate::config::mapping::ColumnType>,
}

/// What to read from a source.
#[derive(Debug, Clone)]
pub struct TableRequest {
    /// Sheet or table name.
    pub table: String,
    /// A query to read instead of the table (databases).
    pub query: Option<String>,
    /// A condition on the rows (databases).
    pub filter: Option<String>,
    /// Incremental sync: read only rows changed since a watermark.
    pub update_key: Option<UpdateKey>,
    /// Columns to extract; `None` means every visible column, named by its
    /// header (used by `inspect` and `profile`).
    pub columns: Option<Vec<WantedColumn>>,
    /// 1-based header row; detected when `None`; `Some(0)`: none, every
    /// row is data and the columns are named by their letters (`A`, `B`…).
    pub header_row: Option<u32>,
    /// Rows searched for the header.
    pub header_scan_rows: u32,
    /// Footer pattern (case-insensitive), tested on the first non-empty cell.
    pub footer: Option<regex::Regex>,
    /// Rows per batch.
    pub batch_size: usize,
}

/// The column an incremental read follows.
#[derive(Debug, Clone)]
pub struct UpdateKey {
    /// The wanted column (target name) that holds it.
    pub column: String,
    /// Read rows above this value (the last run's highest), and rows
    /// where it is NULL; everything when `None`.
    pub after: Option<String>,
}

impl TableRequest {
    /// Every column of a table, with the defaults (inspect, tests).
    pub fn all(table: &str) -> TableRequest {
        TableRequest {
            table: table.to_string(),
            query: None,
            filter: None,
            update_key: None,
            columns: None,
            header_row: None,
            header_scan_rows: 30,
            footer: None,
            batch_size: 10_000,
        }
    }
}

/// A column as found in the source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceColumn {
    /// Header text as written.
    pub header: String,
    /// 0-based column index.
    pub index: u32,
    /// Hidden in the workbook.
    pub hidden: bool,
    /// The batch column it feeds, if any.
    pub feeds: Option<String>,
}

/// How many cells of each kind a column held (for `profile`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CellKinds {
    /// Empty cells, including those holding only spaces.
    pub empty: u64,
    /// Cells holding only spaces (read as empty).
    pub whitespace_only: u64,
    pub text: u64,
    /// Text cells whose content reads as a number ("numbers stored as text").
    pub numeric_text: u64,
    pub number: u64,
    pub date: u64,
    pub boolean: u64,
    pub error: u64,
}

/// What a reader skipped and saw, reported at the end of a table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReadStats {
    /// 1-based header row used; 0 when the sheet was read without one.
    pub header_row: u32,
    /// Read without a header row (`header_row = 0`, or no row of a sheet
    /// holds text): the columns are named by their letters, every row is
    /// data.
    pub headerless: bool,
    /// Rows above the header (titles, notes).
    pub rows_above_header: u64,
    /// Empty rows between data rows.
    pub blank_rows: u64,
    /// Rows matching the footer pattern.
    pub footer_rows: u64,
    /// Data rows yielded.
    pub data_rows: u64,
    /// Per batch column, cell kinds seen (same order as the batch columns).
    pub kinds: Vec<(String, CellKinds)>,
    /// With an update key: its highest value among the rows read, in the
    /// source's text form (the next run's watermark).
    pub max_update_key: Option<String>,
    /// With an update key: rows read whose update key is NULL.
    pub null_update_key: u64,
}

/// A table or sheet of a source.
#[derive(Debug, Clone, Serialize)]
pub struct TableInfo {
    pub name: String,
    pub hidden: bool,
    /// Rows in the used range, when cheap to know.
    pub rows: Option<u64>,
}

/// Messages from a reader thread.
pub enum Message {
    Columns(Vec<SourceColumn>),
    Batch(DataFrame),
    Done(ReadStats),
    Failed(Error),
}

/// The receiving end of a table read.
pub struct TableReader {
    /// Where the rows come from, for messages (`stock.xlsx › Stock`).
    pub origin: String,
    pub columns: Vec<SourceColumn>,
    /// Estimated rows, for progress bars.
    pub estimated_rows: Option<u64>,
    rx: Receiver<Message>,
    stats: Option<ReadStats>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl TableReader {
    /// Start `work` on a thread and wait for it to report the columns.
    pub fn spawn<F>(origin: String, estimated_rows: Option<u64>, work: F) -> Result<TableReader>
    where
        F: FnOnce(&SyncSender<Message>) -> Result<()> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let handle = std::thread::Builder::new()
            .name("repaero-read".into())
            .spawn(move || {
                if let Err(e) = work(&tx) {
                    let _ = tx.send(Message::Failed(e));
                }
            })
            .map_err(|e| Error::runtime(format!("cannot start reader thread: {e}")))?;
        let mut reader = TableReader {
            origin,
            columns: Vec::new(),
            estimated_rows,
            rx,
            stats: None,
            handle: Some(handle),
        };
        match reader.rx.recv() {
            Ok(Message::Columns(cols)) => reader.columns = cols,
            Ok(Message::Failed(e)) => return Err(e),
            Ok(_) => {
                return Err(Error::runtime(format!(
                    "{}: reader did not report its columns first",
                    reader.origin
                )));
            }
            Err(_) => return Err(reader.thread_died()),
        }
        Ok(reader)
    }

    /// The next batch, `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<DataFrame>> {
        if self.stats.is_some() {
            return Ok(None);
        }
        match self.rx.recv() {
            Ok(Message::Batch(df)) => Ok(Some(df)),
            Ok(Message::Done(stats)) => {
                self.stats = Some(stats);
                if let Some(h) = self.handle.take() {
                    let _ = h.join();
                }
                Ok(None)
            }
            Ok(Message::Failed(e)) => Err(e),
            Ok(Message::Columns(_)) => Err(Error::runtime(format!(
                "{}: reader reported its columns twice",
                self.origin
            ))),
            Err(_) => Err(self.thread_died()),
        }
    }

    /// Statistics, available once `next_batch` returned `None`.
    pub fn stats(&self) -> Option<&ReadStats> {
        self.stats.as_ref()
    }

    fn thread_died(&mut self) -> Error {
        let detail = match self.handle.take().map(|h| h.join()) {
            Some(Err(p)) => p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into()),
            _ => "stopped without a reason".into(),
        };
        // calamine parses untrusted bytes: a reader that stops without a
        // reason met data it could not handle.
        Error::input(format!(
            "{}: the reader stopped on malformed data ({detail}); open and re-save the file in Excel or LibreOffice",
            self.origin
        ))
    }
}

/// What a source can do beyond reading its tables as batches. The
/// pipeline and validation ask for these, never for a kind of source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Reads only the rows changed after a watermark
    /// ([`TableRequest::update_key`]): `mode = "incremental"` can use it.
    pub incremental: bool,
    /// Answers SQL in this dialect ([`Source::query`]): validation pushes
    /// its metrics down instead of streaming the table.
    pub sql: Option<Dialect>,
}

/// A column as the source declares it (databases), for `inspect` and the
/// tables it proposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredColumn {
    pub name: String,
    /// The source's own type name (`Text(50)`, `Currency`).
    pub source_type: String,
    pub nullable: bool,
    /// The target type repaero would write it as.
    pub target_type: ColumnType,
}

/// A foreign key as the source declares it (Access relationships,
/// PostgreSQL constraints): `columns` of the table refer to `ref_columns`
/// of `ref_table`, pair by pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForeignKey {
    /// The constraint's or relationship's name.
    pub name: String,
    pub columns: Vec<String>,
    pub ref_table: String,
    pub ref_columns: Vec<String>,
    /// The source refuses rows that break it (an Access relationship may
    /// only note how tables join).
    pub enforced: bool,
}

/// The keys of a table as the source declares them (`scaffold` turns them
/// into `target.key`, `references` and the job's table order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TableKeys {
    /// Primary key columns, in order; empty when there is none.
    pub primary: Vec<String>,
    /// Where the primary key comes from (`index "PrimaryKey"`).
    pub primary_name: Option<String>,
    /// Foreign keys of this table (it is the referencing one).
    pub foreign: Vec<ForeignKey>,
}

/// A place rows come from: a workbook, an Access file, a database, CSV files.
pub trait Source: Send + Sync {
    /// Where the rows come from, for messages (a path, a redacted URL).
    fn describe(&self) -> String;
    /// The file or folder read, for file sources.
    fn path(&self) -> Option<&Path> {
        None
    }
    /// Tables (sheets, files) of the source.
    fn tables(&self) -> Result<Vec<TableInfo>>;
    /// Read one table as bounded batches.
    fn read(&self, req: TableRequest) -> Result<TableReader>;
    /// What the source can do besides reading.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    /// Run read-only SQL on the source; values as text. Only for sources
    /// whose [`Capabilities::sql`] says so.
    fn query(&self, sql: &str) -> Result<Vec<Row>> {
        let _ = sql;
        Err(Error::config(format!(
            "{}: this source does not answer SQL",
            self.describe()
        )))
    }
    /// Whether a table holds rows at all (a workbook's chart and macro
    /// sheets do not).
    fn holds_rows(&self, table: &str) -> bool {
        let _ = table;
        true
    }
    /// The columns of a table as the source declares their types, when it
    /// does (databases); `None` when types are only seen in the cells.
    fn declared_columns(&self, table: &str) -> Result<Option<Vec<DeclaredColumn>>> {
        let _ = table;
        Ok(None)
    }
    /// The primary and foreign keys of a table, when the source declares
    /// them (databases); `None` when it has no such notion (files).
    fn keys(&self, table: &str) -> Result<Option<TableKeys>> {
        let _ = table;
        Ok(None)
    }
}

/// Opens a file of one kind given only its path.
pub type FileOpener = fn(&Path) -> Result<Box<dyn Source>>;

/// One kind of source: its `kind = "…"` in `[sources.<name>]`, how to open
/// it from that table (each kind reads its own settings struct, kept beside
/// its code), and, for file kinds, how to recognise a file by its content.
pub struct Kind {
    pub name: &'static str,
    pub open: fn(name: &str, settings: &toml::Table) -> Result<Box<dyn Source>>,
    /// Reads the settings without opening anything (a typo is found first).
    pub check: fn(settings: &toml::Table) -> std::result::Result<(), SettingsError>,
    /// Opens a file of this kind given only its path (`inspect file.xlsx`).
    pub open_file: Option<FileOpener>,
    /// The file is of this kind (by content, not by name).
    pub sniff: Option<fn(&Path) -> bool>,
}

/// Every kind of source, one line each. A new connector is one file with
/// its settings struct and its [`Kind`], and one line here.
pub const KINDS: &[Kind] = &[
    access::KIND,
    excel::KIND,
    csv::KIND,
    postgres::KIND,
    #[cfg(feature = "odbc")]
    odbc::KIND,
    #[cfg(not(feature = "odbc"))]
    ODBC_NOT_BUILT,
];

#[cfg(not(feature = "odbc"))]
const ODBC_NOT_BUILT: Kind = Kind {
    name: "odbc",
    open: |name, _| {
        Err(Error::config(format!(
            "source `{name}` is an ODBC source, and this repaero was built without ODBC; build it with `cargo build --release --features odbc` (needs unixodbc-dev)"
        )))
    },
    check: |_| Ok(()),
    open_file: None,
    sniff: None,
};

/// Open a configured source.
pub fn open(name: &str, cfg: &SourceConfig) -> Result<Box<dyn Source>> {
    let kind = KINDS
        .iter()
        .find(|k| k.name == cfg.kind)
        .ok_or_else(|| unknown_kind(name, &cfg.kind))?;
    (kind.open)(name, &cfg.settings)
}

/// Check every configured source's settings without opening it, so that
/// a typo in repaero.toml is found, with its line, before anything runs.
pub fn check_settings(cfg: &crate::config::Config) -> Result<()> {
    cfg.check_sources(
        &|name, src| match KINDS.iter().find(|k| k.name == src.kind) {
            Some(kind) => (kind.check)(&src.settings),
            None => Err(SettingsError {
                key: Some("kind".into()),
                message: unknown_kind(name, &src.kind).to_string(),
            }),
        },
    )
}

fn unknown_kind(name: &str, kind: &str) -> Error {
    let known: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
    Error::config(format!(
        "[sources.{name}]: unknown kind {kind:?}; repaero reads {}",
        known.join(", ")
    ))
}

/// A kind's settings struct read from its `[sources.<name>]` table; the
/// error names the key at fault.
pub fn read_settings<T: serde::de::DeserializeOwned>(
    table: &toml::Table,
) -> std::result::Result<T, SettingsError> {
    toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| {
            let message = e.message().trim_end().to_string();
            // serde names the field between backticks
            let key = message
                .split('`')
                .nth(1)
                .filter(|k| table.contains_key(*k) || message.starts_with("unknown field"))
                .map(str::to_string);
            SettingsError { key, message }
        })
}

/// A kind's settings struct, when opening a source.
pub fn settings<T: serde::de::DeserializeOwned>(
    name: &str,
    kind: &str,
    table: &toml::Table,
) -> Result<T> {
    read_settings(table).map_err(|e| {
        Error::config(format!(
            "repaero.toml [sources.{name}] (kind = \"{kind}\"): {}",
            e.message
        ))
    })
}

/// Open a file by path, choosing the kind from its content.
pub fn open_path(path: &Path) -> Result<Box<dyn Source>> {
    for kind in KINDS {
        if let (Some(sniff), Some(open)) = (kind.sniff, kind.open_file)
            && sniff(path)
        {
            return open(path);
        }
    }
    if has_access_extension(path) && path.is_file() {
        return Err(not_access(path));
    }
    // the workbook reader says best what a file that is none of these is
    excel::ExcelSource::open(path).map(|s| Box::new(s) as Box<dyn Source>)
}

/// The `kind` a file is read as (`access`, `excel`…), chosen from its
/// content as [`open_path`] does.
pub fn kind_of_path(path: &Path) -> &'static str {
    for kind in KINDS {
        if let (Some(sniff), Some(_)) = (kind.sniff, kind.open_file)
            && sniff(path)
        {
            return kind.name;
        }
    }
    excel::KIND.name
}

/// Whether a file is an Access database (by its header, not its name).
pub fn is_access_file(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 20];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|_| &head[4..19] == b"Standard Jet DB" || &head[4..19] == b"Standard ACE DB")
}

/// Whether a file's name says Access (`.mdb`, `.accdb` and their kin).
pub fn has_access_extension(path: &Path) -> bool {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    matches!(
        ext.as_str(),
        "mdb" | "accdb" | "mde" | "accde" | "mda" | "accda"
    )
}

/// The error for a file that exists but has no Jet/ACE header.
pub fn not_access(path: &Path) -> Error {
    Error::input(format!(
        "{}: not an Access database (no Jet/ACE header); expected a .mdb or .accdb file saved by Access",
        path.display()
    ))
}

/// Normalise a header for matching: lower case, accents removed, every run
/// of non-alphanumeric characters (spaces, NBSP, punctuation) made one space.
pub fn header_key(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.nfd() {
        if unicode_normalization::char::is_combining_mark(c) {
            continue;
        }
        if c.is_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.extend(c.to_lowercase());
        } else {
            pending_space = true;
        }
    }
    out
}

/// Match wanted columns against a header row.
///
/// The batch's column names and, for each, the header it reads from: the
/// wanted columns (marking the headers that feed them), or every header
/// under its own name.
pub fn select_columns(
    origin: &str,
    headers: &mut [SourceColumn],
    wanted: Option<&[WantedColumn]>,
) -> Result<(Vec<String>, Vec<Option<usize>>)> {
    match wanted {
        Some(wanted) => {
            let found = resolve_columns(origin, headers, wanted)?;
            for (w, f) in wanted.iter().zip(&found) {
                if let Some(i) = f {
                    headers[*i].feeds = Some(w.name.clone());
                }
            }
            Ok((wanted.iter().map(|w| w.name.clone()).collect(), found))
        }
        None => {
            let mut unique = UniqueNames::default();
            for h in headers.iter_mut() {
                h.feeds = Some(unique.name(&h.header));
            }
            Ok((
                headers.iter().filter_map(|h| h.feeds.clone()).collect(),
                (0..headers.len()).map(Some).collect(),
            ))
        }
    }
}

/// Batch column names for headers read as they are (`inspect`, `profile`):
/// a header seen again becomes `Name (2)`, `Name (3)`… In time linear in
/// the number of headers: each base name remembers its next number, so
/// 8,000 identical headers cost 8,000 lookups, not 32 million.
#[derive(Debug, Default)]
pub struct UniqueNames {
    used: std::collections::HashSet<String>,
    next: std::collections::HashMap<String, usize>,
    /// Names tried so far (the work done, for tests).
    pub probes: u64,
}

impl UniqueNames {
    /// `header`, or the first `header (k)` not given yet.
    pub fn name(&mut self, header: &str) -> String {
        self.probes += 1;
        if self.used.insert(header.to_string()) {
            return header.to_string();
        }
        let k = self.next.entry(header.to_string()).or_insert(2);
        loop {
            self.probes += 1;
            let name = format!("{header} ({k})");
            *k += 1;
            // a header written `Name (2)` in the file takes that name first
            if self.used.insert(name.clone()) {
                return name;
            }
        }
    }
}

/// `"Charge (2)"` → `("Charge", 2)`: a header followed by its rank among
/// the visible columns that hold it.
pub fn ranked_header(alt: &str) -> Option<(&str, usize)> {
    let (base, rank) = alt.trim_end().strip_suffix(')')?.rsplit_once('(')?;
    let base = base.trim_end();
    let rank = rank.trim();
    if base.is_empty() || rank.is_empty() || !rank.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((base, rank.parse().ok().filter(|&k| k > 0)?))
}

/// Returns, for each wanted column, the index into `headers` it reads from.
/// A visible column wins over a hidden one with the same header; two
/// visible columns with the same header are ambiguous, unless the mapping
/// names one by its rank: `Charge (2)` is the second visible column headed
/// `Charge` (when no header reads `Charge (2)` itself), as `inspect` and
/// `profile` name it.
pub fn resolve_columns(
    origin: &str,
    headers: &[SourceColumn],
    wanted: &[WantedColumn],
) -> Result<Vec<Option<usize>>> {
    // header key → the headers holding it, in order: one pass over the
    // headers, whatever the number of wanted columns
    let mut by_key: std::collections::HashMap<String, Vec<usize>> =
        std::collections::HashMap::new();
    for (i, h) in headers.iter().enumerate() {
        by_key.entry(header_key(&h.header)).or_default().push(i);
    }
    let mut out = Vec::with_capacity(wanted.len());
    let mut missing = Vec::new();
    for w in wanted {
        let mut found = None;
        'alts: for alt in &w.headers {
            let visible_with = |key: &str| -> (Vec<usize>, usize) {
                let hits: &[usize] = by_key.get(key).map(|v| v.as_slice()).unwrap_or_default();
                let visible = hits
                    .iter()
                    .copied()
                    .filter(|&i| !headers[i].hidden)
                    .collect();
                (visible, hits.first().copied().unwrap_or(usize::MAX))
            };
            let (visible, first_hit) = visible_with(&header_key(alt));
            let pick = match visible.len() {
                0 if first_hit != usize::MAX => Some(first_hit),
                // `Charge (2)`: the second visible `Charge`
                0 => ranked_header(alt).and_then(|(base, k)| {
                    let (twins, _) = visible_with(&header_key(base));
                    twins.get(k - 1).copied()
                }),
                1 => Some(visible[0]),
                _ => {
                    let cols: Vec<String> = visible
                        .iter()
                        .map(|&i| column_letter(headers[i].index))
                        .collect();
                    return Err(Error::input(format!(
                        "{origin}: header {alt:?} appears in several visible columns ({}); rename one in the workbook, or name one by its rank in `from` (\"{} (2)\" is the one in {})",
                        cols.join(", "),
                        alt.trim(),
                        cols[1]
                    )));
                }
            };
            if let Some(p) = pick {
                found = Some(p);
                break 'alts;
            }
        }
        if found.is_none() && !w.optional {
            missing.push(w);
        }
        out.push(found);
    }
    if !missing.is_empty() {
        let seen: Vec<String> = headers
            .iter()
            .filter(|h| !h.hidden)
            .map(|h| format!("{:?}", h.header))
            .collect();
        let lines: Vec<String> = missing
            .iter()
            .map(|w| {
                let alts: Vec<String> = w.headers.iter().map(|h| format!("{h:?}")).collect();
                format!("column `{}` (from {})", w.name, alts.join(" or "))
            })
            .collect();
        return Err(Error::input(format!(
            "{origin}: mapped column not found: {}. Headers found: {}. Add the workbook's header text to `from` in the mapping, or mark the column `optional = true`",
            lines.join("; "),
            seen.join(", ")
        )));
    }
    Ok(out)
}

/// `A → 0`, `aa → 26`, `XFD → 16383` (the last column of a sheet); `None`
/// for anything else.
pub fn column_index(letters: &str) -> Option<u32> {
    let l = letters.trim();
    if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let n = l.bytes().fold(0u32, |acc, b| {
        acc * 26 + (b.to_ascii_uppercase() - b'A') as u32 + 1
    });
    (n <= 16_384).then(|| n - 1)
}

/// `0 → A`, `25 → Z`, `26 → AA`.
pub fn column_letter(index: u32) -> String {
    let mut n = index as u64 + 1;
    let mut s = Vec::new();
    while n > 0 {
        let r = ((n - 1) % 26) as u8;
        s.push(b'A' + r);
        n = (n - 1) / 26;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = "[target]\nurl = \"sqlite://x.db\"\n\n[sources.stock]\nkind = \"excel\"\npth = \"a.xlsx\"\n";
        let cfg = crate::config::Config::from_text(
            text,
            "repaero.toml",
            Path::new("."),
            &[],
            &|_: &str| None,
        )
        .unwrap();
        let err = check_settings(&cfg).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("repaero.toml:6:1:"), "{msg}");
        assert!(msg.contains("unknown field `pth`"), "{msg}");
        assert_eq!(err.exit_code(), 2);
    }

    fn col(h: &str, i: u32, hidden: bool) -> SourceColumn {
        SourceColumn {
            header: h.into(),
            index: i,
            hidden,
            feeds: None,
        }
    }

    fn want(name: &str, headers: &[&str]) -> WantedColumn {
        WantedColumn {
            name: name.into(),
            headers: headers.iter().map(|s| s.to_string()).collect(),
            optional: false,
            carry: None,
        }
    }

    #[test]
    fn header_keys_ignore_case_accents_and_spacing() {
        assert_eq!(header_key("  Référence\u{a0}"), "reference");
        assert_eq!(header_key("Prix unitaire (€)"), "prix unitaire");
        assert_eq!(header_key("Qté."), "qte");
        assert_eq!(header_key("Seuil\u{a0}mini"), "seuil mini");
    }

    #[test]
    fn visible_column_wins_over_hidden_twin() {
        let headers = vec![
            col("Prix unitaire", 4, true),
            col("Prix unitaire", 6, false),
        ];
        let r = resolve_columns("f", &headers, &[want("unit_price", &["Prix unitaire"])]).unwrap();
        assert_eq!(r, vec![Some(1)]);
    }

    #[test]
    fn two_visible_twins_are_ambiguous() {
        let headers = vec![col("Prix", 4, false), col("Prix", 6, false)];
        let err = resolve_columns("f", &headers, &[want("p", &["Prix"])]).unwrap_err();
        assert!(err.to_string().contains("E, G"), "{err}");
    }

    #[test]
    fn twins_are_told_apart_by_their_rank() {
        // Charge in E, G (hidden) and H; a header written "Total (2)" is
        // read as written
        let headers = vec![
            col("Charge", 4, false),
            col("CHARGE", 6, true),
            col("charge", 7, false),
            col("Total (2)", 8, false),
            col("Total", 9, false),
        ];
        let r = resolve_columns(
            "f",
            &headers,
            &[
                want("a", &["Charge (1)"]),
                want("b", &["Charge (2)"]),
                want("t", &["Total (2)"]),
            ],
        )
        .unwrap();
        assert_eq!(r, vec![Some(0), Some(2), Some(3)]);
        // no third visible Charge
        let err = resolve_columns("f", &headers, &[want("c", &["Charge (3)"])]).unwrap_err();
        assert!(err.to_string().contains("column `c`"), "{err}");
        // the error names the way out
        let err = resolve_columns("f", &headers, &[want("c", &["Charge"])]).unwrap_err();
        assert!(
            err.to_string().contains("\"Charge (2)\" is the one in H"),
            "{err}"
        );
        assert_eq!(ranked_header("Prix HT (12)"), Some(("Prix HT", 12)));
        assert_eq!(ranked_header("(2)"), None);
        assert_eq!(ranked_header("Prix (0)"), None);
        assert_eq!(ranked_header("Prix (a)"), None);
    }

    #[test]
    fn missing_column_names_what_was_found() {
        let headers = vec![col("Réf", 0, false), col("Qté", 1, false)];
        let err = resolve_columns(
            "stock.xlsx › Stock",
            &headers,
            &[want("reference", &["Référence"])],
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("column `reference`"), "{msg}");
        assert!(msg.contains("\"Réf\""), "{msg}");
        assert!(msg.contains("stock.xlsx › Stock"), "{msg}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn identical_headers_get_numbers_in_linear_work() {
        let n = 8_000;
        let mut unique = UniqueNames::default();
        let names: Vec<String> = (0..n).map(|_| unique.name("Réf")).collect();
        assert_eq!(names[0], "Réf");
        assert_eq!(names[1], "Réf (2)");
        assert_eq!(names[n - 1], format!("Réf ({n})"));
        let distinct: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), n);
        // one probe per header, one more per repeat: the numbering used to
        // try every taken number again, n²/2 = 32 million probes here
        assert_eq!(unique.probes, 2 * n as u64 - 1);
        // a header already written `X (2)` keeps its name, the next X skips it
        let mut unique = UniqueNames::default();
        let got: Vec<String> = ["X", "X (2)", "X", "X"]
            .iter()
            .map(|h| unique.name(h))
            .collect();
        assert_eq!(got, ["X", "X (2)", "X (3)", "X (4)"]);
    }

    #[test]
    fn headers_read_as_they_are_get_unique_batch_names() {
        let mut headers = vec![
            col("Prix", 0, false),
            col("Prix", 1, false),
            col("Qté", 2, false),
        ];
        let (names, sel) = select_columns("f", &mut headers, None).unwrap();
        assert_eq!(names, ["Prix", "Prix (2)", "Qté"]);
        assert_eq!(sel, [Some(0), Some(1), Some(2)]);
        assert_eq!(headers[1].feeds.as_deref(), Some("Prix (2)"));
    }

    #[test]
    fn column_letters() {
        assert_eq!(column_letter(0), "A");
        assert_eq!(column_letter(25), "Z");
        assert_eq!(column_letter(26), "AA");
        assert_eq!(column_letter(701), "ZZ");
        assert_eq!(column_letter(702), "AAA");
        for i in [0, 25, 26, 701, 702, 16_383] {
            assert_eq!(column_index(&column_letter(i)), Some(i));
        }
        assert_eq!(column_index("ab"), Some(27));
        assert_eq!(column_index("XFE"), None);
        assert_eq!(column_index("A1"), None);
        assert_eq!(column_index(""), None);
    }
}
