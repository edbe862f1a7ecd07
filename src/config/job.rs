//! `jobs/<job>.toml`: what one migration moves, from which source, through
//! which mappings, in which order.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::mapping::{Mapping, Mode};
use super::{Config, Env};
use crate::error::{Error, Result};

/// The job file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    description: Option<String>,
    /// Name of a `[sources.<name>]` in repaero.toml.
    source: String,
    /// Tables, written in this order (referenced tables first).
    tables: Vec<TableEntry>,
}

/// One `[[tables]]` entry of a job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableEntry {
    /// Mapping name (`mappings/<name>.toml`) or a path to a mapping file.
    pub mapping: String,
    /// Overrides the mapping's mode.
    pub mode: Option<Mode>,
}

/// A loaded job with its mappings.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub description: Option<String>,
    pub source: String,
    pub tables: Vec<(Mapping, Mode)>,
    pub file: PathBuf,
}

impl Job {
    /// Load `jobs/<name>.toml` and every mapping it names.
    pub fn load(cfg: &Config, name: &str, env: &dyn Env) -> Result<Job> {
        let dir = cfg.jobs_dir();
        let file = dir.join(format!("{name}.toml"));
        if !file.exists() {
            let known = Self::list(cfg)?;
            return Err(Error::config(format!(
                "no job `{name}` (looked for {}); known jobs: {}",
                file.display(),
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )));
        }
        let jf: JobFile = super::read_declarative(&file, env)?;
        if jf.tables.is_empty() {
            return Err(Error::config(format!(
                "{}: a job needs at least one [[tables]] entry",
                file.display()
            )));
        }
        cfg.source(&jf.source)
            .map_err(|e| e.context(format!("{} (source = \"{}\")", file.display(), jf.source)))?;
        let mut tables = Vec::new();
        for t in &jf.tables {
            let path = mapping_path(cfg, &t.mapping);
            let mapping = Mapping::load(&path, env)?;
            let mode = t.mode.unwrap_or(mapping.target.mode);
            mapping.check_mode(mode).map_err(|e| {
                e.context(format!(
                    "{}: table `{}` is written with mode = \"{}\"",
                    file.display(),
                    mapping.target.table,
                    mode.as_str()
                ))
            })?;
            if tables
                .iter()
                .any(|(m, _): &(Mapping, Mode)| m.target.table == mapping.target.table)
            {
                return Err(Error::config(format!(
                    "{}: table `{}` is written twice",
                    file.display(),
                    mapping.target.table
                )));
            }
            tables.push((mapping, mode));
        }
        Ok(Job {
            name: name.to_string(),
            description: jf.description,
            source: jf.source,
            tables,
            file,
        })
    }

    /// Names of all jobs in `jobs/`, sorted.
    pub fn list(cfg: &Config) -> Result<Vec<String>> {
        super::toml_stems(&cfg.jobs_dir())
    }
}

fn mapping_path(cfg: &Config, mapping: &str) -> PathBuf {
    if mapping.ends_with(".toml") {
        cfg.resolve(Path::new(mapping))
    } else {
        cfg.mappings_dir().join(format!("{mapping}.toml"))
    }
}
