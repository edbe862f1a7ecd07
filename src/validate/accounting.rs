//! What the run set apart for a metric: the rejected rows (as read) and
//! the merges, taken out of the source side.

use std::collections::{BTreeMap, HashMap};

use crate::config::mapping::Mapping;
use crate::error::{Error, Result};
use crate::sink::{Dialect, Sink};

use super::filter::{Cond, conds, holds};
use super::spec::{Kind, MetricSpec, Value, record_column};
use super::sql::Which;
use super::stream::Stream;

/// What the run set apart for a metric: rejected rows (as read) and merges.
#[derive(Debug, Default)]
pub(super) struct Accounting {
    /// Rejected rows: target column name → raw value.
    pub(super) rejected: Vec<HashMap<String, Option<String>>>,
    pub(super) merged: u64,
    /// Ids of the rows merged into another (their key is not in the target).
    pub(super) merged_ids: Vec<String>,
    /// Merged id → kept id (for `remap`).
    pub(super) remap: HashMap<String, String>,
}

pub(super) fn q_lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Rejected rows read once per table for all the metrics of a job.
pub(super) type RejectCache = HashMap<String, Vec<HashMap<String, Option<String>>>>;

pub(super) fn accounting(
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
pub(super) fn set_apart(m: &MetricSpec, acc: &Accounting, mapping: Option<&Mapping>) -> Value {
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
