//! The dashboard and `repaero kpi` over a SQLite target holding the
//! fixtures: the stock workbook, the Access clients base, the supplier
//! catalogues, a scanner export, the billing base (generated in a
//! PostgreSQL database of its own, migrated, dropped), a stream of booking
//! messages applied through the queue feed's store, supplier orders placed
//! from the suggestions and the stock alerts checked.
//!
//! `repaero kpi` is checked against values computed here from the raw
//! rows; the dashboard (the real binary, `repaero serve` on a free port)
//! is logged into per role with an HTTP client, and what its pages show is
//! checked against the database.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::dashboard::*;
use common::*;
use serde_json::Value as Json;

#[test]
fn kpi_equals_values_computed_from_the_rows() {
    let t = target("kpi");
    let want = expected(&t);
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
    let t = target("serve");
    add_role_users(&t);
    let users = std::fs::read_to_string(t.dir.path().join("users.toml")).unwrap();
    assert!(users.contains("$argon2id$") && !users.contains(PASSWORD));
    let short = t
        .command(&["users", "add", "x", "--role", "direction"])
        .output()
        .unwrap();
    assert_ne!(code(&short), 0, "no password on stdin is refused");

    let srv = serve(&t);
    let http = Http::new(&srv.base);

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
    assert_eq!(
        by_id(&html, "parts-count"),
        t.one("SELECT count(*) FROM parts")
    );
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
        "SELECT coalesce(technician_id, '—'), substr(start_at, 1, 10), count(*) FROM appointments WHERE status <> 'cancelled' GROUP BY 1, 2 ORDER BY 2 DESC, 1 LIMIT 1",
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
    rusqlite::Connection::open(t.db())
        .unwrap()
        .execute_batch("DELETE FROM stock_alerts;")
        .unwrap();
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
    let t = Target::empty();
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
