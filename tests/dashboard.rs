//! The dashboard and `repaero kpi` over a SQLite target, and the same over
//! a PostgreSQL one (the production-like target), holding the fixtures: the stock workbook, the Access clients base, the supplier
//! catalogues, a scanner export, the billing base (generated in a
//! PostgreSQL database of its own, migrated, dropped), a stream of booking
//! messages applied through the queue feed's store, supplier orders placed
//! from the suggestions and the stock alerts checked.
//!
//! `repaero kpi` is checked against values computed here from the raw
//! rows; the dashboard (the real binary, `repaero serve` on a free port)
//! is logged into per role with an HTTP client, and what its pages show is
//! checked against the database. On PostgreSQL the KPIs are also checked
//! once served from the summaries `repaero serve` builds (crate::rollup),
//! after rows are written, changed and deleted behind them, and after a
//! table is replaced under them.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use common::*;
use serde_json::Value as Json;

const GO_LIVE: &str = "2026-01";

struct Target {
    dir: tempfile::TempDir,
    /// A PostgreSQL target (dropped with it), else SQLite in `dir`.
    pg: Option<pg::TempDb>,
}

impl Target {
    fn new(pg: Option<pg::TempDb>) -> Target {
        Target {
            dir: tempfile::tempdir().unwrap(),
            pg,
        }
    }

    fn db(&self) -> Db {
        match &self.pg {
            Some(p) => Db::Pg(p.url()),
            None => Db::Sqlite(self.dir.path().join("t.db")),
        }
    }

    fn sets(&self) -> Vec<String> {
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

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_repaero"));
        cmd.current_dir(root())
            .arg("--config")
            .arg(root().join("repaero.toml"));
        for s in self.sets() {
            cmd.arg("--set").arg(s);
        }
        cmd.args(args)
            .env_remove("REPAERO_TARGET")
            .env_remove("RUST_LOG");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run repaero")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(code(&o), 0, "{args:?}\n{}\n{}", stdout(&o), stderr(&o));
        stdout(&o)
    }

    /// Rows of a query on the target, every value as text (also runs
    /// statements that return none).
    fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.db().rows(sql)
    }

    fn one(&self, sql: &str) -> String {
        self.rows(sql)[0][0].clone().unwrap_or_default()
    }
}

/// The fixtures migrated and fed into a fresh target: SQLite, or a
/// PostgreSQL database of its own.
fn target(name: &str, postgres: bool) -> Target {
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

fn apply_queue(t: &Target, file: &Path) {
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

fn month(s: &str) -> String {
    s[..7].to_string()
}

/// month → (value, count)
type Monthly = BTreeMap<String, (f64, u64)>;

fn expected(t: &Target) -> BTreeMap<&'static str, Monthly> {
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
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn kpi_equals_values_computed_from_the_rows() {
    check_kpi(&target("kpi", false));
}

/// `repaero kpi --json` against the values computed from the rows.
fn check_kpi(t: &Target) {
    let want = expected(t);
    let got: Json = serde_json::from_str(&t.ok(&["kpi", "--json"])).unwrap();
    assert_eq!(got["go_live"], GO_LIVE);
    let factors = [
        ("appointments", 1.15),
        ("payment_days", 0.85),
        ("stock_outs", 0.10),
        ("orders_per_intervention", 0.5),
    ];
    for (key, factor) in factors {
        let ind = got["indicators"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["key"] == key)
            .unwrap_or_else(|| panic!("no indicator {key}"));
        let w = &want[key];
        assert!(!w.is_empty(), "{key}: the fixtures give no data");
        let months: Vec<&Json> = ind["months"].as_array().unwrap().iter().collect();
        assert_eq!(months.len(), w.len(), "{key}: months {months:?} vs {w:?}");
        for m in &months {
            let name = m["month"].as_str().unwrap();
            let (v, n) = w[name];
            assert!(
                close(m["value"].as_f64().unwrap(), v),
                "{key} {name}: {} vs {v}",
                m["value"]
            );
            assert_eq!(m["count"].as_u64().unwrap(), n, "{key} {name}");
            assert_eq!(m["baseline"].as_bool().unwrap(), name < GO_LIVE);
        }
        let base: Vec<f64> = w
            .iter()
            .filter(|(m, _)| m.as_str() < GO_LIVE)
            .map(|(_, (v, _))| *v)
            .collect();
        if base.is_empty() {
            assert!(ind["baseline"].is_null(), "{key}");
            assert!(ind["target"].is_null(), "{key}");
        } else {
            let b = base.iter().sum::<f64>() / base.len() as f64;
            assert!(
                close(ind["baseline"].as_f64().unwrap(), b),
                "{key} baseline"
            );
            assert!(
                close(ind["target"].as_f64().unwrap(), b * factor),
                "{key} target"
            );
        }
    }
    // the three the data cannot measure are listed, not invented
    let not_held: Vec<&str> = got["not_held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        not_held,
        [
            "inventory_accuracy",
            "client_satisfaction",
            "recommendation"
        ]
    );
    // the payment KPI has a baseline on the fixtures (2024–2025 invoices)
    let pay = &want["payment_days"];
    assert!(pay.keys().any(|m| m.as_str() < GO_LIVE) && pay.keys().any(|m| m.as_str() >= GO_LIVE));

    // one month, and the Markdown form
    let m = want["payment_days"].keys().last().unwrap().clone();
    let one: Json = serde_json::from_str(&t.ok(&["kpi", "--month", &m, "--json"])).unwrap();
    for ind in one["indicators"].as_array().unwrap() {
        for x in ind["months"].as_array().unwrap() {
            assert_eq!(x["month"], m.as_str());
        }
    }
    let md = t.ok(&["kpi", "--md"]);
    assert!(
        md.contains("## Average days from invoice to payment"),
        "{md}"
    );
    let bad = t.run(&["kpi", "--month", "2026-13"]);
    assert_eq!(code(&bad), 2, "{}", stderr(&bad));
}

/// On PostgreSQL: the direct queries, then the summaries `repaero serve`
/// builds, kept by the triggers through inserts, updates and deletes,
/// actually read, and left aside once a table is replaced under them.
#[test]
fn kpi_on_postgres_equals_values_computed_from_the_rows() {
    use repaero::rollup::{self, Rollup};
    let t = target("kpi_pg", true);
    let mut sink = repaero::sink::open(&t.db().url(), false).unwrap();
    let mut fresh = |r: Rollup| rollup::fresh(sink.conn().unwrap(), r).unwrap();
    assert!(!fresh(Rollup::Moves) && !fresh(Rollup::Paid));
    check_kpi(&t);

    let mut sink = repaero::sink::open(&t.db().url(), false).unwrap();
    let created = repaero::serve::indexes::prepare(sink.conn().unwrap()).unwrap();
    assert!(created.contains(&"repaero_movements_part"), "{created:?}");
    let mut fresh = |r: Rollup| rollup::fresh(sink.conn().unwrap(), r).unwrap();
    assert!(fresh(Rollup::Moves) && fresh(Rollup::Paid));
    assert!(fresh(Rollup::Invoices) && fresh(Rollup::Methods));
    billing_summaries_match(&t);
    assert_eq!(
        t.one("SELECT sum(outs) FROM _repaero_roll_moves"),
        t.one("SELECT count(*) FROM stock_movements WHERE direction = 'OUT'")
    );
    check_kpi(&t);

    // rows written, changed and deleted behind the summaries
    t.rows(
        "INSERT INTO stock_movements (line_id, scanned_at, barcode, reference, quantity, direction, operator, stock_after, file, line) \
         SELECT 'test-' || g, timestamp '2025-03-10 10:00' + g * interval '9 days', '3700000000001', 'TEST-1', 1, \
                CASE WHEN g % 3 = 0 THEN 'IN' ELSE 'OUT' END, 'op', g % 2, 'test.csv', g FROM generate_series(1, 80) g",
    );
    t.rows("UPDATE stock_movements SET stock_after = 0 WHERE line_id IN (SELECT line_id FROM stock_movements WHERE direction = 'OUT' AND stock_after <> 0 ORDER BY line_id LIMIT 7)");
    t.rows("UPDATE stock_movements SET direction = 'IN' WHERE line_id = 'test-2'");
    t.rows("DELETE FROM stock_movements WHERE line_id LIKE 'test-1%'");
    t.rows(
        "INSERT INTO payments (id, invoice_id, paid_on, amount, method) \
         SELECT 900000 + id, id, issued_on + 200, 1, 'carte' FROM invoices WHERE status = 'payée' AND id % 5 = 0",
    );
    t.rows("UPDATE invoices SET status = 'payée' WHERE status = 'partiellement payée'");
    t.rows("UPDATE invoices SET deleted_at = now() WHERE id % 7 = 0");
    t.rows("DELETE FROM payments WHERE id % 11 = 0");
    t.rows("UPDATE payments SET paid_on = paid_on + 3 WHERE id % 13 = 0");
    t.rows("UPDATE payments SET method = 'chèque', amount = amount + 1 WHERE id % 17 = 0");
    t.rows("UPDATE invoices SET due_on = NULL WHERE id % 19 = 0");
    assert!(fresh(Rollup::Moves) && fresh(Rollup::Paid));
    assert!(fresh(Rollup::Invoices) && fresh(Rollup::Methods));
    check_kpi(&t);
    billing_summaries_match(&t);

    // the KPIs are read from the summary: one stock-out more there shows
    let month = t.one("SELECT max(month) FROM _repaero_roll_moves WHERE outs > 0");
    let outs = |t: &Target| -> f64 {
        let k: Json = serde_json::from_str(&t.ok(&["kpi", "--month", &month, "--json"])).unwrap();
        k["indicators"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["key"] == "stock_outs")
            .unwrap()["months"][0]["value"]
            .as_f64()
            .unwrap()
    };
    let before = outs(&t);
    t.rows(&format!(
        "UPDATE _repaero_roll_moves SET zeros = zeros + 1 WHERE month = '{month}'"
    ));
    assert_eq!(outs(&t), before + 1.0);
    t.rows(&format!(
        "UPDATE _repaero_roll_moves SET zeros = zeros - 1 WHERE month = '{month}'"
    ));

    // a table replaced (a migration in replace mode): the direct query
    // answers until the summary is rebuilt
    t.rows(
        "CREATE TABLE moved AS SELECT * FROM stock_movements; DROP TABLE stock_movements; \
         ALTER TABLE moved RENAME TO stock_movements; DELETE FROM stock_movements WHERE line_id LIKE 'test-%'",
    );
    assert!(!fresh(Rollup::Moves) && fresh(Rollup::Paid));
    check_kpi(&t);
    let built = rollup::ensure(sink.conn().unwrap()).unwrap();
    assert_eq!(built, [Rollup::Moves]);
    check_kpi(&t);
}

/// The billing page's summaries hold what the tables give, group by group.
fn billing_summaries_match(t: &Target) {
    assert_eq!(
        t.rows("SELECT status, due_on, n, total, totals FROM _repaero_roll_invoices WHERE n > 0 ORDER BY 1, 2"),
        t.rows(
            "SELECT coalesce(status, ''), coalesce(due_on, 'infinity'), count(*), coalesce(sum(total_incl_tax), 0), count(total_incl_tax) \
             FROM invoices WHERE deleted_at IS NULL GROUP BY 1, 2 ORDER BY 1, 2"
        )
    );
    assert_eq!(
        t.rows("SELECT method, n, amount, amounts FROM _repaero_roll_methods WHERE n > 0 ORDER BY 1"),
        t.rows(
            "SELECT coalesce(method, ''), count(*), coalesce(sum(amount), 0), count(amount) FROM payments GROUP BY 1 ORDER BY 1"
        )
    );
}

// ---------------------------------------------------------------------------
// The dashboard.

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(t: &Target) -> Server {
    let mut child = t
        .command(&["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(t.dir.path().join("serve.log")).unwrap())
        .spawn()
        .expect("start repaero serve");
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("serve said {line:?}"))
        .to_string();
    Server { child, base }
}

fn add_user(t: &Target, name: &str, role: &str, password: &str) {
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

struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

struct Answer {
    status: u16,
    location: Option<String>,
    cookie: Option<String>,
    body: String,
}

impl Http {
    fn new(base: &str) -> Http {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Http {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_string(),
        }
    }

    fn send(&self, r: reqwest::RequestBuilder) -> Answer {
        self.rt.block_on(async {
            let r = r.send().await.unwrap();
            let h = |n: &str| {
                r.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from)
            };
            let location = h("location");
            let cookie = h("set-cookie");
            let status = r.status().as_u16();
            Answer {
                status,
                location,
                cookie,
                body: r.text().await.unwrap(),
            }
        })
    }

    fn get(&self, path: &str, session: Option<&str>) -> Answer {
        let mut r = self.client.get(format!("{}{path}", self.base));
        if let Some(s) = session {
            r = r.header("cookie", format!("repaero_session={s}"));
        }
        self.send(r)
    }

    fn post(&self, path: &str, session: Option<&str>, form: &[(&str, &str)]) -> Answer {
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(s) = session {
            r = r.header("cookie", format!("repaero_session={s}"));
        }
        self.send(r)
    }

    /// Log in; the session token, or the answer when none was given.
    fn login(&self, user: &str, password: &str) -> Result<String, Answer> {
        let a = self.post("/login", None, &[("user", user), ("password", password)]);
        match &a.cookie {
            Some(c) if a.status == 303 => {
                assert!(
                    c.contains("HttpOnly") && c.contains("SameSite=Strict"),
                    "{c}"
                );
                assert!(c.contains("Max-Age="), "{c}");
                let v = c
                    .split(';')
                    .next()
                    .and_then(|kv| kv.split_once('='))
                    .map(|(_, v)| v.to_string())
                    .unwrap();
                Ok(v)
            }
            _ => Err(a),
        }
    }
}

fn enc(s: &str) -> String {
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

/// The text of the element with this id (`<span id="x">text</span>`).
fn by_id(html: &str, id: &str) -> String {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id}"));
    let start = at + html[at..].find('>').unwrap() + 1;
    let end = start + html[start..].find('<').unwrap();
    html[start..end].to_string()
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field");
    let start = at + "name=\"csrf\" value=\"".len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

const PASSWORD: &str = "hangar-42-Sécurité";

#[test]
fn dashboard_per_role_shows_the_database_numbers() {
    check_dashboard(&target("serve", false));
}

#[test]
fn dashboard_on_postgres_shows_the_database_numbers() {
    check_dashboard(&target("serve_pg", true));
}

fn check_dashboard(t: &Target) {
    for (user, role) in [
        ("dir", "direction"),
        ("mag", "magasin"),
        ("atl", "atelier"),
        ("cpt", "comptabilite"),
    ] {
        add_user(t, user, role, PASSWORD);
    }
    let users = std::fs::read_to_string(t.dir.path().join("users.toml")).unwrap();
    assert!(users.contains("$argon2id$") && !users.contains(PASSWORD));
    let short = t
        .command(&["users", "add", "x", "--role", "direction"])
        .output()
        .unwrap();
    assert_ne!(code(&short), 0, "no password on stdin is refused");

    let srv = serve(t);
    let http = Http::new(&srv.base);
    if t.pg.is_some() {
        // the pages below read the summaries serve built at start
        assert_eq!(
            t.one("SELECT string_agg(name, ',' ORDER BY name) FROM _repaero_rollups"),
            "invoices,methods,moves,paid"
        );
    }

    // no session: to the login form
    let a = http.get("/stock", None);
    assert_eq!((a.status, a.location.as_deref()), (303, Some("/login")));

    // a wrong password, an unknown user: a clear page, no session
    let a = http.login("mag", "wrong password").unwrap_err();
    assert_eq!(a.status, 401);
    assert!(a.cookie.is_none());
    assert!(by_id(&a.body, "login-error").contains("wrong user name or password"));
    let a = http.login("nobody", PASSWORD).unwrap_err();
    assert_eq!(a.status, 401);
    assert!(a.cookie.is_none());

    // each role sees its pages, and 403 outside them
    let pages = ["/runs", "/stock", "/workshop", "/billing", "/kpi"];
    let allowed: [(&str, &[&str]); 4] = [
        ("dir", &pages),
        ("mag", &["/stock"]),
        ("atl", &["/workshop"]),
        ("cpt", &["/billing"]),
    ];
    let mut sessions = BTreeMap::new();
    for (user, mine) in allowed {
        let s = http
            .login(user, PASSWORD)
            .unwrap_or_else(|a| panic!("{user}: {}", a.status));
        for p in pages {
            let a = http.get(p, Some(&s));
            let want = if mine.contains(&p) { 200 } else { 403 };
            assert_eq!(a.status, want, "{user} {p}");
        }
        sessions.insert(user, s);
    }
    let dir = &sessions["dir"];

    // Stock: the parts and those at or under their minimum, the open alerts
    let html = http.get("/stock", Some(&sessions["mag"])).body;
    let parts = t.one("SELECT count(*) FROM parts");
    assert_eq!(by_id(&html, "parts-count"), parts);
    // the list is paged
    let listed = html
        .split("id=\"parts\"")
        .nth(1)
        .and_then(|x| x.split("</table>").next())
        .unwrap()
        .matches("<tr>")
        .count()
        - 1;
    let parts: usize = parts.parse().unwrap();
    assert_eq!(listed, parts.min(repaero::serve::stock::PARTS));
    assert_eq!(
        by_id(&html, "alerts-open"),
        t.one("SELECT count(*) FROM stock_alerts WHERE cleared_at IS NULL")
    );
    let mv_ref = t.one("SELECT reference FROM stock_movements ORDER BY scanned_at DESC LIMIT 1");
    let part = http.get(
        &format!("/stock/part?reference={}", enc(&mv_ref)),
        Some(&sessions["mag"]),
    );
    assert_eq!(part.status, 200);
    let drawn = part.body.matches("class=\"point\"").count();
    assert_eq!(
        drawn.to_string(),
        t.one(&format!(
            "SELECT count(*) FROM stock_movements WHERE reference = '{mv_ref}'"
        ))
    );
    let last_after = t.one(&format!(
        "SELECT stock_after FROM stock_movements WHERE reference = '{mv_ref}' ORDER BY scanned_at DESC, line_id DESC LIMIT 1"
    ));
    let last_point = part.body.rfind("class=\"point\"").unwrap();
    assert!(
        part.body[last_point..].contains(&format!("data-value=\"{last_after}\"")),
        "the chart ends at the part's stock"
    );

    // Billing: paid / pending / late as the database has them
    let html = http.get("/billing", Some(&sessions["cpt"])).body;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(
        by_id(&html, "invoices-paid"),
        t.one("SELECT count(*) FROM invoices WHERE status = 'payée' AND deleted_at IS NULL")
    );
    assert_eq!(
        by_id(&html, "invoices-late"),
        t.one(&format!(
            "SELECT count(*) FROM invoices WHERE status IN ('en attente', 'partiellement payée') AND due_on < '{today}' AND deleted_at IS NULL"
        ))
    );

    // Runs: a run's rejected rows, linked to the paged rejects
    let html = http.get("/runs", Some(dir)).body;
    let run = t.rows(
        "SELECT r.run_id, r.job, count(*) FROM _rejects r GROUP BY r.run_id, r.job ORDER BY count(*) DESC LIMIT 1",
    );
    let (run_id, job, n) = (
        run[0][0].clone().unwrap(),
        run[0][1].clone().unwrap(),
        run[0][2].clone().unwrap(),
    );
    assert!(
        html.contains(&format!(">{n}</a>")),
        "runs page shows {n} rejected for {job}"
    );
    let rj = http.get(
        &format!("/runs/rejects?run={}&job={}", enc(&run_id), enc(&job)),
        Some(dir),
    );
    assert_eq!(by_id(&rj.body, "rejects-total"), n);
    let n: usize = n.parse().unwrap();
    let shown = rj
        .body
        .split("id=\"rejects\"")
        .nth(1)
        .unwrap()
        .matches("<tr>")
        .count()
        - 1;
    assert_eq!(shown, n.min(50));

    // KPIs: the same numbers as `repaero kpi`, and the chart drawn from them
    let k: Json = serde_json::from_str(&t.ok(&["kpi", "--json"])).unwrap();
    let html = http.get("/kpi", Some(dir)).body;
    for ind in k["indicators"].as_array().unwrap() {
        let key = ind["key"].as_str().unwrap();
        for m in ind["months"].as_array().unwrap().iter().rev().take(24) {
            let month = m["month"].as_str().unwrap();
            let shown: f64 = by_id(&html, &format!("{key}-{month}")).parse().unwrap();
            assert!(
                (shown - m["value"].as_f64().unwrap()).abs() < 0.006,
                "{key} {month}"
            );
        }
    }
    let appts = k["indicators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == "appointments")
        .unwrap();
    let chart = html.split("id=\"kpi-chart\"").nth(1).unwrap();
    let bars = appts["months"].as_array().unwrap().len().min(24);
    assert_eq!(chart.matches("class=\"bar\"").count(), bars);
    let last = appts["months"].as_array().unwrap().last().unwrap();
    assert!(chart.contains(&format!(
        "data-label=\"{}\" data-value=\"{}\"",
        last["month"].as_str().unwrap(),
        last["value"].as_f64().unwrap() as i64
    )));

    // Workshop: appointments per technician and day
    let html = http.get("/workshop", Some(&sessions["atl"])).body;
    let per_day = t.rows(
        "SELECT coalesce(technician_id, '—'), substr(CAST(start_at AS TEXT), 1, 10), count(*) FROM appointments WHERE status <> 'cancelled' GROUP BY 1, 2 ORDER BY 2 DESC, 1 LIMIT 1",
    );
    let row = format!(
        "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
        per_day[0][0].as_deref().unwrap(),
        per_day[0][1].as_deref().unwrap(),
        per_day[0][2].as_deref().unwrap()
    );
    assert!(html.contains(&row), "{row}");

    // a form without its CSRF token changes nothing; with it, it does
    let open = t.one("SELECT count(*) FROM stock_alerts WHERE cleared_at IS NULL");
    assert_ne!(open, "0", "the fixtures have parts under their minimum");
    t.rows("DELETE FROM stock_alerts");
    let stock = http.get("/stock", Some(&sessions["mag"])).body;
    let token = csrf_of(&stock);
    let a = http.post("/stock/alerts/check", Some(&sessions["mag"]), &[]);
    assert_eq!(a.status, 403);
    let a = http.post(
        "/stock/alerts/check",
        Some(&sessions["mag"]),
        &[("csrf", "0000")],
    );
    assert_eq!(a.status, 403);
    let other = csrf_of(&http.get("/stock", Some(dir)).body);
    let a = http.post(
        "/stock/alerts/check",
        Some(&sessions["mag"]),
        &[("csrf", &other)],
    );
    assert_eq!(a.status, 403, "another session's token");
    assert_eq!(
        t.one("SELECT count(*) FROM stock_alerts"),
        "0",
        "nothing changed"
    );
    let a = http.post(
        "/stock/alerts/check",
        Some(&sessions["mag"]),
        &[("csrf", &token)],
    );
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(t.one("SELECT count(*) FROM stock_alerts"), open);

    // logout needs the token too, and ends the session
    let a = http.post("/logout", Some(&sessions["mag"]), &[]);
    assert_eq!(a.status, 403);
    assert_eq!(http.get("/stock", Some(&sessions["mag"])).status, 200);
    let a = http.post("/logout", Some(&sessions["mag"]), &[("csrf", &token)]);
    assert_eq!(a.status, 303);
    assert!(a.cookie.unwrap().contains("Max-Age=0"));
    assert_eq!(http.get("/stock", Some(&sessions["mag"])).status, 303);

    // failed logins are limited (max_failures = 5 per name and per
    // address; two failed above), even with the right password after
    for _ in 0..3 {
        assert_eq!(http.login("atl", "nope nope").unwrap_err().status, 401);
    }
    assert_eq!(http.login("atl", PASSWORD).unwrap_err().status, 429);
    drop(srv);
}

// ---------------------------------------------------------------------------
// Roles from a real directory: slapd (Debian) started here on a free port,
// seeded with a user in each group.

const SUFFIX: &str = "dc=repaero,dc=test";

struct Slapd {
    child: Child,
    url: String,
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn slapd(dir: &Path, users: &[(&str, &str)]) -> Slapd {
    let db = dir.join("ldap-db");
    std::fs::create_dir_all(&db).unwrap();
    let conf = dir.join("slapd.conf");
    std::fs::write(
        &conf,
        format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\n\
             pidfile {pid}\n\
             database mdb\nmaxsize 10485760\n\
             suffix \"{SUFFIX}\"\nrootdn \"cn=admin,{SUFFIX}\"\n\
             directory {db}\n\
             access to attrs=userPassword by anonymous auth by self read by * none\n\
             access to * by * read\n",
            pid = dir.join("slapd.pid").display(),
            db = db.display()
        ),
    )
    .unwrap();
    let mut ldif = format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: repaero\ndc: repaero\n\n\
         dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n"
    );
    for (user, group) in users {
        ldif.push_str(&format!(
            "dn: uid={user},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {user}\ncn: {user}\nsn: {user}\nuserPassword: {PASSWORD}\n\n\
             dn: cn={group},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {group}\nmember: uid={user},ou=people,{SUFFIX}\n\n"
        ));
    }
    let seed = dir.join("seed.ldif");
    std::fs::write(&seed, ldif).unwrap();
    let o = Command::new("/usr/sbin/slapadd")
        .arg("-f")
        .arg(&conf)
        .arg("-l")
        .arg(&seed)
        .output()
        .expect("slapadd (Debian package slapd)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let port = free_port();
    let url = format!("ldap://127.0.0.1:{port}");
    let child = Command::new("/usr/sbin/slapd")
        .arg("-f")
        .arg(&conf)
        .arg("-h")
        .arg(format!("{url}/"))
        .args(["-d", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start slapd");
    // the guard stops it whatever happens next
    let slapd = Slapd { child, url };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return slapd;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("slapd did not listen on {}", slapd.url);
}

#[test]
fn ldap_groups_are_the_roles() {
    let t = Target::new(None);
    let users = [
        ("marie", "direction"),
        ("paul", "magasin"),
        ("ines", "atelier"),
        ("luc", "comptabilite"),
    ];
    let dir = t.dir.path().to_path_buf();
    let mut ldap = slapd(&dir, &users);
    let sets = [
        format!("serve.ldap.url={}", ldap.url),
        format!("serve.ldap.user_dn=uid={{user}},ou=people,{SUFFIX}"),
        format!("serve.ldap.group_base=ou=groups,{SUFFIX}"),
    ];
    let mut args: Vec<&str> = Vec::new();
    for s in &sets {
        args.extend(["--set", s.as_str()]);
    }
    args.extend(["serve", "--listen", "127.0.0.1:0"]);
    let mut child = t
        .command(&args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let srv = Server {
        base: line.trim().trim_start_matches("listening on ").to_string(),
        child,
    };
    let http = Http::new(&srv.base);

    let pages = ["/runs", "/stock", "/workshop", "/billing", "/kpi"];
    let mine: [&[&str]; 4] = [&pages, &["/stock"], &["/workshop"], &["/billing"]];
    for ((user, _), mine) in users.iter().zip(mine) {
        let s = http
            .login(user, PASSWORD)
            .unwrap_or_else(|a| panic!("{user}: {} {}", a.status, a.body));
        for p in pages {
            let want = if mine.contains(&p) { 200 } else { 403 };
            assert_eq!(http.get(p, Some(&s)).status, want, "{user} {p}");
        }
    }
    let a = http.login("paul", "not his password").unwrap_err();
    assert_eq!(a.status, 401);
    assert!(a.cookie.is_none());
    let a = http.login("nobody", PASSWORD).unwrap_err();
    assert_eq!(a.status, 401);
    assert!(a.cookie.is_none());

    // the directory down: a clear page, no session
    let _ = ldap.child.kill();
    let _ = ldap.child.wait();
    let a = http.login("paul", PASSWORD).unwrap_err();
    assert_eq!(a.status, 503);
    assert!(a.cookie.is_none());
    assert!(by_id(&a.body, "login-error").contains("directory cannot be reached"));
    drop(srv);
}
