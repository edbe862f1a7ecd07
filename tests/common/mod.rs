//! Helpers shared by the integration tests: run the real binary against the
//! project's configuration with a throw-away target.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod dashboard;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The corpus of real files written by other software (not in the
/// repository): `REPAERO_CORPUS`, default `../shared/corpus`, found by
/// `build.rs`. Tests that read it carry
/// `#[cfg_attr(not(repaero_corpus), ignore = "…")]`, so without a corpus they
/// are listed as ignored with the reason, never passed silently.
pub fn corpus() -> PathBuf {
    match option_env!("REPAERO_CORPUS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => panic!(
            "no corpus: set REPAERO_CORPUS to a folder holding access/ and excel/ (default ../shared/corpus)"
        ),
    }
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

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// A target to query from a test, whatever its dialect: every value as
/// text (NULL as None).
pub enum Db {
    Sqlite(PathBuf),
    Pg(String),
}

impl Db {
    pub fn url(&self) -> String {
        match self {
            Db::Sqlite(p) => format!("sqlite://{}", p.display()),
            Db::Pg(u) => u.clone(),
        }
    }

    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match self {
            Db::Sqlite(p) => {
                let c = rusqlite::Connection::open(p).unwrap();
                let mut st = c.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let n = st.column_count();
                st.query_map([], |r| {
                    (0..n)
                        .map(|i| {
                            let v: rusqlite::types::Value = r.get(i)?;
                            Ok(match v {
                                rusqlite::types::Value::Null => None,
                                rusqlite::types::Value::Integer(i) => Some(i.to_string()),
                                rusqlite::types::Value::Real(f) => Some(f.to_string()),
                                rusqlite::types::Value::Text(s) => Some(s),
                                rusqlite::types::Value::Blob(b) => Some(format!("{b:?}")),
                            })
                        })
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
            }
            Db::Pg(u) => repaero::db::postgres::PgConn::connect(u)
                .unwrap()
                .simple(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        }
    }

    /// Statements without results (several, `;`-separated).
    pub fn execute(&self, sql: &str) {
        match self {
            Db::Sqlite(p) => rusqlite::Connection::open(p)
                .unwrap()
                .execute_batch(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            Db::Pg(u) => {
                pg::psql(u, sql);
            }
        }
    }

    /// The single value of a query.
    pub fn one(&self, sql: &str) -> String {
        self.rows(sql)
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .unwrap_or_default()
    }
}

/// A throw-away project: `repaero.toml` with `config`, empty `jobs/` and
/// `mappings/`, then `files` (path relative to the project, text).
pub fn project(config: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("jobs")).unwrap();
    std::fs::create_dir_all(p.join("mappings")).unwrap();
    std::fs::write(p.join("repaero.toml"), config).unwrap();
    for (name, text) in files {
        std::fs::write(p.join(name), text).unwrap();
    }
    dir
}

/// The `repaero.toml` of a project whose source `stock` is `workbook`.
pub fn excel_stock_config(workbook: &Path) -> String {
    format!(
        "[sources.stock]\nkind = \"excel\"\npath = \"{}\"\n",
        workbook.display()
    )
}

/// A plain SMTP listener on 127.0.0.1 that accepts every message and keeps
/// its DATA (headers and body as sent); its port and the messages.
pub fn smtp_listener() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mails = Arc::new(Mutex::new(Vec::new()));
    let store = mails.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut out = conn.try_clone().unwrap();
                let mut input = BufReader::new(conn);
                let _ = out.write_all(b"220 test-smtp ESMTP\r\n");
                let mut line = String::new();
                loop {
                    line.clear();
                    if input.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let verb = line
                        .split([' ', ':', '\r'])
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    let answer: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-test-smtp\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            let _ = out.write_all(b"354 go on\r\n");
                            let mut data = String::new();
                            loop {
                                line.clear();
                                if input.read_line(&mut line).unwrap_or(0) == 0 {
                                    return;
                                }
                                if line == ".\r\n" {
                                    break;
                                }
                                data.push_str(&line);
                            }
                            store.lock().unwrap().push(data);
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = out.write_all(b"221 bye\r\n");
                            return;
                        }
                        _ => b"250 ok\r\n",
                    };
                    let _ = out.write_all(answer);
                }
            });
        }
    });
    (port, mails)
}
