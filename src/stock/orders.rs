//! Supplier orders. `repaero order suggest`: the parts at or under their
//! minimum, how many to order, and the cheapest and the fastest supplier
//! of each, from the supplier catalogues migrated into `supplier_parts`.
//! `order place` turns them (or lines given) into `supplier_orders`,
//! `order ship` attaches a parcel (`shipments`, tracked by the Colissimo
//! feed, `daemon::colissimo`), `order list` shows them with their parcels.
//!
//! The quantity to order brings the stock up to `target_factor` × the
//! minimum (at least one), raised to the supplier's minimum order; the
//! cheapest supplier is the one whose order costs least for that (a large
//! minimum order can make a low unit price dear).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::batch::Value;
use crate::config::Config;
use crate::config::mapping::ColumnType;
use crate::db::{ColumnDef, Conn, Dialect, TableDef};
use crate::error::{Error, Result};
use crate::sink::Sink;

/// A supplier's offer for a part.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Offer {
    pub supplier: String,
    pub unit_price: Option<f64>,
    pub lead_time_days: Option<i64>,
    pub min_order: i64,
    /// What to order from this supplier (the need, raised to its minimum).
    pub quantity: i64,
    pub total: Option<f64>,
}

/// One part to order.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Suggestion {
    pub reference: String,
    pub designation: Option<String>,
    pub stock: i64,
    pub minimum: i64,
    /// Needed to reach the target stock.
    pub need: i64,
    pub cheapest: Option<Offer>,
    pub fastest: Option<Offer>,
    /// How many suppliers offer it.
    pub offers: usize,
}

fn num(v: &Option<String>) -> Option<f64> {
    v.as_deref().and_then(|s| s.parse::<f64>().ok())
}

/// The order suggestions, by reference.
pub fn suggest(cfg: &Config) -> Result<Vec<Suggestion>> {
    let mut sink = crate::sink::open(&cfg.target.url, true)?;
    let parts = super::levels(sink.conn()?)?;
    let catalogue = if sink.conn()?.count_rows("supplier_parts")?.is_some() {
        sink.conn()?.select_text(
            "supplier_parts",
            &[
                "reference".into(),
                "supplier".into(),
                "unit_price".into(),
                "lead_time_days".into(),
                "min_order".into(),
            ],
        )?
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    for p in parts {
        let (reference, stock) = (p.reference, p.quantity);
        let minimum = super::alerts::minimum(&cfg.alerts, &reference, p.min_quantity);
        if stock > minimum {
            continue;
        }
        let target = (cfg.orders.target_factor * minimum as f64).ceil() as i64;
        let need = (target - stock).max(1);
        let offers: Vec<Offer> = catalogue
            .iter()
            .filter(|c| {
                c[0].as_deref()
                    .is_some_and(|r| r.eq_ignore_ascii_case(&reference))
            })
            .map(|c| {
                let min_order = num(&c[4]).map_or(1, |v| v.max(1.0) as i64);
                let quantity = need.max(min_order);
                let unit_price = num(&c[2]);
                Offer {
                    supplier: c[1].clone().unwrap_or_default(),
                    unit_price,
                    lead_time_days: num(&c[3]).map(|v| v as i64),
                    min_order,
                    quantity,
                    total: unit_price.map(|u| (u * quantity as f64 * 100.0).round() / 100.0),
                }
            })
            .collect();
        // cheapest for what must be bought (a minimum order counts); an
        // offer without a price (or a lead time) comes last
        let cheapest = offers
            .iter()
            .min_by(|a, b| {
                (
                    a.total.unwrap_or(f64::MAX),
                    a.lead_time_days.unwrap_or(i64::MAX),
                )
                    .partial_cmp(&(
                        b.total.unwrap_or(f64::MAX),
                        b.lead_time_days.unwrap_or(i64::MAX),
                    ))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .cloned();
        let fastest = offers
            .iter()
            .min_by(|a, b| {
                (
                    a.lead_time_days.unwrap_or(i64::MAX),
                    a.unit_price.unwrap_or(f64::MAX),
                )
                    .partial_cmp(&(
                        b.lead_time_days.unwrap_or(i64::MAX),
                        b.unit_price.unwrap_or(f64::MAX),
                    ))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .cloned();
        out.push(Suggestion {
            reference,
            designation: p.designation,
            stock,
            minimum,
            need,
            cheapest,
            fastest,
            offers: offers.len(),
        });
    }
    out.sort_by(|a, b| a.reference.cmp(&b.reference));
    Ok(out)
}

/// An offer as people read it (`12 × AEROSTOCK at 9.90 € = 118.80 €, 5 days`).
pub fn offer_text(o: &Option<Offer>) -> String {
    match o {
        None => "no supplier".into(),
        Some(o) => format!(
            "{} × {} at {} = {}, {} days",
            o.quantity,
            o.supplier,
            o.unit_price.map_or("? €".into(), |p| format!("{p:.2} €")),
            o.total.map_or("?".into(), |t| format!("{t:.2} €")),
            o.lead_time_days.map_or("?".into(), |d| d.to_string())
        ),
    }
}

/// The suggestions as people read them.
pub fn render(lines: &[Suggestion]) -> String {
    let mut s = String::new();
    if lines.is_empty() {
        return "nothing to order: every part is above its minimum\n".into();
    }
    for l in lines {
        let _ = writeln!(
            s,
            "{} {} — stock {} ≤ minimum {}: order {}",
            l.reference,
            l.designation.as_deref().unwrap_or(""),
            l.stock,
            l.minimum,
            l.need
        );
        let _ = writeln!(s, "  cheapest: {}", offer_text(&l.cheapest));
        let _ = writeln!(s, "  fastest:  {}", offer_text(&l.fastest));
    }
    s
}

// ---------------------------------------------------------------------------
// Supplier orders and their parcels: `order place`, `order ship`,
// `order list`. The parcels' tracking (`shipments`, `shipment_events`,
// `shipment_polls`) is kept by the Colissimo feed (`daemon::colissimo`).

/// `supplier_orders`: one order to one supplier.
pub const ORDERS: &str = "supplier_orders";
/// `supplier_order_lines`: what an order asks for.
pub const ORDER_LINES: &str = "supplier_order_lines";
/// `shipments`: the parcels attached to orders and their tracking state.
pub const SHIPMENTS: &str = "shipments";
/// `shipment_events`: every tracking event of a parcel, once.
pub const SHIPMENT_EVENTS: &str = "shipment_events";
/// `shipment_polls`: every call made to the tracking service, with its
/// outcome (the quota is counted on it).
pub const SHIPMENT_POLLS: &str = "shipment_polls";

fn col(name: &str, ty: ColumnType, not_null: bool) -> ColumnDef {
    ColumnDef::new(name, ty, not_null)
}

/// `supplier_orders`.
pub fn orders_def() -> TableDef {
    use ColumnType::*;
    let mut total = col("total", Decimal, false);
    total.precision = 14;
    total.scale = 2;
    TableDef::owned(
        ORDERS,
        vec![
            col("id", Text, true),
            col("supplier", Text, true),
            // placed, shipped, delivered, returned
            col("status", Text, true),
            col("placed_at", Datetime, true),
            col("lines", Integer, true),
            total,
            // suggest (from `order suggest`) or manual (--line)
            col("origin", Text, true),
        ],
        &["id"],
    )
}

/// `supplier_order_lines`.
pub fn order_lines_def() -> TableDef {
    use ColumnType::*;
    let money = |name: &str| {
        let mut c = col(name, Decimal, false);
        c.precision = 14;
        c.scale = 2;
        c
    };
    TableDef::owned(
        ORDER_LINES,
        vec![
            col("order_id", Text, true),
            col("line_no", Integer, true),
            col("reference", Text, true),
            col("quantity", Integer, true),
            money("unit_price"),
            money("total"),
        ],
        &["order_id", "line_no"],
    )
}

/// `shipments`. Date-times are UTC.
pub fn shipments_def() -> TableDef {
    use ColumnType::*;
    TableDef::owned(
        SHIPMENTS,
        vec![
            col("tracking_number", Text, true),
            col("order_id", Text, true),
            col("carrier", Text, true),
            col("attached_at", Datetime, true),
            // the normalised status (docs: LabelCreated … Delivered,
            // ReturnedToSender, NotFound, InvalidNumber, Unknown)
            col("status", Text, true),
            // open (polled), final, expired (too old), invalid (bad number)
            col("poll_state", Text, true),
            col("entry_date", Datetime, false),
            col("estimated_delivery", Datetime, false),
            col("delivered_at", Datetime, false),
            col("last_event_code", Text, false),
            col("last_event_label", Text, false),
            col("last_event_at", Datetime, false),
            col("events", Integer, true),
            col("polls", Integer, true),
            col("failed_polls", Integer, true),
            col("last_polled_at", Datetime, false),
            col("next_poll_at", Datetime, false),
            col("return_code", Text, false),
            // why the last poll gave no tracking data (unknown parcel,
            // malformed answer, server error…), until one does
            col("last_error_kind", Text, false),
            col("last_error", Text, false),
            col("last_error_at", Datetime, false),
        ],
        &["tracking_number"],
    )
}

/// `shipment_events`: one row per (parcel, instant, code), whatever the
/// order and the number of answers it came in.
pub fn shipment_events_def() -> TableDef {
    use ColumnType::*;
    TableDef::owned(
        SHIPMENT_EVENTS,
        vec![
            col("tracking_number", Text, true),
            col("event_at", Datetime, true),
            col("code", Text, true),
            col("label", Text, false),
            // normalised; none for a code repaero does not know
            col("status", Text, false),
            col("seq", Integer, false),
            // as the service wrote it (with its offset)
            col("event_date", Text, true),
            col("seen_at", Datetime, true),
        ],
        &["tracking_number", "event_at", "code"],
    )
}

/// `shipment_polls`: one row per request to the tracking service, `at`
/// the instant its answer came (or the client gave up): the quota counts
/// a call from then, the latest instant the service may have counted it.
pub fn shipment_polls_def() -> TableDef {
    use ColumnType::*;
    TableDef::owned(
        SHIPMENT_POLLS,
        vec![
            col("at", Datetime, true),
            col("tracking_number", Text, true),
            col("attempt", Integer, true),
            col("http_status", Integer, false),
            // ok, final, not_found, invalid_number, malformed, upstream,
            // timeout, rate_limited, unauthorized
            col("outcome", Text, true),
            col("reason", Text, false),
            // rate limited: no call before this
            col("retry_at", Datetime, false),
        ],
        &[],
    )
}

/// Create the order and shipment tables that do not exist yet.
pub fn ensure_tables(conn: &mut dyn Conn) -> Result<()> {
    let d = conn.dialect();
    for def in [
        orders_def(),
        order_lines_def(),
        shipments_def(),
        shipment_events_def(),
        shipment_polls_def(),
    ] {
        if !conn.table_exists(&def.name)? {
            conn.batch(&d.create_table(&def, &def.name, d != Dialect::Oracle))?;
            if def.name == SHIPMENT_POLLS {
                // the quota is counted over the last minutes
                conn.batch(&format!(
                    "CREATE INDEX {} ON {} ({})",
                    d.quote("shipment_polls_at"),
                    d.quote(SHIPMENT_POLLS),
                    d.quote("at")
                ))?;
            }
        }
    }
    Ok(())
}

/// `INSERT INTO table (every column) VALUES (…)`.
pub fn insert_sql(d: Dialect, def: &TableDef) -> String {
    let names: Vec<String> = def.columns.iter().map(|c| d.quote(&c.name)).collect();
    let params: Vec<String> = def
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| d.param(i + 1, c.ty))
        .collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({})",
        d.quote(&def.name),
        names.join(", "),
        params.join(", ")
    )
}

/// A date-time as a store gives it back (UTC, `2026-03-01 10:00:00.250`).
pub fn utc(v: &Option<String>) -> Option<DateTime<Utc>> {
    v.as_deref()
        .and_then(|s| crate::batch::parse::parse_datetime(s, &[]))
        .map(|n| n.and_utc())
}

/// A UTC instant as a date-time value.
pub fn at(t: DateTime<Utc>) -> Value {
    Value::Datetime(t.timestamp_millis())
}

/// A UTC instant as the workshop reads it (Europe/Paris, with its offset).
pub fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&chrono_tz::Europe::Paris)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// A parcel number as the service wants it: no spaces, upper case; `None`
/// when it cannot be one (11 to 15 letters and digits).
pub fn tracking_number(text: &str) -> Option<String> {
    let n: String = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_uppercase();
    ((11..=15).contains(&n.len()) && n.chars().all(|c| c.is_ascii_alphanumeric())).then_some(n)
}

/// Which offer of a suggestion `order place` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pick {
    Cheapest,
    Fastest,
}

/// One line to order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderLine {
    pub line_no: i64,
    pub reference: String,
    pub quantity: i64,
    pub unit_price: Option<f64>,
    pub total: Option<f64>,
}

/// An order placed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlacedOrder {
    pub id: String,
    pub supplier: String,
    pub placed_at: String,
    pub origin: String,
    pub total: Option<f64>,
    pub lines: Vec<OrderLine>,
}

/// A part left out of the orders, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub reference: String,
    pub reason: String,
}

/// What `order place` did.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Placed {
    pub orders: Vec<PlacedOrder>,
    pub skipped: Vec<Skipped>,
}

/// A line given on the command line: `PART:SUPPLIER:QTY`.
pub fn parse_line(text: &str) -> Result<(String, String, i64)> {
    let bad = || {
        Error::config(format!(
            "--line {text:?}: expected PART:SUPPLIER:QUANTITY, e.g. HYD-2040:AEROSTOCK:12"
        ))
    };
    let (part, rest) = text.split_once(':').ok_or_else(bad)?;
    let (supplier, qty) = rest.rsplit_once(':').ok_or_else(bad)?;
    let (part, supplier) = (part.trim().to_uppercase(), supplier.trim().to_uppercase());
    if part.is_empty() || supplier.is_empty() {
        return Err(bad());
    }
    let qty: i64 = qty.trim().parse().map_err(|_| bad())?;
    if qty < 1 {
        return Err(Error::config(format!(
            "--line {text:?}: the quantity must be at least 1"
        )));
    }
    Ok((part, supplier, qty))
}

fn money(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The references with a line on an order not delivered yet.
fn on_order(conn: &mut dyn Conn) -> Result<HashMap<String, String>> {
    if !conn.table_exists(ORDERS)? || !conn.table_exists(ORDER_LINES)? {
        return Ok(HashMap::new());
    }
    let d = conn.dialect();
    let rows = conn.query(
        &format!(
            "SELECT l.{r}, o.{id} FROM {lines} l JOIN {orders} o ON o.{id} = l.{oid} \
             WHERE o.{st} IN ('placed', 'shipped')",
            r = d.quote("reference"),
            id = d.quote("id"),
            oid = d.quote("order_id"),
            st = d.quote("status"),
            lines = d.quote(ORDER_LINES),
            orders = d.quote(ORDERS),
        ),
        &[],
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r[0].clone()?.to_uppercase(), r[1].clone()?)))
        .collect())
}

/// Turn the suggestions (or `lines`, `PART:SUPPLIER:QTY`) into supplier
/// orders, one per supplier, in one transaction. From the suggestions, a
/// part already on an order not yet delivered is left out, as is a part no
/// supplier offers. A dry run does everything and rolls back.
pub fn place(cfg: &Config, lines: &[String], pick: Pick, dry_run: bool) -> Result<Placed> {
    let given: Vec<(String, String, i64)> =
        lines.iter().map(|l| parse_line(l)).collect::<Result<_>>()?;
    let suggestions = if given.is_empty() {
        suggest(cfg)?
    } else {
        Vec::new()
    };
    let mut sink = crate::sink::open(&cfg.target.url, dry_run)?;
    sink.begin()?;
    let result = place_in(sink.as_mut(), &given, &suggestions, pick);
    match result {
        Ok(p) if !dry_run => {
            sink.commit()?;
            Ok(p)
        }
        other => {
            let _ = sink.rollback();
            other
        }
    }
}

fn place_in(
    sink: &mut dyn Sink,
    given: &[(String, String, i64)],
    suggestions: &[Suggestion],
    pick: Pick,
) -> Result<Placed> {
    let conn = sink.conn()?;
    ensure_tables(conn)?;
    // one placer at a time: order numbers are taken from what is there
    conn.lock_table(ORDERS)?;
    let d = conn.dialect();
    let mut out = Placed::default();
    // (supplier, reference) → (quantity, unit price)
    let mut wanted: Vec<(String, String, i64, Option<f64>)> = Vec::new();
    let origin;
    if given.is_empty() {
        origin = "suggest";
        let busy = on_order(conn)?;
        for s in suggestions {
            if let Some(id) = busy.get(&s.reference.to_uppercase()) {
                out.skipped.push(Skipped {
                    reference: s.reference.clone(),
                    reason: format!("already on order {id}"),
                });
                continue;
            }
            let offer = match pick {
                Pick::Cheapest => &s.cheapest,
                Pick::Fastest => &s.fastest,
            };
            match offer {
                Some(o) => wanted.push((
                    o.supplier.clone(),
                    s.reference.clone(),
                    o.quantity,
                    o.unit_price,
                )),
                None => out.skipped.push(Skipped {
                    reference: s.reference.clone(),
                    reason: "no supplier offers it".into(),
                }),
            }
        }
    } else {
        origin = "manual";
        let parts = if conn.table_exists("parts")? {
            Some(conn.key_texts("parts", "reference")?)
        } else {
            None
        };
        let suppliers = if conn.table_exists("suppliers")? {
            Some(conn.key_texts("suppliers", "name")?)
        } else {
            None
        };
        let prices: HashMap<(String, String), Option<f64>> =
            if conn.table_exists("supplier_parts")? {
                conn.select_text(
                    "supplier_parts",
                    &["supplier".into(), "reference".into(), "unit_price".into()],
                )?
                .into_iter()
                .filter_map(|r| {
                    Some((
                        (r[0].clone()?.to_uppercase(), r[1].clone()?.to_uppercase()),
                        num(&r[2]),
                    ))
                })
                .collect()
            } else {
                HashMap::new()
            };
        for (part, supplier, qty) in given {
            let find = |set: &Option<std::collections::HashSet<String>>, v: &str| match set {
                None => Some(v.to_string()),
                Some(s) => s.iter().find(|x| x.eq_ignore_ascii_case(v)).cloned(),
            };
            let part = find(&parts, part)
                .ok_or_else(|| Error::config(format!("--line: no part {part} in `parts`")))?;
            let supplier = find(&suppliers, supplier).ok_or_else(|| {
                Error::config(format!("--line: no supplier {supplier} in `suppliers`"))
            })?;
            let price = prices
                .get(&(supplier.to_uppercase(), part.to_uppercase()))
                .copied()
                .flatten();
            wanted.push((supplier, part, *qty, price));
        }
    }
    if wanted.is_empty() {
        return Ok(out);
    }
    let now = Utc::now();
    let day = now.format("%Y%m%d").to_string();
    let prefix = format!("PO-{day}-");
    let taken = conn.query(
        &format!(
            "SELECT {id} FROM {t} WHERE {id} LIKE {p}",
            id = d.quote("id"),
            t = d.quote(ORDERS),
            p = d.param(1, ColumnType::Text)
        ),
        &[Value::Text(format!("{prefix}%"))],
    )?;
    let mut next = taken
        .iter()
        .filter_map(|r| r[0].as_deref()?.strip_prefix(&prefix)?.parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    let mut by_supplier: BTreeMap<String, Vec<(String, i64, Option<f64>)>> = BTreeMap::new();
    for (supplier, part, qty, price) in wanted {
        by_supplier
            .entry(supplier)
            .or_default()
            .push((part, qty, price));
    }
    let order_sql = insert_sql(d, &orders_def());
    let line_sql = insert_sql(d, &order_lines_def());
    for (supplier, parts) in by_supplier {
        next += 1;
        let id = format!("{prefix}{next:03}");
        let lines: Vec<OrderLine> = parts
            .into_iter()
            .enumerate()
            .map(|(i, (reference, quantity, unit_price))| OrderLine {
                line_no: i as i64 + 1,
                reference,
                quantity,
                unit_price,
                total: unit_price.map(|p| money(p * quantity as f64)),
            })
            .collect();
        // a total only when every line has a price
        let total = lines
            .iter()
            .map(|l| l.total)
            .sum::<Option<f64>>()
            .map(money);
        let opt = |v: Option<f64>| v.map_or(Value::Null, Value::Float);
        conn.execute(
            &order_sql,
            &[
                Value::Text(id.clone()),
                Value::Text(supplier.clone()),
                Value::Text("placed".into()),
                at(now),
                Value::Int(lines.len() as i64),
                opt(total),
                Value::Text(origin.into()),
            ],
        )?;
        for l in &lines {
            conn.execute(
                &line_sql,
                &[
                    Value::Text(id.clone()),
                    Value::Int(l.line_no),
                    Value::Text(l.reference.clone()),
                    Value::Int(l.quantity),
                    opt(l.unit_price),
                    opt(l.total),
                ],
            )?;
        }
        out.orders.push(PlacedOrder {
            id,
            supplier,
            placed_at: local(now),
            origin: origin.into(),
            total,
            lines,
        });
    }
    Ok(out)
}

/// What `order place` did, as people read it.
pub fn render_placed(p: &Placed) -> String {
    let mut s = String::new();
    if p.orders.is_empty() {
        s.push_str("no order placed\n");
    }
    for o in &p.orders {
        let _ = writeln!(
            s,
            "{} to {}: {} line{}, {}",
            o.id,
            o.supplier,
            o.lines.len(),
            if o.lines.len() == 1 { "" } else { "s" },
            o.total
                .map_or("total unknown (a price is missing)".into(), |t| format!(
                    "{t:.2} €"
                ))
        );
        for l in &o.lines {
            let _ = writeln!(
                s,
                "  {} × {}{}",
                l.quantity,
                l.reference,
                l.unit_price
                    .map(|p| format!(" at {p:.2} €"))
                    .unwrap_or_default()
            );
        }
    }
    for k in &p.skipped {
        let _ = writeln!(s, "not ordered: {} ({})", k.reference, k.reason);
    }
    s
}

/// A parcel attached to an order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attached {
    pub order: String,
    pub tracking_number: String,
    /// It was attached to this order already: nothing changed.
    pub already: bool,
}

/// Attach the parcel `tracking` to `order` (polled by the Colissimo feed
/// from now on); the order becomes `shipped`.
pub fn ship(cfg: &Config, order: &str, tracking: &str) -> Result<Attached> {
    let number = tracking_number(tracking).ok_or_else(|| {
        Error::config(format!(
            "--tracking {tracking:?} is not a parcel number: 11 to 15 letters and digits, e.g. 6A12345678901"
        ))
    })?;
    let mut sink = crate::sink::open(&cfg.target.url, false)?;
    sink.begin()?;
    let done = (|| {
        let conn = sink.conn()?;
        ensure_tables(conn)?;
        conn.lock_table(SHIPMENTS)?;
        let d = conn.dialect();
        let p1 = d.param(1, ColumnType::Text);
        let found = conn.query_one(
            &format!(
                "SELECT {} FROM {} WHERE {} = {p1}",
                d.quote("status"),
                d.quote(ORDERS),
                d.quote("id")
            ),
            &[Value::Text(order.to_string())],
        )?;
        let Some(status) = found else {
            return Err(Error::config(format!("no supplier order {order:?}")));
        };
        let owner = conn.query_one(
            &format!(
                "SELECT {} FROM {} WHERE {} = {p1}",
                d.quote("order_id"),
                d.quote(SHIPMENTS),
                d.quote("tracking_number")
            ),
            &[Value::Text(number.clone())],
        )?;
        match owner {
            Some(o) if o == order => {
                return Ok(Attached {
                    order: order.into(),
                    tracking_number: number.clone(),
                    already: true,
                });
            }
            Some(o) => {
                return Err(Error::config(format!(
                    "parcel {number} is attached to order {o} already"
                )));
            }
            None => {}
        }
        let now = Utc::now();
        let mut values = vec![
            Value::Text(number.clone()),
            Value::Text(order.into()),
            Value::Text("colissimo".into()),
            at(now),
            Value::Text("Unknown".into()),
            Value::Text("open".into()),
        ];
        // every other column empty but the counts (0) and next_poll_at (now)
        for c in &shipments_def().columns[values.len()..] {
            values.push(match c.name.as_str() {
                "events" | "polls" | "failed_polls" => Value::Int(0),
                "next_poll_at" => at(now),
                _ => Value::Null,
            });
        }
        conn.execute(&insert_sql(d, &shipments_def()), &values)?;
        if status == "placed" {
            conn.execute(
                &format!(
                    "UPDATE {} SET {} = 'shipped' WHERE {} = {p1}",
                    d.quote(ORDERS),
                    d.quote("status"),
                    d.quote("id")
                ),
                &[Value::Text(order.into())],
            )?;
        }
        Ok(Attached {
            order: order.into(),
            tracking_number: number.clone(),
            already: false,
        })
    })();
    match done {
        Ok(a) => {
            sink.commit()?;
            Ok(a)
        }
        Err(e) => {
            let _ = sink.rollback();
            Err(e)
        }
    }
}

/// A parcel as `order list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParcelView {
    pub tracking_number: String,
    pub status: String,
    pub poll_state: String,
    /// Europe/Paris, with its offset.
    pub estimated_delivery: Option<String>,
    pub delivered_at: Option<String>,
    pub last_event_code: Option<String>,
    pub last_event_label: Option<String>,
    pub last_event_at: Option<String>,
    pub events: i64,
    pub last_polled_at: Option<String>,
    pub last_error: Option<String>,
}

/// An order as `order list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderView {
    pub id: String,
    pub supplier: String,
    pub status: String,
    pub placed_at: String,
    pub origin: String,
    pub total: Option<f64>,
    pub lines: Vec<OrderLine>,
    pub shipments: Vec<ParcelView>,
}

/// Every order, oldest first, with its lines and parcels.
pub fn list(cfg: &Config) -> Result<Vec<OrderView>> {
    let mut sink = crate::sink::open(&cfg.target.url, true)?;
    let conn = sink.conn()?;
    if !conn.table_exists(ORDERS)? {
        return Ok(Vec::new());
    }
    let names =
        |def: TableDef| -> Vec<String> { def.columns.into_iter().map(|c| c.name).collect() };
    let time = |v: &Option<String>| utc(v).map(local);
    let mut orders: Vec<OrderView> = conn
        .select_text(ORDERS, &names(orders_def()))?
        .into_iter()
        .map(|r| OrderView {
            id: r[0].clone().unwrap_or_default(),
            supplier: r[1].clone().unwrap_or_default(),
            status: r[2].clone().unwrap_or_default(),
            placed_at: time(&r[3]).unwrap_or_default(),
            total: num(&r[5]),
            origin: r[6].clone().unwrap_or_default(),
            lines: Vec::new(),
            shipments: Vec::new(),
        })
        .collect();
    let mut index: HashMap<String, usize> = HashMap::new();
    orders.sort_by(|a, b| a.id.cmp(&b.id));
    for (i, o) in orders.iter().enumerate() {
        index.insert(o.id.clone(), i);
    }
    if conn.table_exists(ORDER_LINES)? {
        let mut rows = conn.select_text(ORDER_LINES, &names(order_lines_def()))?;
        rows.sort_by_key(|r| super::int(&r[1]));
        for r in rows {
            if let Some(&i) = r[0].as_ref().and_then(|o| index.get(o)) {
                orders[i].lines.push(OrderLine {
                    line_no: super::int(&r[1]).unwrap_or(0),
                    reference: r[2].clone().unwrap_or_default(),
                    quantity: super::int(&r[3]).unwrap_or(0),
                    unit_price: num(&r[4]),
                    total: num(&r[5]),
                });
            }
        }
    }
    if conn.table_exists(SHIPMENTS)? {
        let cols = names(shipments_def());
        let pos = |n: &str| cols.iter().position(|c| c == n).unwrap_or(0);
        let mut rows = conn.select_text(SHIPMENTS, &cols)?;
        rows.sort_by(|a, b| (&a[pos("attached_at")], &a[0]).cmp(&(&b[pos("attached_at")], &b[0])));
        for r in rows {
            let get = |n: &str| r[pos(n)].clone();
            if let Some(&i) = get("order_id").as_ref().and_then(|o| index.get(o)) {
                orders[i].shipments.push(ParcelView {
                    tracking_number: get("tracking_number").unwrap_or_default(),
                    status: get("status").unwrap_or_default(),
                    poll_state: get("poll_state").unwrap_or_default(),
                    estimated_delivery: time(&get("estimated_delivery")),
                    delivered_at: time(&get("delivered_at")),
                    last_event_code: get("last_event_code"),
                    last_event_label: get("last_event_label"),
                    last_event_at: time(&get("last_event_at")),
                    events: super::int(&get("events")).unwrap_or(0),
                    last_polled_at: time(&get("last_polled_at")),
                    last_error: get("last_error"),
                });
            }
        }
    }
    Ok(orders)
}

/// The orders as people read them.
pub fn render_list(orders: &[OrderView]) -> String {
    let mut s = String::new();
    if orders.is_empty() {
        return "no supplier order\n".into();
    }
    let day = |t: &Option<String>| t.as_deref().map(|t| t.get(..10).unwrap_or(t).to_string());
    for o in orders {
        let _ = writeln!(
            s,
            "{}  {}  {}  placed {}  {} line{}  {}",
            o.id,
            o.supplier,
            o.status,
            day(&Some(o.placed_at.clone())).unwrap_or_default(),
            o.lines.len(),
            if o.lines.len() == 1 { "" } else { "s" },
            o.total
                .map_or("total unknown".into(), |t| format!("{t:.2} €"))
        );
        for p in &o.shipments {
            let when = match (&p.delivered_at, &p.estimated_delivery) {
                (Some(d), _) => format!("delivered {}", day(&Some(d.clone())).unwrap_or_default()),
                (None, Some(e)) => {
                    format!("estimated {}", day(&Some(e.clone())).unwrap_or_default())
                }
                (None, None) => "no estimate".into(),
            };
            let _ = writeln!(
                s,
                "  parcel {}  {}  {}{}{}",
                p.tracking_number,
                p.status,
                when,
                p.last_event_label
                    .as_ref()
                    .map(|l| format!("  last: {l}"))
                    .unwrap_or_default(),
                p.last_error
                    .as_ref()
                    .map(|e| format!("  ({e})"))
                    .unwrap_or_default()
            );
        }
    }
    s
}
