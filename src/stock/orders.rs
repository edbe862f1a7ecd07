//! `repaero order suggest`: the parts at or under their minimum, how many
//! to order, and the cheapest and the fastest supplier of each, from the
//! supplier catalogues migrated into `supplier_parts`.
//!
//! The quantity to order brings the stock up to `target_factor` × the
//! minimum (at least one), raised to the supplier's minimum order; the
//! cheapest supplier is the one whose order costs least for that (a large
//! minimum order can make a low unit price dear).

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::Config;
use crate::error::Result;

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

fn offer_text(o: &Option<Offer>) -> String {
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
