//! Deduplication on a key, with a declared merge per column.
//!
//! Rows stream through: the first row of each key is passed on to be
//! written at once, and every later row with the same key becomes a
//! [`MergeOp`] that the sink applies to the row already written
//! (`quantity = quantity + 2`, `last_receipt_date = max(…)`). The only state
//! is one 128-bit hash of each key seen and the source row that holds it:
//! about 40 bytes per distinct key, whatever the width of the rows.
//!
//! Keys with a NULL part never match (as in SQL). With the whole row as the
//! key (`key = ["*"]`), duplicates are identical: their ops carry no update,
//! only which row they repeat.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};

use polars::prelude::*;

use crate::batch::{Cursor, Value, ValueRef, is_internal};
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

/// A duplicate row to fold into the row already written with its key.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeOp {
    /// The key columns and values that find the written row.
    pub key: Vec<(String, Value)>,
    /// Columns to update: how, and with which (non-NULL) value.
    pub sets: Vec<(String, Merge, Value)>,
    /// Source row of the duplicate.
    pub row: u64,
    /// Source row of the first row with this key (the one written).
    pub kept_row: u64,
    /// The duplicate as values, for the quarantine if its row is missing.
    pub record: Vec<(String, Option<String>)>,
}

pub struct Dedupe {
    /// Key column names; empty = every written column (exact duplicates).
    key: Vec<String>,
    merges: HashMap<String, Merge>,
    seen: HashMap<u128, u64>,
    /// Rows merged so far.
    pub merged: u64,
    /// Every merge, in source order.
    pub log: Vec<MergeRecord>,
}

/// A 128-bit hash of key bytes (two SipHash-1-3 with different prefixes):
/// the chance that two distinct keys of one table collide is negligible
/// (about n²/2¹²⁹).
fn key_hash(bytes: &[u8]) -> u128 {
    let mut a = DefaultHasher::new();
    a.write(bytes);
    let mut b = DefaultHasher::new();
    b.write_u8(0xa5);
    b.write(bytes);
    ((a.finish() as u128) << 64) | b.finish() as u128
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
        Some(Dedupe {
            key,
            merges: spec.merge.clone().into_iter().collect(),
            seen: HashMap::new(),
            merged: 0,
            log: Vec::new(),
        })
    }

    /// The key columns (empty for whole-row dedupe).
    pub fn key(&self) -> &[String] {
        &self.key
    }

    /// Take a batch; returns the rows to write and the merges to apply
    /// once they are written.
    pub fn push(&mut self, df: DataFrame) -> Result<(DataFrame, Vec<MergeOp>)> {
        let mut df = df;
        df.rechunk_mut();
        let names: Vec<String> = df.columns().iter().map(|c| c.name().to_string()).collect();
        let cursors: Vec<Cursor<'_>> = df
            .columns()
            .iter()
            .map(Cursor::new)
            .collect::<Result<_>>()?;
        let row_idx = names.iter().position(|n| n == ROW_COLUMN);
        let whole_row = self.key.is_empty();
        let key_idx: Vec<usize> = if whole_row {
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
        let mut keep = Vec::with_capacity(df.height());
        let mut ops = Vec::new();
        let mut bytes = Vec::with_capacity(64);
        for i in 0..df.height() {
            let src_row = row_idx
                .map(|j| match cursors[j].get(i) {
                    ValueRef::Int(r) => r as u64,
                    _ => 0,
                })
                .unwrap_or(i as u64);
            bytes.clear();
            let mut null_key = false;
            for &j in &key_idx {
                let v = cursors[j].get(i);
                null_key |= v.is_null() && !whole_row;
                v.encode_key(&mut bytes);
            }
            if null_key {
                keep.push(true);
                continue;
            }
            let h = key_hash(&bytes);
            match self.seen.get(&h) {
                None => {
                    self.seen.insert(h, src_row);
                    keep.push(true);
                }
                Some(&kept_row) => {
                    keep.push(false);
                    self.merged += 1;
                    self.log.push(MergeRecord {
                        key: key_idx
                            .iter()
                            .map(|&j| cursors[j].get(i).to_text().unwrap_or_else(|| "NULL".into()))
                            .collect::<Vec<_>>()
                            .join(" | "),
                        kept_row,
                        merged_row: src_row,
                    });
                    // identical rows (whole-row key) have nothing to merge
                    let sets: Vec<(String, Merge, Value)> = if whole_row {
                        Vec::new()
                    } else {
                        names
                            .iter()
                            .enumerate()
                            .filter(|(j, n)| !is_internal(n) && !key_idx.contains(j))
                            .filter_map(|(j, n)| {
                                let v = cursors[j].get(i);
                                (!v.is_null()).then(|| {
                                    (
                                        n.clone(),
                                        self.merges.get(n).copied().unwrap_or_default(),
                                        v.to_owned(),
                                    )
                                })
                            })
                            .collect()
                    };
                    ops.push(MergeOp {
                        key: key_idx
                            .iter()
                            .map(|&j| (names[j].clone(), cursors[j].get(i).to_owned()))
                            .collect(),
                        sets,
                        row: src_row,
                        kept_row,
                        record: names
                            .iter()
                            .zip(&cursors)
                            .filter(|(n, _)| !is_internal(n))
                            .map(|(n, c)| (n.clone(), c.get(i).to_text()))
                            .collect(),
                    });
                }
            }
        }
        let kept = if keep.iter().all(|k| *k) {
            df.clone()
        } else {
            let mask = BooleanChunked::from_iter_values("keep".into(), keep.into_iter());
            df.filter(&mask)
                .map_err(|e| Error::runtime(format!("dedupe: {e}")))?
        };
        Ok((kept, ops))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Value, cursors, frame_from_rows};
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
    fn duplicates_become_merges_across_batches() {
        let m = mapping(&["reference"], &[("quantity", Merge::Sum)]);
        let mut d = Dedupe::for_mapping(&m).unwrap();
        let (kept, ops) = d
            .push(frame(&[("A", Some(2), "R1", 5), ("B", Some(1), "R2", 6)]))
            .unwrap();
        assert_eq!(kept.height(), 2);
        assert!(ops.is_empty());
        let (kept, ops) = d
            .push(frame(&[("A", Some(3), "R9", 9), ("C", None, "R8", 10)]))
            .unwrap();
        assert_eq!(
            values(&kept),
            vec![vec![Some("C".into()), None, Some("R8".into())]]
        );
        assert_eq!(
            ops,
            vec![MergeOp {
                key: vec![("reference".into(), Value::Text("A".into()))],
                sets: vec![
                    ("quantity".into(), Merge::Sum, Value::Int(3)),
                    ("location".into(), Merge::First, Value::Text("R9".into())),
                ],
                row: 9,
                kept_row: 5,
                record: vec![
                    ("reference".into(), Some("A".into())),
                    ("quantity".into(), Some("3".into())),
                    ("location".into(), Some("R9".into())),
                ],
            }]
        );
        assert_eq!(d.merged, 1);
        assert_eq!(d.log[0].kept_row, 5);
        assert_eq!(d.log[0].merged_row, 9);
        assert_eq!(d.log[0].key, "A");
    }

    #[test]
    fn whole_row_dedupe_drops_exact_duplicates_without_merges() {
        let m = mapping(&["*"], &[]);
        let mut d = Dedupe::for_mapping(&m).unwrap();
        let (out, ops) = d
            .push(frame(&[
                ("A", Some(2), "R1", 1),
                ("A", Some(2), "R1", 2),
                ("A", Some(3), "R1", 3),
            ]))
            .unwrap();
        assert_eq!(out.height(), 2);
        assert_eq!(ops.len(), 1);
        assert!(ops[0].sets.is_empty());
        assert_eq!((ops[0].row, ops[0].kept_row), (2, 1));
        let (out, ops) = d.push(frame(&[("A", Some(2), "R1", 4)])).unwrap();
        assert_eq!(out.height(), 0);
        assert_eq!((ops[0].row, ops[0].kept_row), (4, 1));
        assert_eq!(d.merged, 2);
    }

    #[test]
    fn null_keys_never_match() {
        let m = mapping(&["quantity"], &[]);
        let mut d = Dedupe::for_mapping(&m).unwrap();
        let (out, ops) = d
            .push(frame(&[("A", None, "R1", 1), ("B", None, "R1", 2)]))
            .unwrap();
        assert_eq!(out.height(), 2);
        assert!(ops.is_empty());
    }
}
