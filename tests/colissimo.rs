//! Supplier orders and the Colissimo feed.
//!
//! The feed runs against a local double of La Poste's Suivi v2 service
//! (axum on 127.0.0.1) that serves the answers of
//! `../shared/specs/colissimo-tracking.md` §9 from `fixtures/colissimo/`,
//! keyed by parcel: events newest first and shuffled, a late-scanned older
//! event, final states (delivered, returned to the sender), an unknown
//! parcel, an invalid number, malformed bodies (truncated JSON, HTML, the
//! wrong shape), 401, 429 with and without `Retry-After`, 500/502/503/504
//! (HTML, empty, JSON bodies), answers slower than the client's timeout.
//! The double counts every request and the calls in its quota window; the
//! tests compare what the target holds with the expected rows, on SQLite
//! and on PostgreSQL. `order place`, `order ship` and `order list` run
//! through the real binary.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::*;
use serde_json::Value;

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

// ---------------------------------------------------------------------------
// The double.

#[derive(Clone, Debug)]
enum Reply {
    /// A status and a JSON body.
    Json(u16, String),
    /// A status, a content type (or none) and a body.
    Raw(u16, Option<&'static str>, String),
    /// 429, with `Retry-After: n` or without.
    TooMany(Option<u64>),
    /// The reply, after a delay.
    Slow(Duration, Box<Reply>),
}

impl Reply {
    fn status(&self) -> u16 {
        match self {
            Reply::Json(s, _) | Reply::Raw(s, _, _) => *s,
            Reply::TooMany(_) => 429,
            Reply::Slow(_, r) => r.status(),
        }
    }
}

/// A request as the double saw it.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    parcel: String,
    accept: Option<String>,
    key: Option<String>,
    lang: Option<String>,
    status: u16,
}

/// Replies per parcel: played in turn, the last one again and again (or
/// all of them in a loop when `cycle`).
struct Script {
    replies: Vec<Reply>,
    cycle: bool,
    next: usize,
}

struct Double {
    key: String,
    quota: usize,
    window: Duration,
    scripts: Mutex<HashMap<String, Script>>,
    seen: Mutex<Vec<Seen>>,
    /// Requests that came while `quota` others were in the window.
    over_quota: AtomicUsize,
}

impl Double {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self, parcel: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.parcel == parcel)
            .count()
    }

    /// The most calls seen in any window.
    fn max_in_window(&self) -> usize {
        let times: Vec<Instant> = self.seen().iter().map(|s| s.at).collect();
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| t.duration_since(times[i]) < self.window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }
}

async fn idship(
    State(d): State<Arc<Double>>,
    UrlPath(parcel): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let now = Instant::now();
    let get = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let key = get("x-okapi-key");
    let reply = {
        let mut seen = d.seen.lock().unwrap();
        let in_window = seen
            .iter()
            .filter(|s| now.duration_since(s.at) < d.window)
            .count();
        let reply = if key.as_deref() != Some(d.key.as_str()) {
            Reply::Json(
                401,
                r#"{"code":"UNAUTHORIZED","message":"Invalid credentials"}"#.into(),
            )
        } else if in_window >= d.quota {
            d.over_quota.fetch_add(1, Ordering::SeqCst);
            Reply::TooMany(None)
        } else {
            let mut scripts = d.scripts.lock().unwrap();
            match scripts.get_mut(&parcel) {
                None => Reply::Json(
                    404,
                    format!(
                        r#"{{"returnCode":104,"returnMessage":"inconnu","idShip":"{parcel}"}}"#
                    ),
                ),
                Some(s) => {
                    let r = s.replies[s.next.min(s.replies.len() - 1)].clone();
                    s.next += 1;
                    if s.cycle {
                        s.next %= s.replies.len();
                    }
                    r
                }
            }
        };
        seen.push(Seen {
            at: now,
            parcel,
            accept: get("accept"),
            key,
            lang: q.get("lang").cloned(),
            status: reply.status(),
        });
        reply
    };
    render(reply).await
}

async fn render(r: Reply) -> Response {
    match r {
        Reply::Json(s, body) => (
            StatusCode::from_u16(s).unwrap(),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Reply::Raw(s, ct, body) => {
            let mut resp = (StatusCode::from_u16(s).unwrap(), body).into_response();
            resp.headers_mut().remove(header::CONTENT_TYPE);
            if let Some(ct) = ct {
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, ct.parse().unwrap());
            }
            resp
        }
        Reply::TooMany(after) => {
            let mut resp = (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"code":"TOO_MANY_REQUESTS","message":"max quota reached"}"#,
            )
                .into_response();
            if let Some(s) = after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, s.to_string().parse().unwrap());
            }
            resp
        }
        Reply::Slow(d, r) => {
            tokio::time::sleep(d).await;
            Box::pin(render(*r)).await
        }
    }
}

/// Start the double on 127.0.0.1 (a thread of its own); its port.
fn start_double(d: Arc<Double>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new()
                .route("/suivi/v2/idships/{idship}", axum::routing::get(idship))
                .with_state(d);
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    port
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(root().join("fixtures/colissimo").join(name)).unwrap()
}

// The parcels of the scenario, each with its behaviour.
const TRANSIT: &str = "6A23456789012";
const DELIVERED: &str = "6A34567890123";
const RETURNED: &str = "6A45678901234";
const UNKNOWN: &str = "6A99999999999";
const INVALID: &str = "6A00000000000";
const TRUNCATED: &str = "8R11111111111";
const HTML: &str = "8R22222222222";
const SHAPE: &str = "8R33333333333";
const FAILING: &str = "9V11111111111";
const FLAKY: &str = "9V22222222222";
const SLOW: &str = "9V33333333333";
const ODD_CODE: &str = "6C44444444444";
const RETRY_AFTER: &str = "6C55555555555";
const NO_RETRY_AFTER: &str = "6C66666666666";

fn in_transit_as(number: &str) -> Reply {
    Reply::Json(200, fixture("in_transit.json").replace(TRANSIT, number))
}

fn scripts() -> HashMap<String, Script> {
    let s = |replies: Vec<Reply>| Script {
        replies,
        cycle: false,
        next: 0,
    };
    let html = "<html><body><h1>502 Bad Gateway</h1></body></html>".to_string();
    let mut m = HashMap::new();
    m.insert(
        TRANSIT.into(),
        s(vec![
            Reply::Json(200, fixture("in_transit.json")),
            Reply::Json(200, fixture("in_transit_later.json")),
        ]),
    );
    m.insert(
        DELIVERED.into(),
        s(vec![
            Reply::Json(200, fixture("delivered_before.json")),
            Reply::Json(200, fixture("delivered.json")),
        ]),
    );
    m.insert(
        RETURNED.into(),
        s(vec![Reply::Json(200, fixture("returned.json"))]),
    );
    m.insert(
        UNKNOWN.into(),
        s(vec![Reply::Json(404, fixture("unknown.json"))]),
    );
    m.insert(
        INVALID.into(),
        s(vec![Reply::Json(400, fixture("invalid.json"))]),
    );
    let truncated = fixture("in_transit.json").replace(TRANSIT, TRUNCATED);
    m.insert(
        TRUNCATED.into(),
        s(vec![Reply::Json(200, truncated[..300].to_string())]),
    );
    m.insert(
        HTML.into(),
        s(vec![Reply::Raw(
            200,
            Some("text/html; charset=utf-8"),
            "<html><body>Maintenance</body></html>".into(),
        )]),
    );
    m.insert(
        SHAPE.into(),
        s(vec![Reply::Json(200, fixture("no_shipment.json"))]),
    );
    m.insert(
        FAILING.into(),
        Script {
            replies: vec![
                Reply::Raw(500, Some("text/html"), html.clone()),
                Reply::Raw(502, None, String::new()),
                Reply::Json(
                    503,
                    r#"{"code":"SERVICE_UNAVAILABLE","message":"Service momentanément indisponible"}"#
                        .into(),
                ),
                Reply::Raw(504, Some("text/plain"), "Gateway Timeout".into()),
            ],
            cycle: true,
            next: 0,
        },
    );
    m.insert(
        FLAKY.into(),
        s(vec![
            Reply::Raw(500, Some("text/html"), html),
            in_transit_as(FLAKY),
        ]),
    );
    m.insert(
        SLOW.into(),
        s(vec![Reply::Slow(
            Duration::from_secs(2),
            Box::new(in_transit_as(SLOW)),
        )]),
    );
    m.insert(
        ODD_CODE.into(),
        s(vec![Reply::Json(200, fixture("unknown_code.json"))]),
    );
    m.insert(
        RETRY_AFTER.into(),
        s(vec![Reply::TooMany(Some(2)), in_transit_as(RETRY_AFTER)]),
    );
    m.insert(
        NO_RETRY_AFTER.into(),
        s(vec![
            Reply::TooMany(None),
            Reply::TooMany(None),
            in_transit_as(NO_RETRY_AFTER),
        ]),
    );
    m
}

// ---------------------------------------------------------------------------
// The project, the binary, the feed.

const QUOTA: usize = 10;
const WINDOW: f64 = 1.0;

fn config_text(url: &str, port: u16) -> String {
    config_with_quota(url, port, QUOTA, WINDOW)
}

fn config_with_quota(url: &str, port: u16, quota: usize, window: f64) -> String {
    format!(
        r#"[target]
url = "{url}"

[daemons]
heartbeat = 1
backoff_min = 0.05
backoff_max = 0.2

[daemons.colissimo]
base_url = "http://127.0.0.1:{port}/suivi/v2"
api_key = "${{TEST_OKAPI_KEY}}"
poll_interval = 1.0
retry_interval = 1.0
quota = {quota}
quota_window = {window}
min_gap = 0
timeout = 0.5
max_retries = 2
retry_delay = 0.05
rate_limit_pause = 0.4
rate_limit_pause_max = 2.0
idle = 0.3
# the fixtures' parcels entered the network in 2024
max_age_days = 36500
"#
    )
}

/// `repaero --config dir/repaero.toml …` with the key in the environment.
fn cli(dir: &Path, key: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_repaero"));
    cmd.current_dir(dir)
        .arg("--config")
        .arg(dir.join("repaero.toml"))
        .args(args)
        .env_remove("REPAERO_TARGET")
        .env_remove("RUST_LOG")
        .env("TEST_OKAPI_KEY", key);
    cmd
}

fn ok(o: Output) -> String {
    assert_eq!(code(&o), 0, "{}\n{}", stdout(&o), stderr(&o));
    stdout(&o)
}

fn json(o: Output) -> Value {
    let out = ok(o);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The feed running in this process (a thread and a runtime of its own),
/// under the daemon runtime's supervisor.
struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

fn start_feed(dir: &Path, key: &str) -> Running {
    let text = std::fs::read_to_string(dir.join("repaero.toml")).unwrap();
    let key = key.to_string();
    let cfg =
        repaero::config::Config::from_text(&text, "repaero.toml", dir, &[], &move |v: &str| {
            (v == "TEST_OKAPI_KEY").then(|| key.clone())
        })
        .unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let rc = repaero::daemon::RuntimeConfig::from_config(&cfg).unwrap();
        let feed = repaero::daemon::feed("colissimo", &cfg).unwrap();
        rt.block_on(repaero::daemon::supervise(
            Arc::new(cfg),
            vec![feed],
            rc,
            rx,
        ))
        .unwrap();
    });
    Running { stop, thread }
}

impl Running {
    fn stop(self) {
        self.stop.send(true).unwrap();
        self.thread.join().unwrap();
    }
}

/// Wait for `cond` (checked every 50 ms); fail after a minute, saying what.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    wait_or(what, &mut cond, String::new)
}

/// The same, saying `state()` when it fails.
fn wait_or(what: &str, mut cond: impl FnMut() -> bool, state: impl Fn() -> String) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "still waiting for {what}: {}",
            state()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Place one order per supplier and attach the parcels; the order ids.
fn orders_with_parcels(dir: &Path, groups: &[(&str, &[&str])]) -> Vec<String> {
    let mut args = vec!["order".to_string(), "place".into(), "--json".into()];
    for (i, (supplier, _)) in groups.iter().enumerate() {
        args.push("--line".into());
        args.push(format!("PART-{i}:{supplier}:{}", i + 1));
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let placed = json(cli(dir, KEY, &argv).output().unwrap());
    let orders = placed["orders"].as_array().unwrap();
    assert_eq!(orders.len(), groups.len(), "{placed}");
    let mut ids = Vec::new();
    for (o, (supplier, parcels)) in orders.iter().zip(groups) {
        assert_eq!(o["supplier"], *supplier);
        let id = o["id"].as_str().unwrap().to_string();
        for p in *parcels {
            let out = json(
                cli(dir, KEY, &["order", "ship", &id, "--tracking", p, "--json"])
                    .output()
                    .unwrap(),
            );
            assert_eq!(out["tracking_number"], *p);
            assert_eq!(out["already"], false);
        }
        ids.push(id);
    }
    ids
}

/// The rows of a query; on SQLite through a connection that waits for the
/// feed's writes (`Db::rows` would fail on a busy database).
fn rows(db: &Db, sql: &str) -> Vec<Vec<Option<String>>> {
    match db {
        Db::Sqlite(p) => {
            let c = rusqlite::Connection::open(p).unwrap();
            c.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut st = c.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            let n = st.column_count();
            st.query_map([], |r| {
                (0..n)
                    .map(|i| {
                        let v: rusqlite::types::Value = r.get(i)?;
                        Ok(match v {
                            rusqlite::types::Value::Null => None,
                            rusqlite::types::Value::Integer(i) => Some(i.to_string()),
                            rusqlite::types::Value::Real(f) => Some(f.to_string()),
                            rusqlite::types::Value::Text(s) => Some(s),
                            rusqlite::types::Value::Blob(b) => Some(format!("{b:?}")),
                        })
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
        }
        Db::Pg(_) => db.rows(sql),
    }
}

fn one(db: &Db, sql: &str) -> String {
    rows(db, sql)
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .unwrap_or_default()
}

fn strs(rows: Vec<Vec<Option<String>>>) -> Vec<Vec<String>> {
    rows.into_iter()
        .map(|r| {
            r.into_iter()
                .map(|v| v.unwrap_or_else(|| "NULL".into()))
                .collect()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The feed against every behaviour of the spec.

fn every_behaviour(db: &Db, dir: &Path) {
    let double = Arc::new(Double {
        key: KEY.into(),
        quota: QUOTA,
        window: Duration::from_secs_f64(WINDOW),
        scripts: Mutex::new(scripts()),
        seen: Mutex::new(Vec::new()),
        over_quota: AtomicUsize::new(0),
    });
    let port = start_double(double.clone());
    std::fs::write(dir.join("repaero.toml"), config_text(&db.url(), port)).unwrap();
    let ids = orders_with_parcels(
        dir,
        &[
            ("AEROSTOCK", &[DELIVERED]),
            ("BRAKEPARTS", &[RETURNED]),
            (
                "CABINSUPPLY",
                &[
                    TRANSIT,
                    UNKNOWN,
                    INVALID,
                    TRUNCATED,
                    HTML,
                    SHAPE,
                    FAILING,
                    FLAKY,
                    SLOW,
                    ODD_CODE,
                    RETRY_AFTER,
                    NO_RETRY_AFTER,
                ],
            ),
        ],
    );

    let feed = start_feed(dir, KEY);
    let finished = |db: &Db| {
        one(
            db,
            "SELECT count(*) FROM shipments WHERE poll_state <> 'open'",
        ) == "3"
    };
    let state = || {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for s in double.seen() {
            *counts
                .entry(format!("{} {}", s.parcel, s.status))
                .or_default() += 1;
        }
        format!(
            "{counts:#?}\n{:#?}\n{:?}",
            strs(rows(
                db,
                "SELECT tracking_number, status, poll_state, next_poll_at, last_error FROM shipments"
            )),
            strs(rows(
                db,
                "SELECT state, last_error, details FROM _repaero_heartbeats"
            ))
        )
    };
    wait_or(
        "the final parcels",
        || finished(db) && double.count(TRANSIT) >= 2 && double.count(FAILING) >= 3,
        state,
    );
    // the parcels still open go on being polled; the final ones are not
    let at_final: BTreeMap<&str, usize> = [DELIVERED, RETURNED, INVALID]
        .iter()
        .map(|p| (*p, double.count(p)))
        .collect();
    let (transit, unknown, failing) = (
        double.count(TRANSIT),
        double.count(UNKNOWN),
        double.count(FAILING),
    );
    wait_or(
        "two more polls of the open parcels",
        || {
            double.count(TRANSIT) >= transit + 2
                && double.count(UNKNOWN) >= unknown + 2
                && double.count(FAILING) >= failing + 3
        },
        state,
    );
    feed.stop();
    for (p, n) in &at_final {
        assert_eq!(double.count(p), *n, "{p} polled after its final state");
    }
    assert_eq!(double.count(DELIVERED), 2);
    assert_eq!(double.count(RETURNED), 1);
    assert_eq!(double.count(INVALID), 1);

    // the quota, as the double counted it
    let seen = double.seen();
    eprintln!(
        "{}: {} calls, at most {} in a {WINDOW} s window (quota {QUOTA}), {} over quota",
        db.url(),
        seen.len(),
        double.max_in_window(),
        double.over_quota.load(Ordering::SeqCst)
    );
    assert_eq!(double.over_quota.load(Ordering::SeqCst), 0);
    assert!(
        double.max_in_window() <= QUOTA,
        "{}",
        double.max_in_window()
    );
    assert!(
        seen.len() > 3 * QUOTA,
        "enough calls for the quota to matter: {}",
        seen.len()
    );
    // every request as the spec wants it; the key never kept
    for s in &seen {
        assert_eq!(s.accept.as_deref(), Some("application/json"));
        assert_eq!(s.key.as_deref(), Some(KEY));
        assert_eq!(s.lang.as_deref(), Some("fr_FR"));
    }
    // every call is in shipment_polls, parcel by parcel
    let mut polls: BTreeMap<String, usize> = BTreeMap::new();
    for r in strs(rows(
        db,
        "SELECT tracking_number, count(*) FROM shipment_polls GROUP BY tracking_number",
    )) {
        polls.insert(r[0].clone(), r[1].parse().unwrap());
    }
    let mut counted: BTreeMap<String, usize> = BTreeMap::new();
    for s in &seen {
        *counted.entry(s.parcel.clone()).or_default() += 1;
    }
    assert_eq!(polls, counted);
    assert_eq!(
        one(
            db,
            &format!("SELECT count(*) FROM shipment_polls WHERE reason LIKE '%{KEY}%'")
        ),
        "0"
    );
    assert!(!one(db, "SELECT details FROM _repaero_heartbeats").contains(KEY));

    // 429 with Retry-After: 2 → no call of any parcel for 2 s; without it
    // → a pause of at least half of 0.4 s, then of 0.8 s
    let after = |i: usize| seen[i + 1].at.duration_since(seen[i].at);
    let limited: Vec<usize> = (0..seen.len() - 1)
        .filter(|i| seen[*i].status == 429)
        .collect();
    assert_eq!(limited.len(), 3, "{seen:?}");
    let ra = limited
        .iter()
        .find(|i| seen[**i].parcel == RETRY_AFTER)
        .unwrap();
    assert!(
        after(*ra) >= Duration::from_millis(1900),
        "{:?}",
        after(*ra)
    );
    let no_ra: Vec<&usize> = limited
        .iter()
        .filter(|i| seen[**i].parcel == NO_RETRY_AFTER)
        .collect();
    assert!(
        after(*no_ra[0]) >= Duration::from_millis(150),
        "{:?}",
        after(*no_ra[0])
    );
    assert!(
        after(*no_ra[1]) >= Duration::from_millis(350),
        "{:?}",
        after(*no_ra[1])
    );
    let retry_at = strs(rows(
        db,
        &format!(
            "SELECT at, retry_at FROM shipment_polls WHERE tracking_number = '{RETRY_AFTER}' AND outcome = 'rate_limited'"
        ),
    ));
    assert_eq!(retry_at.len(), 1);
    let t = |s: &str| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap();
    assert_eq!(
        (t(&retry_at[0][1]) - t(&retry_at[0][0])).num_milliseconds(),
        2000
    );

    // 5xx and timeouts: 1 + max_retries calls per poll, then the parcel waits
    for (p, outcome) in [(FAILING, "upstream"), (SLOW, "timeout")] {
        let rows = strs(rows(
            db,
            &format!(
                "SELECT attempt, outcome FROM shipment_polls WHERE tracking_number = '{p}' ORDER BY at"
            ),
        ));
        let attempts: Vec<u32> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
        assert_eq!(attempts.iter().max(), Some(&3), "{p}: {attempts:?}");
        for (i, a) in attempts.iter().enumerate() {
            assert_eq!(*a as usize, i % 3 + 1, "{p}: {attempts:?}");
        }
        assert!(rows.iter().all(|r| r[1] == outcome), "{p}: {rows:?}");
        let give_ups = attempts.iter().filter(|a| **a == 3).count();
        assert_eq!(
            one(
                db,
                &format!("SELECT failed_polls FROM shipments WHERE tracking_number = '{p}'")
            ),
            give_ups.to_string()
        );
    }
    // an open parcel is polled at most once per poll_interval
    let ok_polls = strs(rows(
        db,
        &format!("SELECT at FROM shipment_polls WHERE tracking_number = '{TRANSIT}' ORDER BY at"),
    ));
    for w in ok_polls.windows(2) {
        let gap = (t(&w[1][0]) - t(&w[0][0])).num_milliseconds();
        assert!(gap >= 1000, "{TRANSIT} polled {gap} ms after the last poll");
    }

    // the parcels
    let last_5xx = seen
        .iter()
        .rev()
        .find(|s| s.parcel == FAILING)
        .unwrap()
        .status;
    let got = strs(rows(
        db,
        "SELECT tracking_number, order_id, status, poll_state, estimated_delivery, delivered_at, \
         last_event_code, last_event_at, events, last_error_kind, last_error \
         FROM shipments ORDER BY tracking_number",
    ));
    let row = |p: &str| got.iter().find(|r| r[0] == p).unwrap().clone();
    let expect = |p: &str, order: &str, cols: [&str; 9]| {
        let mut want = vec![p.to_string(), order.to_string()];
        want.extend(cols.iter().map(|c| c.to_string()));
        assert_eq!(row(p), want, "{p}");
    };
    let (a, b, c) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());
    // events newest first then shuffled, a late older event: last = MD2
    expect(
        TRANSIT,
        c,
        [
            "OutForDelivery",
            "open",
            "2024-03-13 23:00:00",
            "NULL",
            "MD2",
            "2024-03-14 07:20:00",
            "5",
            "NULL",
            "NULL",
        ],
    );
    // the estimate (timeline step 5) kept from the first answer
    expect(
        DELIVERED,
        a,
        [
            "Delivered",
            "final",
            "2024-03-05 23:00:00",
            "2024-03-06 10:47:00",
            "DI1",
            "2024-03-06 10:47:00",
            "5",
            "NULL",
            "NULL",
        ],
    );
    // RE1 then DI2, final: returned, not delivered; dates on both sides of DST
    expect(
        RETURNED,
        b,
        [
            "ReturnedToSender",
            "final",
            "NULL",
            "2024-04-03 08:30:00",
            "DI2",
            "2024-04-03 08:30:00",
            "5",
            "NULL",
            "NULL",
        ],
    );
    expect(
        UNKNOWN,
        c,
        [
            "NotFound",
            "open",
            "NULL",
            "NULL",
            "NULL",
            "NULL",
            "0",
            "not_found",
            "unknown parcel (returnCode 104): Votre suivi n'est pas encore disponible. Merci de réessayer plus tard.",
        ],
    );
    expect(
        INVALID,
        c,
        [
            "InvalidNumber",
            "invalid",
            "NULL",
            "NULL",
            "NULL",
            "NULL",
            "0",
            "invalid_number",
            "invalid parcel number: Le numéro de suivi est invalide.",
        ],
    );
    for (p, reason) in [
        (
            TRUNCATED,
            "malformed answer (HTTP 200): not JSON (EOF while parsing",
        ),
        (
            HTML,
            "malformed answer (HTTP 200): content type text/html; charset=utf-8, not JSON: <html><body>Maintenance</body></html>",
        ),
        (SHAPE, "malformed answer (HTTP 200): no `shipment` object"),
        (FAILING, &format!("HTTP {last_5xx}: ")),
        (SLOW, "no answer within 0.5 s (timeout)"),
    ] {
        let r = row(p);
        assert_eq!(
            r[2..9],
            ["Unknown", "open", "NULL", "NULL", "NULL", "NULL", "0"],
            "{p}"
        );
        assert!(r[10].starts_with(reason), "{p}: {r:?}");
    }
    assert_eq!(row(FAILING)[9], "upstream");
    assert_eq!(row(SLOW)[9], "timeout");
    assert_eq!(row(TRUNCATED)[9], "malformed");
    for p in [FLAKY, RETRY_AFTER, NO_RETRY_AFTER] {
        expect(
            p,
            c,
            [
                "InTransit",
                "open",
                "2024-03-12 23:00:00",
                "NULL",
                "ET1",
                "2024-03-12 04:10:00",
                "3",
                "NULL",
                "NULL",
            ],
        );
    }
    // an unknown last code: the status from the timeline (step 3)
    expect(
        ODD_CODE,
        c,
        [
            "InTransit",
            "open",
            "NULL",
            "NULL",
            "ZZZ9",
            "2024-10-28 05:00:00",
            "3",
            "NULL",
            "NULL",
        ],
    );

    // the events: each once, whatever the order and the repeats
    assert_eq!(one(db, "SELECT count(*) FROM shipment_events"), "27");
    let events = |p: &str| {
        strs(rows(
            db,
            &format!(
                "SELECT event_at, code, status FROM shipment_events WHERE tracking_number = '{p}' ORDER BY event_at"
            ),
        ))
    };
    let e = |at: &str, code: &str, status: &str| vec![at.to_string(), code.into(), status.into()];
    assert_eq!(
        events(TRANSIT),
        [
            e("2024-03-11 08:05:00", "DR1", "LabelCreated"),
            e("2024-03-11 17:42:00", "PC1", "TakenOver"),
            e("2024-03-11 22:55:00", "ET2", "InTransit"),
            e("2024-03-12 04:10:00", "ET1", "InTransit"),
            e("2024-03-14 07:20:00", "MD2", "OutForDelivery"),
        ]
    );
    assert_eq!(
        events(DELIVERED),
        [
            e("2024-03-04 09:00:00", "DR1", "LabelCreated"),
            e("2024-03-04 16:20:00", "PC1", "TakenOver"),
            e("2024-03-05 03:02:00", "ET1", "InTransit"),
            e("2024-03-06 07:15:00", "MD2", "OutForDelivery"),
            e("2024-03-06 10:47:00", "DI1", "Delivered"),
        ]
    );
    assert_eq!(
        events(RETURNED),
        [
            e("2024-03-28 15:00:00", "PC1", "TakenOver"),
            e("2024-03-29 02:00:00", "ET1", "InTransit"),
            e("2024-03-30 08:00:00", "ND1", "DeliveryFailed"),
            e("2024-04-01 12:00:00", "RE1", "ReturnedToSender"),
            e("2024-04-03 08:30:00", "DI2", "ReturnedToSender"),
        ]
    );
    assert_eq!(
        events(ODD_CODE)[2],
        e("2024-10-28 05:00:00", "ZZZ9", "NULL")
    );

    // the orders: closed when their parcels are final
    let list = json(
        cli(dir, KEY, &["order", "list", "--json"])
            .output()
            .unwrap(),
    );
    let status: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["id"].as_str().unwrap().to_string(),
                o["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        status,
        [
            (a.to_string(), "delivered".to_string()),
            (b.to_string(), "returned".to_string()),
            (c.to_string(), "shipped".to_string()),
        ]
    );
    let parcel = list[2]["shipments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["tracking_number"] == TRANSIT)
        .unwrap()
        .clone();
    assert_eq!(parcel["status"], "OutForDelivery");
    assert_eq!(parcel["estimated_delivery"], "2024-03-14T00:00:00+01:00");
    assert_eq!(parcel["last_event_at"], "2024-03-14T08:20:00+01:00");
    assert_eq!(
        list[0]["shipments"][0]["delivered_at"],
        "2024-03-06T11:47:00+01:00"
    );
    let text = ok(cli(dir, KEY, &["order", "list"]).output().unwrap());
    assert!(
        text.contains(&format!(
            "parcel {TRANSIT}  OutForDelivery  estimated 2024-03-14"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "parcel {DELIVERED}  Delivered  delivered 2024-03-06"
        )),
        "{text}"
    );

    // the heartbeat: progress and the feed's own details
    let beat = strs(rows(
        db,
        "SELECT state, processed, failed, details FROM _repaero_heartbeats WHERE feed = 'colissimo'",
    ));
    assert_eq!(beat[0][0], "stopped");
    assert!(beat[0][1].parse::<u64>().unwrap() > 10, "{beat:?}");
    assert!(beat[0][2].parse::<u64>().unwrap() > 5, "{beat:?}");
    let details: Value = serde_json::from_str(&beat[0][3]).unwrap();
    assert_eq!(details["open_parcels"], 11, "{details}");
}

#[test]
fn the_feed_follows_every_behaviour_of_the_service_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    every_behaviour(&Db::Sqlite(dir.path().join("t.db")), dir.path());
}

#[test]
fn the_feed_follows_every_behaviour_of_the_service_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let pg = pg::TempDb::new("colissimo_feed");
    every_behaviour(&Db::Pg(pg.url()), dir.path());
}

/// The quota's count is in the target: a feed started again at once goes
/// on counting the calls of the one before, it does not start afresh.
#[test]
fn the_quota_holds_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = &Db::Sqlite(d.join("t.db"));
    let parcels = [
        "6A10000000001",
        "6A10000000002",
        "6A10000000003",
        "6A10000000004",
        "6A10000000005",
        "6A10000000006",
    ];
    let mut scripts = HashMap::new();
    for p in parcels {
        scripts.insert(
            p.to_string(),
            Script {
                replies: vec![in_transit_as(p)],
                cycle: false,
                next: 0,
            },
        );
    }
    let window = 3.0;
    let double = Arc::new(Double {
        key: KEY.into(),
        quota: 3,
        window: Duration::from_secs_f64(window),
        scripts: Mutex::new(scripts),
        seen: Mutex::new(Vec::new()),
        over_quota: AtomicUsize::new(0),
    });
    let port = start_double(double.clone());
    std::fs::write(
        d.join("repaero.toml"),
        config_with_quota(&db.url(), port, 3, window),
    )
    .unwrap();
    orders_with_parcels(d, &[("AEROSTOCK", &parcels)]);
    let feed = start_feed(d, KEY);
    wait_for("the quota spent", || double.seen().len() >= 3);
    feed.stop();
    let feed = start_feed(d, KEY);
    wait_for("every parcel polled", || {
        parcels.iter().all(|p| double.count(p) >= 1)
    });
    feed.stop();
    assert_eq!(double.over_quota.load(Ordering::SeqCst), 0);
    assert!(double.max_in_window() <= 3, "{}", double.max_in_window());
    let seen = double.seen();
    assert!(
        seen[3].at.duration_since(seen[0].at) >= Duration::from_secs_f64(window),
        "the restarted feed waited for the window"
    );
    assert_eq!(
        one(db, "SELECT count(*) FROM shipment_polls"),
        seen.len().to_string()
    );
}

/// A refused key is a configuration error: said on the heartbeat, and the
/// service is not called again however often the feed is restarted.
#[test]
fn a_refused_key_stops_the_calls_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = &Db::Sqlite(d.join("t.db"));
    let double = Arc::new(Double {
        key: KEY.into(),
        quota: QUOTA,
        window: Duration::from_secs_f64(WINDOW),
        scripts: Mutex::new(scripts()),
        seen: Mutex::new(Vec::new()),
        over_quota: AtomicUsize::new(0),
    });
    let port = start_double(double.clone());
    std::fs::write(d.join("repaero.toml"), config_text(&db.url(), port)).unwrap();
    orders_with_parcels(d, &[("AEROSTOCK", &[TRANSIT, DELIVERED])]);
    let wrong = "f".repeat(64);
    let feed = start_feed(d, &wrong);
    wait_for("three restarts of the feed", || {
        one(
            db,
            "SELECT count(*) FROM sqlite_master WHERE name = '_repaero_heartbeats'",
        ) == "1"
            && rows(
                db,
                "SELECT restarts FROM _repaero_heartbeats WHERE feed = 'colissimo'",
            )
            .first()
            .and_then(|r| r[0].clone())
            .is_some_and(|n| n.parse::<u32>().unwrap() >= 3)
    });
    feed.stop();
    assert_eq!(double.seen().len(), 1, "one call, then none");
    assert_eq!(double.seen()[0].key.as_deref(), Some(wrong.as_str()));
    let beat = strs(rows(
        db,
        "SELECT state, last_error FROM _repaero_heartbeats WHERE feed = 'colissimo'",
    ));
    assert_eq!(beat[0][0], "stopped");
    assert!(
        beat[0][1].contains("Colissimo refused the API key (HTTP 401: the API key was refused (UNAUTHORIZED: Invalid credentials))")
            && beat[0][1].contains("api_key")
            && beat[0][1].contains("restart the daemon"),
        "{beat:?}"
    );
    assert!(!beat[0][1].contains(&wrong));
    assert_eq!(
        strs(rows(
            db,
            "SELECT tracking_number, outcome, http_status FROM shipment_polls"
        )),
        [[TRANSIT, "unauthorized", "401"]]
    );
    assert_eq!(
        strs(rows(
            db,
            "SELECT count(*) FROM shipments WHERE poll_state = 'open' AND status = 'Unknown'"
        )),
        [["2"]]
    );
}

/// `repaero daemon colissimo` itself: the key from the environment, an
/// orderly stop on SIGTERM; without the variable, a configuration error.
/// With the default age limit (45 days), the fixtures' parcels (2024) are
/// polled once, then given up with the reason.
#[test]
fn the_daemon_binary_polls_gives_up_old_parcels_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = &Db::Sqlite(d.join("t.db"));
    let double = Arc::new(Double {
        key: KEY.into(),
        quota: QUOTA,
        window: Duration::from_secs_f64(WINDOW),
        scripts: Mutex::new(scripts()),
        seen: Mutex::new(Vec::new()),
        over_quota: AtomicUsize::new(0),
    });
    let port = start_double(double.clone());
    std::fs::write(d.join("repaero.toml"), config_text(&db.url(), port)).unwrap();
    orders_with_parcels(d, &[("AEROSTOCK", &[DELIVERED, RETURNED])]);
    let age = "daemons.colissimo.max_age_days=45";

    let unset = cli(d, KEY, &["--set", age, "daemon", "colissimo"])
        .env_remove("TEST_OKAPI_KEY")
        .output()
        .unwrap();
    assert_eq!(code(&unset), 2, "{}", stderr(&unset));
    assert!(
        stderr(&unset).contains("TEST_OKAPI_KEY"),
        "{}",
        stderr(&unset)
    );
    assert!(double.seen().is_empty());

    let child = cli(d, KEY, &["--set", age, "daemon", "colissimo"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the parcels done with", || {
        one(
            db,
            "SELECT count(*) FROM shipments WHERE poll_state <> 'open'",
        ) == "2"
    });
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains(KEY));
    // the returned parcel was final at once; the other one, not final and
    // entered in the network in March 2024, was polled once and let go
    assert_eq!(double.count(RETURNED), 1);
    assert_eq!(double.count(DELIVERED), 1);
    assert_eq!(
        strs(rows(
            db,
            "SELECT tracking_number, status, poll_state, last_error_kind, last_error FROM shipments ORDER BY tracking_number"
        )),
        [
            [
                DELIVERED,
                "TakenOver",
                "expired",
                "expired",
                "not final 45 days after 2024-03-04T17:20:00+01:00: no longer polled"
            ],
            [RETURNED, "ReturnedToSender", "final", "NULL", "NULL"],
        ]
    );
    let text = ok(cli(d, KEY, &["order", "list"]).output().unwrap());
    assert!(
        text.contains(&format!(
            "parcel {RETURNED}  ReturnedToSender  delivered 2024-04-03  last: Votre colis a été livré à l'expéditeur."
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "parcel {DELIVERED}  TakenOver  estimated 2024-03-06"
        )),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// order place / ship / list, from the migrated stock and catalogues.

fn project_cli(url: &str, dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repaero"))
        .current_dir(root())
        .arg("--config")
        .arg(root().join("repaero.toml"))
        .arg("--set")
        .arg(format!("target.url={url}"))
        .arg("--set")
        .arg(format!("paths.quarantine={}", dir.join("q").display()))
        .args(args)
        .env_remove("REPAERO_TARGET")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn orders_from_suggestions(db: &Db, dir: &Path) {
    let url = db.url();
    let run = |args: &[&str]| project_cli(&url, dir, args);
    ok(run(&["migrate", "stock", "suppliers"]));
    let suggestions = json(run(&["order", "suggest", "--json"]));
    let suggestions = suggestions.as_array().unwrap();
    // what the orders should hold: the cheapest offer of each suggestion
    // that has one, one order per supplier
    let mut want: BTreeMap<String, Vec<(String, i64, Option<f64>)>> = BTreeMap::new();
    let mut no_supplier = Vec::new();
    for s in suggestions {
        let c = &s["cheapest"];
        if c.is_null() {
            no_supplier.push(s["reference"].as_str().unwrap().to_string());
            continue;
        }
        want.entry(c["supplier"].as_str().unwrap().to_string())
            .or_default()
            .push((
                s["reference"].as_str().unwrap().to_string(),
                c["quantity"].as_i64().unwrap(),
                c["unit_price"].as_f64(),
            ));
    }
    assert!(want.len() >= 2, "{suggestions:?}");

    // a dry run writes nothing
    let dry = json(run(&["order", "place", "--dry-run", "--json"]));
    assert_eq!(dry["orders"].as_array().unwrap().len(), want.len());
    assert_eq!(
        json(run(&["order", "list", "--json"])),
        serde_json::json!([])
    );

    let placed = json(run(&["order", "place", "--json"]));
    let orders = placed["orders"].as_array().unwrap();
    assert_eq!(orders.len(), want.len());
    let day = chrono::Utc::now().format("%Y%m%d").to_string();
    for (i, (o, (supplier, lines))) in orders.iter().zip(&want).enumerate() {
        assert_eq!(o["id"], format!("PO-{day}-{:03}", i + 1));
        assert_eq!(o["supplier"], *supplier);
        assert_eq!(o["origin"], "suggest");
        let got: Vec<(String, i64, Option<f64>)> = o["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["reference"].as_str().unwrap().to_string(),
                    l["quantity"].as_i64().unwrap(),
                    l["unit_price"].as_f64(),
                )
            })
            .collect();
        assert_eq!(&got, lines, "{supplier}");
        let total: Option<f64> = lines
            .iter()
            .map(|(_, q, p)| p.map(|p| (p * *q as f64 * 100.0).round() / 100.0))
            .sum();
        assert_eq!(
            o["total"].as_f64(),
            total.map(|t| (t * 100.0).round() / 100.0),
            "{supplier}"
        );
    }
    let skipped: Vec<&str> = placed["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reference"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, no_supplier);
    let lines_written: usize = want.values().map(Vec::len).sum();
    assert_eq!(
        one(db, "SELECT count(*) FROM supplier_order_lines"),
        lines_written.to_string()
    );
    assert_eq!(
        one(
            db,
            "SELECT count(*) FROM supplier_orders WHERE status = 'placed'"
        ),
        want.len().to_string()
    );

    // again: every part is on order already, nothing is ordered twice
    let again = json(run(&["order", "place", "--json"]));
    assert_eq!(again["orders"], serde_json::json!([]));
    let first = orders[0]["id"].as_str().unwrap();
    let reasons: Vec<&str> = again["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), suggestions.len());
    assert!(
        reasons.contains(&format!("already on order {first}").as_str()),
        "{reasons:?}"
    );

    // a line given: priced from the catalogue; bad lines refused
    let (supplier, lines) = want.iter().next().unwrap();
    let (part, _, price) = &lines[0];
    let manual = json(run(&[
        "order",
        "place",
        "--line",
        &format!("{}:{}:7", part.to_lowercase(), supplier.to_lowercase()),
        "--json",
    ]));
    let m = &manual["orders"][0];
    assert_eq!(m["id"], format!("PO-{day}-{:03}", want.len() + 1));
    assert_eq!(m["supplier"], *supplier);
    assert_eq!(m["origin"], "manual");
    assert_eq!(m["lines"][0]["reference"], *part);
    assert_eq!(m["lines"][0]["quantity"], 7);
    assert_eq!(m["lines"][0]["unit_price"].as_f64(), *price);
    for (line, says) in [
        ("NOPART", "expected PART:SUPPLIER:QUANTITY"),
        (&format!("{part}:{supplier}:0"), "at least 1"),
        (&format!("XX-0000:{supplier}:1"), "no part XX-0000"),
        (&format!("{part}:NOBODY:1"), "no supplier NOBODY"),
    ] {
        let o = run(&["order", "place", "--line", line]);
        assert_eq!(code(&o), 2, "{line}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{line}: {}", stderr(&o));
    }

    // parcels
    let o = run(&["order", "ship", first, "--tracking", "6a 2345 6789 012"]);
    assert_eq!(
        ok(o).trim(),
        format!("parcel 6A23456789012 attached to {first}")
    );
    let o = run(&["order", "ship", first, "--tracking", "6A23456789012"]);
    assert!(ok(o).contains("attached to"));
    let second = orders[1]["id"].as_str().unwrap();
    for (order, tracking, says) in [
        (
            second,
            "6A23456789012",
            &format!("attached to order {first} already"),
        ),
        (first, "6A-1234", &"is not a parcel number".to_string()),
        (
            "PO-19700101-001",
            "6A34567890123",
            &"no supplier order".to_string(),
        ),
    ] {
        let o = run(&["order", "ship", order, "--tracking", tracking]);
        assert_eq!(code(&o), 2, "{}", stderr(&o));
        assert!(stderr(&o).contains(says.as_str()), "{}", stderr(&o));
    }
    let list = json(run(&["order", "list", "--json"]));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), want.len() + 1);
    assert_eq!(list[0]["id"], first);
    assert_eq!(list[0]["status"], "shipped");
    assert_eq!(list[1]["status"], "placed");
    assert_eq!(
        list[0]["shipments"],
        serde_json::json!([{
            "tracking_number": "6A23456789012", "status": "Unknown", "poll_state": "open",
            "estimated_delivery": null, "delivered_at": null, "last_event_code": null,
            "last_event_label": null, "last_event_at": null, "events": 0,
            "last_polled_at": null, "last_error": null
        }])
    );
    assert_eq!(list[0]["lines"], orders[0]["lines"]);
    let text = ok(run(&["order", "list"]));
    assert!(
        text.contains(&format!(
            "{first}  {}  shipped",
            orders[0]["supplier"].as_str().unwrap()
        )),
        "{text}"
    );
    assert!(
        text.contains("parcel 6A23456789012  Unknown  no estimate"),
        "{text}"
    );
}

#[test]
fn orders_from_suggestions_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    orders_from_suggestions(&Db::Sqlite(dir.path().join("t.db")), dir.path());
}

#[test]
fn orders_from_suggestions_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let pg = pg::TempDb::new("colissimo_orders");
    orders_from_suggestions(&Db::Pg(pg.url()), dir.path());
}
