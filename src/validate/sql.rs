//! A metric's side pushed down as SQL, and the rows it returns read back
//! as the metric's value.

use std::collections::BTreeMap;

use crate::batch::parse;
use crate::config::mapping::ColumnType;
use crate::db::Dialect;

use super::filter::where_sql;
use super::spec::{ColumnPair, Kind, MetricSpec, NULL, Side, Value, canon, canon_case};

/// Which side of a metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Which {
    Source,
    Target,
}

pub(super) fn side(m: &MetricSpec, w: Which) -> &Side {
    match w {
        Which::Source => &m.source,
        Which::Target => &m.target,
    }
}

pub(super) fn col_name(p: &ColumnPair, w: Which) -> &str {
    match w {
        Which::Source => &p.source,
        Which::Target => &p.target,
    }
}

/// The SQL computing a metric's side on a database.
pub(super) fn metric_sql(m: &MetricSpec, w: Which, d: Dialect, table: &str) -> String {
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

pub(super) fn num(raw: Option<&str>) -> f64 {
    raw.and_then(|s| canon(ColumnType::Float, None, s))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0)
}

pub(super) fn canon_pair(p: &ColumnPair, raw: Option<&str>) -> String {
    raw.and_then(|r| canon_case(p.ty, p.scale, p.case, r))
        .unwrap_or_else(|| NULL.to_string())
}

/// Turn rows of text returned for a metric into its value.
pub(super) fn value_of_rows(m: &MetricSpec, rows: Vec<Vec<Option<String>>>) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::spec::tests::metric;

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
}
