//! What `[schedule]` says: the scheduler's settings and each schedule's
//! jobs, cron expression and time zone; when a schedule's ticks fall.

use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::Deserialize;

use crate::config::Config;
use crate::error::{Error, Result};

/// The scalar keys of `[schedule]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where validation reports are kept, one folder per schedule
    /// (relative to repaero.toml). Schedulers on several machines share it.
    #[serde(default = "Settings::default_reports")]
    pub reports: PathBuf,
    /// Where the job lock files are, when the target is not PostgreSQL.
    #[serde(default = "Settings::default_lock_dir")]
    pub lock_dir: PathBuf,
    /// Seconds between tries while a job's lock is held elsewhere.
    #[serde(default = "Settings::default_poll")]
    pub poll: f64,
}

impl Settings {
    fn default_reports() -> PathBuf {
        "reports".into()
    }
    fn default_lock_dir() -> PathBuf {
        "locks".into()
    }
    fn default_poll() -> f64 {
        5.0
    }
}

/// `[schedule.<name>]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    job: Option<String>,
    jobs: Option<Vec<String>>,
    cron: String,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    validate: bool,
}

/// One schedule: jobs run in order at each tick.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub jobs: Vec<String>,
    /// The expression as written.
    pub cron_text: String,
    cron: Cron,
    pub tz: Tz,
    pub validate: bool,
}

/// A tick as `_repaero_ticks` keeps it: UTC, to the second.
pub fn tick_key(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Read a tick key back.
pub fn parse_tick(key: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(key)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Parse a crontab expression: 5 fields (minute first) or 6 (seconds
/// first), in the POSIX/Vixie sense (day of month OR day of week when both
/// are restricted; 0 and 7 are Sunday).
pub fn parse_cron(text: &str) -> Result<Cron> {
    let fields = text.split_whitespace().count();
    if !(text.trim_start().starts_with('@') || fields == 5 || fields == 6) {
        return Err(Error::config(format!(
            "cron = {text:?}: give 5 fields (minute hour day month weekday) or 6 (seconds first)"
        )));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| Error::config(format!("cron = {text:?}: {e}")))
}

impl Entry {
    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Result<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .map(|n| n.with_timezone(&Utc))
            .map_err(|e| Error::runtime(format!("[schedule.{}]: next tick: {e}", self.name)))
    }

    /// The latest tick at or before `t`, if one falls within the year
    /// before it (what is due at `t`). Found walking forward from the
    /// latest occurrence before, so that it is always one of the ticks
    /// [`Entry::next_after`] gives.
    pub fn latest_at(&self, t: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        let local = t.with_timezone(&self.tz);
        let Ok(prev) = self.cron.find_previous_occurrence(&local, true) else {
            return Ok(None);
        };
        let prev = prev.with_timezone(&Utc);
        // almost always: the forward search reaches it, and nothing after
        // it up to t
        let second = chrono::TimeDelta::seconds(1);
        if self.next_after(prev - second)? == prev && self.next_after(prev)? > t {
            return Ok(Some(prev));
        }
        // around a DST change: start a day before it, then walk forward to
        // the last tick not after t
        let mut cur = prev - chrono::TimeDelta::days(1);
        let mut found = None;
        loop {
            let n = self.next_after(cur)?;
            if n > t {
                return Ok(found);
            }
            found = Some(n);
            cur = n;
        }
    }
}

/// Every schedule of `[schedule]`, and the settings.
#[derive(Debug, Clone)]
pub struct Plan {
    pub settings: Settings,
    pub entries: Vec<Entry>,
}

impl Plan {
    pub fn from_config(cfg: &Config) -> Result<Plan> {
        let own: toml::Table = cfg
            .schedule
            .iter()
            .filter(|(_, v)| !v.is_table())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let settings: Settings = toml::Value::Table(own)
            .try_into()
            .map_err(|e: toml::de::Error| Error::config(format!("[schedule]: {}", e.message())))?;
        if settings.poll.is_nan() || settings.poll <= 0.0 {
            return Err(Error::config("[schedule] poll must be above 0 seconds"));
        }
        let mut entries = Vec::new();
        for (name, v) in cfg.schedule.iter().filter(|(_, v)| v.is_table()) {
            let at = format!("[schedule.{name}]");
            let f: EntryFile = v
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| Error::config(format!("{at}: {}", e.message())))?;
            let jobs = match (f.job, f.jobs) {
                (Some(j), None) => vec![j],
                (None, Some(js)) if !js.is_empty() => js,
                _ => {
                    return Err(Error::config(format!(
                        "{at}: name the job (`job = \"stock\"`) or the jobs (`jobs = [\"stock\", \"suppliers\"]`), one of the two"
                    )));
                }
            };
            let cron = parse_cron(&f.cron).map_err(|e| e.context(&at))?;
            let tz_name = f.time_zone.unwrap_or_else(|| "UTC".into());
            let tz = Tz::from_str(&tz_name).map_err(|_| {
                Error::config(format!(
                    "{at}: time_zone = {tz_name:?} is not an IANA time zone (e.g. \"Europe/Paris\", \"UTC\")"
                ))
            })?;
            entries.push(Entry {
                name: name.clone(),
                jobs,
                cron_text: f.cron,
                cron,
                tz,
                validate: f.validate,
            });
        }
        Ok(Plan { settings, entries })
    }

    pub fn reports_dir(&self, cfg: &Config) -> PathBuf {
        cfg.resolve(&self.settings.reports)
    }

    pub fn lock_dir(&self, cfg: &Config) -> PathBuf {
        cfg.resolve(&self.settings.lock_dir)
    }

    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cron: &str, tz: &str) -> Entry {
        Entry {
            name: "t".into(),
            jobs: vec!["j".into()],
            cron_text: cron.into(),
            cron: parse_cron(cron).unwrap(),
            tz: Tz::from_str(tz).unwrap(),
            validate: false,
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        parse_tick(s).unwrap()
    }

    /// The ticks after `from`, `n` of them, as keys.
    fn ticks(e: &Entry, from: &str, n: usize) -> Vec<String> {
        let mut t = utc(from);
        (0..n)
            .map(|_| {
                t = e.next_after(t).unwrap();
                tick_key(t)
            })
            .collect()
    }

    // Europe/Paris in 2026: 29 March 02:00 CET → 03:00 CEST (01:00 UTC);
    // 25 October 03:00 CEST → 02:00 CET (01:00 UTC).

    #[test]
    fn a_daily_tick_in_the_skipped_hour_runs_once_when_the_clock_springs_forward() {
        let e = entry("30 2 * * *", "Europe/Paris");
        assert_eq!(
            ticks(&e, "2026-03-27T12:00:00Z", 4),
            vec![
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:00:00Z", // 02:30 does not exist: 03:00 CEST, once
                "2026-03-30T00:30:00Z", // 02:30 CEST
                "2026-03-31T00:30:00Z",
            ]
        );
    }

    #[test]
    fn a_daily_tick_in_the_repeated_hour_runs_once_when_the_clock_falls_back() {
        let e = entry("30 2 * * *", "Europe/Paris");
        assert_eq!(
            ticks(&e, "2026-10-23T12:00:00Z", 4),
            vec![
                "2026-10-24T00:30:00Z", // 02:30 CEST
                "2026-10-25T00:30:00Z", // the first 02:30 (CEST), not the second
                "2026-10-26T01:30:00Z", // 02:30 CET
                "2026-10-27T01:30:00Z",
            ]
        );
    }

    #[test]
    fn an_hourly_schedule_keeps_every_real_hour_across_both_changes() {
        let e = entry("0 * * * *", "Europe/Paris");
        // spring: 01:00 CET, then 03:00 CEST one hour later
        assert_eq!(
            ticks(&e, "2026-03-28T23:30:00Z", 4),
            vec![
                "2026-03-29T00:00:00Z", // 01:00 CET
                "2026-03-29T01:00:00Z", // 03:00 CEST
                "2026-03-29T02:00:00Z",
                "2026-03-29T03:00:00Z",
            ]
        );
        // autumn: 02:00 CEST and 02:00 CET are both real hours
        assert_eq!(
            ticks(&e, "2026-10-24T23:30:00Z", 4),
            vec![
                "2026-10-25T00:00:00Z", // 02:00 CEST
                "2026-10-25T01:00:00Z", // 02:00 CET
                "2026-10-25T02:00:00Z", // 03:00 CET
                "2026-10-25T03:00:00Z",
            ]
        );
    }

    #[test]
    fn the_due_tick_is_one_of_the_forward_ticks_across_the_changes() {
        let daily = entry("30 2 * * *", "Europe/Paris");
        let due = |e: &Entry, at: &str| e.latest_at(utc(at)).unwrap().map(tick_key);
        // after the spring change, the due tick is the shifted 03:00 CEST
        assert_eq!(
            due(&daily, "2026-03-29T06:00:00Z").as_deref(),
            Some("2026-03-29T01:00:00Z")
        );
        assert_eq!(
            due(&daily, "2026-03-29T00:59:59Z").as_deref(),
            Some("2026-03-28T01:30:00Z")
        );
        // in the repeated hour, the first 02:30 is due, and stays the due
        // tick through the second
        assert_eq!(
            due(&daily, "2026-10-25T01:45:00Z").as_deref(),
            Some("2026-10-25T00:30:00Z")
        );
        // exactly at a tick, it is due (inclusive)
        assert_eq!(
            due(&daily, "2026-10-26T01:30:00Z").as_deref(),
            Some("2026-10-26T01:30:00Z")
        );
        let secs = entry("*/2 * * * * *", "Europe/Paris");
        assert_eq!(
            due(&secs, "2026-10-25T01:00:03Z").as_deref(),
            Some("2026-10-25T01:00:02Z")
        );
    }

    #[test]
    fn the_due_tick_is_the_last_forward_tick_at_every_minute_of_both_changes() {
        for pattern in ["30 2 * * *", "0 * * * *", "*/20 * * * *", "15 2,3 * * *"] {
            let e = entry(pattern, "Europe/Paris");
            for start in ["2026-03-28T22:00:00Z", "2026-10-24T22:00:00Z"] {
                for minute in (0..6 * 60).step_by(7) {
                    let t = utc(start) + chrono::TimeDelta::minutes(minute);
                    // by brute force: every forward tick from two days before
                    let mut cur = t - chrono::TimeDelta::days(2);
                    let mut last = None;
                    loop {
                        let n = e.next_after(cur).unwrap();
                        if n > t {
                            break;
                        }
                        last = Some(n);
                        cur = n;
                    }
                    assert_eq!(e.latest_at(t).unwrap(), last, "{pattern} at {t}");
                }
            }
        }
    }

    #[test]
    fn seconds_and_errors() {
        let e = entry("*/5 * * * * *", "UTC");
        assert_eq!(
            ticks(&e, "2026-01-01T00:00:01Z", 3),
            vec![
                "2026-01-01T00:00:05Z",
                "2026-01-01T00:00:10Z",
                "2026-01-01T00:00:15Z"
            ]
        );
        assert!(parse_cron("* * * *").is_err());
        assert!(parse_cron("61 * * * *").is_err());
    }
}
