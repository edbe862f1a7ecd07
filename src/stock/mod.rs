//! The stock service after the migration: barcode scans that move stock
//! ([`scans`]), alerts on parts under their minimum ([`alerts`]), and what
//! to order from which supplier ([`orders`]).

pub mod alerts;
pub mod orders;
pub mod scans;
