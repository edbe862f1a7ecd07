//! Helpers shared by the integration tests: run the real binary against the
//! project's configuration with a throw-away target.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn shared() -> PathBuf {
    root().join("..").join("shared")
}

/// Run `repaero` with the project's repaero.toml and extra arguments.
pub fn repaero(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_repaero"));
    cmd.current_dir(root())
        .arg("--config")
        .arg(root().join("repaero.toml"))
        .args(args)
        .env_remove("REPAERO_TARGET")
        .env_remove("RUST_LOG");
    cmd.output().expect("run repaero")
}

/// Run `repaero` in `dir` with no default arguments.
pub fn repaero_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repaero"))
        .current_dir(dir)
        .args(args)
        .env_remove("REPAERO_TARGET")
        .env_remove("RUST_LOG")
        .output()
        .expect("run repaero")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// `--set` arguments pointing the target and the quarantine into `dir`.
pub fn sqlite_target(dir: &Path) -> (String, String) {
    (
        format!("target.url=sqlite://{}", dir.join("t.db").display()),
        format!("paths.quarantine={}", dir.join("q").display()),
    )
}

/// PostgreSQL helpers: each test creates and drops its own database.
pub mod pg {
    use std::process::Command;

    pub const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    pub fn psql(db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A fresh database, dropped when the guard goes.
    pub struct TempDb {
        pub name: String,
    }

    impl TempDb {
        pub fn new(prefix: &str) -> TempDb {
            let name = format!("repaero_test_{prefix}_{}", std::process::id());
            psql(
                "postgres",
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
            psql("postgres", &format!("CREATE DATABASE {name}"));
            TempDb { name }
        }

        pub fn url(&self) -> String {
            format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
        }

        pub fn query(&self, sql: &str) -> String {
            psql(&self.name, sql)
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            let _ = Command::new("psql")
                .args([
                    "-X",
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-c",
                ])
                .arg(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .output();
        }
    }
}
