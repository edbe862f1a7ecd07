//! repaero: Rep'Aero's data migration toolkit.
//!
//! Data moves one way through a job: a [`source`] reads bounded batches, the
//! [`transform`]s clean them and reject what cannot be kept, a [`sink`]
//! writes them, and the [`pipeline`] accounts for every row. What a
//! migration does is declared in TOML ([`config`]); the code holds the
//! mechanisms.

pub mod batch;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod error;
pub mod fixtures;
pub mod pipeline;
pub mod sink;
pub mod source;
pub mod stock;
pub mod transform;
pub mod validate;

pub use error::{Error, Result};
