//! Reference reader for the benchmarks: calamine alone reading sheets of a
//! workbook cell by cell (the same streaming reader repaero uses for .xlsx),
//! touching every value, writing nothing. Prints the cell count.
//!
//! cargo run --release --example calamine_read -- <workbook.xlsx> <sheet>…

use anyhow::Context;
use calamine::{DataRef, Xlsx, open_workbook};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .context("usage: calamine_read <workbook.xlsx> <sheet>…")?;
    let t0 = std::time::Instant::now();
    let mut book: Xlsx<_> = open_workbook(&path).with_context(|| format!("opening {path}"))?;
    if std::env::var_os("OPEN_TIME").is_some() {
        eprintln!("open: {:?}", t0.elapsed());
    }
    let mut cells = 0u64;
    let mut bytes = 0usize;
    for sheet in args {
        let mut reader = book
            .worksheet_cells_reader(&sheet)
            .with_context(|| format!("{path}: sheet {sheet}"))?;
        while let Some(cell) = reader
            .next_cell()
            .with_context(|| format!("{path}: sheet {sheet}"))?
        {
            cells += 1;
            bytes += match cell.get_value() {
                DataRef::SharedString(s) => s.len(),
                DataRef::String(s) => s.len(),
                DataRef::Empty => 0,
                _ => 8,
            };
        }
    }
    println!("{cells} cells, {bytes} bytes of values");
    Ok(())
}
