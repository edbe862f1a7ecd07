//! Validation of a migration: the plan's metrics, computed on the source
//! and on the target and reconciled with the run's own accounting.
//!
//! `validation/<job>.toml` declares metrics. Each has a source side and a
//! target side (a table with a filter, or raw SQL on a database) and a
//! kind: `count`, `sum`, `count_distinct`, `grouped` (a value per key),
//! `set` (distinct rows) or `sequence` (rows in order). Databases compute
//! them in SQL (PostgreSQL, SQLite, Oracle); Access and Excel sources are
//! streamed and aggregated on the way, never loaded whole.
//!
//! Cleaning changes counts on purpose, so a metric is checked as
//! `source = target + merged + rejected`: the rows the run rejected (kept
//! in `_rejects` with their values) and merged (`_merges`) are taken out of
//! the source side, by the same filter, group or row, and what remains
//! must equal the target. Values are compared in a canonical form per type
//! (text trimmed, numbers to their scale, ISO dates), the form a migration
//! writes.

pub mod report;
pub mod rowdiff;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::batch::parse;
use crate::config::mapping::{ColumnType, Mapping};
use crate::config::{Config, Env, Job};
use crate::error::{Error, Result};
use crate::sink::{Dialect, Sink};
use crate::source::{Source, TableRequest, WantedColumn, header_key};
use crate::transform::clean::{TextRules, clean_text};

/// `validation/<job>.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationFile {
    /// Values the metrics refer to as `{name}`. `as_of` (a date, default
    /// today) and `month = "previous" | "current"` give `{month_start}` and
    /// `{month_end}` (exclusive).
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub metrics: Vec<MetricSpec>,
}

/// What a metric measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Rows matching the filter.
    Count,
    /// Sum of `value`.
    Sum,
    /// Distinct values of `value`.
    CountDistinct,
    /// Per `key`: the rows (or the sum of `value`).
    Grouped,
    /// The distinct rows of `columns`.
    Set,
    /// The rows of `columns` in `order_by` order.
    Sequence,
}

/// A column on both sides, and the type its values are compared as.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnPair {
    pub source: String,
    pub target: String,
    #[serde(rename = "type", default = "text_type")]
    pub ty: ColumnType,
    /// Decimals: digits compared after the point (default 2).
    pub scale: Option<u8>,
    /// Text: the case the values are compared in; by default the case rule
    /// of the explained mapping's column (values compare as written).
    pub case: Option<crate::config::mapping::Case>,
}

fn text_type() -> ColumnType {
    ColumnType::Text
}

/// One side of a metric.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Side {
    /// Table or sheet (the explained table's by default).
    pub table: Option<String>,
    /// Conditions, all of which hold: `col = value` (a boolean, number,
    /// text or ISO date), `col = [a, b]` (any of), `col = { from = …, to = … }`
    /// (from included, to excluded).
    #[serde(rename = "where", default)]
    pub filter: BTreeMap<String, toml::Value>,
    /// Sequence order, columns of this side.
    #[serde(default)]
    pub order_by: Vec<String>,
    /// Raw SQL instead (databases only), returning what the kind needs: one
    /// value; key and value; or the columns, in order.
    pub sql: Option<String>,
}

/// `[[metrics]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    pub id: String,
    pub title: String,
    pub kind: Kind,
    /// The job's target table whose rejects and merges explain differences.
    pub explain: Option<String>,
    /// Grouped: fold source keys merged into another row of this table
    /// (`_merges` merged id → kept id).
    pub remap: Option<String>,
    pub key: Option<ColumnPair>,
    pub value: Option<ColumnPair>,
    #[serde(default)]
    pub columns: Vec<ColumnPair>,
    #[serde(default)]
    pub source: Side,
    #[serde(default)]
    pub target: Side,
    /// Scalars: the difference allowed (default 0).
    #[serde(default)]
    pub tolerance: f64,
}

/// A validation file, loaded for a job.
#[derive(Debug, Clone)]
pub struct Validation {
    pub job: Job,
    pub file: PathBuf,
    pub params: BTreeMap<String, String>,
    pub metrics: Vec<MetricSpec>,
}

/// The canonical text of a value of `ty`, as repaero writes it; `None` for
/// an empty value.
pub fn canon(ty: ColumnType, scale: Option<u8>, raw: &str) -> Option<String> {
    canon_case(ty, scale, None, raw)
}

/// [`canon`], text folded to a case first.
pub fn canon_case(
    ty: ColumnType,
    scale: Option<u8>,
    case: Option<crate::config::mapping::Case>,
    raw: &str,
) -> Option<String> {
    let t = raw.trim_matches(|c: char| c.is_whitespace() || c == '\u{a0}');
    if t.is_empty() {
        return None;
    }
    let number = || {
        parse::parse_number(t, crate::config::mapping::NumberFormat::Auto)
            .ok()
            .or_else(|| t.parse::<f64>().ok())
    };
    let out = match ty {
        ColumnType::Text => {
            let rules = TextRules {
                trim: true,
                collapse_spaces: true,
                case,
                null_values: Vec::new(),
            };
            return clean_text(raw, &rules).map(|c| c.into_owned());
        }
        ColumnType::Integer => t
            .parse::<i64>()
            .ok()
            .or_else(|| number().and_then(|v| parse::to_integer(v).ok()))
            .map(|v| v.to_string()),
        ColumnType::Decimal => {
            let s = scale.unwrap_or(2) as usize;
            number().map(|v| {
                let r = parse::round_to(v, s as u8);
                format!("{:.s$}", if r == 0.0 { 0.0 } else { r })
            })
        }
        ColumnType::Float => number().map(|v| format!("{v:.6}")),
        ColumnType::Boolean => parse::parse_bool(t).map(|b| if b { "t" } else { "f" }.to_string()),
        ColumnType::Date => parse::parse_datetime(t, &[])
            .map(|d| d.date())
            .or_else(|| parse::parse_date(t, &[]))
            .map(|d| d.format("%Y-%m-%d").to_string()),
        ColumnType::Datetime => {
            parse::parse_datetime(t, &[]).map(|d| d.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        }
        ColumnType::Time => parse::parse_time_of_day(t).map(crate::batch::time_text),
        ColumnType::Binary => Some(t.trim_start_matches("\\x").to_lowercase()),
    };
    // a value that does not read as its type is compared as it is
    Some(out.unwrap_or_else(|| t.to_string()))
}

/// How NULL shows in a compared row.
pub const NULL: &str = "∅";

/// A side's result.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    Groups(BTreeMap<String, f64>),
    /// Canonical rows (a set: sorted, distinct; a sequence: in order).
    Rows(Vec<Vec<String>>),
}

fn substitute(s: &str, params: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in params {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

fn subst_value(v: &toml::Value, params: &BTreeMap<String, String>) -> toml::Value {
    match v {
        toml::Value::String(s) => {
            let s2 = substitute(s, params);
            // a whole-value parameter keeps its type (`{technician}` → 3)
            if s.starts_with('{') && s.ends_with('}') {
                if let Ok(i) = s2.parse::<i64>() {
                    return toml::Value::Integer(i);
                }
            }
            toml::Value::String(s2)
        }
        toml::Value::Array(a) => {
            toml::Value::Array(a.iter().map(|x| subst_value(x, params)).collect())
        }
        toml::Value::Table(t) => toml::Value::Table(
            t.iter()
                .map(|(k, x)| (k.clone(), subst_value(x, params)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn param_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(d) => d.to_string(),
        other => other.to_string(),
    }
}

/// Parameters as text, with `month_start` and `month_end` derived from
/// `as_of` and `month`.
fn resolve_params(
    raw: &BTreeMap<String, toml::Value>,
    file: &str,
) -> Result<BTreeMap<String, String>> {
    let mut out: BTreeMap<String, String> = raw
        .iter()
        .map(|(k, v)| (k.clone(), param_text(v)))
        .collect();
    let as_of = match out.get("as_of") {
        Some(s) => parse::parse_date(s, &[])
            .ok_or_else(|| Error::config(format!("{file}: params.as_of = {s:?} is not a date")))?,
        None => chrono::Utc::now().date_naive(),
    };
    out.insert("as_of".into(), as_of.format("%Y-%m-%d").to_string());
    if let Some(m) = out.get("month").cloned() {
        use chrono::Datelike;
        let first = as_of.with_day(1).unwrap_or(as_of);
        let (start, end) = match m.as_str() {
            "previous" => (
                first
                    .checked_sub_months(chrono::Months::new(1))
                    .unwrap_or(first),
                first,
            ),
            "current" => (
                first,
                first
                    .checked_add_months(chrono::Months::new(1))
                    .unwrap_or(first),
            ),
            other => {
                return Err(Error::config(format!(
                    "{file}: params.month = {other:?}: use \"previous\" or \"current\""
                )));
            }
        };
        out.insert("month_start".into(), start.format("%Y-%m-%d").to_string());
        out.insert("month_end".into(), end.format("%Y-%m-%d").to_string());
    }
    Ok(out)
}

impl Validation {
    /// Names of the jobs with a validation file.
    pub fn list(cfg: &Config) -> Result<Vec<String>> {
        crate::config::toml_stems(&cfg.resolve(&cfg.paths.validation))
    }

    /// Load `validation/<job>.toml` and check it against the job.
    pub fn load(cfg: &Config, job: &str, env: &dyn Env) -> Result<Validation> {
        let file = cfg
            .resolve(&cfg.paths.validation)
            .join(format!("{job}.toml"));
        if !file.exists() {
            return Err(Error::config(format!(
                "job {job} has no validation file ({})",
                file.display()
            )));
        }
        let label = file.display().to_string();
        let vf: ValidationFile = crate::config::read_declarative(&file, env)?;
        let job = Job::load(cfg, job, env)?;
        let params = resolve_params(&vf.params, &label)?;
        if vf.metrics.is_empty() {
            return Err(Error::config(format!(
                "{label}: no [[metrics]]: a validation file checks at least one metric"
            )));
        }
        let mut metrics = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for mut m in vf.metrics {
            if !seen.insert(m.id.clone()) {
                return Err(Error::config(format!(
                    "{label}: metric {} is declared twice",
                    m.id
                )));
            }
            for side in [&mut m.source, &mut m.target] {
                side.filter = side
                    .filter
                    .iter()
                    .map(|(k, v)| (k.clone(), subst_value(v, &params)))
                    .collect();
                side.sql = side.sql.as_ref().map(|s| substitute(s, &params));
                side.table = side.table.as_ref().map(|s| substitute(s, &params));
            }
            m.title = substitute(&m.title, &params);
            check_metric(&m, &job, &label)?;
            // text compares in the case the migration writes it
            if let Some(mapping) = explained_mapping(&m, &job) {
                let case_of = |target: &str| {
                    mapping
                        .columns
                        .iter()
                        .find(|c| c.name == target)
                        .and_then(|c| c.case)
                };
                for p in m
                    .key
                    .iter_mut()
                    .chain(m.value.iter_mut())
                    .chain(m.columns.iter_mut())
                {
                    if p.case.is_none() {
                        p.case = case_of(&p.target);
                    }
                }
            }
            metrics.push(m);
        }
        Ok(Validation {
            job,
            file,
            params,
            metrics,
        })
    }
}

fn check_metric(m: &MetricSpec, job: &Job, label: &str) -> Result<()> {
    let at = format!("{label}: metric {}", m.id);
    let need = |ok: bool, what: &str| -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(Error::config(format!(
                "{at}: kind {:?} needs {what}",
                m.kind
            )))
        }
    };
    match m.kind {
        Kind::Count => {}
        Kind::Sum | Kind::CountDistinct => need(m.value.is_some(), "value = { source, target }")?,
        Kind::Grouped => need(m.key.is_some(), "key = { source, target }")?,
        Kind::Set => need(!m.columns.is_empty(), "columns")?,
        Kind::Sequence => {
            need(!m.columns.is_empty(), "columns")?;
            need(
                (m.source.sql.is_some() || !m.source.order_by.is_empty())
                    && (m.target.sql.is_some() || !m.target.order_by.is_empty()),
                "order_by on both sides",
            )?;
        }
    }
    for t in [&m.explain, &m.remap].into_iter().flatten() {
        if !job.tables.iter().any(|(mp, _)| &mp.target.table == t) {
            return Err(Error::config(format!(
                "{at}: names table `{t}`, which job {} does not write",
                job.name
            )));
        }
    }
    if m.explain.is_none()
        && (m.source.table.is_none() || m.target.table.is_none())
        && (m.source.sql.is_none() || m.target.sql.is_none())
    {
        return Err(Error::config(format!(
            "{at}: name the tables (source.table, target.table) or the explained table (explain = \"…\")"
        )));
    }
    if let Some(mapping) = explained_mapping(m, job) {
        for col in m.source.filter.keys() {
            if record_column(mapping, col).is_none() {
                return Err(Error::config(format!(
                    "{at}: source filter column `{col}` is not read by mapping {} (its rejected rows could not be filtered)",
                    mapping.file
                )));
            }
        }
    }
    Ok(())
}

fn explained_mapping<'a>(m: &MetricSpec, job: &'a Job) -> Option<&'a Mapping> {
    let t = m.explain.as_ref()?;
    job.tables
        .iter()
        .map(|(mp, _)| mp)
        .find(|mp| &mp.target.table == t)
}

/// The name a source column has in a rejected row's record (the target
/// column it feeds).
fn record_column(mapping: &Mapping, source_col: &str) -> Option<String> {
    let key = header_key(source_col);
    mapping
        .columns
        .iter()
        .find(|c| c.sources().iter().any(|s| header_key(s) == key))
        .map(|c| c.name.clone())
}

// ---------------------------------------------------------------------
// Conditions

/// One condition of a `where`.
#[derive(Debug, Clone)]
enum Cond {
    Eq(toml::Value),
    AnyOf(Vec<toml::Value>),
    Range(Option<toml::Value>, Option<toml::Value>),
}

fn conds(filter: &BTreeMap<String, toml::Value>) -> Vec<(String, Cond)> {
    filter
        .iter()
        .map(|(k, v)| {
            let c = match v {
                toml::Value::Array(a) => Cond::AnyOf(a.clone()),
                toml::Value::Table(t) if t.contains_key("from") || t.contains_key("to") => {
                    Cond::Range(t.get("from").cloned(), t.get("to").cloned())
                }
                other => Cond::Eq(other.clone()),
            };
            (k.clone(), c)
        })
        .collect()
}

/// A literal's typed form, for comparing with a raw value.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Lit {
    Bool(bool),
    Num(f64),
    Date(String),
    Text(String),
}

fn lit(v: &toml::Value) -> Lit {
    match v {
        toml::Value::Boolean(b) => Lit::Bool(*b),
        toml::Value::Integer(i) => Lit::Num(*i as f64),
        toml::Value::Float(f) => Lit::Num(*f),
        toml::Value::Datetime(d) => Lit::Date(d.to_string()),
        toml::Value::String(s) if s.len() == 10 && parse::parse_date(s, &[]).is_some() => {
            Lit::Date(s.clone())
        }
        toml::Value::String(s) => Lit::Text(s.trim().to_string()),
        other => Lit::Text(other.to_string()),
    }
}

/// A raw value read as the literal's type; `None` when it does not read.
fn as_lit(raw: &str, like: &Lit) -> Option<Lit> {
    match like {
        Lit::Bool(_) => parse::parse_bool(raw).map(Lit::Bool),
        Lit::Num(_) => canon(ColumnType::Float, None, raw)
            .and_then(|s| s.parse().ok())
            .map(Lit::Num),
        Lit::Date(_) => canon(ColumnType::Date, None, raw).map(Lit::Date),
        Lit::Text(_) => canon(ColumnType::Text, None, raw).map(Lit::Text),
    }
}

/// Whether a raw value satisfies a condition.
fn holds(raw: Option<&str>, cond: &Cond) -> bool {
    let Some(raw) = raw else {
        return false;
    };
    match cond {
        Cond::Eq(v) => {
            let l = lit(v);
            as_lit(raw, &l).is_some_and(|x| x == l)
        }
        Cond::AnyOf(vs) => vs.iter().any(|v| holds(Some(raw), &Cond::Eq(v.clone()))),
        Cond::Range(from, to) => {
            let like = from.as_ref().or(to.as_ref()).map(lit);
            let Some(like) = like else {
                return true;
            };
            let Some(x) = as_lit(raw, &like) else {
                return false;
            };
            from.as_ref().is_none_or(|f| x >= lit(f)) && to.as_ref().is_none_or(|t| x < lit(t))
        }
    }
}

fn sql_lit(d: Dialect, v: &toml::Value) -> String {
    match lit(v) {
        Lit::Bool(b) => match d {
            Dialect::Postgres => if b { "TRUE" } else { "FALSE" }.into(),
            _ => if b { "1" } else { "0" }.into(),
        },
        Lit::Num(n) => crate::batch::format_float(n),
        Lit::Date(s) if d == Dialect::Oracle => format!("DATE '{s}'"),
        Lit::Date(s) | Lit::Text(s) => format!("'{}'", s.replace('\'', "''")),
    }
}

fn where_sql(d: Dialect, filter: &BTreeMap<String, toml::Value>) -> String {
    let parts: Vec<String> = conds(filter)
        .iter()
        .map(|(col, c)| {
            let q = d.quote(col);
            match c {
                Cond::Eq(v) => format!("{q} = {}", sql_lit(d, v)),
                Cond::AnyOf(vs) => format!(
                    "{q} IN ({})",
                    vs.iter()
                        .map(|v| sql_lit(d, v))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Cond::Range(f, t) => {
                    let mut p = Vec::new();
                    if let Some(f) = f {
                        p.push(format!("{q} >= {}", sql_lit(d, f)));
                    }
                    if let Some(t) = t {
                        p.push(format!("{q} < {}", sql_lit(d, t)));
                    }
                    if p.is_empty() {
                        "1 = 1".into()
                    } else {
                        p.join(" AND ")
                    }
                }
            }
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", parts.join(" AND "))
    }
}

// ---------------------------------------------------------------------
// Evaluation

/// Which side of a metric.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Which {
    Source,
    Target,
}

fn side(m: &MetricSpec, w: Which) -> &Side {
    match w {
        Which::Source => &m.source,
        Which::Target => &m.target,
    }
}

fn col_name(p: &ColumnPair, w: Which) -> &str {
    match w {
        Which::Source => &p.source,
        Which::Target => &p.target,
    }
}

/// The SQL computing a metric's side on a database.
fn metric_sql(m: &MetricSpec, w: Which, d: Dialect, table: &str) -> String {
    let s = side(m, w);
    if let Some(sql) = &s.sql {
        return sql.clone();
    }
    let q = |c: &str| d.quote(c);
    let from = format!("{}{}", q(table), where_sql(d, &s.filter));
    match m.kind {
        Kind::Count => format!("SELECT count(*) FROM {from}"),
        // decimals are summed as the migration writes them: each rounded
        // to the compared scale (the run counts the values it rounded)
        Kind::Sum => match &m.value {
            Some(v) if v.ty == ColumnType::Decimal => format!(
                "SELECT sum(round({}, {})) FROM {from}",
                q(col_name(v, w)),
                v.scale.unwrap_or(2)
            ),
            v => format!(
                "SELECT sum({}) FROM {from}",
                q(v.as_ref().map_or("", |v| col_name(v, w)))
            ),
        },
        Kind::CountDistinct => format!(
            "SELECT count(DISTINCT {}) FROM {from}",
            q(m.value.as_ref().map_or("", |v| col_name(v, w)))
        ),
        Kind::Grouped => {
            let k = q(m.key.as_ref().map_or("", |k| col_name(k, w)));
            match &m.value {
                Some(v) => format!(
                    "SELECT {k}, sum({}) FROM {from} GROUP BY {k}",
                    q(col_name(v, w))
                ),
                None => format!("SELECT {k}, count(*) FROM {from} GROUP BY {k}"),
            }
        }
        Kind::Set | Kind::Sequence => {
            let cols: Vec<String> = m.columns.iter().map(|c| q(col_name(c, w))).collect();
            let order = if m.kind == Kind::Sequence && !s.order_by.is_empty() {
                format!(
                    " ORDER BY {}",
                    s.order_by
                        .iter()
                        .map(|c| q(c))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                String::new()
            };
            format!("SELECT {} FROM {from}{order}", cols.join(", "))
        }
    }
}

fn num(raw: Option<&str>) -> f64 {
    raw.and_then(|s| canon(ColumnType::Float, None, s))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0)
}

fn canon_pair(p: &ColumnPair, raw: Option<&str>) -> String {
    raw.and_then(|r| canon_case(p.ty, p.scale, p.case, r))
        .unwrap_or_else(|| NULL.to_string())
}

/// Turn rows of text returned for a metric into its value.
fn value_of_rows(m: &MetricSpec, rows: Vec<Vec<Option<String>>>) -> Value {
    let first = |r: &Vec<Option<String>>, i: usize| r.get(i).cloned().flatten();
    match m.kind {
        Kind::Count | Kind::CountDistinct => {
            Value::Scalar(rows.first().map_or(0.0, |r| num(first(r, 0).as_deref())))
        }
        Kind::Sum => {
            let v = rows.first().map_or(0.0, |r| num(first(r, 0).as_deref()));
            let scale = m.value.as_ref().and_then(|v| v.scale).unwrap_or(2);
            Value::Scalar(parse::round_to(v, scale))
        }
        Kind::Grouped => {
            let mut g = BTreeMap::new();
            let key = m.key.as_ref();
            for r in &rows {
                let k = key.map_or_else(String::new, |k| canon_pair(k, first(r, 0).as_deref()));
                *g.entry(k).or_insert(0.0) += num(first(r, 1).as_deref());
            }
            Value::Groups(g)
        }
        Kind::Set | Kind::Sequence => {
            let mut out: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    m.columns
                        .iter()
                        .enumerate()
                        .map(|(i, c)| canon_pair(c, first(r, i).as_deref()))
                        .collect()
                })
                .collect();
            // a set keeps its repeats until reconciled: a row the run
            // rejected may repeat one it wrote
            if m.kind == Kind::Set {
                out.sort();
            }
            Value::Rows(out)
        }
    }
}

/// A side read from a stream of raw rows (a file source): the rows that
/// pass the filter, reduced as the kind says.
struct Stream<'a> {
    m: &'a MetricSpec,
    conds: Vec<(String, Cond)>,
    count: f64,
    sum: f64,
    distinct: std::collections::HashSet<String>,
    groups: BTreeMap<String, f64>,
    rows: Vec<(Vec<String>, Vec<String>)>,
}

impl<'a> Stream<'a> {
    fn new(m: &'a MetricSpec, filter: &BTreeMap<String, toml::Value>) -> Stream<'a> {
        Stream {
            m,
            conds: conds(filter),
            count: 0.0,
            sum: 0.0,
            distinct: Default::default(),
            groups: BTreeMap::new(),
            rows: Vec::new(),
        }
    }

    /// One row; `get` reads a column by the name this side uses.
    fn row(&mut self, w: Which, order_by: &[String], get: &dyn Fn(&str) -> Option<String>) {
        if !self
            .conds
            .iter()
            .all(|(c, cond)| holds(get(c).as_deref(), cond))
        {
            return;
        }
        let m = self.m;
        match m.kind {
            Kind::Count => self.count += 1.0,
            Kind::Sum => {
                if let Some(v) = &m.value {
                    let x = num(get(col_name(v, w)).as_deref());
                    self.sum += if v.ty == ColumnType::Decimal {
                        parse::round_to(x, v.scale.unwrap_or(2))
                    } else {
                        x
                    };
                }
            }
            Kind::CountDistinct => {
                if let Some(v) = &m.value {
                    if let Some(x) =
                        get(col_name(v, w)).and_then(|r| canon_case(v.ty, v.scale, v.case, &r))
                    {
                        self.distinct.insert(x);
                    }
                }
            }
            Kind::Grouped => {
                if let Some(k) = &m.key {
                    let key = canon_pair(k, get(col_name(k, w)).as_deref());
                    let add = match &m.value {
                        Some(v) => num(get(col_name(v, w)).as_deref()),
                        None => 1.0,
                    };
                    *self.groups.entry(key).or_insert(0.0) += add;
                }
            }
            Kind::Set | Kind::Sequence => {
                let row: Vec<String> = m
                    .columns
                    .iter()
                    .map(|c| canon_pair(c, get(col_name(c, w)).as_deref()))
                    .collect();
                let order: Vec<String> = order_by
                    .iter()
                    .map(|c| get(c).unwrap_or_default())
                    .collect();
                self.rows.push((order, row));
            }
        }
    }

    fn finish(mut self) -> Value {
        match self.m.kind {
            Kind::Count => Value::Scalar(self.count),
            Kind::Sum => {
                let scale = self.m.value.as_ref().and_then(|v| v.scale).unwrap_or(2);
                Value::Scalar(parse::round_to(self.sum, scale))
            }
            Kind::CountDistinct => Value::Scalar(self.distinct.len() as f64),
            Kind::Grouped => Value::Groups(self.groups),
            Kind::Set => {
                let mut rows: Vec<Vec<String>> = self.rows.into_iter().map(|(_, r)| r).collect();
                rows.sort();
                Value::Rows(rows)
            }
            Kind::Sequence => {
                // numbers in order of value, the rest as text
                self.rows.sort_by(|(a, _), (b, _)| {
                    for (x, y) in a.iter().zip(b) {
                        let o = match (x.trim().parse::<f64>(), y.trim().parse::<f64>()) {
                            (Ok(p), Ok(q)) => {
                                p.partial_cmp(&q).unwrap_or(std::cmp::Ordering::Equal)
                            }
                            _ => x.cmp(y),
                        };
                        if o.is_ne() {
                            return o;
                        }
                    }
                    std::cmp::Ordering::Equal
                });
                Value::Rows(self.rows.into_iter().map(|(_, r)| r).collect())
            }
        }
    }
}

/// The source columns a streamed side needs.
fn needed_columns(m: &MetricSpec, w: Which) -> Vec<String> {
    let s = side(m, w);
    let mut cols: Vec<String> = Vec::new();
    let mut add = |c: &str| {
        if !cols.iter().any(|x| x == c) {
            cols.push(c.to_string());
        }
    };
    for p in m.key.iter().chain(m.value.iter()).chain(m.columns.iter()) {
        add(col_name(p, w));
    }
    for c in s.filter.keys().chain(s.order_by.iter()) {
        add(c);
    }
    cols
}

/// The read of a streamed source side: these columns of `table`, the
/// sheet read as its mapping reads it (header row, footer).
fn source_request(
    cols: &[String],
    table: &str,
    mapping: Option<&Mapping>,
    batch: usize,
    optional: bool,
) -> Result<TableRequest> {
    let mut req = TableRequest::all(table);
    req.batch_size = batch;
    req.columns = Some(
        cols.iter()
            .map(|c| WantedColumn {
                name: c.clone(),
                headers: vec![c.clone()],
                optional,
            })
            .collect(),
    );
    if let Some(mp) = mapping {
        let mreq = crate::pipeline::table_request(mp, batch)?;
        if mreq.table == table {
            req.header_row = mreq.header_row;
            req.header_scan_rows = mreq.header_scan_rows;
            req.footer = mreq.footer;
        }
    }
    Ok(req)
}

/// Compute the source side by streaming the source table.
fn stream_source(
    src: &Source,
    m: &MetricSpec,
    table: &str,
    mapping: Option<&Mapping>,
    batch: usize,
) -> Result<Value> {
    let cols = needed_columns(m, Which::Source);
    let mut reader = src.read(source_request(&cols, table, mapping, batch, false)?)?;
    let mut acc = Stream::new(m, &m.source.filter);
    while let Some(df) = reader.next_batch()? {
        let columns: Vec<(String, Vec<Option<String>>)> = cols
            .iter()
            .map(|c| {
                let vals = df
                    .column(c)
                    .ok()
                    .and_then(|col| {
                        col.str()
                            .ok()
                            .map(|s| s.iter().map(|v| v.map(str::to_string)).collect())
                    })
                    .unwrap_or_else(|| vec![None; df.height()]);
                (c.clone(), vals)
            })
            .collect();
        for i in 0..df.height() {
            let get = |name: &str| {
                columns
                    .iter()
                    .find(|(n, _)| n == name)
                    .and_then(|(_, v)| v[i].clone())
            };
            acc.row(Which::Source, &m.source.order_by, &get);
        }
    }
    Ok(acc.finish())
}

/// What the run set apart for a metric: rejected rows (as read) and merges.
#[derive(Debug, Default)]
struct Accounting {
    /// Rejected rows: target column name → raw value.
    rejected: Vec<HashMap<String, Option<String>>>,
    merged: u64,
    /// Ids of the rows merged into another (their key is not in the target).
    merged_ids: Vec<String>,
    /// Merged id → kept id (for `remap`).
    remap: HashMap<String, String>,
}

fn q_lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Rejected rows read once per table for all the metrics of a job.
type RejectCache = HashMap<String, Vec<HashMap<String, Option<String>>>>;

fn accounting(
    sink: &mut dyn Sink,
    job: &str,
    m: &MetricSpec,
    cache: &mut RejectCache,
) -> Result<Accounting> {
    let mut acc = Accounting::default();
    let d = sink.dialect();
    let own = |t: &str| d.quote(t);
    if let Some(rejected) = m.explain.as_ref().and_then(|t| cache.get(t)) {
        acc.rejected = rejected.clone();
    } else if let Some(t) = &m.explain {
        let rows = sink.query_text(&format!(
            "SELECT DISTINCT {rec} FROM {} WHERE {job_c} = {} AND {tab_c} = {}",
            own(crate::sink::REJECTS_TABLE),
            q_lit(job),
            q_lit(t),
            rec = if d == Dialect::Oracle {
                "TO_CHAR(RECORD)".to_string()
            } else {
                own("record")
            },
            job_c = own("job"),
            tab_c = own("table_name"),
        ))?;
        for r in rows {
            let Some(text) = r.into_iter().next().flatten() else {
                continue;
            };
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::runtime(format!("_rejects record is not JSON: {e}")))?;
            if let Some(obj) = json.as_object() {
                acc.rejected.push(
                    obj.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
                        .collect(),
                );
            }
        }
        cache.insert(t.clone(), acc.rejected.clone());
    }
    if let Some(t) = &m.explain {
        let merged = sink.query_text(&format!(
            "SELECT count(*) FROM {} WHERE {} = {} AND {} = {}",
            own(crate::sink::MERGES_TABLE),
            own("job"),
            q_lit(job),
            own("table_name"),
            q_lit(t)
        ))?;
        acc.merged = merged
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if m.kind == Kind::Count && m.key.is_some() {
            let ids = sink.query_text(&format!(
                "SELECT {} FROM {} WHERE {} = {} AND {} = {}",
                own("merged_id"),
                own(crate::sink::MERGES_TABLE),
                own("job"),
                q_lit(job),
                own("table_name"),
                q_lit(t)
            ))?;
            acc.merged_ids = ids
                .into_iter()
                .filter_map(|r| r.into_iter().next().flatten())
                .collect();
        }
    }
    if let Some(t) = &m.remap {
        let rows = sink.query_text(&format!(
            "SELECT {}, {} FROM {} WHERE {} = {} AND {} = {}",
            own("merged_id"),
            own("kept_id"),
            own(crate::sink::MERGES_TABLE),
            own("job"),
            q_lit(job),
            own("table_name"),
            q_lit(t)
        ))?;
        for r in rows {
            if let (Some(Some(a)), Some(Some(b))) = (r.first(), r.get(1)) {
                acc.remap.insert(a.clone(), b.clone());
            }
        }
    }
    Ok(acc)
}

/// The part of the source the run set apart, as the metric measures it.
fn set_apart(m: &MetricSpec, acc: &Accounting, mapping: Option<&Mapping>) -> Value {
    let mut stream = Stream::new(m, &BTreeMap::new());
    // the filter on source columns, applied to the rejected rows' values
    let conds: Vec<(Option<String>, Cond)> = conds(&m.source.filter)
        .into_iter()
        .map(|(c, cond)| (mapping.and_then(|mp| record_column(mp, &c)), cond))
        .collect();
    for rec in &acc.rejected {
        let ok = conds.iter().all(|(col, cond)| {
            col.as_ref()
                .is_some_and(|c| holds(rec.get(c).cloned().flatten().as_deref(), cond))
        });
        if !ok {
            continue;
        }
        // the record names values by target column
        let get = |name: &str| rec.get(name).cloned().flatten();
        stream.row(Which::Target, &[], &get);
    }
    stream.finish()
}

/// The verdict of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Source and target agree as they are.
    Ok,
    /// They differ exactly by what the run rejected and merged.
    Explained,
    /// They differ otherwise.
    Mismatch,
    /// The metric could not be computed.
    Error,
}

/// One metric's outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricResult {
    pub id: String,
    pub title: String,
    pub kind: Kind,
    /// Scalars: the value; other kinds: the number of groups or rows.
    pub source: f64,
    pub target: f64,
    /// Rows taken out of the source by the run (rejected, merged).
    pub rejected: f64,
    pub merged: f64,
    /// The arithmetic, as people read it.
    pub reconciliation: String,
    pub verdict: Verdict,
    /// What differs (keys, rows, positions), at most 50.
    #[serde(default)]
    pub differences: Vec<String>,
    /// A digest of each side's full value: a report diff tells a changed
    /// set from an unchanged one of the same size.
    #[serde(default)]
    pub source_digest: String,
    #[serde(default)]
    pub target_digest: String,
}

/// A job's validation report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub job: String,
    pub source: String,
    pub target: String,
    /// The run validated (the latest committed run of the job).
    pub run_id: Option<String>,
    pub generated_at: String,
    pub params: BTreeMap<String, String>,
    pub metrics: Vec<MetricResult>,
}

impl Report {
    pub fn mismatches(&self) -> usize {
        self.metrics
            .iter()
            .filter(|m| matches!(m.verdict, Verdict::Mismatch | Verdict::Error))
            .count()
    }
}

fn digest(v: &Value) -> String {
    use sha2::{Digest, Sha256};
    let text = match v {
        Value::Scalar(x) => crate::batch::format_float(*x),
        Value::Groups(g) => g
            .iter()
            .map(|(k, v)| format!("{k}\u{1f}{}", crate::batch::format_float(*v)))
            .collect::<Vec<_>>()
            .join("\u{1e}"),
        Value::Rows(r) => r
            .iter()
            .map(|row| row.join("\u{1f}"))
            .collect::<Vec<_>>()
            .join("\u{1e}"),
    };
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

fn size(v: &Value, kind: Kind) -> f64 {
    match v {
        Value::Scalar(x) => *x,
        Value::Groups(g) => g.len() as f64,
        Value::Rows(r) if kind == Kind::Set => {
            let mut d = r.clone();
            d.dedup();
            d.len() as f64
        }
        Value::Rows(r) => r.len() as f64,
    }
}

fn show_row(r: &[String]) -> String {
    format!("({})", r.join(", "))
}

const MAX_DIFFERENCES: usize = 50;

/// Compare a metric's sides with what the run set apart.
fn reconcile(
    m: &MetricSpec,
    source: &Value,
    target: &Value,
    apart: &Value,
    merged: u64,
    remap: &HashMap<String, String>,
) -> (Verdict, String, Vec<String>, f64, f64) {
    let unfiltered = m.source.filter.is_empty();
    match (source, target) {
        (Value::Scalar(s), Value::Scalar(t)) => {
            let rejected = match apart {
                Value::Scalar(r) if m.kind != Kind::CountDistinct => *r,
                _ => 0.0,
            };
            let merged = if m.kind == Kind::Count && unfiltered {
                merged as f64
            } else {
                0.0
            };
            // sums of decimals compare at their scale (a sum of floats
            // carries rounding noise far below a cent)
            let scale = match (&m.kind, &m.value) {
                (Kind::Sum, Some(v)) => v.scale.unwrap_or(2),
                _ => 6,
            };
            let r = |x: f64| parse::round_to(x, scale);
            let (s, t) = (&r(*s), &r(*t));
            let expected = r(s - rejected - merged);
            let tol = m.tolerance.max(1e-9);
            let f = crate::batch::format_float;
            let arithmetic = format!(
                "source {} = target {} + merged {} + rejected {}",
                f(*s),
                f(*t),
                f(merged),
                f(rejected)
            );
            let verdict = if (s - t).abs() <= tol {
                Verdict::Ok
            } else if (expected - t).abs() <= tol {
                Verdict::Explained
            } else {
                Verdict::Mismatch
            };
            let diffs = if verdict == Verdict::Mismatch {
                vec![format!(
                    "expected {} in the target (source {} − merged {} − rejected {}), found {}",
                    f(expected),
                    f(*s),
                    f(merged),
                    f(rejected),
                    f(*t)
                )]
            } else {
                Vec::new()
            };
            (verdict, arithmetic, diffs, rejected, merged)
        }
        (Value::Groups(s), Value::Groups(t)) => {
            // source keys merged into another row follow it
            let mut folded: BTreeMap<String, f64> = BTreeMap::new();
            for (k, v) in s {
                let k = remap.get(k).cloned().unwrap_or_else(|| k.clone());
                *folded.entry(k).or_insert(0.0) += v;
            }
            let mut rejected_total = 0.0;
            if let Value::Groups(r) = apart {
                for (k, v) in r {
                    let k = remap.get(k).cloned().unwrap_or_else(|| k.clone());
                    *folded.entry(k).or_insert(0.0) -= v;
                    rejected_total += v;
                }
            }
            let tol = m.tolerance.max(1e-9);
            let key_name = m.key.as_ref().map_or("key", |k| k.target.as_str());
            let mut diffs = Vec::new();
            let mut exact = s.len() == t.len();
            let keys: std::collections::BTreeSet<&String> = folded.keys().chain(t.keys()).collect();
            for k in keys {
                let e = folded.get(k).copied().unwrap_or(0.0);
                let got = t.get(k).copied().unwrap_or(0.0);
                exact &= (s.get(k).copied().unwrap_or(0.0) - got).abs() <= tol;
                if (e - got).abs() > tol {
                    diffs.push(format!(
                        "{key_name} {k}: expected {} (source {}), target {}",
                        crate::batch::format_float(e),
                        crate::batch::format_float(s.get(k).copied().unwrap_or(0.0)),
                        crate::batch::format_float(got)
                    ));
                }
            }
            let arithmetic = format!(
                "{} source groups ({} folded into merged keys), {} target groups; {} rejected rows taken out",
                s.len(),
                s.keys().filter(|k| remap.contains_key(*k)).count(),
                t.len(),
                crate::batch::format_float(rejected_total)
            );
            let verdict = if exact {
                Verdict::Ok
            } else if diffs.is_empty() {
                Verdict::Explained
            } else {
                Verdict::Mismatch
            };
            diffs.truncate(MAX_DIFFERENCES);
            (verdict, arithmetic, diffs, rejected_total, 0.0)
        }
        (Value::Rows(s), Value::Rows(t)) => {
            let rejected: Vec<Vec<String>> = match apart {
                Value::Rows(r) => r.clone(),
                _ => Vec::new(),
            };
            // each rejected row takes one occurrence out of the source
            let mut expected = s.clone();
            let mut taken = 0.0;
            for r in &rejected {
                if let Some(i) = expected.iter().position(|x| x == r) {
                    expected.remove(i);
                    taken += 1.0;
                }
            }
            let distinct = |v: &[Vec<String>]| {
                let mut d = v.to_vec();
                d.dedup();
                d
            };
            let (s, t, expected) = if m.kind == Kind::Set {
                (distinct(s), distinct(t), distinct(&expected))
            } else {
                (s.clone(), t.clone(), expected)
            };
            let arithmetic = format!(
                "{} source rows − {} rejected = {} expected; {} target rows",
                s.len(),
                crate::batch::format_float(taken),
                expected.len(),
                t.len()
            );
            let mut diffs = Vec::new();
            if m.kind == Kind::Set {
                let tset: std::collections::BTreeSet<&Vec<String>> = t.iter().collect();
                let eset: std::collections::BTreeSet<&Vec<String>> = expected.iter().collect();
                for r in eset.difference(&tset) {
                    diffs.push(format!("missing in the target: {}", show_row(r)));
                }
                for r in tset.difference(&eset) {
                    diffs.push(format!("not expected in the target: {}", show_row(r)));
                }
            } else {
                for i in 0..expected.len().max(t.len()) {
                    match (expected.get(i), t.get(i)) {
                        (Some(a), Some(b)) if a == b => {}
                        (a, b) => diffs.push(format!(
                            "position {}: expected {}, target {}",
                            i + 1,
                            a.map_or("nothing".into(), |r| show_row(r)),
                            b.map_or("nothing".into(), |r| show_row(r))
                        )),
                    }
                }
            }
            let verdict = if s == t {
                Verdict::Ok
            } else if diffs.is_empty() {
                Verdict::Explained
            } else {
                Verdict::Mismatch
            };
            diffs.truncate(MAX_DIFFERENCES);
            (verdict, arithmetic, diffs, taken, 0.0)
        }
        _ => (
            Verdict::Error,
            "the two sides have different shapes".into(),
            vec!["source and target returned different kinds of result".into()],
            0.0,
            0.0,
        ),
    }
}

/// A database's refusal to write, said in the validation's words.
fn explain_refusal(message: String) -> String {
    let read_only = [
        "SQLSTATE 25006",                       // PostgreSQL: read_only_sql_transaction
        "attempt to write a readonly database", // SQLite: query_only
        "ORA-01456",                            // Oracle: DML in a READ ONLY transaction
    ];
    if read_only.iter().any(|m| message.contains(m)) {
        format!("{message} (validation is read-only: the SQL of a metric may read, never write)")
    } else {
        message
    }
}

/// The latest committed (not dry) run of `job` in the target.
fn latest_run(sink: &mut dyn Sink, job: &str) -> Result<Option<String>> {
    let d = sink.dialect();
    let q = |t: &str| d.quote(t);
    let rows = sink.query_text(&format!(
        "SELECT {}, {}, {} FROM {} WHERE {} = {}",
        q("run_id"),
        q("finished_at"),
        q("dry_run"),
        q(crate::sink::RUNS_TABLE),
        q("job"),
        q_lit(job)
    ));
    let Ok(rows) = rows else {
        return Ok(None);
    };
    Ok(rows
        .into_iter()
        .filter(|r| {
            r.get(2)
                .cloned()
                .flatten()
                .and_then(|s| parse::parse_bool(&s))
                == Some(false)
        })
        .filter_map(|r| {
            let run = r.first().cloned().flatten()?;
            let at = r.get(1).cloned().flatten().unwrap_or_default();
            Some((at, run))
        })
        .max()
        .map(|(_, run)| run))
}

/// The source and target tables of a metric: its own, else the explained
/// mapping's.
fn tables_of(m: &MetricSpec, mapping: Option<&Mapping>) -> (String, String) {
    let src = m
        .source
        .table
        .clone()
        .or_else(|| {
            mapping.and_then(|mp| mp.source.table.clone().or_else(|| mp.source.sheet.clone()))
        })
        .unwrap_or_default();
    let tgt = m
        .target
        .table
        .clone()
        .or_else(|| m.explain.clone())
        .unwrap_or_default();
    (src, tgt)
}

/// Check that every column a metric names exists, on both sides, before
/// any metric runs: a misspelled column is a configuration error naming
/// the file and the metric, never a metric that quietly fails or (SQLite)
/// compares a string. Sides given as `sql` are the database's to check.
fn check_columns(cfg: &Config, v: &Validation, source: &Source, sink: &mut dyn Sink) -> Result<()> {
    let label = v.file.display().to_string();
    for m in &v.metrics {
        let at = format!("{label}: metric {}", m.id);
        let mapping = explained_mapping(m, &v.job);
        let (src_table, tgt_table) = tables_of(m, mapping);
        if m.source.sql.is_none() {
            let cols = needed_columns(m, Which::Source);
            let side = format!("the source table `{src_table}` ({})", source.describe());
            let found = match source {
                Source::Postgres(pg) => probe_columns(
                    &mut |sql| pg.query_text(sql).map(drop),
                    Dialect::Postgres,
                    &src_table,
                    &cols,
                ),
                _ => {
                    // the mapping's headers too: the header row is found by
                    // the texts it holds, and a misspelled one is not there
                    let mut wanted = cols.clone();
                    for h in mapping
                        .iter()
                        .flat_map(|mp| &mp.columns)
                        .flat_map(|c| c.sources())
                    {
                        if !wanted.iter().any(|w| header_key(w) == header_key(&h)) {
                            wanted.push(h);
                        }
                    }
                    let req =
                        source_request(&wanted, &src_table, mapping, cfg.run.batch_size, true)?;
                    let reader = source.read(req).map_err(|e| e.context(&at))?;
                    let headers: std::collections::HashSet<String> = reader
                        .columns
                        .iter()
                        .map(|c| header_key(&c.header))
                        .collect();
                    match cols.iter().find(|c| !headers.contains(&header_key(c))) {
                        Some(c) => Err(Missing::Column(c.clone())),
                        None => Ok(()),
                    }
                }
            };
            found.map_err(|e| e.error(&at, &side))?;
        }
        if m.target.sql.is_none() {
            let cols = needed_columns(m, Which::Target);
            let d = sink.dialect();
            let side = format!("the target table `{tgt_table}` ({})", sink.describe());
            probe_columns(
                &mut |sql| sink.query_text(sql).map(drop),
                d,
                &tgt_table,
                &cols,
            )
            .map_err(|e| e.error(&at, &side))?;
        }
    }
    Ok(())
}

/// What a metric names and a side does not have.
enum Missing {
    /// The table cannot be read, with the database's reason.
    Table(String),
    Column(String),
}

impl Missing {
    fn error(self, at: &str, side: &str) -> Error {
        Error::config(match self {
            Missing::Table(why) => format!("{at}: cannot read {side}: {why}"),
            Missing::Column(c) => {
                format!("{at}: no such column `{c}` in {side}; check its spelling")
            }
        })
    }
}

/// Read no row of `table`, then no row of each column: the first one the
/// database refuses is missing.
fn probe_columns(
    run: &mut dyn FnMut(&str) -> Result<()>,
    d: Dialect,
    table: &str,
    cols: &[String],
) -> std::result::Result<(), Missing> {
    let t = d.quote(table);
    run(&format!("SELECT 1 FROM {t} WHERE 1 = 0")).map_err(|e| Missing::Table(e.to_string()))?;
    for c in cols {
        if run(&format!("SELECT {} FROM {t} WHERE 1 = 0", d.quote(c))).is_err() {
            return Err(Missing::Column(c.clone()));
        }
    }
    Ok(())
}

/// Validate one job against the configured target.
pub fn validate(cfg: &Config, v: &Validation) -> Result<Report> {
    let job = &v.job;
    let src_cfg = cfg.source(&job.source)?;
    let source = Source::open(&job.source, src_cfg).map_err(|e| {
        e.context(format!(
            "validation of {}, source `{}`",
            job.name, job.source
        ))
    })?;
    let mut sink = crate::sink::open(&cfg.target.url, true)
        .map_err(|e| e.context(format!("validation of {}, target", job.name)))?;
    sink.begin_read_only()?;
    let run_id = latest_run(sink.as_mut(), &job.name)?;
    if run_id.is_none() {
        return Err(Error::config(format!(
            "job {} has no committed run in {}: run `repaero migrate {}` first",
            job.name,
            sink.describe(),
            job.name
        )));
    }
    check_columns(cfg, v, &source, sink.as_mut())?;
    let mut report = Report {
        job: job.name.clone(),
        source: source.describe(),
        target: sink.describe(),
        run_id,
        generated_at: chrono::Utc::now().to_rfc3339(),
        params: v.params.clone(),
        metrics: Vec::new(),
    };
    let mut cache = RejectCache::new();
    for m in &v.metrics {
        let result = (|| -> Result<MetricResult> {
            let mapping = explained_mapping(m, job);
            let (src_table, tgt_table) = tables_of(m, mapping);
            let source_value = match &source {
                Source::Postgres(pg) => value_of_rows(
                    m,
                    pg.query_text(&metric_sql(m, Which::Source, Dialect::Postgres, &src_table))?,
                ),
                _ if m.source.sql.is_some() => {
                    return Err(Error::config(format!(
                        "metric {}: source.sql needs a database source; {} is streamed",
                        m.id,
                        source.describe()
                    )));
                }
                _ => stream_source(&source, m, &src_table, mapping, cfg.run.batch_size)?,
            };
            let d = sink.dialect();
            let target_value = value_of_rows(
                m,
                sink.query_text(&metric_sql(m, Which::Target, d, &tgt_table))?,
            );
            let acc = accounting(sink.as_mut(), &job.name, m, &mut cache)?;
            let apart = set_apart(m, &acc, mapping);
            let (verdict, reconciliation, mut differences, rejected, merged) = reconcile(
                m,
                &source_value,
                &target_value,
                &apart,
                acc.merged,
                &acc.remap,
            );
            // a count that does not add up: which keys (when it has one)
            if verdict == Verdict::Mismatch && m.kind == Kind::Count && m.key.is_some() {
                let keys = MetricSpec {
                    kind: Kind::Set,
                    columns: m.key.iter().cloned().collect(),
                    ..m.clone()
                };
                let src_keys = match &source {
                    Source::Postgres(pg) => value_of_rows(
                        &keys,
                        pg.query_text(&metric_sql(
                            &keys,
                            Which::Source,
                            Dialect::Postgres,
                            &src_table,
                        ))?,
                    ),
                    _ => stream_source(&source, &keys, &src_table, mapping, cfg.run.batch_size)?,
                };
                let tgt_keys = value_of_rows(
                    &keys,
                    sink.query_text(&metric_sql(&keys, Which::Target, d, &tgt_table))?,
                );
                let mut apart_keys = set_apart(&keys, &acc, mapping);
                if let (Value::Rows(r), Some(k)) = (&mut apart_keys, &m.key) {
                    r.extend(
                        acc.merged_ids
                            .iter()
                            .map(|id| vec![canon_pair(k, Some(id))]),
                    );
                }
                let (_, _, key_diffs, _, _) =
                    reconcile(&keys, &src_keys, &tgt_keys, &apart_keys, 0, &HashMap::new());
                let name = m.key.as_ref().map_or("key", |k| k.target.as_str());
                differences.extend(key_diffs.into_iter().map(|d| {
                    d.replace(
                        "missing in the target: (",
                        &format!("{name} missing in the target: ("),
                    )
                    .replace(
                        "not expected in the target: (",
                        &format!("{name} not expected in the target: ("),
                    )
                }));
                differences.truncate(MAX_DIFFERENCES);
            }
            Ok(MetricResult {
                id: m.id.clone(),
                title: m.title.clone(),
                kind: m.kind,
                source: size(&source_value, m.kind),
                target: size(&target_value, m.kind),
                rejected,
                merged,
                reconciliation,
                verdict,
                differences,
                source_digest: digest(&source_value),
                target_digest: digest(&target_value),
            })
        })();
        report.metrics.push(match result {
            Ok(r) => r,
            Err(e) => MetricResult {
                id: m.id.clone(),
                title: m.title.clone(),
                kind: m.kind,
                source: 0.0,
                target: 0.0,
                rejected: 0.0,
                merged: 0.0,
                reconciliation: String::new(),
                verdict: Verdict::Error,
                differences: vec![explain_refusal(e.to_string())],
                source_digest: String::new(),
                target_digest: String::new(),
            },
        });
    }
    sink.rollback()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_values() {
        assert_eq!(
            canon(ColumnType::Text, None, "  Main  d’œuvre\u{a0}").as_deref(),
            Some("Main d’œuvre")
        );
        assert_eq!(
            canon(ColumnType::Integer, None, "12").as_deref(),
            Some("12")
        );
        assert_eq!(
            canon(ColumnType::Decimal, Some(2), "1 234,5").as_deref(),
            Some("1234.50")
        );
        assert_eq!(
            canon(ColumnType::Decimal, Some(2), "12.3049").as_deref(),
            Some("12.30")
        );
        assert_eq!(canon(ColumnType::Boolean, None, "1").as_deref(), Some("t"));
        assert_eq!(
            canon(ColumnType::Date, None, "2025-01-02 00:00:00").as_deref(),
            Some("2025-01-02")
        );
        assert_eq!(
            canon(ColumnType::Date, None, "02/01/2025").as_deref(),
            Some("2025-01-02")
        );
        assert_eq!(
            canon(ColumnType::Time, None, "1899-12-30 08:30:00").as_deref(),
            Some("08:30:00")
        );
        assert_eq!(
            canon(ColumnType::Time, None, "08:30:00").as_deref(),
            Some("08:30:00")
        );
        assert_eq!(
            canon(ColumnType::Datetime, None, "2025-01-02 08:30:00+00").as_deref(),
            Some("2025-01-02 08:30:00.000")
        );
        assert_eq!(canon(ColumnType::Text, None, "  "), None);
    }

    #[test]
    fn conditions_on_raw_values() {
        let eq = |v: toml::Value| Cond::Eq(v);
        assert!(holds(Some("1"), &eq(toml::Value::Boolean(true))));
        assert!(holds(Some("true"), &eq(toml::Value::Boolean(true))));
        assert!(!holds(Some("0"), &eq(toml::Value::Boolean(true))));
        assert!(holds(Some("3"), &eq(toml::Value::Integer(3))));
        assert!(holds(
            Some(" payée "),
            &Cond::AnyOf(vec!["payée".into(), "partiellement payée".into()])
        ));
        let oct = Cond::Range(Some("2026-10-01".into()), Some("2026-11-01".into()));
        assert!(holds(Some("2026-10-31 00:00:00"), &oct));
        assert!(holds(Some("12/10/2026"), &oct));
        assert!(!holds(Some("2026-11-01"), &oct));
        assert!(!holds(None, &oct));
        let mut f = BTreeMap::new();
        f.insert(
            "statut".to_string(),
            toml::Value::Array(vec!["payée".into()]),
        );
        f.insert("analysee".to_string(), toml::Value::Boolean(true));
        f.insert(
            "jour".to_string(),
            toml::Value::Table(toml::toml! { from = "2026-10-01" to = "2026-11-01" }),
        );
        assert_eq!(
            where_sql(Dialect::Postgres, &f),
            " WHERE \"analysee\" = TRUE AND \"jour\" >= '2026-10-01' AND \"jour\" < '2026-11-01' AND \"statut\" IN ('payée')"
        );
        assert_eq!(
            where_sql(Dialect::Oracle, &f),
            " WHERE \"ANALYSEE\" = 1 AND \"JOUR\" >= DATE '2026-10-01' AND \"JOUR\" < DATE '2026-11-01' AND \"STATUT\" IN ('payée')"
        );
    }

    #[test]
    fn params_give_the_previous_month() {
        let mut raw = BTreeMap::new();
        raw.insert("as_of".into(), toml::Value::String("2026-01-14".into()));
        raw.insert("month".into(), toml::Value::String("previous".into()));
        let p = resolve_params(&raw, "v.toml").unwrap();
        assert_eq!(p["month_start"], "2025-12-01");
        assert_eq!(p["month_end"], "2026-01-01");
        assert_eq!(
            subst_value(&toml::Value::String("{month_start}".into()), &p),
            toml::Value::String("2025-12-01".into())
        );
        let mut p2 = BTreeMap::new();
        p2.insert("technician".to_string(), "3".to_string());
        assert_eq!(
            subst_value(&toml::Value::String("{technician}".into()), &p2),
            toml::Value::Integer(3)
        );
    }

    fn metric(kind: Kind) -> MetricSpec {
        MetricSpec {
            id: "M".into(),
            title: "t".into(),
            kind,
            explain: None,
            remap: None,
            key: None,
            value: None,
            columns: vec![],
            source: Side::default(),
            target: Side::default(),
            tolerance: 0.0,
        }
    }

    #[test]
    fn metric_sql_is_pushed_down_per_dialect() {
        let mut m = metric(Kind::Sum);
        m.value = Some(ColumnPair {
            source: "montant".into(),
            target: "amount".into(),
            ty: ColumnType::Decimal,
            scale: Some(2),
            case: None,
        });
        m.target
            .filter
            .insert("status".into(), toml::Value::Array(vec!["payée".into()]));
        assert_eq!(
            metric_sql(&m, Which::Target, Dialect::Sqlite, "payments"),
            "SELECT sum(round(\"amount\", 2)) FROM \"payments\" WHERE \"status\" IN ('payée')"
        );
        assert_eq!(
            metric_sql(&m, Which::Target, Dialect::Oracle, "payments"),
            "SELECT sum(round(\"AMOUNT\", 2)) FROM \"PAYMENTS\" WHERE \"STATUS\" IN ('payée')"
        );
        let mut g = metric(Kind::Grouped);
        g.key = Some(ColumnPair {
            source: "statut".into(),
            target: "status".into(),
            ty: ColumnType::Text,
            scale: None,
            case: None,
        });
        assert_eq!(
            metric_sql(&g, Which::Source, Dialect::Postgres, "factures"),
            "SELECT \"statut\", count(*) FROM \"factures\" GROUP BY \"statut\""
        );
        let mut q = metric(Kind::Sequence);
        q.columns = vec![ColumnPair {
            source: "Libelle".into(),
            target: "label".into(),
            ty: ColumnType::Text,
            scale: None,
            case: None,
        }];
        q.target.order_by = vec!["position".into()];
        q.target
            .filter
            .insert("workflow_id".into(), toml::Value::Integer(7));
        assert_eq!(
            metric_sql(&q, Which::Target, Dialect::Postgres, "workflow_steps"),
            "SELECT \"label\" FROM \"workflow_steps\" WHERE \"workflow_id\" = 7 ORDER BY \"position\""
        );
        q.target.sql = Some("SELECT label FROM v".into());
        assert_eq!(
            metric_sql(&q, Which::Target, Dialect::Postgres, "x"),
            "SELECT label FROM v"
        );
    }

    #[test]
    fn reconciliation_arithmetic() {
        let m = metric(Kind::Count);
        let (v, a, d, _, _) = reconcile(
            &m,
            &Value::Scalar(600.0),
            &Value::Scalar(570.0),
            &Value::Scalar(0.0),
            30,
            &HashMap::new(),
        );
        assert_eq!(v, Verdict::Explained);
        assert_eq!(a, "source 600 = target 570 + merged 30 + rejected 0");
        assert!(d.is_empty());
        let (v, _, d, _, _) = reconcile(
            &m,
            &Value::Scalar(600.0),
            &Value::Scalar(569.0),
            &Value::Scalar(0.0),
            30,
            &HashMap::new(),
        );
        assert_eq!(v, Verdict::Mismatch);
        assert_eq!(
            d,
            vec!["expected 570 in the target (source 600 − merged 30 − rejected 0), found 569"]
        );
        // grouped: a merged key folds into its survivor; rejected rows come out
        let g = |pairs: &[(&str, f64)]| {
            Value::Groups(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect())
        };
        let mut m = metric(Kind::Grouped);
        m.key = Some(ColumnPair {
            source: "IdClient".into(),
            target: "client_id".into(),
            ty: ColumnType::Integer,
            scale: None,
            case: None,
        });
        let remap: HashMap<String, String> = [("7".to_string(), "3".to_string())].into();
        let (v, _, d, _, _) = reconcile(
            &m,
            &g(&[("3", 2.0), ("7", 1.0), ("999", 4.0)]),
            &g(&[("3", 3.0)]),
            &g(&[("999", 4.0)]),
            0,
            &remap,
        );
        assert_eq!((v, d.len()), (Verdict::Explained, 0));
        let (v, _, d, _, _) = reconcile(
            &m,
            &g(&[("3", 2.0), ("7", 1.0)]),
            &g(&[("3", 2.0)]),
            &g(&[]),
            0,
            &remap,
        );
        assert_eq!(v, Verdict::Mismatch);
        assert_eq!(d, vec!["client_id 3: expected 3 (source 2), target 2"]);
        // sequences say where they part
        let rows = |r: &[&str]| Value::Rows(r.iter().map(|x| vec![x.to_string()]).collect());
        let (v, _, d, _, _) = reconcile(
            &metric(Kind::Sequence),
            &rows(&["a", "b", "c"]),
            &rows(&["a", "c", "b"]),
            &rows(&[]),
            0,
            &HashMap::new(),
        );
        assert_eq!(v, Verdict::Mismatch);
        assert_eq!(
            d,
            vec![
                "position 2: expected (b), target (c)",
                "position 3: expected (c), target (b)"
            ]
        );
        let (v, _, d, _, _) = reconcile(
            &metric(Kind::Set),
            &rows(&["a", "b", "x"]),
            &rows(&["a", "b"]),
            &rows(&["x"]),
            0,
            &HashMap::new(),
        );
        assert_eq!((v, d.len()), (Verdict::Explained, 0));
    }
}
