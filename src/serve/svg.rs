//! Charts as SVG drawn on the server: a bar chart (one bar per label, an
//! optional target line) and a step line (a value over time). Each mark
//! carries its label and value (`data-label`, `data-value`, a `<title>`),
//! so that what is drawn can be checked against the numbers.

use super::esc;

const W: f64 = 720.0;
const H: f64 = 260.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 48.0;

fn fmt(v: f64) -> String {
    crate::kpi::fmt_value(v)
}

fn frame(id: &str, title: &str, max: f64, body: &str) -> String {
    let plot_h = H - TOP - BOTTOM;
    let mut s = format!(
        "<svg id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>",
        t = esc(title)
    );
    // axis and three gridlines with their values
    for i in 0..=3 {
        let v = max * i as f64 / 3.0;
        let y = TOP + plot_h - plot_h * i as f64 / 3.0;
        s.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#d0d5db\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 4.0,
            y + 3.0,
            fmt(v)
        ));
    }
    s.push_str(body);
    s.push_str("</svg>");
    s
}

fn nice_max(values: impl Iterator<Item = f64>) -> f64 {
    let m = values.fold(0.0_f64, f64::max);
    if m <= 0.0 { 1.0 } else { m * 1.1 }
}

/// One bar per `(label, value)`; a dashed line at `target` when given.
pub fn bars(id: &str, title: &str, points: &[(String, f64)], target: Option<f64>) -> String {
    let max = nice_max(points.iter().map(|p| p.1).chain(target));
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let n = points.len().max(1) as f64;
    let slot = plot_w / n;
    let mut body = String::new();
    for (i, (label, v)) in points.iter().enumerate() {
        let h = plot_h * v / max;
        let x = LEFT + slot * i as f64 + slot * 0.15;
        let y = TOP + plot_h - h;
        body.push_str(&format!(
            "<rect class=\"bar\" data-label=\"{l}\" data-value=\"{val}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#2f6fad\"><title>{l}: {val}</title></rect><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{l}</text>",
            slot * 0.7,
            x + slot * 0.35,
            H - BOTTOM + 14.0,
            l = esc(label),
            val = fmt(*v),
        ));
    }
    if let Some(t) = target {
        let y = TOP + plot_h - plot_h * t / max;
        body.push_str(&format!(
            "<line class=\"target\" data-value=\"{}\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#a11\" stroke-dasharray=\"6 4\"><title>target {}</title></line>",
            fmt(t),
            W - RIGHT,
            fmt(t)
        ));
    }
    frame(id, title, max, &body)
}

/// A step line through `(label, value)` points in time order.
pub fn steps(id: &str, title: &str, points: &[(String, f64)], minimum: Option<f64>) -> String {
    let max = nice_max(points.iter().map(|p| p.1).chain(minimum));
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let n = points.len().max(2) as f64 - 1.0;
    let xy = |i: usize, v: f64| {
        (
            LEFT + plot_w * i as f64 / n,
            TOP + plot_h - plot_h * v / max,
        )
    };
    let mut body = String::new();
    let mut path = String::new();
    for (i, (_, v)) in points.iter().enumerate() {
        let (x, y) = xy(i, *v);
        if i == 0 {
            path.push_str(&format!("M{x:.1},{y:.1}"));
        } else {
            let (_, py) = xy(i - 1, points[i - 1].1);
            path.push_str(&format!(" L{x:.1},{py:.1} L{x:.1},{y:.1}"));
        }
    }
    if !path.is_empty() {
        body.push_str(&format!(
            "<path d=\"{path}\" fill=\"none\" stroke=\"#2f6fad\" stroke-width=\"2\"/>"
        ));
    }
    for (i, (label, v)) in points.iter().enumerate() {
        let (x, y) = xy(i, *v);
        body.push_str(&format!(
            "<circle class=\"point\" data-label=\"{l}\" data-value=\"{val}\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"#17324d\"><title>{l}: {val}</title></circle>",
            l = esc(label),
            val = fmt(*v)
        ));
    }
    if let Some(m) = minimum {
        let (_, y) = xy(0, m);
        body.push_str(&format!(
            "<line class=\"minimum\" data-value=\"{}\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#a11\" stroke-dasharray=\"6 4\"><title>minimum {}</title></line>",
            fmt(m),
            W - RIGHT,
            fmt(m)
        ));
    }
    frame(id, title, max, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_carry_their_values() {
        let s = bars(
            "c",
            "t",
            &[("2026-01".into(), 10.0), ("2026-02".into(), 5.0)],
            Some(12.0),
        );
        assert!(s.contains("data-label=\"2026-01\" data-value=\"10\""));
        assert!(s.contains("data-label=\"2026-02\" data-value=\"5\""));
        assert!(s.contains("class=\"target\" data-value=\"12\""));
        assert_eq!(s.matches("<rect").count(), 2);
    }
}
