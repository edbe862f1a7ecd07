//! `repaero scaffold`: the declarative files of a new job, written from a
//! source's schema and a profile of its data, for a person to review,
//! commit and run.
//!
//! One pass over every table reads each column as text and counts what the
//! files need: empty values, the longest text, whether every value reads
//! as an integer, a decimal (and its digits), a date (with a time of day or
//! not) or a boolean, placeholders (`n/a`, `-`, `1900-01-01`), duplicated
//! key values, line breaks, runs of empty cells under a value (vertically
//! merged cells) and footer rows. Types come from the source's declarations
//! when it has them (Access, PostgreSQL), from the values otherwise (Excel,
//! CSV); keys and references from its primary and foreign keys. Every
//! inference is written as a comment beside the setting it produced.
//!
//! The files are built as text, not serialised: the comments are the point.
//! `toml_string` quotes every value taken from the source.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::batch::parse;
use crate::config::mapping::{ColumnType, NumberFormat, is_reserved_table};
use crate::error::{Error, Result};
use crate::inspect::snake_case;
use crate::source::{
    DeclaredColumn, ForeignKey, Source, SourceColumn, TableKeys, TableRequest, header_key,
};

/// Distinct values kept per key candidate, to find duplicates.
const DISTINCT_CAP: usize = 1_000_000;

/// Bytes above which a value is only text: longer than any number, date
/// or placeholder is written.
const SHORT: usize = 64;

/// Texts that often stand for "no value" in hand-kept data.
const PLACEHOLDERS: &[&str] = &[
    "n/a",
    "na",
    "#n/a",
    "-",
    "--",
    "?",
    "null",
    "none",
    "néant",
    "inconnu",
    "nc",
    "n.c.",
    "1900-01-01",
    "0000-00-00",
];

/// Words of a column name that say it holds money.
const MONEY_WORDS: &[&str] = &[
    "montant", "amount", "prix", "price", "total", "cout", "cost", "tarif", "solde", "balance",
    "ht", "ttc", "tva", "vat", "paiement", "payment", "salaire", "salary", "frais", "fee", "fees",
    "remise", "discount", "euro", "euros", "eur", "usd", "money", "currency", "revenue", "ca",
];

/// What to scaffold.
#[derive(Debug, Clone)]
pub struct Options {
    /// The job's name (`jobs/<job>.toml`).
    pub job: String,
    /// The `[sources.<name>]` the job reads.
    pub source_name: String,
    /// Only these tables or sheets (all visible ones when empty).
    pub tables: Vec<String>,
    pub batch_size: usize,
}

/// A file to write, relative to the folder it goes in.
#[derive(Debug, Clone)]
pub struct ScaffoldFile {
    pub kind: FileKind,
    /// `clients_clients.toml`
    pub name: String,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Job,
    Mapping,
    Validation,
}

/// What `scaffold` made.
#[derive(Debug, Clone)]
pub struct Scaffold {
    pub job: String,
    pub files: Vec<ScaffoldFile>,
    /// Target tables in the job's order, with their source table and rows.
    pub tables: Vec<(String, String, u64)>,
    /// Tables or sheets not scaffolded, and why.
    pub left_out: Vec<(String, String)>,
}

/// What one pass found in one column.
#[derive(Debug, Default)]
struct ColStats {
    empty: u64,
    filled: u64,
    max_chars: usize,
    newlines: u64,
    numbers: u64,
    integers: u64,
    /// Digits after the point, most seen; digits before it, most seen.
    max_scale: u32,
    max_int_digits: u32,
    /// Digit strings with a leading zero (`06000`): codes, not numbers.
    leading_zero: u64,
    dates: u64,
    with_time: u64,
    booleans: u64,
    placeholders: BTreeMap<String, u64>,
    /// Cleaned values, for key candidates only.
    distinct: Option<HashSet<String>>,
    duplicates: u64,
    dup_examples: Vec<String>,
    /// Merged-cell shape: empties that follow a value, values equal to the
    /// previous one.
    first_empty: bool,
    last_value: Option<String>,
    repeats: u64,
}

/// One table read and profiled.
struct Profiled {
    source: String,
    target: String,
    rows: u64,
    header_row: u32,
    /// No header row: the columns are named by their letters.
    headerless: bool,
    rows_above_header: u64,
    footer_rows: u64,
    /// Source column names read, in order, with their stats.
    columns: Vec<(String, ColStats)>,
    /// Per column, what a mapping's `from` names it by (`Charge (2)` for
    /// the second of two columns headed alike), or why it cannot.
    froms: Vec<std::result::Result<FromText, String>>,
    declared: Option<Vec<DeclaredColumn>>,
    keys: TableKeys,
}

/// A column of a mapping being written.
struct Col {
    source: String,
    /// The mapping's `from`: `source`, ranked when headers repeat.
    from: String,
    name: String,
    ty: ColumnType,
    precision: Option<u32>,
    scale: Option<u32>,
    length: Option<u32>,
    required: bool,
    fill_down: bool,
    collapse_spaces: bool,
    comments: Vec<String>,
    /// Commented suggestions written after the settings.
    suggestions: Vec<String>,
    references: Option<(String, String)>,
    money: bool,
}

/// Quote a value as a TOML basic string.
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A text safe in a one-line comment.
fn comment_text(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if t.chars().count() > 60 {
        format!("{}…", t.chars().take(60).collect::<String>())
    } else {
        t
    }
}

/// A snake_case identifier the mapping loader accepts: a-z, 0-9, _,
/// starting with a letter or `_` (never `__`, repaero's own columns), at
/// most 63 characters.
pub fn identifier(raw: &str) -> String {
    let s = snake_case(raw);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    let mut out = out.trim_matches('_').to_string();
    if out.is_empty() {
        out = "column".into();
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'c');
        out.insert(1, '_');
    }
    out.truncate(60);
    out
}

/// `name`, or `name_2`, `name_3`… when taken (compared ignoring case).
fn unique(name: String, taken: &mut HashSet<String>) -> String {
    if taken.insert(name.clone()) {
        return name;
    }
    let mut k = 2;
    loop {
        let n = format!("{name}_{k}");
        if taken.insert(n.clone()) {
            return n;
        }
        k += 1;
    }
}

fn is_money(source: &str) -> bool {
    header_key(&snake_case(source).replace('_', " "))
        .split(' ')
        .any(|w| MONEY_WORDS.contains(&w))
}

/// Digits after and before the point of a number's shortest text.
fn digits(v: f64) -> (u32, u32) {
    let s = ryu::Buffer::new().format_finite(v.abs()).to_string();
    if s.contains('e') {
        // 1e-7, 1e21: far from money; read as float
        return (99, 99);
    }
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    let frac = frac.trim_end_matches('0');
    let int = int.trim_start_matches('0');
    (frac.len() as u32, int.len() as u32)
}

fn is_placeholder(t: &str) -> Option<String> {
    let l = t.to_lowercase();
    if PLACEHOLDERS.contains(&l.as_str()) {
        return Some(t.to_string());
    }
    // a Date/Time's "unknown": 1900-01-01 (at midnight)
    if l.starts_with("1900-01-01")
        && l[10..]
            .trim_start_matches('t')
            .trim_matches(['0', ':', '.'])
            .is_empty()
    {
        return Some("1900-01-01".to_string());
    }
    None
}

impl ColStats {
    fn push(&mut self, v: Option<&str>) {
        let t = v
            .map(|s| s.trim_matches(|c: char| c.is_whitespace() || c == '\u{a0}'))
            .unwrap_or("");
        if t.is_empty() {
            self.empty += 1;
            if self.filled == 0 && self.empty == 1 {
                self.first_empty = true;
            }
            return;
        }
        self.filled += 1;
        self.max_chars = self.max_chars.max(t.chars().count());
        if t.contains('\n') {
            self.newlines += 1;
        }
        // a number, a date or a placeholder is short: a long text (a
        // 10,000-character cell) is not parsed as one
        let short = t.len() <= SHORT;
        if let Some(p) = short.then(|| is_placeholder(t)).flatten() {
            *self.placeholders.entry(p).or_default() += 1;
        }
        if self.last_value.as_deref() == Some(t) {
            self.repeats += 1;
        }
        if self.last_value.as_deref() != Some(t) {
            self.last_value = Some(t.to_string());
        }
        let numeric = short && parse::looks_numeric(t);
        let number = if numeric {
            parse::parse_number(t, NumberFormat::Auto).ok()
        } else {
            None
        };
        if let Some(n) = number {
            self.numbers += 1;
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                self.integers += 1;
            }
            let (scale, int) = digits(n);
            // the decimals as written: "12,50" has two, though 12.5 has one
            let written = (n.fract() != 0.0)
                .then(|| t.rsplit_once([',', '.']))
                .flatten()
                .map(|(_, f)| f.trim())
                .filter(|f| f.bytes().all(|b| b.is_ascii_digit()))
                .map_or(0, |f| f.len() as u32);
            self.max_scale = self.max_scale.max(scale).max(written);
            self.max_int_digits = self.max_int_digits.max(int);
            if t.len() > 1 && t.starts_with('0') && t.bytes().all(|b| b.is_ascii_digit()) {
                self.leading_zero += 1;
            }
        } else if let Some(dt) = short.then(|| parse::parse_datetime(t, &[])).flatten() {
            self.dates += 1;
            if dt.time() != chrono::NaiveTime::MIN {
                self.with_time += 1;
            }
        }
        if matches!(t, "true" | "false" | "TRUE" | "FALSE" | "True" | "False") {
            self.booleans += 1;
        }
        if let Some(set) = &mut self.distinct {
            // compared as the target will: numbers by value, texts cleaned
            let key = match number {
                Some(n) => n.to_string(),
                None => t.split_whitespace().collect::<Vec<_>>().join(" "),
            };
            if set.len() < DISTINCT_CAP && !set.insert(key.clone()) {
                self.duplicates += 1;
                if self.dup_examples.len() < 3 && !self.dup_examples.contains(&key) {
                    self.dup_examples.push(key);
                }
            }
        }
    }
}

/// Whether a column name reads as an identifier (a key candidate for a
/// source that declares none).
fn looks_like_id(source: &str) -> bool {
    let k = header_key(&snake_case(source).replace('_', " "));
    let words: Vec<&str> = k.split(' ').collect();
    words.first().is_some_and(|w| {
        matches!(
            *w,
            "id" | "ref" | "reference" | "code" | "n" | "no" | "num" | "numero" | "key"
        )
    }) || words
        .last()
        .is_some_and(|w| matches!(*w, "id" | "ref" | "code"))
}

fn footer_regex() -> Option<regex::Regex> {
    regex::Regex::new(r"(?i)^\s*(sous-?\s*)?totale?s?\b").ok()
}

/// The footer pattern written in a mapping when total rows are found.
const FOOTER: &str = r"^\s*(sous-?\s*)?totale?s?\b";

/// Read one table and count what the files need.
fn profile(source: &dyn Source, table: &str, target: String, batch: usize) -> Result<Profiled> {
    let declared = source.declared_columns(table)?;
    let keys = source.keys(table)?.unwrap_or_default();
    let mut req = TableRequest::all(table);
    req.batch_size = batch;
    let mut reader = source.read(req)?;
    let names: Vec<String> = reader
        .columns
        .iter()
        .filter_map(|c| c.feeds.clone())
        .collect();
    let froms = from_texts(&reader.columns, declared.is_none());
    let mut columns: Vec<(String, ColStats)> = names
        .iter()
        .map(|n| {
            let candidate = keys.primary.iter().any(|k| k == n)
                || (keys.primary.is_empty() && looks_like_id(n));
            (
                n.clone(),
                ColStats {
                    distinct: candidate.then(HashSet::new),
                    ..Default::default()
                },
            )
        })
        .collect();
    let footer = if declared.is_none() {
        footer_regex()
    } else {
        None
    };
    let mut rows = 0u64;
    let mut footer_rows = 0u64;
    while let Some(df) = reader.next_batch()? {
        let cols: Vec<Option<Vec<Option<String>>>> = names
            .iter()
            .map(|n| {
                df.column(n).ok().and_then(|c| {
                    c.str()
                        .ok()
                        .map(|s| s.iter().map(|v| v.map(str::to_string)).collect())
                })
            })
            .collect();
        for i in 0..df.height() {
            if let Some(re) = &footer {
                let first = cols.iter().find_map(|c| {
                    c.as_ref()
                        .and_then(|v| v[i].as_deref())
                        .filter(|s| !s.trim().is_empty())
                });
                if first.is_some_and(|s| re.is_match(s)) {
                    footer_rows += 1;
                    continue;
                }
            }
            rows += 1;
            for (j, c) in cols.iter().enumerate() {
                let v = c.as_ref().and_then(|v| v[i].as_deref());
                columns[j].1.push(v);
            }
        }
    }
    let stats = reader.stats().cloned().unwrap_or_default();
    Ok(Profiled {
        source: table.to_string(),
        target,
        rows,
        header_row: stats.header_row,
        headerless: stats.headerless,
        rows_above_header: stats.rows_above_header,
        footer_rows,
        columns,
        froms,
        declared,
        keys,
    })
}

/// For each column that feeds the batch, in order, what a mapping's
/// `from` names it by: its header, or, when visible columns share a
/// header (as the reader compares them: ignoring case, accents and
/// spacing), the header and its rank among them (`Charge (2)`), which
/// the reader resolves by position. `Err` when the ranked name is itself
/// a header of the table, which the reader would take instead.
fn from_texts(columns: &[SourceColumn], sheet: bool) -> Vec<std::result::Result<FromText, String>> {
    let mut twins: HashMap<String, usize> = HashMap::new();
    for c in columns {
        let n = twins.entry(header_key(&c.header)).or_default();
        *n += usize::from(!c.hidden);
    }
    let mut rank: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for c in columns {
        let key = header_key(&c.header);
        let k = if c.hidden {
            0
        } else {
            let r = rank.entry(key.clone()).or_default();
            *r += 1;
            *r
        };
        if c.feeds.is_none() {
            continue;
        }
        let n = twins.get(&key).copied().unwrap_or(0);
        if n < 2 || k == 0 {
            out.push(Ok(FromText {
                text: c.header.clone(),
                why: None,
            }));
            continue;
        }
        let ranked = format!("{} ({k})", c.header.trim());
        if twins.contains_key(&header_key(&ranked)) {
            out.push(Err(format!(
                "column {} left out: {n} columns are headed {}, and {} is the header of another one; rename one in the source",
                toml_string(&c.header),
                toml_string(c.header.trim()),
                toml_string(&ranked)
            )));
        } else {
            out.push(Ok(FromText {
                why: Some(format!(
                    "{n} columns are headed {}: this one{} is named by its rank among them",
                    toml_string(&comment_text(c.header.trim())),
                    if sheet {
                        format!(", in {},", crate::source::column_letter(c.index))
                    } else {
                        String::new()
                    }
                )),
                text: ranked,
            }));
        }
    }
    out
}

/// How a mapping names a source column, and why so when it is not
/// simply its header.
#[derive(Debug, Clone, PartialEq)]
struct FromText {
    text: String,
    why: Option<String>,
}

/// `Text(50)` → 50; `character varying(50)` → 50.
fn declared_length(t: &str) -> Option<u32> {
    let inner = t.split_once('(')?.1.split([')', ',']).next()?;
    inner.trim().parse().ok()
}

/// `Decimal(18,4)`, `numeric(12,2)` → (18, 4).
fn declared_decimal(t: &str) -> Option<(u32, u32)> {
    let inner = t.split_once('(')?.1.split_once(')')?.0;
    let (p, s) = inner.split_once(',')?;
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

/// Round a text length up to a size a person would have chosen.
fn nice_length(n: usize) -> Option<u32> {
    [10u32, 20, 50, 100, 255, 500, 1000, 2000, 4000]
        .into_iter()
        .find(|&l| l as usize >= n)
}

/// The column of a mapping for one profiled source column.
fn column(
    p: &Profiled,
    source: &str,
    st: &ColStats,
    decl: Option<&DeclaredColumn>,
    name: String,
) -> Col {
    let mut c = Col {
        source: source.to_string(),
        from: source.to_string(),
        name,
        ty: ColumnType::Text,
        precision: None,
        scale: None,
        length: None,
        required: false,
        fill_down: false,
        collapse_spaces: true,
        comments: Vec::new(),
        suggestions: Vec::new(),
        references: None,
        money: false,
    };
    let seen = format!("{} of {} values filled", st.filled, p.rows);
    match decl {
        Some(d) => {
            c.ty = d.target_type;
            let mut why = format!("{}: {}", comment_text(source), comment_text(&d.source_type));
            match d.target_type {
                ColumnType::Datetime if st.with_time == 0 && st.dates > 0 => {
                    c.ty = ColumnType::Date;
                    why.push_str(", no time of day in any value: date");
                }
                ColumnType::Decimal => {
                    let t = d.source_type.to_lowercase();
                    let (pr, sc) = if t.starts_with("currency") || t == "money" {
                        (19, 4)
                    } else if let Some((pr, sc)) = declared_decimal(&d.source_type) {
                        (pr.clamp(1, 38), sc.min(pr.clamp(1, 38)))
                    } else {
                        // numeric without a declared scale: the values say
                        let sc = st.max_scale.min(10);
                        why.push_str(&format!(", up to {} decimals seen", st.max_scale));
                        ((st.max_int_digits + sc).clamp(18, 38), sc)
                    };
                    c.precision = Some(pr);
                    c.scale = Some(sc);
                    c.money = t.starts_with("currency") || t == "money" || is_money(source);
                }
                ColumnType::Text => {
                    // Jet 3 counts bytes, not characters: never below what is there
                    c.length = declared_length(&d.source_type)
                        .filter(|&n| n > 0)
                        .map(|n| n.max(st.max_chars as u32));
                }
                _ => {}
            }
            let _ = write!(why, "; {seen}");
            c.comments.push(why);
        }
        None => {
            let f = st.filled;
            let mut why = format!("{}: ", comment_text(source));
            if f == 0 {
                why.push_str("always empty: text");
            } else if st.booleans == f {
                c.ty = ColumnType::Boolean;
                why.push_str("every value a boolean");
            } else if st.numbers == f && st.leading_zero > 0 {
                why.push_str(&format!(
                    "digits, {} with a leading zero (codes, not numbers): text",
                    st.leading_zero
                ));
                c.length = nice_length(st.max_chars);
            } else if st.numbers == f && st.integers == f && st.max_int_digits <= 15 {
                c.ty = ColumnType::Integer;
                why.push_str("every value a whole number: integer");
            } else if st.numbers == f && st.max_scale <= 6 && st.max_int_digits <= 20 {
                c.ty = ColumnType::Decimal;
                let sc = st.max_scale.max(if is_money(source) { 2 } else { 0 });
                c.scale = Some(sc);
                c.precision = Some((st.max_int_digits + sc).clamp(18, 38));
                c.money = is_money(source);
                why.push_str(&format!(
                    "every value a number, up to {} decimals: decimal",
                    st.max_scale
                ));
            } else if st.numbers == f {
                c.ty = ColumnType::Float;
                why.push_str("every value a number, some with many decimals: float");
            } else if st.dates == f && st.with_time > 0 {
                c.ty = ColumnType::Datetime;
                why.push_str(&format!(
                    "every value a date, {} with a time of day: datetime",
                    st.with_time
                ));
            } else if st.dates == f {
                c.ty = ColumnType::Date;
                why.push_str("every value a date: date");
            } else {
                c.length = nice_length(st.max_chars);
                why.push_str(&format!(
                    "text (longest {} characters{})",
                    st.max_chars,
                    if st.numbers + st.dates > 0 {
                        format!(
                            "; {} numbers and {} dates among {f} values",
                            st.numbers, st.dates
                        )
                    } else {
                        String::new()
                    }
                ));
            }
            let _ = write!(why, "; {seen}");
            c.comments.push(why);
        }
    }
    if c.ty == ColumnType::Text && st.newlines > 0 {
        c.collapse_spaces = false;
        c.comments.push(format!(
            "{} values hold line breaks: kept (collapse_spaces = false)",
            st.newlines
        ));
    }
    if p.rows > 0 && st.empty == 0 {
        c.required = true;
    } else if p.rows == 0 && decl.is_some_and(|d| !d.nullable) {
        c.required = true;
        c.comments
            .push("declared NOT NULL (the table is empty)".to_string());
    } else if decl.is_some_and(|d| !d.nullable) && st.empty > 0 {
        c.comments.push(format!(
            "declared required, but {} values are empty: not required",
            st.empty
        ));
    }
    // a vertically merged category: a value, then empty cells, then
    // another value, never the same one twice in a row
    if decl.is_none()
        && c.ty == ColumnType::Text
        && p.rows >= 4
        && !st.first_empty
        && st.empty >= st.filled
        && st.filled >= 2
        && st.repeats == 0
        && st.distinct.is_none()
    {
        c.fill_down = true;
        c.comments.push(format!(
            "empty in {} rows, each run under a different value: merged cells? (fill_down)",
            st.empty
        ));
    }
    if !st.placeholders.is_empty() {
        let found: Vec<String> = st
            .placeholders
            .iter()
            .map(|(v, n)| format!("{} ×{n}", toml_string(v)))
            .collect();
        let values: Vec<String> = st.placeholders.keys().map(|v| toml_string(v)).collect();
        c.suggestions.push(format!(
            "placeholders found ({}): if they mean \"no value\",",
            found.join(", ")
        ));
        c.suggestions
            .push(format!("null_values = [{}]", values.join(", ")));
    }
    c
}

/// Scaffold the job, its mappings and its validation.
pub fn scaffold(source: &dyn Source, opts: &Options) -> Result<Scaffold> {
    let job = &opts.job;
    let all = source.tables()?;
    for t in &opts.tables {
        if !all.iter().any(|i| &i.name == t) {
            let names: Vec<String> = all.iter().map(|i| format!("{:?}", i.name)).collect();
            return Err(Error::input(format!(
                "{}: no table or sheet named {t:?}; there are {}",
                source.describe(),
                names.join(", ")
            )));
        }
    }
    let mut left_out = Vec::new();
    let mut profiled: Vec<Profiled> = Vec::new();
    let mut taken_tables = HashSet::new();
    for t in &all {
        let named = opts.tables.iter().any(|n| n == &t.name);
        if !opts.tables.is_empty() && !named {
            continue;
        }
        if t.hidden && !named {
            left_out.push((t.name.clone(), "hidden (name it with --tables)".into()));
            continue;
        }
        if !source.holds_rows(&t.name) {
            left_out.push((
                t.name.clone(),
                "holds no cells (chart or macro sheet)".into(),
            ));
            continue;
        }
        let mut target = identifier(&t.name);
        if is_reserved_table(&target) {
            target = format!("{}_{target}", identifier(job));
        }
        let target = unique(target, &mut taken_tables);
        match profile(source, &t.name, target, opts.batch_size) {
            Ok(p) if p.columns.is_empty() => {
                left_out.push((t.name.clone(), "no column".into()));
            }
            Ok(p) => profiled.push(p),
            // an empty sheet, a sheet without a header: nothing to map
            Err(e) if e.exit_code() == 2 && source.declared_columns(&t.name)?.is_none() => {
                left_out.push((t.name.clone(), e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    if profiled.is_empty() {
        return Err(Error::input(format!(
            "{}: no table to scaffold{}",
            source.describe(),
            if left_out.is_empty() {
                String::new()
            } else {
                let l: Vec<String> = left_out
                    .iter()
                    .map(|(t, why)| format!("{t:?}: {why}"))
                    .collect();
                format!(" ({})", l.join("; "))
            }
        )));
    }
    // source table → target table, source column → target column
    let table_of: HashMap<String, String> = profiled
        .iter()
        .map(|p| (p.source.clone(), p.target.clone()))
        .collect();
    let mut cols_of: HashMap<String, Vec<Col>> = HashMap::new();
    let mut notes_of: HashMap<String, Vec<String>> = HashMap::new();
    for p in &profiled {
        let mut taken = HashSet::new();
        // repaero's own column names
        taken.insert("deleted_at".to_string());
        taken.insert("snapshot_at".to_string());
        let mut cols = Vec::new();
        let mut notes = Vec::new();
        for ((src, st), from) in p.columns.iter().zip(&p.froms) {
            let decl = p
                .declared
                .as_ref()
                .and_then(|d| d.iter().find(|c| &c.name == src));
            if let Some(d) = decl
                && d.source_type.starts_with("unknown type")
            {
                notes.push(format!(
                    "column {} ({}) left out: repaero cannot decode its type",
                    toml_string(src),
                    comment_text(&d.source_type)
                ));
                continue;
            }
            // `Prix HT` and `Prix_HT` are one header to the reader: each
            // is named by its rank
            let from = match from {
                Ok(f) => f,
                Err(note) => {
                    notes.push(note.clone());
                    continue;
                }
            };
            let name = if p.headerless {
                format!("column_{}", identifier(&from.text))
            } else {
                identifier(src)
            };
            let mut c = column(p, src, st, decl, unique(name, &mut taken));
            c.from = from.text.clone();
            if let Some(why) = &from.why {
                c.comments.insert(0, why.clone());
            }
            cols.push(c);
        }
        cols_of.insert(p.target.clone(), cols);
        notes_of.insert(p.target.clone(), notes);
    }
    // references: single-column foreign keys to a scaffolded table
    let mut parents: HashMap<String, Vec<String>> = HashMap::new();
    for p in &profiled {
        for fk in &p.keys.foreign {
            let note = reference(p, fk, &table_of, &mut cols_of);
            if let Some(parent) = note.as_ref().ok().and_then(|o| o.clone()) {
                parents.entry(p.target.clone()).or_default().push(parent);
            }
            if let Err(n) = note {
                notes_of.entry(p.target.clone()).or_default().push(n);
            }
        }
    }
    // the order: parents before their children; a cycle keeps the
    // source's order and loses the references that point forward
    let mut order: Vec<usize> = Vec::new();
    let mut placed: HashSet<String> = HashSet::new();
    while order.len() < profiled.len() {
        let next = profiled.iter().enumerate().find(|(i, p)| {
            !order.contains(i)
                && parents
                    .get(&p.target)
                    .is_none_or(|ps| ps.iter().all(|x| placed.contains(x) || *x == p.target))
        });
        let i = match next {
            Some((i, _)) => i,
            None => match (0..profiled.len()).find(|i| !order.contains(i)) {
                Some(i) => i,
                None => break,
            },
        };
        placed.insert(profiled[i].target.clone());
        order.push(i);
    }
    for &i in &order {
        let t = &profiled[i].target;
        let Some(cols) = cols_of.get_mut(t) else {
            continue;
        };
        let mut dropped = Vec::new();
        for c in cols.iter_mut() {
            if let Some((rt, rc)) = c.references.clone()
                && (order_pos(&order, &profiled, &rt) > order_pos(&order, &profiled, t) || &rt == t)
            {
                dropped.push(format!(
                    "{}: its reference to {rt} is left out ({})",
                    c.name,
                    if &rt == t {
                        "a table referring to itself: rows would refer to rows not written yet"
                    } else {
                        "the tables refer to each other in a cycle"
                    }
                ));
                c.suggestions.push(format!(
                    "references = {{ table = {}, column = {} }}",
                    toml_string(&rt),
                    toml_string(&rc)
                ));
                c.references = None;
            }
        }
        notes_of.entry(t.clone()).or_default().extend(dropped);
    }
    let today = chrono::Local::now().format("%Y-%m-%d").to_string();
    let mut files = Vec::new();
    let mut tables = Vec::new();
    for &i in &order {
        let p = &profiled[i];
        let cols = cols_of.remove(&p.target).unwrap_or_default();
        let notes = notes_of.remove(&p.target).unwrap_or_default();
        if cols.is_empty() {
            left_out.push((p.source.clone(), "no column repaero can read".into()));
            continue;
        }
        let (text, key) = mapping_text(p, &cols, &notes, source, &today);
        files.push(ScaffoldFile {
            kind: FileKind::Mapping,
            name: format!("{}.toml", mapping_name(job, &p.target)),
            text,
        });
        tables.push((p.target.clone(), p.source.clone(), p.rows, cols, key));
    }
    if tables.is_empty() {
        return Err(Error::input(format!(
            "{}: no table with a column repaero can read",
            source.describe()
        )));
    }
    files.insert(
        0,
        ScaffoldFile {
            kind: FileKind::Job,
            name: format!("{job}.toml"),
            text: job_text(job, &opts.source_name, source, &tables, &left_out, &today),
        },
    );
    files.push(ScaffoldFile {
        kind: FileKind::Validation,
        name: format!("{job}.toml"),
        text: validation_text(source, &tables),
    });
    Ok(Scaffold {
        job: job.clone(),
        files,
        tables: tables
            .into_iter()
            .map(|(t, s, r, _, _)| (t, s, r))
            .collect(),
        left_out,
    })
}

fn order_pos(order: &[usize], profiled: &[Profiled], target: &str) -> usize {
    order
        .iter()
        .position(|&i| profiled[i].target == target)
        .unwrap_or(usize::MAX)
}

/// `<job>_<table>`.
pub fn mapping_name(job: &str, table: &str) -> String {
    format!("{job}_{table}")
}

/// Turn one foreign key into a `references` rule. `Ok(Some(parent))` when
/// it did, `Ok(None)` when there is nothing to say, `Err(note)` when it
/// could not.
fn reference(
    p: &Profiled,
    fk: &ForeignKey,
    table_of: &HashMap<String, String>,
    cols_of: &mut HashMap<String, Vec<Col>>,
) -> std::result::Result<Option<String>, String> {
    let what = format!(
        "{} ({} → {}.{})",
        comment_text(&fk.name),
        fk.columns.join(", "),
        comment_text(&fk.ref_table),
        fk.ref_columns.join(", ")
    );
    let Some(parent) = table_of.get(&fk.ref_table) else {
        return Err(format!(
            "relationship {what}: {} is not scaffolded, no references rule",
            comment_text(&fk.ref_table)
        ));
    };
    if fk.columns.len() != 1 || fk.ref_columns.len() != 1 {
        return Err(format!(
            "relationship {what}: on several columns, which a references rule cannot check"
        ));
    }
    let Some(ref_col) = cols_of
        .get(parent)
        .and_then(|cs| cs.iter().find(|c| c.source == fk.ref_columns[0]))
        .map(|c| c.name.clone())
    else {
        return Err(format!("relationship {what}: its column is not mapped"));
    };
    let Some(col) = cols_of
        .get_mut(&p.target)
        .and_then(|cs| cs.iter_mut().find(|c| c.source == fk.columns[0]))
    else {
        return Err(format!("relationship {what}: its column is not mapped"));
    };
    if fk.enforced {
        col.references = Some((parent.clone(), ref_col.clone()));
        col.comments.push(format!(
            "refers to {parent}.{ref_col} (relationship {}, enforced by the source)",
            comment_text(&fk.name)
        ));
    } else {
        col.comments.push(format!(
            "relationship {} to {parent}.{ref_col} is not enforced by the source: orphans may exist; to reject them,",
            comment_text(&fk.name)
        ));
        col.suggestions.push(format!(
            "references = {{ table = {}, column = {} }}",
            toml_string(parent),
            toml_string(&ref_col)
        ));
    }
    Ok(Some(parent.clone()))
}

/// A column's TOML type name.
fn type_name(t: ColumnType) -> &'static str {
    t.as_str()
}

type Planned = (String, String, u64, Vec<Col>, Vec<String>);

/// The mapping file's text and the target key it declares.
fn mapping_text(
    p: &Profiled,
    cols: &[Col],
    notes: &[String],
    source: &dyn Source,
    today: &str,
) -> (String, Vec<String>) {
    let mut s = String::new();
    let excel = p.declared.is_none() && (p.header_row > 0 || p.headerless);
    let _ = writeln!(
        s,
        "# {} → {}: scaffolded by `repaero scaffold` on {today} from {} ({} rows then).",
        comment_text(&p.source),
        p.target,
        comment_text(&source.describe()),
        p.rows
    );
    if p.declared.is_some() {
        let _ = writeln!(
            s,
            "# Types, lengths and decimals from the source's declarations; `required`\n# where no value was empty. Review every column, then remove this line."
        );
    } else {
        let _ = writeln!(
            s,
            "# Types from the values (the file declares none); `required` where no\n# value was empty. Review every column, then remove this line."
        );
    }
    for n in notes {
        let _ = writeln!(s, "# {}", comment_text_long(n));
    }
    let _ = writeln!(s, "\n[source]");
    if excel {
        let _ = writeln!(s, "sheet = {}", toml_string(&p.source));
        if p.headerless {
            let _ = writeln!(
                s,
                "# no row among the first 30 holds text to read as column names: no header\n# row, every row is data, and `from` names each column by its letter"
            );
        } else {
            let _ = writeln!(
                s,
                "# detected: the row holding the most texts among the first 30{}",
                if p.rows_above_header > 0 {
                    format!(" ({} rows above it: titles, notes)", p.rows_above_header)
                } else {
                    String::new()
                }
            );
        }
        let _ = writeln!(s, "header_row = {}", p.header_row);
        if p.footer_rows > 0 {
            let _ = writeln!(
                s,
                "# {} rows start with TOTAL: they are not data",
                p.footer_rows
            );
            let _ = writeln!(s, "footer = '{FOOTER}'");
        }
    } else {
        let _ = writeln!(s, "table = {}", toml_string(&p.source));
    }
    let _ = writeln!(s, "\n[target]\ntable = {}", toml_string(&p.target));
    // the key: the declared primary key when every part is mapped and no
    // two rows share it; else a candidate, or a dedupe suggestion
    let mut key: Vec<String> = Vec::new();
    let mut key_note = String::new();
    let mut dedupe: Vec<String> = Vec::new();
    let by_source = |src: &str| cols.iter().find(|c| c.source == src);
    let stats = |src: &str| p.columns.iter().find(|(n, _)| n == src).map(|(_, s)| s);
    if !p.keys.primary.is_empty() {
        let mapped: Option<Vec<&Col>> = p
            .keys
            .primary
            .iter()
            .map(|k| by_source(k.as_str()))
            .collect();
        let dups: u64 = p
            .keys
            .primary
            .iter()
            .filter_map(|k| stats(k.as_str()))
            .map(|s| s.duplicates)
            .sum();
        match mapped {
            Some(m) if p.keys.primary.len() > 1 || dups == 0 => {
                key = m.iter().map(|c| c.name.clone()).collect();
                key_note = format!(
                    "the source's primary key{}",
                    p.keys
                        .primary_name
                        .as_ref()
                        .map(|n| format!(" ({})", comment_text(n)))
                        .unwrap_or_default()
                );
            }
            Some(m) => {
                key_note = format!(
                    "the primary key {} holds {dups} values twice once cleaned (trimmed): no key",
                    m[0].name
                );
                dedupe = vec![m[0].name.clone()];
            }
            None => key_note = "the primary key's columns are not all mapped: no key".into(),
        }
    } else if p.declared.is_none() {
        for (src, st) in &p.columns {
            let Some(c) = by_source(src) else { continue };
            if st.distinct.is_none() || st.empty > 0 || p.rows == 0 {
                continue;
            }
            if st.duplicates == 0 {
                key = vec![c.name.clone()];
                key_note = format!(
                    "{}: named like an identifier, filled and distinct in every row",
                    comment_text(src)
                );
            } else {
                key_note = format!(
                    "{} is named like an identifier but holds {} repeated values (e.g. {}): no key",
                    comment_text(src),
                    st.duplicates,
                    st.dup_examples
                        .iter()
                        .map(|v| toml_string(&comment_text(v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                dedupe = vec![c.name.clone()];
            }
            break;
        }
    }
    if !key_note.is_empty() {
        let _ = writeln!(s, "# key: {key_note}");
    }
    if !key.is_empty() {
        let k: Vec<String> = key.iter().map(|k| toml_string(k)).collect();
        let _ = writeln!(s, "key = [{}]", k.join(", "));
    }
    let _ = writeln!(s, "mode = \"replace\"");
    if p.rows == 0 {
        let _ = writeln!(
            s,
            "# the table was empty when scaffolded: an empty source empties the target\nallow_empty = true"
        );
    }
    for c in cols {
        let _ = writeln!(s);
        for line in &c.comments {
            let _ = writeln!(s, "# {}", comment_text_long(line));
        }
        let _ = writeln!(s, "[[columns]]");
        let _ = writeln!(s, "name = {}", toml_string(&c.name));
        let _ = writeln!(s, "from = {}", toml_string(&c.from));
        let _ = writeln!(s, "type = \"{}\"", type_name(c.ty));
        if let Some(pr) = c.precision {
            let _ = writeln!(s, "precision = {pr}");
        }
        if let Some(sc) = c.scale {
            let _ = writeln!(s, "scale = {sc}");
        }
        if let Some(l) = c.length {
            let _ = writeln!(s, "length = {l}");
        }
        if c.required {
            let _ = writeln!(s, "required = true");
        }
        if c.fill_down {
            let _ = writeln!(s, "fill_down = true");
        }
        if !c.collapse_spaces {
            let _ = writeln!(s, "collapse_spaces = false");
        }
        if let Some((t, col)) = &c.references {
            let _ = writeln!(
                s,
                "references = {{ table = {}, column = {} }}",
                toml_string(t),
                toml_string(col)
            );
        }
        for line in &c.suggestions {
            let _ = writeln!(s, "# {line}");
        }
    }
    if !dedupe.is_empty() {
        let k: Vec<String> = dedupe.iter().map(|k| toml_string(k)).collect();
        let _ = writeln!(
            s,
            "\n# Duplicates found on {}: to merge them into the first row,\n# [dedupe]\n# key = [{}]",
            dedupe.join(", "),
            k.join(", ")
        );
    }
    (s, key)
}

/// A note on one line, however long.
fn comment_text_long(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn job_text(
    job: &str,
    source_name: &str,
    source: &dyn Source,
    tables: &[Planned],
    left_out: &[(String, String)],
    today: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Scaffolded by `repaero scaffold` on {today} from {}.\n# Review mappings/{job}_*.toml; validation/{job}.toml proves each run\n# (`repaero migrate {job} && repaero validate {job}`).",
        comment_text(&source.describe())
    );
    for (t, why) in left_out {
        let _ = writeln!(
            s,
            "# not scaffolded: {} ({})",
            comment_text(t),
            comment_text_long(why)
        );
    }
    let names: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
    let _ = writeln!(
        s,
        "description = {}",
        toml_string(&format!(
            "{} → {}",
            source
                .path()
                .and_then(|p| p.file_name())
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| source.describe()),
            names.join(", ")
        ))
    );
    let _ = writeln!(s, "source = {}", toml_string(source_name));
    let refs = tables
        .iter()
        .any(|t| t.3.iter().any(|c| c.references.is_some()));
    if refs {
        let _ = writeln!(
            s,
            "\n# Written in this order: each table's references point to tables above it."
        );
    }
    for (t, src, rows, _, _) in tables {
        let _ = writeln!(
            s,
            "\n[[tables]]   # {} ({rows} rows)\nmapping = {}",
            comment_text(src),
            toml_string(&mapping_name(job, t))
        );
    }
    s
}

fn validation_text(source: &dyn Source, tables: &[Planned]) -> String {
    // a source that answers SQL is asked by its column names; the others
    // are read as the mapping reads them
    let sql = source.capabilities().sql.is_some();
    let src_col = |c: &Col| toml_string(if sql { &c.source } else { &c.from });
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Scaffolded by `repaero scaffold` from {}: the rows of every table and\n# the sum of every money-like column, source = target + merged + rejected.\n# Add the metrics the business checks (validation/clients.toml has examples).",
        comment_text(&source.describe())
    );
    for (t, src, _, cols, key) in tables {
        let _ = writeln!(s, "\n[[metrics]]");
        let _ = writeln!(s, "id = {}", toml_string(&format!("rows_{t}")));
        let _ = writeln!(s, "title = {}", toml_string(&format!("Rows of {src}")));
        let _ = writeln!(s, "kind = \"count\"\nexplain = {}", toml_string(t));
        if key.len() == 1
            && let Some(c) = cols.iter().find(|c| c.name == key[0])
        {
            let _ = writeln!(s, "# on a mismatch, the keys that differ are listed");
            let _ = writeln!(
                s,
                "key = {{ source = {}, target = {}, type = \"{}\" }}",
                src_col(c),
                toml_string(&c.name),
                type_name(c.ty)
            );
        }
        for c in cols
            .iter()
            .filter(|c| c.money && c.ty == ColumnType::Decimal)
        {
            let _ = writeln!(s, "\n[[metrics]]");
            let _ = writeln!(s, "id = {}", toml_string(&format!("sum_{t}_{}", c.name)));
            let _ = writeln!(
                s,
                "title = {}",
                toml_string(&format!("Sum of {} ({src})", c.source))
            );
            let _ = writeln!(s, "kind = \"sum\"\nexplain = {}", toml_string(t));
            let _ = writeln!(
                s,
                "value = {{ source = {}, target = {}, type = \"decimal\", scale = {} }}",
                src_col(c),
                toml_string(&c.name),
                c.scale.unwrap_or(2)
            );
        }
    }
    s
}

/// Where the files go.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub jobs: PathBuf,
    pub mappings: PathBuf,
    pub validation: PathBuf,
}

impl Dirs {
    pub fn path(&self, f: &ScaffoldFile) -> PathBuf {
        match f.kind {
            FileKind::Job => self.jobs.join(&f.name),
            FileKind::Mapping => self.mappings.join(&f.name),
            FileKind::Validation => self.validation.join(&f.name),
        }
    }
}

/// Write the files; none when one exists already and `force` is not set
/// (the error lists them).
pub fn write(s: &Scaffold, dirs: &Dirs, force: bool) -> Result<Vec<PathBuf>> {
    let paths: Vec<PathBuf> = s.files.iter().map(|f| dirs.path(f)).collect();
    if !force {
        let existing: Vec<String> = paths
            .iter()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(Error::config(format!(
                "not overwriting {}: choose another --job name, or pass --force",
                existing.join(", ")
            )));
        }
    }
    for (f, p) in s.files.iter().zip(&paths) {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::runtime(format!("cannot create {}: {e}", dir.display())))?;
        }
        write_file(p, &f.text)?;
    }
    Ok(paths)
}

/// Write beside, then rename: a failed write leaves no half file.
fn write_file(p: &Path, text: &str) -> Result<()> {
    let tmp = p.with_extension("toml.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, p))
        .map_err(|e| Error::runtime(format!("cannot write {}: {e}", p.display())))
}

/// The `[sources.<name>]` table for a file not configured yet.
pub fn source_entry(name: &str, kind: &str, path: &str) -> String {
    format!(
        "\n[sources.{name}]\nkind = {}\npath = {}\ndescription = {}\n",
        toml_string(kind),
        toml_string(path),
        toml_string("added by repaero scaffold")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_round_trip() {
        for s in [
            "plain",
            "quote \" back \\ slash",
            "line\nbreak\ttab",
            "\u{1}ctl",
            "é€",
        ] {
            let text = format!("v = {}", toml_string(s));
            let t: toml::Table = toml::from_str(&text).unwrap();
            assert_eq!(t["v"].as_str(), Some(s), "{text}");
        }
    }

    #[test]
    fn identifiers_load() {
        assert_eq!(identifier("IdClient"), "id_client");
        assert_eq!(identifier("N° BL"), "n_bl");
        assert_eq!(identifier("2019"), "c_2019");
        assert_eq!(identifier("__x__"), "x");
        assert_eq!(identifier("名前"), "column");
        assert_eq!(identifier(&"a".repeat(80)).len(), 60);
    }

    /// Scaffold one sheet written by `fill`; its mapping's text.
    fn scaffold_sheet(fill: impl FnOnce(&mut rust_xlsxwriter::Worksheet)) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.xlsx");
        let mut book = rust_xlsxwriter::Workbook::new();
        let sheet = book.add_worksheet();
        sheet.set_name("Mesures").unwrap();
        fill(sheet);
        book.save(&path).unwrap();
        let src = crate::source::excel::ExcelSource::open(&path).unwrap();
        let opts = Options {
            job: "j".into(),
            source_name: "w".into(),
            tables: Vec::new(),
            batch_size: 1000,
        };
        let s = scaffold(&src, &opts).unwrap();
        let f = s
            .files
            .iter()
            .find(|f| f.kind == FileKind::Mapping)
            .unwrap();
        // what is written loads as a mapping
        let m: crate::config::mapping::Mapping = toml::from_str(&f.text).unwrap();
        assert!(!m.columns.is_empty());
        let v = s
            .files
            .iter()
            .find(|f| f.kind == FileKind::Validation)
            .unwrap();
        format!("{}\n{}", f.text, v.text)
    }

    #[test]
    fn a_sheet_of_figures_without_header_gets_letter_columns() {
        let text = scaffold_sheet(|ws| {
            for r in 0..5u32 {
                ws.write_number(r + 1, 1, f64::from(r) * 1.5).unwrap();
                ws.write_number(r + 1, 3, f64::from(r)).unwrap();
            }
        });
        // no header: every row is data, the columns named by their letters
        assert!(text.contains("header_row = 0\n"), "{text}");
        assert!(text.contains("no header\n# row"), "{text}");
        assert!(
            text.contains("name = \"column_b\"\nfrom = \"B\"\ntype = \"decimal\""),
            "{text}"
        );
        assert!(
            text.contains("name = \"column_d\"\nfrom = \"D\"\ntype = \"integer\""),
            "{text}"
        );
        // the empty columns A and C are not mapped; all 5 rows are counted
        assert!(!text.contains("from = \"A\""), "{text}");
        assert!(!text.contains("from = \"C\""), "{text}");
        assert!(text.contains("(5 rows then)"), "{text}");
    }

    #[test]
    fn repeated_headers_are_mapped_by_their_rank() {
        let text = scaffold_sheet(|ws| {
            for (c, h) in ["Ref", "Charge", "Date", "charge", "CHARGE "]
                .iter()
                .enumerate()
            {
                ws.write_string(0, c as u16, *h).unwrap();
            }
            for r in 1..4u32 {
                ws.write_string(r, 0, format!("R{r}")).unwrap();
                for c in [1u16, 3, 4] {
                    ws.write_number(r, c, f64::from(r) * f64::from(c)).unwrap();
                }
            }
        });
        for (name, from) in [
            ("charge", "Charge (1)"),
            ("charge_2", "charge (2)"),
            ("charge_3", "CHARGE (3)"),
        ] {
            let want = format!("name = \"{name}\"\nfrom = \"{from}\"\n");
            assert!(text.contains(&want), "{want}\n{text}");
        }
        assert!(
            text.contains(
                "# 3 columns are headed \"charge\": this one, in D, is named by its rank"
            ),
            "{text}"
        );
        assert!(text.contains("from = \"Ref\"\n"), "{text}");
        // a ranked name that is another column's header: left out, said
        let cols = vec![
            SourceColumn {
                header: "X".into(),
                index: 0,
                hidden: false,
                feeds: Some("X".into()),
            },
            SourceColumn {
                header: "X".into(),
                index: 1,
                hidden: false,
                feeds: Some("X (2)".into()),
            },
            SourceColumn {
                header: "X (2)".into(),
                index: 2,
                hidden: false,
                feeds: Some("X (2) (2)".into()),
            },
        ];
        let f = from_texts(&cols, true);
        assert!(
            f[1].as_ref().is_err_and(|e| e.contains("left out")),
            "{f:?}"
        );
        assert_eq!(f[2].as_ref().map(|f| f.text.as_str()), Ok("X (2)"));
    }

    #[test]
    fn stats_infer_types() {
        let mut s = ColStats::default();
        for v in ["12,50", "3", "1 234,5"] {
            s.push(Some(v));
        }
        assert_eq!((s.numbers, s.integers, s.max_scale), (3, 1, 2));
        let mut d = ColStats::default();
        for v in ["2024-01-02", "15/03/2023", " ", "n/a"] {
            d.push(Some(v));
        }
        assert_eq!((d.dates, d.with_time, d.empty, d.filled), (2, 0, 1, 3));
        assert_eq!(d.placeholders.get("n/a"), Some(&1));
        let mut z = ColStats::default();
        z.push(Some("06000"));
        assert_eq!(z.leading_zero, 1);
        assert!(is_placeholder("1900-01-01T00:00:00").is_some());
        assert!(is_placeholder("1900-01-01T10:00:00").is_none());
        assert!(is_money("MontantHT") && is_money("Prix unitaire") && !is_money("Nom"));
        assert!(looks_like_id("IdClient") && looks_like_id("Référence") && !looks_like_id("Nom"));
    }
}
