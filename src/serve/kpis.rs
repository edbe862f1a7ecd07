//! KPIs: the plan's indicators (`crate::kpi`, the numbers of `repaero
//! kpi`), each month against its baseline and target, with the monthly
//! appointments as a chart.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::auth::require;
use super::{Section, Shared, esc, failed, page, svg};
use crate::kpi::{self, KpiConfig};

/// Months shown per indicator (the latest).
const MONTHS: usize = 24;

pub async fn show(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let s = match require(&app, &headers, Section::Kpi) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let kcfg = match KpiConfig::from_config(&app.cfg) {
        Ok(k) => k,
        Err(e) => return failed(&s, "KPIs", &e),
    };
    let r = match app
        .read(move |c| {
            // a table replaced since the summaries were built: rebuild them
            if let Err(e) = crate::rollup::ensure(c) {
                tracing::warn!("dashboard: KPI summaries not rebuilt: {e}");
            }
            kpi::compute(c, &kcfg)
        })
        .await
    {
        Ok(r) => r,
        Err(e) => return failed(&s, "KPIs", &e),
    };
    let opt = |v: Option<f64>| v.map(kpi::fmt_value).unwrap_or_else(|| "—".into());
    let mut body = match &r.go_live {
        Some(g) => format!(
            "<p>Go-live <span id=\"go-live\">{}</span>: the months before it are the baseline. The same numbers as <code>repaero kpi</code>.</p>",
            esc(g)
        ),
        None => "<p class=\"error\">No <code>[kpi] go_live</code> in repaero.toml: no baseline, no target.</p>".into(),
    };
    body.push_str("<table id=\"kpi-summary\"><thead><tr><th>indicator</th><th>plan</th><th>baseline</th><th>target</th><th>latest month</th><th>value</th><th>verdict</th></tr></thead><tbody>");
    for i in &r.indicators {
        let last = i.months.last();
        body.push_str(&format!(
            "<tr><td>{}</td><td>{:+.0} %</td><td id=\"baseline-{k}\">{}</td><td id=\"target-{k}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(i.name),
            i.change * 100.0,
            opt(i.baseline),
            opt(i.target),
            last.map(|m| esc(&m.month)).unwrap_or_default(),
            last.map(|m| kpi::fmt_value(m.value)).unwrap_or_default(),
            last.map(kpi::verdict_text).unwrap_or("no data"),
            k = i.key
        ));
    }
    body.push_str("</tbody></table>");
    if let Some(a) = r.indicators.iter().find(|i| i.key == "appointments") {
        let start = a.months.len().saturating_sub(MONTHS);
        let points: Vec<(String, f64)> = a.months[start..]
            .iter()
            .map(|m| (m.month.clone(), m.value))
            .collect();
        body.push_str("<h3>Monthly appointments</h3>");
        body.push_str(&svg::bars(
            "kpi-chart",
            "Monthly appointments against the target",
            &points,
            a.target,
        ));
    }
    for i in &r.indicators {
        body.push_str(&format!(
            "<h3>{}</h3><p>{} ({}).</p><table id=\"kpi-{}\"><thead><tr><th>month</th><th>value</th><th>n</th><th>verdict</th></tr></thead><tbody>",
            esc(i.name),
            esc(i.definition),
            esc(i.unit),
            i.key
        ));
        let start = i.months.len().saturating_sub(MONTHS);
        for m in &i.months[start..] {
            let class = match m.met {
                Some(true) => " class=\"met\"",
                Some(false) => " class=\"notmet\"",
                None => "",
            };
            body.push_str(&format!(
                "<tr{class}><td>{}</td><td id=\"{}-{}\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&m.month),
                i.key,
                esc(&m.month),
                kpi::fmt_value(m.value),
                m.count,
                kpi::verdict_text(m)
            ));
        }
        if i.months.is_empty() {
            body.push_str("<tr><td colspan=\"4\" class=\"empty\">no data</td></tr>");
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("<h3>Not measured</h3><ul id=\"not-held\">");
    for n in &r.not_held {
        body.push_str(&format!(
            "<li>{} ({}): {}</li>",
            esc(n.name),
            esc(n.change),
            esc(n.why)
        ));
    }
    body.push_str("</ul>");
    page(Section::Kpi.title(), Some(&s), &body).into_response()
}
