//! The integration daemons: long-running feeds in one tokio process
//! (`repaero daemon <feed>… | --all`), each also runnable alone.
//!
//! The runtime gives every feed the same things:
//! - a supervisor that runs it again after a failure, with exponential
//!   back-off and full jitter, so that one feed failing never stops the
//!   others and a server coming back is not stormed;
//! - an orderly stop on SIGTERM or SIGINT: feeds stop taking work, finish
//!   what is in flight, and the process exits 0 within
//!   `[daemons] shutdown_grace` seconds;
//! - the target database through the same layer as the jobs ([`Db`]: a
//!   sink on a thread of its own), where every feed keeps its state;
//! - a heartbeat row per feed in `_repaero_heartbeats` (last beat, last
//!   success, counts, last error), written every `heartbeat` seconds and at
//!   each change, which `repaero check` reads.
//!
//! Feeds: [`queue`], the booking application's events (RabbitMQ);
//! [`ftp`] fetches the manufacturers' documents; [`colissimo`] tracks the
//! supplier orders' parcels; [`bank`] takes the card payments of invoices.

pub mod bank;
pub mod colissimo;
pub mod ftp;
pub mod metrics;
pub mod queue;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::batch::Value;
use crate::config::Config;
use crate::config::mapping::ColumnType;
use crate::db::{ColumnDef, Conn, Dialect, TableDef};
use crate::error::{Error, Result};
use crate::sink::Sink;

/// The table of the feeds' heartbeats.
pub const HEARTBEATS: &str = "_repaero_heartbeats";

/// A boxed future, as feeds return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A long-running feed.
pub trait Feed: Send + Sync {
    /// Its name (`queue`, `ftp`): the `[daemons.<name>]` table and the
    /// heartbeat row.
    fn name(&self) -> &'static str;
    /// Run until [`FeedContext::stopping`] (then return `Ok`) or until
    /// something fails (the supervisor runs it again after a pause). Work
    /// in flight when the stop comes is finished, not dropped.
    fn run<'a>(&'a self, ctx: &'a FeedContext) -> BoxFuture<'a, Result<()>>;
}

/// `[daemons]`: the runtime's own settings; each feed's table
/// (`[daemons.queue]`…) is read by the feed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Seconds between heartbeats.
    #[serde(default = "RuntimeConfig::default_heartbeat")]
    pub heartbeat: u64,
    /// Seconds the feeds get to finish their work in flight on a stop.
    #[serde(default = "RuntimeConfig::default_grace")]
    pub shutdown_grace: u64,
    /// The first pause after a failure, in seconds (doubling up to
    /// `backoff_max`, each pause drawn at random below its bound).
    #[serde(default = "RuntimeConfig::default_backoff_min")]
    pub backoff_min: f64,
    #[serde(default = "RuntimeConfig::default_backoff_max")]
    pub backoff_max: f64,
    /// Where `/health` and `/metrics` are served (`127.0.0.1:9464`);
    /// none when absent.
    #[serde(default)]
    pub metrics: Option<String>,
}

impl RuntimeConfig {
    fn default_heartbeat() -> u64 {
        10
    }
    fn default_grace() -> u64 {
        20
    }
    fn default_backoff_min() -> f64 {
        1.0
    }
    fn default_backoff_max() -> f64 {
        60.0
    }

    /// The runtime's settings: the scalar keys of `[daemons]`.
    pub fn from_config(cfg: &Config) -> Result<RuntimeConfig> {
        let own: toml::Table = cfg
            .daemons
            .iter()
            .filter(|(_, v)| !v.is_table())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let rc: RuntimeConfig = toml::Value::Table(own)
            .try_into()
            .map_err(|e: toml::de::Error| Error::config(format!("[daemons]: {}", e.message())))?;
        if rc.heartbeat == 0 || !(rc.backoff_min > 0.0 && rc.backoff_max >= rc.backoff_min) {
            return Err(Error::config(
                "[daemons]: heartbeat must be at least 1 s, and 0 < backoff_min ≤ backoff_max",
            ));
        }
        Ok(rc)
    }
}

/// The table `[daemons.<feed>]`, or an empty one.
pub fn feed_table(cfg: &Config, feed: &str) -> toml::Table {
    cfg.daemons
        .get(feed)
        .and_then(|v| v.as_table())
        .cloned()
        .unwrap_or_default()
}

/// Pauses after failures: doubling from `min` up to `max`, each drawn at
/// random between 0 and its bound ("full jitter"), so that several
/// daemons that lost one server do not come back in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: f64,
    max: f64,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    pub fn new(min: f64, max: f64) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ (std::process::id() as u64).rotate_left(32);
        Backoff {
            min,
            max,
            attempt: 0,
            seed: seed | 1,
        }
    }

    /// The bound of the next pause (before jitter).
    pub fn bound(&self) -> f64 {
        (self.min * 2f64.powi(self.attempt.min(30) as i32)).min(self.max)
    }

    /// The next pause.
    pub fn next_pause(&mut self) -> Duration {
        let bound = self.bound();
        self.attempt = self.attempt.saturating_add(1);
        // xorshift: no crate for a pause's jitter
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let unit = (self.seed >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_secs_f64((bound * unit).max(self.min / 10.0))
    }

    /// After a run that went well for a while: start again from `min`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A feed's progress, as its heartbeat shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Beat {
    /// `starting`, `running`, `retrying`, `stopped`.
    pub state: String,
    pub started_at: Option<String>,
    pub last_success_at: Option<String>,
    pub last_error_at: Option<String>,
    pub last_error: Option<String>,
    /// Units of work done (messages, files…) and failed since the start.
    pub processed: u64,
    pub failed: u64,
    /// Restarts after a failure since the start.
    pub restarts: u64,
    /// Whatever else the feed reports (queue depth, lag…).
    pub details: BTreeMap<String, serde_json::Value>,
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What a running feed is given.
pub struct FeedContext {
    name: &'static str,
    stop: watch::Receiver<bool>,
    /// The target, for the feed's state and effects.
    pub db: Db,
    /// The whole configuration.
    pub cfg: Arc<Config>,
    beat: Arc<Mutex<Beat>>,
    /// Rung when the heartbeat should be written now (a change).
    changed: Arc<tokio::sync::Notify>,
}

impl FeedContext {
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A stop was asked for: take no new work.
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves when a stop is asked for (to `select!` on while waiting).
    pub async fn stopped(&self) {
        let mut rx = self.stop.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Sleep for `d`, or less when a stop is asked for; true when stopping.
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => self.stopping(),
            _ = self.stopped() => true,
        }
    }

    /// Work done: `processed` units went well, `failed` did not (they are
    /// the feed's own business: dead letters, quarantined files).
    pub fn progress(&self, processed: u64, failed: u64) {
        if let Ok(mut b) = self.beat.lock() {
            b.processed += processed;
            b.failed += failed;
            b.last_success_at = Some(now_text());
            b.state = "running".into();
        }
    }

    /// A value the feed wants on its heartbeat (queue depth, lag…).
    pub fn detail(&self, key: &str, value: serde_json::Value) {
        if let Ok(mut b) = self.beat.lock() {
            b.details.insert(key.to_string(), value);
        }
    }

    fn set_state(&self, state: &str, error: Option<&Error>) {
        if let Ok(mut b) = self.beat.lock() {
            b.state = state.to_string();
            if let Some(e) = error {
                b.last_error_at = Some(now_text());
                b.last_error = Some(e.to_string());
            }
        }
        self.changed.notify_one();
    }

    /// The feed's heartbeat as it stands.
    pub fn beat(&self) -> Beat {
        self.beat.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

/// The target database through a sink that lives on a thread of its own:
/// the async feeds hand it work ([`Db::call`]) and await the answer, so a
/// slow statement never blocks the runtime. A lost connection is opened
/// again for the next call.
#[derive(Clone)]
pub struct Db {
    tx: std::sync::mpsc::Sender<DbJob>,
    label: String,
}

type DbJob = Box<dyn FnOnce(&mut Option<Box<dyn Sink>>, &str) + Send>;

impl Db {
    /// A worker for the target at `url` (opened at the first call).
    pub fn new(url: &str) -> Result<Db> {
        let (tx, rx) = std::sync::mpsc::channel::<DbJob>();
        let target = url.to_string();
        std::thread::Builder::new()
            .name("repaero-db".into())
            .spawn(move || {
                let mut sink: Option<Box<dyn Sink>> = None;
                while let Ok(job) = rx.recv() {
                    job(&mut sink, &target);
                }
            })
            .map_err(|e| Error::runtime(format!("cannot start the database thread: {e}")))?;
        Ok(Db {
            tx,
            label: crate::config::redact_url(url),
        })
    }

    /// The target, password redacted.
    pub fn describe(&self) -> &str {
        &self.label
    }

    /// Run `f` on the target's sink, on the database thread.
    pub async fn call<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Sink) -> Result<R> + Send + 'static,
    {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job: DbJob = Box::new(move |slot, url| {
            let result = (|| {
                if slot.is_none() {
                    *slot = Some(crate::sink::open(url, false)?);
                }
                let sink = slot
                    .as_mut()
                    .ok_or_else(|| Error::runtime("no target connection"))?;
                let out = f(sink.as_mut());
                if out.is_err() {
                    // whatever the unit of work did is undone; a broken
                    // connection is opened again at the next call
                    let _ = sink.rollback();
                    if sink.conn().map(|c| c.is_closed()).unwrap_or(true) {
                        *slot = None;
                    }
                }
                out
            })();
            let _ = done.send(result);
        });
        self.tx
            .send(job)
            .map_err(|_| Error::runtime("the database thread has stopped"))?;
        answer
            .await
            .map_err(|_| Error::runtime("the database thread stopped during a call"))?
    }
}

fn heartbeat_def() -> TableDef {
    let col = |name: &str, ty: ColumnType, not_null: bool| ColumnDef::new(name, ty, not_null);
    TableDef {
        name: HEARTBEATS.into(),
        columns: vec![
            col("feed", ColumnType::Text, true),
            col("host", ColumnType::Text, false),
            col("pid", ColumnType::Integer, false),
            col("state", ColumnType::Text, true),
            col("started_at", ColumnType::Text, false),
            col("beat_at", ColumnType::Text, true),
            col("last_success_at", ColumnType::Text, false),
            col("last_error_at", ColumnType::Text, false),
            col("last_error", ColumnType::Text, false),
            col("processed", ColumnType::Integer, true),
            col("failed", ColumnType::Integer, true),
            col("restarts", ColumnType::Integer, true),
            col("details", ColumnType::Text, false),
            col("interval_seconds", ColumnType::Integer, true),
        ],
        key: vec!["feed".into()],
        foreign_keys: Vec::new(),
        soft_delete: None,
    }
}

/// Write a feed's heartbeat (its row in `_repaero_heartbeats`).
pub fn write_heartbeat(conn: &mut dyn Conn, feed: &str, b: &Beat, interval: u64) -> Result<()> {
    let d = conn.dialect();
    let def = heartbeat_def();
    if !conn.table_exists(HEARTBEATS)? {
        let ddl = d.create_table(&def, HEARTBEATS, d != Dialect::Oracle);
        conn.batch(&ddl)?;
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let opt = |s: &Option<String>| s.clone().map_or(Value::Null, Value::Text);
    let values = vec![
        Value::Text(feed.into()),
        Value::Text(host),
        Value::Int(std::process::id() as i64),
        Value::Text(b.state.clone()),
        opt(&b.started_at),
        Value::Text(now_text()),
        opt(&b.last_success_at),
        opt(&b.last_error_at),
        opt(&b.last_error),
        Value::Int(b.processed as i64),
        Value::Int(b.failed as i64),
        Value::Int(b.restarts as i64),
        Value::Text(serde_json::to_string(&b.details).unwrap_or_default()),
        Value::Int(interval as i64),
    ];
    let cols: Vec<(&str, String)> = def
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), d.param(i + 1, c.ty)))
        .collect();
    conn.execute(&d.upsert_sql(HEARTBEATS, &cols, &["feed"]), &values)?;
    Ok(())
}

/// Every feed's heartbeat row: (feed, state, beat_at, last_error, interval).
pub fn read_heartbeats(conn: &mut dyn Conn) -> Result<Vec<BTreeMap<String, Option<String>>>> {
    if !conn.table_exists(HEARTBEATS)? {
        return Ok(Vec::new());
    }
    let names: Vec<String> = heartbeat_def()
        .columns
        .into_iter()
        .map(|c| c.name)
        .collect();
    let rows = conn.select_text(HEARTBEATS, &names)?;
    Ok(rows
        .into_iter()
        .map(|r| names.iter().cloned().zip(r).collect())
        .collect())
}

/// The feeds repaero knows, by name, built from the configuration.
pub fn feed(name: &str, cfg: &Config) -> Result<Box<dyn Feed>> {
    match name {
        "queue" => Ok(Box::new(queue::QueueFeed::new(cfg)?)),
        "bank" => Ok(Box::new(bank::BankFeed::from_config(cfg)?)),
        "colissimo" => Ok(Box::new(colissimo::Colissimo::new(cfg)?)),
        "ftp" => Ok(Box::new(ftp::FtpFeed::from_config(cfg)?)),
        _ => Err(Error::config(format!(
            "no daemon feed named `{name}`; the feeds are: {}",
            FEEDS.join(", ")
        ))),
    }
}

/// The feeds, in the order `--all` starts them.
pub const FEEDS: &[&str] = &["queue", "ftp", "colissimo", "bank"];

/// Run `feeds` until SIGTERM or SIGINT (or `stop` turning true), each under
/// its supervisor.
pub async fn run(cfg: Arc<Config>, feeds: Vec<Box<dyn Feed>>) -> Result<()> {
    let rc = RuntimeConfig::from_config(&cfg)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stop asked: finishing the work in flight");
        let _ = stop_tx.send(true);
    });
    let result = supervise(cfg, feeds, rc, stop_rx).await;
    signals.abort();
    result
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Run every feed under its supervisor until `stop` turns true, then give
/// them `shutdown_grace` to finish.
pub async fn supervise(
    cfg: Arc<Config>,
    feeds: Vec<Box<dyn Feed>>,
    rc: RuntimeConfig,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let db = Db::new(&cfg.target.url)?;
    let listener = match &rc.metrics {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    let mut views = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for feed in feeds {
        let ctx = FeedContext {
            name: feed.name(),
            stop: stop.clone(),
            db: db.clone(),
            cfg: cfg.clone(),
            beat: Arc::new(Mutex::new(Beat {
                state: "starting".into(),
                started_at: Some(now_text()),
                ..Beat::default()
            })),
            changed: Arc::new(tokio::sync::Notify::new()),
        };
        views.push(metrics::FeedView {
            name: ctx.name,
            beat: ctx.beat.clone(),
        });
        let rc = rc.clone();
        tasks.spawn(async move { supervise_one(feed, ctx, rc).await });
    }
    let server = listener.map(|l| tokio::spawn(metrics::serve(l, views, stop.clone())));
    // wait for the stop, then for the feeds, at most the grace
    let mut stop_wait = stop.clone();
    let _ = stop_wait.wait_for(|s| *s).await;
    let grace = Duration::from_secs(rc.shutdown_grace);
    let finished = tokio::time::timeout(grace, async {
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r {
                tracing::error!("a feed's task ended abnormally: {e}");
            }
        }
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            "feeds still busy after {} s ([daemons] shutdown_grace): stopping them; their unacknowledged work is redelivered",
            rc.shutdown_grace
        );
        tasks.abort_all();
    }
    if let Some(s) = server {
        s.abort();
    }
    Ok(())
}

/// Run one feed again and again until the stop, pausing after failures,
/// its heartbeat written on the way.
async fn supervise_one(feed: Box<dyn Feed>, ctx: FeedContext, rc: RuntimeConfig) {
    let name = feed.name();
    let mut backoff = Backoff::new(rc.backoff_min, rc.backoff_max);
    let beating = ctx.beat.clone();
    let changed = ctx.changed.clone();
    let db = ctx.db.clone();
    let mut stop = ctx.stop.clone();
    let interval = rc.heartbeat;
    let heart = tokio::spawn(async move {
        loop {
            let beat = beating.lock().map(|b| b.clone()).unwrap_or_default();
            let done = beat.state == "stopped";
            let written = db
                .call(move |sink| {
                    let conn = sink.conn()?;
                    write_heartbeat(conn, name, &beat, interval)
                })
                .await;
            if let Err(e) = written {
                tracing::warn!(feed = name, "heartbeat not written: {e}");
            }
            if done {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(interval)) => {}
                _ = changed.notified() => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
    });
    loop {
        ctx.set_state("running", None);
        let began = Instant::now();
        let outcome = feed.run(&ctx).await;
        if ctx.stopping() {
            if let Err(e) = &outcome {
                tracing::warn!(feed = name, "stopped with an error: {e}");
            }
            break;
        }
        let e = match outcome {
            Ok(()) => Error::runtime(format!("the {name} feed ended on its own")),
            Err(e) => e,
        };
        if began.elapsed() > Duration::from_secs(60) {
            backoff.reset();
        }
        let pause = backoff.next_pause();
        tracing::error!(
            feed = name,
            "{e}; running it again in {:.1} s",
            pause.as_secs_f64()
        );
        if let Ok(mut b) = ctx.beat.lock() {
            b.restarts += 1;
        }
        ctx.set_state("retrying", Some(&e));
        if ctx.sleep(pause).await {
            break;
        }
    }
    ctx.set_state("stopped", None);
    let _ = heart.await;
    tracing::info!(feed = name, "stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_below_each_bound() {
        let mut b = Backoff::new(1.0, 8.0);
        let mut bounds = Vec::new();
        for _ in 0..6 {
            bounds.push(b.bound());
            let p = b.next_pause().as_secs_f64();
            assert!(p <= *bounds.last().unwrap() + 1e-9, "{p} above {bounds:?}");
        }
        assert_eq!(bounds, vec![1.0, 2.0, 4.0, 8.0, 8.0, 8.0]);
        // the pauses are spread, not all at the bound
        let pauses: Vec<f64> = (0..50).map(|_| b.next_pause().as_secs_f64()).collect();
        let distinct: std::collections::BTreeSet<u64> =
            pauses.iter().map(|p| (p * 1000.0) as u64).collect();
        assert!(distinct.len() > 40, "{pauses:?}");
        b.reset();
        assert_eq!(b.bound(), 1.0);
    }

    struct Flaky {
        runs: Arc<AtomicU32>,
        fail: u32,
    }

    impl Feed for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn run<'a>(&'a self, ctx: &'a FeedContext) -> BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
                if n <= self.fail {
                    return Err(Error::runtime(format!("run {n} failed")));
                }
                ctx.progress(1, 0);
                ctx.stopped().await;
                Ok(())
            })
        }
    }

    struct Steady(Arc<AtomicU32>);

    impl Feed for Steady {
        fn name(&self) -> &'static str {
            "steady"
        }
        fn run<'a>(&'a self, ctx: &'a FeedContext) -> BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                while !ctx.sleep(Duration::from_millis(20)).await {
                    self.0.fetch_add(1, Ordering::SeqCst);
                    ctx.progress(1, 0);
                }
                Ok(())
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_feed_is_run_again_and_the_others_go_on_then_both_stop() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let mut cfg = Config::from_text("", "test", dir.path(), &[], &|_: &str| None).unwrap();
        cfg.target.url = url.clone();
        let rc = RuntimeConfig {
            heartbeat: 1,
            shutdown_grace: 5,
            backoff_min: 0.05,
            backoff_max: 0.2,
            metrics: None,
        };
        let runs = Arc::new(AtomicU32::new(0));
        let ticks = Arc::new(AtomicU32::new(0));
        let feeds: Vec<Box<dyn Feed>> = vec![
            Box::new(Flaky {
                runs: runs.clone(),
                fail: 3,
            }),
            Box::new(Steady(ticks.clone())),
        ];
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(supervise(Arc::new(cfg), feeds, rc, rx));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            4,
            "three failures, then a run that lasts"
        );
        assert!(ticks.load(Ordering::SeqCst) > 20, "the steady feed went on");
        let t0 = Instant::now();
        tx.send(true).unwrap();
        task.await.unwrap().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        let mut conn = crate::db::open(&url, false).unwrap();
        let beats = read_heartbeats(conn.as_mut()).unwrap();
        let by: BTreeMap<String, &BTreeMap<String, Option<String>>> = beats
            .iter()
            .map(|b| (b["feed"].clone().unwrap(), b))
            .collect();
        let flaky = by["flaky"];
        assert_eq!(flaky["state"].as_deref(), Some("stopped"));
        assert_eq!(flaky["restarts"].as_deref(), Some("3"));
        assert!(
            flaky["last_error"]
                .as_deref()
                .is_some_and(|e| e.contains("run 3 failed")),
            "{flaky:?}"
        );
        assert_eq!(by["steady"]["state"].as_deref(), Some("stopped"));
        assert!(
            by["steady"]["processed"]
                .as_deref()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 20
        );
    }
}
