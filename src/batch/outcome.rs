//! What becomes of a row that is not simply written: rejected with a
//! reason, or folded into an earlier row with the same key. Transforms
//! produce these; sinks, the quarantine and the tally consume them.

use crate::batch::Value;
use crate::config::mapping::Merge;

/// A row that is not written, with why.
#[derive(Debug, Clone)]
pub struct Reject {
    /// Position in the source (sheet row number, or record ordinal).
    pub row: u64,
    /// Short reason, the same for every row failing the same rule: this is
    /// what the run's tally counts.
    pub reason: String,
    /// The reason with the offending value, and any further failures.
    pub detail: String,
    /// The row as read from the source (before cleaning).
    pub record: Vec<(String, Option<String>)>,
}

/// One row folded into another.
#[derive(Debug, Clone)]
pub struct MergeRecord {
    /// The key, as text.
    pub key: String,
    /// Source row kept.
    pub kept_row: u64,
    /// Source row merged into it.
    pub merged_row: u64,
    /// With `[dedupe] id`: the identity of the kept and of the merged row.
    pub kept_id: Option<String>,
    pub merged_id: Option<String>,
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
