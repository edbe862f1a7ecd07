//! The validation file: its metrics, parameters and checks against the
//! job they validate.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::batch::parse;
use crate::config::mapping::{ColumnType, Mapping};
use crate::config::{Config, Env, Job};
use crate::error::{Error, Result};
use crate::source::header_key;
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

pub(super) fn text_type() -> ColumnType {
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

pub(super) fn substitute(s: &str, params: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in params {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

pub(super) fn subst_value(v: &toml::Value, params: &BTreeMap<String, String>) -> toml::Value {
    match v {
        toml::Value::String(s) => {
            let s2 = substitute(s, params);
            // a whole-value parameter keeps its type (`{technician}` → 3)
            if s.starts_with('{')
                && s.ends_with('}')
                && let Ok(i) = s2.parse::<i64>()
            {
                return toml::Value::Integer(i);
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

pub(super) fn param_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(d) => d.to_string(),
        other => other.to_string(),
    }
}

/// Parameters as text, with `month_start` and `month_end` derived from
/// `as_of` and `month`.
pub(super) fn resolve_params(
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

pub(super) fn check_metric(m: &MetricSpec, job: &Job, label: &str) -> Result<()> {
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

pub(super) fn explained_mapping<'a>(m: &MetricSpec, job: &'a Job) -> Option<&'a Mapping> {
    let t = m.explain.as_ref()?;
    job.tables
        .iter()
        .map(|(mp, _)| mp)
        .find(|mp| &mp.target.table == t)
}

/// The name a source column has in a rejected row's record (the target
/// column it feeds).
pub(super) fn record_column(mapping: &Mapping, source_col: &str) -> Option<String> {
    let key = header_key(source_col);
    mapping
        .columns
        .iter()
        .find(|c| c.sources().iter().any(|s| header_key(s) == key))
        .map(|c| c.name.clone())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::mapping::ColumnType;

    pub(in crate::validate) fn metric(kind: Kind) -> MetricSpec {
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
}
