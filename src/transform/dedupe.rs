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

use polars::prelude::*;

use crate::batch::{Cursor, Value, ValueRef, is_internal};
use crate::batch::{MergeOp, MergeRecord, ROW_COLUMN, Reject};
use crate::config::mapping::{KeyNormalize, Mapping, Merge, OnDuplicate};
use crate::error::{Error, Result};
use crate::transform::clean::fold_key;

/// What is remembered of the first row of each key.
///
/// One is kept per distinct key, so it is small: 16 bytes (with its
/// 16-byte key hash, a 32-byte map entry) when the mapping needs only the
/// row number, the rest boxed apart when it needs more. (At 600,000 parts
/// the four fields inline made the map 100 MB.)
struct Kept {
    row: u64,
    more: Option<Box<KeptMore>>,
}

struct KeptMore {
    id: Option<String>,
    /// Values of `locate`, when they must be remembered.
    at: Option<Vec<(String, Value)>>,
    /// A key held by the target before the run: the identity of its row.
    target: Option<String>,
}

impl Kept {
    fn new(
        row: u64,
        id: Option<String>,
        at: Option<Vec<(String, Value)>>,
        target: Option<String>,
    ) -> Kept {
        let more = (id.is_some() || at.is_some() || target.is_some())
            .then(|| Box::new(KeptMore { id, at, target }));
        Kept { row, more }
    }

    fn id(&self) -> Option<&String> {
        self.more.as_ref().and_then(|m| m.id.as_ref())
    }

    fn at(&self) -> Option<&Vec<(String, Value)>> {
        self.more.as_ref().and_then(|m| m.at.as_ref())
    }

    fn target(&self) -> Option<&String> {
        self.more.as_ref().and_then(|m| m.target.as_ref())
    }
}

/// A row's values as text, for the quarantine.
fn record_of(names: &[String], cursors: &[Cursor<'_>], i: usize) -> Vec<(String, Option<String>)> {
    names
        .iter()
        .zip(cursors)
        .filter(|(n, _)| !is_internal(n))
        .map(|(n, c)| (n.clone(), c.get(i).to_text()))
        .collect()
}

pub struct Dedupe {
    /// Key column names; empty = every written column (exact duplicates).
    key: Vec<String>,
    merges: HashMap<String, Merge>,
    fold: bool,
    /// With `skip_invalid`: per key column, the pattern its (folded) value
    /// must match to take part in the dedupe.
    patterns: Vec<Option<regex::Regex>>,
    id: Option<String>,
    /// Whole-row dedupe: columns left out of the comparison.
    except: Vec<String>,
    /// Columns that find the kept row in the target (its primary key, or
    /// the dedupe key), when their values must be remembered: a folded key
    /// differs from what was written.
    locate: Vec<String>,
    /// Key hash → the kept row's source row, identity and locating values.
    seen: HashMap<u128, Kept, crate::batch::KeyHash>,
    /// Reject duplicates instead of merging them.
    reject: bool,
    /// Merged id → kept id (with `[dedupe] id`).
    pub remap: HashMap<String, String>,
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
        let fold = spec.normalize == Some(KeyNormalize::Fold);
        // the target key finds the written row, unless the table has none
        let locate = if !m.target.key.is_empty() && (fold || m.target.key != key) {
            m.target.key.clone()
        } else if fold {
            key.clone()
        } else {
            Vec::new()
        };
        Some(Dedupe {
            key: key.clone(),
            except: spec.except.clone(),
            locate,
            merges: spec.merge.clone().into_iter().collect(),
            fold,
            patterns: if spec.skip_invalid {
                key.iter()
                    .map(|k| {
                        m.columns
                            .iter()
                            .find(|c| &c.name == k)
                            .and_then(|c| c.pattern.as_ref())
                            .and_then(|p| regex::Regex::new(&format!("^(?:{p})$")).ok())
                    })
                    .collect()
            } else {
                Vec::new()
            },
            id: spec.id.clone(),
            reject: spec.on_duplicate == OnDuplicate::Reject,
            seen: HashMap::default(),
            remap: HashMap::new(),
            merged: 0,
            log: Vec::new(),
        })
    }

    /// The key columns (empty for whole-row dedupe).
    pub fn key(&self) -> &[String] {
        &self.key
    }

    /// The columns that identify a row in the target (its key), when they
    /// differ from the dedupe key.
    pub fn identity(&self) -> &[String] {
        &self.locate
    }

    /// The keys kept so far, as the run report declares them: the map of
    /// key hashes and what is boxed beside an entry (an id, locating
    /// values, a target's identity), plus the merged → kept id map.
    pub fn held(&self) -> crate::batch::Held {
        let table =
            crate::batch::TableBytes::of(self.seen.capacity(), std::mem::size_of::<(u128, Kept)>());
        let text = |s: &String| s.capacity() as u64;
        let boxed: u64 = self
            .seen
            .values()
            .filter_map(|k| k.more.as_deref())
            .map(|m| {
                std::mem::size_of::<KeptMore>() as u64
                    + m.id.as_ref().map_or(0, text)
                    + m.target.as_ref().map_or(0, text)
                    + m.at.as_ref().map_or(0, |at| {
                        at.iter()
                            .map(|(n, v)| {
                                (n.capacity() + std::mem::size_of::<(String, Value)>()) as u64
                                    + v.as_ref().to_text().map_or(0, |t| t.len() as u64)
                            })
                            .sum()
                    })
            })
            .sum();
        let remap = crate::batch::TableBytes::of(
            self.remap.capacity(),
            std::mem::size_of::<(String, String)>(),
        );
        let remap_text: u64 = self.remap.iter().map(|(a, b)| text(a) + text(b)).sum();
        crate::batch::Held {
            what: "dedupe keys".into(),
            entries: self.seen.len() as u64,
            bytes: table.now + boxed + remap.now + remap_text,
            peak_bytes: table.peak + boxed + remap.peak + remap_text,
        }
    }

    /// Whether duplicates are rejected (rather than merged).
    pub fn rejects(&self) -> bool {
        self.reject
    }

    /// Hash of a row's key, or `None` when the key cannot match (a NULL or
    /// empty part, or a part failing its pattern with `skip_invalid`).
    fn hash_key(
        &self,
        values: &[ValueRef<'_>],
        whole_row: bool,
        bytes: &mut Vec<u8>,
    ) -> Option<u128> {
        bytes.clear();
        let mut null_key = false;
        for (k, &v) in values.iter().enumerate() {
            null_key |= v.is_null() && !whole_row;
            let folded = match v {
                ValueRef::Text(s) if self.fold => Some(fold_key(s)),
                _ => None,
            };
            let v = folded.as_deref().map_or(v, ValueRef::Text);
            // a key that fails its column's pattern (a placeholder such as
            // "n/a") never merges
            if let (Some(Some(p)), ValueRef::Text(s)) = (self.patterns.get(k), v) {
                null_key |= !p.is_match(s);
            }
            null_key |= matches!(v, ValueRef::Text("")) && !whole_row;
            v.encode_key(bytes);
        }
        (!null_key).then(|| crate::batch::hash128(bytes))
    }

    /// Keys the target already holds (rows written by earlier runs), each
    /// with the identity of its row (`identity()` values joined by ` | `):
    /// with `on_duplicate = "reject"`, a later run refuses a row that reuses
    /// one of them under another identity.
    pub fn seed(&mut self, rows: impl IntoIterator<Item = (Vec<Value>, String)>) {
        let mut bytes = Vec::with_capacity(64);
        for (values, owner) in rows {
            let refs: Vec<ValueRef<'_>> = values.iter().map(Value::as_ref).collect();
            if let Some(h) = self.hash_key(&refs, false, &mut bytes) {
                self.seen.insert(h, Kept::new(0, None, None, Some(owner)));
            }
        }
    }

    fn show_key(
        &self,
        names: &[String],
        key_idx: &[usize],
        cursors: &[Cursor<'_>],
        i: usize,
    ) -> String {
        key_idx
            .iter()
            .map(|&j| {
                format!(
                    "{} = {}",
                    names[j],
                    cursors[j].get(i).to_text().unwrap_or_else(|| "NULL".into())
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Take a batch; returns the rows to write, the merges to apply once
    /// they are written and, with `on_duplicate = "reject"`, the duplicates.
    pub fn push(&mut self, df: DataFrame) -> Result<Deduped> {
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
                .filter(|&i| !is_internal(&names[i]) && !self.except.contains(&names[i]))
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
        let id_idx = self
            .id
            .as_ref()
            .and_then(|id| names.iter().position(|n| n == id));
        let locate_idx: Vec<usize> = self
            .locate
            .iter()
            .filter_map(|c| names.iter().position(|n| n == c))
            .collect();
        let mut keep = Vec::with_capacity(df.height());
        let mut ops = Vec::new();
        let mut rejects = Vec::new();
        let mut bytes = Vec::with_capacity(64);
        let mut values: Vec<ValueRef<'_>> = Vec::with_capacity(key_idx.len());
        for i in 0..df.height() {
            let src_row = row_idx
                .map(|j| match cursors[j].get(i) {
                    ValueRef::Int(r) => r as u64,
                    _ => 0,
                })
                .unwrap_or(i as u64);
            values.clear();
            values.extend(key_idx.iter().map(|&j| cursors[j].get(i)));
            let Some(h) = self.hash_key(&values, whole_row, &mut bytes) else {
                keep.push(true);
                continue;
            };
            let this_id = id_idx.and_then(|j| cursors[j].get(i).to_text());
            // a key the target already holds: the same row again (an update
            // of it, when its identity matches) or a duplicate
            let seeded = self.seen.get(&h).and_then(|k| k.target().cloned());
            if let Some(owner) = seeded {
                let mine: Vec<String> = locate_idx
                    .iter()
                    .map(|&j| cursors[j].get(i).to_text().unwrap_or_default())
                    .collect();
                if owner.is_empty() || owner != mine.join(" | ") {
                    keep.push(false);
                    rejects.push(Reject {
                        row: src_row,
                        reason: format!("{}: duplicate", self.key.join(", ")),
                        detail: format!(
                            "{} already belongs to {} = {} in the target",
                            self.show_key(&names, &key_idx, &cursors, i),
                            self.locate.join(", "),
                            owner
                        ),
                        record: record_of(&names, &cursors, i),
                    });
                } else {
                    // seen now from this run: a later row with it is a duplicate
                    self.seen.insert(h, Kept::new(src_row, this_id, None, None));
                    keep.push(true);
                }
                continue;
            }
            match self.seen.get(&h) {
                None => {
                    let at = (!locate_idx.is_empty()).then(|| {
                        locate_idx
                            .iter()
                            .map(|&j| (names[j].clone(), cursors[j].get(i).to_owned()))
                            .collect()
                    });
                    self.seen.insert(h, Kept::new(src_row, this_id, at, None));
                    keep.push(true);
                }
                Some(kept) if self.reject => {
                    keep.push(false);
                    rejects.push(Reject {
                        row: src_row,
                        reason: format!("{}: duplicate", self.key.join(", ")),
                        detail: format!(
                            "{} is already used by source row {}, which is kept",
                            self.show_key(&names, &key_idx, &cursors, i),
                            kept.row
                        ),
                        record: record_of(&names, &cursors, i),
                    });
                }
                Some(kept) => {
                    let (kept_row, kept_id, kept_at) =
                        (kept.row, kept.id().cloned(), kept.at().cloned());
                    keep.push(false);
                    self.merged += 1;
                    if let (Some(k), Some(m)) = (&kept_id, &this_id) {
                        self.remap.insert(m.clone(), k.clone());
                    }
                    self.log.push(MergeRecord {
                        key: key_idx
                            .iter()
                            .map(|&j| cursors[j].get(i).to_text().unwrap_or_else(|| "NULL".into()))
                            .collect::<Vec<_>>()
                            .join(" | "),
                        kept_row,
                        merged_row: src_row,
                        kept_id,
                        merged_id: this_id,
                    });
                    // identical rows (whole-row key) have nothing to merge
                    let sets: Vec<(String, Merge, Value)> = if whole_row {
                        Vec::new()
                    } else {
                        names
                            .iter()
                            .enumerate()
                            .filter(|(j, n)| {
                                !is_internal(n) && !key_idx.contains(j) && !locate_idx.contains(j)
                            })
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
                        key: kept_at.unwrap_or_else(|| {
                            key_idx
                                .iter()
                                .map(|&j| (names[j].clone(), cursors[j].get(i).to_owned()))
                                .collect()
                        }),
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
        Ok(Deduped { kept, ops, rejects })
    }
}

/// What dedupe makes of a batch.
pub struct Deduped {
    /// Rows to write.
    pub kept: DataFrame,
    /// Duplicates to fold into rows written.
    pub ops: Vec<MergeOp>,
    /// Duplicates refused (`on_duplicate = "reject"`).
    pub rejects: Vec<Reject>,
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
            normalize: None,
            skip_invalid: false,
            id: None,
            except: vec![],
            on_duplicate: OnDuplicate::Merge,
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
        let Deduped { kept, ops, .. } = d
            .push(frame(&[("A", Some(2), "R1", 5), ("B", Some(1), "R2", 6)]))
            .unwrap();
        assert_eq!(kept.height(), 2);
        assert!(ops.is_empty());
        let Deduped { kept, ops, .. } = d
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
        let Deduped { kept: out, ops, .. } = d
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
        let Deduped { kept: out, ops, .. } = d.push(frame(&[("A", Some(2), "R1", 4)])).unwrap();
        assert_eq!(out.height(), 0);
        assert_eq!((ops[0].row, ops[0].kept_row), (4, 1));
        assert_eq!(d.merged, 2);
    }

    #[test]
    fn duplicates_can_be_rejected_instead() {
        let mut m = mapping(&["reference"], &[]);
        if let Some(d) = m.dedupe.as_mut() {
            d.on_duplicate = OnDuplicate::Reject;
        }
        let mut d = Dedupe::for_mapping(&m).unwrap();
        let first = d
            .push(frame(&[("A", Some(2), "R1", 5), ("B", Some(1), "R2", 6)]))
            .unwrap();
        assert_eq!(first.kept.height(), 2);
        let second = d
            .push(frame(&[("A", Some(3), "R9", 9), ("C", None, "R8", 10)]))
            .unwrap();
        assert_eq!(second.kept.height(), 1);
        assert!(second.ops.is_empty());
        assert_eq!(second.rejects.len(), 1);
        let r = &second.rejects[0];
        assert_eq!((r.row, r.reason.as_str()), (9, "reference: duplicate"));
        assert_eq!(
            r.detail,
            "reference = A is already used by source row 5, which is kept"
        );
        assert_eq!(r.record[1], ("quantity".to_string(), Some("3".to_string())));
        assert_eq!(d.merged, 0);
        assert!(d.log.is_empty());
    }

    #[test]
    fn null_keys_never_match() {
        let m = mapping(&["quantity"], &[]);
        let mut d = Dedupe::for_mapping(&m).unwrap();
        let Deduped { kept: out, ops, .. } = d
            .push(frame(&[("A", None, "R1", 1), ("B", None, "R1", 2)]))
            .unwrap();
        assert_eq!(out.height(), 2);
        assert!(ops.is_empty());
    }
}
