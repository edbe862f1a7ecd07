//! Runs & validation: the jobs, their last runs (read, written, merged,
//! rejected, duration), the rejected rows of a run (paged, by reason), the
//! scheduler's ticks with their validation verdicts, the daemons'
//! heartbeats.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::require;
use super::{Section, Shared, esc, esc_opt, failed, page, plan, table, url_encode};
use crate::batch::Value;
use crate::db::{Conn, Row};
use crate::error::Result;
use crate::sink::ledger::{REJECTS_TABLE, RUNS_TABLE};

/// Runs shown, rejected rows per page.
const RUNS: usize = 50;
pub const PAGE: usize = 50;

/// One run, its tally summed over its tables.
#[derive(Debug, Clone, Default)]
pub struct RunLine {
    pub run_id: String,
    pub job: String,
    pub started_at: String,
    pub finished_at: String,
    pub status: String,
    pub dry_run: bool,
    pub read: u64,
    pub written: u64,
    pub merged: u64,
    pub rejected: u64,
    pub seconds: Option<f64>,
}

fn text(r: &Row, i: usize) -> String {
    r.get(i).cloned().flatten().unwrap_or_default()
}

fn parse_instant(s: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .or_else(|| chrono::DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z").ok())
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"))
                .ok()
                .map(|n| n.and_utc().fixed_offset())
        })
}

/// The last runs, newest first.
pub fn last_runs(conn: &mut dyn Conn, limit: usize) -> Result<Vec<RunLine>> {
    if !conn.table_exists(RUNS_TABLE)? {
        return Ok(Vec::new());
    }
    let d = conn.dialect();
    let sql = format!(
        "SELECT run_id, job, {}, {}, status, {}, {} FROM {RUNS_TABLE} r ORDER BY r.started_at DESC LIMIT {limit}",
        d.as_text("started_at"),
        d.as_text("finished_at"),
        d.as_text("dry_run"),
        d.as_text("tally"),
    );
    let rows = conn.query(&sql, &[])?;
    Ok(rows
        .iter()
        .map(|r| {
            let mut line = RunLine {
                run_id: text(r, 0),
                job: text(r, 1),
                started_at: text(r, 2),
                finished_at: text(r, 3),
                status: text(r, 4),
                dry_run: matches!(text(r, 5).as_str(), "1" | "t" | "true"),
                ..RunLine::default()
            };
            if let Ok(serde_json::Value::Array(tables)) =
                serde_json::from_str::<serde_json::Value>(&text(r, 6))
            {
                for t in tables {
                    let n = |k: &str| t.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
                    line.read += n("read");
                    line.written += n("written");
                    line.merged += n("merged");
                    line.rejected += n("rejected");
                }
            }
            if let (Some(a), Some(b)) = (
                parse_instant(&line.started_at),
                parse_instant(&line.finished_at),
            ) {
                line.seconds = Some((b - a).num_milliseconds() as f64 / 1000.0);
            }
            line
        })
        .collect())
}

fn jobs_of(app: &Shared) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(app.cfg.jobs_dir())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let p = e.path();
            (p.extension().is_some_and(|x| x == "toml"))
                .then(|| p.file_stem().map(|s| s.to_string_lossy().to_string()))
                .flatten()
        })
        .collect();
    names.sort();
    names
}

struct Overview {
    runs: Vec<RunLine>,
    ticks: Vec<Row>,
    beats: Vec<std::collections::BTreeMap<String, Option<String>>>,
}

fn overview(conn: &mut dyn Conn) -> Result<Overview> {
    let runs = last_runs(conn, RUNS)?;
    let ticks = if conn.table_exists(crate::schedule::TICKS)? {
        conn.query(
            &format!(
                "SELECT schedule, tick, state, jobs, rows_written, validation, error, finished_at FROM {} ORDER BY tick DESC LIMIT 20",
                crate::schedule::TICKS
            ),
            &[],
        )?
    } else {
        Vec::new()
    };
    let beats = crate::daemon::read_heartbeats(conn)?;
    Ok(Overview { runs, ticks, beats })
}

pub async fn show(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let s = match require(&app, &headers, Section::Runs) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let o = match app.read(overview).await {
        Ok(o) => o,
        Err(e) => return failed(&s, "runs", &e),
    };
    let cfg = app.cfg.clone();
    let sched =
        match tokio::task::spawn_blocking(move || plan::load(&cfg, chrono::Utc::now())).await {
            Ok(p) => p,
            Err(e) => return failed(&s, "schedule", &crate::error::Error::runtime(e)),
        };
    let jobs = jobs_of(&app);
    let mut body = String::from("<h3>Jobs</h3><ul id=\"jobs\">");
    for j in &jobs {
        let last = o.runs.iter().find(|r| &r.job == j);
        body.push_str(&format!(
            "<li>{}: {}</li>",
            esc(j),
            last.map(|r| format!("last run {} ({})", esc(&r.started_at), esc(&r.status)))
                .unwrap_or_else(|| "never run".into())
        ));
    }
    body.push_str("</ul><h3>Last runs</h3>");
    let rows: Vec<Vec<String>> = o
        .runs
        .iter()
        .map(|r| {
            vec![
                esc(&r.job),
                esc(&r.started_at),
                format!(
                    "{}{}",
                    esc(&r.status),
                    if r.dry_run { " (dry run)" } else { "" }
                ),
                format!("<span class=\"read\">{}</span>", r.read),
                format!("<span class=\"written\">{}</span>", r.written),
                format!("<span class=\"merged\">{}</span>", r.merged),
                if r.rejected > 0 {
                    format!(
                        "<a class=\"rejected\" href=\"/runs/rejects?run={}&amp;job={}\">{}</a>",
                        url_encode(&r.run_id),
                        url_encode(&r.job),
                        r.rejected
                    )
                } else {
                    "<span class=\"rejected\">0</span>".into()
                },
                r.seconds.map(|s| format!("{s:.1} s")).unwrap_or_default(),
            ]
        })
        .collect();
    body.push_str(&table(
        "runs",
        &[
            "job", "started", "status", "read", "written", "merged", "rejected", "duration",
        ],
        &rows,
    ));
    body.push_str("<h3>Scheduler ticks and validation</h3>");
    let rows: Vec<Vec<String>> = o
        .ticks
        .iter()
        .map(|r| r.iter().map(esc_opt).collect())
        .collect();
    body.push_str(&table(
        "ticks",
        &[
            "schedule",
            "tick",
            "state",
            "jobs",
            "rows written",
            "validation",
            "error",
            "finished",
        ],
        &rows,
    ));
    body.push_str(&plan::render(&sched));
    body.push_str("<h3>Daemon heartbeats</h3>");
    let rows: Vec<Vec<String>> = o
        .beats
        .iter()
        .map(|b| {
            [
                "feed",
                "state",
                "beat_at",
                "processed",
                "failed",
                "last_error",
            ]
            .iter()
            .map(|k| esc_opt(b.get(*k).unwrap_or(&None)))
            .collect()
        })
        .collect();
    body.push_str(&table(
        "heartbeats",
        &[
            "feed",
            "state",
            "last beat",
            "processed",
            "failed",
            "last error",
        ],
        &rows,
    ));
    page(Section::Runs.title(), Some(&s), &body).into_response()
}

#[derive(Deserialize)]
pub struct RejectsQuery {
    run: String,
    #[serde(default)]
    job: Option<String>,
    #[serde(default)]
    page: usize,
}

struct Rejects {
    by_reason: Vec<Row>,
    rows: Vec<Row>,
    total: u64,
}

fn rejects_of(
    conn: &mut dyn Conn,
    run: String,
    job: Option<String>,
    page: usize,
) -> Result<Rejects> {
    if !conn.table_exists(REJECTS_TABLE)? {
        return Ok(Rejects {
            by_reason: Vec::new(),
            rows: Vec::new(),
            total: 0,
        });
    }
    let d = conn.dialect();
    let ty = crate::config::ColumnType::Text;
    let (filter, params) = match job {
        Some(j) => (
            format!("run_id = {} AND job = {}", d.param(1, ty), d.param(2, ty)),
            vec![Value::Text(run), Value::Text(j)],
        ),
        None => (
            format!("run_id = {}", d.param(1, ty)),
            vec![Value::Text(run)],
        ),
    };
    let by_reason = conn.query(
        &format!("SELECT table_name, reason, count(*) FROM {REJECTS_TABLE} WHERE {filter} GROUP BY table_name, reason ORDER BY 3 DESC LIMIT 100"),
        &params,
    )?;
    let total: u64 = by_reason
        .iter()
        .filter_map(|r| r.get(2).cloned().flatten()?.parse::<u64>().ok())
        .sum();
    let rows = conn.query(
        &format!(
            "SELECT table_name, {}, reason, detail, {} FROM {REJECTS_TABLE} r WHERE {filter} ORDER BY r.table_name, r.source_row LIMIT {PAGE} OFFSET {}",
            d.as_text("source_row"),
            d.as_text("record"),
            page.min(1_000_000) * PAGE
        ),
        &params,
    )?;
    Ok(Rejects {
        by_reason,
        rows,
        total,
    })
}

pub async fn rejects(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<RejectsQuery>,
) -> Response {
    let s = match require(&app, &headers, Section::Runs) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (run, job, pg) = (q.run.clone(), q.job.clone(), q.page);
    let r = match app.read(move |c| rejects_of(c, run, job, pg)).await {
        Ok(r) => r,
        Err(e) => return failed(&s, "rejected rows", &e),
    };
    let mut body = format!(
        "<p>Run <code>{}</code>{}: <span id=\"rejects-total\">{}</span> rejected rows.</p><h3>By reason</h3>",
        esc(&q.run),
        q.job
            .as_deref()
            .map(|j| format!(", job {}", esc(j)))
            .unwrap_or_default(),
        r.total
    );
    let rows: Vec<Vec<String>> = r
        .by_reason
        .iter()
        .map(|x| x.iter().map(esc_opt).collect())
        .collect();
    body.push_str(&table("reasons", &["table", "reason", "rows"], &rows));
    body.push_str(&format!("<h3>Rows (page {})</h3>", q.page + 1));
    let rows: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|x| x.iter().map(esc_opt).collect())
        .collect();
    body.push_str(&table(
        "rejects",
        &["table", "source row", "reason", "detail", "record"],
        &rows,
    ));
    let link = |p: usize, label: &str| {
        format!(
            "<a href=\"/runs/rejects?run={}{}&amp;page={p}\">{label}</a> ",
            url_encode(&q.run),
            q.job
                .as_deref()
                .map(|j| format!("&amp;job={}", url_encode(j)))
                .unwrap_or_default()
        )
    };
    if q.page > 0 {
        body.push_str(&link(q.page - 1, "← previous"));
    }
    if ((q.page + 1) * PAGE) < r.total as usize {
        body.push_str(&link(q.page + 1, "next →"));
    }
    page("Rejected rows", Some(&s), &body).into_response()
}
