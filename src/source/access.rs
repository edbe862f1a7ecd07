//! Microsoft Access source (.mdb Jet 3/4, .accdb ACE 12–17), pure Rust
//! through jetdb: no driver on any OS.
//!
//! Rows stream one at a time (jetdb's `TableRows`) into batches; only the
//! mapped columns are decoded. Values become the batch's canonical text:
//! numbers as written by Rust, currency and decimal as jetdb's exact
//! strings, dates as ISO 8601 (Access's OLE dates count from 1899-12-30; a
//! time-only value keeps that day), GUIDs in braces, bytes as hex; all of
//! them flagged as typed, so that no French number rule touches them.
//!
//! jetdb 0.4.0 reads a Text column flagged fixed-length as NULL (found on the
//! corpus: `fixedTextTest*`, table `users`, column `c_flag_`). repaero works
//! around it: when such a column comes back NULL and the row's null mask
//! says it is not, the value is decoded from the row's fixed-length area
//! here. Rows jetdb cannot read are an error, never silently skipped.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;

use jetdb::{
    ColumnDef, ColumnType as JetType, ComplexValues, FileError, ObjectType, PageReader,
    RowPosition, TableDef, Value,
};

use serde::Deserialize;

use super::{
    BadValue, CellKinds, DEFAULT_MAX_CELL_BYTES, DeclaredColumn, ForeignKey, Kind, Message,
    ReadStats, Source, SourceColumn, TableInfo, TableKeys, TableReader, TableRequest, check_size,
    header_key, select_columns,
};
use crate::batch::BatchBuilder;
use crate::config::mapping::ColumnType;
use crate::error::{Error, Result};

/// An opened Access database file.
pub struct AccessSource {
    path: PathBuf,
    password: Option<String>,
    tables: Vec<TableInfo>,
    /// Largest value handed over, in bytes (memo, OLE object…); a row with
    /// a larger one is rejected.
    max_cell: usize,
}

/// A column of an Access table, for `inspect`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccessColumn {
    pub name: String,
    /// The type as Access shows it.
    pub access_type: String,
    /// Declared size in bytes (text: characters × 2).
    pub size: u16,
    pub nullable: bool,
    pub autonumber: bool,
    /// An Access 2010+ calculated column (its value is an expression's
    /// cached result).
    pub calculated: bool,
}

fn file_error(path: &Path, e: FileError) -> Error {
    let name = path.display();
    match e {
        FileError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => Error::input(format!(
            "{name}: cannot open: {io}. Check `path` in the source configuration"
        )),
        FileError::Io(io) => Error::input(format!("{name}: cannot read: {io}")),
        FileError::PasswordRequired => Error::input(format!(
            "{name}: the database is encrypted; set `password = \"${{ACCESS_PASSWORD}}\"` in its [sources.…] and export ACCESS_PASSWORD"
        )),
        FileError::InvalidPassword => Error::input(format!(
            "{name}: wrong password for the encrypted database; check the variable that `password` names"
        )),
        FileError::UnsupportedEncryption { reason } => Error::input(format!(
            "{name}: encrypted in a way repaero cannot read ({reason}); save a decrypted copy from Access"
        )),
        FileError::TableNotFound { name: t } => {
            Error::input(format!("{name}: no table named {t:?}"))
        }
        FileError::Format(f) => Error::input(format!(
            "{name}: not an Access database repaero can read ({f}); expected a .mdb or .accdb file"
        )),
        FileError::FileTooSmall { .. } => Error::input(format!(
            "{name}: not an Access database (the file is too small)"
        )),
        other => Error::input(format!("{name}: damaged Access database: {other}")),
    }
}

/// Run jetdb on untrusted bytes: a panic is an input error, not a crash.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(Error::input(format!(
            "{}: the Access reader gave up on malformed data; run Compact and Repair in Access and try again",
            path.display()
        ))),
    }
}

fn open_reader(path: &Path, password: Option<&str>) -> Result<PageReader> {
    guarded(path, || {
        match password {
            Some(_) => PageReader::open_with_password(path, password),
            None => PageReader::open(path),
        }
        .map_err(|e| file_error(path, e))
    })
}

/// User tables: not system, not hidden, not linked. Access names its
/// system tables MSys…; compact/repair leaves MSysCompactError without the
/// system flag, and it is not user data either.
fn user_tables(catalog: &[jetdb::CatalogEntry]) -> Vec<&jetdb::CatalogEntry> {
    catalog
        .iter()
        .filter(|e| {
            e.object_type == ObjectType::Table
                && !e.is_system_or_hidden()
                && !e.name.starts_with("MSys")
        })
        .collect()
}

impl AccessSource {
    /// Open the database and list its tables with their row counts.
    pub fn open(path: &Path, password: Option<&str>) -> Result<AccessSource> {
        // a file that is there but is not Access: say so, not what jetdb
        // makes of its first page
        if path.is_file() && !super::is_access_file(path) {
            return Err(super::not_access(path));
        }
        let tables = guarded(path, || {
            let mut reader = open_reader(path, password)?;
            let catalog = jetdb::read_catalog(&mut reader).map_err(|e| file_error(path, e))?;
            let mut out = Vec::new();
            for e in user_tables(&catalog) {
                let def = jetdb::read_table_def(&mut reader, &e.name, e.table_page)
                    .map_err(|err| file_error(path, err).context(format!("table {}", e.name)))?;
                out.push(TableInfo {
                    name: e.name.clone(),
                    hidden: false,
                    rows: Some(def.num_rows as u64),
                });
            }
            Ok(out)
        })?;
        Ok(AccessSource {
            path: path.to_path_buf(),
            password: password.map(|s| s.to_string()),
            tables,
            max_cell: DEFAULT_MAX_CELL_BYTES,
        })
    }

    /// Reject rows holding a value larger than `max` bytes.
    pub fn max_cell_bytes(mut self, max: usize) -> Self {
        self.max_cell = max;
        self
    }

    /// The columns of a table as Access declares them.
    pub fn columns(&self, table: &str) -> Result<Vec<AccessColumn>> {
        let path = self.path.clone();
        guarded(&path, || {
            let mut reader = open_reader(&self.path, self.password.as_deref())?;
            let catalog =
                jetdb::read_catalog(&mut reader).map_err(|e| file_error(&self.path, e))?;
            let entry = self.find(&catalog, table)?;
            let def = jetdb::read_table_def(&mut reader, &entry.name, entry.table_page)
                .map_err(|e| file_error(&self.path, e))?;
            Ok(def
                .columns
                .iter()
                .map(|c| AccessColumn {
                    name: c.name.clone(),
                    access_type: type_name(c),
                    size: c.col_size,
                    nullable: c.flags & jetdb::column_flags::NULLABLE != 0,
                    autonumber: c.flags & jetdb::column_flags::AUTO_LONG != 0,
                    calculated: c.is_calculated,
                })
                .collect())
        })
    }

    /// The table's primary key (its primary-key index) and the
    /// relationships (MSysRelationships) in which it is the referencing
    /// table.
    pub fn table_keys(&self, table: &str) -> Result<TableKeys> {
        let path = self.path.clone();
        guarded(&path, || {
            let mut reader = open_reader(&self.path, self.password.as_deref())?;
            let catalog =
                jetdb::read_catalog(&mut reader).map_err(|e| file_error(&self.path, e))?;
            let entry = self.find(&catalog, table)?;
            let def = jetdb::read_table_def(&mut reader, &entry.name, entry.table_page)
                .map_err(|e| file_error(&self.path, e))?;
            let mut keys = TableKeys::default();
            if let Some(pk) = def
                .indexes
                .iter()
                .find(|i| i.index_type == jetdb::index_type::PRIMARY && !i.columns.is_empty())
            {
                let names: Option<Vec<String>> = pk
                    .columns
                    .iter()
                    .map(|ic| {
                        def.columns
                            .iter()
                            .find(|c| c.col_num == ic.col_num)
                            .map(|c| c.name.clone())
                    })
                    .collect();
                if let Some(names) = names {
                    keys.primary = names;
                    keys.primary_name = Some(pk.name.clone());
                }
            }
            let rels = jetdb::read_relationships_in(&mut reader, &catalog)
                .map_err(|e| file_error(&self.path, e).context("MSysRelationships"))?;
            for r in rels.into_iter().filter(|r| r.from_table == entry.name) {
                keys.foreign.push(ForeignKey {
                    name: r.name.clone(),
                    columns: r.columns.iter().map(|c| c.from_column.clone()).collect(),
                    ref_table: r.to_table.clone(),
                    ref_columns: r.columns.iter().map(|c| c.to_column.clone()).collect(),
                    enforced: r.has_referential_integrity(),
                });
            }
            Ok(keys)
        })
    }

    fn find<'a>(
        &self,
        catalog: &'a [jetdb::CatalogEntry],
        table: &str,
    ) -> Result<&'a jetdb::CatalogEntry> {
        let users = user_tables(catalog);
        if let Some(e) = users.iter().find(|e| e.name == table) {
            return Ok(e);
        }
        let hint = users
            .iter()
            .find(|e| header_key(&e.name) == header_key(table))
            .map(|e| format!(" Did you mean {:?}?", e.name))
            .unwrap_or_default();
        let names: Vec<String> = users.iter().map(|e| format!("{:?}", e.name)).collect();
        Err(Error::input(format!(
            "{}: no table named {table:?}. Tables: {}.{hint} Set `table` in the mapping to one of them.",
            self.path.display(),
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        )))
    }
}

/// `[sources.<name>]` with `kind = "access"`: a .mdb (Access 97–2003) or
/// .accdb (2007–2019) file, read without a driver.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// The database file, relative to repaero.toml.
    pub path: PathBuf,
    /// Password of an encrypted .accdb; use `${VAR}`, never a literal.
    pub password: Option<String>,
    /// Largest value handed over, in bytes (default 4 MiB).
    pub max_cell_bytes: Option<usize>,
}

pub const KIND: Kind = Kind {
    name: "access",
    open: |name, settings| {
        let c: AccessConfig = super::settings(name, "access", settings)?;
        Ok(Box::new(
            AccessSource::open(&c.path, c.password.as_deref())?
                .max_cell_bytes(c.max_cell_bytes.unwrap_or(DEFAULT_MAX_CELL_BYTES)),
        ))
    },
    check: |settings| super::read_settings::<AccessConfig>(settings).map(drop),
    open_file: Some(|path| Ok(Box::new(AccessSource::open(path, None)?))),
    sniff: Some(super::is_access_file),
};

impl Source for AccessSource {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn tables(&self) -> Result<Vec<TableInfo>> {
        Ok(self.tables.clone())
    }

    /// Read one table in batches on a reader thread.
    fn read(&self, req: TableRequest) -> Result<TableReader> {
        if !self.tables.iter().any(|t| t.name == req.table) {
            // the same message as the reader would give, before any thread
            let mut reader = open_reader(&self.path, self.password.as_deref())?;
            let catalog =
                jetdb::read_catalog(&mut reader).map_err(|e| file_error(&self.path, e))?;
            self.find(&catalog, &req.table)?;
        }
        let origin = format!("{} › {}", self.path.display(), req.table);
        let estimate = self
            .tables
            .iter()
            .find(|t| t.name == req.table)
            .and_then(|t| t.rows);
        let path = self.path.clone();
        let password = self.password.clone();
        let origin2 = origin.clone();
        let max_cell = self.max_cell;
        TableReader::spawn(origin, estimate, move |tx| {
            guarded(&path.clone(), || {
                read_table(&path, password.as_deref(), &origin2, req, max_cell, tx)
            })
        })
    }

    fn keys(&self, table: &str) -> Result<Option<TableKeys>> {
        self.table_keys(table).map(Some)
    }

    fn declared_columns(&self, table: &str) -> Result<Option<Vec<DeclaredColumn>>> {
        Ok(Some(
            self.columns(table)?
                .into_iter()
                .map(|c| DeclaredColumn {
                    target_type: target_type(&c.access_type),
                    source_type: c.access_type,
                    nullable: c.nullable,
                    name: c.name,
                })
                .collect(),
        ))
    }
}

/// The type name Access shows for a column.
pub fn type_name(c: &ColumnDef) -> String {
    let autonumber = c.flags & jetdb::column_flags::AUTO_LONG != 0;
    match c.col_type {
        JetType::Boolean => "Yes/No".into(),
        JetType::Byte => "Byte".into(),
        JetType::Int => "Integer".into(),
        JetType::Long if autonumber => "AutoNumber".into(),
        JetType::Long => "Long Integer".into(),
        JetType::Money => "Currency".into(),
        JetType::Float => "Single".into(),
        JetType::Double => "Double".into(),
        JetType::Timestamp => "Date/Time".into(),
        JetType::Binary => format!("Binary({})", c.col_size),
        JetType::Text if c.is_fixed => format!("Text({}, fixed)", c.col_size / 2),
        JetType::Text => format!("Text({})", c.col_size / 2),
        JetType::Ole => "OLE Object".into(),
        JetType::Memo => "Memo".into(),
        JetType::Guid => "Replication ID".into(),
        JetType::Numeric => format!("Decimal({},{})", c.precision, c.scale),
        JetType::ComplexType => "Complex (attachment / multi-value)".into(),
        JetType::BigInt => "Large Number".into(),
        JetType::DateTimeExtended => "Date/Time Extended".into(),
        JetType::Unknown(code) => format!("unknown type 0x{code:02x}"),
        other => format!("{other:?}"),
    }
}

/// One decoded value in the row buffer: where its text is and whether it is
/// typed (canonical) text.
type Slot = Option<(usize, usize, bool)>;

/// A slot whose text is the row's own value at the given column index.
const DIRECT: usize = usize::MAX;

fn read_table(
    path: &Path,
    password: Option<&str>,
    origin: &str,
    req: TableRequest,
    max_cell: usize,
    tx: &SyncSender<Message>,
) -> Result<()> {
    let mut reader = open_reader(path, password)?;
    let catalog = jetdb::read_catalog(&mut reader).map_err(|e| file_error(path, e))?;
    let entry = user_tables(&catalog)
        .into_iter()
        .find(|e| e.name == req.table)
        .ok_or_else(|| Error::input(format!("{origin}: no such table")))?
        .clone();
    let def = jetdb::read_table_def(&mut reader, &entry.name, entry.table_page)
        .map_err(|e| file_error(path, e).context(format!("table {}", entry.name)))?;
    let calculated = jetdb::calculated_column_types_in(&catalog, &def);
    let mut headers: Vec<SourceColumn> = def
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| SourceColumn {
            header: c.name.clone(),
            index: i as u32,
            hidden: false,
            feeds: None,
        })
        .collect();
    // which table column feeds each batch column
    let (names, selected) = select_columns(origin, &mut headers, req.columns.as_deref())?;
    // a mapped column must be one jetdb can decode
    if req.columns.is_some() {
        for i in selected.iter().flatten() {
            if let JetType::Unknown(code) = def.columns[*i].col_type {
                return Err(Error::input(format!(
                    "{origin}: column {:?} has type code 0x{code:02x}, which repaero cannot decode; leave it out of the mapping",
                    def.columns[*i].name
                )));
            }
        }
    }
    let mut complex = HashMap::new();
    for i in selected.iter().flatten() {
        let col = &def.columns[*i];
        if col.col_type == JetType::ComplexType
            && let Some(cc) =
                jetdb::read_complex_column(&mut reader, &catalog, &def, col).map_err(|e| {
                    file_error(path, e).context(format!("{origin}, column {}", col.name))
                })?
        {
            complex.insert(*i, cc);
        }
    }
    if tx.send(Message::Columns(headers)).is_err() {
        return Ok(());
    }
    let read_idx: Vec<usize> = selected.iter().flatten().copied().collect();
    let mut rows = jetdb::TableRows::new(&def, &calculated).with_columns(&read_idx);
    let mut builder = BatchBuilder::new(names.clone(), req.batch_size);
    let mut kinds = vec![CellKinds::default(); names.len()];
    let mut text = String::new();
    let mut slots: Vec<Slot> = vec![None; selected.len()];
    let mut n: u64 = 0;
    while let Some(row) = rows
        .next_row(&mut reader)
        .map_err(|e| file_error(path, e).context(origin))?
    {
        n += 1;
        text.clear();
        // the first mapped value that cannot be handed over: the row is
        // rejected for it
        let mut bad: Option<(usize, &str, BadValue)> = None;
        for (slot, sel) in selected.iter().enumerate() {
            slots[slot] = None;
            let Some(i) = sel else {
                kinds[slot].empty += 1;
                continue;
            };
            let col = &def.columns[*i];
            let mut direct = true;
            let mut value = &row.values[*i];
            let repaired;
            if matches!(value, Value::Null) && col.col_type == JetType::Text && col.is_fixed {
                repaired = fixed_text(&mut reader, &def, row.position, col).map_err(|e| {
                    file_error(path, e).context(format!("{origin}, column {}", col.name))
                })?;
                if let Some(s) = repaired.as_ref() {
                    value = s;
                    direct = false;
                }
            }
            let start = text.len();
            // a text value read from the row goes to the batch as it is,
            // without a copy into the row buffer
            if let (true, Value::Text(v)) = (direct, value) {
                match check_size(v.len(), max_cell) {
                    Ok(()) => {
                        kinds[slot].text += 1;
                        slots[slot] = Some((DIRECT, *i, false));
                    }
                    Err(why) => {
                        kinds[slot].error += 1;
                        bad.get_or_insert((slot, col.name.as_str(), why));
                    }
                }
                continue;
            }
            let typed = match value {
                Value::Long(id) if complex.contains_key(i) => {
                    let cc = &complex[i];
                    let vals = cc.values(&mut reader, *id).map_err(|e| {
                        file_error(path, e).context(format!("{origin}, column {}", col.name))
                    })?;
                    let written = write_complex(&mut text, &vals, max_cell)
                        .and_then(|()| check_size(text.len() - start, max_cell));
                    if written.is_ok() {
                        kinds[slot].text += 1;
                    }
                    written.map(|()| Some(false))
                }
                other => write_value(&mut text, other, &mut kinds[slot], max_cell),
            };
            match typed {
                Ok(t) => slots[slot] = t.map(|t| (start, text.len(), t)),
                Err(why) => {
                    text.truncate(start);
                    kinds[slot].error += 1;
                    bad.get_or_insert((slot, col.name.as_str(), why));
                }
            }
        }
        let values = slots.iter().map(|s| {
            s.map(|(a, b, t)| match (a, row.values.get(b)) {
                (DIRECT, Some(Value::Text(v))) => (v.as_str(), t),
                _ => (&text[a..b], t),
            })
        });
        match bad {
            None => builder.push_row(n, values),
            Some((slot, column, why)) => {
                let reason = why.reason(&names[slot]);
                let detail = format!("{origin}, row {n}, column {column}: {}", why.detail());
                builder.push_row_error(n, values, reason, detail);
            }
        }
        if builder.is_full() {
            let df = builder.take()?;
            if tx.send(Message::Batch(df)).is_err() {
                return Ok(());
            }
        }
    }
    if rows.skipped_rows() > 0 {
        return Err(Error::input(format!(
            "{origin}: {} rows could not be read (damaged pages); run Compact and Repair in Access, then migrate again",
            rows.skipped_rows()
        )));
    }
    if !builder.is_empty() {
        let df = builder.take()?;
        if tx.send(Message::Batch(df)).is_err() {
            return Ok(());
        }
    }
    let stats = ReadStats {
        data_rows: n,
        kinds: names.into_iter().zip(kinds).collect(),
        ..Default::default()
    };
    let _ = tx.send(Message::Done(stats));
    Ok(())
}

/// One Access value as the batch text every read hands over: the text and
/// whether it is typed (canonical), `None` for NULL, or why the row holding
/// it is rejected. (The entry point of the Access value fuzz target,
/// tests/fuzz.rs.)
pub fn value_text(v: &Value, max_cell: usize) -> Result<Option<(String, bool)>, BadValue> {
    let mut s = String::new();
    let typed = write_value(&mut s, v, &mut CellKinds::default(), max_cell)?;
    Ok(typed.map(|t| (s, t)))
}

/// Append a value's canonical text; returns whether it is typed, `None`
/// for NULL, or why it cannot be handed over (then nothing is counted and
/// `b` may hold part of it: the caller truncates).
fn write_value(
    b: &mut String,
    v: &Value,
    k: &mut CellKinds,
    max_cell: usize,
) -> Result<Option<bool>, BadValue> {
    let finite = |x: f64| {
        if x.is_finite() {
            Ok(())
        } else {
            Err(BadValue::NotFinite(x))
        }
    };
    match v {
        Value::Null => {
            k.empty += 1;
            return Ok(None);
        }
        Value::Text(s) => {
            check_size(s.len(), max_cell)?;
            k.text += 1;
            b.push_str(s);
            return Ok(Some(false));
        }
        Value::Bool(x) => {
            k.boolean += 1;
            b.push_str(if *x { "true" } else { "false" });
            return Ok(Some(true));
        }
        Value::Byte(x) => b.push_str(itoa::Buffer::new().format(*x)),
        Value::Int(x) => b.push_str(itoa::Buffer::new().format(*x)),
        Value::Long(x) => b.push_str(itoa::Buffer::new().format(*x)),
        Value::BigInt(x) => b.push_str(itoa::Buffer::new().format(*x)),
        Value::Float(x) => {
            finite(*x as f64)?;
            b.push_str(ryu::Buffer::new().format_finite(*x));
        }
        Value::Double(x) => {
            finite(*x)?;
            if x.fract() == 0.0 && x.abs() < 9.0e15 {
                b.push_str(itoa::Buffer::new().format(*x as i64));
            } else {
                b.push_str(ryu::Buffer::new().format_finite(*x));
            }
        }
        Value::Money(s) | Value::Numeric(s) => {
            check_size(s.len(), max_cell)?;
            b.push_str(s);
        }
        Value::Guid(s) => {
            check_size(s.len(), max_cell)?;
            k.text += 1;
            b.push_str(s);
            return Ok(Some(true));
        }
        Value::Timestamp(x) => {
            write_ole_date(b, *x)?;
            k.date += 1;
            return Ok(Some(true));
        }
        Value::DateTimeExtended(s) => {
            check_size(s.len(), max_cell)?;
            k.date += 1;
            b.push_str(s);
            return Ok(Some(true));
        }
        Value::Binary(bytes) => {
            // the cap is on the value, not on its hex text
            check_size(bytes.len(), max_cell)?;
            k.text += 1;
            b.push_str(&hex::encode(bytes));
            return Ok(Some(true));
        }
        // a kind of value a later jetdb may add: its debug form, typed
        other => {
            let _ = write!(b, "{other:?}");
            k.text += 1;
            return Ok(Some(true));
        }
    }
    k.number += 1;
    Ok(Some(true))
}

/// The days Access stores: 100-01-01 (-657,434) to 9999-12-31 (2,958,465
/// and a fraction), counted from 1899-12-30.
const OLE_DAYS: std::ops::Range<f64> = -657_434.0..2_958_466.0;

/// An OLE Automation date (days since 1899-12-30; for negative values the
/// fraction still counts forward from midnight) as ISO 8601 text. A value
/// that is no date (NaN, an infinity, out of Access's years 100 to 9999: a
/// damaged row) is refused, never a panic nor a made-up date.
fn write_ole_date(b: &mut String, v: f64) -> Result<(), BadValue> {
    use chrono::Datelike;
    if !v.is_finite() {
        return Err(BadValue::Date(format!(
            "the Date/Time value is {v:?}, not a number (a damaged row?)"
        )));
    }
    if !OLE_DAYS.contains(&v) {
        return Err(BadValue::Date(format!(
            "the Date/Time value {v:?} (days from 1899-12-30) is outside Access's years 100 to 9999 (a damaged row?)"
        )));
    }
    let days = v.trunc();
    let ms = ((v - days).abs() * 86_400_000.0).round() as i64;
    let Some(dt) = chrono::NaiveDate::from_ymd_opt(1899, 12, 30)
        .zip(chrono::TimeDelta::try_days(days as i64))
        .and_then(|(d, delta)| d.checked_add_signed(delta))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .zip(chrono::TimeDelta::try_milliseconds(ms))
        .and_then(|(d, delta)| d.checked_add_signed(delta))
    else {
        return Err(BadValue::Date(format!(
            "the Date/Time value {v:?} is not a date"
        )));
    };
    // the last millisecond of 9999-12-31 rounds up into the year 10000
    if dt.year() > 9999 {
        return Err(BadValue::Date(format!(
            "the Date/Time value {v:?} rounds past 9999-12-31"
        )));
    }
    // (years 100–9999, checked above; a time whenever the value has a
    // fraction, even one that rounds to the next midnight)
    crate::batch::push_iso_datetime(b, &dt, (ms != 0).then_some('T'));
    Ok(())
}

/// A complex column's values as JSON text: a list of values, of files
/// (`name`, `type`, `data` in base64), or of versions (`modified`, `value`).
/// A value inside that cannot be handed over refuses the whole.
fn write_complex(b: &mut String, vals: &ComplexValues, max_cell: usize) -> Result<(), BadValue> {
    let text = |v: &Value| -> Result<serde_json::Value, BadValue> {
        let mut s = String::new();
        let mut k = CellKinds::default();
        Ok(match write_value(&mut s, v, &mut k, max_cell)? {
            None => serde_json::Value::Null,
            Some(_) => serde_json::Value::String(s),
        })
    };
    let json = match vals {
        ComplexValues::MultiValue(vs) => {
            serde_json::Value::Array(vs.iter().map(text).collect::<Result<_, _>>()?)
        }
        ComplexValues::Attachment(files) => serde_json::Value::Array(
            files
                .iter()
                .map(|f| {
                    let data = match &f.data {
                        Value::Binary(bytes) => {
                            check_size(bytes.len(), max_cell)?;
                            serde_json::Value::String(base64(bytes))
                        }
                        _ => serde_json::Value::Null,
                    };
                    Ok(serde_json::json!({ "name": text(&f.name)?, "type": text(&f.file_type)?, "data": data }))
                })
                .collect::<Result<_, BadValue>>()?,
        ),
        ComplexValues::VersionHistory(versions) => serde_json::Value::Array(
            versions
                .iter()
                .map(|v| Ok(serde_json::json!({ "modified": text(&v.modified)?, "value": text(&v.value)? })))
                .collect::<Result<_, BadValue>>()?,
        ),
        _ => serde_json::Value::Null,
    };
    b.push_str(&json.to_string());
    Ok(())
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | (c as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The value of a fixed-length Text column, read from the row itself
/// (jetdb 0.4.0 returns NULL for such columns). `None` when the row's null
/// mask says the value is NULL.
fn fixed_text(
    reader: &mut PageReader,
    def: &TableDef,
    pos: RowPosition,
    col: &ColumnDef,
) -> std::result::Result<Option<Value>, FileError> {
    let Some(&page_num) = def.data_pages.get(pos.page as usize) else {
        return Ok(None);
    };
    let is_jet3 = reader.header().version.is_jet3();
    let encoding = reader.text_encoding();
    let format = reader.format();
    let page = reader.read_page_copy(page_num)?;
    let (start, size) = jetdb::find_row(format, &page, page_num, pos.row)?;
    let row = &page[start..start + size];
    let cc_size = if is_jet3 { 1 } else { 2 };
    let col_count = if is_jet3 {
        row.first().copied().unwrap_or(0) as usize
    } else {
        u16::from_le_bytes([row[0], row.get(1).copied().unwrap_or(0)]) as usize
    };
    let mask_len = col_count.div_ceil(8);
    let Some(mask) = row.get(row.len().saturating_sub(mask_len)..) else {
        return Ok(None);
    };
    let bit = col.col_num as usize;
    let present = mask
        .get(bit / 8)
        .is_some_and(|byte| byte & (1 << (bit % 8)) != 0);
    if !present {
        return Ok(None);
    }
    let from = cc_size + col.fixed_offset as usize;
    let Some(bytes) = row.get(from..from + col.col_size as usize) else {
        return Ok(None);
    };
    let text = jetdb::encoding::decode_text(bytes, encoding).map_err(FileError::Format)?;
    Ok(Some(Value::Text(text.trim_end_matches('\0').to_string())))
}

/// The target type of an Access column type.
pub fn target_type(type_name: &str) -> ColumnType {
    let t = type_name;
    if t.starts_with("Yes/No") {
        ColumnType::Boolean
    } else if t.starts_with("Byte")
        || t.starts_with("Integer")
        || t.starts_with("Long")
        || t.starts_with("AutoNumber")
        || t.starts_with("Large")
    {
        ColumnType::Integer
    } else if t.starts_with("Currency") || t.starts_with("Decimal") {
        ColumnType::Decimal
    } else if t.starts_with("Single") || t.starts_with("Double") {
        ColumnType::Float
    } else if t.starts_with("Date/Time") {
        ColumnType::Datetime
    } else if t.starts_with("Binary") || t.starts_with("OLE") || t.starts_with("unknown") {
        ColumnType::Binary
    } else {
        ColumnType::Text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ole_dates() {
        let t = |v: f64| {
            let mut s = String::new();
            match write_ole_date(&mut s, v) {
                Ok(()) => s,
                Err(e) => format!("bad: {}", e.detail()),
            }
        };
        assert_eq!(t(45000.0), "2023-03-15");
        assert_eq!(t(45000.5), "2023-03-15T12:00:00");
        assert_eq!(t(0.375), "1899-12-30T09:00:00");
        assert_eq!(t(2.0), "1900-01-01");
        // OLE: -1.25 is 1899-12-29 06:00 (the fraction counts forward)
        assert_eq!(t(-1.25), "1899-12-29T06:00:00");
        assert_eq!(t(-657_434.0), "0100-01-01");
        assert_eq!(t(2_958_465.5), "9999-12-31T12:00:00");
        assert_eq!(
            t(45000.0 + 3_723_007.0 / 86_400_000.0),
            "2023-03-15T01:02:03.007"
        );
        // a fraction that rounds to the next midnight still shows a time
        assert_eq!(t(45_000.999_999_999_9), "2023-03-16T00:00:00");
        // found by the fuzz target: 23:59:59.9999996 rounds to the year 10000
        assert!(t(2_958_465.999_999_995).starts_with("bad: "));
        // a damaged row: said, never a panic (TimeDelta::days out of
        // bounds) nor 1899-12-30 for NaN
        for v in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1.3e308,
            -4e18,
            2_958_466.0,
        ] {
            assert!(
                t(v).starts_with("bad: the Date/Time value"),
                "{v}: {}",
                t(v)
            );
        }
    }

    #[test]
    fn values_above_the_cap_or_not_numbers_are_refused() {
        let max = 8;
        assert_eq!(
            value_text(&Value::Text("12345678".into()), max),
            Ok(Some(("12345678".into(), false)))
        );
        assert_eq!(
            value_text(&Value::Text("123456789".into()), max),
            Err(BadValue::TooLarge { bytes: 9, max })
        );
        // the cap counts an OLE object's bytes, not its hex text
        assert_eq!(
            value_text(&Value::Binary(vec![0xab; 8]), max),
            Ok(Some(("ab".repeat(8), true)))
        );
        assert_eq!(
            value_text(&Value::Binary(vec![0; 9]), max),
            Err(BadValue::TooLarge { bytes: 9, max })
        );
        assert_eq!(
            value_text(&Value::Double(f64::NAN), max).map_err(|e| e.reason("x")),
            Err("x: not a number".into())
        );
        assert_eq!(
            value_text(&Value::Timestamp(f64::NAN), max).map_err(|e| e.reason("d")),
            Err("d: not a date".into())
        );
        assert_eq!(value_text(&Value::Null, max), Ok(None));
        assert_eq!(
            value_text(&Value::Double(45000.0), max),
            Ok(Some(("45000".into(), true)))
        );
    }

    #[test]
    fn base64_encoding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
