//! The billing page's pay links: the invoices still to pay, each with a
//! form (`POST /billing/pay-link`) that issues a payment attempt and its
//! signed form to the bank with [`bank::pay_link`], as `repaero pay-link
//! <invoice>` does, and shows it. Refused with a message, nothing issued,
//! when the bank is not configured or the invoice has nothing to pay.

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::{Session, csrf_ok, csrf_refused, require};
use super::billing::state_sql;
use super::{Section, Shared, esc, esc_opt, failed, page, table};
use crate::daemon::bank::store::{self, INVOICES, PAYMENTS};
use crate::daemon::bank::{self, PayForm};
use crate::db::{Conn, Row};
use crate::error::{Error, Result};

/// Invoices to pay shown (the oldest due first).
const SHOWN: usize = 50;

/// The invoices pending or late, oldest due first: number, client, issued,
/// due, state, total, paid so far.
pub fn pending(conn: &mut dyn Conn, today: &str) -> Result<Vec<Row>> {
    if !conn.table_exists(INVOICES)? {
        return Ok(Vec::new());
    }
    let d = conn.dialect();
    let base = state_sql(conn, today)?;
    let paid = if conn.table_exists(PAYMENTS)? {
        d.as_text(&format!(
            "(SELECT sum(p.amount) FROM {PAYMENTS} p WHERE p.invoice_id = x.id)"
        ))
    } else {
        "NULL".to_string()
    };
    conn.query(
        &format!(
            "SELECT number, client_code, {}, {}, state, {}, {paid} FROM ({base}) x WHERE state IN ('pending', 'late') ORDER BY due_on, number LIMIT {SHOWN}",
            d.as_text("issued_on"),
            d.as_text("due_on"),
            d.as_text("total_incl_tax"),
        ),
        &[],
    )
}

/// The table of the invoices to pay, a pay-link form on each row when the
/// bank is configured.
pub fn render(s: &Session, rows: &[Row], bank: std::result::Result<(), String>) -> String {
    let mut body = String::from("<h3>Invoices to pay: pay links</h3>");
    if let Err(why) = &bank {
        body.push_str(&format!(
            "<p class=\"empty\" id=\"bank-off\">No pay link: {}</p>",
            esc(why)
        ));
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let number = r.first().cloned().flatten().unwrap_or_default();
            let cents = |i: usize| r.get(i).cloned().flatten().as_deref().and_then(store::cents);
            let mut cells: Vec<String> = r.iter().take(6).map(esc_opt).collect();
            // what the bank would be asked: the total less the payments
            cells.push(format!(
                "<span class=\"left\">{}</span>",
                cents(5).map_or("—".into(), |t| store::decimal(t - cents(6).unwrap_or(0)))
            ));
            cells.push(if bank.is_ok() {
                format!(
                    "<form method=\"post\" action=\"/billing/pay-link\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"invoice\" value=\"{}\"><input name=\"amount\" size=\"8\" placeholder=\"all due\" aria-label=\"amount in euros\"> <button>Pay link</button></form>",
                    esc(&s.csrf),
                    esc(&number)
                )
            } else {
                "—".into()
            });
            cells
        })
        .collect();
    body.push_str(&table(
        "to-pay",
        &[
            "invoice",
            "client",
            "issued",
            "due",
            "state",
            "total incl. tax",
            "left to pay",
            "pay link",
        ],
        &rows,
    ));
    body
}

/// Whether the bank is configured, else why not.
pub fn bank_state(app: &Shared) -> std::result::Result<(), String> {
    bank::BankConfig::from_config(&app.cfg)
        .map(drop)
        .map_err(|e| e.to_string())
}

#[derive(Deserialize)]
pub struct PayLinkForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    invoice: String,
    /// Euros; empty: the amount due.
    #[serde(default)]
    amount: Option<String>,
}

fn refused(status: StatusCode, s: &Session, msg: &str) -> Response {
    (
        status,
        page(
            "Pay link",
            Some(s),
            &format!(
                "<p class=\"error\" id=\"paylink-error\">{}</p><p>No pay link was issued. <a href=\"/billing\">Back to billing</a></p>",
                esc(msg)
            ),
        ),
    )
        .into_response()
}

fn shown(s: &Session, form: &PayForm) -> Response {
    let inputs: String = form
        .fields
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                esc(k),
                esc(v)
            )
        })
        .collect();
    let attempt = form.fields.get("vads_trans_id").map_or("", |s| s.as_str());
    let body = format!(
        "<p>Invoice <strong id=\"paylink-invoice\">{}</strong>: <span id=\"paylink-amount\">{}</span> EUR, attempt <code id=\"paylink-attempt\">{}</code> recorded.</p>\
         <p>The customer pays on the bank's page, <code id=\"paylink-action\">{}</code>, with this signed form (send it as is; a new pay link is a new attempt):</p>\
         <form method=\"post\" action=\"{}\" accept-charset=\"UTF-8\" id=\"paylink-form\">{inputs}<button>Open the bank's payment page</button></form>\
         <p><a href=\"/billing\">Back to billing</a></p>",
        esc(&form.invoice),
        esc(&form.amount),
        esc(attempt),
        esc(&form.action),
        esc(&form.action),
    );
    page("Pay link", Some(s), &body).into_response()
}

/// `POST /billing/pay-link`: issue a payment attempt for the invoice (its
/// amount due, or `amount` euros of it) and show the bank's signed form.
pub async fn issue(
    State(app): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<PayLinkForm>,
) -> Response {
    let s = match require(&app, &headers, Section::Billing) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !csrf_ok(&s, form.csrf.as_deref()) {
        return csrf_refused(&s);
    }
    let invoice = form.invoice.trim().to_string();
    if invoice.is_empty() {
        return refused(StatusCode::UNPROCESSABLE_ENTITY, &s, "no invoice given");
    }
    let amount = form
        .amount
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty());
    let cfg = app.cfg.clone();
    let inv = invoice.clone();
    let issued = tokio::task::spawn_blocking(move || bank::pay_link(&cfg, &inv, amount.as_deref()))
        .await
        .unwrap_or_else(|e| Err(Error::runtime(format!("pay link: {e}"))));
    match issued {
        Ok(f) => {
            tracing::info!(user = %s.user, invoice = %f.invoice, amount = %f.amount, "dashboard: pay link issued");
            shown(&s, &f)
        }
        // [daemons.bank] missing or wrong
        Err(e @ Error::Config(_)) => refused(StatusCode::SERVICE_UNAVAILABLE, &s, &e.to_string()),
        // unknown invoice, cancelled, nothing left to pay, a bad amount
        Err(e @ Error::Input(_)) => refused(StatusCode::UNPROCESSABLE_ENTITY, &s, &e.to_string()),
        Err(e) => failed(&s, "pay link", &e),
    }
}
