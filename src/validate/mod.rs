//! Validation of a migration: the plan's metrics computed on source and
//! target and reconciled with the run's own accounting.
//!
//! Not built yet (issue 5). What exists today is the per-table accounting
//! check, `read = written + merged + rejected`, in
//! [`crate::pipeline::tally::Tally::check`], which every run enforces.
