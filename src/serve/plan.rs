//! The runs page's scheduler part: the next runs of each schedule (its
//! cron expression in its time zone, [`Entry::next_after`]) and, for each
//! job a schedule validates, what changed between its last two validation
//! reports (the reports the scheduler keeps in `[schedule] reports`, one
//! folder per schedule, compared as `repaero diff` compares them:
//! [`report::diff`]).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::{esc, table};
use crate::config::Config;
use crate::schedule::{Entry, Plan};
use crate::validate::Report;
use crate::validate::report::{self, Change, ReportFile};

/// Next runs shown per schedule.
pub const NEXT: usize = 3;
/// Report files read back per schedule, newest first, to find a job's last
/// two.
const LOOK_BACK: usize = 50;

/// A schedule's next runs.
#[derive(Debug, Clone)]
pub struct NextRuns {
    pub schedule: String,
    pub jobs: Vec<String>,
    pub cron: String,
    pub tz: chrono_tz::Tz,
    pub validate: bool,
    pub next: Vec<DateTime<Utc>>,
    pub error: Option<String>,
}

/// The next `n` ticks of every schedule after `now`.
pub fn next_runs(plan: &Plan, now: DateTime<Utc>, n: usize) -> Vec<NextRuns> {
    plan.entries
        .iter()
        .map(|e: &Entry| {
            let mut next = Vec::new();
            let mut error = None;
            let mut t = now;
            for _ in 0..n {
                match e.next_after(t) {
                    Ok(x) => {
                        next.push(x);
                        t = x;
                    }
                    Err(err) => {
                        error = Some(err.to_string());
                        break;
                    }
                }
            }
            NextRuns {
                schedule: e.name.clone(),
                jobs: e.jobs.clone(),
                cron: e.cron_text.clone(),
                tz: e.tz,
                validate: e.validate,
                next,
                error,
            }
        })
        .collect()
}

/// A job's last validation against the one before.
#[derive(Debug, Clone)]
pub struct JobDiff {
    pub schedule: String,
    pub job: String,
    /// The report files (their ticks: `2026-11-30T013000Z`).
    pub last: String,
    pub previous: Option<String>,
    /// Empty when there is no previous report.
    pub changes: Vec<Change>,
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// The report files of a folder, newest first (their names sort as their
/// ticks).
fn report_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files.reverse();
    files.truncate(LOOK_BACK);
    files
}

/// For each job of each schedule that kept reports: its last report
/// against its previous one.
pub fn diffs(cfg: &Config, plan: &Plan) -> Vec<JobDiff> {
    let root = plan.reports_dir(cfg);
    let mut out = Vec::new();
    for e in &plan.entries {
        let files: Vec<(String, Vec<Report>)> = report_files(&root.join(&e.name))
            .into_iter()
            .filter_map(|p| {
                let text = std::fs::read_to_string(&p).ok()?;
                let f: ReportFile = serde_json::from_str(&text).ok()?;
                Some((stem(&p), f.reports))
            })
            .collect();
        let mut jobs = e.jobs.clone();
        jobs.dedup();
        for job in jobs {
            let mut found = files
                .iter()
                .filter_map(|(name, reports)| {
                    reports
                        .iter()
                        .find(|r| r.job == job)
                        .map(|r| (name.clone(), r.clone()))
                })
                .take(2);
            let Some((last_name, last)) = found.next() else {
                continue;
            };
            let previous = found.next();
            let changes = previous
                .as_ref()
                .map(|(_, p)| report::diff(std::slice::from_ref(p), std::slice::from_ref(&last)))
                .unwrap_or_default();
            out.push(JobDiff {
                schedule: e.name.clone(),
                job,
                last: last_name,
                previous: previous.map(|(n, _)| n),
                changes,
            });
        }
    }
    out
}

/// What the runs page shows of the scheduler.
pub struct PlanPart {
    pub next: Vec<NextRuns>,
    pub diffs: Vec<JobDiff>,
    /// `[schedule]` cannot be read.
    pub error: Option<String>,
}

/// Read the plan and the kept reports (blocking: files).
pub fn load(cfg: &Config, now: DateTime<Utc>) -> PlanPart {
    match Plan::from_config(cfg) {
        Ok(plan) => PlanPart {
            next: next_runs(&plan, now, NEXT),
            diffs: diffs(cfg, &plan),
            error: None,
        },
        Err(e) => PlanPart {
            next: Vec::new(),
            diffs: Vec::new(),
            error: Some(e.to_string()),
        },
    }
}

fn when(t: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        crate::schedule::tick_key(t),
        esc(&t
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M:%S %Z")
            .to_string())
    )
}

/// The two sections: the next runs, then the report diffs.
pub fn render(p: &PlanPart) -> String {
    let mut body = String::from("<h3>Scheduler: next runs</h3>");
    if let Some(e) = &p.error {
        body.push_str(&format!("<p class=\"error\">{}</p>", esc(e)));
    }
    let rows: Vec<Vec<String>> = p
        .next
        .iter()
        .map(|n| {
            let mut times: Vec<String> = n.next.iter().map(|t| when(*t, n.tz)).collect();
            if let Some(e) = &n.error {
                times.push(format!("<span class=\"error\">{}</span>", esc(e)));
            }
            vec![
                format!("<span class=\"schedule\">{}</span>", esc(&n.schedule)),
                esc(&n.jobs.join(", ")),
                format!("<code>{}</code>", esc(&n.cron)),
                esc(n.tz.name()),
                if n.validate { "yes" } else { "no" }.into(),
                times.join("<br>"),
            ]
        })
        .collect();
    body.push_str(&table(
        "next-runs",
        &[
            "schedule",
            "jobs",
            "cron",
            "time zone",
            "validated",
            "next runs",
        ],
        &rows,
    ));
    body.push_str("<h3>Validation: last report against the previous one</h3>");
    let rows: Vec<Vec<String>> = p
        .diffs
        .iter()
        .map(|d| {
            let regressions = d.changes.iter().filter(|c| c.regression).count();
            vec![
                esc(&d.schedule),
                esc(&d.job),
                esc(&d.last),
                d.previous
                    .as_deref()
                    .map(esc)
                    .unwrap_or_else(|| "— (first report)".into()),
                format!("<span class=\"changes\">{}</span>", d.changes.len()),
                format!(
                    "<span class=\"regressions{}\">{regressions}</span>",
                    if regressions > 0 { " notmet" } else { "" }
                ),
            ]
        })
        .collect();
    body.push_str(&table(
        "report-diffs",
        &[
            "schedule",
            "job",
            "last report",
            "previous report",
            "changes",
            "regressions",
        ],
        &rows,
    ));
    let rows: Vec<Vec<String>> = p
        .diffs
        .iter()
        .flat_map(|d| {
            d.changes.iter().map(|c| {
                vec![
                    esc(&c.job),
                    esc(&c.metric),
                    esc(&c.what),
                    esc(&c.detail),
                    if c.regression {
                        "<span class=\"notmet\">REGRESSION</span>".into()
                    } else {
                        String::new()
                    },
                ]
            })
        })
        .collect();
    body.push_str(&table(
        "report-changes",
        &["job", "metric", "change", "detail", ""],
        &rows,
    ));
    body
}
