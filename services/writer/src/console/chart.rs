//! Clicks over time as an SVG bar chart drawn on the server: human clicks
//! with bots' stacked on top, one bar per bucket, each with a tooltip. Colours come
//! from the stylesheet's classes, so the chart follows dark mode.

use maud::{Markup, html};
use tinyurl_analytics::Granularity;
use tinyurl_analytics::stats::Point;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 8.0;

/// The chart of `series` at `granularity`.
pub(super) fn clicks(series: &[Point], granularity: Granularity) -> Markup {
    let peak = series
        .iter()
        .map(|point| point.clicks + point.bot_clicks)
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_width = WIDTH - LEFT;
    let plot_height = HEIGHT - BOTTOM - TOP;
    let slot = plot_width / series.len().max(1) as f64;
    let bar = (slot * 0.8).max(1.0);
    let scale = |count: u64| count as f64 / peak as f64 * plot_height;
    let humans: u64 = series.iter().map(|point| point.clicks).sum();
    let bots: u64 = series.iter().map(|point| point.bot_clicks).sum();
    let label = format!(
        "Clicks per {}: {humans} human and {bots} bot in {} buckets, at most {peak} in one",
        unit(granularity),
        series.len()
    );
    html! {
        svg.chart viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(label)
            xmlns="http://www.w3.org/2000/svg" {
            line.axis x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH) y2=(HEIGHT - BOTTOM) {}
            line.axis x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(HEIGHT - BOTTOM) {}
            text x="2" y=(TOP + 10.0) { (peak) }
            text x="2" y=(HEIGHT - BOTTOM) { "0" }
            @for (index, point) in series.iter().enumerate() {
                @let x = LEFT + index as f64 * slot + (slot - bar) / 2.0;
                @let (humans, bots) = (point.clicks, point.bot_clicks);
                @let human_height = scale(humans);
                @let bot_height = scale(bots);
                @let base = HEIGHT - BOTTOM;
                g {
                    title { (when(point.start, granularity)) ": " (humans) " human, " (bots) " bot" }
                    @if humans > 0 {
                        rect.human x=(format!("{x:.1}")) y=(format!("{:.1}", base - human_height))
                            width=(format!("{bar:.1}")) height=(format!("{human_height:.1}")) {}
                    }
                    @if bots > 0 {
                        rect.bot x=(format!("{x:.1}"))
                            y=(format!("{:.1}", base - human_height - bot_height))
                            width=(format!("{bar:.1}")) height=(format!("{bot_height:.1}")) {}
                    }
                }
            }
            @if let (Some(first), Some(last)) = (series.first(), series.last()) {
                text x=(LEFT) y=(HEIGHT - 6.0) { (when(first.start, granularity)) }
                text x=(WIDTH) y=(HEIGHT - 6.0) text-anchor="end" { (when(last.start, granularity)) }
            }
        }
    }
}

fn unit(granularity: Granularity) -> &'static str {
    match granularity {
        Granularity::Minute => "minute",
        Granularity::Hour => "hour",
        Granularity::Day => "day",
    }
}

/// A bucket's start, as precise as its granularity (UTC).
fn when(start: i64, granularity: Granularity) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(start.max(0).unsigned_abs());
    let full = humantime::format_rfc3339_seconds(at).to_string();
    // 2026-12-06T19:05:00Z
    match granularity {
        Granularity::Day => full[..10].to_owned(),
        Granularity::Minute | Granularity::Hour => format!("{} {}", &full[..10], &full[11..16]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stack_humans_under_bots() {
        let series = [
            Point {
                start: 0,
                clicks: 3,
                bot_clicks: 1,
            },
            Point {
                start: 3600,
                clicks: 0,
                bot_clicks: 0,
            },
        ];
        let svg = clicks(&series, Granularity::Hour).into_string();
        assert_eq!(svg.matches("<rect class=\"human\"").count(), 1);
        assert_eq!(svg.matches("<rect class=\"bot\"").count(), 1);
        assert!(svg.contains("1970-01-01 00:00: 3 human, 1 bot"));
        assert!(svg.contains("aria-label=\"Clicks per hour: 3 human and 1 bot in 2 buckets"));
    }
}
