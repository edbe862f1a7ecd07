//! A metric's `where`: conditions evaluated on raw values (streamed
//! sources) or written as SQL (databases).

use std::collections::BTreeMap;

use crate::batch::parse;
use crate::config::mapping::ColumnType;
use crate::db::Dialect;

use super::spec::canon;

/// One condition of a `where`.
#[derive(Debug, Clone)]
pub(super) enum Cond {
    Eq(toml::Value),
    AnyOf(Vec<toml::Value>),
    Range(Option<toml::Value>, Option<toml::Value>),
}

pub(super) fn conds(filter: &BTreeMap<String, toml::Value>) -> Vec<(String, Cond)> {
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
pub(super) enum Lit {
    Bool(bool),
    Num(f64),
    Date(String),
    Text(String),
}

pub(super) fn lit(v: &toml::Value) -> Lit {
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
pub(super) fn as_lit(raw: &str, like: &Lit) -> Option<Lit> {
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
pub(super) fn holds(raw: Option<&str>, cond: &Cond) -> bool {
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

pub(super) fn sql_lit(d: Dialect, v: &toml::Value) -> String {
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

pub(super) fn where_sql(d: Dialect, filter: &BTreeMap<String, toml::Value>) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
