//! The plan's indicators, per month, from what repaero holds in the target:
//! `repaero kpi` and the dashboard's KPI page give the same numbers.
//!
//! Each indicator is a value per calendar month (UTC), a baseline (the mean
//! of its monthly values before `[kpi] go_live`) and the plan's target (the
//! baseline moved by the plan's change: appointments +15 %, days from
//! invoice to payment −15 %, stock-outs −90 %, supply orders per
//! intervention −50 %). A month meets the target when its value is at or
//! beyond it, in the indicator's direction. Indicators that need data
//! repaero does not hold are listed with the reason, never invented.
//!
//! Definitions (each one aggregate query, grouped by month):
//! - `appointments`: appointments booked through the booking queue
//!   (`appointments`, not cancelled, by the month of `start_at`) plus the
//!   visits recorded before it (`interventions` from the migration, not
//!   cancelled, without a queue `message_id`, by `performed_at`);
//! - `payment_days`: for each paid invoice (`invoices.status = 'payée'`,
//!   not soft-deleted), days from `issued_on` to its last payment
//!   (`payments.paid_on`), averaged by the month of that last payment;
//! - `stock_outs`: stock movements out that left a part at 0
//!   (`stock_movements`, `direction = 'OUT'`, `stock_after = 0`), by the
//!   month of `scanned_at`; a month with movements and none is 0;
//! - `orders_per_intervention`: supplier orders placed in the month
//!   (`supplier_orders.placed_at`) over the interventions completed in it
//!   (`interventions.status = 'Terminee'`, by `performed_at`).
//!
//! On PostgreSQL, `stock_outs` and `payment_days` read the summaries of
//! [`crate::rollup`] when they are fresh (the same numbers, kept by
//! triggers), else these queries.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::config::Config;
use crate::db::{Conn, Dialect};
use crate::error::{Error, Result};

/// `[kpi]`.
#[derive(Debug, Clone, Default)]
pub struct KpiConfig {
    /// The first month of the new services (`2026-06` or `2026-06-15`):
    /// the months before it are the baseline.
    pub go_live: Option<String>,
}

impl KpiConfig {
    pub fn from_config(cfg: &Config) -> Result<KpiConfig> {
        let mut out = KpiConfig::default();
        for (k, v) in &cfg.kpi {
            match k.as_str() {
                "go_live" => {
                    // `--set kpi.go_live=2026-06-01` arrives as a TOML date
                    let text = match v {
                        toml::Value::String(s) => s.clone(),
                        toml::Value::Datetime(d) => d.to_string(),
                        _ => {
                            return Err(Error::config(
                                "[kpi] go_live: expected a month (\"2026-06\") or a date",
                            ));
                        }
                    };
                    out.go_live = Some(month_of(&text).ok_or_else(|| {
                        Error::config(format!(
                            "[kpi] go_live = {text:?}: expected YYYY-MM or YYYY-MM-DD"
                        ))
                    })?);
                }
                other => {
                    return Err(Error::config(format!(
                        "[kpi]: unknown key `{other}` (known: go_live)"
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// `YYYY-MM` of a `YYYY-MM…` text, checked.
pub fn month_of(text: &str) -> Option<String> {
    let t = text.trim();
    let m = t.get(..7)?;
    let b = m.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() == 7 && digits(0..4) && b[4] == b'-' && digits(5..7) {
        let month: u32 = m[5..7].parse().ok()?;
        if (1..=12).contains(&month) && (t.len() == 7 || t.as_bytes().get(7) == Some(&b'-')) {
            return Some(m.to_string());
        }
    }
    None
}

/// Which way an indicator should move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// One month of an indicator.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MonthValue {
    pub month: String,
    pub value: f64,
    /// How many things the value stands on (appointments, invoices,
    /// movements out, interventions).
    pub count: u64,
    /// Before go-live.
    pub baseline: bool,
    /// At or beyond the target (after go-live, with a target).
    pub met: Option<bool>,
}

/// An indicator repaero measures.
#[derive(Debug, Clone, Serialize)]
pub struct Indicator {
    pub key: &'static str,
    pub name: &'static str,
    pub unit: &'static str,
    pub better: Better,
    /// The plan's change, as a fraction of the baseline (+0.15, −0.90).
    pub change: f64,
    pub definition: &'static str,
    /// Mean of the monthly values before go-live.
    pub baseline: Option<f64>,
    pub target: Option<f64>,
    pub months: Vec<MonthValue>,
}

impl Indicator {
    pub fn month(&self, m: &str) -> Option<&MonthValue> {
        self.months.iter().find(|v| v.month == m)
    }
}

/// An indicator of the plan that repaero's data cannot measure.
#[derive(Debug, Clone, Serialize)]
pub struct NotHeld {
    pub key: &'static str,
    pub name: &'static str,
    pub change: &'static str,
    pub why: &'static str,
}

/// All of them.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub go_live: Option<String>,
    pub indicators: Vec<Indicator>,
    pub not_held: Vec<NotHeld>,
}

pub const NOT_HELD: &[NotHeld] = &[
    NotHeld {
        key: "inventory_accuracy",
        name: "Inventory accuracy (counted vs book stock)",
        change: "+80 %",
        why: "repaero records no physical count: the scans give movements, not counted quantities",
    },
    NotHeld {
        key: "client_satisfaction",
        name: "Client satisfaction",
        change: "plan target",
        why: "no survey data reaches repaero",
    },
    NotHeld {
        key: "recommendation",
        name: "Recommendation (clients who recommend the workshop)",
        change: "plan target",
        why: "no survey data reaches repaero",
    },
];

/// Monthly figures of one query: month → (value, count).
type Monthly = BTreeMap<String, (f64, u64)>;

fn num(v: &Option<String>) -> Option<f64> {
    v.as_deref().and_then(|s| s.trim().parse::<f64>().ok())
}

/// Rows `(month, a, b)` of a grouped query into month → (a, b).
fn grouped(conn: &mut dyn Conn, sql: &str) -> Result<BTreeMap<String, (f64, f64)>> {
    let mut out = BTreeMap::new();
    for r in conn.query(sql, &[])? {
        let Some(m) = r.first().cloned().flatten().and_then(|m| month_of(&m)) else {
            continue;
        };
        let a = r.get(1).and_then(num).unwrap_or(0.0);
        let b = r.get(2).and_then(num).unwrap_or(0.0);
        let e = out.entry(m).or_insert((0.0, 0.0));
        e.0 += a;
        e.1 += b;
    }
    Ok(out)
}

fn has_column(cols: &[String], name: &str) -> bool {
    cols.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// `substr(<expr as text>, 1, 7)`: the month of a date or date-time.
fn month_expr(d: Dialect, col: &str) -> String {
    let text = d.as_text(col);
    match d {
        Dialect::Oracle => format!("SUBSTR({text}, 1, 7)"),
        _ => format!("substr({text}, 1, 7)"),
    }
}

fn appointments(conn: &mut dyn Conn) -> Result<Monthly> {
    let d = conn.dialect();
    let mut out = Monthly::new();
    if conn.table_exists("appointments")? {
        let sql = format!(
            "SELECT {m}, count(*) FROM appointments WHERE status <> 'cancelled' AND start_at IS NOT NULL GROUP BY {m}",
            m = month_expr(d, "start_at")
        );
        for (m, (n, _)) in grouped(conn, &sql)? {
            let e = out.entry(m).or_insert((0.0, 0));
            e.0 += n;
            e.1 += n as u64;
        }
    }
    let cols = conn.columns("interventions")?;
    if !cols.is_empty() {
        let from_queue = if has_column(&cols, "message_id") {
            " AND message_id IS NULL"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {m}, count(*) FROM interventions WHERE status <> 'Annulee' AND performed_at IS NOT NULL{from_queue} GROUP BY {m}",
            m = month_expr(d, "performed_at")
        );
        for (m, (n, _)) in grouped(conn, &sql)? {
            let e = out.entry(m).or_insert((0.0, 0));
            e.0 += n;
            e.1 += n as u64;
        }
    }
    Ok(out)
}

fn payment_days(conn: &mut dyn Conn) -> Result<Monthly> {
    let d = conn.dialect();
    if !conn.table_exists("invoices")? || !conn.table_exists("payments")? {
        return Ok(Monthly::new());
    }
    let deleted = if has_column(&conn.columns("invoices")?, "deleted_at") {
        " AND i.deleted_at IS NULL"
    } else {
        ""
    };
    if crate::rollup::fresh(conn, crate::rollup::Rollup::Paid)? {
        return Ok(paid_months(grouped(
            conn,
            &crate::rollup::Rollup::Paid.read_sql(),
        )?));
    }
    let days = match d {
        Dialect::Sqlite => "julianday(max(p.paid_on)) - julianday(i.issued_on)".to_string(),
        // date - date: whole days (PostgreSQL), fractional (Oracle DATE)
        _ => "max(p.paid_on) - i.issued_on".to_string(),
    };
    let sql = format!(
        "SELECT {m}, sum(days), count(*) FROM (\
           SELECT i.id, max(p.paid_on) AS last_paid, {days} AS days \
           FROM invoices i JOIN payments p ON p.invoice_id = i.id \
           WHERE i.status = 'payée'{deleted} GROUP BY i.id, i.issued_on) x GROUP BY {m}",
        m = month_expr(d, "last_paid")
    );
    Ok(paid_months(grouped(conn, &sql)?))
}

/// Month → (sum of days, invoices) into month → (mean days, invoices).
fn paid_months(sums: BTreeMap<String, (f64, f64)>) -> Monthly {
    sums.into_iter()
        .filter(|(_, (_, n))| *n > 0.0)
        .map(|(m, (sum, n))| (m, (sum / n, n as u64)))
        .collect()
}

fn stock_outs(conn: &mut dyn Conn) -> Result<Monthly> {
    let d = conn.dialect();
    if !conn.table_exists("stock_movements")? {
        return Ok(Monthly::new());
    }
    let sql = if crate::rollup::fresh(conn, crate::rollup::Rollup::Moves)? {
        crate::rollup::Rollup::Moves.read_sql()
    } else {
        format!(
            "SELECT {m}, sum(CASE WHEN stock_after = 0 THEN 1 ELSE 0 END), count(*) \
             FROM stock_movements WHERE direction = 'OUT' GROUP BY {m}",
            m = month_expr(d, "scanned_at")
        )
    };
    Ok(grouped(conn, &sql)?
        .into_iter()
        .map(|(m, (outs, moves))| (m, (outs, moves as u64)))
        .collect())
}

fn orders_per_intervention(conn: &mut dyn Conn) -> Result<Monthly> {
    let d = conn.dialect();
    if !conn.table_exists("interventions")? {
        return Ok(Monthly::new());
    }
    let done = grouped(
        conn,
        &format!(
            "SELECT {m}, count(*) FROM interventions WHERE status = 'Terminee' AND performed_at IS NOT NULL GROUP BY {m}",
            m = month_expr(d, "performed_at")
        ),
    )?;
    let orders = if conn.table_exists("supplier_orders")? {
        grouped(
            conn,
            &format!(
                "SELECT {m}, count(*) FROM supplier_orders GROUP BY {m}",
                m = month_expr(d, "placed_at")
            ),
        )?
    } else {
        BTreeMap::new()
    };
    Ok(done
        .into_iter()
        .filter(|(_, (n, _))| *n > 0.0)
        .map(|(m, (n, _))| {
            let o = orders.get(&m).map(|v| v.0).unwrap_or(0.0);
            (m, (o / n, n as u64))
        })
        .collect())
}

struct Spec {
    key: &'static str,
    name: &'static str,
    unit: &'static str,
    better: Better,
    change: f64,
    definition: &'static str,
    compute: fn(&mut dyn Conn) -> Result<Monthly>,
}

const SPECS: &[Spec] = &[
    Spec {
        key: "appointments",
        name: "Monthly appointments",
        unit: "appointments",
        better: Better::Higher,
        change: 0.15,
        definition: "appointments booked (not cancelled) + visits recorded before the booking queue",
        compute: appointments,
    },
    Spec {
        key: "payment_days",
        name: "Average days from invoice to payment",
        unit: "days",
        better: Better::Lower,
        change: -0.15,
        definition: "paid invoices: days from issue to the last payment, by the month of that payment",
        compute: payment_days,
    },
    Spec {
        key: "stock_outs",
        name: "Stock-outs",
        unit: "stock-outs",
        better: Better::Lower,
        change: -0.90,
        definition: "movements out that left a part at 0",
        compute: stock_outs,
    },
    Spec {
        key: "orders_per_intervention",
        name: "Supply orders per intervention",
        unit: "orders / intervention",
        better: Better::Lower,
        change: -0.50,
        definition: "supplier orders placed / interventions completed, in the month",
        compute: orders_per_intervention,
    },
];

/// Every indicator, every month the data has up to the current one (a
/// later month is not measured yet: appointments booked ahead, or a date
/// mistyped years ahead, would otherwise show as months of their own).
pub fn compute(conn: &mut dyn Conn, cfg: &KpiConfig) -> Result<Report> {
    let now = chrono::Utc::now().format("%Y-%m").to_string();
    let mut indicators = Vec::new();
    for s in SPECS {
        let mut monthly = (s.compute)(conn).map_err(|e| e.context(format!("KPI {}", s.key)))?;
        monthly.retain(|m, _| *m <= now);
        indicators.push(assess(s, &monthly, cfg.go_live.as_deref()));
    }
    Ok(Report {
        go_live: cfg.go_live.clone(),
        indicators,
        not_held: NOT_HELD.to_vec(),
    })
}

fn assess(s: &Spec, monthly: &Monthly, go_live: Option<&str>) -> Indicator {
    let before = |m: &str| go_live.is_some_and(|g| m < g);
    let base: Vec<f64> = monthly
        .iter()
        .filter(|(m, _)| before(m))
        .map(|(_, (v, _))| *v)
        .collect();
    let baseline = (!base.is_empty()).then(|| base.iter().sum::<f64>() / base.len() as f64);
    let target = baseline.map(|b| b * (1.0 + s.change));
    let months = monthly
        .iter()
        .map(|(m, (v, n))| {
            let baseline = before(m);
            let met = match (target, baseline) {
                (Some(t), false) => Some(match s.better {
                    Better::Higher => *v >= t - 1e-9,
                    Better::Lower => *v <= t + 1e-9,
                }),
                _ => None,
            };
            MonthValue {
                month: m.clone(),
                value: *v,
                count: *n,
                baseline,
                met,
            }
        })
        .collect();
    Indicator {
        key: s.key,
        name: s.name,
        unit: s.unit,
        better: s.better,
        change: s.change,
        definition: s.definition,
        baseline,
        target,
        months,
    }
}

impl Report {
    /// Only `month` (`YYYY-MM`) in each indicator.
    pub fn only_month(mut self, month: &str) -> Report {
        for i in &mut self.indicators {
            i.months.retain(|m| m.month == month);
        }
        self
    }

    /// The months any indicator has, in order.
    pub fn months(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self
            .indicators
            .iter()
            .flat_map(|i| i.months.iter().map(|m| &m.month))
            .collect();
        set.into_iter().cloned().collect()
    }
}

/// A number as the reports print it: integers bare, others with 2 decimals.
pub fn fmt_value(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.2}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(fmt_value).unwrap_or_else(|| "—".into())
}

fn verdict(m: &MonthValue) -> &'static str {
    match (m.baseline, m.met) {
        (true, _) => "baseline",
        (false, Some(true)) => "met",
        (false, Some(false)) => "not met",
        (false, None) => "no target",
    }
}

fn change_text(c: f64) -> String {
    format!("{:+.0} %", c * 100.0)
}

/// The terminal table.
pub fn render_text(r: &Report) -> String {
    let mut s = String::new();
    match &r.go_live {
        Some(g) => s.push_str(&format!(
            "go-live {g}: the months before it are the baseline\n"
        )),
        None => s.push_str("no [kpi] go_live in repaero.toml: no baseline, no target\n"),
    }
    for i in &r.indicators {
        s.push_str(&format!(
            "\n{} ({}; plan {} → target {}, baseline {})\n  {}\n",
            i.name,
            i.unit,
            change_text(i.change),
            opt(i.target),
            opt(i.baseline),
            i.definition
        ));
        if i.months.is_empty() {
            s.push_str("  no data\n");
        }
        for m in &i.months {
            s.push_str(&format!(
                "  {}  {:>10}  (n={})  {}\n",
                m.month,
                fmt_value(m.value),
                m.count,
                verdict(m)
            ));
        }
    }
    s.push_str("\nNot measured (repaero does not hold the data):\n");
    for n in &r.not_held {
        s.push_str(&format!("  {} ({}): {}\n", n.name, n.change, n.why));
    }
    s
}

/// The Markdown report.
pub fn render_md(r: &Report) -> String {
    let mut s = String::from("# Plan indicators\n\n");
    match &r.go_live {
        Some(g) => s.push_str(&format!(
            "Go-live: {g} (the months before it are the baseline).\n"
        )),
        None => s.push_str("No `[kpi] go_live`: no baseline, no target.\n"),
    }
    for i in &r.indicators {
        s.push_str(&format!(
            "\n## {}\n\n{} — {}. Plan {}: baseline {}, target {}.\n\n| month | value | n | verdict |\n|---|---:|---:|---|\n",
            i.name,
            i.unit,
            i.definition,
            change_text(i.change),
            opt(i.baseline),
            opt(i.target)
        ));
        for m in &i.months {
            s.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                m.month,
                fmt_value(m.value),
                m.count,
                verdict(m)
            ));
        }
    }
    s.push_str("\n## Not measured\n\n");
    for n in &r.not_held {
        s.push_str(&format!("- {} ({}): {}\n", n.name, n.change, n.why));
    }
    s
}

/// The verdict of a month, as the reports write it.
pub fn verdict_text(m: &MonthValue) -> &'static str {
    verdict(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_checked() {
        assert_eq!(month_of("2026-06").as_deref(), Some("2026-06"));
        assert_eq!(month_of("2026-06-15").as_deref(), Some("2026-06"));
        assert_eq!(month_of("2026-06-15T08:00:00").as_deref(), Some("2026-06"));
        assert_eq!(month_of("2026-13"), None);
        assert_eq!(month_of("2026-6"), None);
        assert_eq!(month_of("juin"), None);
    }

    #[test]
    fn baseline_target_and_verdicts() {
        let spec = &SPECS[0];
        let monthly: Monthly = [
            ("2026-01".to_string(), (10.0, 10)),
            ("2026-02".to_string(), (20.0, 20)),
            ("2026-03".to_string(), (17.0, 17)),
            ("2026-04".to_string(), (18.0, 18)),
        ]
        .into_iter()
        .collect();
        let i = assess(spec, &monthly, Some("2026-03"));
        assert_eq!(i.baseline, Some(15.0));
        assert!((i.target.unwrap() - 17.25).abs() < 1e-9);
        assert_eq!(i.months[1].met, None);
        assert_eq!(i.months[2].met, Some(false));
        assert_eq!(i.months[3].met, Some(true));
    }
}
