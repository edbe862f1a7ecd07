//! Deduplication on a key, with a declared merge per column.
//!
//! State: the set of keys seen. When every column merges as `first`, rows
//! stream through (the first row of each key is passed on at once and only
//! key bytes are kept). Otherwise (`sum`, `last`, `max`, `min`) the merged
//! rows are held until the table ends, one per distinct key, because a
//! later duplicate still changes them.

use std::collections::HashMap;

use polars::prelude::*;

use crate::batch::{Cursor, Value, ValueRef, frame_from_rows, is_internal, schema_of};
use crate::config::mapping::{Mapping, Merge};
use crate::error::{Error, Result};
use crate::source::ROW_COLUMN;

/// One row folded into another.
#[derive(Debug, Clone)]
pub struct MergeRecord {
    /// The key, as text.
    pub key: String,
    /// Source row kept.
    pub kept_row: u64,
    /// Source row merged into it.
    pub merged_row: u64,
}

pub struct Dedupe {
    /// Key column names; empty = every written column (exact duplicates).
    key: Vec<String>,
    merges: HashMap<String, Merge>,
    hold: bool,
    index: HashMap<Vec<u8>, (usize, u64)>,
    held: Vec<Vec<Value>>,
    schema: Option<Vec<(String, DataType)>>,
    /// Rows merged so far.
    pub merged: u64,
    /// Every merge, in source order.
    pub log: Vec<MergeRecord>,
}

impl Dedupe {
    /// A dedupe step for the mapping, if it declares one.
    pub fn for_mapping(m: &Mapping) -> Option<Dedupe> {
        let spec = m.dedupe.as_ref()?;
        let key = m.dedupe_key();
        let key = if key.len() == 1 && key[0] == "*" {
            Vec::new()
        } else {
            key
        };
        let hold = spec.merge.values().any(|mg| *mg != Merge::First);
        Some(Dedupe {
            key,
            merges: spec.merge.clone().into_iter().collect(),
            hold,
            index: HashMap::new(),
            held: Vec::new(),
            schema: None,
            merged: 0,
            log: Vec::new(),
        })
    }

    /// Whether rows are held until [`Dedupe::finish`].
    pub fn holds_rows(&self) -> bool {
        self.hold
    }

    /// Take a batch; returns the rows that can be written now.
    pub fn push(&mut self, df: DataFrame) -> Result<Option<DataFrame>> {
        let mut df = df;
        df.rechunk_mut();
        if self.schema.is_none() {
            self.schema = Some(schema_of(&df));
        }
        let names: Vec<String> = df.columns().iter().map(|c| c.name().to_string()).collect();
        let cursors: Vec<Cursor<'_>> = df
            .columns()
            .iter()
            .map(Cursor::new)
            .collect::<Result<_>>()?;
        let row_idx = names.iter().position(|n| n == ROW_COLUMN);
        let key_idx: Vec<usize> = if self.key.is_empty() {
            (0..names.len())
                .filter(|&i| !is_internal(&names[i]))
                .collect()
        } else {
            self.key
                .iter()
                .map(|k| {
                    names.iter().position(|n| n == k).ok_or_else(|| {
                        Error::runtime(format!("dedupe key column `{k}` is not in the batch"))
                    })
                })
                .collect::<Result<_>>()?
        };
        let merge_of: Vec<Merge> = names
            .iter()
            .map(|n| self.merges.get(n).copied().unwrap_or_default())
            .collect();
        let mut keep = Vec::with_capacity(df.height());
        let mut key = Vec::with_capacity(64);
        for i in 0..df.height() {
            let src_row = row_idx
                .map(|j| match cursors[j].get(i) {
                    ValueRef::Int(r) => r as u64,
                    _ => 0,
                })
                .unwrap_or(i as u64);
            key.clear();
            let mut null_key = false;
            for &j in &key_idx {
                let v = cursors[j].get(i);
                null_key |= v.is_null() && !self.key.is_empty();
                v.encode_key(&mut key);
            }
            // NULL keys never match (as in SQL): such rows are distinct.
            let seen = if null_key {
                None
            } else {
                self.index.get(&key).copied()
            };
            match seen {
                None => {
                    if !null_key {
                        self.index.insert(key.clone(), (self.held.len(), src_row));
                    }
                    if self.hold {
                        self.held
                            .push(cursors.iter().map(|c| c.get(i).to_owned()).collect());
                    }
                    keep.push(true);
                }
                Some((slot, kept_row)) => {
                    self.merged += 1;
                    self.log.push(MergeRecord {
                        key: key_text(&key_idx, &cursors, i),
                        kept_row,
                        merged_row: src_row,
                    });
                    if self.hold {
                        let target = &mut self.held[slot];
                        for (j, c) in cursors.iter().enumerate() {
                            if Some(j) == row_idx {
                                continue;
                            }
                            merge_value(&mut target[j], c.get(i), merge_of[j]);
                        }
                    }
                    keep.push(false);
                }
            }
        }
        if self.hold {
            return Ok(None);
        }
        if keep.iter().all(|k| *k) {
            return Ok(Some(df));
        }
        let mask = BooleanChunked::from_iter_values("keep".into(), keep.into_iter());
        df.filter(&mask)
            .map(Some)
            .map_err(|e| Error::runtime(format!("dedupe: {e}")))
    }

    /// The held rows, once the table has been read.
    pub fn finish(&mut self) -> Result<Option<DataFrame>> {
        if !self.hold {
            return Ok(None);
        }
        let Some(schema) = &self.schema else {
            return Ok(None);
        };
        let rows = std::mem::take(&mut self.held);
        frame_from_rows(schema, &rows).map(Some)
    }
}

fn key_text(key_idx: &[usize], cursors: &[Cursor<'_>], i: usize) -> String {
    key_idx
        .iter()
        .map(|&j| cursors[j].get(i).to_text().unwrap_or_else(|| "NULL".into()))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn merge_value(acc: &mut Value, new: ValueRef<'_>, how: Merge) {
    if new.is_null() {
        return;
    }
    if matches!(acc, Value::Null) {
        *acc = new.to_owned();
        return;
    }
    match how {
        Merge::First => {}
        Merge::Last => *acc = new.to_owned(),
        Merge::Sum => match (acc, new) {
            (Value::Int(a), ValueRef::Int(b)) => *a = a.saturating_add(b),
            (Value::Float(a), ValueRef::Float(b)) => *a += b,
            _ => {}
        },
        Merge::Max | Merge::Min => {
            let ord = compare(&acc.as_ref(), &new);
            let replace = match how {
                Merge::Max => ord == Some(std::cmp::Ordering::Less),
                _ => ord == Some(std::cmp::Ordering::Greater),
            };
            if replace {
                *acc = new.to_owned();
            }
        }
    }
}

fn compare(a: &ValueRef<'_>, b: &ValueRef<'_>) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (ValueRef::Int(x), ValueRef::Int(y)) => Some(x.cmp(y)),
        (ValueRef::Float(x), ValueRef::Float(y)) => x.partial_cmp(y),
        (ValueRef::Date(x), ValueRef::Date(y)) => Some(x.cmp(y)),
        (ValueRef::Datetime(x), ValueRef::Datetime(y)) => Some(x.cmp(y)),
        (ValueRef::Text(x), ValueRef::Text(y)) => Some(x.cmp(y)),
        (ValueRef::Bool(x), ValueRef::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Value, cursors};
    use std::collections::BTreeMap;

    fn mapping(key: &[&str], merge: &[(&str, Merge)]) -> Mapping {
        let text = r#"
[source]
sheet = "S"
[target]
table = "parts"
key = ["reference"]
[[columns]]
name = "reference"
[[columns]]
name = "quantity"
type = "integer"
[[columns]]
name = "location"
"#;
        let mut m: Mapping = toml::from_str(text).unwrap();
        m.dedupe = Some(crate::config::mapping::DedupeSpec {
            key: key.iter().map(|s| s.to_string()).collect(),
            merge: merge
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>(),
        });
        m
    }

    fn frame(rows: &[(&str, Option<i64>, &str, u64)]) -> DataFrame {
        let schema = vec![
            ("reference".to_string(), DataType::String),
            ("quantity".to_string(), DataType::Int64),
            ("location".to_string(), DataType::String),
            (ROW_COLUMN.to_string(), DataType::UInt64),
        ];
        let rows: Vec<Vec<Value>> = rows
            .iter()
            .map(|(r, q, l, n)| {
                vec![
                    Value::Text(r.to_string()),
                    q.map(Value::Int).unwrap_or(Value::Null),
                    Value::Text(l.to_string()),
                    Value::Int(*n as i64),
                ]
            })
            .collect();
        frame_from_rows(&schema, &rows).unwrap()
    }

    fn values(df: &DataFrame) -> Vec<Vec<Option<String>>> {
        let (_, cur) = cursors(df).unwrap();
        (0..df.height())
            .map(|i| cur.iter().map(|c| c.get(i).to_text()).collect())
            .collect()
    }

    #[test]
    fn sums_quantities_across_batches_and_keeps_first_location() {
        let m = mapping(&["reference"], &[("quantity", Merge::Sum)]);
        let mut d = Dedupe::for_mapping(&m).unwrap();
        assert!(d.holds_rows());
        assert!(
            d.push(frame(&[("A", Some(2), "R1", 5), ("B", Some(1), "R2", 6)]))
                .unwrap()
                .is_none()
        );
        assert!(
            d.push(frame(&[("A", Some(3), "R9", 9), ("A", None, "R8", 10)]))
                .unwrap()
                .is_none()
        );
        let out = d.finish().unwrap().unwrap();
        assert_eq!(
            values(&out),
            vec![
                vec![Some("A".into()), Some("5".into()), Some("R1".into())],
                vec![Some("B".into()), Some("1".into()), Some("R2".into())],
            ]
        );
        assert_eq!(d.merged, 2);
        assert_eq!(d.log[0].kept_row, 5);
        assert_eq!(d.log[0].merged_row, 9);
        assert_eq!(d.log[0].key, "A");
    }

    #[test]
    fn whole_row_dedupe_streams_exact_duplicates_only() {
        let m = mapping(&["*"], &[]);
        let mut d = Dedupe::for_mapping(&m).unwrap();
        assert!(!d.holds_rows());
        let out = d
            .push(frame(&[
                ("A", Some(2), "R1", 1),
                ("A", Some(2), "R1", 2),
                ("A", Some(3), "R1", 3),
            ]))
            .unwrap()
            .unwrap();
        assert_eq!(out.height(), 2);
        let out = d.push(frame(&[("A", Some(2), "R1", 4)])).unwrap().unwrap();
        assert_eq!(out.height(), 0);
        assert_eq!(d.merged, 2);
    }

    #[test]
    fn max_and_last_merges() {
        let mut acc = Value::Int(3);
        merge_value(&mut acc, ValueRef::Int(7), Merge::Max);
        assert_eq!(acc, Value::Int(7));
        merge_value(&mut acc, ValueRef::Int(5), Merge::Max);
        assert_eq!(acc, Value::Int(7));
        merge_value(&mut acc, ValueRef::Int(5), Merge::Last);
        assert_eq!(acc, Value::Int(5));
        merge_value(&mut acc, ValueRef::Null, Merge::Last);
        assert_eq!(acc, Value::Int(5));
        merge_value(&mut acc, ValueRef::Int(1), Merge::Min);
        assert_eq!(acc, Value::Int(1));
    }
}
