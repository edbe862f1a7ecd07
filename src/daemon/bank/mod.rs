//! The bank: card payments of invoices on the bank's hosted payment page
//! (Systempay / Lyra form API V2, `../shared/specs/bank-payment-
//! notification.md`).
//!
//! - [`pay_link`] (`repaero pay-link <invoice>`, and `GET /pay/<invoice>`
//!   of the daemon) issues a payment attempt for the invoice's amount due
//!   and builds the signed form that sends the customer's browser to the
//!   bank.
//! - The feed (`repaero daemon bank`) serves the bank's server-to-server
//!   notifications (IPN, `POST /ipn`): the signature is checked in constant
//!   time, then the shop, the mode, the order, the currency and the amount;
//!   an accepted payment is recorded in `payments` and moves the invoice to
//!   paid or partly paid, a refused or abandoned one is kept on its attempt
//!   (`payment_attempts`); every notification applied is kept once in
//!   `payment_notifications`, so the bank's retries change nothing.
//!
//! Answers (§6 of the spec): `200 OK-…` when applied or already applied;
//! `200 KO-order not found` / `KO-amount mismatch` / `KO-currency mismatch`
//! when the signature holds but the notification does not fit the invoice
//! (a retry would not help; nothing changes; it is logged and counted as
//! failed on the heartbeat); `400 KO-…` for a missing or bad signature, a
//! wrong shop or mode, or a malformed body (nothing is read further);
//! `503` when the target cannot be reached (the bank retries).
//!
//! The signing key is read from the environment only (`key = "${VAR}"`).
//! TLS is served directly when `tls_cert` and `tls_key` are set; otherwise
//! plain HTTP, to sit behind a reverse proxy that terminates TLS.

pub mod signature;
pub mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::{BoxFuture, Db, Feed, FeedContext, feed_table};
use crate::config::Config;
use crate::error::{Error, Result};
pub use signature::Algorithm;
use store::{Invoice, Outcome};

/// ISO 4217 numeric code of the euro, the invoices' currency.
pub const EUR: &str = "978";
/// The Systempay payment page.
pub const SYSTEMPAY: &str = "https://paiement.systempay.fr/vads-payment/";
/// Largest notification body read (the bank sends about 2 KiB).
const MAX_BODY: usize = 64 * 1024;

/// The fields the form always carries, computed for each attempt: they
/// cannot be set in `[daemons.bank] fields`.
const COMPUTED: &[&str] = &[
    "vads_action_mode",
    "vads_amount",
    "vads_ctx_mode",
    "vads_currency",
    "vads_order_id",
    "vads_page_action",
    "vads_payment_config",
    "vads_site_id",
    "vads_trans_date",
    "vads_trans_id",
    "vads_version",
];

/// `[daemons.bank]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Address the daemon listens on.
    #[serde(default = "default_listen")]
    listen: String,
    /// `vads_site_id`: the shop id, 8 digits.
    shop_id: String,
    /// `TEST` or `PRODUCTION`: which key signs, which notifications count.
    mode: String,
    /// The key of that mode: `"${VAR}"` only.
    key: String,
    #[serde(default = "default_algorithm")]
    algorithm: Algorithm,
    /// The bank's payment page (the form's action).
    #[serde(default = "default_payment_url")]
    payment_url: String,
    /// Extra `vads_` fields of every form: return URLs, `vads_url_check`,
    /// `vads_language`, `vads_return_mode`…
    #[serde(default)]
    fields: BTreeMap<String, String>,
    /// PEM certificate chain and private key: serve HTTPS directly.
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    /// Serve `GET /pay/<invoice>?t=<token>` (the pay links).
    #[serde(default = "default_true")]
    pay_links: bool,
}

fn default_listen() -> String {
    "127.0.0.1:8088".into()
}
fn default_algorithm() -> Algorithm {
    Algorithm::HmacSha256
}
fn default_payment_url() -> String {
    SYSTEMPAY.into()
}
fn default_true() -> bool {
    true
}

/// The bank's settings, checked.
#[derive(Clone)]
pub struct BankConfig {
    pub listen: SocketAddr,
    pub shop_id: String,
    pub mode: String,
    key: String,
    pub algorithm: Algorithm,
    pub payment_url: String,
    pub fields: BTreeMap<String, String>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub pay_links: bool,
}

impl std::fmt::Debug for BankConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BankConfig")
            .field("listen", &self.listen)
            .field("shop_id", &self.shop_id)
            .field("mode", &self.mode)
            .field("key", &"(from the environment)")
            .field("algorithm", &self.algorithm)
            .field("payment_url", &self.payment_url)
            .finish()
    }
}

impl BankConfig {
    /// Read and check `[daemons.bank]`.
    pub fn from_config(cfg: &Config) -> Result<BankConfig> {
        let place = format!("{} [daemons.bank]", cfg.label());
        let table = feed_table(cfg, "bank");
        if table.is_empty() {
            return Err(Error::config(format!(
                "{place}: not configured (shop_id, mode, key = \"${{SYSTEMPAY_KEY}}\"; see the README)"
            )));
        }
        let s: Settings = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| Error::config(format!("{place}: {}", e.message())))?;
        let err = |m: String| Error::config(format!("{place}: {m}"));
        // the key: a reference to the environment, never the key itself
        let written = cfg.written(&["daemons", "bank", "key"]);
        let from_env = written.as_ref().and_then(|v| v.as_str()).is_some_and(|w| {
            w.strip_prefix("${")
                .and_then(|r| r.strip_suffix('}'))
                .is_some_and(|name| {
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
        });
        if !from_env {
            return Err(err(
                "key must come from the environment: write key = \"${SYSTEMPAY_KEY}\" (a variable, no default) and set the variable".into(),
            ));
        }
        if s.key.is_empty() {
            return Err(err("key: the variable is empty".into()));
        }
        if s.shop_id.len() != 8 || !s.shop_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(format!("shop_id {:?}: 8 digits", s.shop_id)));
        }
        if s.mode != "TEST" && s.mode != "PRODUCTION" {
            return Err(err(format!("mode {:?}: TEST or PRODUCTION", s.mode)));
        }
        let listen: SocketAddr = s.listen.parse().map_err(|_| {
            err(format!(
                "listen {:?}: an address such as 127.0.0.1:8088",
                s.listen
            ))
        })?;
        if !s.payment_url.starts_with("https://") && !s.payment_url.starts_with("http://") {
            return Err(err(format!(
                "payment_url {:?}: an http(s) URL",
                s.payment_url
            )));
        }
        for (k, v) in &s.fields {
            if !k.starts_with("vads_") || k.len() < 6 {
                return Err(err(format!("fields: {k}: only vads_ fields")));
            }
            if COMPUTED.contains(&k.as_str()) {
                return Err(err(format!("fields: {k} is set for each payment")));
            }
            if v.chars().any(|c| c.is_control()) {
                return Err(err(format!("fields: {k}: no control characters")));
            }
        }
        let tls = match (s.tls_cert, s.tls_key) {
            (Some(c), Some(k)) => {
                let (c, k) = (cfg.resolve(&c), cfg.resolve(&k));
                // found now, not at each restart of the feed
                for p in [&c, &k] {
                    if !p.is_file() {
                        return Err(err(format!("TLS: no file {}", p.display())));
                    }
                }
                Some((c, k))
            }
            (None, None) => None,
            _ => return Err(err("tls_cert and tls_key go together".into())),
        };
        Ok(BankConfig {
            listen,
            shop_id: s.shop_id,
            mode: s.mode,
            key: s.key,
            algorithm: s.algorithm,
            payment_url: s.payment_url,
            fields: s.fields,
            tls,
            pay_links: s.pay_links,
        })
    }

    /// The token of the pay link of `invoice` (`/pay/<invoice>?t=…`).
    pub fn link_token(&self, invoice: &str) -> String {
        signature::link_token(&self.key, invoice)
    }
}

/// The signed form that sends the browser to the bank.
#[derive(Debug, Clone, Serialize)]
pub struct PayForm {
    /// The form's action (the bank's payment page).
    pub action: String,
    pub invoice: String,
    /// The amount asked, `1250.00` (euros).
    pub amount: String,
    /// Every field, `signature` included.
    pub fields: BTreeMap<String, String>,
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

impl PayForm {
    /// A page that submits itself to the bank (a button when scripts are off).
    pub fn html(&self) -> String {
        let inputs: String = self
            .fields
            .iter()
            .map(|(k, v)| {
                format!(
                    "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
                    html_escape(k),
                    html_escape(v)
                )
            })
            .collect();
        format!(
            "<!DOCTYPE html>\n<html lang=\"fr\">\n<head><meta charset=\"utf-8\"><title>Paiement de la facture {inv}</title></head>\n<body onload=\"document.forms[0].submit()\">\n<form method=\"POST\" action=\"{action}\" accept-charset=\"UTF-8\">\n{inputs}<p>Facture {inv} : {amount} EUR</p>\n<button type=\"submit\">Payer par carte</button>\n</form>\n</body>\n</html>\n",
            inv = html_escape(&self.invoice),
            action = html_escape(&self.action),
            amount = html_escape(&self.amount),
        )
    }

    /// `POST <action>` then one `name=value` a line.
    pub fn text(&self) -> String {
        let mut s = format!("POST {}\n", self.action);
        for (k, v) in &self.fields {
            s.push_str(&format!("{k}={v}\n"));
        }
        s
    }
}

/// The signed form of one attempt (no I/O: the spec's examples test it).
pub fn build_form(
    bank: &BankConfig,
    invoice: &Invoice,
    amount_cents: i64,
    trans_id: &str,
    trans_date: &str,
) -> PayForm {
    let mut fields = bank.fields.clone();
    for (k, v) in [
        ("vads_action_mode", "INTERACTIVE"),
        ("vads_currency", EUR),
        ("vads_page_action", "PAYMENT"),
        ("vads_payment_config", "SINGLE"),
        ("vads_version", "V2"),
        ("vads_site_id", &bank.shop_id),
        ("vads_ctx_mode", &bank.mode),
        ("vads_order_id", &invoice.number),
        ("vads_trans_id", trans_id),
        ("vads_trans_date", trans_date),
    ] {
        fields.insert(k.into(), v.to_string());
    }
    fields.insert("vads_amount".into(), amount_cents.to_string());
    if let Some(c) = &invoice.client_code
        && !fields.contains_key("vads_cust_id")
    {
        fields.insert("vads_cust_id".into(), c.clone());
    }
    let sig = signature::sign(&fields, &bank.key, bank.algorithm);
    fields.insert("signature".into(), sig);
    PayForm {
        action: bank.payment_url.clone(),
        invoice: invoice.number.clone(),
        amount: store::decimal(amount_cents),
        fields,
    }
}

/// Why a pay link cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    UnknownInvoice,
    /// Cancelled, or nothing left to pay.
    NothingToPay(String),
    BadAmount(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnknownInvoice => write!(f, "no such invoice"),
            Refusal::NothingToPay(m) | Refusal::BadAmount(m) => write!(f, "{m}"),
        }
    }
}

/// What the bank takes as `vads_order_id`.
pub fn valid_order_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An amount as a person writes it (`250`, `250.5`, `250,50`), in cents.
pub fn parse_amount(text: &str) -> std::result::Result<i64, Refusal> {
    let t = text.trim().replace(',', ".");
    match store::cents(&t) {
        Some(c) if c > 0 && !t.contains(['e', 'E', '-', '+']) => Ok(c),
        _ => Err(Refusal::BadAmount(format!(
            "amount {text:?}: a positive amount in euros, e.g. 250.00"
        ))),
    }
}

/// Issue an attempt for `invoice` (its amount due, or `amount` cents of
/// it) and build its form, in one transaction on `conn`.
pub fn issue(
    conn: &mut dyn crate::db::Conn,
    bank: &BankConfig,
    invoice: &str,
    amount: Option<i64>,
) -> Result<std::result::Result<PayForm, Refusal>> {
    store::ensure(conn)?;
    conn.begin()?;
    let out = (|| -> Result<std::result::Result<PayForm, Refusal>> {
        let Some(inv) = store::find_invoice(conn, invoice)? else {
            return Ok(Err(Refusal::UnknownInvoice));
        };
        if !valid_order_id(&inv.number) {
            return Ok(Err(Refusal::NothingToPay(format!(
                "invoice number {:?} cannot be sent to the bank (1 to 64 of A-Z a-z 0-9 _ -)",
                inv.number
            ))));
        }
        if inv.status == store::CANCELLED {
            return Ok(Err(Refusal::NothingToPay(format!(
                "invoice {} is cancelled",
                inv.number
            ))));
        }
        let due = inv.due_cents();
        if due <= 0 {
            return Ok(Err(Refusal::NothingToPay(format!(
                "invoice {}: nothing left to pay",
                inv.number
            ))));
        }
        let amount = amount.unwrap_or(due);
        if amount > due {
            return Ok(Err(Refusal::BadAmount(format!(
                "invoice {}: {} asked, {} left to pay",
                inv.number,
                store::decimal(amount),
                store::decimal(due)
            ))));
        }
        let (trans_id, trans_date) = store::new_attempt(
            conn,
            &bank.shop_id,
            &bank.mode,
            &inv,
            amount,
            chrono::Utc::now(),
        )?;
        Ok(Ok(build_form(bank, &inv, amount, &trans_id, &trans_date)))
    })();
    match out {
        Ok(Ok(form)) => {
            conn.commit()?;
            Ok(Ok(form))
        }
        other => {
            let _ = conn.rollback();
            other
        }
    }
}

/// `repaero pay-link <invoice>`: issue an attempt and build its form.
pub fn pay_link(cfg: &Config, invoice: &str, amount: Option<&str>) -> Result<PayForm> {
    let bank = BankConfig::from_config(cfg)?;
    let amount = amount
        .map(parse_amount)
        .transpose()
        .map_err(|r| Error::input(r.to_string()))?;
    let mut sink = crate::sink::open(&cfg.target.url, false)?;
    let conn = sink.conn()?;
    match issue(conn, &bank, invoice, amount)? {
        Ok(form) => Ok(form),
        Err(Refusal::UnknownInvoice) => Err(Error::input(format!(
            "no invoice {invoice:?} in {}",
            conn.describe()
        ))),
        Err(r) => Err(Error::input(r.to_string())),
    }
}

/// The bank feed (`repaero daemon bank`).
pub struct BankFeed {
    bank: Arc<BankConfig>,
}

impl BankFeed {
    pub fn from_config(cfg: &Config) -> Result<BankFeed> {
        Ok(BankFeed {
            bank: Arc::new(BankConfig::from_config(cfg)?),
        })
    }
}

/// What the handlers tell the feed (for its heartbeat).
enum Event {
    Applied,
    Rejected(String),
}

#[derive(Clone)]
struct App {
    bank: Arc<BankConfig>,
    db: Db,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
}

fn plain(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// The daemon's routes: `POST /ipn`, `GET /pay/{invoice}`.
fn router(app: App) -> Router {
    let mut r = Router::new().route("/ipn", post(ipn));
    if app.bank.pay_links {
        r = r.route("/pay/{invoice}", get(pay_page));
    }
    r.layer(DefaultBodyLimit::max(MAX_BODY)).with_state(app)
}

async fn ipn(State(app): State<App>, body: Bytes) -> Response {
    let bank = &app.bank;
    let refuse = |status: StatusCode, why: &str, f: Option<&BTreeMap<String, String>>| {
        let get = |k: &str| f.and_then(|f| f.get(k)).cloned().unwrap_or_default();
        tracing::warn!(
            order = ?get("vads_order_id"),
            trans_id = ?get("vads_trans_id"),
            status = ?get("vads_trans_status"),
            amount = ?get("vads_amount"),
            "bank notification refused: {why}"
        );
        let _ = app.events.send(Event::Rejected(why.to_string()));
        plain(status, format!("KO-{why}"))
    };
    let fields = match signature::parse_form(&body) {
        Ok(f) => f,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string(), None),
    };
    let Some(sig) = fields.get("signature") else {
        return refuse(StatusCode::BAD_REQUEST, "missing signature", Some(&fields));
    };
    if !signature::verify(&fields, sig, &bank.key, bank.algorithm) {
        return refuse(StatusCode::BAD_REQUEST, "invalid signature", Some(&fields));
    }
    if fields.get("vads_site_id") != Some(&bank.shop_id)
        || fields.get("vads_ctx_mode") != Some(&bank.mode)
    {
        return refuse(StatusCode::BAD_REQUEST, "wrong shop or mode", Some(&fields));
    }
    let n = match store::Notification::from_fields(&fields) {
        Ok(n) => n,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, &why, Some(&fields)),
    };
    let applied = app
        .db
        .call(move |sink| {
            let conn = sink.conn()?;
            conn.begin()?;
            match store::apply(conn, &n) {
                Ok(o @ Outcome::Applied(_)) => {
                    conn.commit()?;
                    Ok(o)
                }
                Ok(o) => {
                    conn.rollback()?;
                    Ok(o)
                }
                Err(e) => Err(e),
            }
        })
        .await;
    match applied {
        Ok(Outcome::Applied(m)) => {
            tracing::info!(
                order = ?fields.get("vads_order_id"),
                trans_id = ?fields.get("vads_trans_id"),
                "bank notification: {m}"
            );
            let _ = app.events.send(Event::Applied);
            plain(StatusCode::OK, format!("OK-{m}"))
        }
        Ok(Outcome::Duplicate) => plain(StatusCode::OK, "OK-already processed"),
        Ok(Outcome::Rejected(why)) => refuse(StatusCode::OK, &why, Some(&fields)),
        Err(e) => {
            tracing::error!("bank notification not applied (the bank will retry): {e}");
            let _ = app.events.send(Event::Rejected(format!("target: {e}")));
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "KO-temporarily unavailable",
            )
        }
    }
}

#[derive(Deserialize)]
struct PayQuery {
    t: Option<String>,
    amount: Option<String>,
    format: Option<String>,
}

async fn pay_page(
    State(app): State<App>,
    UrlPath(invoice): UrlPath<String>,
    Query(q): Query<PayQuery>,
) -> Response {
    let token_ok =
        q.t.as_deref()
            .is_some_and(|t| signature::link_token_ok(&app.bank.key, &invoice, t));
    if !token_ok {
        return plain(StatusCode::FORBIDDEN, "invalid or missing link token");
    }
    let amount = match q.amount.as_deref().map(parse_amount).transpose() {
        Ok(a) => a,
        Err(r) => return plain(StatusCode::BAD_REQUEST, r.to_string()),
    };
    let bank = app.bank.clone();
    let inv = invoice.clone();
    let issued = app
        .db
        .call(move |sink| issue(sink.conn()?, &bank, &inv, amount))
        .await;
    match issued {
        Ok(Ok(form)) => {
            let security = [
                (header::CACHE_CONTROL, "no-store"),
                (header::REFERRER_POLICY, "no-referrer"),
                (header::X_FRAME_OPTIONS, "DENY"),
            ];
            if q.format.as_deref() == Some("json") {
                (security, axum::Json(form)).into_response()
            } else {
                (
                    security,
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    form.html(),
                )
                    .into_response()
            }
        }
        Ok(Err(Refusal::UnknownInvoice)) => plain(StatusCode::NOT_FOUND, "no such invoice"),
        Ok(Err(r @ Refusal::NothingToPay(_))) => plain(StatusCode::CONFLICT, r.to_string()),
        Ok(Err(r)) => plain(StatusCode::BAD_REQUEST, r.to_string()),
        Err(e) => {
            tracing::error!("pay link for {invoice:?}: {e}");
            plain(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable")
        }
    }
}

/// A rustls server configuration from PEM files, on the one TLS stack
/// (ring); `section` names the settings in errors (`[daemons.bank]`).
pub fn tls_config(
    section: &str,
    cert: &Path,
    key: &Path,
) -> Result<axum_server::tls_rustls::RustlsConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let err = |p: &Path, e: &dyn std::fmt::Display| {
        Error::config(format!("{section} TLS: {}: {e}", p.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err(cert, &e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| err(cert, &e))?;
    if certs.is_empty() {
        return Err(err(cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| err(key, &e))?;
    let mut sc = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err(cert, &e))?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(|e| err(cert, &e))?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(axum_server::tls_rustls::RustlsConfig::from_config(
        Arc::new(sc),
    ))
}

impl Feed for BankFeed {
    fn name(&self) -> &'static str {
        "bank"
    }

    fn run<'a>(&'a self, ctx: &'a FeedContext) -> BoxFuture<'a, Result<()>> {
        Box::pin(serve(self.bank.clone(), ctx))
    }
}

/// A notification answered, on the feed's heartbeat.
fn count(ctx: &FeedContext, ev: Event) {
    match ev {
        Event::Applied => ctx.progress(1, 0),
        Event::Rejected(why) => {
            ctx.progress(0, 1);
            ctx.detail("last_refused", serde_json::json!(why));
        }
    }
}

async fn serve(bank: Arc<BankConfig>, ctx: &FeedContext) -> Result<()> {
    ctx.db.call(|sink| store::ensure(sink.conn()?)).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let app = router(App {
        bank: bank.clone(),
        db: ctx.db.clone(),
        events: tx,
    })
    .into_make_service();
    let handle = axum_server::Handle::new();
    let addr = bank.listen;
    let mut server: BoxFuture<'static, std::io::Result<()>> = match &bank.tls {
        Some((cert, key)) => Box::pin(
            axum_server::bind_rustls(addr, tls_config("[daemons.bank]", cert, key)?)
                .handle(handle.clone())
                .serve(app),
        ),
        None => Box::pin(axum_server::bind(addr).handle(handle.clone()).serve(app)),
    };
    let scheme = if bank.tls.is_some() { "https" } else { "http" };
    let listening = handle.clone();
    let mut announce: BoxFuture<'static, Option<SocketAddr>> =
        Box::pin(async move { listening.listening().await });
    let mut announced = false;
    loop {
        tokio::select! {
            r = &mut server => {
                return Err(Error::runtime(match r {
                    Ok(()) => format!("the bank listener on {addr} stopped"),
                    Err(e) => format!("bank listener on {addr}: {e}"),
                }));
            }
            a = &mut announce, if !announced => {
                announced = true;
                if let Some(a) = a {
                    tracing::info!("bank notifications on {scheme}://{a}/ipn ({} mode)", bank.mode);
                    ctx.detail("listening", serde_json::json!(format!("{scheme}://{a}")));
                }
            }
            Some(ev) = rx.recv() => count(ctx, ev),
            _ = ctx.stopped() => {
                // answer the notifications in flight, take no new ones
                handle.graceful_shutdown(Some(Duration::from_secs(10)));
                let _ = server.await;
                while let Ok(ev) = rx.try_recv() {
                    count(ctx, ev);
                }
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bank(fields: &[(&str, &str)]) -> BankConfig {
        BankConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            shop_id: "12345678".into(),
            mode: "TEST".into(),
            key: "RepAeroTestKey01".into(),
            algorithm: Algorithm::HmacSha256,
            payment_url: SYSTEMPAY.into(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tls: None,
            pay_links: true,
        }
    }

    /// The pay link's form is the spec's worked example A, signature included.
    #[test]
    fn the_pay_link_form_of_worked_example_a() {
        let u = "https://erp.repaero.example/pay/";
        let extra: Vec<(String, String)> = [
            ("vads_url_cancel", "cancel"),
            ("vads_url_check", "ipn"),
            ("vads_url_error", "error"),
            ("vads_url_refused", "refused"),
            ("vads_url_return", "return"),
            ("vads_url_success", "success"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), format!("{u}{v}")))
        .collect();
        let mut fields: Vec<(&str, &str)> = extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        fields.push(("vads_cust_email", "compta@client-aviation.example"));
        fields.push(("vads_return_mode", "GET"));
        let b = bank(&fields);
        let inv = Invoice {
            id: 42,
            number: "FAC-2024-0042".into(),
            client_code: None,
            status: "en attente".into(),
            total_cents: 125000,
            paid_cents: 0,
        };
        let form = build_form(&b, &inv, inv.due_cents(), "x7Kp2q", "20240315093000");
        assert_eq!(
            form.fields["signature"],
            "eO+5nSk5AnYD/6bgyvepNxiTamjO/cQwjTMTbGnsoWE="
        );
        assert_eq!(form.fields.len(), 20);
        assert_eq!(form.amount, "1250.00");
        let html = form.html();
        assert!(html.contains(
            "<input type=\"hidden\" name=\"signature\" value=\"eO+5nSk5AnYD/6bgyvepNxiTamjO/cQwjTMTbGnsoWE=\">"
        ));
        assert!(html.contains("action=\"https://paiement.systempay.fr/vads-payment/\""));
        // SHA-1 shop
        let mut b1 = b.clone();
        b1.algorithm = Algorithm::Sha1;
        let form = build_form(&b1, &inv, 125000, "x7Kp2q", "20240315093000");
        assert_eq!(
            form.fields["signature"],
            "616cf06889b71b316d7c34e21b7552d66cd8a770"
        );
    }

    #[test]
    fn values_are_escaped_in_the_page() {
        let b = bank(&[("vads_order_info", "\"><script>x</script>")]);
        let inv = Invoice {
            id: 1,
            number: "FA-2024-000001".into(),
            client_code: Some("C&1".into()),
            status: "en attente".into(),
            total_cents: 100,
            paid_cents: 0,
        };
        let html = build_form(&b, &inv, 100, "000001", "20240315093000").html();
        assert!(!html.contains("<script>"));
        assert!(html.contains("&quot;&gt;&lt;script&gt;"));
        assert!(html.contains("value=\"C&amp;1\""));
    }

    fn cfg(text: &str, env: &[(&str, &str)]) -> Result<BankConfig> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let c = Config::from_text(text, "repaero.toml", Path::new("."), &[], &lookup)?;
        BankConfig::from_config(&c)
    }

    #[test]
    fn the_key_comes_from_the_environment_only() {
        let ok = "[daemons.bank]\nshop_id = \"12345678\"\nmode = \"TEST\"\nkey = \"${BANK_KEY}\"\n";
        let b = cfg(ok, &[("BANK_KEY", "RepAeroTestKey01")]).unwrap();
        assert_eq!(b.key, "RepAeroTestKey01");
        assert!(!format!("{b:?}").contains("RepAeroTestKey01"));
        for bad in [
            "key = \"RepAeroTestKey01\"",
            "key = \"${BANK_KEY:-RepAeroTestKey01}\"",
            "key = \"x${BANK_KEY}\"",
        ] {
            let text = ok.replace("key = \"${BANK_KEY}\"", bad);
            let e = cfg(&text, &[("BANK_KEY", "RepAeroTestKey01")])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("key must come from the environment"),
                "{bad}: {e}"
            );
            assert!(!e.contains("RepAeroTestKey01"), "{e}");
        }
        let e = cfg(ok, &[]).unwrap_err().to_string();
        assert!(e.contains("BANK_KEY"), "{e}");
        let e = cfg(&ok.replace("12345678", "1234"), &[("BANK_KEY", "k")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("8 digits"), "{e}");
        let e = cfg(
            &format!("{ok}fields = {{ vads_amount = \"1\" }}\n"),
            &[("BANK_KEY", "k")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("set for each payment"), "{e}");
        let e = cfg(
            &format!("{ok}tls_cert = \"/nonexistent/c.pem\"\ntls_key = \"/nonexistent/k.pem\"\n"),
            &[("BANK_KEY", "k")],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("TLS: no file /nonexistent/c.pem"), "{e}");
    }

    #[test]
    fn amounts_people_write() {
        assert_eq!(parse_amount("250"), Ok(25000));
        assert_eq!(parse_amount("250,5"), Ok(25050));
        assert_eq!(parse_amount(" 0.01 "), Ok(1));
        for bad in ["0", "-5", "1e3", "abc", ""] {
            assert!(parse_amount(bad).is_err(), "{bad}");
        }
    }
}
