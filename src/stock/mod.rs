//! The stock service after the migration: barcode scans that move stock
//! ([`scans`]), alerts on parts under their minimum ([`alerts`]), and what
//! to order from which supplier, the orders and their parcels ([`orders`]).

pub mod alerts;
pub mod orders;
pub mod scans;

use crate::db::Conn;
use crate::error::Result;
use crate::sink::Sink;

/// On PostgreSQL, make the other writers of `table` (another import, a
/// concurrent `alerts check`) wait until this transaction ends, so that
/// what it reads is what it writes back. SQLite has one writer at a time
/// already (`BEGIN IMMEDIATE`).
pub(crate) fn lock(sink: &mut dyn Sink, table: &str) -> Result<()> {
    sink.conn()?.lock_table(table)
}

/// A part's stock as the target holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    pub reference: String,
    pub designation: Option<String>,
    pub quantity: i64,
    /// The workbook's "Seuil mini" (`parts.min_quantity`).
    pub min_quantity: Option<i64>,
}

/// An integer as a store gives it back as text (`12`, `12.0`).
pub(crate) fn int(v: &Option<String>) -> Option<i64> {
    v.as_deref()
        .and_then(|s| s.parse::<f64>().ok())
        .map(|f| f as i64)
}

/// Every part's stock and minimum (the caller checks `parts` exists).
pub fn levels(conn: &mut dyn Conn) -> Result<Vec<Level>> {
    let rows = conn.select_text(
        "parts",
        &[
            "reference".into(),
            "designation".into(),
            "quantity".into(),
            "min_quantity".into(),
        ],
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some(Level {
                reference: r.first()?.clone()?,
                designation: r.get(1).cloned().flatten(),
                quantity: r.get(2).and_then(int).unwrap_or(0),
                min_quantity: r.get(3).and_then(int),
            })
        })
        .collect())
}
