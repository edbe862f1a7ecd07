//! CSV files (supplier catalogues, barcode tables, scanner exports).
//!
//! A source is a directory (or one file); a mapping's `table` names a file
//! or a pattern (`catalogue_*.csv`), whose files are read one after the
//! other. Each file is read line by line, never whole, and no line is held
//! past [`MAX_LINE`] bytes: a longer one is skipped to its end and
//! rejected. The delimiter (`;`, `,` or tab) is found on the header line
//! unless given; the encoding is found per file (UTF-8, a BOM dropped, or
//! else Windows-1252) unless the source says `utf-8`, `windows-1252` or
//! `latin-1`. One record per line: a quoted
//! field may hold the delimiter and `""`, not a line break. A line that is
//! not in the encoding, has the wrong number of fields, or is the file's
//! last and has no end of line (a truncated export) is rejected with that
//! reason; the reading goes on.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;

use serde::Deserialize;

use super::{
    CellKinds, DEFAULT_MAX_CELL_BYTES, Kind, Message, ReadStats, Source, SourceColumn, TableInfo,
    TableReader, TableRequest, check_size, select_columns,
};
use crate::batch::BatchBuilder;
use crate::error::{Error, Result};

/// Longest line kept, in bytes.
pub const MAX_LINE: usize = 64 * 1024;

/// Text encodings of CSV files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// UTF-8 when the file's start reads as UTF-8, else Windows-1252 (what
    /// Excel writes in France).
    #[default]
    Auto,
    #[serde(alias = "utf8")]
    Utf8,
    #[serde(alias = "cp1252")]
    Windows1252,
    #[serde(alias = "iso-8859-1", alias = "latin1")]
    Latin1,
}

/// Windows-1252's characters for bytes 0x80–0x9F (the rest is Latin-1).
const CP1252: [char; 32] = [
    '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž', '\u{8f}',
    '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}', 'ž', 'Ÿ',
];

/// Decode a line; `Err` says where it is not UTF-8.
pub fn decode(bytes: &[u8], enc: Encoding) -> std::result::Result<Cow<'_, str>, String> {
    match enc {
        Encoding::Utf8 | Encoding::Auto => {
            std::str::from_utf8(bytes).map(Cow::Borrowed).map_err(|e| {
                let at = e.valid_up_to();
                format!(
                    "not UTF-8: byte 0x{:02x} at column {}",
                    bytes.get(at).copied().unwrap_or(0),
                    at + 1
                )
            })
        }
        Encoding::Latin1 => Ok(Cow::Owned(bytes.iter().map(|&b| b as char).collect())),
        Encoding::Windows1252 => Ok(Cow::Owned(
            bytes
                .iter()
                .map(|&b| match b {
                    0x80..=0x9f => CP1252[(b - 0x80) as usize],
                    _ => b as char,
                })
                .collect(),
        )),
    }
}

/// The encoding of a file read as `Auto`: Windows-1252 when its first
/// 64 KiB are not UTF-8 (a sequence cut at the end of the sample aside).
pub fn sniff(path: &Path) -> Encoding {
    use std::io::Read;
    let mut sample = vec![0u8; 64 * 1024];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut sample))
        .unwrap_or(0);
    match std::str::from_utf8(&sample[..n]) {
        Err(e) if e.error_len().is_some() => Encoding::Windows1252,
        _ => Encoding::Utf8,
    }
}

/// One physical line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// 1-based line number in the file.
    pub number: u64,
    /// Its length in bytes (all of it, when it was too long to keep).
    pub length: usize,
    /// Longer than the limit: its bytes were not kept.
    pub too_long: bool,
    /// Ended by a line feed (false only for a file's last line).
    pub terminated: bool,
}

/// What a data line holds, once read.
#[derive(Debug, PartialEq)]
pub enum LineContent<'a> {
    Text(Cow<'a, str>),
    /// Only spaces: not a record, not counted.
    Blank,
    /// Cannot be a record: too long, cut short, or not in its encoding.
    Rejected {
        reason: String,
        detail: String,
    },
}

/// Reads lines of at most `max` bytes from a stream; CR before LF dropped.
pub struct LineReader<R> {
    inner: BufReader<R>,
    max: usize,
    number: u64,
}

impl<R: Read> LineReader<R> {
    pub fn new(inner: R, max: usize) -> LineReader<R> {
        LineReader {
            inner: BufReader::with_capacity(64 * 1024, inner),
            max,
            number: 0,
        }
    }

    /// The header of a delimited file: its first non-empty line, without
    /// a byte-order mark, split on `delimiter` or on the one it shows.
    /// `file` names the file in errors.
    pub fn header(
        &mut self,
        buf: &mut Vec<u8>,
        file: &str,
        encoding: Encoding,
        delimiter: Option<char>,
    ) -> Result<(Vec<String>, char)> {
        loop {
            let Some(line) = self
                .next_line(buf)
                .map_err(|e| Error::input(format!("{file}: {e}")))?
            else {
                return Err(Error::input(format!("{file}: empty file, no header")));
            };
            if line.too_long {
                return Err(Error::input(format!(
                    "{file}, line {}: header longer than {} bytes",
                    line.number, self.max
                )));
            }
            let bytes = buf.strip_prefix(b"\xef\xbb\xbf").unwrap_or(buf);
            let text = decode(bytes, encoding)
                .map_err(|e| Error::input(format!("{file}, line {}: header {e}", line.number)))?;
            if text.trim().is_empty() {
                continue;
            }
            let delim = delimiter.unwrap_or_else(|| detect_delimiter(&text));
            return Ok((split_record(&text, delim), delim));
        }
    }

    /// What `line`, just read into `buf`, holds.
    pub fn content<'a>(&self, line: &Line, buf: &'a [u8], encoding: Encoding) -> LineContent<'a> {
        if line.too_long {
            LineContent::Rejected {
                reason: format!("line: longer than {} bytes", self.max),
                detail: format!("{} bytes", line.length),
            }
        } else if !line.terminated {
            LineContent::Rejected {
                reason: "line: truncated (no end of line)".into(),
                detail: format!("the file ends inside this line: {}", shown(buf)),
            }
        } else {
            match decode(buf, encoding) {
                Err(e) => LineContent::Rejected {
                    reason: "line: not UTF-8".into(),
                    detail: format!("{e}: {}", shown(buf)),
                },
                Ok(text) if text.trim().is_empty() => LineContent::Blank,
                Ok(text) => LineContent::Text(text),
            }
        }
    }

    /// The next line into `buf` (cleared first); `None` at the end.
    pub fn next_line(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Option<Line>> {
        buf.clear();
        let mut length = 0usize;
        let mut too_long = false;
        loop {
            let available = self.inner.fill_buf()?;
            if available.is_empty() {
                if length == 0 {
                    return Ok(None);
                }
                self.number += 1;
                return Ok(Some(Line {
                    number: self.number,
                    length,
                    too_long,
                    terminated: false,
                }));
            }
            let (chunk, found) = match available.iter().position(|b| *b == b'\n') {
                Some(i) => (&available[..i], Some(i)),
                None => (available, None),
            };
            length += chunk.len();
            if !too_long {
                if buf.len() + chunk.len() > self.max {
                    too_long = true;
                    buf.clear();
                } else {
                    buf.extend_from_slice(chunk);
                }
            }
            let consumed = chunk.len() + usize::from(found.is_some());
            self.inner.consume(consumed);
            if found.is_some() {
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                self.number += 1;
                return Ok(Some(Line {
                    number: self.number,
                    length,
                    too_long,
                    terminated: true,
                }));
            }
        }
    }
}

/// The delimiter of a header line: the most frequent of `;`, `,` and tab
/// outside quotes (`;` on a tie: French exports).
pub fn detect_delimiter(header: &str) -> char {
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for c in header.chars() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => counts[0] += 1,
            ',' if !quoted => counts[1] += 1,
            '\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let best = (0..3).max_by_key(|&i| (counts[i], 2 - i)).unwrap_or(0);
    [';', ',', '\t'][best]
}

/// Split a line into fields; quoted fields may hold the delimiter and `""`.
pub fn split_record(line: &str, delim: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        if c == '"' && at_start {
            quoted = true;
            at_start = false;
            continue;
        }
        if c == delim {
            out.push(std::mem::take(&mut field));
            at_start = true;
            continue;
        }
        at_start = false;
        field.push(c);
    }
    out.push(field);
    out
}

/// The line as shown in a reject's detail (at most 200 characters).
pub fn shown(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut out: String = s.chars().take(200).collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// Files of `dir` whose name matches `pattern` (`*` any run of characters,
/// `?` one), sorted by name.
pub fn matching_files(dir: &Path, pattern: &str) -> Result<Vec<PathBuf>> {
    fn matches(p: &[char], s: &[char]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some('*'), _) => matches(&p[1..], s) || (!s.is_empty() && matches(p, &s[1..])),
            (Some('?'), Some(_)) => matches(&p[1..], &s[1..]),
            (Some(a), Some(b)) => a == b && matches(&p[1..], &s[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::input(format!("{}: cannot list: {e}", dir.display())))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|path| {
            path.is_file()
                && path
                    .file_name()
                    .map(|n| matches(&p, &n.to_string_lossy().chars().collect::<Vec<_>>()))
                    .unwrap_or(false)
        })
        .collect();
    out.sort();
    Ok(out)
}

pub struct CsvSource {
    /// The folder or file given.
    path: PathBuf,
    /// The directory the tables are files of.
    dir: PathBuf,
    /// The source was one file: its name is its only table.
    single: Option<String>,
    delimiter: Option<char>,
    encoding: Encoding,
    /// Largest field handed over, in bytes (a line is capped at
    /// [`MAX_LINE`] anyway); a row with a larger one is rejected.
    max_cell: usize,
}

impl CsvSource {
    /// Reject rows holding a field larger than `max` bytes.
    pub fn max_cell_bytes(mut self, max: usize) -> Self {
        self.max_cell = max;
        self
    }

    pub fn open(path: &Path, delimiter: Option<char>, encoding: Encoding) -> Result<CsvSource> {
        if path.is_dir() {
            return Ok(CsvSource {
                path: path.to_path_buf(),
                dir: path.to_path_buf(),
                single: None,
                delimiter,
                encoding,
                max_cell: DEFAULT_MAX_CELL_BYTES,
            });
        }
        if !path.is_file() {
            return Err(Error::input(format!(
                "{}: no such file or directory",
                path.display()
            )));
        }
        Ok(CsvSource {
            path: path.to_path_buf(),
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            single: path.file_name().map(|n| n.to_string_lossy().into_owned()),
            delimiter,
            encoding,
            max_cell: DEFAULT_MAX_CELL_BYTES,
        })
    }
}

/// `[sources.<name>]` with `kind = "csv"`: a folder (its files are the
/// tables) or one file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvConfig {
    /// The folder or file, relative to repaero.toml.
    pub path: PathBuf,
    /// The field delimiter (found on the header line when absent).
    pub delimiter: Option<char>,
    /// `auto` (default: UTF-8, else Windows-1252, per file), `utf-8`,
    /// `windows-1252` or `latin-1`.
    #[serde(default)]
    pub encoding: Encoding,
    /// Largest field handed over, in bytes (default 4 MiB).
    pub max_cell_bytes: Option<usize>,
}

pub const KIND: Kind = Kind {
    name: "csv",
    open: |name, settings| {
        let c: CsvConfig = super::settings(name, "csv", settings)?;
        Ok(Box::new(
            CsvSource::open(&c.path, c.delimiter, c.encoding)?
                .max_cell_bytes(c.max_cell_bytes.unwrap_or(DEFAULT_MAX_CELL_BYTES)),
        ))
    },
    check: |settings| super::read_settings::<CsvConfig>(settings).map(drop),
    open_file: None,
    sniff: None,
};

impl Source for CsvSource {
    fn describe(&self) -> String {
        match &self.single {
            Some(f) => self.dir.join(f).display().to_string(),
            None => self.dir.display().to_string(),
        }
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn tables(&self) -> Result<Vec<TableInfo>> {
        let files = match &self.single {
            Some(f) => vec![self.dir.join(f)],
            None => matching_files(&self.dir, "*")?,
        };
        Ok(files
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .map(|name| TableInfo {
                name,
                hidden: false,
                rows: None,
            })
            .collect())
    }

    fn read(&self, req: TableRequest) -> Result<TableReader> {
        let files = match &self.single {
            Some(f) if req.table == *f || req.table == "*" => vec![self.dir.join(f)],
            Some(f) => {
                return Err(Error::input(format!(
                    "{}: this source is the file {f}; the mapping asks for {:?}",
                    self.describe(),
                    req.table
                )));
            }
            None => matching_files(&self.dir, &req.table)?,
        };
        if files.is_empty() {
            return Err(Error::input(format!(
                "{}: no file matches {:?}",
                self.dir.display(),
                req.table
            )));
        }
        let origin = format!("{} › {}", self.dir.display(), req.table);
        let (delimiter, encoding, max_cell) = (self.delimiter, self.encoding, self.max_cell);
        let origin2 = origin.clone();
        TableReader::spawn(origin, None, move |tx| {
            read_files(&files, &origin2, delimiter, encoding, req, max_cell, tx)
        })
    }
}

/// Read files one after the other as one table (same header expected).
fn read_files(
    files: &[PathBuf],
    origin: &str,
    delimiter: Option<char>,
    encoding: Encoding,
    req: TableRequest,
    max_cell: usize,
    tx: &SyncSender<Message>,
) -> Result<()> {
    let mut builder: Option<BatchBuilder> = None;
    let mut kinds: Vec<CellKinds> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut n: u64 = 0;
    let mut buf = Vec::new();
    for path in files {
        let fname = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = std::fs::File::open(path)
            .map_err(|e| Error::input(format!("{}: cannot open: {e}", path.display())))?;
        let encoding = match encoding {
            Encoding::Auto => sniff(path),
            e => e,
        };
        let mut lines = LineReader::new(file, MAX_LINE);
        let (header, delim) =
            lines.header(&mut buf, &path.display().to_string(), encoding, delimiter)?;
        let mut headers: Vec<SourceColumn> = header
            .iter()
            .enumerate()
            .map(|(i, h)| SourceColumn {
                header: h.trim().to_string(),
                index: i as u32,
                hidden: false,
                feeds: None,
            })
            .collect();
        let (file_names, selected) = select_columns(
            &format!("{origin} ({fname})"),
            &mut headers,
            req.columns.as_deref(),
        )?;
        if builder.is_none() {
            if tx.send(Message::Columns(headers.clone())).is_err() {
                return Ok(());
            }
            names = file_names;
            kinds = vec![CellKinds::default(); names.len()];
            builder = Some(BatchBuilder::new(names.clone(), req.batch_size));
        }
        let Some(b) = builder.as_mut() else {
            return Ok(());
        };
        while let Some(line) = lines
            .next_line(&mut buf)
            .map_err(|e| Error::input(format!("{}: {e}", path.display())))?
        {
            n += 1;
            let at = format!("{fname}, line {}", line.number);
            match lines.content(&line, &buf, encoding) {
                LineContent::Rejected { reason, detail } => {
                    b.push_error(n, reason, format!("{at}: {detail}"))
                }
                LineContent::Blank => {
                    n -= 1;
                    continue;
                }
                LineContent::Text(text) => {
                    let fields = split_record(&text, delim);
                    if fields.len() != header.len() {
                        b.push_error(
                            n,
                            "line: wrong number of fields".into(),
                            format!(
                                "{at}: {} fields, the header has {}: {}",
                                fields.len(),
                                header.len(),
                                shown(&buf)
                            ),
                        );
                    } else if let Some((slot, i, why)) =
                        selected.iter().enumerate().find_map(|(slot, s)| {
                            let i = (*s)?;
                            let len = fields.get(i)?.len();
                            check_size(len, max_cell).err().map(|why| (slot, i, why))
                        })
                    {
                        b.push_row_error(
                            n,
                            selected.iter().enumerate().map(|(k, s)| {
                                s.filter(|_| k != slot)
                                    .and_then(|j| fields.get(j))
                                    .map(|v| (v.as_str(), false))
                            }),
                            why.reason(&names[slot]),
                            format!(
                                "{at}, field {} ({:?}): {}",
                                i + 1,
                                header.get(i).map(String::as_str).unwrap_or(""),
                                why.detail()
                            ),
                        );
                    } else {
                        for (slot, s) in selected.iter().enumerate() {
                            match s
                                .and_then(|i| fields.get(i))
                                .filter(|v| !v.trim().is_empty())
                            {
                                None => kinds[slot].empty += 1,
                                Some(_) => kinds[slot].text += 1,
                            }
                        }
                        b.push_row(
                            n,
                            selected.iter().map(|s| {
                                s.and_then(|i| fields.get(i)).map(|v| (v.as_str(), false))
                            }),
                        );
                    }
                }
            }
            if b.is_full() {
                let df = b.take()?;
                if tx.send(Message::Batch(df)).is_err() {
                    return Ok(());
                }
            }
        }
    }
    if let Some(b) = builder.as_mut()
        && !b.is_empty()
    {
        let df = b.take()?;
        if tx.send(Message::Batch(df)).is_err() {
            return Ok(());
        }
    }
    let _ = tx.send(Message::Done(ReadStats {
        header_row: 1,
        data_rows: n,
        kinds: names.into_iter().zip(kinds).collect(),
        ..Default::default()
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(data: &[u8], max: usize) -> Vec<(Line, Vec<u8>)> {
        let mut r = LineReader::new(data, max);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(l) = r.next_line(&mut buf).unwrap() {
            out.push((l, buf.clone()));
        }
        out
    }

    #[test]
    fn lines_are_capped_and_a_last_line_without_end_is_marked() {
        let long = [b'x'; 50];
        let mut data = b"a;b\r\n".to_vec();
        data.extend_from_slice(&long);
        data.extend_from_slice(b"\nlast");
        let got = lines(&data, 10);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].1, b"a;b");
        assert_eq!(
            got[1].0,
            Line {
                number: 2,
                length: 50,
                too_long: true,
                terminated: true
            }
        );
        assert!(got[1].1.is_empty(), "a long line is not kept");
        assert!(!got[2].0.terminated);
        assert_eq!(got[2].1, b"last");
    }

    #[test]
    fn header_then_what_each_line_holds() {
        let mut data = b"\xef\xbb\xbf\r\nref,qty\r\n   \nA,1\n\xff,2\n".to_vec();
        data.extend_from_slice(&[b'x'; 20]);
        data.extend_from_slice(b"\nB,");
        let mut r = LineReader::new(&data[..], 10);
        let mut buf = Vec::new();
        let header = r.header(&mut buf, "f.csv", Encoding::Utf8, None).unwrap();
        assert_eq!(header, (vec!["ref".to_string(), "qty".to_string()], ','));
        let mut got = Vec::new();
        while let Some(line) = r.next_line(&mut buf).unwrap() {
            got.push(match r.content(&line, &buf, Encoding::Utf8) {
                LineContent::Text(t) => format!("text {t}"),
                LineContent::Blank => "blank".into(),
                LineContent::Rejected { reason, detail } => format!("{reason} / {detail}"),
            });
        }
        assert_eq!(
            got,
            [
                "blank",
                "text A,1",
                "line: not UTF-8 / not UTF-8: byte 0xff at column 1: \u{fffd},2",
                "line: longer than 10 bytes / 20 bytes",
                "line: truncated (no end of line) / the file ends inside this line: B,",
            ]
        );
        let long = [b'y'; 20];
        let err = LineReader::new(&long[..], 10)
            .header(&mut buf, "g.csv", Encoding::Utf8, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("g.csv, line 1: header longer than 10 bytes"),
            "{err}"
        );
    }

    #[test]
    fn delimiters_quotes_and_encodings() {
        assert_eq!(detect_delimiter("ref;désignation;prix"), ';');
        assert_eq!(detect_delimiter("ref,\"a;b\",prix"), ',');
        assert_eq!(detect_delimiter("ref\tdes"), '\t');
        assert_eq!(
            split_record("HYD-2040;\"Joint; torique \"\"HP\"\"\";12,50", ';'),
            vec!["HYD-2040", "Joint; torique \"HP\"", "12,50"]
        );
        assert_eq!(split_record("a;;", ';'), vec!["a", "", ""]);
        assert_eq!(decode(b"caf\xe9", Encoding::Latin1).unwrap(), "café");
        assert_eq!(decode(b"\x80 \x9c", Encoding::Windows1252).unwrap(), "€ œ");
        assert_eq!(
            decode(b"caf\xe9", Encoding::Utf8).unwrap_err(),
            "not UTF-8: byte 0xe9 at column 4"
        );
    }

    #[test]
    fn file_patterns() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["cat_parker.csv", "cat_safran.csv", "notes.txt"] {
            std::fs::write(dir.path().join(f), "a\n").unwrap();
        }
        let names: Vec<String> = matching_files(dir.path(), "cat_*.csv")
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["cat_parker.csv", "cat_safran.csv"]);
    }
}
