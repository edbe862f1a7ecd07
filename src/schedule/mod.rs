//! The scheduler: jobs run on cron expressions (`repaero schedule`), each
//! run recorded in `_repaero_runs` as `repaero migrate` records it, each
//! tick in `_repaero_ticks`.
//!
//! ```toml
//! [schedule]
//! reports = "reports"          # validation reports kept per schedule
//! [schedule.nightly]
//! jobs = ["stock", "suppliers"]
//! cron = "30 2 * * *"          # 5 fields, or 6 with seconds first
//! time_zone = "Europe/Paris"
//! validate = true
//! ```
//!
//! - **One run per tick, wherever the schedulers run.** A tick is claimed
//!   by a row of `_repaero_ticks` (key: schedule and tick), written while
//!   the scheduler holds the lock of every job of the schedule: a
//!   PostgreSQL advisory lock when the target is PostgreSQL (schedulers on
//!   several machines), a lock file otherwise. Whoever gets the lock reads
//!   the tick's row again before claiming it, so a second scheduler skips a
//!   tick already run.
//! - **A missed tick is caught up once.** At each round the due tick is the
//!   latest occurrence at or before now; the ticks missed before it are not
//!   run. A schedule seen for the first time starts from its next tick (its
//!   latest occurrence is written as a `baseline`).
//! - **A run cut short is run again.** A tick left `running` whose locks
//!   are free lost its scheduler (the locks die with their session or
//!   process): the next scheduler takes it over.
//! - **Validation follows the run** when `validate = true`: the report is
//!   kept, compared with the previous one (as `repaero diff` does), and a
//!   regression raises one notification (mail and SMS, as configured in
//!   `[alerts]`) and marks the tick `regressed`.

pub mod plan;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::batch::Value;
use crate::config::mapping::ColumnType;
use crate::config::{Config, Job, ProcessEnv};
use crate::daemon::{BoxFuture, Feed, FeedContext};
use crate::db::{ColumnDef, Conn, Dialect, TableDef};
use crate::error::{Error, Result};
use crate::pipeline::{self, RunOptions};
use crate::validate::report::{self, ReportFile};
pub use plan::{Entry, Plan, Settings, tick_key};

/// The table of the ticks: one row per schedule and tick.
pub const TICKS: &str = "_repaero_ticks";

/// The ticks table.
pub fn ticks_def() -> TableDef {
    let col = |name: &str, ty: ColumnType, not_null: bool| ColumnDef::new(name, ty, not_null);
    use ColumnType::{Integer, Text};
    TableDef {
        name: TICKS.into(),
        columns: vec![
            col("schedule", Text, true),
            // the tick's instant, UTC, `2026-11-30T01:30:00Z`
            col("tick", Text, true),
            // baseline, running, done, failed, abandoned
            col("state", Text, true),
            col("jobs", Text, false),
            col("host", Text, false),
            col("pid", Integer, false),
            col("started_at", Text, false),
            col("finished_at", Text, false),
            col("run_id", Text, false),
            col("rows_written", Integer, false),
            col("error", Text, false),
            // ok, mismatch, regressed, error (NULL: not validated)
            col("validation", Text, false),
            col("report", Text, false),
            col("notified_at", Text, false),
            col("notify_error", Text, false),
        ],
        key: vec!["schedule".into(), "tick".into()],
        foreign_keys: Vec::new(),
        soft_delete: None,
    }
}

/// Create the ticks table when missing.
pub fn ensure_ticks(conn: &mut dyn Conn) -> Result<()> {
    if !conn.table_exists(TICKS)? {
        let d = conn.dialect();
        let result = conn.batch(&d.create_table(&ticks_def(), TICKS, d != Dialect::Oracle));
        // another scheduler may have created it meanwhile
        if result.is_err() && !conn.table_exists(TICKS)? {
            result?;
        }
    }
    Ok(())
}

/// One row of `_repaero_ticks`, as read back.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TickRow {
    pub schedule: String,
    pub tick: String,
    pub state: String,
    pub host: Option<String>,
    pub pid: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub run_id: Option<String>,
    pub rows_written: Option<String>,
    pub error: Option<String>,
    pub validation: Option<String>,
    pub report: Option<String>,
    pub notified_at: Option<String>,
    pub notify_error: Option<String>,
}

const ROW_COLUMNS: &[&str] = &[
    "schedule",
    "tick",
    "state",
    "host",
    "pid",
    "started_at",
    "finished_at",
    "run_id",
    "rows_written",
    "error",
    "validation",
    "report",
    "notified_at",
    "notify_error",
];

fn tick_row(r: Vec<Option<String>>) -> TickRow {
    let mut it = r.into_iter();
    let mut next = || it.next().flatten();
    TickRow {
        schedule: next().unwrap_or_default(),
        tick: next().unwrap_or_default(),
        state: next().unwrap_or_default(),
        host: next(),
        pid: next(),
        started_at: next(),
        finished_at: next(),
        run_id: next(),
        rows_written: next(),
        error: next(),
        validation: next(),
        report: next(),
        notified_at: next(),
        notify_error: next(),
    }
}

fn select_rows(conn: &mut dyn Conn, filter: &str, params: &[Value]) -> Result<Vec<TickRow>> {
    let d = conn.dialect();
    let cols: Vec<String> = ROW_COLUMNS
        .iter()
        .map(|c| match d {
            Dialect::Oracle => d.as_text(&d.quote(c)),
            _ => d.quote(c),
        })
        .collect();
    let rows = conn.query(
        &format!(
            "SELECT {} FROM {} {filter} ORDER BY {} DESC",
            cols.join(", "),
            d.quote(TICKS),
            d.quote("tick")
        ),
        params,
    )?;
    Ok(rows.into_iter().map(tick_row).collect())
}

/// The latest tick row of `schedule` (the greatest tick), if any.
pub fn latest_tick(conn: &mut dyn Conn, schedule: &str) -> Result<Option<TickRow>> {
    if !conn.table_exists(TICKS)? {
        return Ok(None);
    }
    let d = conn.dialect();
    let filter = format!(
        "WHERE {} = {}",
        d.quote("schedule"),
        d.param(1, ColumnType::Text)
    );
    Ok(select_rows(conn, &filter, &[text(schedule)])?
        .into_iter()
        .next())
}

/// The latest row of `schedule` that ran (done or failed), if any.
pub fn latest_run_tick(conn: &mut dyn Conn, schedule: &str) -> Result<Option<TickRow>> {
    Ok(ticks(conn, Some(schedule))?
        .into_iter()
        .find(|r| r.state == "done" || r.state == "failed"))
}

/// Every tick row (of one schedule), latest first.
pub fn ticks(conn: &mut dyn Conn, schedule: Option<&str>) -> Result<Vec<TickRow>> {
    if !conn.table_exists(TICKS)? {
        return Ok(Vec::new());
    }
    let d = conn.dialect();
    match schedule {
        Some(s) => {
            let filter = format!(
                "WHERE {} = {}",
                d.quote("schedule"),
                d.param(1, ColumnType::Text)
            );
            select_rows(conn, &filter, &[text(s)])
        }
        None => select_rows(conn, "", &[]),
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn opt(s: Option<&str>) -> Value {
    s.map_or(Value::Null, text)
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Insert a tick row unless one with its key exists; whether it was
/// inserted.
fn insert_tick(
    conn: &mut dyn Conn,
    schedule: &str,
    tick: &str,
    state: &str,
    jobs: &str,
) -> Result<bool> {
    let d = conn.dialect();
    let cols = [
        "schedule",
        "tick",
        "state",
        "jobs",
        "host",
        "pid",
        "started_at",
    ];
    let names: Vec<String> = cols.iter().map(|c| d.quote(c)).collect();
    let params: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            d.param(
                i + 1,
                if *c == "pid" {
                    ColumnType::Integer
                } else {
                    ColumnType::Text
                },
            )
        })
        .collect();
    let values = vec![
        text(schedule),
        text(tick),
        text(state),
        text(jobs),
        text(&host_name()),
        Value::Int(std::process::id() as i64),
        text(&now_text()),
    ];
    let insert = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        d.quote(TICKS),
        names.join(", "),
        params.join(", ")
    );
    match d {
        Dialect::Oracle => match conn.execute(&insert, &values) {
            Ok(n) => Ok(n > 0),
            // a unique key violation: the row is there
            Err(e) => {
                let there = select_rows(
                    conn,
                    &format!(
                        "WHERE {} = :1 AND {} = :2",
                        d.quote("schedule"),
                        d.quote("tick")
                    ),
                    &[text(schedule), text(tick)],
                )?;
                if there.is_empty() { Err(e) } else { Ok(false) }
            }
        },
        _ => Ok(conn.execute(
            &format!(
                "{insert} ON CONFLICT ({}, {}) DO NOTHING",
                d.quote("schedule"),
                d.quote("tick")
            ),
            &values,
        )? > 0),
    }
}

/// Set columns of one tick row.
fn update_tick(
    conn: &mut dyn Conn,
    schedule: &str,
    tick: &str,
    sets: &[(&str, Value)],
) -> Result<()> {
    let d = conn.dialect();
    let mut params = Vec::new();
    let assigns: Vec<String> = sets
        .iter()
        .enumerate()
        .map(|(i, (c, v))| {
            params.push(v.clone());
            let ty = if matches!(v, Value::Int(_)) {
                ColumnType::Integer
            } else {
                ColumnType::Text
            };
            format!("{} = {}", d.quote(c), d.param(i + 1, ty))
        })
        .collect();
    let n = sets.len();
    params.push(text(schedule));
    params.push(text(tick));
    conn.execute(
        &format!(
            "UPDATE {} SET {} WHERE {} = {} AND {} = {}",
            d.quote(TICKS),
            assigns.join(", "),
            d.quote("schedule"),
            d.param(n + 1, ColumnType::Text),
            d.quote("tick"),
            d.param(n + 2, ColumnType::Text)
        ),
        &params,
    )?;
    Ok(())
}

/// A held job lock: released when dropped (the file) or by [`Locks::release`].
enum Held {
    Advisory(i64),
    File(std::fs::File),
}

/// The PostgreSQL advisory lock key of a job.
pub fn advisory_key(job: &str) -> i64 {
    crate::db::dialect::hash40(&format!("repaero job {job}")) as i64
}

/// What one due tick came to.
#[derive(Debug, Clone, Serialize)]
pub struct TickOutcome {
    pub schedule: String,
    pub tick: String,
    /// `done`, `failed`, `busy` (a job's lock was held: tried again
    /// later), `baseline` (first sight: the schedule starts at its next tick).
    pub state: String,
    pub run_id: Option<String>,
    pub rows_written: u64,
    pub error: Option<String>,
    pub validation: Option<String>,
    pub report: Option<String>,
    pub notified: bool,
}

/// The scheduler: the plan, and a connection to the target for the ticks
/// and the locks.
pub struct Scheduler {
    cfg: Arc<Config>,
    pub plan: Plan,
    conn: Option<Box<dyn Conn>>,
}

impl Scheduler {
    pub fn new(cfg: Arc<Config>) -> Result<Scheduler> {
        let plan = Plan::from_config(&cfg)?;
        // every job (and validation) is read before anything runs
        for e in &plan.entries {
            for j in &e.jobs {
                Job::load(&cfg, j, &ProcessEnv)
                    .map_err(|err| err.context(format!("[schedule.{}]", e.name)))?;
                if e.validate {
                    crate::validate::Validation::load(&cfg, j, &ProcessEnv).map_err(|err| {
                        err.context(format!("[schedule.{}] validate = true", e.name))
                    })?;
                }
            }
        }
        Ok(Scheduler {
            cfg,
            plan,
            conn: None,
        })
    }

    fn conn(&mut self) -> Result<&mut Box<dyn Conn>> {
        if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
            let mut c = crate::db::open(&self.cfg.target.url, false)?;
            ensure_ticks(c.as_mut())?;
            self.conn = Some(c);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| Error::runtime("no target connection"))
    }

    /// When the next round is due after `now`: the nearest next tick.
    pub fn next_wake(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.plan
            .entries
            .iter()
            .filter_map(|e| e.next_after(now).ok())
            .min()
    }

    /// Run every tick due at `now` (one per schedule: the latest).
    pub fn run_due(&mut self, now: DateTime<Utc>) -> Result<Vec<TickOutcome>> {
        let mut out = Vec::new();
        for i in 0..self.plan.entries.len() {
            let entry = self.plan.entries[i].clone();
            let Some(due) = entry.latest_at(now)? else {
                continue;
            };
            let key = tick_key(due);
            match self.tick_once(&entry, &key) {
                Ok(Some(o)) => out.push(o),
                Ok(None) => {}
                Err(e) => {
                    // the connection may be the cause: open another next time
                    if self.conn.as_ref().is_some_and(|c| c.is_closed()) {
                        self.conn = None;
                    }
                    out.push(TickOutcome {
                        schedule: entry.name.clone(),
                        tick: key,
                        state: "failed".into(),
                        run_id: None,
                        rows_written: 0,
                        error: Some(e.to_string()),
                        validation: None,
                        report: None,
                        notified: false,
                    })
                }
            }
        }
        Ok(out)
    }

    /// Run the tick `key` of `entry` unless it ran or runs elsewhere.
    fn tick_once(&mut self, entry: &Entry, key: &str) -> Result<Option<TickOutcome>> {
        let jobs_text = entry.jobs.join(",");
        let conn = self.conn()?;
        match latest_tick(conn.as_mut(), &entry.name)? {
            None => {
                // first sight: the schedule starts from its next tick
                insert_tick(conn.as_mut(), &entry.name, key, "baseline", &jobs_text)?;
                return Ok(Some(outcome(entry, key, "baseline")));
            }
            Some(last) if last.tick.as_str() > key => return Ok(None),
            Some(last) if last.tick == key && last.state != "running" => return Ok(None),
            Some(_) => {}
        }
        let held = match self.lock_jobs(&entry.jobs)? {
            Some(h) => h,
            None => return Ok(Some(outcome(entry, key, "busy"))),
        };
        let result = self.run_locked(entry, key, &jobs_text);
        self.release(held);
        result
    }

    /// With every job's lock held: claim the tick (or take over one whose
    /// scheduler died), run it, record how it went.
    fn run_locked(
        &mut self,
        entry: &Entry,
        key: &str,
        jobs_text: &str,
    ) -> Result<Option<TickOutcome>> {
        let conn = self.conn()?;
        match latest_tick(conn.as_mut(), &entry.name)? {
            Some(last) if last.tick.as_str() > key => return Ok(None),
            Some(last) if last.tick == key && last.state != "running" => return Ok(None),
            Some(last) if last.tick == key => {
                // left running, and its locks are free: its scheduler died
                tracing::warn!(
                    schedule = entry.name,
                    tick = key,
                    "the tick was left running by {} (pid {}): running it again",
                    last.host.as_deref().unwrap_or("?"),
                    last.pid.as_deref().unwrap_or("?")
                );
                update_tick(
                    conn.as_mut(),
                    &entry.name,
                    key,
                    &[
                        ("host", text(&host_name())),
                        ("pid", Value::Int(std::process::id() as i64)),
                        ("started_at", text(&now_text())),
                        (
                            "error",
                            text("taken over: the scheduler that began it stopped"),
                        ),
                    ],
                )?;
            }
            _ => {
                if !insert_tick(conn.as_mut(), &entry.name, key, "running", jobs_text)? {
                    return Ok(None);
                }
            }
        }
        // older ticks left running were lost with their scheduler
        let d = conn.dialect();
        conn.execute(
            &format!(
                "UPDATE {} SET {} = 'abandoned' WHERE {} = {} AND {} = 'running' AND {} < {}",
                d.quote(TICKS),
                d.quote("state"),
                d.quote("schedule"),
                d.param(1, ColumnType::Text),
                d.quote("state"),
                d.quote("tick"),
                d.param(2, ColumnType::Text)
            ),
            &[text(&entry.name), text(key)],
        )?;
        tracing::info!(schedule = entry.name, tick = key, "running {}", jobs_text);
        let mut o = outcome(entry, key, "done");
        let run_id = pipeline::new_run_id();
        o.run_id = Some(run_id.clone());
        let mut errors = Vec::new();
        let opts = RunOptions {
            dry_run: false,
            progress: false,
        };
        for name in &entry.jobs {
            let result = Job::load(&self.cfg, name, &ProcessEnv)
                .and_then(|job| pipeline::run_job(&self.cfg, &job, &opts, &run_id));
            match result {
                Ok(r) => o.rows_written += r.written(),
                Err(e) => errors.push(format!("job {name}: {e}")),
            }
        }
        if !errors.is_empty() {
            o.state = "failed".into();
            o.error = Some(errors.join("; "));
        } else if entry.validate {
            self.validate(entry, key, &mut o);
        }
        let conn = self.conn()?;
        update_tick(
            conn.as_mut(),
            &entry.name,
            key,
            &[
                ("state", text(&o.state)),
                ("finished_at", text(&now_text())),
                ("run_id", text(&run_id)),
                ("rows_written", Value::Int(o.rows_written as i64)),
                ("error", opt(o.error.as_deref())),
                ("validation", opt(o.validation.as_deref())),
                ("report", opt(o.report.as_deref())),
            ],
        )?;
        if o.validation.as_deref() == Some("regressed") {
            let (notified, error) = self.notify(entry, key, &o);
            o.notified = notified;
            let conn = self.conn()?;
            update_tick(
                conn.as_mut(),
                &entry.name,
                key,
                &[
                    (
                        "notified_at",
                        if notified {
                            text(&now_text())
                        } else {
                            Value::Null
                        },
                    ),
                    ("notify_error", opt(error.as_deref())),
                ],
            )?;
        }
        Ok(Some(o))
    }

    /// Validate the jobs of the tick, keep the report, compare it with
    /// the previous one.
    fn validate(&mut self, entry: &Entry, key: &str, o: &mut TickOutcome) {
        let mut reports = Vec::new();
        for name in &entry.jobs {
            let r = crate::validate::Validation::load(&self.cfg, name, &ProcessEnv)
                .and_then(|v| crate::validate::validate(&self.cfg, &v));
            match r {
                Ok(r) => reports.push(r),
                Err(e) => {
                    o.validation = Some("error".into());
                    o.error = Some(format!("validation of {name}: {e}"));
                    return;
                }
            }
        }
        let dir = self.plan.reports_dir(&self.cfg).join(&entry.name);
        let previous = previous_report(&dir);
        let path = dir.join(format!("{}.json", key.replace(':', "")));
        let file = ReportFile {
            reports: reports.clone(),
        };
        let written = std::fs::create_dir_all(&dir)
            .map_err(|e| Error::runtime(format!("creating {}: {e}", dir.display())))
            .and_then(|_| {
                let json = serde_json::to_string_pretty(&file)
                    .map_err(|e| Error::runtime(format!("JSON report: {e}")))?;
                report::write_file(&path, (json + "\n").as_bytes())
            });
        if let Err(e) = written {
            o.validation = Some("error".into());
            o.error = Some(e.to_string());
            return;
        }
        o.report = Some(path.display().to_string());
        let before: Vec<crate::validate::Report> = previous
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str::<ReportFile>(&t).ok())
            .map(|f| f.reports)
            .unwrap_or_default();
        let changes = report::diff(&before, &reports);
        let regressed = changes.iter().any(|c| c.regression);
        o.validation = Some(
            if regressed {
                "regressed"
            } else if reports.iter().any(|r| r.mismatches() > 0) {
                "mismatch"
            } else {
                "ok"
            }
            .into(),
        );
        if regressed {
            o.error = Some(
                report::render_diff(&changes)
                    .lines()
                    .filter(|l| l.starts_with("REGRESSION"))
                    .collect::<Vec<_>>()
                    .join("; "),
            );
        }
    }

    /// One notification of a regression, on each configured channel;
    /// (sent on at least one, the errors).
    fn notify(&self, entry: &Entry, key: &str, o: &TickOutcome) -> (bool, Option<String>) {
        let alerts = &self.cfg.alerts;
        if alerts.email.is_none() && alerts.sms.is_none() {
            return (
                false,
                Some("no channel: configure [alerts.email] or [alerts.sms]".into()),
            );
        }
        let m = regression_message(entry, key, o);
        let bound = alerts.send_bound();
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return (false, Some(format!("cannot start the I/O runtime: {e}"))),
        };
        let mut sent = false;
        let mut errors = Vec::new();
        if let Some(mail) = &alerts.email {
            let r = rt.block_on(async {
                tokio::time::timeout(
                    bound,
                    crate::notify::mail::send(mail, &m.subject, &m.body, bound),
                )
                .await
            });
            match r {
                Ok(Ok(())) => sent = true,
                Ok(Err(e)) => errors.push(format!("mail: {e}")),
                Err(_) => errors.push(format!("mail: no answer within {} s", bound.as_secs())),
            }
        }
        if let Some(sms) = &alerts.sms {
            let r = rt.block_on(async {
                tokio::time::timeout(bound, crate::notify::sms::send(sms, &m, bound)).await
            });
            match r {
                Ok(Ok(())) => sent = true,
                Ok(Err(e)) => errors.push(format!("SMS: {e}")),
                Err(_) => errors.push(format!("SMS: no answer within {} s", bound.as_secs())),
            }
        }
        for e in &errors {
            tracing::error!(schedule = entry.name, "regression not notified: {e}");
        }
        (sent, (!errors.is_empty()).then(|| errors.join("; ")))
    }

    /// Take the lock of every job (sorted, so two schedulers never wait on
    /// each other); `None` when one is held elsewhere.
    fn lock_jobs(&mut self, jobs: &[String]) -> Result<Option<Vec<Held>>> {
        let mut names: Vec<&String> = jobs.iter().collect();
        names.sort();
        names.dedup();
        let mut held = Vec::new();
        for j in names {
            match self.lock_one(j) {
                Ok(Some(h)) => held.push(h),
                Ok(None) => {
                    self.release(held);
                    return Ok(None);
                }
                Err(e) => {
                    self.release(held);
                    return Err(e);
                }
            }
        }
        Ok(Some(held))
    }

    fn lock_one(&mut self, job: &str) -> Result<Option<Held>> {
        let conn = self.conn()?;
        if conn.dialect() == Dialect::Postgres {
            let key = advisory_key(job);
            let got = conn.query_one(
                "SELECT pg_try_advisory_lock($1::text::bigint)::text",
                &[Value::Text(key.to_string())],
            )?;
            return Ok((got.as_deref() == Some("true")).then_some(Held::Advisory(key)));
        }
        let dir = self.plan.lock_dir(&self.cfg);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::runtime(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(format!("{job}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::runtime(format!("opening {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Held::File(file))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(Error::runtime(format!("locking {}: {e}", path.display())))
            }
        }
    }

    fn release(&mut self, held: Vec<Held>) {
        for h in held {
            match h {
                Held::Advisory(key) => {
                    if let Some(c) = self.conn.as_mut() {
                        let r = c.query_one(
                            "SELECT pg_advisory_unlock($1::text::bigint)::text",
                            &[Value::Text(key.to_string())],
                        );
                        if let Err(e) = r {
                            tracing::warn!("advisory lock {key} not released: {e}");
                        }
                    }
                }
                Held::File(f) => drop(f),
            }
        }
    }
}

fn outcome(entry: &Entry, key: &str, state: &str) -> TickOutcome {
    TickOutcome {
        schedule: entry.name.clone(),
        tick: key.to_string(),
        state: state.into(),
        run_id: None,
        rows_written: 0,
        error: None,
        validation: None,
        report: None,
        notified: false,
    }
}

/// The latest report kept in `dir` (names sort as their ticks).
fn previous_report(dir: &std::path::Path) -> Option<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files.pop()
}

/// The words of a regression's notification.
pub fn regression_message(entry: &Entry, key: &str, o: &TickOutcome) -> crate::notify::Message {
    let jobs = entry.jobs.join(", ");
    let subject = format!(
        "repaero: validation of {jobs} regressed ({} at {key})",
        entry.name
    );
    let body = format!(
        "The scheduled run of {jobs} ({}, tick {key}, run {}) is written, but its validation regressed since the previous run:\n\n{}\n\nReport: {}\n",
        entry.name,
        o.run_id.as_deref().unwrap_or("?"),
        o.error.as_deref().unwrap_or("").replace("; ", "\n"),
        o.report.as_deref().unwrap_or("(not kept)")
    );
    let text = format!("repaero: validation of {jobs} regressed ({key})");
    crate::notify::Message {
        subject,
        body,
        values: vec![
            ("schedule".into(), entry.name.clone()),
            ("jobs".into(), jobs.clone()),
            ("tick".into(), key.to_string()),
            ("summary".into(), text),
        ],
    }
}

/// The scheduler as a feed of the daemon runtime (`repaero schedule`):
/// a heartbeat, `/health` and `/metrics`, an orderly stop.
pub struct ScheduleFeed {
    inner: Arc<Mutex<Scheduler>>,
    poll: Duration,
}

impl ScheduleFeed {
    pub fn new(cfg: Arc<Config>) -> Result<ScheduleFeed> {
        let s = Scheduler::new(cfg)?;
        let poll = Duration::from_secs_f64(s.plan.settings.poll);
        Ok(ScheduleFeed {
            inner: Arc::new(Mutex::new(s)),
            poll,
        })
    }

    /// Whether there is no schedule to run.
    pub fn is_empty(&self) -> bool {
        self.inner
            .lock()
            .map(|s| s.plan.entries.is_empty())
            .unwrap_or(true)
    }

    /// One round on a thread of its own (the connections block).
    async fn round(&self) -> Result<(Vec<TickOutcome>, Option<DateTime<Utc>>)> {
        let inner = self.inner.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("repaero-schedule".into())
            .spawn(move || {
                let r = match inner.lock() {
                    Ok(mut s) => {
                        let now = Utc::now();
                        s.run_due(now).map(|o| (o, s.next_wake(Utc::now())))
                    }
                    Err(_) => Err(Error::runtime("the scheduler's state is poisoned")),
                };
                let _ = tx.send(r);
            })
            .map_err(|e| Error::runtime(format!("cannot start the scheduler thread: {e}")))?;
        rx.await
            .map_err(|_| Error::runtime("the scheduler thread stopped during a round"))?
    }
}

impl Feed for ScheduleFeed {
    fn name(&self) -> &'static str {
        "schedule"
    }

    fn run<'a>(&'a self, ctx: &'a FeedContext) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut rows = 0u64;
            let mut last: BTreeMap<String, String> = BTreeMap::new();
            while !ctx.stopping() {
                let (outcomes, next) = self.round().await?;
                let mut busy = false;
                for o in &outcomes {
                    match o.state.as_str() {
                        "done" => ctx.progress(1, 0),
                        "failed" => ctx.progress(0, 1),
                        "busy" => busy = true,
                        _ => {}
                    }
                    rows += o.rows_written;
                    if o.state == "done" || o.state == "failed" {
                        last.insert(o.schedule.clone(), format!("{} {}", o.tick, o.state));
                    }
                    if let Some(e) = &o.error {
                        tracing::warn!(schedule = o.schedule, tick = o.tick, "{}: {e}", o.state);
                    }
                }
                ctx.detail("rows", serde_json::json!(rows));
                ctx.detail("last_ticks", serde_json::json!(last));
                if let Some(n) = next {
                    ctx.detail("next_tick", serde_json::json!(tick_key(n)));
                }
                let now = Utc::now();
                let mut wait = next
                    .map(|n| (n - now).to_std().unwrap_or(Duration::ZERO))
                    .unwrap_or(Duration::from_secs(3600));
                if busy {
                    wait = wait.min(self.poll);
                }
                // a few milliseconds past the tick: the round sees it due
                if ctx.sleep(wait + Duration::from_millis(5)).await {
                    break;
                }
            }
            Ok(())
        })
    }
}
