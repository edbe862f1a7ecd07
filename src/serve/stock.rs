//! Stock: parts against their minimum, open alerts (and a form that checks
//! the stock now), a part's movements over time (a chart), the order
//! suggestions and the place-order form (`super::orders`), the supplier
//! orders with their parcel's status and estimated delivery.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::auth::{CsrfForm, csrf_ok, csrf_refused, require};
use super::{
    Section, Shared, esc, esc_opt, failed, orders, page, status_page, svg, table, url_encode,
};
use crate::batch::Value;
use crate::config::ColumnType;
use crate::db::{Conn, Row};
use crate::error::{Error, Result};
use crate::stock::alerts::{self, ALERTS};
use crate::stock::orders::{ORDERS, SHIPMENTS};
use crate::stock::scans::MOVEMENTS;

/// Movements drawn for a part (the latest ones).
const MOVES: usize = 500;
/// Parts listed per page (at or under their minimum first).
pub const PARTS: usize = 100;

struct Overview {
    levels: Vec<(crate::stock::Level, i64)>,
    alerts: Vec<Row>,
    alerts_open: u64,
    orders: Vec<Row>,
}

fn overview(conn: &mut dyn Conn, acfg: crate::config::AlertsConfig) -> Result<Overview> {
    let mut levels = Vec::new();
    if conn.table_exists("parts")? {
        for l in crate::stock::levels(conn)? {
            let min = alerts::minimum(&acfg, &l.reference, l.min_quantity);
            levels.push((l, min));
        }
    }
    // at or under the minimum first
    levels.sort_by(|a, b| {
        (a.0.quantity > a.1, &a.0.reference).cmp(&(b.0.quantity > b.1, &b.0.reference))
    });
    let d = conn.dialect();
    let (alerts, alerts_open) = if conn.table_exists(ALERTS)? {
        let open = conn
            .query_one(
                &format!("SELECT count(*) FROM {ALERTS} WHERE cleared_at IS NULL"),
                &[],
            )?
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let shown = conn.query(
            &format!(
                "SELECT reference, designation, {}, {}, {} FROM {ALERTS} a WHERE cleared_at IS NULL ORDER BY a.raised_at DESC LIMIT 200",
                d.as_text("quantity"),
                d.as_text("minimum"),
                d.as_text("raised_at")
            ),
            &[],
        )?;
        (shown, open)
    } else {
        (Vec::new(), 0)
    };
    let orders = if conn.table_exists(ORDERS)? {
        let parcels = conn.table_exists(SHIPMENTS)?;
        let (cols, join) = if parcels {
            (
                format!(
                    "s.tracking_number, s.status, {}",
                    d.as_text("s.estimated_delivery")
                ),
                format!(" LEFT JOIN {SHIPMENTS} s ON s.order_id = o.id"),
            )
        } else {
            ("NULL, NULL, NULL".to_string(), String::new())
        };
        conn.query(
            &format!(
                "SELECT o.id, o.supplier, o.status, {}, {}, {}, {cols} FROM {ORDERS} o{join} ORDER BY o.placed_at DESC LIMIT 100",
                d.as_text("o.placed_at"),
                d.as_text("o.lines"),
                d.as_text("o.total"),
            ),
            &[],
        )?
    } else {
        Vec::new()
    };
    Ok(Overview {
        levels,
        alerts,
        alerts_open,
        orders,
    })
}

#[derive(Deserialize, Default)]
pub struct StockQuery {
    /// Orders just placed by the form (`ID,ID`), shown with their parcels.
    #[serde(default)]
    placed: Option<String>,
    /// The page of the parts list (0 first).
    #[serde(default)]
    page: usize,
}

pub async fn show(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<StockQuery>,
) -> Response {
    let s = match require(&app, &headers, Section::Stock) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let acfg = app.cfg.alerts.clone();
    let o = match app.read(move |c| overview(c, acfg)).await {
        Ok(o) => o,
        Err(e) => return failed(&s, "stock", &e),
    };
    let (cfg, ids) = (app.cfg.clone(), orders::placed_ids(q.placed.as_deref()));
    let has_parts = !o.levels.is_empty();
    let part = match tokio::task::spawn_blocking(move || orders::load(&cfg, has_parts, &ids)).await
    {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return failed(&s, "order suggestions", &e),
        Err(e) => return failed(&s, "order suggestions", &Error::runtime(e)),
    };
    let (placed, suggestions) = orders::render(&s, &part);
    let low = o.levels.iter().filter(|(l, m)| l.quantity <= *m).count();
    let mut body = format!(
        "<p><span id=\"parts-count\">{}</span> parts, <span id=\"parts-low\">{low}</span> at or under their minimum, <span id=\"alerts-open\">{}</span> open alerts.</p>",
        o.levels.len(),
        o.alerts_open
    );
    body.push_str(&placed);
    body.push_str(&format!(
        "<form method=\"post\" action=\"/stock/alerts/check\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Check the stock now (raise and clear alerts)</button></form>",
        esc(&s.csrf)
    ));
    body.push_str("<h3>Open alerts</h3>");
    let rows: Vec<Vec<String>> = o
        .alerts
        .iter()
        .map(|r| r.iter().map(esc_opt).collect())
        .collect();
    body.push_str(&table(
        "alerts",
        &["part", "designation", "stock", "minimum", "raised"],
        &rows,
    ));
    let pages = o.levels.len().div_ceil(PARTS).max(1);
    let at = q.page.min(pages - 1);
    body.push_str(&format!(
        "<h3>Parts against their minimum</h3><p>Page <span id=\"parts-page\">{}</span> of {pages}, {PARTS} parts a page.</p>",
        at + 1
    ));
    let rows: Vec<Vec<String>> = o
        .levels
        .iter()
        .skip(at * PARTS)
        .take(PARTS)
        .map(|(l, m)| {
            let flag = if l.quantity <= *m {
                " class=\"low\""
            } else {
                ""
            };
            vec![
                format!(
                    "<a href=\"/stock/part?reference={}\"{flag}>{}</a>",
                    url_encode(&l.reference),
                    esc(&l.reference)
                ),
                esc_opt(&l.designation),
                format!(
                    "<span data-part=\"{}\">{}</span>",
                    esc(&l.reference),
                    l.quantity
                ),
                m.to_string(),
            ]
        })
        .collect();
    body.push_str(&table(
        "parts",
        &["part", "designation", "stock", "minimum"],
        &rows,
    ));
    if at > 0 {
        body.push_str(&format!(
            "<a rel=\"prev\" href=\"/stock?page={}\">← previous</a> ",
            at - 1
        ));
    }
    if at + 1 < pages {
        body.push_str(&format!(
            "<a rel=\"next\" href=\"/stock?page={}\">next →</a>",
            at + 1
        ));
    }
    body.push_str(&suggestions);
    body.push_str("<h3>Supplier orders</h3>");
    let rows: Vec<Vec<String>> = o
        .orders
        .iter()
        .map(|r| r.iter().map(esc_opt).collect())
        .collect();
    body.push_str(&table("orders", &orders::ORDER_COLUMNS, &rows));
    page(Section::Stock.title(), Some(&s), &body).into_response()
}

#[derive(Deserialize)]
pub struct PartQuery {
    reference: String,
}

fn movements(conn: &mut dyn Conn, reference: String) -> Result<(Option<i64>, Vec<Row>)> {
    let d = conn.dialect();
    let min = if conn.table_exists("parts")? {
        conn.query_one(
            &format!(
                "SELECT {} FROM parts WHERE reference = {}",
                d.as_text("min_quantity"),
                d.param(1, ColumnType::Text)
            ),
            &[Value::Text(reference.clone())],
        )?
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as i64)
    } else {
        None
    };
    if !conn.table_exists(MOVEMENTS)? {
        return Ok((min, Vec::new()));
    }
    let mut rows = conn.query(
        &format!(
            "SELECT {}, direction, {}, {}, operator FROM {MOVEMENTS} m WHERE reference = {} ORDER BY m.scanned_at DESC, m.line_id DESC LIMIT {MOVES}",
            d.as_text("scanned_at"),
            d.as_text("quantity"),
            d.as_text("stock_after"),
            d.param(1, ColumnType::Text)
        ),
        &[Value::Text(reference)],
    )?;
    rows.reverse();
    Ok((min, rows))
}

pub async fn part(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<PartQuery>,
) -> Response {
    let s = match require(&app, &headers, Section::Stock) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let reference = q.reference.trim().to_uppercase();
    let r2 = reference.clone();
    let (min, rows) = match app.read(move |c| movements(c, r2)).await {
        Ok(x) => x,
        Err(e) => return failed(&s, "movements", &e),
    };
    let points: Vec<(String, f64)> = rows
        .iter()
        .filter_map(|r| {
            let at = r.first().cloned().flatten()?;
            let after = r.get(3).cloned().flatten()?.parse::<f64>().ok()?;
            Some((at, after))
        })
        .collect();
    let mut body = format!(
        "<p>{} movements of <strong>{}</strong> (the latest {MOVES} at most).</p>",
        rows.len(),
        esc(&reference)
    );
    body.push_str(&svg::steps(
        "movements-chart",
        &format!("Stock of {reference} after each movement"),
        &points,
        min.map(|m| m as f64),
    ));
    let trows: Vec<Vec<String>> = rows
        .iter()
        .rev()
        .map(|r| r.iter().map(esc_opt).collect())
        .collect();
    body.push_str(&table(
        "movements",
        &["at", "direction", "quantity", "stock after", "operator"],
        &trows,
    ));
    page(&format!("Stock — {reference}"), Some(&s), &body).into_response()
}

/// `POST /stock/alerts/check`: raise and clear the alerts from the current
/// stock, and send the new ones (`repaero alerts check`).
pub async fn check_alerts(
    State(app): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let s = match require(&app, &headers, Section::Stock) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !csrf_ok(&s, form.csrf.as_deref()) {
        return csrf_refused(&s);
    }
    let cfg = app.cfg.clone();
    match tokio::task::spawn_blocking(move || alerts::check(&cfg)).await {
        Ok(Ok(((raised, cleared), _))) => {
            tracing::info!(user = %s.user, raised = raised.len(), cleared = cleared.len(), "dashboard: stock checked");
            Redirect::to("/stock").into_response()
        }
        Ok(Err(e)) => failed(&s, "alerts check", &e),
        Err(e) => status_page(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            Some(&s),
            &format!("alerts check: {e}"),
        ),
    }
}
