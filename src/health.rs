//! `repaero check`: the health of a repaero installation as a Nagios
//! plugin sees it — one status line, perfdata after `|`, exit 0 OK,
//! 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
//!
//! It covers: the target and the sources reachable; each schedule's last
//! run, its age against the schedule and its verdict; the daemons'
//! heartbeats; the dead letters, the parcels late against their estimate
//! and the open stock alerts, each read only when its table exists.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::db::{Conn, Dialect};
use crate::error::{Error, Result};
use crate::schedule::{self, Plan};

/// A Nagios state, in the order of gravity (UNKNOWN is the plugin's own
/// failure: it ranks above OK and WARNING, below CRITICAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Status {
    pub fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }

    fn rank(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Unknown => 2,
            Status::Critical => 3,
        }
    }
}

/// `[check]`: thresholds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSettings {
    /// A heartbeat older than its interval times this is CRITICAL.
    #[serde(default = "CheckSettings::default_missed_beats")]
    pub missed_beats: f64,
    /// Seconds after a tick before a schedule that has not run it is late
    /// (WARNING): the time a run may take to start and finish.
    #[serde(default = "CheckSettings::default_late_after")]
    pub late_after: u64,
    /// Open each source (off: only the target and what it holds).
    #[serde(default = "CheckSettings::default_sources")]
    pub sources: bool,
    /// WARNING from this many dead letters, parcels late, open stock alerts.
    #[serde(default = "CheckSettings::one")]
    pub dead_letters_warning: u64,
    #[serde(default = "CheckSettings::one")]
    pub late_parcels_warning: u64,
    #[serde(default = "CheckSettings::one")]
    pub open_alerts_warning: u64,
    /// A feed's `queue_depth` from this many messages: WARNING, CRITICAL.
    #[serde(default)]
    pub queue_depth_warning: Option<u64>,
    #[serde(default)]
    pub queue_depth_critical: Option<u64>,
}

impl CheckSettings {
    fn default_missed_beats() -> f64 {
        3.0
    }
    fn default_late_after() -> u64 {
        900
    }
    fn default_sources() -> bool {
        true
    }
    fn one() -> u64 {
        1
    }

    pub fn from_config(cfg: &Config) -> Result<CheckSettings> {
        let s: CheckSettings = toml::Value::Table(cfg.check.clone())
            .try_into()
            .map_err(|e: toml::de::Error| Error::config(format!("[check]: {}", e.message())))?;
        if s.missed_beats.is_nan() || s.missed_beats < 1.0 {
            return Err(Error::config("[check] missed_beats must be at least 1"));
        }
        Ok(s)
    }
}

/// One performance value: `'label'=value[uom];warn;crit;min;max`.
#[derive(Debug, Clone, Serialize)]
pub struct Perf {
    pub label: String,
    pub value: f64,
    pub uom: &'static str,
    pub warn: Option<f64>,
    pub crit: Option<f64>,
}

impl Perf {
    fn render(&self) -> String {
        let n = |v: Option<f64>| v.map(fmt_num).unwrap_or_default();
        let label: String = self
            .label
            .chars()
            .map(|c| if c == '\'' || c == '=' { '_' } else { c })
            .collect();
        let label = if label.contains(' ') {
            format!("'{label}'")
        } else {
            label
        };
        format!(
            "{label}={}{};{};{};0;",
            fmt_num(self.value),
            self.uom,
            n(self.warn),
            n(self.crit)
        )
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

/// What the check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Health {
    /// Problems, each with its state; the OK ones only counted.
    pub problems: Vec<(Status, String)>,
    pub checked: Vec<String>,
    pub perf: Vec<Perf>,
}

impl Health {
    pub fn status(&self) -> Status {
        self.problems
            .iter()
            .map(|(s, _)| *s)
            .max_by_key(|s| s.rank())
            .unwrap_or(Status::Ok)
    }

    fn problem(&mut self, s: Status, text: String) {
        self.problems.push((s, text));
    }

    fn perf(
        &mut self,
        label: String,
        value: f64,
        uom: &'static str,
        warn: Option<f64>,
        crit: Option<f64>,
    ) {
        self.perf.push(Perf {
            label,
            value,
            uom,
            warn,
            crit,
        });
    }

    /// The plugin's one line: `REPAERO <STATE> - <what> | <perfdata>`.
    pub fn line(&self) -> String {
        let status = self.status();
        let mut problems: Vec<&(Status, String)> = self.problems.iter().collect();
        problems.sort_by_key(|(s, _)| std::cmp::Reverse(s.rank()));
        let what = if problems.is_empty() {
            format!("all well: {}", self.checked.join(", "))
        } else {
            problems
                .iter()
                .map(|(s, t)| format!("{}: {t}", s.word()))
                .collect::<Vec<_>>()
                .join("; ")
        };
        // one line: the plugin output ends at the first newline, and `|`
        // starts the perfdata
        let what = what.replace(['\n', '\r'], " ").replace('|', "/");
        let perf: Vec<String> = self.perf.iter().map(Perf::render).collect();
        if perf.is_empty() {
            format!("REPAERO {} - {what}", status.word())
        } else {
            format!("REPAERO {} - {what} | {}", status.word(), perf.join(" "))
        }
    }
}

/// A label part: letters, digits and `_` only.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn age_seconds(now: DateTime<Utc>, at: &str) -> Option<f64> {
    let t = DateTime::parse_from_rfc3339(at)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| {
            // as PostgreSQL writes a timestamptz (`2026-11-30 01:30:00+00`)
            chrono::NaiveDateTime::parse_from_str(&at[..at.len().min(19)], "%Y-%m-%d %H:%M:%S")
                .ok()
                .map(|n| n.and_utc())
        })?;
    Some((now - t).num_milliseconds() as f64 / 1000.0)
}

/// Check everything. Never fails: what cannot be checked is UNKNOWN.
pub fn check(cfg: &Config) -> Health {
    let mut h = Health::default();
    let settings = match CheckSettings::from_config(cfg) {
        Ok(s) => s,
        Err(e) => {
            h.problem(Status::Unknown, e.to_string());
            return h;
        }
    };
    let now = Utc::now();
    // the target
    let started = Instant::now();
    // a health check creates nothing: a SQLite target file must be there
    let missing = cfg
        .target
        .url
        .strip_prefix("sqlite://")
        .filter(|p| *p != ":memory:" && !std::path::Path::new(p).exists());
    let target = match missing {
        Some(p) => Err(Error::runtime(format!("no database file {p}"))),
        None => crate::db::open(&cfg.target.url, true),
    }
    .and_then(|mut c| {
        let probe = match c.dialect() {
            Dialect::Oracle => "SELECT 1 FROM dual",
            _ => "SELECT 1",
        };
        c.query(probe, &[])?;
        Ok(c)
    });
    let mut conn = match target {
        Ok(c) => {
            h.perf(
                "target_time".into(),
                started.elapsed().as_secs_f64(),
                "s",
                None,
                None,
            );
            h.checked.push("target".into());
            Some(c)
        }
        Err(e) => {
            h.problem(
                Status::Critical,
                format!(
                    "target {} unreachable: {e}",
                    crate::config::redact_url(&cfg.target.url)
                ),
            );
            None
        }
    };
    if settings.sources {
        check_sources(cfg, &mut h);
    }
    let Some(conn) = conn.as_mut() else {
        return h;
    };
    let conn = conn.as_mut();
    let parts = [
        (
            "schedules",
            check_schedules(cfg, &settings, now, conn, &mut h),
        ),
        ("heartbeats", check_heartbeats(&settings, now, conn, &mut h)),
        ("dead letters", check_dead_letters(&settings, conn, &mut h)),
        ("parcels", check_parcels(&settings, now, conn, &mut h)),
        ("stock alerts", check_alerts(&settings, conn, &mut h)),
    ];
    for (what, result) in parts {
        if let Err(e) = result {
            h.problem(Status::Unknown, format!("{what}: {e}"));
        }
    }
    h
}

fn check_sources(cfg: &Config, h: &mut Health) {
    let mut ok = 0;
    for (name, sc) in &cfg.sources {
        let reached = crate::source::open(name, sc).and_then(|s| s.tables().map(|_| ()));
        match reached {
            Ok(()) => ok += 1,
            Err(e) => h.problem(Status::Warning, format!("source {name} unreachable: {e}")),
        }
    }
    if !cfg.sources.is_empty() {
        h.checked.push(format!("{ok} source(s)"));
    }
}

fn check_schedules(
    cfg: &Config,
    s: &CheckSettings,
    now: DateTime<Utc>,
    conn: &mut dyn Conn,
    h: &mut Health,
) -> Result<()> {
    let plan = Plan::from_config(cfg)?;
    if plan.entries.is_empty() {
        return Ok(());
    }
    let late_by = now - chrono::TimeDelta::seconds(s.late_after as i64);
    for e in &plan.entries {
        let label = slug(&e.name);
        let last = schedule::latest_tick(conn, &e.name)?;
        let ran = schedule::latest_run_tick(conn, &e.name)?;
        let expected = e.latest_at(late_by)?.map(schedule::tick_key);
        match (&last, &expected) {
            (None, Some(t)) => h.problem(
                Status::Warning,
                format!("schedule {}: tick {t} not run, no tick ever recorded (is `repaero schedule` running?)", e.name),
            ),
            (Some(l), Some(t)) if l.tick < *t => h.problem(
                Status::Warning,
                format!(
                    "schedule {}: tick {t} not run; last tick {} ({})",
                    e.name, l.tick, l.state
                ),
            ),
            _ => {}
        }
        if let Some(r) = &ran {
            if let Some(age) = r.finished_at.as_deref().and_then(|f| age_seconds(now, f)) {
                h.perf(
                    format!("schedule_{label}_age"),
                    age.max(0.0).round(),
                    "s",
                    None,
                    None,
                );
            }
            let err = r.error.as_deref().unwrap_or("");
            if r.state == "failed" {
                h.problem(
                    Status::Critical,
                    format!(
                        "schedule {}: the run of tick {} failed: {err}",
                        e.name, r.tick
                    ),
                );
            } else {
                match r.validation.as_deref() {
                    Some("regressed") => h.problem(
                        Status::Warning,
                        format!(
                            "schedule {}: validation regressed at tick {}: {err}",
                            e.name, r.tick
                        ),
                    ),
                    Some("mismatch") => h.problem(
                        Status::Warning,
                        format!(
                            "schedule {}: validation mismatch at tick {}",
                            e.name, r.tick
                        ),
                    ),
                    Some("error") => h.problem(
                        Status::Warning,
                        format!(
                            "schedule {}: validation failed at tick {}: {err}",
                            e.name, r.tick
                        ),
                    ),
                    _ => {}
                }
            }
        }
    }
    h.checked
        .push(format!("{} schedule(s)", plan.entries.len()));
    Ok(())
}

/// Whether process `pid` of this machine is a running repaero (`None`:
/// cannot tell, no /proc).
fn process_alive(pid: u32) -> Option<bool> {
    if !std::path::Path::new("/proc/self/stat").exists() {
        return None;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Some(false);
    };
    // `pid (comm) state …`: comm may hold spaces and parentheses
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return Some(false);
    };
    let comm = &stat[open + 1..close];
    let state = stat[close + 1..].split_whitespace().next().unwrap_or("");
    Some(state != "Z" && state != "X" && comm.starts_with("repaero"))
}

fn check_heartbeats(
    s: &CheckSettings,
    now: DateTime<Utc>,
    conn: &mut dyn Conn,
    h: &mut Health,
) -> Result<()> {
    let beats = crate::daemon::read_heartbeats(conn)?;
    if beats.is_empty() {
        return Ok(());
    }
    let here = std::fs::read_to_string("/etc/hostname")
        .map(|x| x.trim().to_string())
        .unwrap_or_default();
    let get = |b: &BTreeMap<String, Option<String>>, k: &str| b.get(k).cloned().flatten();
    for b in &beats {
        let feed = get(b, "feed").unwrap_or_default();
        let label = slug(&feed);
        let interval: f64 = get(b, "interval_seconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(10.0);
        let limit = interval * s.missed_beats;
        let state = get(b, "state").unwrap_or_default();
        let age = get(b, "beat_at").and_then(|t| age_seconds(now, &t));
        if let Some(a) = age {
            h.perf(
                format!("heartbeat_{label}_age"),
                a.max(0.0).round(),
                "s",
                None,
                Some(limit),
            );
        }
        let host = get(b, "host").unwrap_or_default();
        let pid: Option<u32> = get(b, "pid").and_then(|p| p.parse().ok());
        if state == "stopped" {
            h.problem(
                Status::Critical,
                format!(
                    "daemon {feed} stopped (last beat {})",
                    get(b, "beat_at").unwrap_or_default()
                ),
            );
            continue;
        }
        // on this machine, a process that is gone is known at once
        if host == here
            && let Some(p) = pid
            && process_alive(p) == Some(false)
        {
            h.problem(
                Status::Critical,
                format!("daemon {feed}: its process {p} on {host} is gone"),
            );
            continue;
        }
        match age {
            Some(a) if a > limit => h.problem(
                Status::Critical,
                format!("daemon {feed}: no heartbeat for {a:.0} s (every {interval:.0} s expected, on {host})"),
            ),
            None => h.problem(Status::Critical, format!("daemon {feed}: no readable heartbeat time")),
            _ => {}
        }
        if state == "retrying" {
            h.problem(
                Status::Warning,
                format!(
                    "daemon {feed} retrying after: {}",
                    get(b, "last_error").unwrap_or_default()
                ),
            );
        }
        let details: BTreeMap<String, serde_json::Value> = get(b, "details")
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or_default();
        if let Some(depth) = details.get("queue_depth").and_then(|v| v.as_f64()) {
            h.perf(
                format!("queue_depth_{label}"),
                depth,
                "",
                s.queue_depth_warning.map(|v| v as f64),
                s.queue_depth_critical.map(|v| v as f64),
            );
            if s.queue_depth_critical.is_some_and(|c| depth >= c as f64) {
                h.problem(
                    Status::Critical,
                    format!("daemon {feed}: {depth} messages waiting"),
                );
            } else if s.queue_depth_warning.is_some_and(|w| depth >= w as f64) {
                h.problem(
                    Status::Warning,
                    format!("daemon {feed}: {depth} messages waiting"),
                );
            }
        }
    }
    h.checked.push(format!("{} daemon(s)", beats.len()));
    Ok(())
}

/// Rows of `table` where the first of `open_columns` it has is NULL (all
/// rows when it has none); `None` when the table does not exist.
fn count_open(conn: &mut dyn Conn, table: &str, open_columns: &[&str]) -> Result<Option<u64>> {
    let cols = conn.columns(table)?;
    if cols.is_empty() {
        return Ok(None);
    }
    let d = conn.dialect();
    let open = open_columns.iter().find(|c| {
        cols.iter()
            .any(|x| x.eq_ignore_ascii_case(&d.column_name(c)))
    });
    let filter = open
        .map(|c| format!(" WHERE {} IS NULL", d.quote(c)))
        .unwrap_or_default();
    let n = conn
        .query_one(
            &format!("SELECT count(*) FROM {}{filter}", d.quote(table)),
            &[],
        )?
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(Some(n))
}

fn check_dead_letters(s: &CheckSettings, conn: &mut dyn Conn, h: &mut Health) -> Result<()> {
    let Some(n) = count_open(
        conn,
        "_dead_letters",
        &["resolved_at", "replayed_at", "requeued_at", "discarded_at"],
    )?
    else {
        return Ok(());
    };
    let w = s.dead_letters_warning;
    h.perf("dead_letters".into(), n as f64, "", Some(w as f64), None);
    if n >= w {
        h.problem(Status::Warning, format!("{n} dead letter(s) waiting"));
    }
    h.checked.push("dead letters".into());
    Ok(())
}

fn check_alerts(s: &CheckSettings, conn: &mut dyn Conn, h: &mut Health) -> Result<()> {
    let Some(n) = count_open(conn, "stock_alerts", &["cleared_at"])? else {
        return Ok(());
    };
    let w = s.open_alerts_warning;
    h.perf(
        "open_stock_alerts".into(),
        n as f64,
        "",
        Some(w as f64),
        None,
    );
    if n >= w {
        h.problem(Status::Warning, format!("{n} open stock alert(s)"));
    }
    h.checked.push("stock alerts".into());
    Ok(())
}

/// Parcels not delivered whose estimated delivery day is past: the
/// columns are found by name (`estimated…`, `delivered…`/`actual…`).
fn check_parcels(
    s: &CheckSettings,
    now: DateTime<Utc>,
    conn: &mut dyn Conn,
    h: &mut Health,
) -> Result<()> {
    let cols = conn.columns("shipments")?;
    if cols.is_empty() {
        return Ok(());
    }
    let lower: Vec<String> = cols.iter().map(|c| c.to_lowercase()).collect();
    let find =
        |pred: &dyn Fn(&str) -> bool| lower.iter().position(|c| pred(c)).map(|i| cols[i].clone());
    let (Some(est), Some(done)) = (
        find(&|c| c.contains("estimated")),
        find(&|c| !c.contains("estimated") && (c.contains("delivered") || c.starts_with("actual"))),
    ) else {
        return Ok(());
    };
    let d = conn.dialect();
    let rows = conn.query(
        &format!(
            "SELECT {} FROM {} WHERE {} IS NULL AND {} IS NOT NULL",
            d.as_text(&d.quote(&est)),
            d.quote("shipments"),
            d.quote(&done),
            d.quote(&est)
        ),
        &[],
    )?;
    let today = now.date_naive().format("%Y-%m-%d").to_string();
    let late = rows
        .iter()
        .filter_map(|r| r.first().cloned().flatten())
        .filter(|e| e.get(..10).is_some_and(|day| day < today.as_str()))
        .count() as u64;
    let w = s.late_parcels_warning;
    h.perf("late_parcels".into(), late as f64, "", Some(w as f64), None);
    if late >= w {
        h.problem(
            Status::Warning,
            format!("{late} parcel(s) late against their estimate"),
        );
    }
    h.checked.push("parcels".into());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_follows_the_plugin_convention() {
        let mut h = Health::default();
        h.checked.push("target".into());
        h.perf("target_time".into(), 0.0123, "s", None, None);
        h.perf("dead_letters".into(), 0.0, "", Some(1.0), None);
        assert_eq!(h.status(), Status::Ok);
        assert_eq!(
            h.line(),
            "REPAERO OK - all well: target | target_time=0.012s;;;0; dead_letters=0;1;;0;"
        );
        h.problem(Status::Warning, "2 parcel(s) late | x\nsecond".into());
        h.problem(Status::Unknown, "heartbeats: no table".into());
        assert_eq!(h.status(), Status::Unknown);
        h.problem(Status::Critical, "daemon queue stopped".into());
        assert_eq!(h.status(), Status::Critical);
        assert_eq!(h.status().code(), 2);
        let line = h.line();
        assert!(
            line.starts_with("REPAERO CRITICAL - CRITICAL: daemon queue stopped; UNKNOWN: heartbeats: no table; WARNING: 2 parcel(s) late / x second | "),
            "{line}"
        );
        assert_eq!(line.matches('|').count(), 1);
        assert!(!line.contains('\n'));
    }

    #[test]
    fn ages_read_both_time_forms() {
        let now = DateTime::parse_from_rfc3339("2026-11-30T10:00:10Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(age_seconds(now, "2026-11-30T10:00:00.000Z"), Some(10.0));
        assert_eq!(age_seconds(now, "2026-11-30 09:59:10+00"), Some(60.0));
        assert_eq!(age_seconds(now, "soon"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_dead_pid_is_not() {
        // the unit test binary is `repaero-<hash>`
        assert_eq!(process_alive(std::process::id()), Some(true));
        assert_eq!(process_alive(u32::MAX), Some(false));
    }
}
