//! Server-rendered SVG charts of the analytics pages: request volume stacked by status class,
//! and latency percentiles as lines. Each slot has a hover title with its numbers; axes end on
//! round values. No front-end build: the templates draw what these compute.

use std::fmt::Write as _;

use crate::pages::round_up;

pub const HEIGHT: u32 = 140;

/// A segment of a stacked bar.
pub struct Segment {
    /// CSS class: `s2xx`, `s3xx`, `s4xx`, `s5xx`.
    pub class: &'static str,
    pub y: u32,
    pub height: u32,
}

pub struct StackedSlot {
    pub x: u32,
    pub segments: Vec<Segment>,
    pub tooltip: String,
}

/// Requests per period, stacked by status class.
pub struct StackedChart {
    pub width: u32,
    pub height: u32,
    pub bar_width: u32,
    pub slot_width: u32,
    pub max: String,
    pub half: String,
    pub x_labels: [String; 3],
    pub slots: Vec<StackedSlot>,
}

/// One period of the volume chart: its label and its answers by class (2xx, 3xx, 4xx, 5xx).
pub struct Volume {
    pub label: String,
    pub classes: [i64; 4],
    /// Of the 4xx, refused by their limits.
    pub rate_limited: i64,
}

const CLASSES: [&str; 4] = ["s2xx", "s3xx", "s4xx", "s5xx"];

fn scaled(value: f64, max: f64, full: u32) -> u32 {
    if max <= 0.0 || value <= 0.0 {
        return 0;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let h = ((value / max) * f64::from(full)).round() as u32;
    h.clamp(1, full)
}

fn labels<T>(points: &[T], label: impl Fn(&T) -> String) -> [String; 3] {
    let at = |i: usize| points.get(i).map(&label).unwrap_or_default();
    [
        at(0),
        at(points.len() / 2),
        at(points.len().saturating_sub(1)),
    ]
}

fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl StackedChart {
    pub fn new(points: &[Volume], width: u32) -> Self {
        let n = u32::try_from(points.len().max(1)).unwrap_or(1);
        let slot = (width / n).max(2);
        let top = round_up(
            points
                .iter()
                .map(|p| p.classes.iter().sum())
                .max()
                .unwrap_or(0),
        );
        #[allow(clippy::cast_precision_loss)]
        let max = top as f64;
        let slots = points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut y = HEIGHT;
                let mut segments = Vec::new();
                for (class, v) in CLASSES.iter().zip(p.classes) {
                    #[allow(clippy::cast_precision_loss)]
                    let h = scaled(v as f64, max, HEIGHT).min(y);
                    if h > 0 {
                        y -= h;
                        segments.push(Segment {
                            class,
                            y,
                            height: h,
                        });
                    }
                }
                let total: i64 = p.classes.iter().sum();
                let [ok, redirect, client, server] = p.classes;
                let mut tooltip = format!("{}: {}", p.label, plural(total, "request", "requests"));
                if total > 0 {
                    let _ = write!(
                        tooltip,
                        " — {ok} 2xx, {redirect} 3xx, {client} 4xx ({} rate-limited), {server} 5xx",
                        p.rate_limited
                    );
                }
                StackedSlot {
                    x: u32::try_from(i).unwrap_or(0) * slot,
                    segments,
                    tooltip,
                }
            })
            .collect();
        Self {
            width: slot * n,
            height: HEIGHT,
            bar_width: slot.saturating_sub(1).max(1),
            slot_width: slot,
            max: top.to_string(),
            half: half_of(max),
            x_labels: labels(points, |p| p.label.clone()),
            slots,
        }
    }
}

/// The half of an axis' top, as a label ("2.5", "50").
fn half_of(max: f64) -> String {
    let h = max / 2.0;
    if (h - h.round()).abs() < 1e-9 {
        format!("{h:.0}")
    } else {
        trim(h)
    }
}

/// A number for an axis or a title: no trailing zeros.
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The smallest of …0.1, 0.2, 0.5, 1, 2, 5, 10… at or above `v` (at least 0.1).
pub fn nice_ceiling(v: f64) -> f64 {
    let mut step = 0.1;
    loop {
        for m in [1.0, 2.0, 5.0] {
            if step * m >= v - 1e-9 {
                return step * m;
            }
        }
        step *= 10.0;
    }
}

/// One line of a line chart: an SVG path, broken where a period had no value.
pub struct Line {
    pub class: &'static str,
    pub label: &'static str,
    pub path: String,
}

/// A hover area of one period, with its numbers.
pub struct HitSlot {
    pub x: u32,
    pub tooltip: String,
}

/// Latency percentiles per period, one line each.
pub struct LineChart {
    pub width: u32,
    pub height: u32,
    pub slot_width: u32,
    pub max: String,
    pub half: String,
    pub x_labels: [String; 3],
    pub lines: Vec<Line>,
    pub slots: Vec<HitSlot>,
}

/// One period of the latency chart: its label and p50, p95, p99 in ms (`None`: no requests).
pub struct Latency {
    pub label: String,
    pub p: [Option<f64>; 3],
}

const PERCENTILES: [(&str, &str); 3] = [("p50", "p50"), ("p95", "p95"), ("p99", "p99")];

impl LineChart {
    pub fn new(points: &[Latency], width: u32) -> Self {
        let n = u32::try_from(points.len().max(1)).unwrap_or(1);
        let slot = (width / n).max(2);
        let top = nice_ceiling(
            points
                .iter()
                .flat_map(|p| p.p.iter().flatten().copied())
                .fold(0.0, f64::max),
        );
        let x_of = |i: usize| u32::try_from(i).unwrap_or(0) * slot + slot / 2;
        let lines = PERCENTILES
            .iter()
            .enumerate()
            .map(|(k, (class, label))| {
                let mut path = String::new();
                let mut drawing = false;
                for (i, p) in points.iter().enumerate() {
                    match p.p[k] {
                        Some(v) => {
                            let y = HEIGHT - scaled(v, top, HEIGHT);
                            let lone =
                                !drawing && points.get(i + 1).is_none_or(|q| q.p[k].is_none());
                            if lone {
                                // A period alone between empty ones: a tick across its slot.
                                let x0 = u32::try_from(i).unwrap_or(0) * slot;
                                let _ = write!(path, "M{} {y} L{} {y} ", x0 + 1, x0 + slot - 1);
                            } else {
                                let _ = write!(
                                    path,
                                    "{}{} {y} ",
                                    if drawing { "L" } else { "M" },
                                    x_of(i)
                                );
                            }
                            drawing = true;
                        }
                        None => drawing = false,
                    }
                }
                Line {
                    class,
                    label,
                    path: path.trim_end().to_owned(),
                }
            })
            .collect();
        let slots = points
            .iter()
            .enumerate()
            .map(|(i, p)| HitSlot {
                x: u32::try_from(i).unwrap_or(0) * slot,
                tooltip: match p.p {
                    [Some(a), Some(b), Some(c)] => format!(
                        "{}: p50 {} ms, p95 {} ms, p99 {} ms",
                        p.label,
                        trim(a),
                        trim(b),
                        trim(c)
                    ),
                    _ => format!("{}: no requests", p.label),
                },
            })
            .collect();
        Self {
            width: slot * n,
            height: HEIGHT,
            slot_width: slot,
            max: trim(top),
            half: half_of(top),
            x_labels: labels(points, |p| p.label.clone()),
            lines,
            slots,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_stack_without_gaps_and_say_their_numbers() {
        let c = StackedChart::new(
            &[
                Volume {
                    label: "10:00".into(),
                    classes: [6, 0, 3, 1],
                    rate_limited: 2,
                },
                Volume {
                    label: "10:01".into(),
                    classes: [0; 4],
                    rate_limited: 0,
                },
            ],
            200,
        );
        assert_eq!(c.max, "10");
        let s = &c.slots[0];
        let classes: Vec<&str> = s.segments.iter().map(|g| g.class).collect();
        assert_eq!(classes, ["s2xx", "s4xx", "s5xx"]);
        for w in s.segments.windows(2) {
            assert_eq!(w[1].y + w[1].height, w[0].y, "no gap, no overlap");
        }
        assert_eq!(s.segments.iter().map(|g| g.height).sum::<u32>(), HEIGHT);
        assert_eq!(
            s.tooltip,
            "10:00: 10 requests — 6 2xx, 0 3xx, 3 4xx (2 rate-limited), 1 5xx"
        );
        assert!(c.slots[1].segments.is_empty());
        assert_eq!(c.slots[1].tooltip, "10:01: 0 requests");
    }

    #[test]
    fn latency_lines_break_where_a_period_had_no_requests() {
        let c = LineChart::new(
            &[
                Latency {
                    label: "a".into(),
                    p: [Some(1.0), Some(3.0), Some(4.2)],
                },
                Latency {
                    label: "b".into(),
                    p: [None; 3],
                },
                Latency {
                    label: "c".into(),
                    p: [Some(2.0), Some(2.5), Some(3.0)],
                },
            ],
            300,
        );
        assert_eq!(c.max, "5");
        assert_eq!(c.half, "2.5");
        assert_eq!(
            c.lines[0].path.matches('M').count(),
            2,
            "{}",
            c.lines[0].path
        );
        assert_eq!(c.slots[1].tooltip, "b: no requests");
        assert_eq!(c.slots[0].tooltip, "a: p50 1 ms, p95 3 ms, p99 4.2 ms");
        assert!((nice_ceiling(0.03) - 0.1).abs() < 1e-9);
        assert!((nice_ceiling(120.0) - 200.0).abs() < 1e-9);
    }
}
