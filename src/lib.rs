//! repaero: Rep'Aero's data migration toolkit.
//!
//! Data moves one way through a job: a [`source`] reads bounded batches, the
//! [`transform`]s clean them and reject what cannot be kept, a [`sink`]
//! writes them, and the [`pipeline`] accounts for every row. What a
//! migration does is declared in TOML ([`config`]); the code holds the
//! mechanisms. The modules stand on floors ([`FLOORS`]); docs/architecture.md
//! walks through them.

pub mod batch;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod db;
pub mod error;
pub mod fixtures;
pub mod health;
pub mod inspect;
pub mod kpi;
pub mod notify;
pub mod pipeline;
pub mod rollup;
pub mod scaffold;
pub mod schedule;
pub mod serve;
pub mod sink;
pub mod source;
pub mod stock;
pub mod transform;
pub mod validate;

pub use error::{Error, Result};

/// One floor of `src/`: its top-level modules.
pub struct Floor {
    pub name: &'static str,
    pub modules: &'static [&'static str],
    /// The modules of this floor never use each other (the stages).
    pub siblings_apart: bool,
}

/// The floors of `src/`, bottom first. A module uses modules of its own
/// floor and of the floors below, never of a floor above; the stages never
/// use each other; no two modules use each other, even through others.
/// `tests/layers.rs` reads every `crate::…` path of `src/` and fails on a
/// module that breaks this, naming the file and the import.
pub const FLOORS: &[Floor] = &[
    Floor {
        name: "vocabulary",
        // errors, configuration, batches and row outcomes, value parsing,
        // database connections and the SQL dialect
        modules: &["error", "config", "batch", "db"],
        siblings_apart: false,
    },
    Floor {
        name: "stages",
        // read; clean and check; write; send mail and SMS
        modules: &["source", "transform", "sink", "notify"],
        siblings_apart: true,
    },
    Floor {
        name: "run",
        // a job: source → transforms → sink, with the tally
        modules: &["pipeline"],
        siblings_apart: false,
    },
    Floor {
        name: "services",
        // what runs after or beside a migration
        modules: &[
            "validate", "inspect", "scaffold", "stock", "daemon", "fixtures", "schedule", "health",
        ],
        siblings_apart: false,
    },
    Floor {
        name: "views",
        // what reads the services' tables for people: the plan's
        // indicators, their summary tables and the dashboard
        modules: &["kpi", "rollup", "serve"],
        siblings_apart: false,
    },
    Floor {
        name: "top",
        // the command line
        modules: &["cli"],
        siblings_apart: false,
    },
];
