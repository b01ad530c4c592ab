//! The proxy's own view in a run's chart (scenarios with `[prometheus]`): the non-stable
//! versions' weight as the data plane sent it with the guard's verdict under it, and each
//! Prometheus analysis run, its canary and stable values against its condition's bound.

use crate::svg::{color, escape, short, GAP, LEFT, PANEL, RIGHT, WIDTH};
use crate::watch::{AnalysisRun, ServiceWatch};
use std::fmt::Write as _;
use switchyard::config::analysis::{parse_condition, Condition};

/// Height of the guard's verdict strip at the bottom of the weight panel.
const STRIP: f64 = 12.0;

pub fn draw(svg: &mut String, watch: &ServiceWatch, top: f64, x: &dyn Fn(f64) -> f64) {
    weights_and_guard(svg, watch, top, x);
    analysis_runs(svg, &watch.analysis_runs, top + PANEL + GAP, x);
}

fn frame(svg: &mut String, top: f64, title: &str) {
    let _ = writeln!(
        svg,
        "<text x=\"{LEFT}\" y=\"{}\" font-weight=\"bold\">{}</text>\
         <rect x=\"{LEFT}\" y=\"{top}\" width=\"{}\" height=\"{PANEL}\" fill=\"none\" stroke=\"#999\"/>",
        top - 8.0,
        escape(title),
        WIDTH - LEFT - RIGHT
    );
}

fn axis(svg: &mut String, y: f64, label: &str) {
    let _ = writeln!(
        svg,
        "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e4e4e4\"/>\
         <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{label}</text>",
        WIDTH - RIGHT,
        LEFT - 6.0,
        y + 4.0
    );
}

/// Weight (%) per non-stable version over time; the guard's verdict as a coloured strip.
fn weights_and_guard(svg: &mut String, watch: &ServiceWatch, top: f64, x: &dyn Fn(f64) -> f64) {
    frame(
        svg,
        top,
        "proxy's view: weight of each version (as sent) · strip: the guard's verdict (green healthy, grey inconclusive or none, red bad)",
    );
    let plot = PANEL - STRIP - 4.0;
    let y = |share: f64| top + plot - share.clamp(0.0, 1.0) * plot;
    for percent in [0, 25, 50, 75, 100] {
        axis(svg, y(f64::from(percent) / 100.0), &format!("{percent}%"));
    }
    let mut names: Vec<&str> = watch
        .samples
        .iter()
        .flat_map(|s| s.shares.iter().map(|(n, _)| n.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let points: Vec<String> = watch
            .samples
            .iter()
            .filter_map(|s| {
                let (_, share) = s.shares.iter().find(|(n, _)| n == name)?;
                Some(format!("{:.1},{:.1}", x(s.at_secs), y(*share)))
            })
            .collect();
        let _ = writeln!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>",
            points.join(" "),
            color(name)
        );
    }
    let strip_top = top + PANEL - STRIP - 2.0;
    for pair in watch.samples.windows(2) {
        let fill = match pair[0].guard.as_deref() {
            Some("healthy") => "#2a9d3a",
            Some("bad") => "#d62728",
            _ => "#bbbbbb",
        };
        let _ = writeln!(
            svg,
            "<rect x=\"{:.1}\" y=\"{strip_top:.1}\" width=\"{:.2}\" height=\"{STRIP}\" fill=\"{fill}\"/>",
            x(pair[0].at_secs),
            (x(pair[1].at_secs) - x(pair[0].at_secs)).max(0.5)
        );
    }
}

/// Each run: canary value (green pass, red fail, grey nothing to judge), stable's value
/// (blue) and the bound the condition set (dashed).
fn analysis_runs(svg: &mut String, runs: &[AnalysisRun], top: f64, x: &dyn Fn(f64) -> f64) {
    let title = runs.first().map_or("analysis: no runs".to_string(), |r| {
        format!(
            "analysis {:?} on {}: each run's canary value (green pass, red fail), stable's (blue), the bound of `{}` (dashed)",
            r.name, r.version, r.condition
        )
    });
    frame(svg, top, &title);
    let bounds: Vec<Option<f64>> = runs.iter().map(bound).collect();
    let values: Vec<f64> = runs
        .iter()
        .flat_map(|r| [r.canary, r.stable])
        .chain(bounds.iter().copied())
        .flatten()
        .collect();
    if values.is_empty() {
        return;
    }
    let high = values.iter().copied().fold(f64::MIN, f64::max);
    let low = values.iter().copied().fold(f64::MAX, f64::min);
    let pad = ((high - low) * 0.1).max(0.005);
    let (low, high) = (low - pad, high + pad);
    let y = |v: f64| top + PANEL - (v - low) / (high - low) * PANEL;
    for step in 0..=4 {
        let value = low + (high - low) * f64::from(step) / 4.0;
        axis(svg, y(value), &short((value * 1000.0).round() / 1000.0));
    }
    let mut bound_points = Vec::new();
    for (run, bound) in runs.iter().zip(&bounds) {
        let px = x(run.at_secs);
        if let Some(stable) = run.stable {
            let _ = writeln!(
                svg,
                "<circle cx=\"{px:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#1f6fd1\"/>",
                y(stable)
            );
        }
        if let Some(canary) = run.canary {
            let fill = match run.outcome.as_str() {
                "pass" => "#2a9d3a",
                "fail" => "#d62728",
                _ => "#888888",
            };
            let _ = writeln!(
                svg,
                "<circle cx=\"{px:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{fill}\"><title>{} canary {canary:.4}</title></circle>",
                y(canary),
                escape(&run.outcome)
            );
        }
        if let Some(bound) = bound {
            bound_points.push(format!("{px:.1},{:.1}", y(*bound)));
        }
    }
    let _ = writeln!(
        svg,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#555\" stroke-dasharray=\"4,3\"/>",
        bound_points.join(" ")
    );
}

/// The value the canary's had to meet on this run (the lower or upper bound).
fn bound(run: &AnalysisRun) -> Option<f64> {
    match parse_condition(&run.condition).ok()? {
        Condition::Bounds { min, max } => min.or(max),
        Condition::AgainstStable {
            adjust, operand, ..
        } => Some(adjust.apply(run.stable?, operand)),
    }
}
