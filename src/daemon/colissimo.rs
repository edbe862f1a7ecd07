//! The Colissimo feed (`repaero daemon colissimo`): polls La Poste's
//! tracking service ("Suivi" v2, `../shared/specs/colissimo-tracking.md`)
//! for the parcels attached to supplier orders (`repaero order ship`), and
//! keeps in the target:
//! - `shipment_events`: every event once, whatever order the answers list
//!   them in and however many answers repeat them;
//! - `shipments`: the normalised status (from the most recent event of
//!   all those stored), the estimated and the actual delivery dates, when
//!   it was polled and when it is polled next, and why the last poll gave
//!   nothing (unknown parcel, malformed answer, server error…);
//! - `shipment_polls`: every request made, its outcome and reason. The
//!   quota is counted on it, so a restarted daemon (or a second one) knows
//!   what was spent already.
//!
//! A parcel is polled every `poll_interval` until the service says it is
//! final (delivered, or back to its sender), or it is `max_age_days` old,
//! or the service says its number is invalid. Calls keep to `quota` per
//! `quota_window` and `min_gap` apart; a 429 pauses every call until its
//! `Retry-After` (or a doubling pause without one); a 5xx or a timeout is
//! retried `max_retries` times, then the parcel waits `retry_interval`;
//! a 401 is a configuration error: no call is made again until the daemon
//! is restarted (with the key fixed).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::Value as Json;

use super::{Backoff, BoxFuture, Feed, FeedContext, feed_table};
use crate::batch::Value;
use crate::config::Config;
use crate::config::mapping::ColumnType;
use crate::db::{Conn, Dialect};
use crate::error::{Error, Result};
use crate::sink::Sink;
use crate::stock::orders::{
    self, ORDERS, SHIPMENT_EVENTS, SHIPMENT_POLLS, SHIPMENTS, at, insert_sql, utc,
};

/// What is allowed for `lang` (labels are translated, codes are not).
const LANGS: &[&str] = &["fr_FR", "en_GB", "de_DE", "es_ES", "it_IT", "nl_NL"];

/// A call counts in the quota this much longer than the window: the
/// service's clock is not ours (the network's delays are covered by
/// counting a call from its answer).
const QUOTA_MARGIN: Duration = Duration::from_millis(100);

/// `[daemons.colissimo]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColissimoConfig {
    /// The Suivi v2 base URL (`…/suivi/v2`); a parcel is
    /// `GET {base_url}/idships/{number}`.
    #[serde(default = "ColissimoConfig::default_base_url")]
    pub base_url: String,
    /// The `X-Okapi-Key`: from the environment (`api_key = "${LAPOSTE_OKAPI_KEY}"`).
    pub api_key: String,
    #[serde(default = "ColissimoConfig::default_lang")]
    pub lang: String,
    /// Seconds between two polls of a parcel (default 3 h).
    #[serde(default = "ColissimoConfig::default_poll_interval")]
    pub poll_interval: f64,
    /// Seconds before a parcel whose poll gave nothing is polled again.
    #[serde(default = "ColissimoConfig::default_retry_interval")]
    pub retry_interval: f64,
    /// At most `quota` calls in any `quota_window` seconds.
    #[serde(default = "ColissimoConfig::default_quota")]
    pub quota: u32,
    #[serde(default = "ColissimoConfig::default_quota_window")]
    pub quota_window: f64,
    /// Seconds between two calls, at least.
    #[serde(default = "ColissimoConfig::default_min_gap")]
    pub min_gap: f64,
    /// Seconds an answer may take.
    #[serde(default = "ColissimoConfig::default_timeout")]
    pub timeout: f64,
    /// Retries of a call that got a 5xx or no answer, before the parcel
    /// waits `retry_interval`.
    #[serde(default = "ColissimoConfig::default_max_retries")]
    pub max_retries: u32,
    /// The pause before the first such retry, in seconds (doubling).
    #[serde(default = "ColissimoConfig::default_retry_delay")]
    pub retry_delay: f64,
    /// After a 429 without `Retry-After`: the first pause, doubling up to
    /// `rate_limit_pause_max` while 429s follow.
    #[serde(default = "ColissimoConfig::default_rate_limit_pause")]
    pub rate_limit_pause: f64,
    #[serde(default = "ColissimoConfig::default_rate_limit_pause_max")]
    pub rate_limit_pause_max: f64,
    /// A parcel not final this many days after it entered the network (or
    /// was attached) is no longer polled.
    #[serde(default = "ColissimoConfig::default_max_age_days")]
    pub max_age_days: f64,
    /// The longest sleep when nothing is due (a parcel just attached waits
    /// at most this long).
    #[serde(default = "ColissimoConfig::default_idle")]
    pub idle: f64,
    /// Days `shipment_polls` keeps its rows.
    #[serde(default = "ColissimoConfig::default_keep_polls_days")]
    pub keep_polls_days: f64,
}

impl ColissimoConfig {
    fn default_base_url() -> String {
        "https://api.laposte.fr/suivi/v2".into()
    }
    fn default_lang() -> String {
        "fr_FR".into()
    }
    fn default_poll_interval() -> f64 {
        3.0 * 3600.0
    }
    fn default_retry_interval() -> f64 {
        900.0
    }
    fn default_quota() -> u32 {
        100
    }
    fn default_quota_window() -> f64 {
        60.0
    }
    fn default_min_gap() -> f64 {
        1.0
    }
    fn default_timeout() -> f64 {
        10.0
    }
    fn default_max_retries() -> u32 {
        3
    }
    fn default_retry_delay() -> f64 {
        2.0
    }
    fn default_rate_limit_pause() -> f64 {
        30.0
    }
    fn default_rate_limit_pause_max() -> f64 {
        900.0
    }
    fn default_max_age_days() -> f64 {
        45.0
    }
    fn default_idle() -> f64 {
        60.0
    }
    fn default_keep_polls_days() -> f64 {
        30.0
    }

    /// `[daemons.colissimo]` of `cfg`, checked.
    pub fn from_config(cfg: &Config) -> Result<ColissimoConfig> {
        let table = feed_table(cfg, "colissimo");
        let c: ColissimoConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    Error::config(format!("[daemons.colissimo]: {}", e.message()))
                })?;
        let bad = |m: &str| Err(Error::config(format!("[daemons.colissimo]: {m}")));
        if c.api_key.trim().is_empty() {
            return bad(
                "api_key is empty: set it from the environment, api_key = \"${LAPOSTE_OKAPI_KEY}\"",
            );
        }
        if !(c.base_url.starts_with("https://") || c.base_url.starts_with("http://")) {
            return bad("base_url must be an http:// or https:// URL");
        }
        if !LANGS.contains(&c.lang.as_str()) {
            return bad(&format!("lang must be one of {}", LANGS.join(", ")));
        }
        let positive = [
            ("poll_interval", c.poll_interval),
            ("retry_interval", c.retry_interval),
            ("quota_window", c.quota_window),
            ("timeout", c.timeout),
            ("rate_limit_pause", c.rate_limit_pause),
            ("max_age_days", c.max_age_days),
            ("idle", c.idle),
            ("keep_polls_days", c.keep_polls_days),
        ];
        for (k, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return bad(&format!("{k} must be a number of seconds (days) above 0"));
            }
        }
        let non_negative = |v: f64| v.is_finite() && v >= 0.0;
        if !(non_negative(c.min_gap) && non_negative(c.retry_delay)) {
            return bad("min_gap and retry_delay must be 0 or more seconds");
        }
        if c.rate_limit_pause_max < c.rate_limit_pause {
            return bad("rate_limit_pause_max must be at least rate_limit_pause");
        }
        if c.quota == 0 {
            return bad("quota must be at least 1 call per quota_window");
        }
        if c.keep_polls_days * 86400.0 < c.quota_window {
            return bad("keep_polls_days must cover quota_window");
        }
        Ok(c)
    }

    /// A text with the key blotted out (what a server echoes back).
    fn redact(&self, text: &str) -> String {
        if self.api_key.len() >= 4 {
            text.replace(&self.api_key, "***")
        } else {
            text.to_string()
        }
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn chrono_secs(s: f64) -> chrono::Duration {
    chrono::Duration::milliseconds((s * 1000.0) as i64)
}

// ---------------------------------------------------------------------------
// The service's answers.

/// One tracking event, as an answer gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at: DateTime<Utc>,
    /// As the service wrote it.
    pub date: String,
    pub code: String,
    pub label: Option<String>,
    /// `order`: higher is more recent.
    pub seq: Option<i64>,
}

/// What an answer with tracking data says.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub is_final: bool,
    pub entry_date: Option<DateTime<Utc>>,
    pub estimated: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub events: Vec<Event>,
    /// The highest timeline step reached (1 taken over … 5 delivered).
    pub step: Option<i64>,
    pub return_code: String,
}

/// An answer of the service, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Tracked(Snapshot),
    /// 404 / returnCode 104, 105…: not known (yet). Not an error for the
    /// parcel: polled again later.
    NotFound {
        code: String,
        message: String,
    },
    /// 400: the number is not one; not polled again.
    Invalid {
        message: String,
    },
    /// 401 / 403: the key.
    Unauthorized {
        status: u16,
        message: String,
    },
    /// 429: the quota.
    RateLimited {
        retry_after: Option<Duration>,
    },
    /// 5xx, no answer in time, connection refused: retried.
    Upstream {
        status: Option<u16>,
        reason: String,
    },
    /// An answer that is not what the service's schema says.
    Malformed {
        status: u16,
        reason: String,
    },
}

impl Answer {
    /// The outcome word of `shipment_polls`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Answer::Tracked(s) if s.is_final => "final",
            Answer::Tracked(_) => "ok",
            Answer::NotFound { .. } => "not_found",
            Answer::Invalid { .. } => "invalid_number",
            Answer::Unauthorized { .. } => "unauthorized",
            Answer::RateLimited { .. } => "rate_limited",
            Answer::Upstream { status: None, .. } => "timeout",
            Answer::Upstream { .. } => "upstream",
            Answer::Malformed { .. } => "malformed",
        }
    }

    /// Why, in words (none for tracking data).
    pub fn reason(&self) -> Option<String> {
        match self {
            Answer::Tracked(_) => None,
            Answer::NotFound { code, message } => {
                Some(format!("unknown parcel (returnCode {code}): {message}"))
            }
            Answer::Invalid { message } => Some(format!("invalid parcel number: {message}")),
            Answer::Unauthorized { status, message } => Some(format!(
                "HTTP {status}: the API key was refused{}",
                if message.is_empty() {
                    String::new()
                } else {
                    format!(" ({message})")
                }
            )),
            Answer::RateLimited { retry_after } => Some(match retry_after {
                Some(d) => format!("HTTP 429: quota exceeded, Retry-After {} s", d.as_secs()),
                None => "HTTP 429: quota exceeded, no Retry-After".into(),
            }),
            Answer::Upstream { status, reason } => Some(match status {
                Some(s) => format!("HTTP {s}: {reason}"),
                None => reason.clone(),
            }),
            Answer::Malformed { status, reason } => {
                Some(format!("malformed answer (HTTP {status}): {reason}"))
            }
        }
    }
}

/// A date of the service: with an offset, or without one (then
/// Europe/Paris), with or without a fraction of a second.
pub fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.with_timezone(&Utc));
    }
    let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]
        .iter()
        .find_map(|f| {
            NaiveDateTime::parse_from_str(t, f).ok().or_else(|| {
                chrono::NaiveDate::parse_from_str(t, f)
                    .ok()
                    .map(|d| d.and_time(chrono::NaiveTime::MIN))
            })
        })?;
    chrono_tz::Europe::Paris
        .from_local_datetime(&naive)
        .earliest()
        .map(|d| d.with_timezone(&Utc))
}

/// The normalised status of a Suivi v2 event code; `None` for a code
/// repaero does not know.
pub fn status_of(code: &str) -> Option<&'static str> {
    Some(match code {
        "DR1" => "LabelCreated",
        "PC1" | "PC2" => "TakenOver",
        "ET1" | "ET2" | "ET3" | "ET4" | "EP1" | "DO1" | "DO2" | "PB2" => "InTransit",
        "DO3" | "PB1" => "Exception",
        "MD2" => "OutForDelivery",
        "AG1" => "AvailableForPickup",
        "ND1" | "DI3" => "DeliveryFailed",
        "RE1" | "DI2" => "ReturnedToSender",
        "DI1" | "DI0" => "Delivered",
        _ => return None,
    })
}

/// The status a timeline step stands for (when the last code is unknown).
fn step_status(step: i64) -> Option<&'static str> {
    Some(match step {
        1 => "TakenOver",
        2 | 3 => "InTransit",
        4 => "OutForDelivery",
        5 => "Delivered",
        _ => return None,
    })
}

fn text_of(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Read the start of a body for a message.
fn excerpt(body: &[u8]) -> String {
    let t = String::from_utf8_lossy(body);
    let t = t.trim();
    if t.is_empty() {
        return "empty body".into();
    }
    let short: String = t.chars().take(120).collect();
    if short.len() < t.len() {
        format!("{short}…")
    } else {
        short
    }
}

/// `returnMessage` / `message` of an error body, when it has one.
fn message_of(body: &[u8]) -> Option<String> {
    let v: Json = serde_json::from_slice(body).ok()?;
    ["returnMessage", "message", "error"]
        .iter()
        .find_map(|k| v.get(*k).and_then(text_of))
        .map(|m| match v.get("code").and_then(text_of) {
            Some(c) => format!("{c}: {m}"),
            None => m,
        })
}

/// Classify one answer of `GET …/idships/{number}`.
pub fn classify(
    status: u16,
    content_type: Option<&str>,
    retry_after: Option<&str>,
    body: &[u8],
    number: &str,
    now: DateTime<Utc>,
) -> Answer {
    match status {
        200 | 207 => {
            if let Some(ct) = content_type
                && !ct.to_ascii_lowercase().contains("json")
            {
                return Answer::Malformed {
                    status,
                    reason: format!("content type {ct}, not JSON: {}", excerpt(body)),
                };
            }
            let v: Json = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return Answer::Malformed {
                        status,
                        reason: format!("not JSON ({e}): {}", excerpt(body)),
                    };
                }
            };
            // several parcels (207): ours is one item of the array
            let item = match &v {
                Json::Array(items) => items.iter().find(|i| {
                    i.get("idShip")
                        .or_else(|| i.get("shipment").and_then(|s| s.get("idShip")))
                        .and_then(Json::as_str)
                        .is_some_and(|s| s.eq_ignore_ascii_case(number))
                }),
                other => Some(other),
            };
            match item {
                Some(i) => tracked(status, i, number),
                None => Answer::Malformed {
                    status,
                    reason: format!("no item for {number} in the array"),
                },
            }
        }
        400 => Answer::Invalid {
            message: message_of(body).unwrap_or_else(|| excerpt(body)),
        },
        401 | 403 => Answer::Unauthorized {
            status,
            message: message_of(body).unwrap_or_default(),
        },
        404 => {
            let v: Option<Json> = serde_json::from_slice(body).ok();
            Answer::NotFound {
                code: v
                    .as_ref()
                    .and_then(|v| v.get("returnCode"))
                    .and_then(text_of)
                    .unwrap_or_else(|| "404".into()),
                message: message_of(body).unwrap_or_else(|| excerpt(body)),
            }
        }
        429 => Answer::RateLimited {
            retry_after: retry_after.and_then(|r| parse_retry_after(r, now)),
        },
        500..=599 => Answer::Upstream {
            status: Some(status),
            reason: message_of(body).unwrap_or_else(|| excerpt(body)),
        },
        _ => Answer::Malformed {
            status,
            reason: format!("unexpected HTTP status: {}", excerpt(body)),
        },
    }
}

/// `Retry-After`: seconds, or an HTTP date.
pub fn parse_retry_after(text: &str, now: DateTime<Utc>) -> Option<Duration> {
    let t = text.trim();
    if let Ok(s) = t.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let when = DateTime::parse_from_rfc2822(t).ok()?.with_timezone(&Utc);
    Some((when - now).to_std().unwrap_or(Duration::ZERO))
}

/// The body of a 200 (or one item of a 207).
fn tracked(status: u16, v: &Json, number: &str) -> Answer {
    let malformed = |reason: String| Answer::Malformed { status, reason };
    let code = v.get("returnCode").and_then(text_of).unwrap_or_default();
    if !code.is_empty() && !code.starts_with("20") {
        let message = v.get("returnMessage").and_then(text_of).unwrap_or_default();
        return if code == "400" {
            Answer::Invalid { message }
        } else {
            Answer::NotFound { code, message }
        };
    }
    let Some(s) = v.get("shipment").filter(|s| s.is_object()) else {
        return malformed("no `shipment` object".into());
    };
    match s.get("idShip").and_then(Json::as_str) {
        Some(id) if id.eq_ignore_ascii_case(number) => {}
        Some(id) => return malformed(format!("shipment.idShip is {id}, not {number}")),
        None => return malformed("no shipment.idShip".into()),
    }
    let is_final = match s.get("isFinal") {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => *b,
        Some(other) => return malformed(format!("shipment.isFinal is {other}, not a boolean")),
    };
    let date = |key: &str| -> std::result::Result<Option<DateTime<Utc>>, Answer> {
        match s.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(t)) if t.trim().is_empty() => Ok(None),
            Some(Json::String(t)) => parse_date(t)
                .map(Some)
                .ok_or_else(|| malformed(format!("shipment.{key} {t:?} is not a date"))),
            Some(other) => Err(malformed(format!("shipment.{key} is {other}, not a date"))),
        }
    };
    let (entry_date, mut estimated, delivered_at) =
        match (date("entryDate"), date("estimDate"), date("deliveryDate")) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e,
        };
    // events: an array (one object alone is taken as a list of one)
    let raw: Vec<&Json> = match s.get("event") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(a)) => a.iter().collect(),
        Some(o @ Json::Object(_)) => vec![o],
        Some(other) => return malformed(format!("shipment.event is {other}, not a list")),
    };
    let mut events = Vec::with_capacity(raw.len());
    for (i, e) in raw.iter().enumerate() {
        let Some(code) = e.get("code").and_then(text_of).filter(|c| !c.is_empty()) else {
            return malformed(format!("event[{i}] has no code"));
        };
        let Some(date) = e.get("date").and_then(Json::as_str) else {
            return malformed(format!("event[{i}] ({code}) has no date"));
        };
        let Some(when) = parse_date(date) else {
            return malformed(format!("event[{i}] ({code}): {date:?} is not a date"));
        };
        events.push(Event {
            at: when,
            date: date.to_string(),
            code,
            label: e.get("label").and_then(text_of),
            seq: e.get("order").and_then(Json::as_i64),
        });
    }
    // timeline: the highest step reached, and step 5's date as an estimate
    let mut step = None;
    if let Some(Json::Array(steps)) = s.get("timeline") {
        for st in steps {
            let id = st.get("id").and_then(Json::as_i64);
            if st.get("status").and_then(Json::as_bool) == Some(true) {
                step = step.max(id);
            }
            if id == Some(5)
                && estimated.is_none()
                && !is_final
                && let Some(d) = st.get("date").and_then(Json::as_str).and_then(parse_date)
            {
                estimated = Some(d);
            }
        }
    }
    events.sort_by_key(|e| (e.at, e.seq));
    Answer::Tracked(Snapshot {
        is_final,
        entry_date,
        estimated,
        delivered_at,
        events,
        step,
        return_code: if code.is_empty() { "200".into() } else { code },
    })
}

/// The status of a parcel from the events stored (ascending) and the last
/// answer; `previous` when nothing says more.
pub fn derive_status(events: &[Event], snap: &Snapshot, previous: &str) -> String {
    let last = events.last();
    let of_last = last.and_then(|e| status_of(&e.code));
    if let Some(e) = last
        && of_last.is_none()
    {
        tracing::warn!(
            code = e.code,
            "Colissimo: unknown event code; status taken from the timeline"
        );
    }
    if snap.is_final {
        return if of_last == Some("ReturnedToSender") {
            "ReturnedToSender".into()
        } else {
            "Delivered".into()
        };
    }
    of_last
        .or_else(|| snap.step.and_then(step_status))
        .map(str::to_string)
        .unwrap_or_else(|| previous.to_string())
}

// ---------------------------------------------------------------------------
// The target.

/// A parcel to poll.
#[derive(Debug, Clone)]
struct Open {
    number: String,
    attached_at: Option<DateTime<Utc>>,
    entry_date: Option<DateTime<Utc>>,
    next_poll_at: Option<DateTime<Utc>>,
}

fn load_open(conn: &mut dyn Conn) -> Result<Vec<Open>> {
    let d = conn.dialect();
    let q = |c: &str| d.quote(c);
    let rows = conn.query(
        &format!(
            "SELECT {}, {}, {}, {} FROM {} WHERE {} = 'open'",
            q("tracking_number"),
            q("attached_at"),
            q("entry_date"),
            q("next_poll_at"),
            q(SHIPMENTS),
            q("poll_state")
        ),
        &[],
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some(Open {
                number: r[0].clone()?,
                attached_at: utc(&r[1]),
                entry_date: utc(&r[2]),
                next_poll_at: utc(&r[3]),
            })
        })
        .collect())
}

/// One row of `shipment_polls`.
struct Call {
    at: DateTime<Utc>,
    number: String,
    attempt: u32,
    http_status: Option<u16>,
    outcome: &'static str,
    reason: Option<String>,
    retry_at: Option<DateTime<Utc>>,
}

fn record_call(conn: &mut dyn Conn, c: &Call) -> Result<()> {
    let d = conn.dialect();
    conn.execute(
        &insert_sql(d, &orders::shipment_polls_def()),
        &[
            at(c.at),
            Value::Text(c.number.clone()),
            Value::Int(c.attempt as i64),
            c.http_status.map_or(Value::Null, |s| Value::Int(s as i64)),
            Value::Text(c.outcome.to_string()),
            c.reason.clone().map_or(Value::Null, Value::Text),
            c.retry_at.map_or(Value::Null, at),
        ],
    )?;
    Ok(())
}

/// The calls since an instant (oldest first) and the latest `retry_at`
/// still ahead.
type Spent = (Vec<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The calls of the last `window` (their instants, oldest first) and the
/// latest `retry_at` still ahead.
fn spent(conn: &mut dyn Conn, since: DateTime<Utc>, now: DateTime<Utc>) -> Result<Spent> {
    let d = conn.dialect();
    let rows = conn.query(
        &format!(
            "SELECT {a}, {r} FROM {t} WHERE {a} > {p1} OR {r} > {p2}",
            a = d.quote("at"),
            r = d.quote("retry_at"),
            t = d.quote(SHIPMENT_POLLS),
            p1 = d.param(1, ColumnType::Datetime),
            p2 = d.param(2, ColumnType::Datetime),
        ),
        &[at(since), at(now)],
    )?;
    let mut calls: Vec<DateTime<Utc>> = rows
        .iter()
        .filter_map(|r| utc(&r[0]))
        .filter(|t| *t > since)
        .collect();
    calls.sort();
    let pause = rows.iter().filter_map(|r| utc(&r[1])).max();
    Ok((calls, pause.filter(|p| *p > now)))
}

/// `INSERT` an event unless the parcel has it already; 1 when new.
fn insert_event(conn: &mut dyn Conn, number: &str, e: &Event, now: DateTime<Utc>) -> Result<u64> {
    let d = conn.dialect();
    let def = orders::shipment_events_def();
    let values = vec![
        Value::Text(number.to_string()),
        at(e.at),
        Value::Text(e.code.clone()),
        e.label.clone().map_or(Value::Null, Value::Text),
        status_of(&e.code).map_or(Value::Null, |s| Value::Text(s.into())),
        e.seq.map_or(Value::Null, Value::Int),
        Value::Text(e.date.clone()),
        at(now),
    ];
    let sql = match d {
        Dialect::Sqlite | Dialect::Postgres => format!(
            "{} ON CONFLICT ({}, {}, {}) DO NOTHING",
            insert_sql(d, &def),
            d.quote("tracking_number"),
            d.quote("event_at"),
            d.quote("code")
        ),
        Dialect::Oracle => {
            let cols: Vec<String> = def.columns.iter().map(|c| d.quote(&c.name)).collect();
            let select: Vec<String> = def
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{} AS {}", d.param(i + 1, c.ty), d.quote(&c.name)))
                .collect();
            let on: Vec<String> = ["tracking_number", "event_at", "code"]
                .iter()
                .map(|k| format!("t.{0} = s.{0}", d.quote(k)))
                .collect();
            let from_s: Vec<String> = cols.iter().map(|c| format!("s.{c}")).collect();
            format!(
                "MERGE INTO {} t USING (SELECT {} FROM dual) s ON ({}) WHEN NOT MATCHED THEN INSERT ({}) VALUES ({})",
                d.quote(&def.name),
                select.join(", "),
                on.join(" AND "),
                cols.join(", "),
                from_s.join(", ")
            )
        }
    };
    conn.execute(&sql, &values)
}

/// The parcel's events as stored, oldest first.
fn stored_events(conn: &mut dyn Conn, number: &str) -> Result<Vec<Event>> {
    let d = conn.dialect();
    let q = |c: &str| d.quote(c);
    let rows = conn.query(
        &format!(
            "SELECT {}, {}, {}, {}, {} FROM {} WHERE {} = {}",
            q("event_at"),
            q("code"),
            q("label"),
            q("seq"),
            q("event_date"),
            q(SHIPMENT_EVENTS),
            q("tracking_number"),
            d.param(1, ColumnType::Text)
        ),
        &[Value::Text(number.to_string())],
    )?;
    let mut events: Vec<Event> = rows
        .into_iter()
        .filter_map(|r| {
            Some(Event {
                at: utc(&r[0])?,
                code: r[1].clone()?,
                label: r[2].clone(),
                seq: crate::stock::int(&r[3]),
                date: r[4].clone().unwrap_or_default(),
            })
        })
        .collect();
    events.sort_by_key(|e| (e.at, e.seq));
    Ok(events)
}

/// What applying an answer changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub new_events: u64,
    pub status: String,
    pub is_final: bool,
}

/// Keep an answer with tracking data: its new events, the parcel's state,
/// the call; the order's status when its parcels are all final. One
/// transaction.
fn apply(
    sink: &mut dyn Sink,
    cfg: &ColissimoConfig,
    number: &str,
    snap: &Snapshot,
    call: &Call,
) -> Result<Applied> {
    sink.begin()?;
    let conn = sink.conn()?;
    let d = conn.dialect();
    let q = |c: &str| d.quote(c);
    let now = call.at;
    let mut new_events = 0;
    for e in &snap.events {
        new_events += insert_event(conn, number, e, now)?;
    }
    let events = stored_events(conn, number)?;
    let prev = conn
        .query(
            &format!(
                "SELECT {}, {}, {} FROM {} WHERE {} = {}",
                q("status"),
                q("estimated_delivery"),
                q("order_id"),
                q(SHIPMENTS),
                q("tracking_number"),
                d.param(1, ColumnType::Text)
            ),
            &[Value::Text(number.to_string())],
        )?
        .into_iter()
        .next()
        .ok_or_else(|| Error::runtime(format!("parcel {number} is gone from {SHIPMENTS}")))?;
    let previous = prev[0].clone().unwrap_or_else(|| "Unknown".into());
    let status = derive_status(&events, snap, &previous);
    let estimated = snap.estimated.or_else(|| utc(&prev[1]));
    let last = events.last();
    let delivered_at = snap
        .delivered_at
        .or_else(|| snap.is_final.then(|| last.map(|e| e.at)).flatten());
    let (poll_state, next) = if snap.is_final {
        ("final", None)
    } else {
        ("open", Some(now + chrono_secs(cfg.poll_interval)))
    };
    let sets = [
        ("status", ColumnType::Text, Value::Text(status.clone())),
        (
            "poll_state",
            ColumnType::Text,
            Value::Text(poll_state.into()),
        ),
        (
            "entry_date",
            ColumnType::Datetime,
            snap.entry_date.map_or(Value::Null, at),
        ),
        (
            "estimated_delivery",
            ColumnType::Datetime,
            estimated.map_or(Value::Null, at),
        ),
        (
            "delivered_at",
            ColumnType::Datetime,
            delivered_at.map_or(Value::Null, at),
        ),
        (
            "last_event_code",
            ColumnType::Text,
            last.map_or(Value::Null, |e| Value::Text(e.code.clone())),
        ),
        (
            "last_event_label",
            ColumnType::Text,
            last.and_then(|e| e.label.clone())
                .map_or(Value::Null, Value::Text),
        ),
        (
            "last_event_at",
            ColumnType::Datetime,
            last.map_or(Value::Null, |e| at(e.at)),
        ),
        (
            "events",
            ColumnType::Integer,
            Value::Int(events.len() as i64),
        ),
        ("last_polled_at", ColumnType::Datetime, at(now)),
        (
            "next_poll_at",
            ColumnType::Datetime,
            next.map_or(Value::Null, at),
        ),
        (
            "return_code",
            ColumnType::Text,
            Value::Text(snap.return_code.clone()),
        ),
        ("last_error_kind", ColumnType::Text, Value::Null),
        ("last_error", ColumnType::Text, Value::Null),
        ("last_error_at", ColumnType::Datetime, Value::Null),
    ];
    update_shipment(conn, number, &sets, true, false)?;
    record_call(conn, call)?;
    if snap.is_final
        && let Some(order) = prev[2].clone()
    {
        close_order(conn, &order)?;
    }
    sink.commit()?;
    Ok(Applied {
        new_events,
        status,
        is_final: snap.is_final,
    })
}

/// `UPDATE shipments SET …, polls = polls + 1 [, failed_polls = …]`.
fn update_shipment(
    conn: &mut dyn Conn,
    number: &str,
    sets: &[(&str, ColumnType, Value)],
    polled: bool,
    failed: bool,
) -> Result<()> {
    let d = conn.dialect();
    let mut parts: Vec<String> = sets
        .iter()
        .enumerate()
        .map(|(i, (c, ty, _))| format!("{} = {}", d.quote(c), d.param(i + 1, *ty)))
        .collect();
    for (col, yes) in [("polls", polled), ("failed_polls", failed)] {
        if yes {
            parts.push(format!("{0} = {0} + 1", d.quote(col)));
        }
    }
    let mut values: Vec<Value> = sets.iter().map(|(_, _, v)| v.clone()).collect();
    values.push(Value::Text(number.to_string()));
    conn.execute(
        &format!(
            "UPDATE {} SET {} WHERE {} = {}",
            d.quote(SHIPMENTS),
            parts.join(", "),
            d.quote("tracking_number"),
            d.param(values.len(), ColumnType::Text)
        ),
        &values,
    )?;
    Ok(())
}

/// An order whose parcels are all final: `delivered`, or `returned` when
/// one went back to its sender.
fn close_order(conn: &mut dyn Conn, order: &str) -> Result<()> {
    let d = conn.dialect();
    let q = |c: &str| d.quote(c);
    let rows = conn.query(
        &format!(
            "SELECT {}, {} FROM {} WHERE {} = {}",
            q("poll_state"),
            q("status"),
            q(SHIPMENTS),
            q("order_id"),
            d.param(1, ColumnType::Text)
        ),
        &[Value::Text(order.to_string())],
    )?;
    if rows.iter().any(|r| r[0].as_deref() != Some("final")) {
        return Ok(());
    }
    let status = if rows
        .iter()
        .any(|r| r[1].as_deref() == Some("ReturnedToSender"))
    {
        "returned"
    } else {
        "delivered"
    };
    conn.execute(
        &format!(
            "UPDATE {} SET {} = {} WHERE {} = {}",
            q(ORDERS),
            q("status"),
            d.param(1, ColumnType::Text),
            q("id"),
            d.param(2, ColumnType::Text)
        ),
        &[Value::Text(status.into()), Value::Text(order.to_string())],
    )?;
    Ok(())
}

/// Keep a poll that gave no tracking data: the call, and on the parcel
/// why, when it is polled again (or that it is not: `poll_state`), and its
/// status when the answer says one (`NotFound`, `InvalidNumber`).
fn record_failure(
    sink: &mut dyn Sink,
    number: &str,
    call: &Call,
    status: Option<&str>,
    poll_state: &str,
    next: Option<DateTime<Utc>>,
) -> Result<()> {
    sink.begin()?;
    let conn = sink.conn()?;
    let mut sets = vec![
        (
            "poll_state",
            ColumnType::Text,
            Value::Text(poll_state.into()),
        ),
        ("last_polled_at", ColumnType::Datetime, at(call.at)),
        (
            "next_poll_at",
            ColumnType::Datetime,
            next.map_or(Value::Null, at),
        ),
        (
            "last_error_kind",
            ColumnType::Text,
            Value::Text(call.outcome.into()),
        ),
        (
            "last_error",
            ColumnType::Text,
            call.reason.clone().map_or(Value::Null, Value::Text),
        ),
        ("last_error_at", ColumnType::Datetime, at(call.at)),
    ];
    if let Some(s) = status {
        sets.push(("status", ColumnType::Text, Value::Text(s.into())));
    }
    let failed = !matches!(call.outcome, "not_found");
    update_shipment(conn, number, &sets, true, failed)?;
    record_call(conn, call)?;
    sink.commit()
}

/// A parcel no longer polled without a call: too old, or a number that
/// cannot be one.
fn retire(sink: &mut dyn Sink, number: &str, poll_state: &str, reason: &str) -> Result<()> {
    sink.begin()?;
    let conn = sink.conn()?;
    let now = Utc::now();
    let mut sets = vec![
        (
            "poll_state",
            ColumnType::Text,
            Value::Text(poll_state.into()),
        ),
        ("next_poll_at", ColumnType::Datetime, Value::Null),
        (
            "last_error_kind",
            ColumnType::Text,
            Value::Text(poll_state.into()),
        ),
        ("last_error", ColumnType::Text, Value::Text(reason.into())),
        ("last_error_at", ColumnType::Datetime, at(now)),
    ];
    if poll_state == "invalid" {
        sets.push((
            "status",
            ColumnType::Text,
            Value::Text("InvalidNumber".into()),
        ));
    }
    update_shipment(conn, number, &sets, false, false)?;
    sink.commit()
}

// ---------------------------------------------------------------------------
// The feed.

/// The pace of the calls, between polls (in memory: a hint; the quota and
/// the pauses themselves are in `shipment_polls`).
struct Pace {
    last_call: Option<Instant>,
    rate_limited: Backoff,
}

/// The Colissimo feed.
pub struct Colissimo {
    cfg: ColissimoConfig,
    /// Set by a 401: no call is made again in this process.
    refused: Mutex<Option<String>>,
    pace: Mutex<Pace>,
}

/// The end of one poll.
enum Polled {
    Done,
    Stopping,
}

impl Colissimo {
    pub fn new(cfg: &Config) -> Result<Colissimo> {
        let c = ColissimoConfig::from_config(cfg)?;
        let rate_limited = Backoff::new(c.rate_limit_pause, c.rate_limit_pause_max);
        Ok(Colissimo {
            cfg: c,
            refused: Mutex::new(None),
            pace: Mutex::new(Pace {
                last_call: None,
                rate_limited,
            }),
        })
    }

    fn client(&self) -> Result<reqwest::Client> {
        // one TLS stack (ring), the web's roots: no process-wide provider needed
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::runtime(format!("Colissimo: TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(secs(self.cfg.timeout))
            .build()
            .map_err(|e| Error::runtime(format!("Colissimo: HTTP client: {e}")))
    }

    /// Wait until a call is allowed: no pause (429) ahead, fewer than
    /// `quota` calls in the window, `min_gap` since the last one. True
    /// when a stop came meanwhile.
    async fn wait_turn(&self, ctx: &FeedContext) -> Result<bool> {
        let window = chrono_secs(self.cfg.quota_window)
            + chrono::Duration::from_std(QUOTA_MARGIN).unwrap_or_default();
        let quota = self.cfg.quota as usize;
        loop {
            if ctx.stopping() {
                return Ok(true);
            }
            let now = Utc::now();
            let since = now - window;
            let (calls, pause) = ctx
                .db
                .call(move |sink| spent(sink.conn()?, since, now))
                .await?;
            ctx.detail("calls_in_window", calls.len().into());
            ctx.detail(
                "paused_until",
                pause.map_or(Json::Null, |p| Json::String(p.to_rfc3339())),
            );
            let mut until: Option<DateTime<Utc>> = pause;
            if calls.len() >= quota {
                let free = calls[calls.len() - quota] + window;
                until = until.max(Some(free));
            }
            let gap = self
                .pace
                .lock()
                .ok()
                .and_then(|p| p.last_call)
                .map(|l| secs(self.cfg.min_gap).saturating_sub(l.elapsed()))
                .unwrap_or(Duration::ZERO);
            let wait = match until {
                Some(t) if t > now => (t - now).to_std().unwrap_or(Duration::ZERO).max(gap),
                _ => gap,
            };
            if wait.is_zero() {
                return Ok(false);
            }
            if ctx.sleep(wait).await {
                return Ok(true);
            }
        }
    }

    /// One request; what came back, classified.
    async fn fetch(&self, client: &reqwest::Client, number: &str) -> Answer {
        // the number is letters and digits, the language one of LANGS
        let url = format!(
            "{}/idships/{number}?lang={}",
            self.cfg.base_url.trim_end_matches('/'),
            self.cfg.lang
        );
        let sent = client
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .header("X-Okapi-Key", &self.cfg.api_key)
            .send()
            .await;
        let upstream = |e: reqwest::Error| Answer::Upstream {
            status: None,
            reason: if e.is_timeout() {
                format!("no answer within {} s (timeout)", self.cfg.timeout)
            } else {
                format!("no answer: {}", crate::error::chain(&e))
            },
        };
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return upstream(e),
        };
        let status = resp.status().as_u16();
        let header = |h: reqwest::header::HeaderName| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let retry_after = header(reqwest::header::RETRY_AFTER);
        match resp.bytes().await {
            Ok(body) => classify(
                status,
                content_type.as_deref(),
                retry_after.as_deref(),
                &body,
                number,
                Utc::now(),
            ),
            Err(e) => upstream(e),
        }
    }

    /// Poll one parcel: wait for a turn, call, retry a 5xx or a timeout up
    /// to `max_retries` times, wait out 429s, keep what came back.
    async fn poll(
        &self,
        ctx: &FeedContext,
        client: &reqwest::Client,
        number: &str,
    ) -> Result<Polled> {
        let mut attempt = 0u32;
        loop {
            if self.wait_turn(ctx).await? {
                return Ok(Polled::Stopping);
            }
            attempt += 1;
            if let Ok(mut p) = self.pace.lock() {
                p.last_call = Some(Instant::now());
            }
            let answer = self.fetch(client, number).await;
            // a call counts from its answer (or the timeout): the latest
            // instant the service may have counted it, whatever the delays
            let answered_at = Utc::now();
            let http_status = match &answer {
                Answer::Tracked(_) => Some(200),
                Answer::NotFound { .. } => Some(404),
                Answer::Invalid { .. } => Some(400),
                Answer::Unauthorized { status, .. } | Answer::Malformed { status, .. } => {
                    Some(*status)
                }
                Answer::RateLimited { .. } => Some(429),
                Answer::Upstream { status, .. } => *status,
            };
            let reason = answer.reason().map(|r| self.cfg.redact(&r));
            let mut call = Call {
                at: answered_at,
                number: number.to_string(),
                attempt,
                http_status,
                outcome: answer.outcome(),
                reason: reason.clone(),
                retry_at: None,
            };
            if !matches!(answer, Answer::RateLimited { .. })
                && let Ok(mut p) = self.pace.lock()
            {
                p.rate_limited.reset();
            }
            let owned = number.to_string();
            let cfg = self.cfg.clone();
            match answer {
                Answer::Tracked(snap) => {
                    let done = ctx
                        .db
                        .call(move |sink| apply(sink, &cfg, &owned, &snap, &call))
                        .await?;
                    tracing::info!(
                        parcel = number,
                        status = done.status,
                        new_events = done.new_events,
                        "Colissimo: polled"
                    );
                    ctx.progress(1, 0);
                    return Ok(Polled::Done);
                }
                Answer::NotFound { .. } | Answer::Malformed { .. } | Answer::Invalid { .. } => {
                    let (status, state, next) = match call.outcome {
                        "not_found" => (
                            Some("NotFound"),
                            "open",
                            Some(answered_at + chrono_secs(self.cfg.poll_interval)),
                        ),
                        "invalid_number" => (Some("InvalidNumber"), "invalid", None),
                        _ => (
                            None,
                            "open",
                            Some(answered_at + chrono_secs(self.cfg.retry_interval)),
                        ),
                    };
                    tracing::warn!(
                        parcel = number,
                        "Colissimo: {}",
                        reason.as_deref().unwrap_or("")
                    );
                    let failed = call.outcome != "not_found";
                    ctx.db
                        .call(move |sink| record_failure(sink, &owned, &call, status, state, next))
                        .await?;
                    if failed {
                        ctx.progress(0, 1);
                    } else {
                        ctx.progress(1, 0);
                    }
                    return Ok(Polled::Done);
                }
                Answer::Unauthorized { .. } => {
                    ctx.db
                        .call(move |sink| record_call(sink.conn()?, &call))
                        .await?;
                    let message = format!(
                        "Colissimo refused the API key ({}); check [daemons.colissimo] api_key (set from the environment) and restart the daemon: no call is made until then",
                        reason.unwrap_or_default()
                    );
                    if let Ok(mut r) = self.refused.lock() {
                        *r = Some(message.clone());
                    }
                    ctx.detail("refused", Json::String(message.clone()));
                    return Err(Error::config(message));
                }
                Answer::RateLimited { retry_after } => {
                    let pause = match retry_after {
                        Some(d) => d,
                        None => match self.pace.lock() {
                            Ok(mut p) => {
                                // at least half the bound: a pause, not a retry at once
                                let bound = p.rate_limited.bound();
                                p.rate_limited.next_pause().max(secs(bound / 2.0))
                            }
                            Err(_) => secs(self.cfg.rate_limit_pause),
                        },
                    };
                    call.retry_at = Some(
                        answered_at
                            + chrono::Duration::from_std(pause)
                                .unwrap_or_else(|_| chrono::Duration::days(1)),
                    );
                    tracing::warn!(
                        parcel = number,
                        "Colissimo: {}; no call for {:.1} s",
                        reason.as_deref().unwrap_or(""),
                        pause.as_secs_f64()
                    );
                    ctx.db
                        .call(move |sink| record_call(sink.conn()?, &call))
                        .await?;
                    // the same parcel again, after the pause (wait_turn)
                    attempt -= 1;
                    continue;
                }
                Answer::Upstream { .. } => {
                    let last = attempt > self.cfg.max_retries;
                    tracing::warn!(
                        parcel = number,
                        attempt,
                        "Colissimo: {}{}",
                        reason.as_deref().unwrap_or(""),
                        if last {
                            "; giving up for now"
                        } else {
                            "; retrying"
                        }
                    );
                    if last {
                        let next = Some(answered_at + chrono_secs(self.cfg.retry_interval));
                        ctx.db
                            .call(move |sink| {
                                record_failure(sink, &owned, &call, None, "open", next)
                            })
                            .await?;
                        ctx.progress(0, 1);
                        return Ok(Polled::Done);
                    }
                    ctx.db
                        .call(move |sink| record_call(sink.conn()?, &call))
                        .await?;
                    let delay = self.cfg.retry_delay * 2f64.powi(attempt as i32 - 1);
                    if ctx.sleep(secs(delay)).await {
                        return Ok(Polled::Stopping);
                    }
                }
            }
        }
    }

    async fn run_feed(&self, ctx: &FeedContext) -> Result<()> {
        if let Some(m) = self.refused.lock().ok().and_then(|r| r.clone()) {
            return Err(Error::config(m));
        }
        ctx.db
            .call(|sink| {
                sink.begin()?;
                orders::ensure_tables(sink.conn()?)?;
                sink.commit()
            })
            .await?;
        let client = self.client()?;
        let keep = chrono_secs(self.cfg.keep_polls_days * 86400.0);
        loop {
            if ctx.stopping() {
                return Ok(());
            }
            let now = Utc::now();
            let old = now - keep;
            let open = ctx
                .db
                .call(move |sink| {
                    let conn = sink.conn()?;
                    let d = conn.dialect();
                    conn.execute(
                        &format!(
                            "DELETE FROM {} WHERE {} < {}",
                            d.quote(SHIPMENT_POLLS),
                            d.quote("at"),
                            d.param(1, ColumnType::Datetime)
                        ),
                        &[at(old)],
                    )?;
                    load_open(conn)
                })
                .await?;
            let mut due: Vec<&Open> = open
                .iter()
                .filter(|p| p.next_poll_at.is_none_or(|t| t <= now))
                .collect();
            due.sort_by(|a, b| (a.next_poll_at, &a.number).cmp(&(b.next_poll_at, &b.number)));
            ctx.detail("open_parcels", open.len().into());
            ctx.detail("due_parcels", due.len().into());
            if due.is_empty() {
                let wait = open
                    .iter()
                    .filter_map(|p| p.next_poll_at)
                    .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
                    .min()
                    .unwrap_or(secs(self.cfg.idle))
                    .min(secs(self.cfg.idle));
                if ctx.sleep(wait).await {
                    return Ok(());
                }
                continue;
            }
            for p in due {
                if ctx.stopping() {
                    return Ok(());
                }
                let number = p.number.clone();
                let born = p.entry_date.or(p.attached_at).unwrap_or(now);
                if now - born > chrono_secs(self.cfg.max_age_days * 86400.0) {
                    let reason = format!(
                        "not final {} days after {}: no longer polled",
                        self.cfg.max_age_days,
                        orders::local(born)
                    );
                    ctx.db
                        .call(move |sink| retire(sink, &number, "expired", &reason))
                        .await?;
                    continue;
                }
                if orders::tracking_number(&number).as_deref() != Some(number.as_str()) {
                    let reason =
                        "not a parcel number (11 to 15 letters and digits): never sent".to_string();
                    ctx.db
                        .call(move |sink| retire(sink, &number, "invalid", &reason))
                        .await?;
                    ctx.progress(0, 1);
                    continue;
                }
                if let Polled::Stopping = self.poll(ctx, &client, &number).await? {
                    return Ok(());
                }
            }
            ctx.detail("last_cycle_at", Json::String(Utc::now().to_rfc3339()));
        }
    }
}

impl Feed for Colissimo {
    fn name(&self) -> &'static str {
        "colissimo"
    }

    fn run<'a>(&'a self, ctx: &'a FeedContext) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.run_feed(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 3, 12, 12, 0, 0).unwrap()
    }

    const IN_TRANSIT: &str = r#"{"lang":"fr_FR","scope":"open","returnCode":200,"shipment":{
        "idShip":"6A23456789012","holder":4,"product":"colissimo","isFinal":false,
        "entryDate":"2024-03-11T18:42:00+01:00","estimDate":"2024-03-13T00:00:00+01:00",
        "timeline":[{"id":1,"shortLabel":"Pris en charge","status":true,"type":1,"date":"2024-03-11T18:42:00+01:00","country":"FR"},
                    {"id":2,"shortLabel":"En cours","status":true,"type":1},
                    {"id":3,"shortLabel":"Arrivé","status":false,"type":1},
                    {"id":4,"shortLabel":"En livraison","status":false,"type":1},
                    {"id":5,"shortLabel":"Livré","status":false,"type":1}],
        "event":[{"order":3,"date":"2024-03-12T05:10:00+01:00","code":"ET1","label":"En transit"},
                 {"order":2,"date":"2024-03-11T18:42:00+01:00","code":"PC1","label":"Pris en charge"},
                 {"order":1,"date":"2024-03-11T09:05:00+01:00","code":"DR1","label":"Préparé"}]}}"#;

    #[test]
    fn an_answer_in_transit_gives_its_events_oldest_first_and_its_estimate() {
        let a = classify(
            200,
            Some("application/json"),
            None,
            IN_TRANSIT.as_bytes(),
            "6A23456789012",
            now(),
        );
        let Answer::Tracked(s) = a else {
            panic!("{a:?}")
        };
        assert!(!s.is_final);
        let codes: Vec<&str> = s.events.iter().map(|e| e.code.as_str()).collect();
        assert_eq!(codes, ["DR1", "PC1", "ET1"]);
        assert_eq!(
            s.estimated,
            Some(Utc.with_ymd_and_hms(2024, 3, 12, 23, 0, 0).unwrap())
        );
        assert_eq!(s.step, Some(2));
        assert_eq!(derive_status(&s.events, &s, "Unknown"), "InTransit");
    }

    #[test]
    fn dates_with_offsets_across_dst_and_without_offset_parse() {
        let t = |y, mo, d, h, mi| Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap();
        assert_eq!(
            parse_date("2024-03-30T10:00:00+01:00"),
            Some(t(2024, 3, 30, 9, 0))
        );
        assert_eq!(
            parse_date("2024-03-31T10:00:00+02:00"),
            Some(t(2024, 3, 31, 8, 0))
        );
        // no offset: Paris time, winter and summer
        assert_eq!(
            parse_date("2019-04-05T09:09:00.000"),
            Some(t(2019, 4, 5, 7, 9))
        );
        assert_eq!(parse_date("2019-01-05T09:09:00"), Some(t(2019, 1, 5, 8, 9)));
        assert_eq!(parse_date("le 5 avril"), None);
    }

    #[test]
    fn every_error_the_spec_lists_is_classified() {
        let n = "6A99999999999";
        let c = |status, ct: Option<&str>, ra: Option<&str>, body: &str| {
            classify(status, ct, ra, body.as_bytes(), n, now())
        };
        assert_eq!(
            c(
                404,
                Some("application/json"),
                None,
                r#"{"returnCode":104,"returnMessage":"Votre suivi n'est pas encore disponible.","idShip":"6A99999999999"}"#
            ),
            Answer::NotFound {
                code: "104".into(),
                message: "Votre suivi n'est pas encore disponible.".into()
            }
        );
        assert_eq!(
            c(
                400,
                None,
                None,
                r#"{"returnCode":400,"returnMessage":"Numéro invalide"}"#
            ),
            Answer::Invalid {
                message: "Numéro invalide".into()
            }
        );
        assert!(matches!(
            c(401, None, None, "{}"),
            Answer::Unauthorized { status: 401, .. }
        ));
        assert_eq!(
            c(429, None, Some("30"), ""),
            Answer::RateLimited {
                retry_after: Some(Duration::from_secs(30))
            }
        );
        assert_eq!(
            c(429, None, Some("Tue, 12 Mar 2024 12:00:45 GMT"), ""),
            Answer::RateLimited {
                retry_after: Some(Duration::from_secs(45))
            }
        );
        assert_eq!(
            c(429, None, None, ""),
            Answer::RateLimited { retry_after: None }
        );
        assert_eq!(
            c(
                503,
                None,
                None,
                r#"{"code":"SERVICE_UNAVAILABLE","message":"Maintenance"}"#
            ),
            Answer::Upstream {
                status: Some(503),
                reason: "SERVICE_UNAVAILABLE: Maintenance".into()
            }
        );
        assert_eq!(
            c(502, None, None, ""),
            Answer::Upstream {
                status: Some(502),
                reason: "empty body".into()
            }
        );
        assert!(matches!(
            c(200, Some("text/html"), None, "<html>…</html>"),
            Answer::Malformed { status: 200, ref reason } if reason.starts_with("content type text/html")
        ));
        assert!(matches!(
            c(200, Some("application/json"), None, r#"{"returnCode":200,"shipm"#),
            Answer::Malformed { ref reason, .. } if reason.starts_with("not JSON")
        ));
        assert_eq!(
            c(200, Some("application/json"), None, r#"{"returnCode":200}"#),
            Answer::Malformed {
                status: 200,
                reason: "no `shipment` object".into()
            }
        );
        // returnCode 104 in a 200: no tracking data
        assert!(matches!(
            c(200, None, None, r#"{"returnCode":104,"returnMessage":"pas encore"}"#),
            Answer::NotFound { ref code, .. } if code == "104"
        ));
    }

    #[test]
    fn returned_to_sender_is_not_delivered_and_an_unknown_code_falls_back_to_the_timeline() {
        let ev = |d: &str, code: &str, seq| Event {
            at: parse_date(d).unwrap(),
            date: d.into(),
            code: code.into(),
            label: None,
            seq: Some(seq),
        };
        let snap = |is_final, step| Snapshot {
            is_final,
            entry_date: None,
            estimated: None,
            delivered_at: None,
            events: Vec::new(),
            step,
            return_code: "200".into(),
        };
        let back = [
            ev("2024-03-10T10:00:00+01:00", "PC1", 1),
            ev("2024-03-12T10:00:00+01:00", "RE1", 2),
            ev("2024-03-14T10:00:00+01:00", "DI2", 3),
        ];
        assert_eq!(
            derive_status(&back, &snap(true, Some(5)), "InTransit"),
            "ReturnedToSender"
        );
        let odd = [
            ev("2024-03-10T10:00:00+01:00", "PC1", 1),
            ev("2024-03-11T10:00:00+01:00", "ZZZ9", 2),
        ];
        assert_eq!(
            derive_status(&odd, &snap(false, Some(3)), "TakenOver"),
            "InTransit"
        );
        assert_eq!(
            derive_status(&odd, &snap(false, None), "TakenOver"),
            "TakenOver"
        );
        assert_eq!(
            derive_status(&odd, &snap(true, Some(5)), "InTransit"),
            "Delivered"
        );
    }

    #[test]
    fn the_settings_are_checked_and_the_key_is_required() {
        let cfg = |text: &str| {
            Config::from_text(text, "test", std::path::Path::new("."), &[], &|_: &str| {
                None
            })
            .unwrap()
        };
        let err = ColissimoConfig::from_config(&cfg("[daemons.colissimo]\nlang = \"fr_FR\"\n"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("api_key"), "{err}");
        let err =
            ColissimoConfig::from_config(&cfg("[daemons.colissimo]\napi_key = \"k\"\nquota = 0\n"))
                .err()
                .unwrap()
                .to_string();
        assert!(err.contains("quota"), "{err}");
        let ok =
            ColissimoConfig::from_config(&cfg("[daemons.colissimo]\napi_key = \"k\"\n")).unwrap();
        assert_eq!(ok.quota, 100);
        assert_eq!(ok.poll_interval, 10800.0);
        assert_eq!(
            ok.redact("key=k"),
            "key=k",
            "a key this short is not blotted"
        );
    }
}
