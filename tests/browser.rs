//! The dashboard in a real browser: headless Chromium (Debian `chromium`)
//! driven over WebDriver (`chromedriver`, Debian `chromium-driver`) with
//! fantoccini, against the real binary (`repaero serve` on a free port)
//! over a target holding the fixtures migrated and the daemons' fixtures
//! fed (the booking queue's messages, the manufacturers' documents fetched
//! from an FTP server by the feed).
//!
//! What a person sees is read from the DOM (`innerText` of the tables, the
//! SVG marks' geometry) and compared with the database, queried here
//! independently. A screenshot of every page is saved as a PNG under
//! `<target dir>/browser-screenshots/` (or `$REPAERO_SCREENSHOTS`).
//!
//! Chromium and chromedriver are found at /usr/bin (or
//! `$REPAERO_CHROMIUM`, `$REPAERO_CHROMEDRIVER`); without them the test
//! fails and says what to install (scripts/test installs them).

mod common;
// the FTP fault injection goes unused here: only the files are served
#[allow(dead_code)]
#[path = "ftp_support/fake.rs"]
mod fake;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::dashboard::*;
use common::*;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value as Json, json};

// ---------------------------------------------------------------------------
// chromedriver and Chromium

/// chromedriver on a free port of 127.0.0.1, with a fresh Chromium
/// profile; stopped (and the profile removed) when the guard goes.
struct Driver {
    child: Child,
    url: String,
    chromium: PathBuf,
    profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tool(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

const INSTALL: &str = "install them with `apt-get install chromium chromium-driver` (scripts/test does), or point REPAERO_CHROMIUM and REPAERO_CHROMEDRIVER at them";

impl Driver {
    /// The tools at /usr/bin or where the environment says.
    fn start() -> Result<Driver, String> {
        Driver::start_with(
            &tool("REPAERO_CHROMEDRIVER", "/usr/bin/chromedriver"),
            &tool("REPAERO_CHROMIUM", "/usr/bin/chromium"),
        )
    }

    /// chromedriver started and answering, or why not, in words a person
    /// can act on.
    fn start_with(chromedriver: &Path, chromium: &Path) -> Result<Driver, String> {
        for (path, what) in [(chromedriver, "chromedriver"), (chromium, "Chromium")] {
            if !path.is_file() {
                return Err(format!(
                    "the browser tests need {what}, not found at {}: {INSTALL}",
                    path.display()
                ));
            }
        }
        let profile = tempfile::tempdir().map_err(|e| format!("a temporary profile: {e}"))?;
        let log = profile.path().join("chromedriver.log");
        let port = free_port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}; {INSTALL}", chromedriver.display()))?;
        // the guard stops it whatever happens next
        let mut d = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            chromium: chromium.to_path_buf(),
            profile,
        };
        let exited = |d: &mut Driver| match d.child.try_wait() {
            Ok(Some(status)) => Err(format!(
                "{} exited at start ({status}): {}",
                chromedriver.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            )),
            _ => Ok(()),
        };
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            exited(&mut d)?;
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // still running a moment later: the port may have been
                // taken by another test's process since it was picked free
                // (a driver that exited at once was found "listening" so)
                std::thread::sleep(Duration::from_millis(200));
                exited(&mut d)?;
                return Ok(d);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "{} did not listen on {} within 20 s",
            chromedriver.display(),
            d.url
        ))
    }

    /// Headless Chromium as root in a container: no sandbox, no GPU, no
    /// /dev/shm, the fresh profile.
    fn capabilities(&self) -> serde_json::Map<String, Json> {
        let user_data = self.profile.path().join("chromium");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", user_data.display()),
                    format!("--window-size={WIDTH},900"),
                    "--hide-scrollbars",
                    "--lang=en-GB",
                ],
            },
        });
        match caps {
            Json::Object(m) => m,
            _ => unreachable!("an object literal"),
        }
    }
}

/// The width of every screenshot; the height is the page's (at most
/// `MAX_HEIGHT`).
const WIDTH: u32 = 1280;
const MAX_HEIGHT: u32 = 4000;

fn screenshots_dir() -> PathBuf {
    let dir = std::env::var_os("REPAERO_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // CARGO_TARGET_TMPDIR is <target dir>/tmp
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .unwrap_or(Path::new(env!("CARGO_TARGET_TMPDIR")))
                .join("browser-screenshots")
        });
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("screenshots folder {}: {e}", dir.display()));
    dir
}

// ---------------------------------------------------------------------------
// The browser, driven step by step (each call waits for its answer).

struct Browser {
    rt: tokio::runtime::Runtime,
    client: Client,
    base: String,
    shots: PathBuf,
    taken: Vec<PathBuf>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // ends the WebDriver session: chromedriver closes Chromium
        let c = self.client.clone();
        let _ = self.rt.block_on(c.close());
    }
}

fn ok<T>(r: Result<T, CmdError>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("browser: {what}: {e}"))
}

/// A table as shown: its body's rows, each cell's text, without the
/// "none" row of an empty table.
const TABLE_JS: &str = "const t = document.getElementById(arguments[0]);
if (!t) return null;
return [...t.querySelectorAll('tbody tr')]
  .filter(r => !r.querySelector('td.empty'))
  .map(r => [...r.cells].map(c => c.innerText.trim()));";

impl Browser {
    fn open(driver: &Driver, base: &str) -> Browser {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = rt
            .block_on(
                ClientBuilder::new(connector)
                    .capabilities(driver.capabilities())
                    .connect(&driver.url),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "no Chromium session through {}: {e}\n{}",
                    driver.url,
                    std::fs::read_to_string(driver.profile.path().join("chromedriver.log"))
                        .unwrap_or_default()
                        .lines()
                        .rev()
                        .take(30)
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            });
        Browser {
            rt,
            client,
            base: base.to_string(),
            shots: screenshots_dir(),
            taken: Vec::new(),
        }
    }

    fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        ok(self.rt.block_on(self.client.goto(&url)), &url);
    }

    /// The path (and query) shown in the address bar.
    fn path(&self) -> String {
        let u = ok(self.rt.block_on(self.client.current_url()), "current URL");
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }

    /// Wait until the address bar shows `path` (a click's navigation).
    fn wait_path(&self, path: &str) {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            let now = self.path();
            if now == path {
                return;
            }
            assert!(Instant::now() < until, "still at {now}, expected {path}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn js(&self, script: &str, args: Vec<Json>) -> Json {
        ok(self.rt.block_on(self.client.execute(script, args)), script)
    }

    /// The element, once the page shows it (a form's answer may still be
    /// loading when the address bar already reads the same path).
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        ok(
            self.client
                .wait()
                .at_most(Duration::from_secs(15))
                .for_element(Locator::Css(css))
                .await,
            css,
        )
    }

    fn text(&self, css: &str) -> String {
        self.rt.block_on(async {
            let e = self.find(css).await;
            ok(e.text().await, css).trim().to_string()
        })
    }

    fn number(&self, css: &str) -> f64 {
        let t = self.text(css);
        t.parse()
            .unwrap_or_else(|_| panic!("{css} shows {t:?}, not a number"))
    }

    fn table(&self, id: &str) -> Vec<Vec<String>> {
        let v = self.js(TABLE_JS, vec![json!(id)]);
        serde_json::from_value(v.clone()).unwrap_or_else(|_| panic!("no table #{id}: {v}"))
    }

    fn click(&self, css: &str) {
        self.rt.block_on(async {
            let e = self.find(css).await;
            ok(e.click().await, css);
        })
    }

    fn type_into(&self, css: &str, text: &str) {
        self.rt.block_on(async {
            let e = self.find(css).await;
            ok(e.clear().await, css);
            ok(e.send_keys(text).await, css);
        })
    }

    /// Log in through the form (the page must be the login page).
    fn login(&self, user: &str, password: &str) {
        self.type_into("input[name=user]", user);
        self.type_into("input[name=password]", password);
        self.click("form[action='/login'] button");
    }

    /// The header's navigation: (text, href) of each link.
    fn nav(&self) -> Vec<(String, String)> {
        let v = self.js(
            "return [...document.querySelectorAll('header nav a')].map(a => [a.innerText.trim(), a.getAttribute('href')]);",
            vec![],
        );
        serde_json::from_value(v).unwrap()
    }

    /// The whole page (up to `MAX_HEIGHT`) as `<n>.png`; returns its path.
    fn shot(&mut self, name: &str) -> PathBuf {
        // measured in a short window (a tall one would be the page's height)
        ok(
            self.rt.block_on(self.client.set_window_size(WIDTH, 600)),
            "window size",
        );
        let v = self.js(
            "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight];",
            vec![],
        );
        let (page, chrome): (u32, u32) = serde_json::from_value(v).unwrap_or((900, 0));
        ok(
            self.rt.block_on(
                self.client
                    .set_window_size(WIDTH, (page + chrome).clamp(600, MAX_HEIGHT)),
            ),
            "window size",
        );
        let png = ok(self.rt.block_on(self.client.screenshot()), "screenshot");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "the screenshot of {name} is a PNG"
        );
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, &png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        self.taken.push(path.clone());
        path
    }
}

// ---------------------------------------------------------------------------
// The manufacturers' documents, fed by the FTP feed from a server.

fn pdf(text: &str) -> Vec<u8> {
    format!("%PDF-1.4\n% {text}\n1 0 obj << >> endobj\n%%EOF\n").into_bytes()
}

/// On the server: two models, three document types, two languages, one
/// reference in two revisions (the first one superseded).
const DOCS: &[&str] = &[
    "/out/C172/SB/SB-26-014_R2.pdf",
    "/out/C172/SB/SB-26-014_R2_FR.pdf",
    "/out/C172/MM/MM-172-01_R4.pdf",
    "/out/PA-28/SB/SB-28-003_R1.pdf",
    "/out/PA-28/SB/SB-28-003_R2.pdf",
    "/out/PA-28/IPC/IPC-28-100_R3.pdf",
];

fn feed_documents(t: &Target) {
    use repaero::daemon::ftp::{self, Settings};
    let mut st = fake::State {
        password: "pw".into(),
        ..Default::default()
    };
    for (i, path) in DOCS.iter().enumerate() {
        st.put(path.as_bytes(), &pdf(&format!("document {i}: {path}")), 1);
    }
    let text = format!(
        "[daemons.ftp]\nstore = \"{}\"\ntimeout = 20\n\
         [daemons.ftp.manufacturers.acme]\nhost = \"127.0.0.1\"\nport = PORT\ntls = \"none\"\n\
         root = \"/out\"\nuser = \"manu\"\npassword = \"${{ACME_FTP_PASSWORD}}\"\n",
        t.dir.path().join("store").display()
    );
    let url = t.db().url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let srv = fake::Fake::start(st).await;
        let text = text.replace("PORT", &srv.port.to_string());
        let env = |k: &str| (k == "ACME_FTP_PASSWORD").then(|| "pw".to_string());
        let cfg =
            repaero::config::Config::from_text(&text, "repaero.toml", t.dir.path(), &[], &env)
                .unwrap();
        let settings = Settings::from_config(&cfg).unwrap();
        let db = repaero::daemon::Db::new(&url).unwrap();
        // a file is fetched once two listings agree on it
        for _ in 0..2 {
            for (name, r) in ftp::poll_all(&settings, &db).await {
                r.unwrap_or_else(|e| panic!("poll {name}: {e}"));
            }
        }
    });
}

// ---------------------------------------------------------------------------

fn num(s: &str) -> f64 {
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{s:?} is not a number"))
}

fn as_i64(v: &Option<String>) -> i64 {
    v.as_deref().map(num).unwrap_or(0.0).round() as i64
}

/// The page's cell equals the database's number (money to the cent).
fn assert_num(shown: &str, want: f64, what: &str) {
    let got = num(shown);
    assert!(
        (got - want).abs() < 0.006,
        "{what}: shown {got}, database {want}"
    );
}

/// A table of groups as shown (name, count, sum) equals the database's.
fn assert_groups(shown: &[Vec<String>], want: &BTreeMap<String, (i64, f64)>, what: &str) {
    assert_eq!(shown.len(), want.len(), "{what}: {shown:?} vs {want:?}");
    for r in shown {
        let (n, sum) = want
            .get(&r[0])
            .unwrap_or_else(|| panic!("{what}: {} is not in the database", r[0]));
        assert_eq!(num(&r[1]) as i64, *n, "{what}: {} count", r[0]);
        assert_num(&r[2], *sum, &format!("{what}: {} sum", r[0]));
    }
}

/// `(label, title, y, height)` of SVG marks, as the browser lays them out.
fn marks(b: &Browser, css: &str) -> Vec<(String, String, f64, f64)> {
    let v = b.js(
        "return [...document.querySelectorAll(arguments[0])].map(e => {
           const r = e.getBBox();
           return [e.getAttribute('data-label'), e.querySelector('title').textContent, r.y, r.height];
         });",
        vec![json!(css)],
    );
    serde_json::from_value(v).unwrap()
}

#[test]
fn browser_every_page_shows_the_database_numbers() {
    let started = Instant::now();
    let driver = Driver::start().unwrap_or_else(|e| panic!("{e}"));
    let t = target("browser", false);
    feed_documents(&t);
    add_role_users(&t);
    let srv = serve(&t);
    let mut b = Browser::open(&driver, &srv.base);
    println!("screenshots in {}", b.shots.display());

    // no session: the login form; a wrong password is refused on the page
    b.goto("/");
    b.wait_path("/login");
    b.shot("01-login");
    b.login("dir", "not the password");
    b.wait_path("/login");
    assert_eq!(
        b.text("#login-error"),
        "wrong user name or password",
        "a refused login says so"
    );
    b.shot("02-login-refused");
    b.login("dir", PASSWORD);
    b.wait_path("/runs");
    let all = [
        ("Runs & validation", "/runs"),
        ("Stock", "/stock"),
        ("Workshop", "/workshop"),
        ("Billing", "/billing"),
        ("KPIs", "/kpi"),
    ];
    let want_nav: Vec<(String, String)> = all
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(b.nav(), want_nav, "direction sees every section");
    assert_eq!(b.text("form.logout span"), "dir");

    // ---- Runs: the last runs with their tallies, as the ledger has them
    let mut want_runs: Vec<Vec<String>> = t
        .rows("SELECT job, tally FROM _repaero_runs ORDER BY started_at DESC LIMIT 50")
        .into_iter()
        .map(|r| {
            let tally: Json = serde_json::from_str(r[1].as_deref().unwrap_or("[]")).unwrap();
            let sum = |k: &str| -> u64 {
                tally
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| x[k].as_u64().unwrap_or(0))
                    .sum()
            };
            vec![
                r[0].clone().unwrap(),
                sum("read").to_string(),
                sum("written").to_string(),
                sum("merged").to_string(),
                sum("rejected").to_string(),
            ]
        })
        .collect();
    assert!(!want_runs.is_empty(), "the fixtures' migrations are runs");
    let mut shown: Vec<Vec<String>> = b
        .table("runs")
        .into_iter()
        .map(|r| {
            vec![
                r[0].clone(),
                r[3].clone(),
                r[4].clone(),
                r[5].clone(),
                r[6].clone(),
            ]
        })
        .collect();
    want_runs.sort();
    shown.sort();
    assert_eq!(
        shown, want_runs,
        "runs: job, read, written, merged, rejected"
    );
    b.shot("03-runs");

    // ---- a run's rejected rows: follow the link of the run with the most
    let worst = t.rows(
        "SELECT run_id, job, count(*) FROM _rejects GROUP BY run_id, job ORDER BY count(*) DESC LIMIT 1",
    );
    let (run_id, job, n) = (
        worst[0][0].clone().unwrap(),
        worst[0][1].clone().unwrap(),
        as_i64(&worst[0][2]),
    );
    let links: Vec<(String, String)> = serde_json::from_value(b.js(
        "return [...document.querySelectorAll('a.rejected')].map(a => {
           const u = new URL(a.href);
           return [u.searchParams.get('run'), u.searchParams.get('job')];
         });",
        vec![],
    ))
    .unwrap();
    let i = links
        .iter()
        .position(|(r, j)| *r == run_id && *j == job)
        .unwrap_or_else(|| panic!("no rejected link for run {run_id} {job} in {links:?}"));
    b.rt.block_on(async {
        let a = ok(b.client.find_all(Locator::Css("a.rejected")).await, "links");
        ok(a[i].click().await, "rejected link");
    });
    let until = Instant::now() + Duration::from_secs(15);
    while !b.path().starts_with("/runs/rejects") {
        assert!(
            Instant::now() < until,
            "the link leads to the rejected rows"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        b.number("#rejects-total") as i64,
        n,
        "rejected rows of {job}"
    );
    assert_eq!(b.table("rejects").len() as i64, n.min(50), "one page");
    let esc_sql = |s: &str| s.replace('\'', "''");
    let mut want: Vec<Vec<String>> = t
        .rows(&format!(
            "SELECT table_name, reason, count(*) FROM _rejects WHERE run_id = '{}' AND job = '{}' GROUP BY 1, 2",
            esc_sql(&run_id),
            esc_sql(&job)
        ))
        .into_iter()
        .map(|r| r.into_iter().map(|c| c.unwrap_or_default()).collect())
        .collect();
    let mut reasons = b.table("reasons");
    want.sort();
    reasons.sort();
    assert_eq!(reasons, want, "rejected rows by reason");
    b.shot("04-rejects");

    // ---- Stock: every part with its stock, the open alerts, the orders
    b.click("header nav a[href='/stock']");
    b.wait_path("/stock");
    let parts: BTreeMap<String, i64> = t
        .rows("SELECT reference, quantity FROM parts")
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), as_i64(&r[1])))
        .collect();
    assert_eq!(b.number("#parts-count") as usize, parts.len());
    let shown: BTreeMap<String, i64> = b
        .table("parts")
        .into_iter()
        .map(|r| (r[0].clone(), num(&r[2]) as i64))
        .collect();
    assert_eq!(shown, parts, "each part's stock");
    let open = as_i64(&Some(
        t.one("SELECT count(*) FROM stock_alerts WHERE cleared_at IS NULL"),
    ));
    assert!(open > 0, "the fixtures have parts under their minimum");
    assert_eq!(b.number("#alerts-open") as i64, open);
    assert_eq!(b.table("alerts").len() as i64, open.min(200));
    let low = b.js(
        "return document.querySelectorAll('#parts a.low').length;",
        vec![],
    );
    assert_eq!(
        b.number("#parts-low") as u64,
        low.as_u64().unwrap(),
        "the count of low parts is the rows flagged"
    );
    let orders = as_i64(&Some(t.one(
        "SELECT count(*) FROM supplier_orders o LEFT JOIN shipments s ON s.order_id = o.id",
    )));
    assert!(orders > 0, "orders were placed from the suggestions");
    let order_rows = b.table("orders");
    assert_eq!(order_rows.len() as i64, orders.min(100));
    let placed: BTreeMap<String, (String, i64)> = t
        .rows("SELECT id, supplier, lines FROM supplier_orders")
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap(),
                (r[1].clone().unwrap_or_default(), as_i64(&r[2])),
            )
        })
        .collect();
    for r in &order_rows {
        let (supplier, lines) = &placed[&r[0]];
        assert_eq!(
            (&r[1], num(&r[4]) as i64),
            (supplier, *lines),
            "order {}",
            r[0]
        );
    }
    b.shot("05-stock");

    // ---- a part's page: its movements, the chart drawn from them
    let mv_ref = t.one("SELECT reference FROM stock_movements ORDER BY scanned_at DESC LIMIT 1");
    let moves: Vec<i64> = t
        .rows(&format!(
            "SELECT stock_after FROM stock_movements WHERE reference = '{}' ORDER BY scanned_at, line_id",
            esc_sql(&mv_ref)
        ))
        .iter()
        .map(|r| as_i64(&r[0]))
        .collect();
    b.rt.block_on(async {
        let xpath = format!("//table[@id='parts']//a[text()='{mv_ref}']");
        let a = ok(b.client.find(Locator::XPath(&xpath)).await, &xpath);
        ok(a.click().await, "the part's link");
    });
    let until = Instant::now() + Duration::from_secs(15);
    while !b.path().starts_with("/stock/part?reference=") {
        assert!(Instant::now() < until, "the link leads to the part's page");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(b.text("main h2"), format!("Stock — {mv_ref}"));
    let drawn = moves.len().min(500);
    let points = marks(&b, "#movements-chart circle.point");
    assert_eq!(points.len(), drawn, "one point per movement");
    let last = points.last().unwrap();
    assert_eq!(
        last.1,
        format!("{}: {}", last.0, moves.last().unwrap()),
        "the chart ends at the part's stock"
    );
    // heights: each point's distance to the axis is its value
    let cy: Vec<f64> = serde_json::from_value(b.js(
        "return [...document.querySelectorAll('#movements-chart circle.point')].map(c => c.cy.baseVal.value);",
        vec![],
    ))
    .unwrap();
    let height = b
        .js(
            "return document.getElementById('movements-chart').height.baseVal.value;",
            vec![],
        )
        .as_f64()
        .unwrap();
    for (i, y) in cy.iter().enumerate() {
        assert!(
            (0.0..=height).contains(y),
            "point {i} drawn outside the chart (y {y} of {height})"
        );
    }
    let values = &moves[moves.len() - drawn..];
    let (hi, lo) = (
        values
            .iter()
            .copied()
            .enumerate()
            .max_by_key(|x| x.1)
            .unwrap(),
        values
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|x| x.1)
            .unwrap(),
    );
    if hi.1 != lo.1 {
        let px = (cy[lo.0] - cy[hi.0]) / (hi.1 - lo.1) as f64;
        for (i, v) in values.iter().enumerate() {
            let want = cy[lo.0] - px * (v - lo.1) as f64;
            assert!((cy[i] - want).abs() < 0.2, "point {i}: y {} for {v}", cy[i]);
        }
    }
    let table = b.table("movements");
    assert_eq!(table.len(), drawn);
    assert_eq!(num(&table[0][3]) as i64, *moves.last().unwrap());
    b.shot("06-part");

    // ---- Workshop: appointments per technician and day
    b.click("header nav a[href='/workshop']");
    b.wait_path("/workshop");
    let mut per_day: BTreeMap<(String, String), i64> = BTreeMap::new();
    for r in t.rows("SELECT technician_id, start_at FROM appointments WHERE status <> 'cancelled'")
    {
        if let Some(at) = &r[1] {
            let tech = r[0].clone().unwrap_or_else(|| "—".into());
            *per_day.entry((tech, at[..10].to_string())).or_default() += 1;
        }
    }
    assert!(!per_day.is_empty(), "the queue's bookings are appointments");
    let shown = b.table("appointments");
    assert_eq!(shown.len(), per_day.len().min(300));
    for r in &shown {
        assert_eq!(
            Some(&(num(&r[2]) as i64)),
            per_day.get(&(r[0].clone(), r[1].clone())),
            "{r:?}"
        );
    }
    let done = as_i64(&Some(
        t.one("SELECT count(*) FROM interventions WHERE status = 'Terminee'"),
    ));
    assert_eq!(b.table("interventions").len() as i64, done.min(50));
    // every current document is listed before a search
    let current = as_i64(&Some(
        t.one("SELECT count(*) FROM manufacturer_documents WHERE status = 'current'"),
    ));
    assert_eq!(current, 5, "six files, one superseded revision");
    assert_eq!(b.number("#docs-found") as i64, current);
    b.shot("07-workshop");

    // ---- a document search, typed in the form
    b.type_into("input[name=q]", "PA-28");
    b.click("form[action='/workshop'] button");
    b.wait_path("/workshop?q=PA-28");
    let mut want: Vec<Vec<String>> = t
        .rows("SELECT reference, language, revision FROM manufacturer_documents WHERE status = 'current' AND model = 'PA-28'")
        .into_iter()
        .map(|r| {
            vec![
                r[0].clone().unwrap(),
                r[1].clone().unwrap(),
                format!("R{}", r[2].clone().unwrap()),
            ]
        })
        .collect();
    want.sort();
    assert_eq!(want.len(), 2, "PA-28: SB-28-003 R2 and IPC-28-100 R3");
    assert_eq!(b.number("#docs-found") as usize, want.len());
    let mut found: Vec<Vec<String>> = b
        .table("documents")
        .into_iter()
        .map(|r| vec![r[1].clone(), r[2].clone(), r[3].clone()])
        .collect();
    found.sort();
    assert_eq!(found, want, "the search finds the current PA-28 documents");
    // the download link gives the current revision's file
    let got = b.rt.block_on(async {
        let el = ok(
            b.client
                .find(Locator::Css("#documents a[href*='SB-28-003']"))
                .await,
            "SB-28-003's link",
        );
        let href = ok(el.attr("href").await, "href").expect("a link");
        ok(
            b.client
                .execute_async(
                    "const done = arguments[arguments.length - 1];
                     fetch(arguments[0]).then(r => r.arrayBuffer().then(buf => done({
                       status: r.status,
                       type: r.headers.get('content-type'),
                       size: buf.byteLength,
                       head: String.fromCharCode(...new Uint8Array(buf.slice(0, 5))),
                     }))).catch(e => done({error: String(e)}));",
                    vec![json!(href)],
                )
                .await,
            "download",
        )
    });
    let size = as_i64(&Some(t.one(
        "SELECT size FROM manufacturer_documents WHERE reference = 'SB-28-003' AND status = 'current'",
    )));
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(got["type"], "application/pdf");
    assert_eq!(got["size"].as_i64(), Some(size), "the registered file");
    assert_eq!(got["head"], "%PDF-");
    b.shot("08-documents");

    // ---- Billing: invoices by state on today's date, payments by method
    b.click("header nav a[href='/billing']");
    b.wait_path("/billing");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let mut states: BTreeMap<String, (i64, f64)> = BTreeMap::new();
    for r in t.rows("SELECT status, due_on, total_incl_tax FROM invoices WHERE deleted_at IS NULL")
    {
        let status = r[0].as_deref().unwrap_or("");
        let state = match status {
            "payée" => "paid",
            "annulée" => "cancelled",
            _ if r[1].as_deref().is_some_and(|d| d < today.as_str()) => "late",
            _ => "pending",
        };
        let e = states.entry(state.to_string()).or_default();
        e.0 += 1;
        e.1 += r[2].as_deref().map(num).unwrap_or(0.0);
    }
    assert!(
        states.len() >= 3,
        "paid, pending and late invoices: {states:?}"
    );
    let shown = b.table("invoice-states");
    assert_groups(&shown, &states, "invoices by state");
    for (state, (n, _)) in &states {
        assert_eq!(b.number(&format!("#invoices-{state}")) as i64, *n);
    }
    let mut methods: BTreeMap<String, (i64, f64)> = BTreeMap::new();
    for r in t.rows("SELECT method, amount FROM payments") {
        let e = methods
            .entry(r[0].clone().unwrap_or_else(|| "—".into()))
            .or_default();
        e.0 += 1;
        e.1 += r[1].as_deref().map(num).unwrap_or(0.0);
    }
    assert!(!methods.is_empty(), "the billing base has payments");
    assert_groups(&b.table("methods"), &methods, "payments by method");
    b.shot("09-billing");

    // ---- KPIs: each month's value as computed here from the rows, and the
    // appointments chart drawn from those numbers
    b.click("header nav a[href='/kpi']");
    b.wait_path("/kpi");
    let want = expected(&t);
    for (key, months) in &want {
        let shown = b.table(&format!("kpi-{key}"));
        let last: Vec<(&String, &(f64, u64))> = months
            .iter()
            .skip(months.len().saturating_sub(24))
            .collect();
        assert_eq!(shown.len(), last.len(), "{key}: months shown");
        for (row, (month, (v, n))) in shown.iter().zip(last) {
            assert_eq!(&row[0], month, "{key}");
            assert_num(&row[1], *v, &format!("{key} {month}"));
            assert_eq!(num(&row[2]) as u64, *n, "{key} {month}: count");
        }
    }
    let k: Json = serde_json::from_str(&t.ok(&["kpi", "--json"])).unwrap();
    let appts = indicator(&k, "appointments");
    for (what, v) in [
        ("baseline", &appts["baseline"]),
        ("target", &appts["target"]),
    ] {
        let cell = b.text(&format!("#{what}-appointments"));
        match v.as_f64() {
            Some(x) => assert_num(&cell, x, what),
            None => assert_eq!(cell, "—", "{what}"),
        }
    }
    // the chart: one bar per month, its label and title the month's count,
    // its height proportional to it, the target line at the target
    let months = &want["appointments"];
    let last: Vec<(&String, &(f64, u64))> = months
        .iter()
        .skip(months.len().saturating_sub(24))
        .collect();
    let drawn = marks(&b, "#kpi-chart rect.bar");
    assert_eq!(drawn.len(), last.len(), "one bar per month");
    let axis = drawn[0].2 + drawn[0].3;
    let tallest = last
        .iter()
        .zip(&drawn)
        .max_by(|a, b| a.0.1.0.total_cmp(&b.0.1.0))
        .unwrap();
    let px = tallest.1.3 / tallest.0.1.0;
    for ((month, (v, _)), (label, title, y, h)) in last.iter().zip(&drawn) {
        assert_eq!(label, *month);
        assert_eq!(title, &format!("{month}: {}", repaero::kpi::fmt_value(*v)));
        assert!(
            (y + h - axis).abs() < 0.2,
            "{month}: bars stand on the axis"
        );
        assert!(*y >= 0.0, "{month}: the bar fits in the chart");
        assert!((h - v * px).abs() < 0.2, "{month}: height {h} for {v}");
    }
    if let Some(target) = appts["target"].as_f64() {
        let y: f64 = b
            .js(
                "return document.querySelector('#kpi-chart line.target').y1.baseVal.value;",
                vec![],
            )
            .as_f64()
            .unwrap();
        assert!(
            ((axis - y) - target * px).abs() < 0.2,
            "the target line at {target}"
        );
    }
    b.shot("10-kpi");

    // ---- logout: back to the login form, and no page without logging in
    b.click("form.logout button");
    b.wait_path("/login");
    assert!(b.nav().is_empty(), "no navigation once logged out");
    b.goto("/kpi");
    b.wait_path("/login");
    b.shot("11-logged-out");

    // ---- each other role: only its section in the navigation, 403 outside
    for (user, role, section, elsewhere) in [
        ("mag", "magasin", all[1], "/billing"),
        ("atl", "atelier", all[2], "/stock"),
        ("cpt", "comptabilite", all[3], "/kpi"),
    ] {
        b.goto("/login");
        b.login(user, PASSWORD);
        b.wait_path(section.1);
        assert_eq!(
            b.nav(),
            vec![(section.0.to_string(), section.1.to_string())],
            "{role} sees only {}",
            section.0
        );
        b.shot(&format!("12-{role}"));
        b.goto(elsewhere);
        assert_eq!(b.text("main h2"), "Forbidden", "{role} on {elsewhere}");
        assert!(
            b.text("main p.error").contains("not in your roles"),
            "{role} on {elsewhere}"
        );
        if role == "magasin" {
            b.shot("13-forbidden");
        }
        b.click("form.logout button");
        b.wait_path("/login");
    }

    println!(
        "{} screenshots in {} ({:.1} s)",
        b.taken.len(),
        b.shots.display(),
        started.elapsed().as_secs_f64()
    );
    for p in &b.taken {
        assert!(
            std::fs::metadata(p).unwrap().len() > 1000,
            "{}",
            p.display()
        );
    }
    drop(b);
    drop(srv);
}

#[test]
fn browser_tools_missing_say_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("chromedriver");
    let e = match Driver::start_with(&nowhere, Path::new("/usr/bin/chromium")) {
        Err(e) => e,
        Ok(_) => panic!("a driver from nowhere"),
    };
    assert!(e.contains(&nowhere.display().to_string()), "{e}");
    assert!(
        e.contains("apt-get install chromium chromium-driver"),
        "{e}"
    );
    let e = match Driver::start_with(Path::new("/bin/true"), &dir.path().join("chromium")) {
        Err(e) => e,
        Ok(_) => panic!("a browser from nowhere"),
    };
    assert!(e.starts_with("the browser tests need Chromium"), "{e}");
    // a driver that exits at once is reported with its log, not waited for
    let e = match Driver::start_with(Path::new("/bin/false"), Path::new("/bin/true")) {
        Err(e) => e,
        Ok(_) => panic!("/bin/false is no driver"),
    };
    assert!(e.contains("exited at start"), "{e}");
}
