//! The per-table tally: every row read ends written, merged or rejected.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::batch::Held;
use crate::error::{Error, Result};

/// Rows a source skipped because they are not data (not counted as read).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Skipped {
    pub rows_above_header: u64,
    pub blank_rows: u64,
    pub footer_rows: u64,
}

/// What happened to one table's rows in one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Tally {
    pub table: String,
    pub source: String,
    pub mode: String,
    pub read: u64,
    pub written: u64,
    pub merged: u64,
    pub rejected: u64,
    /// Rejected rows by reason.
    pub reasons: BTreeMap<String, u64>,
    /// Rows kept but flagged by a rule (`on_invalid = "flag"`), by reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub flagged: BTreeMap<String, u64>,
    /// Placeholder values turned into NULL, per column.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nulled: BTreeMap<String, u64>,
    /// Values re-pointed to a merged row's survivor, per column.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub remapped: BTreeMap<String, u64>,
    /// Decimals with more digits than their column's scale, rounded, per column.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rounded: BTreeMap<String, u64>,
    pub skipped: Skipped,
    /// State kept in memory from the table's first row to its last (a
    /// dedupe's keys, a reference rule's keys): it grows with the table,
    /// so the report declares it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<Held>,
    /// Upserts: rows written that were new, and that replaced a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inserted: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<u64>,
    /// Incremental sync: target rows deleted (or stamped) because their key
    /// is no longer in the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<u64>,
    /// Incremental sync: the watermark before and after the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<Watermark>,
    pub seconds: f64,
}

/// How far an incremental sync has read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Watermark {
    /// The source column followed.
    pub column: String,
    /// Highest value synced before this run (`None`: first run, all rows).
    pub from: Option<String>,
    /// Highest value synced after it.
    pub to: Option<String>,
    /// Rows read because their update key is NULL (read on every run: they
    /// cannot be known unchanged).
    pub null_rows: u64,
}

impl Tally {
    pub fn new(table: &str, source: &str, mode: &str) -> Tally {
        Tally {
            table: table.to_string(),
            source: source.to_string(),
            mode: mode.to_string(),
            ..Default::default()
        }
    }

    pub fn reject(&mut self, reason: &str) {
        self.rejected += 1;
        *self.reasons.entry(reason.to_string()).or_default() += 1;
    }

    /// Rows per second over the table's duration.
    pub fn rows_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.read as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// `read = written + merged + rejected`, and the reasons add up.
    pub fn check(&self) -> Result<()> {
        let accounted = self.written + self.merged + self.rejected;
        let by_reason: u64 = self.reasons.values().sum();
        if self.read != accounted || by_reason != self.rejected {
            return Err(Error::Accounting(format!(
                "table {}: rows do not add up: read {} ≠ written {} + merged {} + rejected {} (= {accounted}); rejected by reason sum to {by_reason}. Nothing was committed; this is a bug in repaero, please report it with the run's report",
                self.table, self.read, self.written, self.merged, self.rejected
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_balanced_tally_passes_and_an_unbalanced_one_fails() {
        let mut t = Tally::new("parts", "stock.xlsx › Stock", "replace");
        t.read = 10;
        t.written = 7;
        t.merged = 1;
        t.reject("quantity: not an integer");
        t.reject("reference: required");
        assert!(t.check().is_ok());
        t.written = 6;
        let err = t.check().unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(
            err.to_string()
                .contains("read 10 ≠ written 6 + merged 1 + rejected 2"),
            "{err}"
        );
    }
}
