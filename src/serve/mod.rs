//! `repaero serve`: the dashboard. HTML rendered on the server (no
//! JavaScript, no CDN: the stylesheet is in the binary), charts drawn as
//! SVG on the server, behind a login and roles.
//!
//! Pages, one module each: [`runs`] (jobs, runs, rejected rows, validation
//! verdicts, daemon heartbeats; [`plan`]: the scheduler's next runs and the
//! diff of each job's last validation report against the previous one),
//! [`stock`] (parts against their minimum, open alerts, a part's
//! movements, supplier orders and parcels; [`orders`]: the order
//! suggestions and the form that places them),
//! [`workshop`] (appointments per technician and day, completed
//! interventions, manufacturer documents), [`billing`] (invoices paid,
//! pending, late; payments; pay-link attempts; [`paylink`]: the form that
//! issues a pay link for an invoice to pay), [`kpis`] (the plan's
//! indicators, `crate::kpi`). [`auth`] holds the login (file users with
//! argon2 hashes, or LDAP), the sessions, the CSRF tokens and the roles.
//!
//! Reads go through the target layer on a database thread of their own
//! (`daemon::Db`); every query is bounded (LIMIT, aggregates, pages), and
//! [`indexes`] makes sure at start of the indexes and summaries that keep
//! them fast at real volumes (docs/benchmarks.md).

pub mod auth;
pub mod billing;
pub mod indexes;
pub mod kpis;
pub mod ldap;
pub mod orders;
pub mod paylink;
pub mod plan;
pub mod runs;
pub mod stock;
pub mod svg;
pub mod workshop;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::config::Config;
use crate::daemon::Db;
use crate::db::Conn;
use crate::error::{Error, Result};

/// A part of the dashboard a role may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    Runs,
    Stock,
    Workshop,
    Billing,
    Kpi,
}

impl Section {
    pub const ALL: [Section; 5] = [
        Section::Runs,
        Section::Stock,
        Section::Workshop,
        Section::Billing,
        Section::Kpi,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Section::Runs => "runs",
            Section::Stock => "stock",
            Section::Workshop => "workshop",
            Section::Billing => "billing",
            Section::Kpi => "kpi",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Section::Runs => "Runs & validation",
            Section::Stock => "Stock",
            Section::Workshop => "Workshop",
            Section::Billing => "Billing",
            Section::Kpi => "KPIs",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Section::Runs => "/runs",
            Section::Stock => "/stock",
            Section::Workshop => "/workshop",
            Section::Billing => "/billing",
            Section::Kpi => "/kpi",
        }
    }

    pub fn parse(s: &str) -> Option<Section> {
        Section::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// `[serve.ldap]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldaps://ldap.repaero.fr` or `ldap://…` (with `starttls = true`).
    pub url: String,
    #[serde(default)]
    pub starttls: bool,
    /// The user's DN, `{user}` replaced: `uid={user},ou=people,dc=repaero,dc=fr`.
    pub user_dn: String,
    /// Where the groups are (`ou=groups,dc=repaero,dc=fr`).
    pub group_base: String,
    /// The filter of a user's groups, `{dn}` and `{user}` replaced.
    #[serde(default = "LdapConfig::default_group_filter")]
    pub group_filter: String,
    /// An account that may read the groups (else the user's own bind).
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// Its password, from the environment: `${LDAP_BIND_PASSWORD}`.
    #[serde(default)]
    pub bind_password: Option<String>,
    /// Seconds a bind may take.
    #[serde(default = "LdapConfig::default_timeout")]
    pub timeout: u64,
}

impl LdapConfig {
    fn default_group_filter() -> String {
        "(|(member={dn})(uniqueMember={dn})(memberUid={user}))".into()
    }
    fn default_timeout() -> u64 {
        5
    }
}

/// `[serve]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// `127.0.0.1:8080`.
    #[serde(default = "ServeConfig::default_listen")]
    pub listen: String,
    /// The file users (`repaero users add`), relative to repaero.toml.
    #[serde(default = "ServeConfig::default_users")]
    pub users: PathBuf,
    /// Cookies marked `Secure` (HTTPS only). Set false only for plain
    /// HTTP on the machine itself.
    #[serde(default = "ServeConfig::yes")]
    pub secure_cookies: bool,
    /// Minutes a session lasts.
    #[serde(default = "ServeConfig::default_session")]
    pub session_minutes: u64,
    /// Failed logins allowed per user name and per address in
    /// `lockout_seconds` before further tries are refused.
    #[serde(default = "ServeConfig::default_failures")]
    pub max_failures: usize,
    #[serde(default = "ServeConfig::default_lockout")]
    pub lockout_seconds: u64,
    /// HTTPS served directly: PEM certificate chain and key.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Role (file users' roles, LDAP group names) → sections
    /// (`runs`, `stock`, `workshop`, `billing`, `kpi`, or `all`).
    #[serde(default = "ServeConfig::default_roles")]
    pub roles: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub ldap: Option<LdapConfig>,
}

impl ServeConfig {
    fn default_listen() -> String {
        "127.0.0.1:8080".into()
    }
    fn default_users() -> PathBuf {
        PathBuf::from("users.toml")
    }
    fn yes() -> bool {
        true
    }
    fn default_session() -> u64 {
        480
    }
    fn default_failures() -> usize {
        5
    }
    fn default_lockout() -> u64 {
        300
    }
    fn default_roles() -> BTreeMap<String, Vec<String>> {
        [
            ("direction", vec!["all"]),
            ("magasin", vec!["stock"]),
            ("atelier", vec!["workshop"]),
            ("comptabilite", vec!["billing"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
        .collect()
    }

    /// The `[serve]` table, checked; relative paths against repaero.toml.
    pub fn from_config(cfg: &Config) -> Result<ServeConfig> {
        let mut s: ServeConfig = toml::Value::Table(cfg.serve.clone())
            .try_into()
            .map_err(|e: toml::de::Error| Error::config(format!("[serve]: {}", e.message())))?;
        s.users = cfg.resolve(&s.users);
        s.tls_cert = s.tls_cert.map(|p| cfg.resolve(&p));
        s.tls_key = s.tls_key.map(|p| cfg.resolve(&p));
        for (role, sections) in &s.roles {
            for name in sections {
                if name != "all" && Section::parse(name).is_none() {
                    return Err(Error::config(format!(
                        "[serve.roles] {role}: unknown section {name:?} (runs, stock, workshop, billing, kpi, all)"
                    )));
                }
            }
        }
        if s.tls_cert.is_some() != s.tls_key.is_some() {
            return Err(Error::config(
                "[serve]: tls_cert and tls_key go together (or neither: plain HTTP behind a proxy)",
            ));
        }
        Ok(s)
    }

    /// The sections the roles give.
    pub fn sections(&self, roles: &[String]) -> Vec<Section> {
        let mut out: Vec<Section> = Vec::new();
        for r in roles {
            for name in self.roles.get(r).into_iter().flatten() {
                if name == "all" {
                    out.extend(Section::ALL);
                } else if let Some(s) = Section::parse(name) {
                    out.push(s);
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// What every handler is given.
pub struct App {
    pub cfg: Arc<Config>,
    pub serve: ServeConfig,
    pub db: Db,
    pub auth: auth::Auth,
}

pub type Shared = Arc<App>;

impl App {
    /// Run `f` on the target's connection, on the database thread.
    pub async fn read<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> Result<R> + Send + 'static,
    {
        self.db.call(move |sink| f(sink.conn()?)).await
    }
}

/// Escape text for HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Escape an optional value (`—` for NULL).
pub fn esc_opt(s: &Option<String>) -> String {
    s.as_deref().map(esc).unwrap_or_else(|| "—".into())
}

/// Percent-encode a query value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A table: header and rows of already escaped cells.
pub fn table(id: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!("<table id=\"{id}\"><thead><tr>");
    for h in head {
        s.push_str(&format!("<th>{}</th>", esc(h)));
    }
    s.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        s.push_str(&format!(
            "<tr><td colspan=\"{}\" class=\"empty\">none</td></tr>",
            head.len()
        ));
    }
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            s.push_str(&format!("<td>{c}</td>"));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

const STYLE: &str = include_str!("style.css");

/// A page of the dashboard, with the navigation of the user's sections and
/// the logout form.
pub fn page(title: &str, session: Option<&auth::Session>, body: &str) -> Html<String> {
    let mut nav = String::new();
    if let Some(s) = session {
        nav.push_str("<nav>");
        for sec in &s.sections {
            nav.push_str(&format!(
                "<a href=\"{}\">{}</a>",
                sec.path(),
                esc(sec.title())
            ));
        }
        nav.push_str(&format!(
            "<form method=\"post\" action=\"/logout\" class=\"logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><span>{}</span> <button>Log out</button></form></nav>",
            esc(&s.csrf),
            esc(&s.user)
        ));
    }
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t} — repaero</title><link rel=\"stylesheet\" href=\"/assets/style.css\"></head><body><header><h1>repaero</h1>{nav}</header><main><h2>{t}</h2>{body}</main></body></html>",
        t = esc(title)
    ))
}

/// A page with a status: 403, 404, 500…
pub fn status_page(status: StatusCode, session: Option<&auth::Session>, msg: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    (
        status,
        page(
            title,
            session,
            &format!("<p class=\"error\">{}</p>", esc(msg)),
        ),
    )
        .into_response()
}

/// The answer to a failed read: logged, and a page without the detail.
pub fn failed(session: &auth::Session, what: &str, e: &Error) -> Response {
    tracing::error!("dashboard {what}: {e}");
    status_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        Some(session),
        &format!("{what}: the target could not be read (see the server's log)"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
}

/// The dashboard's routes.
pub fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(auth::home))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/assets/style.css", get(style))
        .route("/runs", get(runs::show))
        .route("/runs/rejects", get(runs::rejects))
        .route("/stock", get(stock::show))
        .route("/stock/part", get(stock::part))
        .route("/stock/alerts/check", post(stock::check_alerts))
        .route("/stock/orders", post(orders::place))
        .route("/workshop", get(workshop::show))
        .route("/workshop/document", get(workshop::download))
        .route("/billing", get(billing::show))
        .route("/billing/pay-link", post(paylink::issue))
        .route("/kpi", get(kpis::show))
        .with_state(app)
}

/// Serve the dashboard until SIGTERM or SIGINT. `listen` overrides
/// `[serve] listen`; the address is printed once bound (port 0: a free one).
pub async fn run(cfg: Arc<Config>, listen: Option<String>) -> Result<()> {
    let mut serve = ServeConfig::from_config(&cfg)?;
    if let Some(l) = listen {
        serve.listen = l;
    }
    let addr: SocketAddr = serve.listen.parse().map_err(|_| {
        Error::config(format!(
            "[serve] listen = {:?}: expected an address and port such as 127.0.0.1:8080",
            serve.listen
        ))
    })?;
    let auth = auth::Auth::new(&serve)?;
    let tls = match (&serve.tls_cert, &serve.tls_key) {
        (Some(c), Some(k)) => Some(crate::daemon::bank::tls_config("[serve]", c, k)?),
        _ => None,
    };
    if tls.is_none() && serve.secure_cookies && !addr.ip().is_loopback() {
        tracing::warn!(
            "serving plain HTTP on {addr} with Secure cookies: put it behind an HTTPS proxy"
        );
    }
    let app = Arc::new(App {
        db: Db::new(&cfg.target.url)?,
        cfg,
        serve,
        auth,
    });
    // the indexes and summaries of the pages, before the first page
    match app.read(indexes::prepare).await {
        Ok(created) if !created.is_empty() => {
            tracing::info!("dashboard: indexes created: {}", created.join(", "))
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("dashboard: indexes and KPI summaries not made: {e}"),
    }
    let service = router(app).into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let stopper = handle.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stopper.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    #[cfg(unix)]
    {
        let stopper = handle.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            if let Ok(mut term) = signal(SignalKind::terminate()) {
                term.recv().await;
                stopper.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
            }
        });
    }
    let announce = handle.clone();
    tokio::spawn(async move {
        if let Some(a) = announce.listening().await {
            // the tests and scripts read this line
            println!("listening on {scheme}://{a}");
            use std::io::Write;
            let _ = std::io::stdout().flush();
        }
    });
    let served = match tls {
        Some(t) => {
            axum_server::bind_rustls(addr, t)
                .handle(handle)
                .serve(service)
                .await
        }
        None => axum_server::bind(addr).handle(handle).serve(service).await,
    };
    served.map_err(|e| Error::runtime(format!("dashboard on {addr}: {e}")))
}
