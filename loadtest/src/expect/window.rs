//! Reading a load's per-second and per-tenth counts over a window of the run.

use std::time::Duration;
use switchyard_testkit::load::{LoadReport, TENTH};

pub(super) fn pct(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

pub(super) fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// (requests, errors) sent in whole seconds [from, until), for one version or all.
pub(super) fn window_counts(
    load: &LoadReport,
    version: Option<&str>,
    from: Option<Duration>,
    until: Option<Duration>,
) -> (u64, u64) {
    let first = from.map_or(0, |d| d.as_secs() as usize);
    let last = until.map_or(usize::MAX, |d| d.as_secs() as usize);
    let mut totals = (0, 0);
    for report in &load.versions {
        if version.is_some_and(|v| v != report.name) {
            continue;
        }
        for second in report.per_second.iter().take(last).skip(first) {
            totals.0 += second.requests;
            totals.1 += second.errors;
        }
    }
    totals
}

/// The second in [first, last) with the highest p99 (of one version, or of any), and that p99.
pub(super) fn worst_second_p99(
    load: &LoadReport,
    version: Option<&str>,
    first: usize,
    last: usize,
) -> Option<(usize, f64)> {
    load.versions
        .iter()
        .filter(|report| version.is_none_or(|v| v == report.name))
        .flat_map(|report| {
            report
                .per_second
                .iter()
                .enumerate()
                .take(last)
                .skip(first)
                .filter(|(_, second)| second.requests > 0)
                .map(|(index, second)| (index, second.p99_ms))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// The median over the whole seconds of [from, until) of each second's p99 (the worst
/// version's, when several answered in that second).
pub(super) fn median_second_p99(load: &LoadReport, from: Duration, until: Duration) -> Option<f64> {
    let (first, last) = (from.as_secs() as usize, until.as_secs() as usize);
    let mut seconds: Vec<f64> = (first..last)
        .filter_map(|second| {
            load.versions
                .iter()
                .filter_map(|report| report.per_second.get(second))
                .filter(|s| s.requests > 0)
                .map(|s| s.p99_ms)
                .max_by(f64::total_cmp)
        })
        .collect();
    seconds.sort_by(f64::total_cmp);
    seconds.get(seconds.len() / 2).copied()
}

/// Mean requests per second sent in [from, until).
pub(super) fn rate_in(load: &LoadReport, from: Duration, until: Duration) -> f64 {
    let seconds = until.saturating_sub(from).as_secs_f64();
    if seconds == 0.0 {
        return 0.0;
    }
    window_counts(load, None, Some(from), Some(until)).0 as f64 / seconds
}

/// The send time (to 100 ms) of the last request after `after` that `version` answered.
pub fn last_answer_after(load: &LoadReport, version: &str, after: Duration) -> Option<Duration> {
    let tenths = &load.version(version)?.per_tenth;
    let first = (after.as_millis() / TENTH.as_millis()) as usize;
    let last = (first..tenths.len()).rev().find(|&i| tenths[i] > 0)?;
    Some(TENTH * last as u32)
}
