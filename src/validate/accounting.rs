//! What the run set apart for a metric: the rejected rows (as read) and
//! the merges, taken out of the source side.

use std::collections::{BTreeMap, HashMap};

use crate::config::mapping::Mapping;
use crate::db::Conn;
use crate::error::{Error, Result};
use crate::sink::ledger;

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

/// Rejected rows read once per table for all the metrics of a job.
pub(super) type RejectCache = HashMap<String, Vec<HashMap<String, Option<String>>>>;

pub(super) fn accounting(
    target: &mut dyn Conn,
    job: &str,
    m: &MetricSpec,
    cache: &mut RejectCache,
) -> Result<Accounting> {
    let mut acc = Accounting::default();
    if let Some(rejected) = m.explain.as_ref().and_then(|t| cache.get(t)) {
        acc.rejected = rejected.clone();
    } else if let Some(t) = &m.explain {
        for text in ledger::rejected_records(target, job, t)? {
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
        let merges = ledger::merges(target, job, t)?;
        acc.merged = merges.len() as u64;
        if m.kind == Kind::Count && m.key.is_some() {
            acc.merged_ids = merges
                .into_iter()
                .filter_map(|(merged, _)| merged)
                .collect();
        }
    }
    if let Some(t) = &m.remap {
        for (merged, kept) in ledger::merges(target, job, t)? {
            if let (Some(a), Some(b)) = (merged, kept) {
                acc.remap.insert(a, b);
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
