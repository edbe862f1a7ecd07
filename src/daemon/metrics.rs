//! `/health` and `/metrics` of a daemon process (`[daemons] metrics =
//! "127.0.0.1:9464"`), from its feeds' heartbeats ([`Beat`]), in the
//! Prometheus text format (version 0.0.4).
//!
//! Every feed gives `up`, `processed`, `failed`, `errors` (runs ended by a
//! failure), the time of its last success and last error. Numbers a feed
//! puts in its heartbeat's details under these keys become named metrics:
//! `rows` (rows written), `messages` (messages handled), `dead_letters`
//! (messages set aside), `lag_seconds`, `queue_depth`; any other number is
//! `repaero_feed_detail{feed, key}`.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use super::Beat;
use crate::error::{Error, Result};

/// A feed as the endpoints see it.
#[derive(Clone)]
pub struct FeedView {
    pub name: &'static str,
    pub beat: Arc<Mutex<Beat>>,
}

/// Bind the endpoints' address (before the feeds start: a wrong or taken
/// address stops the daemon at once).
pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::config(format!(
            "[daemons] metrics = {addr:?}: cannot listen there: {e}"
        ))
    })
}

/// Serve `/health` and `/metrics` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    feeds: Vec<FeedView>,
    mut stop: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(Arc::new(feeds));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!("the metrics endpoint stopped: {e}");
    }
}

fn beats(feeds: &[FeedView]) -> Vec<(&'static str, Beat)> {
    feeds
        .iter()
        .map(|f| (f.name, f.beat.lock().map(|b| b.clone()).unwrap_or_default()))
        .collect()
}

async fn metrics(State(feeds): State<Arc<Vec<FeedView>>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&beats(&feeds)),
    )
}

/// 200 when every feed runs, 503 when one retries or has stopped; the
/// feeds' states as JSON either way.
async fn health(State(feeds): State<Arc<Vec<FeedView>>>) -> impl IntoResponse {
    let beats = beats(&feeds);
    let well = beats.iter().all(|(_, b)| up(b));
    let body = serde_json::json!({
        "status": if well { "ok" } else { "failing" },
        "feeds": beats.iter().map(|(n, b)| (n.to_string(), serde_json::json!({
            "state": b.state,
            "last_success_at": b.last_success_at,
            "last_error_at": b.last_error_at,
            "last_error": b.last_error,
            "processed": b.processed,
            "failed": b.failed,
            "restarts": b.restarts,
        }))).collect::<serde_json::Map<_, _>>(),
    });
    (
        if well {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        axum::Json(body),
    )
}

fn up(b: &Beat) -> bool {
    b.state == "running" || b.state == "starting"
}

/// A label value, escaped as the text format asks.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn seconds(t: &Option<String>) -> Option<f64> {
    t.as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis() as f64 / 1000.0)
}

/// Details that become named metrics: (key, metric, type, help).
const NAMED: &[(&str, &str, &str, &str)] = &[
    (
        "rows",
        "repaero_feed_rows_total",
        "counter",
        "Rows written by the feed since the process started.",
    ),
    (
        "messages",
        "repaero_feed_messages_total",
        "counter",
        "Messages handled by the feed since the process started.",
    ),
    (
        "dead_letters",
        "repaero_feed_dead_letters_total",
        "counter",
        "Messages the feed set aside as dead letters since the process started.",
    ),
    (
        "lag_seconds",
        "repaero_feed_lag_seconds",
        "gauge",
        "How far the feed is behind its source, in seconds.",
    ),
    (
        "queue_depth",
        "repaero_feed_queue_depth",
        "gauge",
        "Messages waiting in the feed's queue.",
    ),
];

/// The metrics of `feeds` in the Prometheus text format.
pub fn render(feeds: &[(&str, Beat)]) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {}", number(v));
        }
    };
    family(
        "repaero_build_info",
        "gauge",
        "The repaero version serving these metrics.",
        vec![(
            format!("{{version=\"{}\"}}", label(env!("CARGO_PKG_VERSION"))),
            1.0,
        )],
    );
    let per_feed = |f: &dyn Fn(&Beat) -> Option<f64>| -> Vec<(String, f64)> {
        feeds
            .iter()
            .filter_map(|(n, b)| f(b).map(|v| (format!("{{feed=\"{}\"}}", label(n)), v)))
            .collect()
    };
    family(
        "repaero_feed_up",
        "gauge",
        "1 while the feed runs, 0 while it retries after a failure or once it stopped.",
        per_feed(&|b| Some(if up(b) { 1.0 } else { 0.0 })),
    );
    family(
        "repaero_feed_processed_total",
        "counter",
        "Units of work the feed did (messages, files, runs) since the process started.",
        per_feed(&|b| Some(b.processed as f64)),
    );
    family(
        "repaero_feed_failed_total",
        "counter",
        "Units of work that failed (set aside with a reason) since the process started.",
        per_feed(&|b| Some(b.failed as f64)),
    );
    family(
        "repaero_feed_errors_total",
        "counter",
        "Runs of the feed ended by an error (each run again after a pause).",
        per_feed(&|b| Some(b.restarts as f64)),
    );
    family(
        "repaero_feed_last_success_timestamp_seconds",
        "gauge",
        "When the feed last did work successfully (Unix time).",
        per_feed(&|b| seconds(&b.last_success_at)),
    );
    family(
        "repaero_feed_last_error_timestamp_seconds",
        "gauge",
        "When the feed last failed (Unix time).",
        per_feed(&|b| seconds(&b.last_error_at)),
    );
    for (key, name, kind, help) in NAMED {
        family(
            name,
            kind,
            help,
            per_feed(&|b| b.details.get(*key).and_then(|v| v.as_f64())),
        );
    }
    let others: Vec<(String, f64)> = feeds
        .iter()
        .flat_map(|(n, b)| {
            b.details
                .iter()
                .filter(|(k, _)| !NAMED.iter().any(|(named, ..)| named == k))
                .filter_map(move |(k, v)| {
                    v.as_f64()
                        .map(|x| (format!("{{feed=\"{}\",key=\"{}\"}}", label(n), label(k)), x))
                })
        })
        .collect();
    family(
        "repaero_feed_detail",
        "gauge",
        "Other numbers a feed reports on its heartbeat, by key.",
        others,
    );
    out
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_name_each_feed_and_its_details() {
        let mut b = Beat {
            state: "running".into(),
            processed: 12,
            failed: 1,
            restarts: 2,
            last_success_at: Some("2026-11-30T10:00:00.500Z".into()),
            ..Beat::default()
        };
        b.details.insert("rows".into(), serde_json::json!(340));
        b.details
            .insert("lag_seconds".into(), serde_json::json!(1.5));
        b.details.insert("odd\"key".into(), serde_json::json!(7));
        b.details
            .insert("next_tick".into(), serde_json::json!("soon"));
        let stopped = Beat {
            state: "retrying".into(),
            ..Beat::default()
        };
        let text = render(&[("schedule", b), ("queue", stopped)]);
        for line in [
            "repaero_feed_up{feed=\"schedule\"} 1",
            "repaero_feed_up{feed=\"queue\"} 0",
            "repaero_feed_processed_total{feed=\"schedule\"} 12",
            "repaero_feed_failed_total{feed=\"schedule\"} 1",
            "repaero_feed_errors_total{feed=\"schedule\"} 2",
            "repaero_feed_last_success_timestamp_seconds{feed=\"schedule\"} 1796032800.5",
            "repaero_feed_rows_total{feed=\"schedule\"} 340",
            "repaero_feed_lag_seconds{feed=\"schedule\"} 1.5",
            "repaero_feed_detail{feed=\"schedule\",key=\"odd\\\"key\"} 7",
            "# TYPE repaero_feed_rows_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        // no sample, no family; text details are not metrics
        assert!(!text.contains("repaero_feed_queue_depth"), "{text}");
        assert!(!text.contains("next_tick"), "{text}");
        assert!(!text.contains("last_error_timestamp"), "{text}");
    }
}
