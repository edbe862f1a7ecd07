//! The booking queue end to end: the real binary (`repaero daemon queue`,
//! `repaero queue replay`, `repaero queue dead`) against the local
//! RabbitMQ (127.0.0.1:5672, guest/guest), into SQLite and PostgreSQL.
//! Every test uses exchanges and queues of its own, deleted at the end.
//! Expected values come from the stream generator's ground truth
//! (`repaero fixtures queue`) and the stock fixture's
//! (fixtures/stock/stock.expected.json), never from a previous run.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lapin::options::{
    BasicGetOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;

/// A billable line read back: intervention, kind, reference, quantity,
/// unit price, amount.
type BillingRow = (String, String, String, i64, Option<f64>, Option<f64>);

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// One scenario: its target, its broker names, its stream and truth.
struct Scenario {
    dir: tempfile::TempDir,
    db: Db,
    prefix: String,
    sets: Vec<String>,
    stream: PathBuf,
    truth: Value,
}

impl Scenario {
    fn new(name: &str, db: Db, dir: tempfile::TempDir, extra: &[&str]) -> Scenario {
        let prefix = format!("rq-{name}-{}", std::process::id());
        let mut sets: Vec<String> = vec![
            format!("target.url={}", db.url()),
            format!("paths.quarantine={}", dir.path().join("q").display()),
            "daemons.heartbeat=1".into(),
            "daemons.backoff_min=0.2".into(),
            "daemons.backoff_max=1.0".into(),
            "daemons.shutdown_grace=20".into(),
            format!("daemons.queue.url={AMQP}"),
            format!("daemons.queue.exchange={prefix}.booking"),
            format!("daemons.queue.queue={prefix}.q"),
            format!("daemons.queue.dead_letter_exchange={prefix}.dlx"),
            format!("daemons.queue.dead_letter_queue={prefix}.dlq"),
            format!("daemons.queue.connection_name={prefix}"),
            "daemons.queue.depth_every=1".into(),
            r#"daemons.queue.rates={ "TECH-01" = 80.0, "TECH-02" = 92.5 }"#.into(),
            "daemons.queue.default_rate=75.0".into(),
        ];
        sets.extend(extra.iter().map(|s| s.to_string()));
        let stream = dir.path().join("queue.jsonl");
        let mut s = Scenario {
            dir,
            db,
            prefix,
            sets,
            stream,
            truth: Value::Null,
        };
        ok(s.run(&[
            "fixtures",
            "queue",
            "--out",
            s.stream.to_str().unwrap(),
            "--rows",
            "250",
        ]));
        s.truth = serde_json::from_str(
            &std::fs::read_to_string(s.dir.path().join("queue.expected.json")).unwrap(),
        )
        .unwrap();
        ok(s.run(&["migrate", "stock"]));
        s
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_repaero"));
        cmd.current_dir(root())
            .arg("--config")
            .arg(root().join("repaero.toml"));
        for s in &self.sets {
            cmd.arg("--set").arg(s);
        }
        cmd.args(args)
            .env_remove("REPAERO_TARGET")
            .env("RUST_LOG", "info");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run repaero")
    }

    /// `repaero daemon queue` in the background, its log in the scenario's
    /// directory.
    fn daemon(&self, n: usize) -> Daemon {
        let log = std::fs::File::create(self.dir.path().join(format!("daemon-{n}.log"))).unwrap();
        self.command(&["daemon", "queue"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map(Daemon)
            .expect("start the daemon")
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for n in 0..8 {
            if let Ok(t) = std::fs::read_to_string(self.dir.path().join(format!("daemon-{n}.log")))
            {
                s.push_str(&format!("--- daemon {n}\n{t}"));
            }
        }
        s
    }

    fn replay(&self) {
        let out = ok(self.run(&["queue", "replay", self.stream.to_str().unwrap(), "--json"]));
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["published"], self.truth["messages"], "{out}");
    }

    fn count(&self, table: &str) -> u64 {
        let n = self.db.rows(&format!("SELECT count(*) FROM {table}"));
        n.first()
            .and_then(|r| r[0].as_deref())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// Messages consumed so far (0 before the tables exist).
    fn consumed(&self) -> u64 {
        if !self.has_table("_repaero_messages") {
            return 0;
        }
        self.count("_repaero_messages")
    }

    fn has_table(&self, t: &str) -> bool {
        let sql = match self.db {
            Db::Sqlite(_) => format!("SELECT count(*) FROM sqlite_master WHERE name = '{t}'"),
            Db::Pg(_) => format!("SELECT count(*) FROM pg_tables WHERE tablename = '{t}'"),
        };
        self.db.one(&sql) == "1"
    }

    fn expected_ids(&self) -> u64 {
        self.truth["consumed_ids"].as_u64().unwrap()
    }

    fn expected_dead(&self) -> u64 {
        self.truth["dead_letters"].as_array().unwrap().len() as u64
    }

    /// Wait until every message of the stream is consumed: each id in
    /// `_repaero_messages`, each refusal in `_dead_letters`.
    fn wait_all_consumed(&self, children: &mut [Daemon]) {
        let t0 = Instant::now();
        loop {
            let done = self.consumed() == self.expected_ids()
                && self.has_table("_dead_letters")
                && self.count("_dead_letters") == self.expected_dead();
            if done {
                return;
            }
            for c in children.iter_mut() {
                if let Some(st) = c.try_wait().unwrap() {
                    panic!("the daemon exited ({st}):\n{}", self.logs());
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(240),
                "not consumed after 240 s: {} of {} ids, logs:\n{}",
                self.consumed(),
                self.expected_ids(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until the daemon `child` has counted `n` messages on its
    /// heartbeat (processed and failed), i.e. consumed and acknowledged them.
    fn wait_counted(&self, child: &mut Child, n: u64) {
        let t0 = Instant::now();
        let pid = child.id().to_string();
        loop {
            let beat = self.db.rows(
                "SELECT pid, processed, failed FROM _repaero_heartbeats WHERE feed = 'queue'",
            );
            let counted = beat.first().and_then(|r| {
                (r[0].as_deref() == Some(pid.as_str())).then(|| {
                    let v = |i: usize| r[i].as_deref().unwrap().parse::<u64>().unwrap();
                    v(1) + v(2)
                })
            });
            if counted == Some(n) {
                return;
            }
            if let Some(st) = child.try_wait().unwrap() {
                panic!("the daemon exited ({st}):\n{}", self.logs());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(240),
                "{counted:?} of {n}: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The state the stream must leave, whatever happened on the way.
    fn check_state(&self) {
        let t = &self.truth;
        let ts = |v: &Option<String>| {
            v.as_deref()
                .and_then(|s| repaero::batch::parse::parse_datetime(s, &[]))
                .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        };
        // appointments
        let rows = self.db.rows(
            "SELECT appointment_id, status, client_email, technician_id, aircraft_registration, start_at, end_at, reschedule_count, completed_by FROM appointments ORDER BY appointment_id",
        );
        let got: BTreeMap<String, Value> = rows
            .iter()
            .map(|r| {
                (
                    r[0].clone().unwrap(),
                    serde_json::json!({
                        "status": r[1], "client_email": r[2], "technician_id": r[3],
                        "aircraft_registration": r[4], "start": ts(&r[5]), "end": ts(&r[6]),
                        "reschedule_count": r[7].as_deref().unwrap().parse::<i64>().unwrap(),
                        "completed_by": r[8],
                    }),
                )
            })
            .collect();
        let want: BTreeMap<String, Value> = t["appointments"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(got.len(), want.len());
        for (k, w) in &want {
            assert_eq!(got.get(k), Some(w), "appointment {k}");
        }
        // interventions
        let rows = self
            .db
            .rows("SELECT reference, appointment_id, status FROM interventions ORDER BY reference");
        let got: BTreeMap<String, Option<String>> = rows
            .iter()
            .map(|r| {
                assert_eq!(r[2].as_deref(), Some("Terminee"));
                (r[0].clone().unwrap(), r[1].clone())
            })
            .collect();
        let want: BTreeMap<String, Option<String>> = t["interventions"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
            .collect();
        assert_eq!(got, want);
        // stock: the stock fixture's quantity minus what was consumed
        let stock: Value = serde_json::from_str(
            &std::fs::read_to_string(root().join("fixtures/stock/stock.expected.json")).unwrap(),
        )
        .unwrap();
        let quantities: BTreeMap<String, i64> = self
            .db
            .rows("SELECT reference, quantity FROM parts")
            .into_iter()
            .map(|r| {
                (
                    r[0].clone().unwrap().to_uppercase(),
                    r[1].as_deref().unwrap().parse::<f64>().unwrap() as i64,
                )
            })
            .collect();
        let mut below_zero = 0;
        for (reference, q) in t["consumed"].as_object().unwrap() {
            let initial = stock["part_values"][reference][0].as_i64().unwrap();
            let want = initial - q.as_i64().unwrap();
            assert_eq!(quantities[reference], want, "stock of {reference}");
            if want < 0 {
                below_zero += 1;
            }
        }
        assert!(below_zero > 0, "the stream takes some stock below zero");
        // one movement per part line of a known part, with its origin
        let part_lines = t["billing"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["kind"] == "part" && b["reference"] != "ZZ-9999")
            .count() as u64;
        assert_eq!(
            self.db
                .one("SELECT count(*) FROM stock_movements WHERE file LIKE 'queue:%'")
                .parse::<u64>()
                .unwrap(),
            part_lines
        );
        assert_eq!(self.count("stock_movements"), part_lines);
        // the parts under their minimum have an open alert
        let open: u64 = self
            .db
            .one("SELECT count(*) FROM stock_alerts WHERE cleared_at IS NULL")
            .parse()
            .unwrap();
        assert!(
            open >= below_zero,
            "{open} alerts for {below_zero} parts below zero"
        );
        // billing lines
        let prices: BTreeMap<String, f64> = self
            .db
            .rows("SELECT reference, unit_price FROM parts")
            .into_iter()
            .filter_map(|r| Some((r[0].clone()?.to_uppercase(), r[1].as_deref()?.parse().ok()?)))
            .collect();
        let rows = self.db.rows(
            "SELECT id, intervention_id, kind, reference, quantity, unit_price, amount FROM billable_items ORDER BY id",
        );
        let num = |v: &Option<String>| v.as_deref().map(|s| s.parse::<f64>().unwrap());
        let got: BTreeMap<String, BillingRow> = rows
            .iter()
            .map(|r| {
                (
                    r[0].clone().unwrap(),
                    (
                        r[1].clone().unwrap(),
                        r[2].clone().unwrap(),
                        r[3].clone().unwrap(),
                        r[4].as_deref().unwrap().parse::<f64>().unwrap() as i64,
                        num(&r[5]),
                        num(&r[6]),
                    ),
                )
            })
            .collect();
        let lines = t["billing"].as_array().unwrap();
        assert_eq!(got.len(), lines.len());
        for b in lines {
            let id = b["id"].as_str().unwrap();
            let g = got
                .get(id)
                .unwrap_or_else(|| panic!("no billing line {id}"));
            let q = b["quantity"].as_i64().unwrap();
            assert_eq!(
                (g.0.as_str(), g.1.as_str(), g.2.as_str(), g.3),
                (
                    b["intervention_id"].as_str().unwrap(),
                    b["kind"].as_str().unwrap(),
                    b["reference"].as_str().unwrap(),
                    q
                ),
                "{id}"
            );
            if b["kind"] == "time" {
                assert_eq!(g.4, b["rate"].as_f64(), "{id}");
                assert_eq!(g.5, b["amount"].as_f64(), "{id}");
            } else if let Some(p) = prices.get(b["reference"].as_str().unwrap()) {
                let want = (p * q as f64 * 100.0).round() / 100.0;
                assert_eq!(g.5, Some(want), "{id}");
            } else {
                assert_eq!(g.5, None, "{id}: a part unknown to the stock has no amount");
            }
        }
        // dead letters
        let mut got: Vec<(String, Option<String>)> = self
            .db
            .rows("SELECT reason, message_id FROM _dead_letters")
            .into_iter()
            .map(|r| (r[0].clone().unwrap(), r[1].clone()))
            .collect();
        let mut want: Vec<(String, Option<String>)> = t["dead_letters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["reason"].as_str().unwrap().to_string(),
                    d["message_id"].as_str().map(str::to_string),
                )
            })
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(self.consumed(), self.expected_ids());
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let p = self.prefix.clone();
        let _ = rt().block_on(async move {
            let conn = lapin::Connection::connect(AMQP, Default::default()).await?;
            let ch = conn.create_channel().await?;
            for q in [format!("{p}.q"), format!("{p}.dlq")] {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            for e in [format!("{p}.booking"), format!("{p}.dlx")] {
                let _ = ch
                    .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
            conn.close(200, "".into()).await
        });
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Ready messages in a queue.
fn depth(queue: &str) -> u32 {
    let q = queue.to_string();
    rt().block_on(async move {
        let conn = lapin::Connection::connect(AMQP, Default::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let d = ch
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count();
        let _ = conn.close(200, "".into()).await;
        d
    })
}

/// SIGTERM, then wait for the exit (0).
fn stop(mut c: Daemon) {
    let st = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = c.wait().unwrap();
    assert_eq!(status.code(), Some(0), "the daemon stopped with {status}");
}

/// A daemon started by a test, killed if the test ends (or fails) first.
struct Daemon(Child);

impl std::ops::Deref for Daemon {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A number from the clock, for "a random point".
fn random_below(n: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    (t ^ (t >> 17)).wrapping_mul(0x9e37_79b9_7f4a_7c15) % n.max(1)
}

fn sqlite(name: &str, extra: &[&str]) -> Scenario {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::Sqlite(dir.path().join("t.db"));
    Scenario::new(name, db, dir, extra)
}

/// The whole stream, then the same stream again: the truth, then nothing
/// more; refused messages in the dead-letter queue with their reason,
/// listed by `repaero queue dead`; the heartbeat shows the queue.
fn stream_twice(s: &Scenario) {
    let mut d = vec![s.daemon(0)];
    s.replay();
    s.wait_all_consumed(&mut d);
    stop(d.pop().unwrap());
    assert_eq!(
        depth(&format!("{}.q", s.prefix)),
        0,
        "everything acknowledged"
    );
    s.check_state();
    let dead = s.expected_dead() as u32;
    assert_eq!(depth(&format!("{}.dlq", s.prefix)), dead);
    // the heartbeat
    let details =
        s.db.one("SELECT details FROM _repaero_heartbeats WHERE feed = 'queue'");
    let details: Value = serde_json::from_str(&details).unwrap();
    assert_eq!(details["dead_letters"], dead, "{details}");
    assert_eq!(details["queue"], format!("{}.q", s.prefix));
    assert!(details["queue_depth"].is_u64(), "{details}");

    // the same stream again: nothing more
    let before = snapshot(s);
    let mut d = vec![s.daemon(1)];
    s.replay();
    s.wait_counted(&mut d[0], s.truth["messages"].as_u64().unwrap());
    stop(d.pop().unwrap());
    assert_eq!(depth(&format!("{}.q", s.prefix)), 0);
    assert_eq!(
        snapshot(s),
        before,
        "a second delivery of the stream changed the target"
    );
    s.check_state();
    assert_eq!(depth(&format!("{}.dlq", s.prefix)), 2 * dead);
    let beat =
        s.db.rows("SELECT processed, failed FROM _repaero_heartbeats WHERE feed = 'queue'");
    let n = |i: usize| beat[0][i].as_deref().unwrap().parse::<u64>().unwrap();
    assert_eq!(
        n(0) + n(1),
        s.truth["messages"].as_u64().unwrap(),
        "every message counted"
    );
    assert_eq!(n(1), s.expected_dead());
}

/// Everything the target holds of the feed's effects.
fn snapshot(s: &Scenario) -> Vec<Vec<Vec<Option<String>>>> {
    [
        "SELECT appointment_id, status, start_at, end_at, technician_id, reschedule_count, completed_by, last_message_id FROM appointments ORDER BY 1",
        "SELECT reference, appointment_id, amount_excl_tax FROM interventions ORDER BY 1",
        "SELECT id, quantity, amount FROM billable_items ORDER BY 1",
        "SELECT reference, quantity FROM parts ORDER BY 1",
        "SELECT line_id, stock_after FROM stock_movements ORDER BY 1",
        "SELECT id, reason FROM _dead_letters ORDER BY 1",
        "SELECT message_id, outcome FROM _repaero_messages ORDER BY 1",
        "SELECT id, cleared_at FROM stock_alerts ORDER BY 1",
    ]
    .iter()
    .map(|q| s.db.rows(q))
    .collect()
}

#[test]
fn the_stream_into_sqlite_gives_the_truth_and_twice_changes_nothing() {
    let s = sqlite("twice", &[]);
    stream_twice(&s);
    // the dead-letter queue carries the reason for an operator
    let p = s.prefix.clone();
    let reason = rt().block_on(async move {
        let conn = lapin::Connection::connect(AMQP, Default::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let m = ch
            .basic_get(
                format!("{p}.dlq").as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await
            .unwrap()
            .unwrap();
        let h = m.delivery.properties.headers().clone().unwrap();
        let r = match h.inner().get("x-repaero-reason") {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            other => panic!("{other:?}"),
        };
        let _ = conn.close(200, "".into()).await;
        r
    });
    let reasons: Vec<&str> = s.truth["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&reason.as_str()), "{reason}");
    // repaero queue dead
    let out = ok(s.run(&["queue", "dead", "--json"]));
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len() as u64, s.expected_dead());
    assert!(
        listed
            .iter()
            .all(|d| !d["reason"].as_str().unwrap().is_empty())
    );
    let text = ok(s.run(&["queue", "dead"]));
    assert!(
        text.contains("message_id reused with different content"),
        "{text}"
    );
    assert!(text.contains(&format!("{} dead letters", s.expected_dead())));
}

#[test]
fn the_stream_into_postgres_gives_the_truth_and_twice_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pg = pg::TempDb::new("queue_twice");
    let s = Scenario::new("pgtwice", Db::Pg(pg.url()), dir, &[]);
    stream_twice(&s);
}

/// The consumer killed (SIGKILL) at random points, and started again: the
/// same final state, nothing lost, nothing applied twice.
#[test]
fn a_consumer_killed_at_random_points_loses_nothing_and_applies_nothing_twice() {
    // small batches: many commits, each a point to be killed at
    let s = sqlite(
        "kill",
        &["daemons.queue.batch_size=20", "daemons.queue.prefetch=40"],
    );
    let total = s.expected_ids();
    let mut d = s.daemon(0);
    s.replay();
    for round in 1..=3 {
        let at = total * (round * 2 - 1) / 7 + random_below(total / 7);
        let t0 = Instant::now();
        while s.consumed() < at {
            assert!(t0.elapsed() < Duration::from_secs(240), "{}", s.logs());
            std::thread::sleep(Duration::from_millis(5));
        }
        d.kill().unwrap();
        d.wait().unwrap();
        d = s.daemon(round as usize);
    }
    let mut ds = vec![d];
    s.wait_all_consumed(&mut ds);
    stop(ds.pop().unwrap());
    assert_eq!(depth(&format!("{}.q", s.prefix)), 0);
    s.check_state();
}

/// The broker closes the consumer's connection mid-stream: the daemon
/// connects again and ends in the same state.
#[test]
fn a_connection_closed_by_the_broker_midstream_loses_nothing() {
    let s = sqlite(
        "close",
        &["daemons.queue.batch_size=20", "daemons.queue.prefetch=40"],
    );
    let total = s.expected_ids();
    let mut ds = vec![s.daemon(0)];
    s.replay();
    let t0 = Instant::now();
    while s.consumed() < total / 3 {
        assert!(t0.elapsed() < Duration::from_secs(240), "{}", s.logs());
        std::thread::sleep(Duration::from_millis(5));
    }
    // hold the target's write lock: the daemon's next batch waits in its
    // transaction with its messages unacknowledged, mid-stream
    let Db::Sqlite(path) = &s.db else {
        unreachable!()
    };
    let lock = rusqlite::Connection::open(path).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let at_close: u64 = lock
        .query_row("SELECT count(*) FROM _repaero_messages", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap() as u64;
    assert!(at_close < total, "the stream was over before the close");
    // the broker's own tool closes this daemon's connection, by its name
    let list = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "pid",
            "client_properties",
            "-q",
            "--no-table-headers",
        ])
        .output()
        .expect("rabbitmqctl");
    let text = String::from_utf8_lossy(&list.stdout).to_string();
    let pid = text
        .lines()
        .find(|l| l.contains(&format!("\"{}\"", s.prefix)))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no connection named {} in {text}", s.prefix))
        .to_string();
    let closed = Command::new("rabbitmqctl")
        .args(["close_connection", &pid, "test: closed mid-stream"])
        .status()
        .unwrap();
    assert!(closed.success());
    // the batch commits now; its acknowledgement can no longer go
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    s.wait_all_consumed(&mut ds);
    stop(ds.pop().unwrap());
    assert_eq!(depth(&format!("{}.q", s.prefix)), 0);
    s.check_state();
    let restarts: u64 =
        s.db.one("SELECT restarts FROM _repaero_heartbeats WHERE feed = 'queue'")
            .parse()
            .unwrap();
    assert!(restarts >= 1, "the feed ran again after the close");
    // the batch committed before the close was delivered again: known
    let details: Value = serde_json::from_str(
        &s.db
            .one("SELECT details FROM _repaero_heartbeats WHERE feed = 'queue'"),
    )
    .unwrap();
    assert!(
        details["outcomes"]["redelivery"].as_u64().unwrap() > 0,
        "{details}"
    );
    assert!(s.logs().contains("running it again"), "{}", s.logs());
}

/// Two consumers on one queue, into PostgreSQL: the same final state.
#[test]
fn two_consumers_on_one_queue_give_the_truth() {
    let dir = tempfile::tempdir().unwrap();
    let pg = pg::TempDb::new("queue_two");
    let s = Scenario::new(
        "two",
        Db::Pg(pg.url()),
        dir,
        &["daemons.queue.batch_size=25", "daemons.queue.prefetch=50"],
    );
    let mut ds = vec![s.daemon(0), s.daemon(1)];
    s.replay();
    s.wait_all_consumed(&mut ds);
    for d in ds {
        stop(d);
    }
    assert_eq!(depth(&format!("{}.q", s.prefix)), 0);
    s.check_state();
}

/// `[daemons.queue]` is checked before anything starts; the URL's password
/// never shows.
#[test]
fn a_bad_queue_configuration_is_refused_with_the_password_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_repaero"))
        .current_dir(root())
        .args(["--config", root().join("repaero.toml").to_str().unwrap()])
        .args([
            "--set",
            &format!("target.url=sqlite://{}", dir.path().join("t.db").display()),
            "--set",
            "daemons.queue.url=http://guest:s3cr3t@127.0.0.1:5672",
            "daemon",
            "queue",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("amqp://"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");
    let _ = Path::new("");
}

/// An SMS gateway double on 127.0.0.1: answers 200 to every POST and keeps
/// the bodies.
fn sms_double() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let keep = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            keep.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, got)
}

/// Created, moved, created again (a redelivery), cancelled, and a
/// reschedule older than the cancellation arriving late.
fn booking_stream(s: &Scenario) -> PathBuf {
    let ev = |id: &str, kind: &str, at: &str, start: &str| {
        serde_json::json!({
            "message_id": id, "event_type": kind, "occurred_at": at,
            "appointment_id": "RDV-2026-0042", "client_email": "contact@aeroclub-exemple.fr",
            "technician_id": "TECH-04", "aircraft_registration": "F-GKXA",
            "start": start, "end": "2026-11-05T18:00:00+01:00", "intervention_type": "Visite 50 h",
            "cancellation_reason": "météo",
        })
        .to_string()
    };
    let created = ev(
        "a1",
        "appointment.created",
        "2026-10-27T08:00:00Z",
        "2026-11-05T09:00:00+01:00",
    );
    let moved = ev(
        "a2",
        "appointment.rescheduled",
        "2026-10-27T09:00:00+01:00",
        "2026-11-05T10:00:00+01:00",
    );
    let cancelled = ev(
        "a3",
        "appointment.cancelled",
        "2026-10-27T10:00:00Z",
        "2026-11-05T10:00:00+01:00",
    );
    let late = ev(
        "a4",
        "appointment.rescheduled",
        "2026-10-27T09:30:00Z",
        "2026-11-05T11:00:00+01:00",
    );
    let file = s.dir.path().join("notify.jsonl");
    std::fs::write(
        &file,
        [&created, &moved, &created, &cancelled, &late, &moved]
            .map(|l| l.as_str())
            .join("\n"),
    )
    .unwrap();
    file
}

/// Run a consumer, replay `file`, and wait until `n` notifications are
/// stamped sent and the queue is empty; then stop the consumer.
fn notify_through(s: &Scenario, file: &Path, n: u64) {
    let mut d = vec![s.daemon(0)];
    ok(s.run(&["queue", "replay", file.to_str().unwrap()]));
    let t0 = Instant::now();
    loop {
        let sent = if s.has_table("_repaero_queue_notices") {
            s.db.one("SELECT count(*) FROM _repaero_queue_notices WHERE sent_at IS NOT NULL")
        } else {
            String::new()
        };
        if sent == n.to_string() && depth(&format!("{}.q", s.prefix)) == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{sent}: {}",
            s.logs()
        );
        if let Some(st) = d[0].try_wait().unwrap() {
            panic!("exited {st}: {}", s.logs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(d.pop().unwrap());
}

/// Booked, moved, cancelled: one SMS each, none for a redelivery or an
/// older event arriving late, none twice.
#[test]
fn each_booking_event_is_notified_once() {
    let (port, sms) = sms_double();
    let url = format!("alerts.sms.url=http://127.0.0.1:{port}/sms");
    let s = sqlite(
        "notify",
        &[
            &url,
            r#"alerts.sms.to=["+33600000000"]"#,
            r#"alerts.sms.body='{"to": "{to}", "text": "{event} {appointment} {start}"}'"#,
        ],
    );
    let file = booking_stream(&s);
    notify_through(&s, &file, 3);
    let mut texts = sms.lock().unwrap().clone();
    texts.sort();
    assert_eq!(
        texts,
        vec![
            r#"{"to": "+33600000000", "text": "appointment.cancelled RDV-2026-0042 05/11/2026 10:00"}"#,
            r#"{"to": "+33600000000", "text": "appointment.created RDV-2026-0042 05/11/2026 09:00"}"#,
            r#"{"to": "+33600000000", "text": "appointment.rescheduled RDV-2026-0042 05/11/2026 10:00"}"#,
        ]
    );
    // the late reschedule is superseded but counted
    let row =
        s.db.rows("SELECT status, reschedule_count, last_message_id FROM appointments");
    assert_eq!(
        row,
        vec![vec![
            Some("cancelled".into()),
            Some("2".into()),
            Some("a3".into())
        ]]
    );
    let outcomes =
        s.db.rows("SELECT message_id, outcome FROM _repaero_messages ORDER BY 1");
    assert_eq!(
        outcomes,
        [
            ("a1", "applied"),
            ("a2", "applied"),
            ("a3", "applied"),
            ("a4", "superseded")
        ]
        .map(|(a, b)| vec![Some(a.to_string()), Some(b.to_string())])
        .to_vec()
    );
}

/// The same events by e-mail only (`channels = ["email"]`): three mails to
/// the workshop's address, subject and text in French, times in Paris time,
/// the reason of the cancellation; nothing for the redelivery or the late
/// reschedule, and no SMS although `[alerts.sms]` is configured.
#[test]
fn each_booking_event_is_mailed_once() {
    let (smtp, mails) = smtp_listener();
    let (port, sms) = sms_double();
    let server = format!("alerts.email.server=smtp+plain://127.0.0.1:{smtp}");
    let gateway = format!("alerts.sms.url=http://127.0.0.1:{port}/sms");
    let s = sqlite(
        "mail",
        &[
            &server,
            "alerts.email.from=repaero@repaero.fr",
            r#"alerts.email.to=["atelier@repaero.fr"]"#,
            &gateway,
            r#"alerts.sms.to=["+33600000000"]"#,
            r#"alerts.sms.body='{"text": "{text}"}'"#,
            r#"daemons.queue.channels=["email"]"#,
        ],
    );
    let file = booking_stream(&s);
    notify_through(&s, &file, 3);
    let got = mails.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "{got:#?}");
    let mut read: Vec<(String, String)> = got.iter().map(|m| mail_text(m)).collect();
    read.sort();
    for m in &got {
        assert!(m.contains("To: atelier@repaero.fr"), "{m}");
    }
    let subjects: Vec<&str> = read.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "Intervention annulée : RDV-2026-0042 (F-GKXA)",
            "Intervention déplacée : RDV-2026-0042 (F-GKXA)",
            "Intervention réservée : RDV-2026-0042 (F-GKXA)",
        ]
    );
    let body = |i: usize| read[i].1.replace("\r\n", "\n");
    assert!(
        body(2).starts_with(
            "L'intervention RDV-2026-0042 « Visite 50 h » sur F-GKXA est réservée : du 05/11/2026 09:00 au 05/11/2026 18:00 (heure de Paris), technicien TECH-04, client contact@aeroclub-exemple.fr."
        ),
        "{}",
        body(2)
    );
    assert!(
        body(1).contains("est déplacée : du 05/11/2026 10:00 au"),
        "{}",
        body(1)
    );
    assert!(body(0).contains("est annulée"), "{}", body(0));
    assert!(body(0).contains("\nMotif : météo"), "{}", body(0));
    assert!(!body(2).contains("Motif"), "{}", body(2));
    assert!(sms.lock().unwrap().is_empty());
}

/// The subject and text of a mail as sent over SMTP (RFC 2047 encoded
/// words in the subject; a 7bit, quoted-printable or base64 body).
fn mail_text(data: &str) -> (String, String) {
    use base64::Engine;
    let b64 = |s: &str| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.split_whitespace().collect::<String>())
            .unwrap();
        String::from_utf8(bytes).unwrap()
    };
    let (head, body) = data
        .replace("\r\n", "\n")
        .split_once("\n\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap();
    // unfold the header lines
    let head = head.replace("\n ", " ").replace("\n\t", " ");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or("")
            .to_string()
    };
    // the space between two encoded words is not text; any other is
    let mut subject = String::new();
    let mut prev_encoded = false;
    for w in header("Subject").split(' ') {
        let lower = w.to_ascii_lowercase();
        let decoded = if lower.starts_with("=?utf-8?b?") && w.ends_with("?=") {
            Some(b64(&w[10..w.len() - 2]))
        } else if lower.starts_with("=?utf-8?q?") && w.ends_with("?=") {
            Some(qp(&w[10..w.len() - 2].replace('_', " ")))
        } else {
            None
        };
        let joined = prev_encoded && decoded.is_some();
        if !subject.is_empty() && !joined {
            subject.push(' ');
        }
        prev_encoded = decoded.is_some();
        subject.push_str(&decoded.unwrap_or_else(|| w.to_string()));
    }
    let text = match header("Content-Transfer-Encoding")
        .to_ascii_lowercase()
        .as_str()
    {
        "base64" => b64(&body),
        "quoted-printable" => qp(&body),
        _ => body,
    };
    (subject.trim().to_string(), text.trim_end().to_string())
}

/// Quoted-printable to text (soft line breaks removed).
fn qp(s: &str) -> String {
    let s = s.replace("=\n", "");
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'=' && i + 3 <= b.len())
            .then(|| u8::from_str_radix(&s[i + 1..i + 3], 16).ok())
            .flatten();
        if let Some(v) = hex {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}
