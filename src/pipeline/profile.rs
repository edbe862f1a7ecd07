//! `repaero profile <job>`: analyse the source before anything is written.
//!
//! Per source column: how its cells are typed in the file, what type they
//! read as, empty and distinct values, values failing each rule; per table:
//! rows that are not data, hidden columns, duplicates on the key and exact
//! duplicate rows. Reads through the same source and mapper as `migrate`,
//! writes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::batch::{Cursor, ValueRef, is_internal, row_numbers};
use crate::config::{Config, Job};
use crate::error::Result;
use crate::source::{CellKinds, ReadStats, SourceColumn, TableInfo, column_letter};
use crate::transform::Mapper;

/// Distinct values are counted exactly up to this many, then reported as a floor.
const DISTINCT_CAP: usize = 100_000;

#[derive(Debug, Serialize)]
pub struct ColumnProfile {
    pub name: String,
    /// Source header and column letter, when found.
    pub from: Option<String>,
    pub declared: String,
    pub inferred: String,
    pub kinds: CellKinds,
    pub distinct: u64,
    pub distinct_capped: bool,
    pub filled_down: u64,
    /// Rule failures by reason.
    pub failures: BTreeMap<String, u64>,
    /// A few values as read.
    pub samples: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct DuplicateKey {
    pub key: String,
    pub rows: Vec<u64>,
    /// The key as written in the source, per row.
    pub raw: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct TableProfile {
    pub table: String,
    pub origin: String,
    pub stats: ReadStats,
    /// Source columns not read: hidden ones and those no mapping names.
    pub ignored_columns: Vec<SourceColumn>,
    pub columns: Vec<ColumnProfile>,
    pub key: Vec<String>,
    /// Keys found on more than one row (after cleaning).
    pub duplicate_keys: u64,
    /// Rows beyond the first of each duplicated key.
    pub duplicate_key_rows: u64,
    pub duplicate_examples: Vec<DuplicateKey>,
    /// Rows identical in every mapped column to an earlier row.
    pub exact_duplicate_rows: u64,
    /// Rows that `migrate` would reject.
    pub rejected_rows: u64,
}

#[derive(Debug, Serialize)]
pub struct JobProfile {
    pub job: String,
    pub source: String,
    pub sheets: Vec<TableInfo>,
    pub tables: Vec<TableProfile>,
}

pub fn infer(k: &CellKinds) -> String {
    let filled = k.text + k.number + k.date + k.boolean + k.error;
    if filled == 0 {
        return "empty".into();
    }
    let numbers = k.number + k.numeric_text;
    let mut parts = Vec::new();
    if k.number > 0 {
        parts.push(format!("number {}", k.number));
    }
    if k.numeric_text > 0 {
        parts.push(format!("number as text {}", k.numeric_text));
    }
    if k.text > k.numeric_text {
        parts.push(format!("text {}", k.text - k.numeric_text));
    }
    if k.date > 0 {
        parts.push(format!("date {}", k.date));
    }
    if k.boolean > 0 {
        parts.push(format!("boolean {}", k.boolean));
    }
    if k.error > 0 {
        parts.push(format!("error {}", k.error));
    }
    let main = if numbers == filled {
        "number"
    } else if k.date == filled {
        "date"
    } else if k.boolean == filled {
        "boolean"
    } else if k.text == filled && k.numeric_text == 0 {
        "text"
    } else {
        "mixed"
    };
    if parts.len() == 1 {
        main.to_string()
    } else {
        format!("{main} ({})", parts.join(", "))
    }
}

/// Profile every table of a job.
pub fn profile_job(cfg: &Config, job: &Job) -> Result<JobProfile> {
    let source = crate::source::open(&job.source, cfg.source(&job.source)?)?;
    let sheets = source.tables()?;
    let mut tables = Vec::new();
    // Reference rules are checked against what earlier tables of the job
    // would write, so that the profile sees what `migrate` will reject.
    let mut known: HashMap<(String, String), crate::batch::KeySet> = HashMap::new();
    for (m, _) in &job.tables {
        for c in &m.columns {
            if let Some(r) = &c.references {
                known
                    .entry((r.table.clone(), r.column.clone()))
                    .or_default();
            }
        }
    }
    for (mapping, _) in &job.tables {
        let mut mapper = Mapper::new(mapping)?;
        for (col, rtable, rcol) in mapper.references() {
            if let Some(values) = known.get(&(rtable, rcol)) {
                mapper.set_reference_values(&col, values.clone());
            }
        }
        let collect: Vec<String> = known
            .keys()
            .filter(|(t, _)| *t == mapping.target.table)
            .map(|(_, c)| c.clone())
            .collect();
        let mut reader = source.read(super::table_request(mapping, cfg.run.batch_size)?)?;
        let origin = reader.origin.clone();
        let key = {
            let k = mapping.dedupe_key();
            if k.is_empty() {
                mapping.target.key.clone()
            } else {
                k
            }
        };
        let key: Vec<String> = if key.len() == 1 && key[0] == "*" {
            Vec::new()
        } else {
            key
        };
        let mut distinct: Vec<HashSet<String>> = vec![HashSet::new(); mapping.columns.len()];
        let mut capped = vec![false; mapping.columns.len()];
        let mut samples: Vec<Vec<String>> = vec![Vec::new(); mapping.columns.len()];
        let mut keys: HashMap<Vec<u8>, (String, Vec<u64>, Vec<String>)> = HashMap::new();
        let mut rows_seen: HashSet<Vec<u8>> = HashSet::new();
        let mut exact_dups = 0u64;
        let mut rejected = 0u64;
        while let Some(raw) = reader.next_batch()? {
            let raw_rows = row_numbers(&raw);
            for (j, c) in mapping.columns.iter().enumerate() {
                let Ok(col) = raw.column(&c.name) else {
                    continue;
                };
                let Ok(ca) = col.str() else { continue };
                for v in ca.iter().flatten() {
                    if distinct[j].len() < DISTINCT_CAP {
                        if distinct[j].insert(v.to_string()) && samples[j].len() < 5 {
                            samples[j].push(v.to_string());
                        }
                    } else if !distinct[j].contains(v) {
                        capped[j] = true;
                    }
                }
            }
            // raw key text by source row, to show how duplicates were written
            let raw_key: HashMap<u64, String> = if key.is_empty() {
                HashMap::new()
            } else {
                let cols: Vec<_> = key
                    .iter()
                    .filter_map(|k| raw.column(k).ok().and_then(|c| c.str().ok()))
                    .collect();
                raw_rows
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let t: Vec<String> = cols
                            .iter()
                            .map(|c| c.get(i).unwrap_or("").to_string())
                            .collect();
                        (*r, t.join(" | "))
                    })
                    .collect()
            };
            let mapped = mapper.apply(&raw)?;
            rejected += mapped.rejects.len() as u64;
            let mut kept = mapped.kept;
            kept.rechunk_mut();
            let rows = row_numbers(&kept);
            let cursors: Vec<(String, Cursor<'_>)> = kept
                .columns()
                .iter()
                .map(|c| Cursor::new(c).map(|cur| (c.name().to_string(), cur)))
                .collect::<Result<_>>()?;
            let key_idx: Vec<usize> = key
                .iter()
                .filter_map(|k| cursors.iter().position(|(n, _)| n == k))
                .collect();
            for col in &collect {
                if let Some((_, cur)) = cursors.iter().find(|(n, _)| n == col) {
                    let set = known
                        .entry((mapping.target.table.clone(), col.clone()))
                        .or_default();
                    set.extend((0..kept.height()).filter_map(|i| cur.get(i).to_text()));
                }
            }
            let mut buf = Vec::new();
            for (i, &row) in rows.iter().enumerate() {
                buf.clear();
                for (n, c) in &cursors {
                    if !is_internal(n) {
                        c.get(i).encode_key(&mut buf);
                    }
                }
                if !rows_seen.insert(buf.clone()) {
                    exact_dups += 1;
                }
                if key_idx.is_empty() {
                    continue;
                }
                buf.clear();
                let mut text = Vec::new();
                let mut null = false;
                for &j in &key_idx {
                    let v = cursors[j].1.get(i);
                    null |= v == ValueRef::Null;
                    v.encode_key(&mut buf);
                    text.push(v.to_text().unwrap_or_default());
                }
                if null {
                    continue;
                }
                let e = keys
                    .entry(buf.clone())
                    .or_insert_with(|| (text.join(" | "), Vec::new(), Vec::new()));
                e.1.push(row);
                e.2.push(raw_key.get(&row).cloned().unwrap_or_default());
            }
        }
        let stats = reader.stats().cloned().unwrap_or_default();
        let mut dups: Vec<DuplicateKey> = keys
            .into_values()
            .filter(|(_, rows, _)| rows.len() > 1)
            .map(|(key, rows, raw)| DuplicateKey { key, rows, raw })
            .collect();
        dups.sort_by_key(|d| d.rows[0]);
        let duplicate_keys = dups.len() as u64;
        let duplicate_key_rows = dups.iter().map(|d| d.rows.len() as u64 - 1).sum();
        dups.truncate(10);
        let columns = mapping
            .columns
            .iter()
            .enumerate()
            .map(|(j, c)| {
                let kinds = stats
                    .kinds
                    .iter()
                    .find(|(n, _)| *n == c.name)
                    .map(|(_, k)| k.clone())
                    .unwrap_or_default();
                let from = reader
                    .columns
                    .iter()
                    .find(|s| s.feeds.as_deref() == Some(c.name.as_str()))
                    .map(|s| format!("{} {:?}", column_letter(s.index), s.header));
                let prefix = format!("{}: ", c.name);
                ColumnProfile {
                    name: c.name.clone(),
                    from,
                    declared: c.ty.as_str().to_string(),
                    inferred: infer(&kinds),
                    kinds,
                    distinct: distinct[j].len() as u64,
                    distinct_capped: capped[j],
                    filled_down: mapper.filled.get(&c.name).copied().unwrap_or(0),
                    failures: mapper
                        .failures
                        .iter()
                        .filter(|(r, _)| r.starts_with(&prefix))
                        .map(|(r, n)| (r.clone(), *n))
                        .collect(),
                    samples: std::mem::take(&mut samples[j]),
                }
            })
            .collect();
        let ignored_columns = reader
            .columns
            .iter()
            .filter(|c| c.feeds.is_none())
            .cloned()
            .collect();
        tables.push(TableProfile {
            table: mapping.target.table.clone(),
            origin,
            stats,
            ignored_columns,
            columns,
            key,
            duplicate_keys,
            duplicate_key_rows,
            duplicate_examples: dups,
            exact_duplicate_rows: exact_dups,
            rejected_rows: rejected,
        });
    }
    Ok(JobProfile {
        job: job.name.clone(),
        source: source.describe(),
        sheets,
        tables,
    })
}

/// Render a profile for people.
pub fn render(p: &JobProfile) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "profile of job {} — {}", p.job, p.source);
    let sheets: Vec<String> = p
        .sheets
        .iter()
        .map(|t| {
            if t.hidden {
                format!("{:?} (hidden)", t.name)
            } else {
                format!("{:?}", t.name)
            }
        })
        .collect();
    let _ = writeln!(s, "  sheets: {}", sheets.join(", "));
    for t in &p.tables {
        let st = &t.stats;
        let _ = writeln!(s, "\n  {} ← {}", t.table, t.origin);
        let header = if st.headerless {
            "no header row (columns named by their letters)".to_string()
        } else {
            format!("header row {}", st.header_row)
        };
        let _ = writeln!(
            s,
            "    {header}; {} data rows; not data: {} above the header, {} blank, {} footer",
            st.data_rows, st.rows_above_header, st.blank_rows, st.footer_rows
        );
        for c in &t.ignored_columns {
            let _ = writeln!(
                s,
                "    ignored column {} {:?}{}",
                column_letter(c.index),
                c.header,
                if c.hidden {
                    " (hidden)"
                } else {
                    " (not mapped)"
                }
            );
        }
        let _ = writeln!(
            s,
            "    {:<20} {:<28} {:<9} {:>6} {:>7} {:>9}  inferred / failures",
            "column", "from", "type", "empty", "spaces", "distinct"
        );
        for c in &t.columns {
            let _ = writeln!(
                s,
                "    {:<20} {:<28} {:<9} {:>6} {:>7} {:>8}{}  {}",
                c.name,
                c.from.as_deref().unwrap_or("(missing)"),
                c.declared,
                c.kinds.empty,
                c.kinds.whitespace_only,
                c.distinct,
                if c.distinct_capped { "+" } else { " " },
                c.inferred
            );
            if c.filled_down > 0 {
                let _ = writeln!(
                    s,
                    "    {:<20}   filled down from the row above: {}",
                    "", c.filled_down
                );
            }
            for (r, n) in &c.failures {
                let _ = writeln!(s, "    {:<20}   fails {r}: {n}", "");
            }
            if !c.samples.is_empty() {
                let shown: Vec<String> = c.samples.iter().map(|v| format!("{v:?}")).collect();
                let _ = writeln!(s, "    {:<20}   e.g. {}", "", shown.join(", "));
            }
        }
        if !t.key.is_empty() {
            let _ = writeln!(
                s,
                "    key ({}): {} duplicated key(s), {} extra row(s)",
                t.key.join(", "),
                t.duplicate_keys,
                t.duplicate_key_rows
            );
            for d in &t.duplicate_examples {
                let rows: Vec<String> = d.rows.iter().map(|r| r.to_string()).collect();
                let raw: Vec<String> = d.raw.iter().map(|r| format!("{r:?}")).collect();
                let _ = writeln!(
                    s,
                    "      {:?} on rows {} (as written: {})",
                    d.key,
                    rows.join(", "),
                    raw.join(", ")
                );
            }
        }
        let _ = writeln!(s, "    exact duplicate rows: {}", t.exact_duplicate_rows);
        let _ = writeln!(s, "    rows migrate would reject: {}", t.rejected_rows);
    }
    s
}
