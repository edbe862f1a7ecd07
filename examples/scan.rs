//! Print every non-empty cell of a sheet as repaero reads it (debugging aid).
//! cargo run --example scan -- <file> <sheet>
use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let mut a = std::env::args().skip(1);
    let path = a.next().context("usage: scan <file> <sheet>")?;
    let sheet = a.next().context("usage: scan <file> <sheet>")?;
    repaero::source::excel::scan(std::path::Path::new(&path), &sheet, &mut |c| {
        println!(
            "{}{}\t{:?}\t{:?}",
            repaero::source::column_letter(c.col),
            c.row + 1,
            c.kind,
            c.text
        )
    })
    .with_context(|| format!("{path}: sheet {sheet}"))?;
    Ok(())
}
