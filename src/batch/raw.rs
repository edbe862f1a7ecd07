//! Raw batches, as sources hand them over: text columns named after the
//! target columns they feed, each text column's "typed cell" flags, the
//! errors of rows a source could not read, and `__row`, each row's position
//! in the source, so that a rejected row can be found again.

use polars::prelude::*;

use crate::error::{Error, Result};

/// Name of the column carrying each row's source position.
pub const ROW_COLUMN: &str = "__row";
/// Why a source line could not be read (a line of a CSV file that is not
/// UTF-8, too long, cut short…): the mapper rejects the row with it.
pub const ERROR_COLUMN: &str = "__error";
/// The error with its details (the line as read, its length…).
pub const ERROR_DETAIL_COLUMN: &str = "__error_detail";

/// Name of the flag column telling, per row, whether a text column's value
/// came from a typed cell (number, date, boolean) and is therefore in
/// canonical form (`1234.5`, `2026-03-15`), not typed by a person.
pub fn typed_column(name: &str) -> String {
    format!("__typed__{name}")
}

/// Name of the column giving, per row, the display scale of a decimal a
/// source handed over typed (see `Mapper::carries`): its text is the value
/// with that many decimals (`14.8000`). NULL where the value has too many
/// digits for an f64 to show them back; its text is then in
/// [`carried_text_column`].
pub fn carried_scale_column(name: &str) -> String {
    format!("__scale__{name}")
}

/// Name of the column holding, per row, the source's text of a carried
/// value that its typed form cannot show back exactly (NULL elsewhere).
pub fn carried_text_column(name: &str) -> String {
    format!("__text__{name}")
}

/// Builds batches of text columns row by row, straight into polars
/// builders.
pub struct BatchBuilder {
    names: Vec<String>,
    cols: Vec<StringChunkedBuilder>,
    typed: Vec<Vec<bool>>,
    rows: Vec<u64>,
    /// Per row: why it could not be read (reason, detail), if so.
    errors: Vec<Option<(String, String)>>,
    capacity: usize,
}

/// Cells a batch holds at most: a sheet thousands of columns wide gets
/// fewer rows per batch, so that memory stays flat in both directions.
pub const MAX_BATCH_CELLS: usize = 1 << 20;

impl BatchBuilder {
    /// A builder of batches of `capacity` rows (fewer for a very wide
    /// table: at most [`MAX_BATCH_CELLS`] cells).
    pub fn new(names: Vec<String>, capacity: usize) -> Self {
        let capacity = capacity.min((MAX_BATCH_CELLS / names.len().max(1)).max(1));
        let cols = names
            .iter()
            .map(|n| StringChunkedBuilder::new(n.as_str().into(), capacity))
            .collect();
        let typed = names.iter().map(|_| Vec::with_capacity(capacity)).collect();
        BatchBuilder {
            names,
            cols,
            typed,
            rows: Vec::with_capacity(capacity),
            errors: Vec::new(),
            capacity,
        }
    }

    /// A row the source could not read: its values are NULL and the
    /// mapper rejects it with `reason`.
    pub fn push_error(&mut self, row: u64, reason: String, detail: String) {
        self.push_row_error(row, std::iter::empty(), reason, detail);
    }

    /// A row read, but holding a value the source could not hand over (a
    /// date that is no date, a cell above the size cap): its other values
    /// are kept for the quarantine and the mapper rejects it with `reason`.
    pub fn push_row_error<'a>(
        &mut self,
        row: u64,
        values: impl IntoIterator<Item = Option<(&'a str, bool)>>,
        reason: String,
        detail: String,
    ) {
        self.errors.resize(self.rows.len(), None);
        self.push_row(row, values);
        self.errors.push(Some((reason, detail)));
    }

    /// One row: per column, the text and whether it came from a typed cell.
    pub fn push_row<'a>(
        &mut self,
        row: u64,
        values: impl IntoIterator<Item = Option<(&'a str, bool)>>,
    ) {
        self.rows.push(row);
        let mut n = 0;
        for ((col, typed), v) in self.cols.iter_mut().zip(self.typed.iter_mut()).zip(values) {
            match v {
                Some((s, t)) => {
                    col.append_value(s);
                    typed.push(t);
                }
                None => {
                    col.append_null();
                    typed.push(false);
                }
            }
            n += 1;
        }
        for (col, typed) in self.cols.iter_mut().zip(self.typed.iter_mut()).skip(n) {
            col.append_null();
            typed.push(false);
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.rows.len() >= self.capacity
    }

    /// Take the rows gathered so far as a `DataFrame`: the text columns,
    /// their typed flags (only for columns that have a typed value), and
    /// `__row`.
    pub fn take(&mut self) -> Result<DataFrame> {
        let height = self.rows.len();
        let mut columns = Vec::with_capacity(self.cols.len() * 2 + 1);
        for (i, name) in self.names.iter().enumerate() {
            let b = std::mem::replace(
                &mut self.cols[i],
                StringChunkedBuilder::new(name.as_str().into(), self.capacity),
            );
            columns.push(b.finish().into_series().into_column());
        }
        for (i, name) in self.names.iter().enumerate() {
            let flags = std::mem::replace(&mut self.typed[i], Vec::with_capacity(self.capacity));
            if flags.iter().any(|t| *t) {
                columns.push(
                    BooleanChunked::from_iter_values(
                        typed_column(name).as_str().into(),
                        flags.into_iter(),
                    )
                    .into_series()
                    .into_column(),
                );
            }
        }
        let rows = std::mem::replace(&mut self.rows, Vec::with_capacity(self.capacity));
        let mut errors = std::mem::take(&mut self.errors);
        if errors.iter().any(|e| e.is_some()) {
            errors.resize(height, None);
            columns.push(
                StringChunked::from_iter_options(
                    ERROR_COLUMN.into(),
                    errors.iter().map(|e| e.as_ref().map(|(r, _)| r.as_str())),
                )
                .into_series()
                .into_column(),
            );
            columns.push(
                StringChunked::from_iter_options(
                    ERROR_DETAIL_COLUMN.into(),
                    errors.iter().map(|e| e.as_ref().map(|(_, d)| d.as_str())),
                )
                .into_series()
                .into_column(),
            );
        }
        columns.push(
            UInt64Chunked::from_vec(ROW_COLUMN.into(), rows)
                .into_series()
                .into_column(),
        );
        DataFrame::new(height, columns)
            .map_err(|e| Error::runtime(format!("building a batch: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_very_wide_table_gets_fewer_rows_per_batch() {
        let wide: Vec<String> = (0..16_384).map(|i| format!("c{i}")).collect();
        let mut b = BatchBuilder::new(wide, 10_000);
        for r in 0..64 {
            assert!(!b.is_full(), "row {r}");
            b.push_row(r, std::iter::empty());
        }
        assert!(
            b.is_full(),
            "64 rows × 16,384 columns is a batch of 1 Mi cells"
        );
        let narrow = BatchBuilder::new(vec!["a".into()], 10_000);
        assert_eq!(narrow.capacity, 10_000);
    }
}
