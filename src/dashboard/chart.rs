//! A bar chart over time as inline SVG, rendered on the server: no script,
//! no external library, and readable without JavaScript.

use maud::{html, Markup};

use crate::store::Bucket;

const W: f64 = 900.0;
const H: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// The smallest of 1, 2, 2.5, 5 × 10ⁿ at or above `v`, so gridlines land
/// on round numbers.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= v - 1e-12 {
            return m * p;
        }
    }
    10.0 * p
}

fn bucket_label(start_ms: i64, bucket: Bucket) -> String {
    let full = super::datetime(start_ms);
    match bucket {
        // "2024-05-01 13:00:00 UTC" → "13:00"
        Bucket::Hour => full.get(11..16).unwrap_or(&full).to_string(),
        // → "05-01"
        Bucket::Day => full.get(5..10).unwrap_or(&full).to_string(),
    }
}

/// Bars of `(bucket start, value)`; `fmt` renders a value for axis labels
/// and tooltips, `what` names the metric ("requests"). For `whole`
/// numbers (counts) the axis top is a multiple of 4, so each of the four
/// gridlines lands on a whole number.
pub(crate) fn bars(
    points: &[(i64, f64)],
    bucket: Bucket,
    what: &str,
    whole: bool,
    fmt: impl Fn(f64) -> String,
) -> Markup {
    let peak = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let max = if whole {
        4.0 * nice_ceiling(peak / 4.0).max(1.0)
    } else {
        nice_ceiling(peak)
    };
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let n = points.len().max(1) as f64;
    let slot = plot_w / n;
    let bar_w = (slot * 0.8).max(1.0);
    let label_every = (points.len() / 8).max(1);
    let total: f64 = points.iter().map(|p| p.1).sum();
    html! {
        svg.chart viewBox={ "0 0 " (W) " " (H) } role="img" preserveAspectRatio="none"
            aria-label={ (what) " per " (bucket.as_str()) ", total " (fmt(total)) } {
            @for i in 0..=4 {
                @let v = max * f64::from(i) / 4.0;
                @let y = TOP + plot_h - plot_h * f64::from(i) / 4.0;
                line.grid x1=(LEFT) x2=(W - RIGHT) y1=(y) y2=(y) {}
                text.axis x=(LEFT - 6.0) y=(y + 4.0) text-anchor="end" { (fmt(v)) }
            }
            @for (i, (start, value)) in points.iter().enumerate() {
                @let h = if *value > 0.0 { (plot_h * value / max).max(1.0) } else { 0.0 };
                @let x = LEFT + slot * i as f64 + (slot - bar_w) / 2.0;
                rect.bar x=(x) y=(TOP + plot_h - h) width=(bar_w) height=(h) {
                    title { (super::datetime(*start)) ": " (fmt(*value)) " " (what) }
                }
                @if i % label_every == 0 {
                    text.axis x=(x + bar_w / 2.0) y=(H - 8.0) text-anchor="middle" { (bucket_label(*start, bucket)) }
                }
            }
            line.baseline x1=(LEFT) x2=(W - RIGHT) y1=(TOP + plot_h) y2=(TOP + plot_h) {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gridlines_land_on_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(17.0), 20.0);
        assert_eq!(nice_ceiling(21.0), 25.0);
        assert_eq!(nice_ceiling(0.003), 0.005);
        assert_eq!(nice_ceiling(999.0), 1000.0);
    }

    #[test]
    fn one_bar_per_bucket_with_a_tooltip() {
        let svg = bars(
            &[(0, 1.0), (3_600_000, 0.0), (7_200_000, 4.0)],
            Bucket::Hour,
            "requests",
            true,
            |v| format!("{v}"),
        )
        .into_string();
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("1970-01-01 02:00:00 UTC: 4 requests"), "{svg}");
        assert!(svg.contains(">02:00<"), "{svg}");
        // Axis 0..4 in whole steps.
        for label in [">0<", ">1<", ">2<", ">3<", ">4<"] {
            assert!(svg.contains(label), "{label} in {svg}");
        }
    }
}
