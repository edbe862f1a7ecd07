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

mod accounting;
mod filter;
mod pushdown;
mod reconcile;
pub mod report;
pub mod rowdiff;
mod spec;
mod sql;
mod stream;

use std::collections::HashMap;

use crate::config::Config;
use crate::config::mapping::Mapping;
use crate::db::{Conn, Dialect};
use crate::error::{Error, Result};
use crate::sink::ledger;
use crate::source::{Source, header_key};

use accounting::*;
use reconcile::*;
pub use reconcile::{MetricResult, Report, Verdict};
pub use spec::*;
use sql::*;
use stream::*;

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
fn check_columns(
    cfg: &Config,
    v: &Validation,
    source: &dyn Source,
    target: &mut dyn Conn,
) -> Result<()> {
    let label = v.file.display().to_string();
    for m in &v.metrics {
        let at = format!("{label}: metric {}", m.id);
        let mapping = explained_mapping(m, &v.job);
        let (src_table, tgt_table) = tables_of(m, mapping);
        if m.source.sql.is_none() {
            let cols = needed_columns(m, Which::Source);
            let side = format!("the source table `{src_table}` ({})", source.describe());
            let found = match source.capabilities().sql {
                Some(sd) => probe_columns(
                    &mut |sql| source.query(sql).map(drop),
                    sd,
                    &src_table,
                    &cols,
                ),
                None => {
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
                    // found: a header feeds it (by its text, or by its
                    // rank among headers that repeat: `Id (2)`)
                    let fed: std::collections::HashSet<&str> = reader
                        .columns
                        .iter()
                        .filter_map(|c| c.feeds.as_deref())
                        .collect();
                    match cols.iter().find(|c| !fed.contains(c.as_str())) {
                        Some(c) => Err(Missing::Column(c.clone())),
                        None => Ok(()),
                    }
                }
            };
            found.map_err(|e| e.error(&at, &side))?;
        }
        if m.target.sql.is_none() {
            let cols = needed_columns(m, Which::Target);
            let d = target.dialect();
            let side = format!("the target table `{tgt_table}` ({})", target.describe());
            probe_columns(
                &mut |sql| target.query(sql, &[]).map(drop),
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
    let source = crate::source::open(&job.source, src_cfg).map_err(|e| {
        e.context(format!(
            "validation of {}, source `{}`",
            job.name, job.source
        ))
    })?;
    let mut target = crate::db::open(&cfg.target.url, true)
        .map_err(|e| e.context(format!("validation of {}, target", job.name)))?;
    target.begin_read_only()?;
    let run_id = ledger::latest_run(target.as_mut(), &job.name)?;
    if run_id.is_none() {
        return Err(Error::config(format!(
            "job {} has no committed run in {}: run `repaero migrate {}` first",
            job.name,
            target.describe(),
            job.name
        )));
    }
    check_columns(cfg, v, source.as_ref(), target.as_mut())?;
    let mut report = Report {
        job: job.name.clone(),
        source: source.describe(),
        target: target.describe(),
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
            let source_value = match source.capabilities().sql {
                Some(sd) => value_of_rows(
                    m,
                    source.query(&metric_sql(m, Which::Source, sd, &src_table))?,
                ),
                None if m.source.sql.is_some() => {
                    return Err(Error::config(format!(
                        "metric {}: source.sql needs a database source; {} is streamed",
                        m.id,
                        source.describe()
                    )));
                }
                None => stream_source(source.as_ref(), m, &src_table, mapping, cfg.run.batch_size)?,
            };
            let d = target.dialect();
            let target_value = value_of_rows(
                m,
                target.query(&metric_sql(m, Which::Target, d, &tgt_table), &[])?,
            );
            let acc = accounting(target.as_mut(), &job.name, m, &mut cache)?;
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
                let src_keys = match source.capabilities().sql {
                    Some(sd) => value_of_rows(
                        &keys,
                        source.query(&metric_sql(&keys, Which::Source, sd, &src_table))?,
                    ),
                    None => stream_source(
                        source.as_ref(),
                        &keys,
                        &src_table,
                        mapping,
                        cfg.run.batch_size,
                    )?,
                };
                let tgt_keys = value_of_rows(
                    &keys,
                    target.query(&metric_sql(&keys, Which::Target, d, &tgt_table), &[])?,
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
    target.rollback()?;
    Ok(report)
}
