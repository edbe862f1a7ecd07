//! The scheduler and the health check through the real binary: two
//! `repaero schedule` processes sharing a PostgreSQL target, a scheduler
//! killed and restarted after missed ticks, a validation that regresses
//! between two scheduled runs (mailed to an SMTP listener on 127.0.0.1),
//! `repaero check` as Nagios runs it, `/metrics` through `promtool check
//! metrics`, and the systemd units through `systemd-analyze verify`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use repaero::batch::Value;
use repaero::db::Conn;

/// A project in `dir`: one CSV source of three items, the job `items`
/// writing them to `items`, its validation (a count by id), and
/// `[schedule.items]` on `cron`.
fn project(dir: &Path, cron: &str, validate: bool) -> PathBuf {
    for d in ["in", "jobs", "mappings", "validation"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("in/items.csv"),
        "id;name\n1;rivet\n2;seal\n3;valve\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("jobs/items.toml"),
        "source = \"items\"\n[[tables]]\nmapping = \"items\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("mappings/items.toml"),
        "[source]\ntable = \"items.csv\"\n[target]\ntable = \"items\"\nkey = [\"id\"]\nmode = \"upsert\"\n\
         [[columns]]\nname = \"id\"\nfrom = \"id\"\ntype = \"integer\"\nrequired = true\n\
         [[columns]]\nname = \"name\"\nfrom = \"name\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("validation/items.toml"),
        "[[metrics]]\nid = \"I1\"\ntitle = \"Items\"\nkind = \"count\"\nexplain = \"items\"\n\
         key = { source = \"id\", target = \"id\", type = \"integer\" }\n",
    )
    .unwrap();
    let config = dir.join("repaero.toml");
    std::fs::write(
        &config,
        format!(
            "[target]\nurl = \"sqlite://t.db\"\n\
             [sources.items]\nkind = \"csv\"\npath = \"in\"\n\
             [paths]\nquarantine = \"q\"\n\
             [daemons]\nheartbeat = 1\nshutdown_grace = 10\n\
             [schedule]\nreports = \"reports\"\nlock_dir = \"locks\"\npoll = 0.3\n\
             [schedule.items]\njob = \"items\"\ncron = \"{cron}\"\ntime_zone = \"Europe/Paris\"\nvalidate = {validate}\n"
        ),
    )
    .unwrap();
    config
}

fn command(config: &Path, sets: &[String], args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_repaero"));
    cmd.current_dir(config.parent().unwrap())
        .arg("--config")
        .arg(config);
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    cmd.args(args)
        .env_remove("REPAERO_TARGET")
        .env_remove("RUST_LOG");
    cmd
}

fn run(config: &Path, sets: &[String], args: &[&str]) -> Output {
    command(config, sets, args).output().expect("run repaero")
}

fn spawn(config: &Path, sets: &[String], args: &[&str]) -> Child {
    command(config, sets, args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start repaero")
}

/// Wait (at most `limit`) until `f` holds.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn conn(url: &str) -> Box<dyn Conn> {
    repaero::db::open(url, false).unwrap()
}

fn rows(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    conn(url).query(sql, &[]).unwrap()
}

fn count(url: &str, sql: &str) -> u64 {
    let mut c = conn(url);
    c.query_one(sql, &[])
        .unwrap()
        .unwrap_or_default()
        .parse()
        .unwrap_or(0)
}

/// The ticks run (`done` or `failed`): (tick, state, run_id, started, finished).
fn ticks_run(url: &str) -> Vec<Vec<Option<String>>> {
    let mut c = conn(url);
    if !c.table_exists("_repaero_ticks").unwrap() {
        return Vec::new();
    }
    c.query(
        "SELECT tick, state, run_id, started_at, finished_at, validation, notified_at FROM _repaero_ticks \
         WHERE state IN ('done', 'failed') ORDER BY tick",
        &[],
    )
    .unwrap()
}

fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

fn utc(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .with_timezone(&chrono::Utc)
}

#[test]
fn two_schedulers_on_one_postgres_target_run_each_tick_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = project(dir.path(), "*/2 * * * * *", false);
    let pg = pg::TempDb::new("sched_two");
    let sets = vec![format!("target.url={}", pg.url())];
    let mut a = spawn(&config, &sets, &["schedule"]);
    let mut b = spawn(&config, &sets, &["schedule"]);
    wait_for("five ticks run", Duration::from_secs(60), || {
        ticks_run(&pg.url()).len() >= 5
    });
    sigterm(&a);
    sigterm(&b);
    let (sa, sb) = (a.wait().unwrap(), b.wait().unwrap());
    let mut err = String::new();
    a.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    b.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(sa.success() && sb.success(), "{sa:?} {sb:?}\n{err}");

    let ticks = ticks_run(&pg.url());
    assert!(ticks.len() >= 5, "{ticks:?}");
    assert!(
        ticks.iter().all(|t| t[1].as_deref() == Some("done")),
        "{ticks:?}"
    );
    // one run of the job per tick, no more: each tick's run is in
    // _repaero_runs, and nothing else is
    let runs: Vec<String> = rows(
        &pg.url(),
        "SELECT run_id FROM _repaero_runs WHERE job = 'items' ORDER BY run_id",
    )
    .into_iter()
    .map(|r| r[0].clone().unwrap())
    .collect();
    let mut tick_runs: Vec<String> = ticks.iter().map(|t| t[2].clone().unwrap()).collect();
    tick_runs.sort();
    assert_eq!(runs, tick_runs);
    // no tick left out: a gap is only a tick that came while the run
    // before it was still going (caught up once)
    for w in ticks.windows(2) {
        let (t0, t1) = (
            utc(w[0][0].as_deref().unwrap()),
            utc(w[1][0].as_deref().unwrap()),
        );
        if (t1 - t0).num_seconds() > 2 {
            let finished = utc(w[0][4].as_deref().unwrap());
            assert!(
                finished > t0 + chrono::TimeDelta::seconds(2),
                "tick {t0} finished at {finished}, yet the next one run is {t1}"
            );
        }
    }
    assert_eq!(count(&pg.url(), "SELECT count(*) FROM items"), 3);
}

#[test]
fn a_killed_scheduler_restarted_after_missed_ticks_runs_the_latest_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = project(dir.path(), "*/3 * * * * *", false);
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let mut s = spawn(&config, &[], &["schedule"]);
    wait_for("a tick run", Duration::from_secs(30), || {
        !ticks_run(&url).is_empty()
    });
    s.kill().unwrap();
    s.wait().unwrap();
    let before = ticks_run(&url);
    let runs_before = count(&url, "SELECT count(*) FROM _repaero_runs");
    let last = utc(before.last().unwrap()[0].as_deref().unwrap());
    // two ticks or more go by with no scheduler
    wait_for("two missed ticks", Duration::from_secs(30), || {
        chrono::Utc::now() > last + chrono::TimeDelta::seconds(7)
    });
    let out = run(&config, &[], &["schedule", "--once", "--json"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    let outcomes: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let outcomes = outcomes.as_array().unwrap();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0]["state"], "done", "{outcomes:?}");
    let caught = utc(outcomes[0]["tick"].as_str().unwrap());
    assert!(
        caught >= last + chrono::TimeDelta::seconds(6),
        "{caught} after {last}"
    );
    let after = ticks_run(&url);
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    assert_eq!(
        count(&url, "SELECT count(*) FROM _repaero_runs"),
        runs_before + 1
    );
    // the ticks in between were not run, and a run left behind by the
    // killed scheduler (if it was killed mid-run) is marked abandoned
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM _repaero_ticks WHERE state = 'running'"
        ),
        0
    );
}

/// `repaero schedule --once --json` until it runs a tick (the first call
/// of a schedule only records where it starts); the outcome and exit code.
fn once_until_run(config: &Path, sets: &[String]) -> (serde_json::Value, i32) {
    let t0 = Instant::now();
    loop {
        let out = run(config, sets, &["schedule", "--once", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&out))
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&out), stderr(&out)));
        if let Some(o) = v.as_array().unwrap().iter().find(|o| o["state"] == "done") {
            return (o.clone(), code(&out));
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no tick run: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_validation_that_regresses_between_two_scheduled_runs_is_mailed_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = project(dir.path(), "* * * * * *", true);
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let (smtp, mails) = smtp_listener();
    let sets = vec![
        format!("alerts.email.server=smtp+plain://127.0.0.1:{smtp}"),
        "alerts.email.from=repaero@repaero.fr".to_string(),
        "alerts.email.to=[\"atelier@repaero.fr\"]".to_string(),
    ];
    // first run: validation holds
    let (o, c) = once_until_run(&config, &sets);
    assert_eq!((o["validation"].as_str(), c), (Some("ok"), 0), "{o}");
    assert_eq!(o["rows_written"], 3);
    // a row appears in the target that the source does not have
    conn(&url)
        .execute(
            "INSERT INTO items (id, name) VALUES (?1, ?2)",
            &[Value::Int(99), Value::Text("stray".into())],
        )
        .unwrap();
    let (o, c) = once_until_run(&config, &sets);
    assert_eq!((o["validation"].as_str(), c), (Some("regressed"), 3), "{o}");
    assert_eq!(o["notified"], true, "{o}");
    // still wrong at the next run: no new regression, no new mail
    let (o, c) = once_until_run(&config, &sets);
    assert_eq!((o["validation"].as_str(), c), (Some("mismatch"), 3), "{o}");
    assert_eq!(o["notified"], false, "{o}");

    let got = mails.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains("Subject: repaero: validation of items regressed"),
        "{}",
        got[0]
    );
    assert!(
        got[0].contains("REGRESSION items I1: verdict"),
        "{}",
        got[0]
    );
    let ticks = ticks_run(&url);
    let marks: Vec<(Option<&str>, bool)> = ticks
        .iter()
        .map(|t| (t[5].as_deref(), t[6].is_some()))
        .collect();
    assert_eq!(
        marks,
        vec![
            (Some("ok"), false),
            (Some("regressed"), true),
            (Some("mismatch"), false)
        ]
    );
    // each run's report is kept
    let kept = std::fs::read_dir(dir.path().join("reports/items"))
        .unwrap()
        .count();
    assert_eq!(kept, 3);
}

// ---------------------------------------------------------------------------
// Health.

fn check(config: &Path, sets: &[String]) -> (i32, String) {
    let out = run(config, sets, &["check"]);
    let line = stdout(&out);
    assert_eq!(line.lines().count(), 1, "one status line: {line}");
    (code(&out), line.trim_end().to_string())
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // axum answers with a length, not chunks, for these bodies
    (status, body.to_string())
}

#[test]
fn check_warns_on_a_stale_run_and_is_critical_once_a_daemon_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let config = project(dir.path(), "0 * * * *", false);
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let back = |c: &mut Box<dyn Conn>, col: &str| {
        c.batch(&format!(
            "UPDATE _repaero_ticks SET {col} = strftime('%Y-%m-%dT%H:%M:%SZ', {col}, '-3 hours')"
        ))
        .unwrap();
    };
    // the first sight of the schedule: it starts at its next tick
    let out = run(&config, &[], &["schedule", "--once", "--json"]);
    assert!(stdout(&out).contains("\"baseline\""), "{}", stdout(&out));
    let (c, line) = check(&config, &[]);
    assert_eq!(c, 0, "{line}");
    assert!(
        line.starts_with(
            "REPAERO OK - all well: target, 1 source(s), 1 schedule(s) | target_time="
        ),
        "{line}"
    );
    // a tick was missed long ago: --once runs the latest, once
    back(&mut conn(&url), "tick");
    let out = run(&config, &[], &["schedule", "--once", "--json"]);
    assert!(stdout(&out).contains("\"done\""), "{}", stdout(&out));
    assert_eq!(check(&config, &[]).0, 0);
    // that run is made three hours old: the schedule is late
    let mut c = conn(&url);
    back(&mut c, "tick");
    back(&mut c, "finished_at");
    drop(c);
    let (c, line) = check(&config, &[]);
    assert_eq!(c, 1, "{line}");
    assert!(
        line.starts_with("REPAERO WARNING - WARNING: schedule items: tick "),
        "{line}"
    );
    assert!(line.contains(" not run; last tick "), "{line}");
    let age: f64 = line
        .split("schedule_items_age=")
        .nth(1)
        .and_then(|s| s.split('s').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!((10_790.0..11_000.0).contains(&age), "{line}");
    // caught up
    run(&config, &[], &["schedule", "--once"]);
    assert_eq!(check(&config, &[]).0, 0);

    // the scheduler as a daemon: heartbeats, /health, /metrics
    let port = free_port();
    let sets = vec![format!("daemons.metrics=127.0.0.1:{port}")];
    let mut d = spawn(&config, &sets, &["schedule"]);
    wait_for("the heartbeat", Duration::from_secs(30), || {
        let mut c = conn(&url);
        c.table_exists("_repaero_heartbeats").unwrap()
            && c.query_one(
                "SELECT state FROM _repaero_heartbeats WHERE feed = 'schedule'",
                &[],
            )
            .unwrap()
            .as_deref()
                == Some("running")
    });
    wait_for("the metrics endpoint", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let (status, health) = http_get(port, "/health");
    assert_eq!(status, 200, "{health}");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["feeds"]["schedule"]["state"], "running");
    let (status, metrics) = http_get(port, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("repaero_feed_up{feed=\"schedule\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE repaero_feed_processed_total counter\n"));
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let verdict = promtool.wait_with_output().unwrap();
    assert!(
        verdict.status.success() && verdict.stdout.is_empty() && verdict.stderr.is_empty(),
        "promtool: {}{}\n{metrics}",
        String::from_utf8_lossy(&verdict.stdout),
        String::from_utf8_lossy(&verdict.stderr)
    );
    let (c, line) = check(&config, &[]);
    assert_eq!(c, 0, "{line}");
    assert!(line.contains("1 daemon(s)"), "{line}");
    assert!(line.contains("heartbeat_schedule_age="), "{line}");

    // killed: CRITICAL at once, not after missed beats
    let pid = d.id();
    d.kill().unwrap();
    d.wait().unwrap();
    let (c, line) = check(&config, &[]);
    assert_eq!(c, 2, "{line}");
    assert!(
        line.starts_with(&format!(
            "REPAERO CRITICAL - CRITICAL: daemon schedule: its process {pid} on "
        )),
        "{line}"
    );
    assert!(line.contains(" is gone"), "{line}");
}

#[test]
fn check_reads_remote_heartbeats_and_the_other_services_tables_when_they_exist() {
    let dir = tempfile::tempdir().unwrap();
    let config = project(dir.path(), "0 3 * * *", false);
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    run(&config, &[], &["schedule", "--once"]);
    let mut c = conn(&url);
    let beat = repaero::daemon::Beat {
        state: "running".into(),
        ..Default::default()
    };
    repaero::daemon::write_heartbeat(c.as_mut(), "queue", &beat, 10).unwrap();
    // from another machine: only its age tells
    let set_beat = |c: &mut Box<dyn Conn>, seconds_ago: i64| {
        let at = (chrono::Utc::now() - chrono::TimeDelta::seconds(seconds_ago))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        c.execute(
            "UPDATE _repaero_heartbeats SET host = 'hangar-2', pid = 1, beat_at = ?1",
            &[Value::Text(at)],
        )
        .unwrap();
    };
    set_beat(&mut c, 5);
    let (code, line) = check(&config, &[]);
    assert_eq!(code, 0, "{line}");
    // interval 10 s × missed_beats 3 = 30 s
    set_beat(&mut c, 31);
    let (code, line) = check(&config, &[]);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.contains(
            "CRITICAL: daemon queue: no heartbeat for 31 s (every 10 s expected, on hangar-2)"
        ),
        "{line}"
    );
    assert!(line.contains("heartbeat_queue_age=31s;;30;0;"), "{line}");
    set_beat(&mut c, 0);
    // the other services' tables, as they will be
    c.batch(
        "CREATE TABLE _dead_letters (id INTEGER, reason TEXT, replayed_at TEXT);
         INSERT INTO _dead_letters VALUES (1, 'bad json', NULL), (2, 'unknown', NULL), (3, 'x', '2026-01-01');
         CREATE TABLE shipments (id INTEGER, estimated_delivery TEXT, delivered_at TEXT);
         INSERT INTO shipments VALUES (1, '2020-01-02', NULL), (2, '2020-01-02', '2020-01-02'), (3, '2999-01-01', NULL);
         CREATE TABLE stock_alerts (id TEXT, cleared_at TEXT);
         INSERT INTO stock_alerts VALUES ('a', NULL), ('b', '2026-01-01');",
    )
    .unwrap();
    let (code, line) = check(&config, &[]);
    assert_eq!(code, 1, "{line}");
    for part in [
        "WARNING: 2 dead letter(s) waiting",
        "WARNING: 1 parcel(s) late against their estimate",
        "WARNING: 1 open stock alert(s)",
        "dead_letters=2;1;;0;",
        "late_parcels=1;1;;0;",
        "open_stock_alerts=1;1;;0;",
    ] {
        assert!(line.contains(part), "{part} not in {line}");
    }
    // thresholds from [check]
    let sets = vec![
        "check.dead_letters_warning=5".to_string(),
        "check.late_parcels_warning=5".to_string(),
        "check.open_alerts_warning=5".to_string(),
    ];
    assert_eq!(check(&config, &sets).0, 0);
    // an unreachable target is CRITICAL, a wrong configuration UNKNOWN
    let (code, line) = check(
        &config,
        &["target.url=postgres://postgres@127.0.0.1:1/none".to_string()],
    );
    assert_eq!(code, 2, "{line}");
    assert!(
        line.starts_with(
            "REPAERO CRITICAL - CRITICAL: target postgres://postgres@127.0.0.1:1/none unreachable"
        ),
        "{line}"
    );
    let (code, line) = check(&config, &["check.missed_beats=0".to_string()]);
    assert_eq!(code, 3, "{line}");
}

#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let units = root().join("scripts/systemd");
    let names: Vec<String> = ["queue", "ftp", "colissimo", "bank", "schedule"]
        .iter()
        .map(|d| format!("repaero-{d}.service"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for n in &names {
        // the unit as shipped, its binary the one just built (verify
        // checks that ExecStart's program exists)
        let text = std::fs::read_to_string(units.join(n)).unwrap();
        assert!(text.contains("ExecStart=/usr/local/bin/repaero "), "{n}");
        std::fs::write(
            dir.path().join(n),
            text.replace("/usr/local/bin/repaero", env!("CARGO_BIN_EXE_repaero")),
        )
        .unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(names.iter().map(|n| dir.path().join(n)))
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/test installs it)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn a_tick_left_running_is_taken_over_and_a_held_job_lock_defers_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = project(dir.path(), "0 * * * *", false);
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let once = || {
        let out = run(&config, &[], &["schedule", "--once", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&out))
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&out), stderr(&out)));
        v.as_array().unwrap().clone()
    };
    assert_eq!(once()[0]["state"], "baseline");
    // as a scheduler killed in the middle of the run leaves it
    conn(&url)
        .batch("UPDATE _repaero_ticks SET state = 'running', pid = 1")
        .unwrap();
    // another scheduler holds the job's lock: the tick waits
    std::fs::create_dir_all(dir.path().join("locks")).unwrap();
    let lock = std::fs::File::create(dir.path().join("locks/items.lock")).unwrap();
    lock.try_lock().unwrap();
    let o = once();
    assert_eq!(
        (o.len(), o[0]["state"].as_str()),
        (1, Some("busy")),
        "{o:?}"
    );
    assert!(!conn(&url).table_exists("_repaero_runs").unwrap());
    // the lock is free: the scheduler that held it is gone, the tick runs
    lock.unlock().unwrap();
    let o = once();
    assert_eq!(o[0]["state"], "done", "{o:?}");
    assert_eq!(count(&url, "SELECT count(*) FROM _repaero_runs"), 1);
    assert_eq!(
        rows(&url, "SELECT state FROM _repaero_ticks"),
        vec![vec![Some("done".to_string())]]
    );
    // and only once
    assert!(once().is_empty());
}
