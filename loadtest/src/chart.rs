//! A run as an SVG chart, written by hand: per version over time, requests/s, error
//! rate, p99 latency and share of traffic, with steps, revisions and cutbacks marked.

use crate::comparison::CompareRow;
use crate::result::ScenarioResult;
use crate::svg::{color, escape, nice_ceiling, short, GAP, LEFT, PANEL, RIGHT, WIDTH};
use std::fmt::Write as _;
use switchyard_testkit::load::LoadReport;

const TOP: f64 = 150.0;
/// Rows of staggered labels for the vertical marks, above the first panel.
const LABEL_ROWS: usize = 4;

/// One value per second; `None` where there is nothing to plot (no requests).
type Series = Vec<Option<f64>>;

struct Panel {
    title: &'static str,
    unit: &'static str,
    /// Fixed top of the scale (shares), else picked from the data.
    max: Option<f64>,
    lines: Vec<(String, Series)>,
}

/// The chart of `load` (the scenario's main stream) with the result's marks.
pub fn render(result: &ScenarioResult, load: &LoadReport) -> String {
    let seconds = result.duration_secs.ceil().max(1.0) as usize;
    let mut versions: Vec<_> = load.versions.iter().collect();
    // Stable order, so a version keeps its place in the legend from run to run.
    versions.sort_by(|a, b| a.name.cmp(&b.name));
    let totals: Vec<u64> = (0..seconds).map(|s| load.requests_in_second(s)).collect();
    let series =
        |value: &dyn Fn(usize, &switchyard_testkit::load::VersionReport) -> Option<f64>| {
            versions
                .iter()
                .map(|v| (v.name.clone(), (0..seconds).map(|s| value(s, v)).collect()))
                .collect::<Vec<(String, Series)>>()
        };
    let panels = [
        Panel {
            title: "requests/s",
            unit: "",
            max: None,
            lines: series(&|s, v| Some(v.second(s).requests as f64)),
        },
        Panel {
            title: "error rate",
            unit: "%",
            max: None,
            lines: series(&|s, v| {
                let second = v.second(s);
                (second.requests > 0).then(|| 100.0 * second.errors as f64 / second.requests as f64)
            }),
        },
        Panel {
            title: "p99 latency",
            unit: " ms",
            max: None,
            lines: series(&|s, v| (v.second(s).requests > 0).then(|| v.second(s).p99_ms)),
        },
        Panel {
            title: "share of traffic",
            unit: "%",
            max: Some(100.0),
            lines: series(&|s, v| {
                (totals[s] > 0).then(|| 100.0 * v.second(s).requests as f64 / totals[s] as f64)
            }),
        },
    ];
    let proxy_panels = if result.watch.is_some() { 2.0 } else { 0.0 };
    let height = TOP + (panels.len() as f64 + proxy_panels) * (PANEL + GAP) + 10.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        svg,
        "<text x=\"{LEFT}\" y=\"24\" font-size=\"17\" font-weight=\"bold\">{} — {}</text>",
        escape(&result.scenario),
        result.verdict.label()
    );
    for (line, text) in wrap(&result.about, 140).iter().enumerate() {
        let _ = writeln!(
            svg,
            "<text x=\"{LEFT}\" y=\"{}\" fill=\"#555\">{}</text>",
            44 + 15 * line,
            escape(text)
        );
    }
    legend(
        &mut svg,
        &versions.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
    );
    let x = |t: f64| LEFT + t / seconds as f64 * (WIDTH - LEFT - RIGHT);
    for (index, panel) in panels.iter().enumerate() {
        let top = TOP + index as f64 * (PANEL + GAP);
        draw_panel(&mut svg, panel, top, seconds, &x);
    }
    if let Some(watch) = &result.watch {
        let top = TOP + panels.len() as f64 * (PANEL + GAP);
        crate::chart_proxy::draw(&mut svg, watch, top, &x);
    }
    marks(&mut svg, result, height, &x);
    svg.push_str("</svg>\n");
    svg
}

/// Reads one figure of a comparison row.
type Metric = fn(&CompareRow) -> f64;

/// The comparison as bars: requests/s and p99 per proxy, switchyard first.
pub fn render_comparison(result: &ScenarioResult) -> String {
    let rows = &result.comparison;
    let height = 360.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"24\" font-size=\"17\" font-weight=\"bold\">{} — {}</text>\n",
        escape(&result.scenario),
        result.verdict.label()
    );
    let half = (WIDTH - LEFT - RIGHT) / 2.0;
    let metrics: [(&str, Metric); 2] = [
        ("requests/s (median of rounds)", |r| r.rps),
        ("p99 latency, ms", |r| r.p99_ms),
    ];
    for (panel, (title, value)) in metrics.iter().enumerate() {
        let left = LEFT + panel as f64 * half;
        let max = nice_ceiling(rows.iter().map(value).fold(0.0, f64::max));
        let _ = writeln!(
            svg,
            "<text x=\"{left}\" y=\"60\" font-weight=\"bold\">{title}</text>"
        );
        let bar = (half - 60.0) / rows.len().max(1) as f64;
        for (index, row) in rows.iter().enumerate() {
            let v = value(row);
            let h = v / max * 220.0;
            let x = left + index as f64 * bar;
            let _ = writeln!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
                 <text x=\"{:.1}\" y=\"330\" text-anchor=\"middle\">{}</text>",
                300.0 - h,
                bar * 0.7,
                ["#1f6fd1", "#888888", "#2a9d3a"][index % 3],
                x + bar * 0.35,
                295.0 - h,
                short(v),
                x + bar * 0.35,
                escape(&row.proxy),
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn legend(svg: &mut String, names: &[&str]) {
    let mut at = LEFT;
    for name in names {
        let _ = writeln!(
            svg,
            "<rect x=\"{at}\" y=\"81\" width=\"14\" height=\"4\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"87\">{}</text>",
            color(name),
            at + 18.0,
            escape(name)
        );
        at += 30.0 + 8.0 * name.len() as f64;
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"87\" fill=\"#777\">dashed grey: scenario step · purple: routing revision · red: version cut to 0% (dashed: on every instance of a fleet)</text>",
        at + 10.0
    );
}

fn draw_panel(svg: &mut String, panel: &Panel, top: f64, seconds: usize, x: &dyn Fn(f64) -> f64) {
    let bottom = top + PANEL;
    let data_max = panel
        .lines
        .iter()
        .flat_map(|(_, s)| s.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b));
    let max = panel.max.unwrap_or_else(|| nice_ceiling(data_max));
    let y = |v: f64| bottom - (v / max).clamp(0.0, 1.05) * PANEL;
    let _ = writeln!(
        svg,
        "<text x=\"{LEFT}\" y=\"{}\" font-weight=\"bold\">{}</text>",
        top - 8.0,
        panel.title
    );
    for step in 0..=4 {
        let value = max * f64::from(step) / 4.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e4e4e4\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{}{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(value) + 4.0,
            short(value),
            panel.unit,
            y = y(value),
        );
    }
    let tick = if seconds <= 30 { 2 } else { 10 };
    for second in (0..=seconds).step_by(tick) {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{second}s</text>",
            x(second as f64),
            bottom + 15.0
        );
    }
    let _ = writeln!(
        svg,
        "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{}\" height=\"{PANEL}\" fill=\"none\" stroke=\"#999\"/>",
        WIDTH - LEFT - RIGHT
    );
    for (name, series) in &panel.lines {
        // A gap (no data) breaks the line.
        let mut points = String::new();
        let flush = |points: &mut String, svg: &mut String| {
            if !points.is_empty() {
                let _ = writeln!(
                    svg,
                    "<polyline points=\"{points}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>",
                    color(name)
                );
                points.clear();
            }
        };
        for (second, value) in series.iter().enumerate() {
            match value {
                Some(v) => {
                    let _ = write!(points, "{:.1},{:.1} ", x(second as f64 + 0.5), y(*v));
                }
                None => flush(&mut points, svg),
            }
        }
        flush(&mut points, svg);
    }
}

/// Vertical marks across every panel, labels staggered so they do not overlap.
fn marks(svg: &mut String, result: &ScenarioResult, height: f64, x: &dyn Fn(f64) -> f64) {
    let mut all: Vec<(f64, String, &str, &str)> = Vec::new();
    for step in &result.steps {
        all.push((step.at_secs, step.what.clone(), "#888", "5,4"));
    }
    for revision in result.revisions.iter().filter(|r| r.revision > 1) {
        all.push((
            revision.at_secs,
            format!("rev {}", revision.revision),
            "#7b3fbf",
            "2,3",
        ));
    }
    for cut in &result.cutbacks {
        all.push((
            cut.at_secs,
            format!("{} to 0%", cut.version),
            "#d62728",
            "none",
        ));
    }
    for abort in &result.analysis_aborts {
        all.push((
            abort.at_secs,
            format!("aborted by analysis {:?}", abort.analysis),
            "#8b0000",
            "none",
        ));
    }
    for cut in &result.fleet_cutbacks {
        all.push((
            cut.all_secs,
            format!(
                "cut back on all {} instances (+{:.0} ms)",
                result.instances,
                (cut.all_secs - cut.first_secs) * 1e3
            ),
            "#b00020",
            "8,2",
        ));
    }
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (index, (at, label, stroke, dash)) in all.iter().enumerate() {
        let px = x(*at);
        let label_y = TOP - 52.0 + (index % LABEL_ROWS) as f64 * 11.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"{stroke}\" stroke-dasharray=\"{dash}\"/>\
             <text x=\"{:.1}\" y=\"{label_y}\" fill=\"{stroke}\" font-size=\"10\">{}</text>",
            label_y + 2.0,
            height - 30.0,
            px + 3.0,
            escape(&truncate(label, 48)),
        );
    }
}

/// Splits text into lines of at most about `width` characters, at spaces (two at most).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines.truncate(2);
    lines
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_shortened_and_wrapped() {
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("ab", 3), "ab");
        assert_eq!(wrap("one two three", 7), vec!["one two", "three"]);
    }
}
