//! The library's error type and its mapping to process exit codes.
//!
//! Every message names what is at fault (file, sheet, table, row, column)
//! and, where it can, what to do about it. Exit codes (README, "Commands"):
//! 0 success, 1 runtime failure, 2 usage or configuration error (including
//! unusable input files), 3 validation mismatch.

use std::fmt;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, classified by who can fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration file, job, mapping or command line is wrong: exit 2.
    #[error("{0}")]
    Config(String),
    /// An input file cannot be used as configured (missing, corrupt,
    /// password-protected, unknown sheet or column): exit 2.
    #[error("{0}")]
    Input(String),
    /// Something failed while running (database refused a write, I/O):
    /// exit 1.
    #[error("{0}")]
    Runtime(String),
    /// The run's own accounting does not add up: exit 1.
    #[error("{0}")]
    Accounting(String),
    /// A validation metric does not match: exit 3.
    #[error("{0}")]
    Validation(String),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Input(_) => 2,
            Error::Runtime(_) | Error::Accounting(_) => 1,
            Error::Validation(_) => 3,
        }
    }

    pub fn config(msg: impl fmt::Display) -> Self {
        Error::Config(msg.to_string())
    }

    pub fn input(msg: impl fmt::Display) -> Self {
        Error::Input(msg.to_string())
    }

    pub fn runtime(msg: impl fmt::Display) -> Self {
        Error::Runtime(msg.to_string())
    }

    /// Prefix the message with more context, keeping the class.
    pub fn context(self, ctx: impl fmt::Display) -> Self {
        let wrap = |m: String| format!("{ctx}: {m}");
        match self {
            Error::Config(m) => Error::Config(wrap(m)),
            Error::Input(m) => Error::Input(wrap(m)),
            Error::Runtime(m) => Error::Runtime(wrap(m)),
            Error::Accounting(m) => Error::Accounting(wrap(m)),
            Error::Validation(m) => Error::Validation(wrap(m)),
        }
    }
}

/// Render an error and its whole `source()` chain on one line.
///
/// Some drivers (tokio-postgres) hide the useful part of a message in the
/// source chain; this brings it out.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

/// Attach context to foreign errors while classifying them.
pub trait ResultExt<T> {
    /// Map any error into a runtime error with `ctx` prefixed.
    fn runtime_ctx(self, ctx: impl FnOnce() -> String) -> Result<T>;
    /// Map any error into an input error with `ctx` prefixed.
    fn input_ctx(self, ctx: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::error::Error + 'static> ResultExt<T> for std::result::Result<T, E> {
    fn runtime_ctx(self, ctx: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Runtime(format!("{}: {}", ctx(), chain(&e))))
    }
    fn input_ctx(self, ctx: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Input(format!("{}: {}", ctx(), chain(&e))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_design() {
        assert_eq!(Error::config("x").exit_code(), 2);
        assert_eq!(Error::input("x").exit_code(), 2);
        assert_eq!(Error::runtime("x").exit_code(), 1);
        assert_eq!(Error::Accounting("x".into()).exit_code(), 1);
        assert_eq!(Error::Validation("x".into()).exit_code(), 3);
    }

    #[test]
    fn context_keeps_the_class() {
        let e = Error::input("sheet not found").context("stock.xlsx");
        assert_eq!(e.to_string(), "stock.xlsx: sheet not found");
        assert_eq!(e.exit_code(), 2);
    }
}
