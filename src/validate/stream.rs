//! A metric's source side streamed from a file source (Excel, Access,
//! CSV) and aggregated on the way, never loaded whole.

use std::collections::BTreeMap;

use crate::batch::parse;
use crate::config::mapping::{ColumnType, Mapping};
use crate::error::Result;
use crate::source::{Source, TableRequest, WantedColumn};

use super::filter::{Cond, conds, holds};
use super::spec::{Kind, MetricSpec, Value, canon_case};
use super::sql::{Which, canon_pair, col_name, num, side};

/// A side read from a stream of raw rows (a file source): the rows that
/// pass the filter, reduced as the kind says.
pub(super) struct Stream<'a> {
    m: &'a MetricSpec,
    conds: Vec<(String, Cond)>,
    count: f64,
    sum: f64,
    distinct: std::collections::HashSet<String>,
    groups: BTreeMap<String, f64>,
    rows: Vec<(Vec<String>, Vec<String>)>,
}

impl<'a> Stream<'a> {
    pub(super) fn new(m: &'a MetricSpec, filter: &BTreeMap<String, toml::Value>) -> Stream<'a> {
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
    pub(super) fn row(
        &mut self,
        w: Which,
        order_by: &[String],
        get: &dyn Fn(&str) -> Option<String>,
    ) {
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
                if let Some(v) = &m.value
                    && let Some(x) =
                        get(col_name(v, w)).and_then(|r| canon_case(v.ty, v.scale, v.case, &r))
                {
                    self.distinct.insert(x);
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

    pub(super) fn finish(mut self) -> Value {
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
pub(super) fn needed_columns(m: &MetricSpec, w: Which) -> Vec<String> {
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
pub(super) fn source_request(
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
                carry: None,
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
pub(super) fn stream_source(
    src: &dyn Source,
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
