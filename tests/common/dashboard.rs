//! The dashboard's test bench, shared by tests/dashboard.rs (over HTTP)
//! and tests/browser.rs (in headless Chromium): a target (SQLite, or a
//! PostgreSQL database of its own) holding
//! the fixtures migrated and the daemons' fixtures fed, the KPIs computed
//! independently from its rows, `repaero serve` on a free port, file users.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value as Json;

use super::*;

pub const GO_LIVE: &str = "2026-01";

pub struct Target {
    pub dir: tempfile::TempDir,
    /// A PostgreSQL target (dropped with it), else SQLite in `dir`.
    pub pg: Option<pg::TempDb>,
}

impl Target {
    /// A target with nothing in it yet (SQLite in its folder).
    pub fn empty() -> Target {
        Target::new(None)
    }

    pub fn new(pg: Option<pg::TempDb>) -> Target {
        Target {
            dir: tempfile::tempdir().unwrap(),
            pg,
        }
    }

    pub fn db(&self) -> Db {
        match &self.pg {
            Some(p) => Db::Pg(p.url()),
            None => Db::Sqlite(self.dir.path().join("t.db")),
        }
    }

    pub fn sets(&self) -> Vec<String> {
        vec![
            format!("target.url={}", self.db().url()),
            format!("paths.quarantine={}", self.dir.path().join("q").display()),
            format!(
                "serve.users={}",
                self.dir.path().join("users.toml").display()
            ),
            "serve.secure_cookies=false".into(),
            "serve.max_failures=5".into(),
            format!("kpi.go_live=\"{GO_LIVE}\""),
        ]
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.command_with(&root().join("repaero.toml"), args)
    }

    /// The command with another configuration file (the same --set).
    pub fn command_with(&self, config: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_repaero"));
        cmd.current_dir(root()).arg("--config").arg(config);
        for s in self.sets() {
            cmd.arg("--set").arg(s);
        }
        cmd.args(args)
            .env_remove("REPAERO_TARGET")
            .env_remove("RUST_LOG");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run repaero")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(code(&o), 0, "{args:?}\n{}\n{}", stdout(&o), stderr(&o));
        stdout(&o)
    }

    /// Rows of a query on the target, every value as text (also runs
    /// statements that return none).
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.db().rows(sql)
    }

    pub fn one(&self, sql: &str) -> String {
        self.rows(sql)[0][0].clone().unwrap_or_default()
    }
}

/// The fixtures migrated and fed into a fresh target: SQLite, or a
/// PostgreSQL database of its own.
pub fn target(name: &str, postgres: bool) -> Target {
    let t = Target::new(postgres.then(|| pg::TempDb::new(&format!("dash_target_{name}"))));
    t.ok(&["migrate", "stock", "clients", "suppliers"]);
    t.ok(&["scans", "import", "fixtures/scans/scans.csv"]);

    // billing: its own PostgreSQL database, generated, migrated, dropped
    let pg = pg::TempDb::new(&format!("dash_{name}"));
    let billing_url = pg.url();
    let truth = t.dir.path().join("billing.json");
    t.ok(&[
        "fixtures",
        "billing",
        "--url",
        &billing_url,
        "--rows",
        "1500",
        "--out",
        truth.to_str().unwrap(),
    ]);
    let set = format!("sources.billing.url={billing_url}");
    t.ok(&["--set", &set, "migrate", "billing"]);
    drop(pg);

    // the booking queue's messages, through the feed's store
    let q = t.dir.path().join("queue.jsonl");
    t.ok(&[
        "fixtures",
        "queue",
        "--rows",
        "80",
        "--out",
        q.to_str().unwrap(),
    ]);
    apply_queue(&t, &q);

    t.ok(&["order", "place", "--json"]);
    t.ok(&["alerts", "check", "--json"]);
    t
}

pub fn apply_queue(t: &Target, file: &Path) {
    use repaero::daemon::queue::store;
    let cfg = repaero::config::Config::load(
        &repaero::config::LoadOptions {
            path: Some(root().join("repaero.toml")),
            sets: t.sets(),
        },
        &repaero::config::ProcessEnv,
    )
    .unwrap();
    let cents = |e: f64| (e * 100.0).round() as i64;
    let rules = store::Rules {
        rates: repaero::fixtures::queue::RATES
            .iter()
            .map(|(k, v)| (k.to_string(), cents(*v)))
            .collect(),
        default_rate: cents(repaero::fixtures::queue::DEFAULT_RATE),
        notify: Vec::new(),
        channels: Vec::new(),
    };
    let mut sink = repaero::sink::open(&cfg.target.url, false).unwrap();
    store::prepare(sink.as_mut()).unwrap();
    let items: Vec<store::Incoming> = std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let key = serde_json::from_str::<Json>(l)
                .ok()
                .and_then(|v| v["event_type"].as_str().map(String::from))
                .unwrap_or_else(|| "unreadable".into());
            store::Incoming::new(&key, l.as_bytes().to_vec())
        })
        .collect();
    for chunk in items.chunks(50) {
        store::apply_batch(sink.as_mut(), &cfg, &rules, chunk).unwrap();
    }
}

// ---------------------------------------------------------------------------
// The KPIs, computed here from the raw rows.

pub fn month(s: &str) -> String {
    s[..7].to_string()
}

/// month → (value, count)
pub type Monthly = BTreeMap<String, (f64, u64)>;

pub fn expected(t: &Target) -> BTreeMap<&'static str, Monthly> {
    let mut out = BTreeMap::new();

    let mut appts = Monthly::new();
    for r in t.rows("SELECT status, start_at FROM appointments") {
        if r[0].as_deref() != Some("cancelled")
            && let Some(at) = &r[1]
        {
            let e = appts.entry(month(at)).or_default();
            e.0 += 1.0;
            e.1 += 1;
        }
    }
    for r in t.rows("SELECT status, performed_at, message_id FROM interventions") {
        if r[0].as_deref() != Some("Annulee")
            && r[2].is_none()
            && let Some(at) = &r[1]
        {
            let e = appts.entry(month(at)).or_default();
            e.0 += 1.0;
            e.1 += 1;
        }
    }
    out.insert("appointments", appts);

    // invoice → (issued, last payment)
    let mut last: BTreeMap<String, (String, String)> = BTreeMap::new();
    let paid: BTreeMap<String, String> = t
        .rows("SELECT id, issued_on FROM invoices WHERE status = 'payée' AND deleted_at IS NULL")
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    for r in t.rows("SELECT invoice_id, paid_on FROM payments") {
        let id = r[0].clone().unwrap();
        let on = r[1].clone().unwrap();
        if let Some(issued) = paid.get(&id) {
            let e = last.entry(id).or_insert((issued.clone(), on.clone()));
            if on > e.1 {
                e.1 = on;
            }
        }
    }
    let day = |s: &str| chrono::NaiveDate::parse_from_str(&s[..10], "%Y-%m-%d").unwrap();
    let mut sums: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    for (issued, paid_on) in last.values() {
        let e = sums.entry(month(paid_on)).or_default();
        e.0 += (day(paid_on) - day(issued)).num_days() as f64;
        e.1 += 1;
    }
    out.insert(
        "payment_days",
        sums.into_iter()
            .map(|(m, (s, n))| (m, (s / n as f64, n)))
            .collect(),
    );

    let mut outs = Monthly::new();
    for r in t.rows("SELECT scanned_at, direction, stock_after FROM stock_movements") {
        if r[1].as_deref() == Some("OUT") {
            let e = outs.entry(month(r[0].as_deref().unwrap())).or_default();
            e.1 += 1;
            if r[2].as_deref() == Some("0") {
                e.0 += 1.0;
            }
        }
    }
    out.insert("stock_outs", outs);

    let mut done: BTreeMap<String, u64> = BTreeMap::new();
    for r in t.rows("SELECT status, performed_at FROM interventions") {
        if r[0].as_deref() == Some("Terminee")
            && let Some(at) = &r[1]
        {
            *done.entry(month(at)).or_default() += 1;
        }
    }
    let mut orders: BTreeMap<String, u64> = BTreeMap::new();
    for r in t.rows("SELECT placed_at FROM supplier_orders") {
        *orders.entry(month(r[0].as_deref().unwrap())).or_default() += 1;
    }
    out.insert(
        "orders_per_intervention",
        done.iter()
            .map(|(m, n)| {
                let o = orders.get(m).copied().unwrap_or(0) as f64;
                (m.clone(), (o / *n as f64, *n))
            })
            .collect(),
    );
    // months after the current one are not measured yet
    let now = chrono::Utc::now().format("%Y-%m").to_string();
    for monthly in out.values_mut() {
        monthly.retain(|m, _| *m <= now);
    }
    out
}

pub fn indicator<'a>(kpi: &'a Json, key: &str) -> &'a Json {
    kpi["indicators"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["key"] == key)
        .unwrap_or_else(|| panic!("no indicator {key} in {kpi}"))
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

// ---------------------------------------------------------------------------
// The dashboard, served.

pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `repaero serve` on a free port of 127.0.0.1 (its log in the target's
/// folder), stopped when the guard goes.
pub fn serve(t: &Target) -> Server {
    serve_with(t, &[])
}

/// `repaero serve` with more `--set`s (`key=value`).
pub fn serve_with(t: &Target, sets: &[String]) -> Server {
    let mut args: Vec<&str> = Vec::new();
    for s in sets {
        args.extend(["--set", s.as_str()]);
    }
    args.extend(["serve", "--listen", "127.0.0.1:0"]);
    start(t.command(&args), &t.dir.path().join("serve.log"))
}

/// `repaero serve` as `cmd` says, its log in `log`.
pub fn start(mut cmd: Command, log: &Path) -> Server {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start repaero serve");
    let out = child.stdout.take().unwrap();
    // the guard stops it whatever happens next
    let mut srv = Server {
        child,
        base: String::new(),
    };
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    srv.base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("serve said {line:?}"))
        .to_string();
    srv
}

pub fn add_user(t: &Target, name: &str, role: &str, password: &str) {
    let mut child = t
        .command(&["users", "add", name, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A file user in each default role: dir (direction), mag (magasin), atl
/// (atelier), cpt (comptabilite), all with `PASSWORD`.
pub fn add_role_users(t: &Target) {
    for (user, role) in [
        ("dir", "direction"),
        ("mag", "magasin"),
        ("atl", "atelier"),
        ("cpt", "comptabilite"),
    ] {
        add_user(t, user, role, PASSWORD);
    }
}

pub const PASSWORD: &str = "hangar-42-Sécurité";
