//! Checking a scenario's expectations against what the clients saw.

mod incidents;
mod window;

use crate::check::Check;
use crate::incidents::{AnalysisAbort, GuardCutback};
use crate::result::StepRecord;
use crate::scenario::Expectation;
use incidents::{analysis_abort, guard_cutback};
use std::collections::BTreeMap;
use switchyard_testkit::load::LoadReport;
pub use window::last_answer_after;
use window::{median_second_p99, pct, rate_in, ratio, window_counts, worst_second_p99};

/// What expectations are checked against.
pub struct Evidence<'a> {
    pub loads: &'a BTreeMap<String, LoadReport>,
    /// The stream an expectation without `load` is about.
    pub default_load: &'a str,
    pub rss_peak_mib: Option<f64>,
    pub guard_cutbacks: &'a [GuardCutback],
    pub analysis_aborts: &'a [AnalysisAbort],
    /// The proxy's own view over the run, when it was watched.
    pub watch: Option<&'a crate::watch::ServiceWatch>,
    /// The steps as performed (a step runs on the harness's next tick after its time).
    pub steps: &'a [StepRecord],
}

pub fn check(expectation: &Expectation, evidence: &Evidence) -> Check {
    let name = expectation.load().unwrap_or(evidence.default_load);
    let empty = LoadReport::default();
    let load = evidence.loads.get(name).unwrap_or(&empty);
    let (text, pass, detail) = match expectation {
        Expectation::Errors {
            max_rate,
            from,
            until,
            ..
        } => {
            let (requests, errors) =
                window_counts(load, None, from.map(|d| d.0), until.map(|d| d.0));
            let rate = ratio(errors, requests);
            (
                format!("{name}: error rate at most {}", pct(*max_rate)),
                requests > 0 && rate <= *max_rate,
                format!("{errors} errors in {requests} requests ({})", pct(rate)),
            )
        }
        Expectation::ShareZero {
            version,
            after,
            within,
            ..
        } => {
            let deadline = after.0 + within.0;
            let last = last_answer_after(load, version, after.0);
            let (pass, detail) = match last {
                None => (
                    true,
                    format!("{version} answered nothing sent after {:?}", after.0),
                ),
                Some(at) => (
                    at < deadline,
                    format!(
                        "{version} last answered a request sent at {:.1}s ({:.1} s after {:?})",
                        at.as_secs_f64(),
                        at.saturating_sub(after.0).as_secs_f64(),
                        after.0
                    ),
                ),
            };
            (
                format!(
                    "{name}: {version} share is 0 within {:?} of {:?}",
                    within.0, after.0
                ),
                pass,
                detail,
            )
        }
        Expectation::Share {
            version,
            from,
            until,
            min,
            max,
            ..
        } => {
            let (all, _) = window_counts(load, None, Some(from.0), Some(until.0));
            let (mine, _) = window_counts(load, Some(version), Some(from.0), Some(until.0));
            let share = ratio(mine, all);
            let low = min.unwrap_or(0.0);
            let high = max.unwrap_or(1.0);
            (
                format!(
                    "{name}: {version} share in [{}, {}] from {:?} to {:?}",
                    pct(low),
                    pct(high),
                    from.0,
                    until.0
                ),
                all > 0 && (low..=high).contains(&share),
                format!("{mine} of {all} requests ({})", pct(share)),
            )
        }
        Expectation::P99 {
            max,
            version,
            from,
            until,
            ..
        } => {
            let limit = max.0.as_secs_f64() * 1e3;
            let who = version.as_deref().unwrap_or("all requests");
            if from.is_none() && until.is_none() {
                let p99 = match version {
                    Some(v) => load.version(v).map_or(0.0, |r| r.p99_ms),
                    None => load.p99_ms,
                };
                (
                    format!("{name}: p99 of {who} below {:?}", max.0),
                    p99 < limit && load.requests > 0,
                    format!("p99 {p99:.2} ms"),
                )
            } else {
                let first = from.map_or(0, |d| d.0.as_secs() as usize);
                let last = until.map_or(usize::MAX, |d| d.0.as_secs() as usize);
                let worst = worst_second_p99(load, version.as_deref(), first, last);
                (
                    format!(
                        "{name}: p99 of {who} below {:?} in every second from {first}s{}",
                        max.0,
                        until.map_or(String::new(), |d| format!(" to {:?}", d.0))
                    ),
                    worst.is_some_and(|(_, p99)| p99 < limit),
                    worst.map_or("no requests in the window".into(), |(second, p99)| {
                        format!("worst second {second}s-{}s: p99 {p99:.2} ms", second + 1)
                    }),
                )
            }
        }
        Expectation::ThroughputKept {
            baseline,
            during,
            min_ratio,
            ..
        } => {
            let before = rate_in(load, baseline[0].0, baseline[1].0);
            let while_ = rate_in(load, during[0].0, during[1].0);
            let kept = if before > 0.0 { while_ / before } else { 0.0 };
            (
                format!("{name}: keeps {} of its req/s", pct(*min_ratio)),
                kept >= *min_ratio,
                format!("{before:.0} req/s before, {while_:.0} req/s during ({kept:.2}x)"),
            )
        }
        Expectation::P99Kept {
            baseline,
            during,
            max_ratio,
            ..
        } => {
            let before = median_second_p99(load, baseline[0].0, baseline[1].0);
            let while_ = median_second_p99(load, during[0].0, during[1].0);
            let ratio = match (before, while_) {
                (Some(before), Some(while_)) if before > 0.0 => Some(while_ / before),
                _ => None,
            };
            (
                format!("{name}: p99 during at most {max_ratio:.2}x the baseline's"),
                ratio.is_some_and(|r| r <= *max_ratio),
                format!(
                    "median per-second p99 {:.2} ms before, {:.2} ms during ({})",
                    before.unwrap_or(0.0),
                    while_.unwrap_or(0.0),
                    ratio.map_or("no requests".into(), |r| format!("{r:.2}x"))
                ),
            )
        }
        Expectation::Rss { max_mib } => match evidence.rss_peak_mib {
            Some(peak) => (
                format!("proxy RSS at most {max_mib} MiB"),
                peak <= *max_mib,
                format!("peak {peak:.1} MiB"),
            ),
            None => (
                format!("proxy RSS at most {max_mib} MiB"),
                false,
                "RSS unknown (binary mode only)".into(),
            ),
        },
        Expectation::GuardCutback {
            version,
            after,
            within,
            rule,
        } => {
            let (pass, detail) = guard_cutback(evidence, version, after.0, within.0, *rule);
            (
                format!(
                    "guard cut {version} back{} within {:?} of the step at {:?}",
                    rule.map_or(String::new(), |r| format!(" on {}", r.name())),
                    within.0,
                    after.0
                ),
                pass,
                detail,
            )
        }
        Expectation::AnalysisAbort {
            version,
            analysis,
            after,
            within,
        } => {
            let (pass, detail) =
                analysis_abort(evidence, version, analysis.as_deref(), after.0, within.0);
            (
                format!(
                    "analysis{} aborted {version} within {:?} of the step at {:?}, naming its query and values",
                    analysis
                        .as_deref()
                        .map_or(String::new(), |name| format!(" {name:?}")),
                    within.0,
                    after.0
                ),
                pass,
                detail,
            )
        }
        Expectation::NoGuardCutback { version } => {
            let cut = evidence
                .guard_cutbacks
                .iter()
                .find(|cut| cut.version == *version);
            let said_bad = evidence.watch.is_some_and(|w| w.guard_said_bad());
            let verdicts = evidence.watch.map_or("status not watched".into(), |w| {
                let counts: Vec<String> = w
                    .guard_counts()
                    .iter()
                    .map(|(label, n)| format!("{label} {n}"))
                    .collect();
                format!("guard verdicts read: {}", counts.join(", "))
            });
            (
                format!("the guard never cut {version} back nor judged it bad"),
                cut.is_none() && !said_bad,
                match cut {
                    Some(cut) => format!(
                        "the guard cut {version} back at {:.3}s on {}: {}",
                        cut.at_secs, cut.rule, cut.summary
                    ),
                    None => verdicts,
                },
            )
        }
        Expectation::Step {
            index,
            ok,
            contains,
        } => {
            let step = evidence.steps.get(index - 1);
            let said = |step: &StepRecord| {
                contains
                    .as_deref()
                    .is_none_or(|text| step.outcome.contains(text))
            };
            (
                format!(
                    "step {index} {}{}",
                    if *ok { "succeeds" } else { "is refused" },
                    contains
                        .as_deref()
                        .map_or(String::new(), |text| format!(", saying {text:?}"))
                ),
                step.is_some_and(|step| step.ok == *ok && said(step)),
                step.map_or("the step never ran".into(), |step| {
                    format!("{}: {}", step.what, step.outcome.trim())
                }),
            )
        }
    };
    Check {
        expectation: text,
        pass,
        detail,
    }
}

#[cfg(test)]
mod tests;
