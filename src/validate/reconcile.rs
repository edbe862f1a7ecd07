//! The verdict of a metric: its sides compared, with what the run set
//! apart, and the report that gathers the verdicts.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::batch::parse;

use super::spec::{Kind, MetricSpec, Value};

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

pub(super) fn digest(v: &Value) -> String {
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

pub(super) fn size(v: &Value, kind: Kind) -> f64 {
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

pub(super) fn show_row(r: &[String]) -> String {
    format!("({})", r.join(", "))
}

pub(super) const MAX_DIFFERENCES: usize = 50;

/// Compare a metric's sides with what the run set apart.
pub(super) fn reconcile(
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
pub(super) fn explain_refusal(message: String) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::mapping::ColumnType;
    use crate::validate::spec::ColumnPair;
    use crate::validate::spec::tests::metric;

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
