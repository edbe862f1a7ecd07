//! Validation reports as people read them (text, Markdown, one
//! self-contained HTML file) and the diff of two reports.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{MetricResult, Report, Verdict};
use crate::batch::format_float;

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "ok",
        Verdict::Explained => "ok (explained)",
        Verdict::Mismatch => "MISMATCH",
        Verdict::Error => "ERROR",
    }
}

/// One line per metric, its differences under it, and a summary.
pub fn render_text(reports: &[Report]) -> String {
    let mut s = String::new();
    for r in reports {
        let _ = writeln!(
            s,
            "validation of job {}: {} ↔ {} (run {})",
            r.job,
            r.source,
            r.target,
            r.run_id.as_deref().unwrap_or("?")
        );
        let w = r
            .metrics
            .iter()
            .map(|m| m.title.chars().count())
            .max()
            .unwrap_or(10)
            .max(10);
        let _ = writeln!(
            s,
            "  {:<5} {:<w$}  {:>12}  {:>12}  verdict",
            "id", "metric", "source", "target"
        );
        for m in &r.metrics {
            let _ = writeln!(
                s,
                "  {:<5} {:<w$}  {:>12}  {:>12}  {}",
                m.id,
                m.title,
                format_float(m.source),
                format_float(m.target),
                verdict_word(m.verdict)
            );
            if !m.reconciliation.is_empty() && m.verdict != Verdict::Ok {
                let _ = writeln!(s, "  {:<5} {}", "", m.reconciliation);
            }
            for d in &m.differences {
                let _ = writeln!(s, "  {:<5}   {d}", "");
            }
        }
        let bad = r.mismatches();
        let _ = writeln!(
            s,
            "  {} metric(s): {} ok, {} explained by the run's rejects and merges, {} failing\n",
            r.metrics.len(),
            r.metrics
                .iter()
                .filter(|m| m.verdict == Verdict::Ok)
                .count(),
            r.metrics
                .iter()
                .filter(|m| m.verdict == Verdict::Explained)
                .count(),
            bad
        );
    }
    s
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// A Markdown report.
pub fn render_markdown(reports: &[Report]) -> String {
    let mut s = String::from("# Migration validation\n\n");
    for r in reports {
        let _ = writeln!(
            s,
            "## Job `{}`\n\nSource: `{}` · target: `{}` · run `{}` · generated {}\n",
            r.job,
            r.source,
            r.target,
            r.run_id.as_deref().unwrap_or("?"),
            r.generated_at
        );
        s.push_str("| id | metric | source | target | reconciliation | verdict |\n|---|---|---:|---:|---|---|\n");
        for m in &r.metrics {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | **{}** |",
                m.id,
                md_escape(&m.title),
                format_float(m.source),
                format_float(m.target),
                md_escape(&m.reconciliation),
                verdict_word(m.verdict)
            );
        }
        for m in r.metrics.iter().filter(|m| !m.differences.is_empty()) {
            let _ = writeln!(s, "\n**{} — {}**\n", m.id, md_escape(&m.title));
            for d in &m.differences {
                let _ = writeln!(s, "- {}", md_escape(d));
            }
        }
        s.push('\n');
    }
    s
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One self-contained HTML file (no script, no external resource).
pub fn render_html(reports: &[Report]) -> String {
    let mut s = String::from(
        "<!DOCTYPE html>\n<html lang=\"fr\"><head><meta charset=\"utf-8\">\n<title>Validation de la migration</title>\n<style>\nbody{font-family:system-ui,sans-serif;margin:2em;color:#222}\ntable{border-collapse:collapse;margin:1em 0}\nth,td{border:1px solid #ccc;padding:.35em .6em;text-align:left;vertical-align:top}\ntd.n{text-align:right;font-variant-numeric:tabular-nums}\n.ok{background:#e6f4ea}.explained{background:#eef6ff}.mismatch,.error{background:#fde8e8;font-weight:bold}\nul.d{margin:.2em 0 0 1em;padding:0;font-size:.9em}\n.summary{font-size:1.2em;margin:1em 0}\n</style></head><body>\n<h1>Validation de la migration</h1>\n",
    );
    let total: usize = reports.iter().map(|r| r.metrics.len()).sum();
    let failing: usize = reports.iter().map(|r| r.mismatches()).sum();
    let _ = writeln!(
        s,
        "<p class=\"summary {}\">{} indicateur(s), {} en écart.</p>",
        if failing == 0 { "ok" } else { "mismatch" },
        total,
        failing
    );
    for r in reports {
        let _ = writeln!(
            s,
            "<h2>Job {}</h2>\n<p>Source : {}<br>Cible : {}<br>Migration {} · rapport du {}</p>",
            html_escape(&r.job),
            html_escape(&r.source),
            html_escape(&r.target),
            html_escape(r.run_id.as_deref().unwrap_or("?")),
            html_escape(&r.generated_at)
        );
        s.push_str("<table><tr><th>id</th><th>indicateur</th><th>source</th><th>cible</th><th>rapprochement</th><th>verdict</th></tr>\n");
        for m in &r.metrics {
            let class = match m.verdict {
                Verdict::Ok => "ok",
                Verdict::Explained => "explained",
                Verdict::Mismatch => "mismatch",
                Verdict::Error => "error",
            };
            let mut diffs = String::new();
            if !m.differences.is_empty() {
                diffs.push_str("<ul class=\"d\">");
                for d in &m.differences {
                    let _ = write!(diffs, "<li>{}</li>", html_escape(d));
                }
                diffs.push_str("</ul>");
            }
            let _ = writeln!(
                s,
                "<tr class=\"{class}\"><td>{}</td><td>{}{diffs}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
                html_escape(&m.id),
                html_escape(&m.title),
                format_float(m.source),
                format_float(m.target),
                html_escape(&m.reconciliation),
                verdict_word(m.verdict)
            );
        }
        s.push_str("</table>\n");
    }
    s.push_str("</body></html>\n");
    s
}

/// Write a report file whole or not at all: into a temporary file beside
/// it, synced, then renamed over it. A failed write (a full disk, a name
/// that is a directory) leaves the previous file as it was and no partial
/// one. A symbolic link is followed (the file it names is replaced); a
/// device or a pipe (`/dev/stdout`) is written to as it is.
pub fn write_file(path: &std::path::Path, bytes: &[u8]) -> crate::error::Result<()> {
    use std::io::Write as _;
    let fail = |e: std::io::Error| {
        crate::error::Error::runtime(format!("writing {}: {e}", path.display()))
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(crate::error::Error::runtime(format!(
                "writing {}: it is a directory; name a file",
                path.display()
            )));
        }
        Ok(m) if !m.is_file() => return std::fs::write(path, bytes).map_err(fail),
        _ => {}
    }
    // /dev/stdout redirected to a file is a regular file too: written to as
    // it is, not replaced under the shell that opened it
    if path.starts_with("/dev") || path.starts_with("/proc") {
        return std::fs::write(path, bytes).map_err(fail);
    }
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let name = target.file_name().ok_or_else(|| {
        crate::error::Error::runtime(format!("writing {}: not a file name", path.display()))
    })?;
    let tmp = target.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}

/// A file of one or more reports (what `--out` writes, `diff` reads).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReportFile {
    pub reports: Vec<Report>,
}

/// One change between two reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Change {
    pub job: String,
    pub metric: String,
    /// `added`, `removed`, `value`, `verdict`, `difference`.
    pub what: String,
    pub detail: String,
    /// A verdict that went from passing to failing.
    pub regression: bool,
}

fn passing(v: Verdict) -> bool {
    matches!(v, Verdict::Ok | Verdict::Explained)
}

fn metric_changes(job: &str, a: &MetricResult, b: &MetricResult, out: &mut Vec<Change>) {
    let change = |what: &str, detail: String, regression: bool| Change {
        job: job.to_string(),
        metric: a.id.clone(),
        what: what.to_string(),
        detail,
        regression,
    };
    if a.verdict != b.verdict {
        out.push(change(
            "verdict",
            format!("{} → {}", verdict_word(a.verdict), verdict_word(b.verdict)),
            passing(a.verdict) && !passing(b.verdict),
        ));
    }
    for (side, x, y, dx, dy) in [
        (
            "source",
            a.source,
            b.source,
            &a.source_digest,
            &b.source_digest,
        ),
        (
            "target",
            a.target,
            b.target,
            &a.target_digest,
            &b.target_digest,
        ),
    ] {
        if x != y {
            out.push(change(
                "value",
                format!("{side} {} → {}", format_float(x), format_float(y)),
                false,
            ));
        } else if dx != dy {
            out.push(change(
                "value",
                format!(
                    "{side} content changed ({} rows or groups either way)",
                    format_float(x)
                ),
                false,
            ));
        }
    }
    for d in b.differences.iter().filter(|d| !a.differences.contains(d)) {
        out.push(change("difference", format!("new: {d}"), false));
    }
    for d in a.differences.iter().filter(|d| !b.differences.contains(d)) {
        out.push(change("difference", format!("gone: {d}"), false));
    }
}

/// Whether two report files can be compared: both hold reports, of the
/// same jobs. `old_name` and `new_name` name the files in the error.
pub fn check_comparable(
    old: &[Report],
    new: &[Report],
    old_name: &str,
    new_name: &str,
) -> crate::error::Result<()> {
    let jobs = |r: &[Report]| {
        let mut j: Vec<String> = r.iter().map(|r| r.job.clone()).collect();
        j.sort();
        j.dedup();
        j
    };
    let (a, b) = (jobs(old), jobs(new));
    for (name, j) in [(old_name, &a), (new_name, &b)] {
        if j.is_empty() {
            return Err(crate::error::Error::config(format!(
                "{name} holds no validation report: nothing to compare"
            )));
        }
    }
    if a != b {
        return Err(crate::error::Error::config(format!(
            "{old_name} reports on job(s) {} and {new_name} on job(s) {}: diff compares two reports of the same jobs",
            a.join(", "),
            b.join(", ")
        )));
    }
    Ok(())
}

/// What changed from `old` to `new`.
pub fn diff(old: &[Report], new: &[Report]) -> Vec<Change> {
    let mut out = Vec::new();
    for n in new {
        let o = old.iter().find(|o| o.job == n.job);
        for m in &n.metrics {
            match o.and_then(|o| o.metrics.iter().find(|x| x.id == m.id)) {
                Some(prev) => metric_changes(&n.job, prev, m, &mut out),
                None => out.push(Change {
                    job: n.job.clone(),
                    metric: m.id.clone(),
                    what: "added".into(),
                    detail: format!("{} ({})", m.title, verdict_word(m.verdict)),
                    regression: !passing(m.verdict),
                }),
            }
        }
    }
    for o in old {
        let n = new.iter().find(|n| n.job == o.job);
        for m in &o.metrics {
            if n.is_none_or(|n| !n.metrics.iter().any(|x| x.id == m.id)) {
                // a metric that is no longer checked passes no more: a gate
                // on diff must not pass when validation loses its metrics
                out.push(Change {
                    job: o.job.clone(),
                    metric: m.id.clone(),
                    what: "removed".into(),
                    detail: m.title.clone(),
                    regression: true,
                });
            }
        }
    }
    out
}

/// The changes, one per line.
pub fn render_diff(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no change\n".into();
    }
    let mut s = String::new();
    for c in changes {
        let _ = writeln!(
            s,
            "{}{} {}: {} {}",
            if c.regression { "REGRESSION " } else { "" },
            c.job,
            c.metric,
            c.what,
            c.detail
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Kind;

    fn metric(id: &str, verdict: Verdict, target: f64, diffs: &[&str]) -> MetricResult {
        MetricResult {
            id: id.into(),
            title: format!("metric {id}"),
            kind: Kind::Count,
            source: 600.0,
            target,
            rejected: 0.0,
            merged: 30.0,
            reconciliation: "source 600 = target 570 + merged 30 + rejected 0".into(),
            verdict,
            differences: diffs.iter().map(|s| s.to_string()).collect(),
            source_digest: "a".into(),
            target_digest: format!("t{target}"),
        }
    }

    fn report(metrics: Vec<MetricResult>) -> Report {
        Report {
            job: "clients".into(),
            source: "clients.mdb".into(),
            target: "sqlite://t.db".into(),
            run_id: Some("r1".into()),
            generated_at: "2026-11-29T00:00:00Z".into(),
            params: Default::default(),
            metrics,
        }
    }

    #[test]
    fn a_diff_names_what_moved_and_flags_regressions() {
        let old = vec![report(vec![
            metric("M1", Verdict::Explained, 570.0, &[]),
            metric("M8", Verdict::Ok, 1200.0, &[]),
        ])];
        let new = vec![report(vec![
            metric(
                "M1",
                Verdict::Mismatch,
                569.0,
                &["expected 570 in the target (source 600 − merged 30 − rejected 0), found 569"],
            ),
            metric("M9", Verdict::Ok, 9.0, &[]),
        ])];
        let changes = diff(&old, &new);
        let text = render_diff(&changes);
        assert_eq!(
            text,
            "REGRESSION clients M1: verdict ok (explained) → MISMATCH\n\
             clients M1: value target 570 → 569\n\
             clients M1: difference new: expected 570 in the target (source 600 − merged 30 − rejected 0), found 569\n\
             clients M9: added metric M9 (ok)\n\
             REGRESSION clients M8: removed metric M8\n"
        );
        assert!(diff(&old, &old).is_empty());
        // reports of other jobs, or none, are not compared
        let mut other = old.clone();
        other[0].job = "stock".into();
        let err = check_comparable(&old, &other, "a.json", "b.json").unwrap_err();
        assert_eq!(
            err.to_string(),
            "a.json reports on job(s) clients and b.json on job(s) stock: diff compares two reports of the same jobs"
        );
        assert_eq!(err.exit_code(), 2);
        assert!(check_comparable(&old, &[], "a.json", "b.json").is_err());
        assert!(check_comparable(&old, &new, "a.json", "b.json").is_ok());
    }

    #[test]
    fn a_report_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        write_file(&p, b"first").unwrap();
        write_file(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        // a link is followed: the file it names gets the report
        let link = dir.path().join("latest.json");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        write_file(&link, b"third").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"third");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        // a directory is refused, and nothing is left behind
        let err = write_file(dir.path(), b"x").unwrap_err();
        assert!(err.to_string().contains("it is a directory"), "{err}");
        let err = write_file(&dir.path().join("no/r.json"), b"x").unwrap_err();
        assert!(err.to_string().starts_with("writing "), "{err}");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["latest.json", "r.json"]);
    }

    #[test]
    fn renderings_carry_every_metric() {
        let r = vec![report(vec![
            metric("M1", Verdict::Explained, 570.0, &[]),
            metric(
                "M2",
                Verdict::Mismatch,
                1.0,
                &["client_id 3: expected 3 (source 2), target <2>"],
            ),
        ])];
        let text = render_text(&r);
        assert!(
            text.contains("M2    metric M2") && text.contains("MISMATCH"),
            "{text}"
        );
        assert!(
            text.contains(
                "2 metric(s): 0 ok, 1 explained by the run's rejects and merges, 1 failing"
            ),
            "{text}"
        );
        let html = render_html(&r);
        assert!(
            html.starts_with("<!DOCTYPE html>") && !html.contains("<script"),
            "{html}"
        );
        assert!(html.contains("target &lt;2&gt;"), "escaped: {html}");
        assert!(html.contains("2 indicateur(s), 1 en écart"));
        let md = render_markdown(&r);
        assert!(md.contains("| M1 | metric M1 | 600 | 570 |"), "{md}");
        assert!(
            md.contains("- client_id 3: expected 3 (source 2), target <2>"),
            "{md}"
        );
    }
}
