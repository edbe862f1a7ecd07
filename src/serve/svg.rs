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

fn frame(id: &str, title: &str, lo: f64, hi: f64, body: &str) -> String {
    let plot_h = H - TOP - BOTTOM;
    let mut s = format!(
        "<svg id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>",
        t = esc(title)
    );
    // axis and three gridlines with their values
    for i in 0..=3 {
        let v = lo + (hi - lo) * i as f64 / 3.0;
        let y = TOP + plot_h - plot_h * i as f64 / 3.0;
        s.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#d0d5db\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 4.0,
            y + 3.0,
            fmt(v)
        ));
    }
    // zero, when the scale goes below it
    if lo < 0.0 {
        let y = TOP + plot_h - plot_h * (0.0 - lo) / (hi - lo);
        s.push_str(&format!(
            "<line class=\"zero\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#6b7580\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">0</text>",
            W - RIGHT,
            LEFT - 4.0,
            y + 3.0
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

/// The bottom of the scale: 0, or below the lowest value when one is
/// negative (a stock gone under zero stays inside the chart).
fn nice_min(values: impl Iterator<Item = f64>) -> f64 {
    let m = values.fold(0.0_f64, f64::min);
    if m < 0.0 { m * 1.1 } else { 0.0 }
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
        let (lx, ly) = (x + slot * 0.35, H - BOTTOM + 14.0);
        // a label wider than its slot is turned, not written over the next
        let label_text = if label.chars().count() as f64 * 6.0 > slot {
            format!(
                "<text x=\"{lx:.1}\" y=\"{ly:.1}\" font-size=\"10\" text-anchor=\"end\" transform=\"rotate(-45 {lx:.1} {ly:.1})\">{}</text>",
                esc(label)
            )
        } else {
            format!(
                "<text x=\"{lx:.1}\" y=\"{ly:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
                esc(label)
            )
        };
        body.push_str(&format!(
            "<rect class=\"bar\" data-label=\"{l}\" data-value=\"{val}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#2f6fad\"><title>{l}: {val}</title></rect>{label_text}",
            slot * 0.7,
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
    frame(id, title, 0.0, max, &body)
}

/// A step line through `(label, value)` points in time order.
pub fn steps(id: &str, title: &str, points: &[(String, f64)], minimum: Option<f64>) -> String {
    let max = nice_max(points.iter().map(|p| p.1).chain(minimum));
    let lo = nice_min(points.iter().map(|p| p.1).chain(minimum));
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let n = points.len().max(2) as f64 - 1.0;
    let xy = |i: usize, v: f64| {
        (
            LEFT + plot_w * i as f64 / n,
            TOP + plot_h - plot_h * (v - lo) / (max - lo),
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
    frame(id, title, lo, max, &body)
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

    /// The `cy` of each point.
    fn ys(svg: &str) -> Vec<f64> {
        svg.split("cy=\"")
            .skip(1)
            .map(|r| r[..r.find('"').unwrap()].parse().unwrap())
            .collect()
    }

    #[test]
    fn a_stock_under_zero_stays_inside_the_chart() {
        let pts: Vec<(String, f64)> = [3.0, 0.0, -8.0, 5.0]
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("t{i}"), *v))
            .collect();
        let s = steps("c", "t", &pts, Some(2.0));
        let y = ys(&s);
        for v in &y {
            assert!((TOP..=H - BOTTOM).contains(v), "{v} outside the plot");
        }
        // -8 lowest, and the distances keep the values' ratios
        assert!(y.iter().all(|v| *v <= y[2]));
        let px = (y[1] - y[3]) / 5.0;
        assert!((y[2] - y[1] - 8.0 * px).abs() < 0.2);
        assert!((y[1] - y[0] - 3.0 * px).abs() < 0.2);
        assert!(s.contains("class=\"zero\""));
        // all positive: the scale starts at 0 and draws no extra zero line
        let s = steps("c", "t", &[("a".into(), 1.0), ("b".into(), 4.0)], None);
        assert!(!s.contains("class=\"zero\""));
        assert!((ys(&s)[0] - (H - BOTTOM - (H - TOP - BOTTOM) / 4.4)).abs() < 0.1);
    }

    #[test]
    fn narrow_bars_turn_their_labels() {
        let many: Vec<(String, f64)> = (0..24).map(|i| (format!("2025-{i:02}"), 1.0)).collect();
        assert_eq!(
            bars("c", "t", &many, None).matches("rotate(-45").count(),
            24
        );
        let few: Vec<(String, f64)> = (0..3).map(|i| (format!("2025-{i:02}"), 1.0)).collect();
        assert!(!bars("c", "t", &few, None).contains("rotate("));
    }
}
