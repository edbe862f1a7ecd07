//! `mappings/<name>.toml`: how one source table or sheet becomes one target
//! table: which source columns, their types, cleaning, reject rules and
//! deduplication.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// One mapping file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// Where to read in the source.
    pub source: SourceSpec,
    /// Where to write in the target.
    pub target: TargetSpec,
    /// The target columns, in order.
    pub columns: Vec<ColumnSpec>,
    /// Optional deduplication.
    pub dedupe: Option<DedupeSpec>,
    /// Rules across columns of one row.
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
    /// The file it came from (not a key).
    #[serde(skip)]
    pub file: String,
}

/// `[source]` of a mapping.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Sheet name (Excel). Chosen by name, never by position.
    pub sheet: Option<String>,
    /// Table name (Access, databases).
    pub table: Option<String>,
    /// A query to read instead of a table (PostgreSQL). Name the table too:
    /// it says what the rows are in messages.
    pub query: Option<String>,
    /// 1-based row of the header; detected from the column names when
    /// absent; 0 when the sheet has none: every row is data and `from`
    /// names each column by its letter (`"A"`).
    pub header_row: Option<u32>,
    /// How many rows to look through when detecting the header (default 30).
    pub header_scan_rows: Option<u32>,
    /// Case-insensitive regular expression; a row whose first non-empty cell
    /// matches it is a footer (e.g. a TOTAL line), not data.
    pub footer: Option<String>,
}

/// `[target]` of a mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Target table name.
    pub table: String,
    /// Primary key columns (target names).
    #[serde(default)]
    pub key: Vec<String>,
    /// How the table is loaded; the job may override it.
    #[serde(default)]
    pub mode: Mode,
    /// `incremental`: the column (a target column name) whose value grows
    /// when a source row changes (`updated_at`); only rows above the last
    /// run's highest value are read.
    pub update_key: Option<String>,
    /// `incremental`: what becomes of target rows whose key is no longer in
    /// the source: kept (`none`, default), deleted (`hard`), or stamped in
    /// `soft_delete_column` (`soft`).
    #[serde(default)]
    pub deletes: Deletes,
    /// Column stamped with the time a row vanished from the source
    /// (default `deleted_at`).
    pub soft_delete_column: Option<String>,
    /// `snapshot`: column holding the run's time on each copy of the
    /// source (default `snapshot_at`).
    pub snapshot_column: Option<String>,
    /// `replace`: a source that yields no row at all empties the table
    /// only when this is true; otherwise the job fails and nothing is
    /// committed (a workbook saved with its headers but no rows).
    #[serde(default)]
    pub allow_empty: bool,
}

/// How a table is loaded (the mapping's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The whole source replaces the table, swapped in in one transaction.
    #[default]
    #[serde(alias = "full")]
    Replace,
    /// Every source row is inserted or updated on the key.
    Upsert,
    /// Every source row is inserted.
    Append,
    /// Only the rows changed since the last run (by `update_key`) are read
    /// and upserted; the watermark is kept in the target's `_repaero_state`.
    Incremental,
    /// Every source row is appended with the run's time in
    /// `snapshot_column`: a history of the source, one copy per run.
    Snapshot,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Replace => "replace",
            Mode::Upsert => "upsert",
            Mode::Append => "append",
            Mode::Incremental => "incremental",
            Mode::Snapshot => "snapshot",
        }
    }

    /// What the sink does with the rows.
    pub fn write_mode(self) -> WriteMode {
        match self {
            Mode::Replace => WriteMode::Replace,
            Mode::Upsert | Mode::Incremental => WriteMode::Upsert,
            Mode::Append | Mode::Snapshot => WriteMode::Append,
        }
    }
}

/// What an incremental sync does with rows gone from the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Deletes {
    #[default]
    None,
    Hard,
    Soft,
}

/// How a sink writes a table's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// Load into a new table, then swap it in, in one transaction.
    #[default]
    Replace,
    /// Insert or update on the key.
    Upsert,
    /// Insert only.
    Append,
}

impl WriteMode {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteMode::Replace => "replace",
            WriteMode::Upsert => "upsert",
            WriteMode::Append => "append",
        }
    }
}

/// A target column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Text,
    Integer,
    /// Exact decimal with `precision` and `scale` (money).
    Decimal,
    Float,
    Boolean,
    Date,
    Datetime,
    /// Time of day.
    Time,
    /// Bytes (OLE objects, attachments).
    Binary,
}

impl ColumnType {
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Integer => "integer",
            ColumnType::Decimal => "decimal",
            ColumnType::Float => "float",
            ColumnType::Boolean => "boolean",
            ColumnType::Date => "date",
            ColumnType::Datetime => "datetime",
            ColumnType::Time => "time",
            ColumnType::Binary => "binary",
        }
    }
}

/// Text case folding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Case {
    Upper,
    Lower,
    Title,
}

/// How numbers are written in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NumberFormat {
    /// French (`1 234,56`) or English (`1,234.56`), decided per value.
    #[default]
    Auto,
    /// `1 234,56`, `12,50 €`: comma decimal, space/dot thousands.
    Fr,
    /// `1,234.56`: dot decimal, comma thousands.
    En,
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// A reference rule: the value must exist in `table.column` of the target
/// (a table written earlier in the same job, or already there).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub table: String,
    pub column: String,
}

/// `[[columns]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Target column name.
    pub name: String,
    /// Source header text(s) that feed this column; the first found wins.
    /// Defaults to `name`. Matching ignores case, accents and spacing. A
    /// header in several visible columns is named by its rank among them:
    /// `"Charge (2)"`.
    pub from: Option<OneOrMany>,
    /// Target type.
    #[serde(rename = "type", default = "default_type")]
    pub ty: ColumnType,
    /// Decimal precision (total digits), default 18.
    pub precision: Option<u8>,
    /// Decimal scale (digits after the point), default 2.
    pub scale: Option<u8>,
    /// Text: the longest value, in characters. Oracle stores text in
    /// VARCHAR2(n CHAR) (4000 when not given) and in a CLOB above 4000;
    /// other targets ignore it.
    pub length: Option<u32>,
    /// Trim whitespace, including non-breaking spaces (default true).
    #[serde(default = "yes")]
    pub trim: bool,
    /// Collapse inner runs of whitespace into one space (default true).
    #[serde(default = "yes")]
    pub collapse_spaces: bool,
    /// Case folding.
    pub case: Option<Case>,
    /// Source values that mean "empty" (compared after cleaning, ignoring case).
    #[serde(default)]
    pub null_values: Vec<String>,
    /// Fill an empty cell with the value above it (vertically merged cells).
    #[serde(default)]
    pub fill_down: bool,
    /// The source column may be missing: the column is then NULL.
    #[serde(default)]
    pub optional: bool,
    /// Number format for numeric types.
    #[serde(default)]
    pub number_format: NumberFormat,
    /// Date formats (chrono `strftime`), tried before the built-in ones
    /// (Excel serial, `dd/mm/yyyy`, ISO 8601).
    #[serde(default)]
    pub date_formats: Vec<String>,
    /// Reject rule: the value must be present.
    #[serde(default)]
    pub required: bool,
    /// Reject rule: lowest accepted value (numbers; dates as ISO text).
    pub min: Option<toml::Value>,
    /// Reject rule: highest accepted value.
    pub max: Option<toml::Value>,
    /// Reject rule: regular expression the whole text must match.
    pub pattern: Option<String>,
    /// Reject rule: accepted values.
    pub one_of: Option<Vec<String>>,
    /// Reject rule: the value must exist in another table.
    pub references: Option<Reference>,
    /// What a failed rule (pattern, one_of, min/max, references, phone)
    /// does: `reject` the row (default), or `flag` it: the row is kept and
    /// the boolean column `<name>_valid` says false.
    #[serde(default)]
    pub on_invalid: OnInvalid,
    /// Left-pad a value made only of digits with zeros to this width
    /// (postal codes that lost their leading zero).
    pub zero_pad: Option<u8>,
    /// Normalise a phone number to E.164 (`fr`: +33…); a value that does not
    /// parse fails the rule.
    pub phone: Option<PhoneFormat>,
    /// Reject rule: the text is an EAN-13 barcode (13 digits, valid check digit).
    #[serde(default)]
    pub ean13: bool,
    /// Replace the value by the one a dedupe of another table merged it into:
    /// `"clients.id"` (the clients mapping's `[dedupe] id = "id"`).
    pub remap: Option<String>,
}

/// What a failed rule does to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnInvalid {
    #[default]
    Reject,
    Flag,
}

/// Phone number conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhoneFormat {
    /// French numbers: 0X XX XX XX XX, +33 (0)X…, 0033…, 9 digits that lost
    /// their leading 0.
    Fr,
}

/// `[[checks]]`: a comparison between two columns of one row, after typing;
/// skipped when either is NULL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    pub left: String,
    /// `<`, `<=`, `>`, `>=`, `=`, `!=`
    pub op: String,
    pub right: String,
    /// The reject reason.
    pub reason: String,
    /// Keep a failing row and write the verdict in this boolean column
    /// instead (true: holds, false: fails, NULL: not checked).
    pub flag: Option<String>,
}

fn default_type() -> ColumnType {
    ColumnType::Text
}

fn yes() -> bool {
    true
}

impl ColumnSpec {
    /// Header texts this column may come from.
    pub fn sources(&self) -> Vec<String> {
        match &self.from {
            Some(f) => f.to_vec(),
            None => vec![self.name.clone()],
        }
    }

    pub fn scale(&self) -> u8 {
        self.scale.unwrap_or(2)
    }

    pub fn precision(&self) -> u8 {
        self.precision.unwrap_or(18)
    }

    /// Whether this column's failed rules only flag the row.
    pub fn flag_only(&self) -> bool {
        self.on_invalid == OnInvalid::Flag
    }

    /// Name of the validity column a flagging column adds.
    pub fn valid_column(&self) -> String {
        format!("{}_valid", self.name)
    }
}

/// How to merge one column when rows are deduplicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Merge {
    /// Keep the value of the first row (in source order).
    #[default]
    First,
    /// Keep the value of the last row.
    Last,
    /// Add the values (numbers).
    Sum,
    /// Keep the largest value.
    Max,
    /// Keep the smallest value.
    Min,
}

/// `[dedupe]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupeSpec {
    /// Key columns (target names). `["*"]` means the whole row: exact
    /// duplicates only. Defaults to the target key.
    #[serde(default)]
    pub key: Vec<String>,
    /// Merge rule per column; columns not named use `first`.
    #[serde(default)]
    pub merge: BTreeMap<String, Merge>,
    /// `fold`: compare keys without accents, case or any whitespace
    /// (`Léa.Müller@X.fr ` = `lea.muller@x.fr`).
    pub normalize: Option<KeyNormalize>,
    /// Rows whose key fails its column's rules (a flagged invalid email) are
    /// never merged.
    #[serde(default)]
    pub skip_invalid: bool,
    /// Identity column: each merge records "merged id → kept id", which
    /// other tables of the job use with `remap = "<table>.<id>"`.
    pub id: Option<String>,
    /// With `key = ["*"]`: columns left out of the comparison (an
    /// AutoNumber id that differs between two copies of one row).
    #[serde(default)]
    pub except: Vec<String>,
    /// What a later row with a key already seen does: `merge` into the
    /// first row (default), or `reject` it (an invoice number used twice).
    #[serde(default)]
    pub on_duplicate: OnDuplicate,
}

/// What dedupe does with a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDuplicate {
    #[default]
    Merge,
    Reject,
}

/// Key normalisations for dedupe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyNormalize {
    Fold,
}

impl Mapping {
    /// Read and check a mapping file.
    pub fn load(path: &Path, env: &dyn super::Env) -> Result<Mapping> {
        let mut m: Mapping = super::read_declarative(path, env)?;
        m.file = path.display().to_string();
        m.check()?;
        Ok(m)
    }

    /// Whether the mapping can be loaded with `mode` (its own, or the job's).
    pub fn check_mode(&self, mode: Mode) -> Result<()> {
        let f = &self.file;
        let t = &self.target;
        if matches!(mode, Mode::Upsert | Mode::Incremental) && t.key.is_empty() {
            return Err(Error::config(format!(
                "{f}: mode = \"{}\" needs target.key",
                mode.as_str()
            )));
        }
        if mode == Mode::Incremental {
            let Some(uk) = &t.update_key else {
                return Err(Error::config(format!(
                    "{f}: mode = \"incremental\" needs target.update_key, the column whose value grows when a row changes (e.g. \"updated_at\")"
                )));
            };
            if !self.columns.iter().any(|c| &c.name == uk) {
                return Err(Error::config(format!(
                    "{f}: target.update_key names `{uk}`, which is not a declared column"
                )));
            }
        } else if t.deletes != Deletes::None {
            return Err(Error::config(format!(
                "{f}: target.deletes only applies to mode = \"incremental\" (this table is loaded with mode = \"{}\")",
                mode.as_str()
            )));
        }
        for (what, name) in [
            ("soft_delete_column", self.soft_delete_column()),
            ("snapshot_column", self.snapshot_column()),
        ] {
            check_identifier(&name, f, &format!("target.{what}"))?;
            if self.columns.iter().any(|c| c.name == name) {
                return Err(Error::config(format!(
                    "{f}: target.{what} `{name}` is also a declared column; name it differently"
                )));
            }
        }
        Ok(())
    }

    /// The column a soft delete stamps.
    pub fn soft_delete_column(&self) -> String {
        self.target
            .soft_delete_column
            .clone()
            .unwrap_or_else(|| "deleted_at".into())
    }

    /// The column holding a snapshot's time.
    pub fn snapshot_column(&self) -> String {
        self.target
            .snapshot_column
            .clone()
            .unwrap_or_else(|| "snapshot_at".into())
    }

    /// The source column of a target column (its first `from`).
    pub fn source_column(&self, target: &str) -> Option<String> {
        self.columns
            .iter()
            .find(|c| c.name == target)
            .and_then(|c| c.sources().into_iter().next())
    }

    /// Cross-field checks that serde cannot express.
    pub fn check(&self) -> Result<()> {
        let f = &self.file;
        if self.columns.is_empty() {
            return Err(Error::config(format!(
                "{f}: a mapping needs at least one [[columns]]"
            )));
        }
        check_identifier(&self.target.table, f, "target.table")?;
        if is_reserved_table(&self.target.table) {
            return Err(Error::config(format!(
                "{f}: target.table `{}` is reserved for repaero's own tables ({}); name the table differently",
                self.target.table,
                reserved_tables_text()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.columns {
            check_identifier(&c.name, f, "columns.name")?;
            if !seen.insert(c.name.to_lowercase()) {
                return Err(Error::config(format!(
                    "{f}: column `{}` is declared twice",
                    c.name
                )));
            }
            if let Some(p) = &c.pattern {
                regex::Regex::new(p).map_err(|e| {
                    Error::config(format!(
                        "{f}: column `{}`: pattern is not a valid regular expression: {e}",
                        c.name
                    ))
                })?;
            }
            if c.ty == ColumnType::Decimal && c.scale() > c.precision() {
                return Err(Error::config(format!(
                    "{f}: column `{}`: scale {} is larger than precision {}",
                    c.name,
                    c.scale(),
                    c.precision()
                )));
            }
        }
        let has = |n: &str| self.columns.iter().any(|c| c.name == n);
        for k in &self.target.key {
            if !has(k) {
                return Err(Error::config(format!(
                    "{f}: target.key names `{k}`, which is not a declared column"
                )));
            }
        }
        self.check_mode(self.target.mode)?;
        if let Some(d) = &self.dedupe {
            let key = self.dedupe_key();
            if key.is_empty() {
                return Err(Error::config(format!(
                    "{f}: [dedupe] needs a key (or a target.key to default to)"
                )));
            }
            for e in &d.except {
                if !has(e) {
                    return Err(Error::config(format!(
                        "{f}: dedupe.except names `{e}`, which is not a declared column"
                    )));
                }
            }
            let whole_row = key.len() == 1 && key[0] == "*";
            if !d.except.is_empty() && !whole_row {
                return Err(Error::config(format!(
                    "{f}: dedupe.except goes with key = [\"*\"] (the whole row but those columns)"
                )));
            }
            if !whole_row {
                for k in &key {
                    if !has(k) {
                        return Err(Error::config(format!(
                            "{f}: dedupe.key names `{k}`, which is not a declared column"
                        )));
                    }
                }
            }
            for (col, merge) in &d.merge {
                let Some(spec) = self.columns.iter().find(|c| &c.name == col) else {
                    return Err(Error::config(format!(
                        "{f}: dedupe.merge names `{col}`, which is not a declared column"
                    )));
                };
                if *merge == Merge::Sum
                    && !matches!(
                        spec.ty,
                        ColumnType::Integer | ColumnType::Decimal | ColumnType::Float
                    )
                {
                    return Err(Error::config(format!(
                        "{f}: dedupe.merge: `{col}` is {}; only numbers can be summed",
                        spec.ty.as_str()
                    )));
                }
            }
        }
        for c in &self.checks {
            for col in [&c.left, &c.right] {
                if !has(col) {
                    return Err(Error::config(format!(
                        "{f}: checks names `{col}`, which is not a declared column"
                    )));
                }
            }
            if !["<", "<=", ">", ">=", "=", "!="].contains(&c.op.as_str()) {
                return Err(Error::config(format!(
                    "{f}: checks op {:?} is not one of <, <=, >, >=, =, !=",
                    c.op
                )));
            }
            if let Some(flag) = &c.flag {
                check_identifier(flag, f, "checks.flag")?;
                if !seen.insert(flag.to_lowercase()) {
                    return Err(Error::config(format!(
                        "{f}: checks flag `{flag}` is already a column"
                    )));
                }
            }
        }
        if let Some(id) = self.dedupe.as_ref().and_then(|d| d.id.as_ref())
            && !has(id)
        {
            return Err(Error::config(format!(
                "{f}: dedupe.id names `{id}`, which is not a declared column"
            )));
        }
        for c in &self.columns {
            if c.flag_only() && self.columns.iter().any(|o| o.name == c.valid_column()) {
                return Err(Error::config(format!(
                    "{f}: column `{}` flags invalid values into `{}`, which is also declared",
                    c.name,
                    c.valid_column()
                )));
            }
        }
        if let Some(footer) = &self.source.footer {
            regex::Regex::new(footer).map_err(|e| {
                Error::config(format!(
                    "{f}: source.footer is not a valid regular expression: {e}"
                ))
            })?;
        }
        Ok(())
    }

    /// The dedupe key, defaulting to the target key.
    pub fn dedupe_key(&self) -> Vec<String> {
        match &self.dedupe {
            Some(d) if !d.key.is_empty() => d.key.clone(),
            Some(_) => self.target.key.clone(),
            None => Vec::new(),
        }
    }

    /// What this mapping reads: the sheet or table name.
    pub fn source_name(&self) -> String {
        self.source
            .sheet
            .clone()
            .or_else(|| self.source.table.clone())
            .unwrap_or_else(|| "?".to_string())
    }
}

/// Tables repaero writes itself, which no mapping may name as its target:
/// run records and watermarks (`_repaero_…`), rejects and merges, the
/// daemons' dead letters, the staging table of a `replace` load
/// (`<table>__repaero_new`), the stock service's ledger, imported
/// files and alerts, and the bank feed's payment attempts and
/// notifications. Compared case-insensitively.
pub const RESERVED_TABLES: &[&str] = &[
    "_rejects",
    "_merges",
    "_dead_letters",
    "stock_movements",
    "scan_files",
    "stock_alerts",
    "stock_alert_sends",
    "payment_attempts",
    "payment_notifications",
    "supplier_orders",
    "supplier_order_lines",
    "shipments",
    "shipment_events",
    "shipment_polls",
    "manufacturer_documents",
    "manufacturer_files",
    "appointments",
    "billable_items",
];
/// Every name starting with it is reserved (`_repaero_runs`, `_repaero_state`…).
pub const RESERVED_PREFIX: &str = "_repaero";
/// Every name ending with it is reserved (a `replace` load's staging table).
pub const RESERVED_SUFFIX: &str = "__repaero_new";

/// The reserved names, as the error message lists them.
fn reserved_tables_text() -> String {
    format!(
        "{RESERVED_PREFIX}*, *{RESERVED_SUFFIX}, {}",
        RESERVED_TABLES.join(", ")
    )
}

/// Whether `name` is one of repaero's own tables ([`RESERVED_TABLES`],
/// [`RESERVED_PREFIX`], [`RESERVED_SUFFIX`]).
pub fn is_reserved_table(name: &str) -> bool {
    let n = name.to_lowercase();
    RESERVED_TABLES.contains(&n.as_str())
        || n.starts_with(RESERVED_PREFIX)
        || n.ends_with(RESERVED_SUFFIX)
}

/// Target identifiers are plain snake_case so that they need no quoting in
/// any dialect and fit Oracle's 128-character limit.
fn check_identifier(name: &str, file: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "{file}: {what} `{name}` must be snake_case ASCII (a-z, 0-9, _), at most 63 characters"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Mapping> {
        let table = super::super::parse_checked::<Mapping>(text, "m.toml")?;
        let mut m: Mapping = toml::Value::Table(table).try_into().unwrap();
        m.file = "m.toml".into();
        m.check()?;
        Ok(m)
    }

    const BASE: &str = r#"
[source]
sheet = "Stock"
[target]
table = "parts"
key = ["reference"]
[[columns]]
name = "reference"
from = ["Référence", "Ref"]
required = true
[[columns]]
name = "quantity"
type = "integer"
"#;

    #[test]
    fn parses_a_mapping() {
        let m = parse(BASE).unwrap();
        assert_eq!(m.columns[0].sources(), vec!["Référence", "Ref"]);
        assert_eq!(m.columns[1].sources(), vec!["quantity"]);
        assert_eq!(m.columns[1].ty, ColumnType::Integer);
        assert!(m.columns[0].trim);
        assert_eq!(m.target.mode, Mode::Replace);
    }

    #[test]
    fn rejects_summing_text_and_unknown_dedupe_columns() {
        let text = format!("{BASE}[dedupe]\nmerge = {{ reference = \"sum\" }}\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("only numbers can be summed"), "{err}");
        let text = format!("{BASE}[dedupe]\nkey = [\"nope\"]\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("`nope`"), "{err}");
    }

    #[test]
    fn unknown_column_key_is_located() {
        let text = BASE.replace("required = true", "requird = true");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("m.toml:10:1:"), "{err}");
        assert!(err.contains("requird"), "{err}");
    }

    #[test]
    fn repaeros_own_tables_are_reserved() {
        for t in [
            "_rejects",
            "_merges",
            "_dead_letters",
            "_repaero_runs",
            "_repaero_heartbeats",
            "_repaero",
            "parts__repaero_new",
            "stock_movements",
            "appointments",
            "billable_items",
        ] {
            let text = BASE.replace("table = \"parts\"", &format!("table = \"{t}\""));
            let err = parse(&text).unwrap_err().to_string();
            assert!(
                err.contains(&format!("target.table `{t}` is reserved")),
                "{t}: {err}"
            );
        }
        assert!(is_reserved_table("_REJECTS") && is_reserved_table("_Repaero_State"));
        for t in [
            "rejects",
            "merges",
            "parts",
            "repaero_runs",
            "parts_repaero_new",
        ] {
            assert!(!is_reserved_table(t), "{t}");
        }
    }

    #[test]
    fn identifiers_must_be_snake_case() {
        let text = BASE.replace("table = \"parts\"", "table = \"Parts\"");
        assert!(parse(&text).unwrap_err().to_string().contains("snake_case"));
    }
}
