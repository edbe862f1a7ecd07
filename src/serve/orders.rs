//! The stock page's supplier orders: the order suggestions
//! ([`orders::suggest`]) with the form that places the chosen lines
//! (`POST /stock/orders`, [`orders::place`], as `repaero order place
//! --line PART:SUPPLIER:QTY` does), and the orders just placed with their
//! lines and parcels ([`orders::list`]).
//!
//! The form has one choice per suggestion: not ordered (the default), the
//! cheapest offer or the fastest. Nothing is placed without a chosen line
//! (an empty `order place` would order every suggestion).

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::auth::{Session, csrf_ok, csrf_refused, require};
use super::{Section, Shared, esc, esc_opt, failed, page, table, url_encode};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::stock::orders::{self, Offer, OrderView, Pick, Suggestion};

/// The columns of a supplier order with its parcel (here and on the stock
/// page's list).
pub const ORDER_COLUMNS: [&str; 9] = [
    "order",
    "supplier",
    "status",
    "placed",
    "lines",
    "total",
    "parcel",
    "parcel status",
    "estimated delivery",
];

/// Orders named in `?placed=` shown at most.
const PLACED_SHOWN: usize = 20;

/// What the stock page shows of the orders.
pub struct OrdersPart {
    pub suggestions: Vec<Suggestion>,
    /// reference → the order not delivered yet that has it.
    pub on_order: BTreeMap<String, String>,
    /// The orders named in `?placed=`, as `order list` has them.
    pub placed: Vec<OrderView>,
}

/// The order ids of `?placed=ID,ID`.
pub fn placed_ids(q: Option<&str>) -> Vec<String> {
    q.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .take(PLACED_SHOWN)
        .map(String::from)
        .collect()
}

/// The suggestions (when the target has parts: `parts` is not empty) and
/// the orders (blocking: the library opens its own connection).
pub fn load(cfg: &Config, has_parts: bool, placed: &[String]) -> Result<OrdersPart> {
    let suggestions = if has_parts {
        orders::suggest(cfg)?
    } else {
        Vec::new()
    };
    let all = if suggestions.is_empty() && placed.is_empty() {
        Vec::new()
    } else {
        orders::list(cfg)?
    };
    let mut on_order = BTreeMap::new();
    for o in &all {
        if o.status == "placed" || o.status == "shipped" {
            for l in &o.lines {
                on_order
                    .entry(l.reference.to_uppercase())
                    .or_insert_with(|| o.id.clone());
            }
        }
    }
    let placed = all.into_iter().filter(|o| placed.contains(&o.id)).collect();
    Ok(OrdersPart {
        suggestions,
        on_order,
        placed,
    })
}

/// The line `order place` takes for an offer: `PART:SUPPLIER:QTY`.
pub fn line_of(reference: &str, o: &Offer) -> String {
    format!("{reference}:{}:{}", o.supplier, o.quantity)
}

fn offer_cell(o: &Option<Offer>) -> String {
    match o {
        None => "<span class=\"empty\">no supplier</span>".into(),
        Some(_) => esc(&orders::offer_text(o)),
    }
}

fn choice(s: &Suggestion) -> String {
    let mut options = vec![("—".to_string(), String::new())];
    if let Some(c) = &s.cheapest {
        options.push((
            format!("cheapest: {} × {}", c.quantity, c.supplier),
            line_of(&s.reference, c),
        ));
    }
    if let Some(f) = &s.fastest {
        let line = line_of(&s.reference, f);
        if options.iter().all(|(_, v)| *v != line) {
            options.push((format!("fastest: {} × {}", f.quantity, f.supplier), line));
        }
    }
    if options.len() == 1 {
        return "<span class=\"empty\">nothing to order from</span>".into();
    }
    let mut out = format!("<select name=\"line\" data-part=\"{}\">", esc(&s.reference));
    for (label, value) in options {
        out.push_str(&format!(
            "<option value=\"{}\">{}</option>",
            esc(&value),
            esc(&label)
        ));
    }
    out.push_str("</select>");
    out
}

/// The orders just placed (`?placed=`), then the suggestions and their form.
pub fn render(s: &Session, part: &OrdersPart) -> (String, String) {
    let mut placed = String::new();
    if !part.placed.is_empty() {
        placed.push_str("<h3>Orders placed</h3>");
        let rows: Vec<Vec<String>> = part
            .placed
            .iter()
            .map(|o| {
                let lines: Vec<String> = o
                    .lines
                    .iter()
                    .map(|l| format!("{} × {}", l.quantity, esc(&l.reference)))
                    .collect();
                let parcel = o.shipments.last();
                vec![
                    format!("<span class=\"order-id\">{}</span>", esc(&o.id)),
                    esc(&o.supplier),
                    format!("<span class=\"order-status\">{}</span>", esc(&o.status)),
                    esc(&o.placed_at),
                    lines.join("<br>"),
                    o.total.map_or("—".into(), |t| format!("{t:.2}")),
                    parcel.map_or("no parcel yet".into(), |p| esc(&p.tracking_number)),
                    format!(
                        "<span class=\"parcel-status\">{}</span>",
                        parcel.map_or("—".into(), |p| esc(&p.status))
                    ),
                    format!(
                        "<span class=\"parcel-eta\">{}</span>",
                        esc_opt(&parcel.and_then(|p| p.estimated_delivery.clone()))
                    ),
                ]
            })
            .collect();
        placed.push_str(&table("placed", &ORDER_COLUMNS, &rows));
    }
    let mut body = String::from("<h3>Order suggestions</h3>");
    let rows: Vec<Vec<String>> = part
        .suggestions
        .iter()
        .map(|g| {
            vec![
                esc(&g.reference),
                esc_opt(&g.designation),
                g.stock.to_string(),
                g.minimum.to_string(),
                g.need.to_string(),
                offer_cell(&g.cheapest),
                offer_cell(&g.fastest),
                esc_opt(&part.on_order.get(&g.reference.to_uppercase()).cloned()),
                choice(g),
            ]
        })
        .collect();
    let grid = table(
        "suggestions",
        &[
            "part",
            "designation",
            "stock",
            "minimum",
            "need",
            "cheapest",
            "fastest",
            "on order",
            "order",
        ],
        &rows,
    );
    if part.suggestions.is_empty() {
        body.push_str(&grid);
    } else {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/stock/orders\" id=\"order-form\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">{grid}<button>Place the chosen lines (one order per supplier)</button></form>",
            esc(&s.csrf)
        ));
    }
    (placed, body)
}

/// A message of the library about a `--line`, for the page.
fn plain(e: &Error) -> String {
    let m = e.to_string();
    m.strip_prefix("--line: ")
        .or_else(|| m.strip_prefix("--line "))
        .unwrap_or(&m)
        .to_string()
}

/// A refusal that changed nothing: the page says why.
fn refused(status: StatusCode, s: &Session, msg: &str) -> Response {
    (
        status,
        page(
            "Supplier order",
            Some(s),
            &format!(
                "<p class=\"error\" id=\"order-error\">{}</p><p><a href=\"/stock\">Back to the stock</a></p>",
                esc(msg)
            ),
        ),
    )
        .into_response()
}

/// `POST /stock/orders`: place the chosen lines (`line=PART:SUPPLIER:QTY`,
/// repeated), one order per supplier in one transaction; then to the stock
/// page showing them.
pub async fn place(
    State(app): State<Shared>,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let s = match require(&app, &headers, Section::Stock) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let token = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str());
    if !csrf_ok(&s, token) {
        return csrf_refused(&s);
    }
    let lines: Vec<String> = fields
        .iter()
        .filter(|(k, v)| k == "line" && !v.trim().is_empty())
        .map(|(_, v)| v.trim().to_string())
        .collect();
    if lines.is_empty() {
        return refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            &s,
            "no line chosen: nothing was ordered",
        );
    }
    if let Some(e) = lines.iter().find_map(|l| orders::parse_line(l).err()) {
        return refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            &s,
            &format!("{}: nothing was ordered", plain(&e)),
        );
    }
    let cfg = app.cfg.clone();
    let n = lines.len();
    let placed =
        tokio::task::spawn_blocking(move || orders::place(&cfg, &lines, Pick::Cheapest, false))
            .await
            .unwrap_or_else(|e| Err(Error::runtime(format!("order place: {e}"))));
    match placed {
        Ok(p) if p.orders.is_empty() => {
            refused(StatusCode::UNPROCESSABLE_ENTITY, &s, "no order placed")
        }
        Ok(p) => {
            let ids: Vec<&str> = p.orders.iter().map(|o| o.id.as_str()).collect();
            tracing::info!(user = %s.user, lines = n, orders = ?ids, "dashboard: supplier orders placed");
            Redirect::to(&format!("/stock?placed={}", url_encode(&ids.join(",")))).into_response()
        }
        // an unknown part or supplier: the transaction was rolled back
        Err(e @ (Error::Config(_) | Error::Input(_))) => refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            &s,
            &format!("{}: nothing was ordered", plain(&e)),
        ),
        Err(e) => failed(&s, "order place", &e),
    }
}
