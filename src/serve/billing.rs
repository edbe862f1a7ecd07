//! Billing: invoices paid, pending and late (unpaid or partly paid past
//! their due date), the late ones, the last payments and the totals per
//! method, the pay-link attempts of the bank feed; the invoices to pay with
//! their pay-link forms (`super::paylink`).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::auth::require;
use super::{Section, Shared, esc, esc_opt, failed, page, paylink, table};
use crate::daemon::bank::store::{ATTEMPTS, INVOICES, PAYMENTS};
use crate::db::{Conn, Row};
use crate::error::Result;
use crate::rollup::Rollup;

/// Invoices by state: `paid`, `pending`, `late`, `cancelled`, on `today`
/// (`YYYY-MM-DD`).
pub fn state_sql(conn: &mut dyn Conn, today: &str) -> Result<String> {
    let deleted = match not_deleted(conn)? {
        "" => String::new(),
        w => format!("WHERE {w}"),
    };
    Ok(format!(
        "SELECT {} AS state, id, number, client_code, issued_on, due_on, status, total_incl_tax FROM {INVOICES} {deleted}",
        state_case(today)
    ))
}

/// The state of an invoice (`status`, `due_on`) on `today`.
fn state_case(today: &str) -> String {
    format!(
        "CASE WHEN status = 'payée' THEN 'paid' WHEN status = 'annulée' THEN 'cancelled' \
         WHEN due_on IS NOT NULL AND due_on < '{today}' THEN 'late' ELSE 'pending' END"
    )
}

/// The condition of invoices not soft-deleted (empty without `deleted_at`).
fn not_deleted(conn: &mut dyn Conn) -> Result<&'static str> {
    Ok(
        if conn
            .columns(INVOICES)?
            .iter()
            .any(|c| c.eq_ignore_ascii_case("deleted_at"))
        {
            "deleted_at IS NULL"
        } else {
            ""
        },
    )
}

struct Overview {
    states: Vec<Row>,
    late: Vec<Row>,
    methods: Vec<Row>,
    payments: Vec<Row>,
    attempts: Vec<Row>,
}

fn overview(conn: &mut dyn Conn, today: String) -> Result<Overview> {
    // a table replaced since the summaries were built: rebuild them
    if let Err(e) = crate::rollup::ensure(conn) {
        tracing::warn!("dashboard: billing summaries not rebuilt: {e}");
    }
    let d = conn.dialect();
    let (states, late) = if conn.table_exists(INVOICES)? {
        // PostgreSQL: from the summary per status and due date (crate::rollup)
        let states_sql = if crate::rollup::fresh(conn, Rollup::Invoices)? {
            format!(
                "SELECT {} AS state, sum(n), sum(total_incl_tax)::text FROM ({}) x GROUP BY 1 ORDER BY 1",
                state_case(&today),
                Rollup::Invoices.read_sql()
            )
        } else {
            format!(
                "SELECT state, count(*), {} FROM ({}) x GROUP BY state ORDER BY state",
                d.as_text("sum(total_incl_tax)"),
                state_sql(conn, &today)?
            )
        };
        let states = conn.query(&states_sql, &[])?;
        // the `late` of state_sql, written on the table so that the index
        // on due_on gives the oldest first without reading every invoice
        let deleted = match not_deleted(conn)? {
            "" => String::new(),
            w => format!("{w} AND "),
        };
        let late = conn.query(
            &format!(
                "SELECT number, client_code, {}, {}, status, {} FROM {INVOICES} i WHERE {deleted}due_on < '{today}' \
                 AND (status IS NULL OR status NOT IN ('payée', 'annulée')) ORDER BY i.due_on LIMIT 50",
                d.as_text("issued_on"),
                d.as_text("due_on"),
                d.as_text("total_incl_tax")
            ),
            &[],
        )?;
        (states, late)
    } else {
        (Vec::new(), Vec::new())
    };
    let (methods, payments) = if conn.table_exists(PAYMENTS)? {
        let methods_sql = if crate::rollup::fresh(conn, Rollup::Methods)? {
            Rollup::Methods.read_sql()
        } else {
            format!(
                "SELECT method, count(*), {} FROM {PAYMENTS} GROUP BY method ORDER BY method",
                d.as_text("sum(amount)")
            )
        };
        let methods = conn.query(&methods_sql, &[])?;
        let payments = conn.query(
            &format!(
                "SELECT {}, {}, {}, method, reference FROM {PAYMENTS} p ORDER BY p.paid_on DESC, p.id DESC LIMIT 50",
                d.as_text("paid_on"),
                d.as_text("invoice_id"),
                d.as_text("amount")
            ),
            &[],
        )?;
        (methods, payments)
    } else {
        (Vec::new(), Vec::new())
    };
    let attempts = if conn.table_exists(ATTEMPTS)? {
        conn.query(
            &format!(
                "SELECT order_id, {}, {}, status, {} FROM {ATTEMPTS} a ORDER BY a.created_at DESC LIMIT 20",
                d.as_text("invoice_id"),
                d.as_text("amount_cents"),
                d.as_text("created_at")
            ),
            &[],
        )?
    } else {
        Vec::new()
    };
    Ok(Overview {
        states,
        late,
        methods,
        payments,
        attempts,
    })
}

pub async fn show(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let s = match require(&app, &headers, Section::Billing) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let t2 = today.clone();
    let o = match app.read(move |c| overview(c, t2)).await {
        Ok(o) => o,
        Err(e) => return failed(&s, "billing", &e),
    };
    let t3 = today.clone();
    let to_pay = match app.read(move |c| paylink::pending(c, &t3)).await {
        Ok(r) => r,
        Err(e) => return failed(&s, "invoices to pay", &e),
    };
    let mut body = format!("<h3>Invoices on {today}</h3>");
    let rows: Vec<Vec<String>> = o
        .states
        .iter()
        .map(|r| {
            let state = r.first().cloned().flatten().unwrap_or_default();
            vec![
                esc(&state),
                format!(
                    "<span id=\"invoices-{}\">{}</span>",
                    esc(&state),
                    esc_opt(&r[1])
                ),
                esc_opt(&r[2]),
            ]
        })
        .collect();
    body.push_str(&table(
        "invoice-states",
        &["state", "invoices", "total incl. tax"],
        &rows,
    ));
    body.push_str("<h3>Late invoices (oldest due first)</h3>");
    let rows: Vec<Vec<String>> = o
        .late
        .iter()
        .map(|r| r.iter().map(esc_opt).collect())
        .collect();
    body.push_str(&table(
        "late",
        &[
            "invoice",
            "client",
            "issued",
            "due",
            "status",
            "total incl. tax",
        ],
        &rows,
    ));
    body.push_str(&paylink::render(&s, &to_pay, paylink::bank_state(&app)));
    body.push_str("<h3>Payments by method</h3>");
    let rows: Vec<Vec<String>> = o
        .methods
        .iter()
        .map(|r| r.iter().map(esc_opt).collect())
        .collect();
    body.push_str(&table("methods", &["method", "payments", "amount"], &rows));
    body.push_str("<h3>Last payments</h3>");
    let rows: Vec<Vec<String>> = o
        .payments
        .iter()
        .map(|r| r.iter().map(esc_opt).collect())
        .collect();
    body.push_str(&table(
        "payments",
        &["paid on", "invoice", "amount", "method", "reference"],
        &rows,
    ));
    body.push_str("<h3>Pay-link attempts (bank)</h3>");
    let rows: Vec<Vec<String>> = o
        .attempts
        .iter()
        .map(|r| r.iter().map(esc_opt).collect())
        .collect();
    body.push_str(&table(
        "attempts",
        &["order", "invoice", "amount (cents)", "status", "created"],
        &rows,
    ));
    page(Section::Billing.title(), Some(&s), &body).into_response()
}
