//! The quarantine directory of a run: one CSV of rejected rows per table
//! (`<job>.<table>.rejects.csv`) and one CSV of merges
//! (`<job>.<table>.merges.csv`), created only when there is something to
//! write.
//!
//! These files are opened in Excel or LibreOffice by people fixing the
//! source, and hold whatever the source held: every cell goes through
//! [`spreadsheet_safe`], so that a rejected `=HYPERLINK(…)` shows as text
//! instead of running. The data written to the target is never altered.

use std::borrow::Cow;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::batch::MergeRecord;
use crate::batch::Reject;
use crate::error::{Error, Result};

/// A cell as a spreadsheet must show it, not run it: a text starting with
/// `=`, `+`, `-`, `@`, a tab or a carriage return is read as a formula by
/// Excel and LibreOffice (OWASP, "CSV injection"), so it gets a leading `'`,
/// which they take as "this is text" and do not display. A plain number
/// (`-12`, `-3,5`, `+33612345678`, `-1.5E3`) is left alone: it runs
/// nothing, and a quote would turn a negative amount into text.
pub fn spreadsheet_safe(cell: &str) -> Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') if !is_plain_number(cell) => {
            Cow::Owned(format!("'{cell}"))
        }
        _ => Cow::Borrowed(cell),
    }
}

/// `[+-]digits[(.|,)digits][(e|E)[+-]digits]`, nothing else.
fn is_plain_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return false;
    }
    if matches!(b.get(i), Some(b'.' | b',')) {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

/// One record, each cell made [`spreadsheet_safe`].
fn safe_record<'a>(cells: impl IntoIterator<Item = &'a str>) -> Vec<Cow<'a, str>> {
    cells.into_iter().map(spreadsheet_safe).collect()
}

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
            w.write_record(
                safe_record(header.iter().map(String::as_str))
                    .iter()
                    .map(|c| c.as_bytes()),
            )
            .map_err(|e| self.err(e))?;
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
            w.write_record(
                safe_record(rec.iter().map(String::as_str))
                    .iter()
                    .map(|c| c.as_bytes()),
            )
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
        let (kept, merged) = (m.kept_row.to_string(), m.merged_row.to_string());
        w.write_record(
            safe_record([m.key.as_str(), &kept, &merged])
                .iter()
                .map(|c| c.as_bytes()),
        )
        .map_err(err)?;
    }
    w.flush()
        .map_err(|e| Error::runtime(format!("writing {}: {e}", path.display())))?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_shown_as_text_and_numbers_stay_numbers() {
        for (cell, shown) in [
            (
                "=HYPERLINK(\"http://x\",\"clic\")",
                "'=HYPERLINK(\"http://x\",\"clic\")",
            ),
            ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
            ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
            ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
            ("\t=1+1", "'\t=1+1"),
            ("\r=1+1", "'\r=1+1"),
            ("-", "'-"),
            ("-12", "-12"),
            ("-3,5", "-3,5"),
            ("-1.5E+3", "-1.5E+3"),
            ("+33612345678", "+33612345678"),
            ("-12 €", "'-12 €"),
            ("HYD-2040", "HYD-2040"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(spreadsheet_safe(cell), shown, "{cell:?}");
        }
    }
}
