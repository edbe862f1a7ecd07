//! The run report as people read it (the JSON form is `JobReport` itself).

use std::fmt::Write as _;

use super::JobReport;

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as MiB with one decimal ("17.8 MiB").
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

/// Render one job's report as a table, pgloader style.
pub fn render(r: &JobReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "job {}: {} → {}  (run {}{})",
        r.job,
        r.source,
        r.target,
        r.run_id,
        if r.dry_run { ", dry run" } else { "" }
    );
    let w = r
        .tables
        .iter()
        .map(|t| t.table.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(
        s,
        "  {:<w$}  {:>9}  {:>9}  {:>7}  {:>8}  {:>8}  {:>10}",
        "table", "read", "written", "merged", "rejected", "time", "rows/s"
    );
    for t in &r.tables {
        let _ = writeln!(
            s,
            "  {:<w$}  {:>9}  {:>9}  {:>7}  {:>8}  {:>7.2}s  {:>10}",
            t.table,
            thousands(t.read),
            thousands(t.written),
            thousands(t.merged),
            thousands(t.rejected),
            t.seconds,
            thousands(t.rows_per_second().round() as u64)
        );
        let _ = writeln!(s, "  {:<w$}    from {} ({})", "", t.source, t.mode);
        if let (Some(i), Some(u)) = (t.inserted, t.updated) {
            let mut line = format!("{} inserted, {} updated", thousands(i), thousands(u));
            if let Some(d) = t.deleted {
                line.push_str(&format!(
                    ", {} deleted (gone from the source)",
                    thousands(d)
                ));
            }
            let _ = writeln!(s, "  {:<w$}    {line}", "");
        }
        if let Some(wm) = &t.watermark {
            let _ = writeln!(
                s,
                "  {:<w$}    watermark {}: {} → {}{}",
                "",
                wm.column,
                wm.from.as_deref().unwrap_or("(first run: every row)"),
                wm.to.as_deref().unwrap_or("(no rows)"),
                if wm.null_rows > 0 {
                    format!(
                        "; {} with a NULL {} (read on every run)",
                        plural(wm.null_rows, "row", "rows"),
                        wm.column
                    )
                } else {
                    String::new()
                }
            );
        }
        for (reason, n) in &t.reasons {
            let _ = writeln!(s, "  {:<w$}    rejected {:>6}  {reason}", "", thousands(*n));
        }
        for (reason, n) in &t.flagged {
            let _ = writeln!(
                s,
                "  {:<w$}    flagged  {:>6}  {reason} (kept)",
                "",
                thousands(*n)
            );
        }
        for (col, n) in &t.nulled {
            let _ = writeln!(
                s,
                "  {:<w$}    nulled   {:>6}  {col}: placeholder value",
                "",
                thousands(*n)
            );
        }
        for (col, n) in &t.rounded {
            let _ = writeln!(
                s,
                "  {:<w$}    rounded  {:>6}  {col}: more decimals than the column keeps",
                "",
                thousands(*n)
            );
        }
        for (col, n) in &t.remapped {
            let _ = writeln!(
                s,
                "  {:<w$}    re-pointed {:>4}  {col}: to the row its row was merged into",
                "",
                thousands(*n)
            );
        }
        // state held to the table's end, when it is worth a line (the
        // JSON report always has it)
        for h in t.held.iter().filter(|h| h.peak_bytes >= 1 << 20) {
            let _ = writeln!(
                s,
                "  {:<w$}    held     {:>6}  {}: {} (at most {} while its map grew)",
                "",
                mib(h.bytes),
                h.what,
                thousands(h.entries),
                mib(h.peak_bytes)
            );
        }
        let k = &t.skipped;
        let mut skipped = Vec::new();
        if k.rows_above_header > 0 {
            skipped.push(plural(
                k.rows_above_header,
                "row above the header",
                "rows above the header",
            ));
        }
        if k.blank_rows > 0 {
            skipped.push(plural(k.blank_rows, "blank row", "blank rows"));
        }
        if k.footer_rows > 0 {
            skipped.push(plural(k.footer_rows, "footer row", "footer rows"));
        }
        if !skipped.is_empty() {
            let _ = writeln!(s, "  {:<w$}    not data: {}", "", skipped.join(", "));
        }
    }
    let total_written = r.written();
    let _ = writeln!(
        s,
        "  total: {} read, {} written, {} merged, {} rejected in {:.2}s",
        thousands(r.read()),
        thousands(total_written),
        thousands(r.tables.iter().map(|t| t.merged).sum()),
        thousands(r.rejected()),
        r.seconds
    );
    for f in &r.files {
        let _ = writeln!(s, "  quarantine: {f}");
    }
    if r.dry_run {
        let _ = writeln!(
            s,
            "  dry run: rolled back, nothing written (would have written {} into {})",
            plural(total_written, "row", "rows"),
            plural(r.tables.len() as u64, "table", "tables")
        );
    } else {
        let _ = writeln!(s, "  {}", r.status);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Tally;

    #[test]
    fn renders_counts_reasons_and_dry_run() {
        let mut t = Tally::new("parts", "stock.xlsx › Stock", "replace");
        t.read = 1234;
        t.written = 1230;
        t.merged = 1;
        t.reject("quantity: not an integer");
        t.reject("quantity: not an integer");
        t.reject("reference: required");
        t.skipped.blank_rows = 4;
        t.skipped.footer_rows = 1;
        t.seconds = 0.5;
        t.held.push(crate::batch::Held {
            what: "dedupe keys".into(),
            entries: 1230,
            bytes: 3 * 1024 * 1024 / 2,
            peak_bytes: 5 * 1024 * 1024 / 2,
        });
        let r = JobReport {
            job: "stock".into(),
            run_id: "R".into(),
            source: "stock.xlsx".into(),
            target: "sqlite://repaero.db".into(),
            dry_run: true,
            status: "rolled back (dry run)".into(),
            error: None,
            started_at: String::new(),
            seconds: 0.6,
            tables: vec![t],
            files: vec![],
        };
        let out = render(&r);
        assert!(out.contains("1,234"), "{out}");
        assert!(
            out.contains("rejected      2  quantity: not an integer"),
            "{out}"
        );
        assert!(
            out.contains("not data: 4 blank rows, 1 footer row"),
            "{out}"
        );
        assert!(
            out.contains("would have written 1,230 rows into 1 table"),
            "{out}"
        );
        assert!(out.contains("2,468"), "{out}");
        assert!(
            out.contains(
                "held     1.5 MiB  dedupe keys: 1,230 (at most 2.5 MiB while its map grew)"
            ),
            "{out}"
        );
    }
}
