//! Transforms: from a batch of source text to typed target rows, with the
//! rows that cannot be kept rejected, each with its reason.
//!
//! [`Mapper`] does, column by column on a whole batch: rename (the source
//! already named the columns after the target), clean text (trim, spaces,
//! case, null markers), fill down, cast (numbers in French or English form,
//! dates, booleans) and the reject rules (required, range, pattern, allowed
//! values, reference to another table). Its only state across batches is
//! the last value of each fill-down column. [`dedupe::Dedupe`] merges rows
//! on a key and says what it holds.

pub mod clean;
pub mod dedupe;

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};

use polars::prelude::*;
use regex::Regex;

use crate::batch::parse::{
    NumberError, epoch_days, epoch_millis, parse_bool, parse_date, parse_datetime, parse_number,
    parse_time_of_day, round_to, to_integer,
};
use crate::batch::{Cursor, ValueRef, date_text, dtype_of, format_float, row_numbers};
use crate::batch::{ROW_COLUMN, Reject};
use crate::config::mapping::{ColumnSpec, ColumnType, Mapping, PhoneFormat};
use crate::error::{Error, Result};
use clean::{TextRules, clean_text};

/// Outcome of mapping one batch.
pub struct Mapped {
    /// Typed rows kept, with the `__row` column.
    pub kept: DataFrame,
    pub rejects: Vec<Reject>,
}

#[derive(Debug, Clone, Copy)]
enum Bound {
    Num(f64),
    Day(i32),
    Millis(i64),
    Nanos(i64),
}

impl Bound {
    fn show(&self) -> String {
        match self {
            Bound::Num(v) => format_float(*v),
            Bound::Day(d) => date_text(*d),
            Bound::Millis(m) => crate::batch::datetime_text(*m),
            Bound::Nanos(n) => crate::batch::time_text(*n),
        }
    }
}

struct Plan {
    spec: ColumnSpec,
    text: TextRules,
    fill_last: Option<String>,
    pattern: Option<Regex>,
    one_of: Option<HashSet<String>>,
    min: Option<Bound>,
    max: Option<Bound>,
    refs: Option<std::sync::Arc<crate::batch::KeySet>>,
    /// Merged id → kept id, for `remap`.
    remap: Option<HashMap<String, String>>,
    /// Values replaced by `remap` in the current batch.
    remapped: Cell<u64>,
    /// Date placeholders (`null_values` that read as dates), compared as
    /// dates whatever the text form of the source ("1900-01-01",
    /// "01/01/1900 00:00:00").
    null_days: Vec<i32>,
    /// Placeholders set to NULL by value in the current batch.
    nulled: Cell<u64>,
    /// Decimals rounded to their scale in the current batch.
    rounded: Cell<u64>,
    /// Largest absolute value a decimal(p, s) holds.
    decimal_limit: f64,
}

struct RowError {
    reason: String,
    detail: String,
}

/// Maps source batches to typed target rows.
pub struct Mapper {
    plans: Vec<Plan>,
    checks: Vec<crate::config::mapping::CheckSpec>,
    /// Rows whose failed rules only flagged them, by reason.
    pub flagged: BTreeMap<String, u64>,
    /// Placeholder values (`null_values`) turned into NULL, per column.
    pub nulled: BTreeMap<String, u64>,
    /// Values replaced through a `remap`, per column.
    pub remapped: BTreeMap<String, u64>,
    /// Decimals that had more digits than their scale, per column.
    pub rounded: BTreeMap<String, u64>,
    /// Every rule failure seen, by reason (a row failing two rules counts in
    /// both; the tally counts the row once, under its first reason).
    pub failures: BTreeMap<String, u64>,
    /// Empty cells filled from the row above, per column.
    pub filled: BTreeMap<String, u64>,
}

fn bound(v: &toml::Value, spec: &ColumnSpec, file: &str, which: &str) -> Result<Bound> {
    let bad = || {
        Error::config(format!(
            "{file}: column `{}`: {which} = {v} does not fit a {} column",
            spec.name,
            spec.ty.as_str()
        ))
    };
    match spec.ty {
        ColumnType::Integer | ColumnType::Decimal | ColumnType::Float => match v {
            toml::Value::Integer(i) => Ok(Bound::Num(*i as f64)),
            toml::Value::Float(f) => Ok(Bound::Num(*f)),
            _ => Err(bad()),
        },
        ColumnType::Date => match v {
            toml::Value::String(s) => parse_date(s, &[])
                .map(|d| Bound::Day(epoch_days(d)))
                .ok_or_else(bad),
            toml::Value::Datetime(d) => parse_date(&d.to_string(), &[])
                .map(|d| Bound::Day(epoch_days(d)))
                .ok_or_else(bad),
            _ => Err(bad()),
        },
        ColumnType::Datetime => match v {
            toml::Value::String(s) => parse_datetime(s, &[])
                .map(|d| Bound::Millis(epoch_millis(d)))
                .ok_or_else(bad),
            toml::Value::Datetime(d) => parse_datetime(&d.to_string(), &[])
                .map(|d| Bound::Millis(epoch_millis(d)))
                .ok_or_else(bad),
            _ => Err(bad()),
        },
        ColumnType::Time => match v {
            toml::Value::String(s) => parse_time_of_day(s).map(Bound::Nanos).ok_or_else(bad),
            _ => Err(bad()),
        },
        ColumnType::Text | ColumnType::Boolean | ColumnType::Binary => Err(Error::config(format!(
            "{file}: column `{}`: {which} applies to numbers and dates, not {}",
            spec.name,
            spec.ty.as_str()
        ))),
    }
}

impl Mapper {
    pub fn new(mapping: &Mapping) -> Result<Mapper> {
        let file = &mapping.file;
        let mut plans = Vec::with_capacity(mapping.columns.len());
        for spec in &mapping.columns {
            let pattern = match &spec.pattern {
                Some(p) => Some(Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                    Error::config(format!("{file}: column `{}`: bad pattern: {e}", spec.name))
                })?),
                None => None,
            };
            let min = spec
                .min
                .as_ref()
                .map(|v| bound(v, spec, file, "min"))
                .transpose()?;
            let max = spec
                .max
                .as_ref()
                .map(|v| bound(v, spec, file, "max"))
                .transpose()?;
            let int_digits = spec.precision() as i32 - spec.scale() as i32;
            plans.push(Plan {
                text: TextRules {
                    trim: spec.trim,
                    collapse_spaces: spec.collapse_spaces,
                    case: spec.case,
                    // dates compare placeholders as dates, once parsed
                    null_values: if matches!(spec.ty, ColumnType::Date | ColumnType::Datetime) {
                        Vec::new()
                    } else {
                        spec.null_values
                            .iter()
                            .map(|s| s.trim().to_lowercase())
                            .collect()
                    },
                },
                fill_last: None,
                pattern,
                one_of: spec.one_of.as_ref().map(|v| v.iter().cloned().collect()),
                min,
                max,
                refs: None,
                remap: None,
                remapped: Cell::new(0),
                null_days: if matches!(spec.ty, ColumnType::Date | ColumnType::Datetime) {
                    spec.null_values
                        .iter()
                        .filter_map(|v| parse_date(v, &[]))
                        .map(epoch_days)
                        .collect()
                } else {
                    Vec::new()
                },
                nulled: Cell::new(0),
                rounded: Cell::new(0),
                decimal_limit: 10f64.powi(int_digits),
                spec: spec.clone(),
            });
        }
        Ok(Mapper {
            plans,
            checks: mapping.checks.clone(),
            flagged: BTreeMap::new(),
            nulled: BTreeMap::new(),
            remapped: BTreeMap::new(),
            rounded: BTreeMap::new(),
            failures: BTreeMap::new(),
            filled: BTreeMap::new(),
        })
    }

    /// Columns with a reference rule: (column, table, referenced column).
    pub fn references(&self) -> Vec<(String, String, String)> {
        self.plans
            .iter()
            .filter_map(|p| {
                p.spec
                    .references
                    .as_ref()
                    .map(|r| (p.spec.name.clone(), r.table.clone(), r.column.clone()))
            })
            .collect()
    }

    /// Provide the known values for a column's reference rule.
    pub fn set_reference_values(
        &mut self,
        column: &str,
        values: impl Into<std::sync::Arc<crate::batch::KeySet>>,
    ) {
        if let Some(p) = self.plans.iter_mut().find(|p| p.spec.name == column) {
            p.refs = Some(values.into());
        }
    }

    /// Columns with a `remap`: (column, "table.id").
    pub fn remaps(&self) -> Vec<(String, String)> {
        self.plans
            .iter()
            .filter_map(|p| {
                p.spec
                    .remap
                    .as_ref()
                    .map(|r| (p.spec.name.clone(), r.clone()))
            })
            .collect()
    }

    /// The type a column's values can be handed over in, typed, when the
    /// source holds them in exactly that type: no text rule applies to the
    /// column (no placeholders, fill-down, padding, phone, remap, date
    /// formats, flag-only rules), so its text would only be read back into
    /// the same value. Integers, decimals and date-times.
    pub fn carries(&self, column: &str) -> Option<ColumnType> {
        let p = self.plans.iter().find(|p| p.spec.name == column)?;
        let s = &p.spec;
        let plain = s.null_values.is_empty()
            && !s.fill_down
            && s.zero_pad.is_none()
            && s.phone.is_none()
            && s.remap.is_none()
            && p.remap.is_none()
            && !s.flag_only()
            && s.date_formats.is_empty();
        (plain
            && matches!(
                s.ty,
                ColumnType::Integer | ColumnType::Decimal | ColumnType::Datetime
            ))
        .then_some(s.ty)
    }

    /// Provide the merged → kept ids for a column's `remap`.
    pub fn set_remap(&mut self, column: &str, map: HashMap<String, String>) {
        if let Some(p) = self.plans.iter_mut().find(|p| p.spec.name == column) {
            p.remap = Some(map);
        }
    }

    /// The target schema (name, polars type), without `__row`.
    pub fn schema(&self) -> Vec<(String, DataType)> {
        self.plans
            .iter()
            .map(|p| (p.spec.name.clone(), dtype_of(p.spec.ty)))
            .collect()
    }

    /// Map one raw batch.
    pub fn apply(&mut self, raw: &DataFrame) -> Result<Mapped> {
        let n = raw.height();
        let mut errors: Vec<Option<RowError>> = (0..n).map(|_| None).collect();
        let mut out: Vec<Column> = Vec::with_capacity(self.plans.len() + 1);
        for plan in self.plans.iter_mut() {
            let name = plan.spec.name.clone();
            let mut failures = Failures::new(
                &mut errors,
                &mut self.failures,
                &mut self.flagged,
                plan.spec.flag_only(),
                n,
            );
            // values the source handed over typed (see `carries`)
            if let Ok(c) = raw.column(&name)
                && c.dtype() != &DataType::String
            {
                out.push(plan.cast_carried(raw, c, &mut failures)?);
                add_count(&mut self.rounded, &name, plan.rounded.take());
                continue;
            }
            let raw_col = match raw.column(&name) {
                Ok(c) => Some(
                    c.str()
                        .map_err(|e| Error::runtime(format!("column {name}: {e}")))?,
                ),
                Err(_) => None,
            };
            // typed cells (numbers, dates) hold canonical text
            let typed: Vec<bool> = raw
                .column(&crate::batch::typed_column(&name))
                .ok()
                .and_then(|c| c.bool().ok())
                .map(|t| t.iter().map(|v| v.unwrap_or(false)).collect())
                .unwrap_or_default();
            let raw_values: Vec<Option<&str>> = match raw_col {
                Some(c) => c.iter().collect(),
                None => vec![None; n],
            };
            // clean and fill down; clean values borrow the batch
            let mut cleaned: Vec<Option<Cow<'_, str>>> = Vec::with_capacity(n);
            let mut phone_bad: Vec<bool> = Vec::new();
            for (i, &raw_v) in raw_values.iter().enumerate() {
                // canonical text needs no cleaning
                let mut v = match raw_v {
                    Some(s)
                        if typed.get(i).copied().unwrap_or(false)
                            && plan.text.null_values.is_empty() =>
                    {
                        Some(Cow::Borrowed(s))
                    }
                    _ => raw_v.and_then(|s| clean_text(s, &plan.text)),
                };
                if v.is_none()
                    && !plan.text.null_values.is_empty()
                    && raw_v.is_some_and(|s| {
                        !s.trim_matches(|c: char| c.is_whitespace() || c == '\u{a0}')
                            .is_empty()
                    })
                {
                    *self.nulled.entry(name.clone()).or_default() += 1;
                }
                if let (Some(width), Some(s)) = (plan.spec.zero_pad, v.as_deref())
                    && s.len() < width as usize
                    && s.bytes().all(|b| b.is_ascii_digit())
                {
                    v = Some(Cow::Owned(format!("{s:0>w$}", w = width as usize)));
                }
                if let (Some(PhoneFormat::Fr), Some(s)) = (plan.spec.phone, v.as_deref()) {
                    match clean::phone_e164_fr(s) {
                        Some(e164) => v = Some(Cow::Owned(e164)),
                        None => {
                            phone_bad.resize(n, false);
                            phone_bad[i] = true;
                        }
                    }
                }
                let v = if plan.spec.fill_down {
                    match v {
                        Some(v) => {
                            plan.fill_last = Some(v.to_string());
                            Some(v)
                        }
                        None => {
                            if plan.fill_last.is_some() {
                                *self.filled.entry(name.clone()).or_default() += 1;
                            }
                            plan.fill_last.clone().map(Cow::Owned)
                        }
                    }
                } else {
                    v
                };
                cleaned.push(v);
            }
            for (i, bad) in phone_bad.iter().enumerate() {
                if *bad {
                    let s = cleaned[i].as_deref().unwrap_or("");
                    failures.failed(
                        i,
                        format!("{name}: not a phone number"),
                        format!("{name} = {s:?} is not a phone number"),
                    );
                }
            }
            out.push(plan.cast_and_check(&cleaned, &typed, &mut failures)?);
            add_count(&mut self.nulled, &name, plan.nulled.take());
            add_count(&mut self.rounded, &name, plan.rounded.take());
            add_count(&mut self.remapped, &name, plan.remapped.take());
            if plan.spec.flag_only() {
                let invalid = failures.invalid;
                let valid = BooleanChunked::from_iter_options(
                    plan.spec.valid_column().as_str().into(),
                    cleaned
                        .iter()
                        .zip(&invalid)
                        .map(|(v, bad)| v.as_ref().map(|_| !bad)),
                );
                out.push(valid.into_series().into_column());
            }
        }
        self.check_rows(&mut out, &mut errors)?;
        // a line the source could not read is rejected for that alone
        if let (Ok(reason), Ok(detail)) = (
            raw.column(crate::batch::ERROR_COLUMN),
            raw.column(crate::batch::ERROR_DETAIL_COLUMN),
        ) {
            let (reason, detail) = (
                reason
                    .str()
                    .map_err(|e| Error::runtime(format!("source errors: {e}")))?,
                detail
                    .str()
                    .map_err(|e| Error::runtime(format!("source errors: {e}")))?,
            );
            for (i, (r, d)) in reason.iter().zip(detail.iter()).enumerate() {
                if let (Some(r), Some(slot)) = (r, errors.get_mut(i)) {
                    *slot = Some(RowError {
                        reason: r.to_string(),
                        detail: d.unwrap_or(r).to_string(),
                    });
                }
            }
        }
        let rows = raw.column(ROW_COLUMN).cloned().unwrap_or_else(|_| {
            UInt64Chunked::from_vec(ROW_COLUMN.into(), vec![0; n])
                .into_series()
                .into_column()
        });
        out.push(rows);
        let typed =
            DataFrame::new(n, out).map_err(|e| Error::runtime(format!("mapping a batch: {e}")))?;
        if errors.iter().all(|e| e.is_none()) {
            return Ok(Mapped {
                kept: typed,
                rejects: Vec::new(),
            });
        }
        let mask =
            BooleanChunked::from_iter_values("keep".into(), errors.iter().map(|e| e.is_none()));
        let kept = typed
            .filter(&mask)
            .map_err(|e| Error::runtime(format!("filtering a batch: {e}")))?;
        let row_nums = row_numbers(raw);
        let names: Vec<String> = raw
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .filter(|n| !crate::batch::is_internal(n))
            .collect();
        let raw_cols: Vec<Option<&Column>> = names.iter().map(|n| raw.column(n).ok()).collect();
        let mut rejects = Vec::new();
        for (i, e) in errors.into_iter().enumerate() {
            if let Some(e) = e {
                let record = names
                    .iter()
                    .zip(&raw_cols)
                    .map(|(n, c)| (n.clone(), c.and_then(|c| raw_text(raw, c, i))))
                    .collect();
                rejects.push(Reject {
                    row: row_nums[i],
                    reason: e.reason,
                    detail: e.detail,
                    record,
                });
            }
        }
        Ok(Mapped { kept, rejects })
    }
}

/// A source value as text, for a rejected row's record: the text of a
/// text column; a carried value in the form its source writes it.
fn raw_text(raw: &DataFrame, c: &Column, i: usize) -> Option<String> {
    match c.dtype() {
        DataType::String => c.str().ok()?.get(i).map(|s| s.to_string()),
        DataType::Int64 => c.i64().ok()?.get(i).map(|x| x.to_string()),
        DataType::Float64 => {
            let x = c.f64().ok()?.get(i)?;
            Some(carried_decimal_text(raw, c.name(), i, x))
        }
        DataType::Datetime(TimeUnit::Microseconds, tz) => {
            let us = c.datetime().ok()?.physical().get(i)?;
            let mut s = String::new();
            crate::db::pg_binary::timestamp_text(us, tz.is_some(), &mut s);
            Some(s)
        }
        _ => Cursor::new(c).ok()?.get(i).to_text(),
    }
}

/// A carried decimal's text as its source wrote it: the value at its
/// display scale (`14.8000`), or the text carried beside it.
fn carried_decimal_text(raw: &DataFrame, name: &str, i: usize, x: f64) -> String {
    let text = raw
        .column(&crate::batch::carried_text_column(name))
        .ok()
        .and_then(|c| c.str().ok())
        .and_then(|c| c.get(i));
    if let Some(t) = text {
        return t.to_string();
    }
    let scale = raw
        .column(&crate::batch::carried_scale_column(name))
        .ok()
        .and_then(|c| c.i32().ok())
        .and_then(|c| c.get(i));
    match scale {
        // a zero has no sign in the source's text
        Some(d) => format!("{:.*}", d.max(0) as usize, if x == 0.0 { 0.0 } else { x }),
        None => format_float(x),
    }
}

fn compare(a: &ValueRef<'_>, b: &ValueRef<'_>) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (ValueRef::Int(x), ValueRef::Int(y)) => Some(x.cmp(y)),
        (ValueRef::Float(x), ValueRef::Float(y)) => x.partial_cmp(y),
        (ValueRef::Int(x), ValueRef::Float(y)) => (*x as f64).partial_cmp(y),
        (ValueRef::Float(x), ValueRef::Int(y)) => x.partial_cmp(&(*y as f64)),
        (ValueRef::Date(x), ValueRef::Date(y)) => Some(x.cmp(y)),
        (ValueRef::Datetime(x), ValueRef::Datetime(y)) => Some(x.cmp(y)),
        (ValueRef::Time(x), ValueRef::Time(y)) => Some(x.cmp(y)),
        (ValueRef::Text(x), ValueRef::Text(y)) => Some(x.cmp(y)),
        (ValueRef::Bool(x), ValueRef::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

impl Mapper {
    /// `[[checks]]`: compare two typed columns of each row.
    fn check_rows(&mut self, out: &mut Vec<Column>, errors: &mut [Option<RowError>]) -> Result<()> {
        if self.checks.is_empty() {
            return Ok(());
        }
        let n = errors.len();
        let mut verdicts = Vec::new();
        for check in &self.checks {
            let find = |name: &str| out.iter().find(|c| c.name().as_str() == name);
            let (Some(l), Some(r)) = (find(&check.left), find(&check.right)) else {
                if let Some(f) = &check.flag {
                    verdicts.push(
                        BooleanChunked::full_null(f.as_str().into(), n)
                            .into_series()
                            .into_column(),
                    );
                }
                continue;
            };
            let mut verdict: Vec<Option<bool>> = vec![None; n];
            let (l, r) = (l.rechunk(), r.rechunk());
            let (lc, rc) = (Cursor::new(&l)?, Cursor::new(&r)?);
            let mut failures = Failures::new(
                &mut *errors,
                &mut self.failures,
                &mut self.flagged,
                false,
                0,
            );
            for (i, slot) in verdict.iter_mut().enumerate().take(l.len()) {
                let (a, b) = (lc.get(i), rc.get(i));
                if a.is_null() || b.is_null() {
                    continue;
                }
                // decimals were rounded to their scale: compare them so
                let (a, b) = match (a, b) {
                    (ValueRef::Float(x), ValueRef::Float(y)) if (x - y).abs() < 1e-9 => {
                        (ValueRef::Float(x), ValueRef::Float(x))
                    }
                    other => other,
                };
                let ok = compare(&a, &b).is_some_and(|o| match check.op.as_str() {
                    "<" => o.is_lt(),
                    "<=" => o.is_le(),
                    ">" => o.is_gt(),
                    ">=" => o.is_ge(),
                    "=" => o.is_eq(),
                    _ => o.is_ne(),
                });
                *slot = Some(ok);
                if !ok && check.flag.is_some() {
                    *failures.counts.entry(check.reason.clone()).or_default() += 1;
                    *failures.flagged.entry(check.reason.clone()).or_default() += 1;
                } else if !ok {
                    let show = |v: &ValueRef<'_>| v.to_text().unwrap_or_default();
                    reject_row(
                        &mut failures,
                        i,
                        check.reason.clone(),
                        format!(
                            "{}: {} = {} is not {} {} = {}",
                            check.reason,
                            check.left,
                            show(&a),
                            check.op,
                            check.right,
                            show(&b)
                        ),
                    );
                }
            }
            if let Some(f) = &check.flag {
                verdicts.push(
                    BooleanChunked::from_iter_options(f.as_str().into(), verdict.into_iter())
                        .into_series()
                        .into_column(),
                );
            }
        }
        out.extend(verdicts);
        Ok(())
    }
}

/// Rule failures of one batch: the first per row, and counts of all.
struct Failures<'a> {
    errors: &'a mut [Option<RowError>],
    counts: &'a mut BTreeMap<String, u64>,
    flagged: &'a mut BTreeMap<String, u64>,
    /// The column flags failed rules instead of rejecting the row.
    flag_only: bool,
    /// Rows of the current column whose value failed a rule (when flagging).
    invalid: Vec<bool>,
}

impl<'a> Failures<'a> {
    /// The failures of one column of `n` rows (`n` matters only when the
    /// column flags instead of rejecting).
    fn new(
        errors: &'a mut [Option<RowError>],
        counts: &'a mut BTreeMap<String, u64>,
        flagged: &'a mut BTreeMap<String, u64>,
        flag_only: bool,
        n: usize,
    ) -> Failures<'a> {
        Failures {
            errors,
            counts,
            flagged,
            flag_only,
            invalid: vec![false; if flag_only { n } else { 0 }],
        }
    }

    /// A failed rule: rejects the row, or, for a flagging column, flags it
    /// and keeps it.
    fn failed(&mut self, i: usize, reason: String, detail: String) {
        if self.flag_only {
            *self.counts.entry(reason.clone()).or_default() += 1;
            if !self.invalid[i] {
                *self.flagged.entry(reason).or_default() += 1;
            }
            self.invalid[i] = true;
        } else {
            reject_row(self, i, reason, detail);
        }
    }
}

/// Add a column's count of the batch (values nulled, rounded, re-pointed)
/// to the mapping's, naming the column only when there is one.
fn add_count(counts: &mut BTreeMap<String, u64>, column: &str, n: u64) {
    if n > 0 {
        *counts.entry(column.to_string()).or_default() += n;
    }
}

/// Reject row `i` for a failed rule (the first failure is its reason, the
/// others are added to its detail); every failure is counted.
fn reject_row(f: &mut Failures<'_>, i: usize, reason: String, detail: String) {
    *f.counts.entry(reason.clone()).or_default() += 1;
    match &mut f.errors[i] {
        Some(e) => {
            e.detail.push_str("; ");
            e.detail.push_str(&detail);
        }
        slot @ None => *slot = Some(RowError { reason, detail }),
    }
}

/// Reject a row whose `what` ("date", "date-time") does not parse, saying
/// why when the text is close to one.
fn reject_unparsed_date(f: &mut Failures<'_>, i: usize, name: &str, s: &str, what: &str) {
    let detail = match crate::batch::parse::not_a_date_note(s) {
        Some(why) => format!("{name} = {s:?}: {why}"),
        None => format!("{name} = {s:?} is not a {what}"),
    };
    reject_row(f, i, format!("{name}: not a {what}"), detail);
}

impl Plan {
    fn cast_and_check(
        &self,
        cleaned: &[Option<Cow<'_, str>>],
        typed: &[bool],
        errors: &mut Failures<'_>,
    ) -> Result<Column> {
        // a typed cell (number, date) holds canonical text: read it as such,
        // never with the column's French or English number format
        let is_typed = |i: usize| typed.get(i).copied().unwrap_or(false);
        let number = |i: usize, s: &str| {
            if is_typed(i) {
                s.parse::<f64>().map_err(|_| NumberError::NotANumber)
            } else {
                parse_number(s, self.spec.number_format)
            }
        };
        let name = self.spec.name.as_str();
        let col: PlSmallStr = name.into();
        let n = cleaned.len();
        let series = match self.spec.ty {
            ColumnType::Text => {
                let remapped: Vec<Option<&str>> = cleaned
                    .iter()
                    .map(|v| {
                        v.as_deref()
                            .map(|s| match self.remap.as_ref().and_then(|m| m.get(s)) {
                                Some(k) => {
                                    self.remapped.set(self.remapped.get() + 1);
                                    k.as_str()
                                }
                                None => s,
                            })
                    })
                    .collect();
                for (i, v) in remapped.iter().enumerate() {
                    if let Some(s) = v {
                        self.check_text(i, s, errors);
                    }
                }
                StringChunked::from_iter_options(col, remapped.into_iter()).into_series()
            }
            ColumnType::Integer => {
                let mut vals = Vec::with_capacity(n);
                for (i, v) in cleaned.iter().enumerate() {
                    // plain digits read exactly (past 2^53 too); else as a number
                    let parsed = v.as_deref().map(|s| {
                        (
                            s,
                            s.parse::<i64>()
                                .or_else(|_| number(i, s).and_then(to_integer)),
                        )
                    });
                    vals.push(match parsed {
                        Some((_, Ok(x))) => {
                            let x = self.remap_int(x);
                            self.check_range(i, Bound::Num(x as f64), errors);
                            if self.refs.is_some() {
                                self.check_ref(i, itoa::Buffer::new().format(x), errors);
                            }
                            Some(x)
                        }
                        Some((s, Err(e))) => {
                            let what = match e {
                                NumberError::TooLarge => "too large",
                                _ => "not an integer",
                            };
                            reject_row(
                                errors,
                                i,
                                format!("{name}: {what}"),
                                format!("{name} = {s:?} is {what}"),
                            );
                            None
                        }
                        None => None,
                    });
                }
                Int64Chunked::from_iter_options(col, vals.into_iter()).into_series()
            }
            ColumnType::Decimal | ColumnType::Float => {
                let mut vals = Vec::with_capacity(n);
                let decimal = self.spec.ty == ColumnType::Decimal;
                for (i, v) in cleaned.iter().enumerate() {
                    let parsed = v.as_deref().map(|s| (s, number(i, s)));
                    vals.push(match parsed {
                        Some((s, Ok(x))) => self.number_read(i, x, decimal, || s, errors),
                        Some((s, Err(e))) => {
                            let what = match e {
                                NumberError::TooLarge => "too large",
                                _ => "not a number",
                            };
                            reject_row(
                                errors,
                                i,
                                format!("{name}: {what}"),
                                format!("{name} = {s:?} is {what}"),
                            );
                            None
                        }
                        None => None,
                    });
                }
                Float64Chunked::from_iter_options(col, vals.into_iter()).into_series()
            }
            ColumnType::Boolean => {
                let mut vals = Vec::with_capacity(n);
                for (i, v) in cleaned.iter().enumerate() {
                    vals.push(match v.as_deref() {
                        Some(s) => match parse_bool(s) {
                            Some(b) => Some(b),
                            None => {
                                reject_row(
                                    errors,
                                    i,
                                    format!("{name}: not yes/no"),
                                    format!("{name} = {s:?} is not yes/no"),
                                );
                                None
                            }
                        },
                        None => None,
                    });
                }
                BooleanChunked::from_iter_options(col, vals.into_iter()).into_series()
            }
            ColumnType::Date => {
                let mut vals = Vec::with_capacity(n);
                for (i, v) in cleaned.iter().enumerate() {
                    vals.push(match v.as_deref() {
                        Some(s) => match parse_date(s, &self.spec.date_formats) {
                            Some(d) if self.null_days.contains(&epoch_days(d)) => {
                                self.nulled.set(self.nulled.get() + 1);
                                None
                            }
                            Some(d) => {
                                let days = epoch_days(d);
                                self.check_range(i, Bound::Day(days), errors);
                                Some(days)
                            }
                            None => {
                                reject_unparsed_date(errors, i, name, s, "date");
                                None
                            }
                        },
                        None => None,
                    });
                }
                Int32Chunked::from_iter_options(col, vals.into_iter())
                    .into_date()
                    .into_series()
            }
            ColumnType::Time => {
                let mut vals = Vec::with_capacity(n);
                for (i, v) in cleaned.iter().enumerate() {
                    vals.push(match v.as_deref() {
                        Some(s) => match parse_time_of_day(s) {
                            Some(ns) => {
                                self.check_range(i, Bound::Nanos(ns), errors);
                                Some(ns)
                            }
                            None => {
                                reject_row(
                                    errors,
                                    i,
                                    format!("{name}: not a time"),
                                    format!("{name} = {s:?} is not a time of day"),
                                );
                                None
                            }
                        },
                        None => None,
                    });
                }
                Int64Chunked::from_iter_options(col, vals.into_iter())
                    .into_time()
                    .into_series()
            }
            ColumnType::Binary => {
                let mut vals: Vec<Option<Vec<u8>>> = Vec::with_capacity(n);
                for (i, v) in cleaned.iter().enumerate() {
                    vals.push(match v.as_deref() {
                        // typed binary arrives as hex; text is kept as its bytes
                        // (PostgreSQL writes bytea as `\x…`)
                        Some(s) if is_typed(i) => {
                            match hex::decode(s.strip_prefix("\\x").unwrap_or(s)) {
                                Ok(b) => Some(b),
                                Err(_) => {
                                    reject_row(
                                        errors,
                                        i,
                                        format!("{name}: not hex bytes"),
                                        format!("{name} is not hex-encoded bytes"),
                                    );
                                    None
                                }
                            }
                        }
                        Some(s) => Some(s.as_bytes().to_vec()),
                        None => None,
                    });
                }
                BinaryChunked::from_iter_options(col, vals.iter().map(|v| v.as_deref()))
                    .into_series()
            }
            ColumnType::Datetime => {
                let mut vals = Vec::with_capacity(n);
                for (i, v) in cleaned.iter().enumerate() {
                    vals.push(match v.as_deref() {
                        Some(s) => match parse_datetime(s, &self.spec.date_formats) {
                            Some(d)
                                if self.null_days.contains(&epoch_days(d.date()))
                                    && d.time() == chrono::NaiveTime::MIN =>
                            {
                                self.nulled.set(self.nulled.get() + 1);
                                None
                            }
                            Some(d) => {
                                let ms = epoch_millis(d);
                                self.check_range(i, Bound::Millis(ms), errors);
                                Some(ms)
                            }
                            None => {
                                reject_unparsed_date(errors, i, name, s, "date-time");
                                None
                            }
                        },
                        None => None,
                    });
                }
                Int64Chunked::from_iter_options(col, vals.into_iter())
                    .into_datetime(TimeUnit::Milliseconds, None)
                    .into_series()
            }
        };
        if self.spec.required {
            for (i, v) in cleaned.iter().enumerate() {
                if v.is_none() {
                    reject_row(
                        errors,
                        i,
                        format!("{name}: required"),
                        format!("{name} is empty"),
                    );
                }
            }
        }
        Ok(series.into_column())
    }

    /// A number read (from its text, or carried): rounded to a decimal's
    /// scale, checked against its precision and range.
    fn number_read<S: std::fmt::Debug>(
        &self,
        i: usize,
        x: f64,
        decimal: bool,
        text: impl FnOnce() -> S,
        errors: &mut Failures<'_>,
    ) -> Option<f64> {
        let name = self.spec.name.as_str();
        let x = if decimal {
            let r = round_to(x, self.spec.scale());
            if (r - x).abs() > 1e-9 * x.abs().max(1.0) {
                self.rounded.set(self.rounded.get() + 1);
            }
            r
        } else {
            x
        };
        if decimal && x.abs() >= self.decimal_limit {
            let why = format!(
                "too large for decimal({},{})",
                self.spec.precision(),
                self.spec.scale()
            );
            let s = text();
            reject_row(
                errors,
                i,
                format!("{name}: {why}"),
                format!("{name} = {s:?} is {why}"),
            );
            None
        } else {
            self.check_range(i, Bound::Num(x), errors);
            Some(x)
        }
    }

    /// Values a source handed over typed (see [`Mapper::carries`]): the
    /// value, checks and counts their text would have had, without the
    /// text. A date-time whose text does not read as ISO (infinity, BC,
    /// past 9999) goes through its text, as before.
    fn cast_carried(
        &self,
        frame: &DataFrame,
        raw: &Column,
        errors: &mut Failures<'_>,
    ) -> Result<Column> {
        let name = self.spec.name.as_str();
        let col: PlSmallStr = name.into();
        let bad = |e: PolarsError| Error::runtime(format!("column {name}: {e}"));
        let n = raw.len();
        let series = match (self.spec.ty, raw.dtype()) {
            (ColumnType::Integer, DataType::Int64) => {
                let ca = raw.i64().map_err(bad)?;
                if self.min.is_some() || self.max.is_some() || self.refs.is_some() {
                    for (i, v) in ca.iter().enumerate() {
                        if let Some(x) = v {
                            self.check_range(i, Bound::Num(x as f64), errors);
                            if self.refs.is_some() {
                                self.check_ref(i, itoa::Buffer::new().format(x), errors);
                            }
                        }
                    }
                }
                ca.clone().with_name(col).into_series()
            }
            (ColumnType::Decimal, DataType::Float64) => {
                let ca = raw.f64().map_err(bad)?;
                let mut vals = Vec::with_capacity(n);
                for (i, v) in ca.iter().enumerate() {
                    vals.push(v.and_then(|x| {
                        self.number_read(
                            i,
                            x,
                            true,
                            || carried_decimal_text(frame, name, i, x),
                            errors,
                        )
                    }));
                }
                Float64Chunked::from_iter_options(col, vals.into_iter()).into_series()
            }
            (ColumnType::Datetime, DataType::Datetime(TimeUnit::Microseconds, tz)) => {
                let tz = tz.is_some();
                let ca = raw.datetime().map_err(bad)?.physical();
                let mut vals = Vec::with_capacity(n);
                let mut text = String::new();
                for (i, v) in ca.iter().enumerate() {
                    let Some(us) = v else {
                        vals.push(None);
                        continue;
                    };
                    let ms = match crate::db::pg_binary::timestamp_millis(us) {
                        Some(ms) => Some(ms),
                        None => {
                            text.clear();
                            crate::db::pg_binary::timestamp_text(us, tz, &mut text);
                            parse_datetime(&text, &[]).map(epoch_millis)
                        }
                    };
                    vals.push(match ms {
                        Some(ms) => {
                            self.check_range(i, Bound::Millis(ms), errors);
                            Some(ms)
                        }
                        None => {
                            let s = text.as_str();
                            reject_unparsed_date(errors, i, name, s, "date-time");
                            None
                        }
                    });
                }
                Int64Chunked::from_iter_options(col, vals.into_iter())
                    .into_datetime(TimeUnit::Milliseconds, None)
                    .into_series()
            }
            (ty, other) => {
                return Err(Error::runtime(format!(
                    "column {name}: {other} values handed over for a {ty:?} column (this is a bug in repaero)"
                )));
            }
        };
        if self.spec.required && raw.null_count() > 0 {
            for i in 0..n {
                if raw.get(i).is_ok_and(|v| v.is_null()) {
                    reject_row(
                        errors,
                        i,
                        format!("{name}: required"),
                        format!("{name} is empty"),
                    );
                }
            }
        }
        Ok(series.into_column())
    }

    /// The kept id a merged id was folded into, if this column remaps.
    fn remap_int(&self, x: i64) -> i64 {
        let Some(map) = &self.remap else { return x };
        match map.get(&x.to_string()).and_then(|k| k.parse().ok()) {
            Some(k) => {
                self.remapped.set(self.remapped.get() + 1);
                k
            }
            None => x,
        }
    }

    fn check_text(&self, i: usize, s: &str, errors: &mut Failures<'_>) {
        let name = &self.spec.name;
        if let Some(p) = &self.pattern
            && !p.is_match(s)
        {
            errors.failed(
                i,
                format!("{name}: does not match pattern"),
                format!(
                    "{name} = {s:?} does not match {}",
                    self.spec.pattern.as_deref().unwrap_or("")
                ),
            );
        }
        if self.spec.ean13 && !clean::is_ean13(s) {
            errors.failed(
                i,
                format!("{name}: not an EAN-13 (check digit)"),
                format!("{name} = {s:?} is not 13 digits with a valid check digit"),
            );
        }
        if let Some(allowed) = &self.one_of
            && !allowed.contains(s)
        {
            errors.failed(
                i,
                format!("{name}: not an allowed value"),
                format!("{name} = {s:?} is not one of the allowed values"),
            );
        }
        self.check_ref(i, s, errors);
    }

    fn check_ref(&self, i: usize, key: &str, errors: &mut Failures<'_>) {
        if let (Some(refs), Some(r)) = (&self.refs, &self.spec.references)
            && !refs.contains(key)
        {
            let name = &self.spec.name;
            errors.failed(
                i,
                format!("{name}: unknown {}.{}", r.table, r.column),
                format!("{name} = {key:?} is not in {}.{}", r.table, r.column),
            );
        }
    }

    fn check_range(&self, i: usize, v: Bound, errors: &mut Failures<'_>) {
        let name = &self.spec.name;
        let below = |b: &Bound| match (v, b) {
            (Bound::Num(x), Bound::Num(m)) => x < *m,
            (Bound::Day(x), Bound::Day(m)) => x < *m,
            (Bound::Millis(x), Bound::Millis(m)) => x < *m,
            (Bound::Nanos(x), Bound::Nanos(m)) => x < *m,
            _ => false,
        };
        let above = |b: &Bound| match (v, b) {
            (Bound::Num(x), Bound::Num(m)) => x > *m,
            (Bound::Day(x), Bound::Day(m)) => x > *m,
            (Bound::Millis(x), Bound::Millis(m)) => x > *m,
            (Bound::Nanos(x), Bound::Nanos(m)) => x > *m,
            _ => false,
        };
        if let Some(m) = &self.min
            && below(m)
        {
            errors.failed(
                i,
                format!("{name}: below {}", m.show()),
                format!("{name} = {} is below the minimum {}", v.show(), m.show()),
            );
        }
        if let Some(m) = &self.max
            && above(m)
        {
            errors.failed(
                i,
                format!("{name}: above {}", m.show()),
                format!("{name} = {} is above the maximum {}", v.show(), m.show()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::typed_column;
    use crate::config::mapping::Mapping;

    fn mapping(columns: &str) -> Mapping {
        let text = format!("[source]\nsheet = \"S\"\n[target]\ntable = \"t\"\n{columns}");
        let mut m: Mapping = toml::from_str(&text).unwrap();
        m.file = "m.toml".into();
        m
    }

    fn raw(name: &str, values: &[Option<&str>], typed: &[bool]) -> DataFrame {
        let n = values.len();
        DataFrame::new(
            n,
            vec![
                StringChunked::from_iter_options(name.into(), values.iter().copied())
                    .into_series()
                    .into_column(),
                BooleanChunked::from_iter_values(
                    typed_column(name).as_str().into(),
                    typed.iter().copied(),
                )
                .into_series()
                .into_column(),
                UInt64Chunked::from_vec(ROW_COLUMN.into(), (1..=n as u64).collect())
                    .into_series()
                    .into_column(),
            ],
        )
        .unwrap()
    }

    #[test]
    fn typed_cells_are_not_read_as_french_numbers() {
        let m = mapping(
            "[[columns]]\nname = \"price\"\ntype = \"decimal\"\nscale = 3\nnumber_format = \"fr\"\n",
        );
        let mut mapper = Mapper::new(&m).unwrap();
        let out = mapper
            .apply(&raw(
                "price",
                &[Some("1.234"), Some("1.234"), Some("1 234,5")],
                &[true, false, false],
            ))
            .unwrap();
        assert!(out.rejects.is_empty());
        let got: Vec<Option<f64>> = out
            .kept
            .column("price")
            .unwrap()
            .f64()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(got, vec![Some(1.234), Some(1234.0), Some(1234.5)]);
    }

    #[test]
    fn a_check_can_flag_and_rounded_decimals_are_counted() {
        let m = mapping(
            "[[columns]]\nname = \"total\"\ntype = \"decimal\"\n[[columns]]\nname = \"lines\"\ntype = \"decimal\"\n[[checks]]\nleft = \"total\"\nop = \"=\"\nright = \"lines\"\nreason = \"lines do not add up\"\nflag = \"lines_match\"\n",
        );
        m.check().unwrap();
        let mut mapper = Mapper::new(&m).unwrap();
        let mut df = raw(
            "total",
            &[Some("10.004"), Some("12.50"), Some("7"), None],
            &[true; 4],
        );
        let lines = raw(
            "lines",
            &[Some("10.00"), Some("12.40"), None, Some("3")],
            &[true; 4],
        );
        for c in ["lines", "__typed__lines"] {
            df.with_column(lines.column(c).unwrap().clone()).unwrap();
        }
        let out = mapper.apply(&df).unwrap();
        assert!(out.rejects.is_empty(), "a flagging check keeps its rows");
        let verdict: Vec<Option<bool>> = out
            .kept
            .column("lines_match")
            .unwrap()
            .bool()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(verdict, vec![Some(true), Some(false), None, None]);
        assert_eq!(mapper.flagged.get("lines do not add up"), Some(&1));
        assert_eq!(mapper.rounded.get("total"), Some(&1));
        assert_eq!(mapper.rounded.get("lines"), None);
        let defs = crate::db::TableDef::from_mapping(&m);
        assert_eq!(
            defs.columns.last().map(|c| c.name.as_str()),
            Some("lines_match")
        );
    }

    #[test]
    fn every_failed_rule_is_counted_and_the_first_is_the_reason() {
        let m = mapping(
            "[[columns]]\nname = \"qty\"\ntype = \"integer\"\nmin = 0\nmax = 10\nrequired = true\n",
        );
        let mut mapper = Mapper::new(&m).unwrap();
        let out = mapper
            .apply(&raw(
                "qty",
                &[Some("3"), Some("-1"), None, Some("2,5"), Some("11")],
                &[false; 5],
            ))
            .unwrap();
        assert_eq!(out.kept.height(), 1);
        let reasons: Vec<(u64, &str)> = out
            .rejects
            .iter()
            .map(|r| (r.row, r.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (2, "qty: below 0"),
                (3, "qty: required"),
                (4, "qty: not an integer"),
                (5, "qty: above 10")
            ]
        );
        assert_eq!(out.rejects[0].detail, "qty = -1 is below the minimum 0");
        assert_eq!(
            out.rejects[0].record,
            vec![("qty".to_string(), Some("-1".to_string()))]
        );
        assert_eq!(mapper.failures["qty: required"], 1);
    }

    #[test]
    fn pattern_allowed_values_and_references() {
        let m = mapping(
            "[[columns]]\nname = \"code\"\ncase = \"upper\"\npattern = '[A-Z]{3}-[0-9]+'\none_of = [\"ABC-1\", \"ABC-2\", \"XYZ-9\"]\nreferences = { table = \"tools\", column = \"code\" }\n",
        );
        let mut mapper = Mapper::new(&m).unwrap();
        assert_eq!(
            mapper.references(),
            vec![("code".into(), "tools".into(), "code".into())]
        );
        mapper.set_reference_values(
            "code",
            ["ABC-1", "ABC-2"]
                .iter()
                .map(|s| s.to_string())
                .collect::<crate::batch::KeySet>(),
        );
        let out = mapper
            .apply(&raw(
                "code",
                &[Some("abc-1"), Some("ABC1"), Some("ABC-3"), Some("XYZ-9")],
                &[false; 4],
            ))
            .unwrap();
        let kept: Vec<Option<&str>> = out
            .kept
            .column("code")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(kept, vec![Some("ABC-1")]);
        let reasons: Vec<&str> = out.rejects.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(
            reasons,
            vec![
                "code: does not match pattern",
                "code: not an allowed value",
                "code: unknown tools.code"
            ]
        );
        // a row failing three rules is counted under each in the failures
        assert_eq!(mapper.failures["code: unknown tools.code"], 3);
        assert!(
            out.rejects[0]
                .detail
                .contains("does not match [A-Z]{3}-[0-9]+"),
            "{}",
            out.rejects[0].detail
        );
    }

    #[test]
    fn dates_booleans_and_fill_down() {
        let m = mapping(
            "[[columns]]\nname = \"d\"\ntype = \"date\"\nfill_down = true\nmin = \"2020-01-01\"\n",
        );
        let mut mapper = Mapper::new(&m).unwrap();
        let out = mapper
            .apply(&raw(
                "d",
                &[
                    Some("15/03/2026"),
                    None,
                    Some("46097"),
                    Some("2019-12-31"),
                    Some("demain"),
                ],
                &[false, false, true, false, false],
            ))
            .unwrap();
        let kept: Vec<Option<i32>> = out
            .kept
            .column("d")
            .unwrap()
            .date()
            .unwrap()
            .physical()
            .iter()
            .collect();
        let d = |y, m, dd| {
            Some(epoch_days(
                chrono::NaiveDate::from_ymd_opt(y, m, dd).unwrap(),
            ))
        };
        assert_eq!(kept, vec![d(2026, 3, 15), d(2026, 3, 15), d(2026, 3, 16)]);
        let reasons: Vec<&str> = out.rejects.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons, vec!["d: below 2020-01-01", "d: not a date"]);
        assert_eq!(mapper.filled["d"], 1);

        let m = mapping("[[columns]]\nname = \"ok\"\ntype = \"boolean\"\n");
        let mut mapper = Mapper::new(&m).unwrap();
        let out = mapper
            .apply(&raw(
                "ok",
                &[Some("Oui"), Some("non"), Some("peut-être")],
                &[false; 3],
            ))
            .unwrap();
        let kept: Vec<Option<bool>> = out
            .kept
            .column("ok")
            .unwrap()
            .bool()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(kept, vec![Some(true), Some(false)]);
        assert_eq!(out.rejects[0].reason, "ok: not yes/no");
    }
}
