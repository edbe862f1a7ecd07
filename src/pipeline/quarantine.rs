//! The quarantine directory of a run: one CSV of rejected rows per table
//! (`<job>.<table>.rejects.csv`) and one CSV of merges
//! (`<job>.<table>.merges.csv`), created only when there is something to
//! write.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::batch::MergeRecord;
use crate::batch::Reject;
use crate::error::{Error, Result};

/// Writes the rejects of one table.
pub struct RejectFile {
    path: PathBuf,
    writer: Option<csv::Writer<BufWriter<File>>>,
    columns: Vec<String>,
    pub rows: u64,
}

impl RejectFile {
    pub fn new(dir: &Path, job: &str, table: &str) -> RejectFile {
        RejectFile {
            path: dir.join(format!("{job}.{table}.rejects.csv")),
            writer: None,
            columns: Vec::new(),
            rows: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, origin: &str, rejects: &[Reject]) -> Result<()> {
        if rejects.is_empty() {
            return Ok(());
        }
        if self.writer.is_none() {
            if let Some(parent) = self.path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    Error::runtime(format!(
                        "cannot create quarantine directory {}: {e}",
                        parent.display()
                    ))
                })?;
            }
            let file = File::create(&self.path).map_err(|e| {
                Error::runtime(format!("cannot create {}: {e}", self.path.display()))
            })?;
            let mut w = csv::Writer::from_writer(BufWriter::new(file));
            self.columns = rejects[0].record.iter().map(|(k, _)| k.clone()).collect();
            let mut header = vec![
                "source".to_string(),
                "row".into(),
                "reason".into(),
                "detail".into(),
            ];
            header.extend(self.columns.iter().cloned());
            w.write_record(&header).map_err(|e| self.err(e))?;
            self.writer = Some(w);
        }
        let columns = self.columns.clone();
        let path = self.path.clone();
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::runtime("quarantine writer"))?;
        for r in rejects {
            let mut rec = vec![
                origin.to_string(),
                r.row.to_string(),
                r.reason.clone(),
                r.detail.clone(),
            ];
            for c in &columns {
                rec.push(
                    r.record
                        .iter()
                        .find(|(k, _)| k == c)
                        .and_then(|(_, v)| v.clone())
                        .unwrap_or_default(),
                );
            }
            w.write_record(&rec)
                .map_err(|e| Error::runtime(format!("writing {}: {e}", path.display())))?;
            self.rows += 1;
        }
        Ok(())
    }

    /// Flush; returns the file's path if anything was written.
    pub fn finish(&mut self) -> Result<Option<PathBuf>> {
        match self.writer.take() {
            Some(mut w) => {
                w.flush()
                    .map_err(|e| Error::runtime(format!("writing {}: {e}", self.path.display())))?;
                Ok(Some(self.path.clone()))
            }
            None => Ok(None),
        }
    }

    fn err(&self, e: csv::Error) -> Error {
        Error::runtime(format!("writing {}: {e}", self.path.display()))
    }
}

/// Write the merges of one table, if any.
pub fn write_merges(
    dir: &Path,
    job: &str,
    table: &str,
    merges: &[MergeRecord],
) -> Result<Option<PathBuf>> {
    if merges.is_empty() {
        return Ok(None);
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::runtime(format!(
            "cannot create quarantine directory {}: {e}",
            dir.display()
        ))
    })?;
    let path = dir.join(format!("{job}.{table}.merges.csv"));
    let err = |e: csv::Error| Error::runtime(format!("writing {}: {e}", path.display()));
    let mut w = csv::Writer::from_path(&path).map_err(err)?;
    w.write_record(["key", "kept_row", "merged_row"])
        .map_err(err)?;
    for m in merges {
        w.write_record([
            m.key.as_str(),
            &m.kept_row.to_string(),
            &m.merged_row.to_string(),
        ])
        .map_err(err)?;
    }
    w.flush()
        .map_err(|e| Error::runtime(format!("writing {}: {e}", path.display())))?;
    Ok(Some(path))
}
