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
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::dashboard::*;
use common::*;
use repaero::serve::esc as html;
use serde_json::Value as Json;

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
        let ind = indicator(&got, key);
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
    // (a month after the current one is not reported)
    let month = t.one(
        "SELECT max(month) FROM _repaero_roll_moves WHERE outs > 0 AND month <= to_char(now(), 'YYYY-MM')",
    );
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

#[test]
fn dashboard_per_role_shows_the_database_numbers() {
    check_dashboard(&target("serve", false));
}

#[test]
fn dashboard_on_postgres_shows_the_database_numbers() {
    check_dashboard(&target("serve_pg", true));
}

fn check_dashboard(t: &Target) {
    add_role_users(t);
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
    let appts = indicator(&k, "appointments");
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
// The forms that change something (placing supplier orders, issuing pay
// links) and the runs page's scheduler part (next runs, report diffs).

/// The bank's test key, given to the dashboard in this variable.
const BANK_KEY_VAR: &str = "REPAERO_DASHBOARD_BANK_KEY";
const BANK_KEY: &str = "forms-test-key-0123456789";

/// A configuration beside the target: the repository's jobs, two
/// schedules (one validating `stock`, its reports in the temporary
/// folder) and the bank, its key from the environment.
fn forms_config(t: &Target) -> PathBuf {
    let r = root();
    let text = format!(
        "[paths]\njobs = \"{jobs}\"\nmappings = \"{maps}\"\nvalidation = \"{val}\"\n\n\
         [schedule]\nreports = \"{reports}\"\n\n\
         [schedule.nightly]\njob = \"stock\"\ncron = \"30 2 * * *\"\ntime_zone = \"Europe/Paris\"\nvalidate = true\n\n\
         [schedule.hourly]\njobs = [\"suppliers\"]\ncron = \"15 * * * *\"\n\n\
         [daemons.bank]\nshop_id = \"12345678\"\nmode = \"TEST\"\nkey = \"${{{BANK_KEY_VAR}}}\"\n",
        jobs = r.join("jobs").display(),
        maps = r.join("mappings").display(),
        val = r.join("validation").display(),
        reports = t.dir.path().join("reports").display(),
    );
    let path = t.dir.path().join("forms.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Rows of a table, 0 when the table does not exist yet.
fn count(t: &Target, table: &str) -> u64 {
    let there = t.one(&format!(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '{table}'"
    ));
    if there == "0" {
        return 0;
    }
    t.one(&format!("SELECT count(*) FROM {table}"))
        .parse()
        .unwrap()
}

/// The hidden fields of the form with this id.
fn hidden_fields(html: &str, form_id: &str) -> BTreeMap<String, String> {
    let at = html
        .find(&format!("id=\"{form_id}\""))
        .unwrap_or_else(|| panic!("no form #{form_id}"));
    let form = &html[at..at + html[at..].find("</form>").unwrap()];
    let mut out = BTreeMap::new();
    for part in form.split("<input type=\"hidden\" name=\"").skip(1) {
        let (name, rest) = part.split_once('"').unwrap();
        let value = rest.split("value=\"").nth(1).unwrap();
        let value = &value[..value.find('"').unwrap()];
        out.insert(
            name.to_string(),
            value
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        );
    }
    out
}

/// The `datetime` of each `<time>` in the next-runs row of a schedule.
fn next_runs_shown(html: &str, schedule: &str) -> Vec<String> {
    let table = html.split("id=\"next-runs\"").nth(1).unwrap();
    let at = table
        .find(&format!("<span class=\"schedule\">{schedule}</span>"))
        .unwrap_or_else(|| panic!("no schedule {schedule} in the next runs"));
    let row = &table[at..at + table[at..].find("</tr>").unwrap()];
    row.split("datetime=\"")
        .skip(1)
        .map(|p| p[..p.find('"').unwrap()].to_string())
        .collect()
}

/// The next `n` ticks after `now`, the cron expression parsed here.
fn next_ticks(
    cron: &str,
    tz: chrono_tz::Tz,
    now: chrono::DateTime<chrono::Utc>,
    n: usize,
) -> Vec<String> {
    use std::str::FromStr;
    let c = croner::Cron::from_str(cron).unwrap();
    let mut t = now.with_timezone(&tz);
    (0..n)
        .map(|_| {
            t = c.find_next_occurrence(&t, false).unwrap();
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        })
        .collect()
}

/// A form that must be refused: why, the session, the fields, the status.
type Refused<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16);

/// The forged posts of a form: without a token, with a bad one, and from
/// a session outside the form's section (with that session's own token).
fn forged<'a>(
    session: &'a str,
    field: (&'a str, &'a str),
    outsider: &'a str,
    outsider_token: &'a str,
) -> Vec<Refused<'a>> {
    vec![
        ("no token", session, vec![field], 403),
        ("a bad token", session, vec![("csrf", "0000"), field], 403),
        (
            "a role outside the form's section",
            outsider,
            vec![("csrf", outsider_token), field],
            403,
        ),
    ]
}

/// Post each refused form: its status, the reason on the page (`error_id`)
/// when the form was understood, and the rows `state` reads unchanged.
fn refuse_all<S: PartialEq + std::fmt::Debug>(
    http: &Http,
    path: &str,
    error_id: &str,
    cases: &[Refused],
    state: &dyn Fn() -> S,
) {
    let before = state();
    for (why, session, form, status) in cases {
        let a = http.post(path, Some(session), form);
        assert_eq!(a.status, *status, "{why}: {}", a.body);
        assert_eq!(state(), before, "{why}: nothing changed");
        if *status == 422 {
            assert!(!by_id(&a.body, error_id).is_empty(), "{why}");
        }
    }
}

#[test]
fn forms_change_nothing_without_their_token_or_role() {
    let t = target("forms", false);
    for (user, role) in [
        ("dir", "direction"),
        ("mag", "magasin"),
        ("atl", "atelier"),
        ("cpt", "comptabilite"),
    ] {
        add_user(&t, user, role, PASSWORD);
    }
    let config = forms_config(&t);
    let mut cmd = t.command_with(&config, &["serve", "--listen", "127.0.0.1:0"]);
    cmd.env(BANK_KEY_VAR, BANK_KEY);
    let srv = start(cmd, &t.dir.path().join("forms-serve.log"));
    let http = Http::new(&srv.base);
    let login = |u: &str| {
        http.login(u, PASSWORD)
            .unwrap_or_else(|a| panic!("{u}: {}", a.status))
    };
    let (dir, mag, atl, cpt) = (login("dir"), login("mag"), login("atl"), login("cpt"));
    let token = |s: &str, page: &str| csrf_of(&http.get(page, Some(s)).body);

    // ---- the order suggestions and the place-order form ------------------
    // the setup placed the suggestions already (`order place`): the form
    // orders manual lines, as `order place --line` does
    let suggested: Json = serde_json::from_str(&t.ok(&["order", "suggest", "--json"])).unwrap();
    let suggested = suggested.as_array().unwrap();
    let with_offer: Vec<&Json> = suggested
        .iter()
        .filter(|s| !s["cheapest"].is_null())
        .collect();
    assert!(!with_offer.is_empty(), "the fixtures suggest orders");
    let stock = http.get("/stock", Some(&mag)).body;
    let grid = stock.split("id=\"suggestions\"").nth(1).unwrap();
    let grid = &grid[..grid.find("</table>").unwrap()];
    assert_eq!(
        grid.matches("<select name=\"line\"").count(),
        with_offer.len(),
        "one choice per suggestion a supplier offers"
    );
    let pick = with_offer[0];
    let (reference, offer) = (pick["reference"].as_str().unwrap(), &pick["cheapest"]);
    let (supplier, qty) = (
        offer["supplier"].as_str().unwrap(),
        offer["quantity"].as_i64().unwrap(),
    );
    let line = format!("{reference}:{supplier}:{qty}");
    assert!(
        grid.contains(&format!("<option value=\"{}\">", html(&line))),
        "{line} offered in the form"
    );

    let orders_before = t.rows("SELECT id FROM supplier_orders ORDER BY id");
    let state = || {
        (
            count(&t, "supplier_orders"),
            count(&t, "supplier_order_lines"),
        )
    };
    let before = state();
    let mag_token = token(&mag, "/stock");
    let (dir_token, atl_token) = (token(&dir, "/stock"), token(&atl, "/workshop"));
    let mut refused = forged(&mag, ("line", &line), &atl, &atl_token);
    refused.extend([
        (
            "another session's token",
            mag.as_str(),
            vec![("csrf", dir_token.as_str()), ("line", line.as_str())],
            403,
        ),
        (
            "no line chosen",
            &mag,
            vec![("csrf", mag_token.as_str()), ("line", "")],
            422,
        ),
        (
            "a malformed line",
            &mag,
            vec![("csrf", mag_token.as_str()), ("line", "HYD-2040")],
            422,
        ),
        (
            "an unknown part",
            &mag,
            vec![
                ("csrf", mag_token.as_str()),
                ("line", line.as_str()),
                ("line", "NO-SUCH-PART:AEROSTOCK:1"),
            ],
            422,
        ),
    ]);
    refuse_all(&http, "/stock/orders", "order-error", &refused, &state);

    let a = http.post(
        "/stock/orders",
        Some(&mag),
        &[("csrf", &mag_token), ("line", ""), ("line", &line)],
    );
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(state(), (before.0 + 1, before.1 + 1), "one order, one line");
    let new: Vec<Vec<Option<String>>> = t
        .rows("SELECT id, supplier, status, lines, origin, total FROM supplier_orders ORDER BY id")
        .into_iter()
        .filter(|r| !orders_before.iter().any(|o| o[0] == r[0]))
        .collect();
    assert_eq!(new.len(), 1);
    let id = new[0][0].clone().unwrap();
    assert!(new[0][1].as_deref().unwrap().eq_ignore_ascii_case(supplier));
    assert_eq!(new[0][2].as_deref(), Some("placed"));
    assert_eq!(new[0][3].as_deref(), Some("1"));
    assert_eq!(new[0][4].as_deref(), Some("manual"));
    let l = t.rows(&format!(
        "SELECT line_no, reference, quantity, unit_price, total FROM supplier_order_lines WHERE order_id = '{id}'"
    ));
    assert_eq!(l.len(), 1);
    assert_eq!(l[0][0].as_deref(), Some("1"));
    assert!(l[0][1].as_deref().unwrap().eq_ignore_ascii_case(reference));
    assert_eq!(l[0][2].as_deref().unwrap().parse::<i64>().unwrap(), qty);
    let price = offer["unit_price"].as_f64().unwrap();
    let num = |v: &Option<String>| v.as_deref().unwrap().parse::<f64>().unwrap();
    assert!(close(num(&l[0][3]), price));
    assert!(close(
        num(&l[0][4]),
        (price * qty as f64 * 100.0).round() / 100.0
    ));
    assert!(close(num(&new[0][5]), num(&l[0][4])));

    // the stock page shows it, then its parcel as `order list` has it
    let to = a.location.unwrap();
    assert_eq!(
        to,
        format!("/stock?placed={id}"),
        "the order ids, letters, digits and -"
    );
    let shown = http.get(&to, Some(&mag)).body;
    let placed = shown.split("id=\"placed\"").nth(1).unwrap();
    assert!(placed.contains(&format!("<span class=\"order-id\">{id}</span>")));
    assert!(placed.contains("<span class=\"order-status\">placed</span>"));
    assert!(placed.contains(&format!("{qty} × {}", html(&l[0][1].clone().unwrap()))));
    assert!(placed.contains("no parcel yet"));
    t.ok(&["order", "ship", &id, "--tracking", "6A12345678901"]);
    t.db().execute(&format!(
        "UPDATE shipments SET status = 'InTransit', estimated_delivery = attached_at WHERE order_id = '{id}'"
    ));
    let listed: Json = serde_json::from_str(&t.ok(&["order", "list", "--json"])).unwrap();
    let parcel = &listed
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == id.as_str())
        .unwrap()["shipments"][0];
    let eta = parcel["estimated_delivery"].as_str().unwrap();
    let shown = http.get(&to, Some(&mag)).body;
    let placed = shown.split("id=\"placed\"").nth(1).unwrap();
    assert!(placed.contains("<span class=\"order-status\">shipped</span>"));
    assert!(placed.contains("6A12345678901"));
    assert!(placed.contains("<span class=\"parcel-status\">InTransit</span>"));
    assert!(placed.contains(&format!("<span class=\"parcel-eta\">{}</span>", html(eta))));

    // ---- pay links ------------------------------------------------------
    // the invoice to pay that is due first, and what is left to pay on it
    let first = t.rows(
        "SELECT i.id, i.number, i.total_incl_tax, (SELECT sum(amount) FROM payments p WHERE p.invoice_id = i.id) \
         FROM invoices i WHERE i.status IN ('en attente', 'partiellement payée') AND i.deleted_at IS NULL \
         ORDER BY i.due_on, i.number LIMIT 1",
    );
    let (inv_id, number) = (first[0][0].clone().unwrap(), first[0][1].clone().unwrap());
    let cents = |v: &Option<String>| {
        v.as_deref()
            .map_or(0, |s| (s.parse::<f64>().unwrap() * 100.0).round() as i64)
    };
    let due = cents(&first[0][2]) - cents(&first[0][3]);
    assert!(due > 0);
    let euros = format!("{}.{:02}", due / 100, due % 100);
    let billing = http.get("/billing", Some(&cpt)).body;
    let to_pay = billing.split("id=\"to-pay\"").nth(1).unwrap();
    let row_at = to_pay
        .find(&format!("<td>{}</td>", html(&number)))
        .unwrap_or_else(|| panic!("{number} listed to pay"));
    let row = &to_pay[row_at..row_at + to_pay[row_at..].find("</tr>").unwrap()];
    assert!(
        row.contains(&format!("<span class=\"left\">{euros}</span>")),
        "{row}"
    );
    assert!(row.contains(&format!("name=\"invoice\" value=\"{}\"", html(&number))));

    let attempts = || count(&t, "payment_attempts");
    assert_eq!(attempts(), 0);
    let cpt_token = token(&cpt, "/billing");
    let mut refused = forged(&cpt, ("invoice", &number), &mag, &mag_token);
    refused.extend([
        (
            "an unknown invoice",
            cpt.as_str(),
            vec![("csrf", cpt_token.as_str()), ("invoice", "FA-0000-NOPE")],
            422,
        ),
        (
            "more than is due",
            &cpt,
            vec![
                ("csrf", cpt_token.as_str()),
                ("invoice", number.as_str()),
                ("amount", "99999999"),
            ],
            422,
        ),
    ]);
    refuse_all(
        &http,
        "/billing/pay-link",
        "paylink-error",
        &refused,
        &attempts,
    );
    // an invoice with nothing left to pay
    let settled = t.rows(
        "SELECT i.number FROM invoices i WHERE i.deleted_at IS NULL AND (i.status = 'annulée' OR \
         i.total_incl_tax <= (SELECT coalesce(sum(amount), 0) FROM payments p WHERE p.invoice_id = i.id)) LIMIT 1",
    );
    let settled = settled[0][0].clone().unwrap();
    let a = http.post(
        "/billing/pay-link",
        Some(&cpt),
        &[("csrf", &cpt_token), ("invoice", &settled)],
    );
    assert_eq!(a.status, 422, "{settled}: {}", a.body);
    assert_eq!(attempts(), 0);

    let a = http.post(
        "/billing/pay-link",
        Some(&cpt),
        &[("csrf", &cpt_token), ("invoice", &number), ("amount", "")],
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(attempts(), 1, "exactly one attempt");
    let at = t.rows(
        "SELECT invoice_id, order_id, amount_cents, currency, status, trans_id FROM payment_attempts",
    );
    assert_eq!(at[0][0].as_deref(), Some(inv_id.as_str()));
    assert_eq!(at[0][1].as_deref(), Some(number.as_str()));
    assert_eq!(at[0][2].as_deref(), Some(due.to_string().as_str()));
    assert_eq!(at[0][3].as_deref(), Some("978"));
    assert_eq!(at[0][4].as_deref(), Some("SENT"));
    assert_eq!(by_id(&a.body, "paylink-amount"), euros);
    assert_eq!(by_id(&a.body, "paylink-invoice"), html(&number));
    assert_eq!(Some(by_id(&a.body, "paylink-attempt")), at[0][5].clone());
    // the form sent to the bank: its amount, signed with the shop's key
    let mut fields = hidden_fields(&a.body, "paylink-form");
    assert_eq!(fields["vads_amount"], due.to_string());
    assert_eq!(fields["vads_order_id"], number);
    assert_eq!(fields["vads_site_id"], "12345678");
    let signature = fields.remove("signature").unwrap();
    assert_eq!(
        signature,
        repaero::daemon::bank::signature::sign(
            &fields,
            BANK_KEY,
            repaero::daemon::bank::Algorithm::HmacSha256
        )
    );

    // without [daemons.bank]: the page says so and nothing is issued
    let plain = serve(&t);
    let http2 = Http::new(&plain.base);
    let cpt2 = http2
        .login("cpt", PASSWORD)
        .unwrap_or_else(|a| panic!("{}", a.status));
    let page = http2.get("/billing", Some(&cpt2)).body;
    assert!(by_id(&page, "bank-off").contains("[daemons.bank]"));
    assert!(!page.contains("action=\"/billing/pay-link\""));
    let a = http2.post(
        "/billing/pay-link",
        Some(&cpt2),
        &[("csrf", &csrf_of(&page)), ("invoice", &number)],
    );
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(by_id(&a.body, "paylink-error").contains("not configured"));
    assert_eq!(attempts(), 1);
    drop(plain);

    // ---- the runs page: next runs, the last report against the previous
    let reports = t.dir.path().join("reports").join("nightly");
    std::fs::create_dir_all(&reports).unwrap();
    let old = reports.join("2026-11-29T013000Z.json");
    let new = reports.join("2026-11-30T013000Z.json");
    let validate = |out: &Path| {
        let o = t.run(&["validate", "stock", "--out", out.to_str().unwrap()]);
        assert!(
            [0, 3].contains(&code(&o)) && out.is_file(),
            "{}",
            stderr(&o)
        );
    };
    validate(&old);
    t.db().execute(
            "UPDATE parts SET quantity = quantity + 5 WHERE reference = (SELECT min(reference) FROM parts);\
             DELETE FROM part_reservations WHERE rowid = (SELECT min(rowid) FROM part_reservations WHERE intervention_id = 4711);",
        );
    validate(&new);
    let o = t.run(&[
        "diff",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
        "--json",
    ]);
    let changes: Json = serde_json::from_str(&stdout(&o)).unwrap();
    let changes = changes.as_array().unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c["metric"] == "M5" && c["what"] == "value"),
        "the stock sum moved: {changes:?}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c["metric"] == "M6" && c["regression"] == true),
        "a reservation lost is a regression: {changes:?}"
    );
    let t0 = chrono::Utc::now();
    let runs = http.get("/runs", Some(&dir)).body;
    let t1 = chrono::Utc::now();
    let diffs = runs.split("id=\"report-diffs\"").nth(1).unwrap();
    let regressions = changes.iter().filter(|c| c["regression"] == true).count();
    assert!(diffs.contains(&format!(
        "<td>nightly</td><td>stock</td><td>2026-11-30T013000Z</td><td>2026-11-29T013000Z</td><td><span class=\"changes\">{}</span></td><td><span class=\"regressions notmet\">{regressions}</span></td>",
        changes.len()
    )));
    let listed = runs.split("id=\"report-changes\"").nth(1).unwrap();
    let listed = &listed[..listed.find("</table>").unwrap()];
    assert_eq!(listed.matches("<tr><td>").count(), changes.len());
    for c in changes {
        let row = format!(
            "<tr><td>stock</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            html(c["metric"].as_str().unwrap()),
            html(c["what"].as_str().unwrap()),
            html(c["detail"].as_str().unwrap()),
            if c["regression"].as_bool().unwrap() {
                "<span class=\"notmet\">REGRESSION</span>"
            } else {
                ""
            }
        );
        assert!(listed.contains(&row), "{row}");
    }
    for (name, cron, tz) in [
        ("nightly", "30 2 * * *", chrono_tz::Europe::Paris),
        ("hourly", "15 * * * *", chrono_tz::UTC),
    ] {
        let shown = next_runs_shown(&runs, name);
        assert_eq!(shown.len(), 3, "{name}");
        assert!(
            shown == next_ticks(cron, tz, t0, 3) || shown == next_ticks(cron, tz, t1, 3),
            "{name}: {shown:?}"
        );
    }
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
    let srv = serve_with(&t, &sets);
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
