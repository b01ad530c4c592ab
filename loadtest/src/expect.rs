//! Checking a scenario's expectations against what the clients saw.

use crate::incidents::{AnalysisAbort, GuardCutback};
use crate::result::StepRecord;
use crate::scenario::Expectation;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use switchyard_testkit::load::{LoadReport, TENTH};

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub expectation: String,
    pub pass: bool,
    pub detail: String,
}

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

/// When the step scheduled at `after` was actually performed (a step runs on the
/// harness's next tick after its time).
fn performed(evidence: &Evidence, after: Duration) -> f64 {
    evidence
        .steps
        .iter()
        .map(|step| step.at_secs)
        .filter(|&at| at >= after.as_secs_f64())
        .reduce(f64::min)
        .unwrap_or(after.as_secs_f64())
}

/// Whether an analysis aborted `version` in time (from when the step at `after` was
/// performed), its incident naming the query, the condition and both values.
fn analysis_abort(
    evidence: &Evidence,
    version: &str,
    analysis: Option<&str>,
    after: Duration,
    within: Duration,
) -> (bool, String) {
    let anchor = performed(evidence, after);
    let Some(abort) = evidence
        .analysis_aborts
        .iter()
        .find(|a| a.version == version && analysis.is_none_or(|name| a.analysis == name))
    else {
        return (false, format!("no analysis aborted {version}"));
    };
    let delay = abort.at_secs - anchor;
    let named = !abort.query.is_empty()
        && !abort.condition.is_empty()
        && abort.canary_value.is_some()
        && abort.failed_runs > 0;
    let pass = named && delay >= 0.0 && delay <= within.as_secs_f64();
    (
        pass,
        format!(
            "revision {} at {:.3}s, {:.1} s after the step at {anchor:.3}s: {} (canary {}, stable {}, {} failed runs; query `{}`)",
            abort.revision,
            abort.at_secs,
            delay,
            abort.condition,
            crate::result::value(abort.canary_value),
            crate::result::value(abort.stable_value),
            abort.failed_runs,
            abort.query
        ),
    )
}

/// Whether the guard cut `version` back in time, measured from when the step scheduled
/// at `after` was actually performed.
fn guard_cutback(
    evidence: &Evidence,
    version: &str,
    after: Duration,
    within: Duration,
    rule: Option<crate::scenario::GuardRule>,
) -> (bool, String) {
    let anchor = performed(evidence, after);
    let Some(cut) = evidence
        .guard_cutbacks
        .iter()
        .find(|cut| cut.version == version)
    else {
        return (false, format!("the guard never cut {version} back"));
    };
    let delay = cut.at_secs - anchor;
    let rule_ok = rule.is_none_or(|r| r.name() == cut.rule);
    let pass = rule_ok && delay >= 0.0 && delay <= within.as_secs_f64();
    (
        pass,
        format!(
            "revision {} at {:.3}s, {:.0} ms after the step at {anchor:.3}s, on {}: {}",
            cut.revision,
            cut.at_secs,
            delay * 1e3,
            cut.rule,
            cut.summary
        ),
    )
}

fn pct(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// (requests, errors) sent in whole seconds [from, until), for one version or all.
fn window_counts(
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
fn worst_second_p99(
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
fn median_second_p99(load: &LoadReport, from: Duration, until: Duration) -> Option<f64> {
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
fn rate_in(load: &LoadReport, from: Duration, until: Duration) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::GuardRule;
    use switchyard::config::HumanDuration;
    use switchyard_testkit::load::{SecondReport, VersionReport};

    fn version(name: &str, per_second: &[u64], per_tenth: Vec<u32>) -> VersionReport {
        VersionReport {
            name: name.into(),
            requests: per_second.iter().sum(),
            errors: 0,
            share: 0.0,
            p50_ms: 1.0,
            p99_ms: 2.0,
            p999_ms: 3.0,
            max_ms: 4.0,
            per_second: per_second
                .iter()
                .map(|&requests| SecondReport {
                    requests,
                    ..SecondReport::default()
                })
                .collect(),
            per_tenth,
        }
    }

    fn evidence_check(expectation: Expectation, load: LoadReport) -> Check {
        let loads = BTreeMap::from([("main".to_string(), load)]);
        check(
            &expectation,
            &Evidence {
                loads: &loads,
                default_load: "main",
                rss_peak_mib: None,
                guard_cutbacks: &[],
                analysis_aborts: &[],
                watch: None,
                steps: &[],
            },
        )
    }

    fn secs(s: u64) -> HumanDuration {
        HumanDuration(Duration::from_secs(s))
    }

    #[test]
    fn share_zero_times_the_last_canary_answer() {
        // Canary answers until 10.3 s, then nothing.
        let mut tenths = vec![1; 104];
        tenths.extend([0; 96]);
        let load = LoadReport {
            requests: 100,
            versions: vec![version("canary", &[10; 20], tenths)],
            ..LoadReport::default()
        };
        let expect = |within: u64| Expectation::ShareZero {
            version: "canary".into(),
            after: secs(10),
            within: secs(within),
            load: None,
        };
        let quick = evidence_check(expect(1), load.clone());
        assert!(quick.pass, "{quick:?}");
        assert!(quick.detail.contains("10.3s"), "{}", quick.detail);
        let mut late = load;
        late.versions[0].per_tenth[150] = 1;
        assert!(!evidence_check(expect(1), late).pass);
    }

    #[test]
    fn shares_and_throughput_come_from_whole_seconds() {
        let load = LoadReport {
            requests: 40,
            versions: vec![
                version("blue", &[9, 9, 5, 5], vec![]),
                version("canary", &[1, 1, 0, 0], vec![]),
            ],
            ..LoadReport::default()
        };
        let share = Expectation::Share {
            version: "canary".into(),
            from: secs(0),
            until: secs(2),
            min: Some(0.05),
            max: Some(0.15),
            load: None,
        };
        assert!(evidence_check(share, load.clone()).pass);
        let kept = Expectation::ThroughputKept {
            baseline: [secs(0), secs(2)],
            during: [secs(2), secs(4)],
            min_ratio: 0.8,
            load: None,
        };
        let check = evidence_check(kept, load);
        assert!(!check.pass);
        assert!(check.detail.contains("0.50x"), "{}", check.detail);
    }

    #[test]
    fn guard_cutbacks_are_timed_from_the_step_as_performed() {
        let cut = GuardCutback {
            version: "canary".into(),
            rule: "error_rate".into(),
            at_secs: 5.09,
            revision: 2,
            summary: "canary error rate 30%".into(),
            failed: 0,
            saved: 12,
        };
        let steps = [StepRecord {
            at_secs: 5.04,
            what: "canary: errors 30%".into(),
            ok: true,
            outcome: String::new(),
        }];
        let loads = BTreeMap::new();
        let evidence = Evidence {
            loads: &loads,
            default_load: "main",
            rss_peak_mib: None,
            guard_cutbacks: std::slice::from_ref(&cut),
            analysis_aborts: &[],
            watch: None,
            steps: &steps,
        };
        let expect = |within_ms: u64, rule| Expectation::GuardCutback {
            version: "canary".into(),
            after: secs(5),
            within: HumanDuration(Duration::from_millis(within_ms)),
            rule,
        };
        let quick = check(&expect(100, Some(GuardRule::ErrorRate)), &evidence);
        assert!(quick.pass, "{quick:?}");
        assert!(quick.detail.contains("50 ms after"), "{}", quick.detail);
        assert!(!check(&expect(40, None), &evidence).pass);
        assert!(!check(&expect(100, Some(GuardRule::Latency)), &evidence).pass);
        let none = Evidence {
            guard_cutbacks: &[],
            ..evidence
        };
        let missing = check(&expect(1000, None), &none);
        assert!(
            !missing.pass && missing.detail.contains("never"),
            "{missing:?}"
        );
    }

    #[test]
    fn a_windowed_p99_is_the_worst_second_in_the_window() {
        let mut blue = version("blue", &[10, 10, 10, 10], vec![]);
        for (second, p99) in blue.per_second.iter_mut().zip([250.0, 9.0, 31.0, 12.0]) {
            second.p99_ms = p99;
        }
        let load = LoadReport {
            requests: 40,
            p99_ms: 120.0,
            versions: vec![blue],
            ..LoadReport::default()
        };
        let expect = |from: Option<u64>, max_ms: u64| Expectation::P99 {
            max: HumanDuration(Duration::from_millis(max_ms)),
            version: None,
            load: None,
            from: from.map(secs),
            until: None,
        };
        let steady = evidence_check(expect(Some(1), 50), load.clone());
        assert!(steady.pass, "{steady:?}");
        assert!(
            steady.detail.contains("2s-3s: p99 31.00"),
            "{}",
            steady.detail
        );
        assert!(!evidence_check(expect(Some(1), 30), load.clone()).pass);
        let whole = evidence_check(expect(None, 100), load);
        assert!(!whole.pass && whole.detail.contains("120.00"), "{whole:?}");
    }

    #[test]
    fn p99_kept_compares_the_median_seconds_of_two_windows() {
        let mut blue = version("blue", &[10; 6], vec![]);
        let p99s = [4.0, 5.0, 400.0, 6.0, 7.0, 500.0];
        for (second, p99) in blue.per_second.iter_mut().zip(p99s) {
            second.p99_ms = p99;
        }
        let load = LoadReport {
            requests: 60,
            versions: vec![blue],
            ..LoadReport::default()
        };
        let expect = |max_ratio| Expectation::P99Kept {
            baseline: [secs(0), secs(3)],
            during: [secs(3), secs(6)],
            max_ratio,
            load: None,
        };
        // One slow second in each window does not decide: 5 ms, then 7 ms.
        let kept = evidence_check(expect(1.5), load.clone());
        assert!(kept.pass && kept.detail.contains("1.40x"), "{kept:?}");
        assert!(!evidence_check(expect(1.2), load).pass);
    }

    #[test]
    fn a_step_expectation_reads_the_step_as_performed() {
        let steps = [StepRecord {
            at_secs: 24.0,
            what: "ctl weights shop blue=90 green=10".into(),
            ok: false,
            outcome: "weights refused: green fails its checks: $.price differs".into(),
        }];
        let loads = BTreeMap::new();
        let evidence = Evidence {
            loads: &loads,
            default_load: "main",
            rss_peak_mib: None,
            guard_cutbacks: &[],
            analysis_aborts: &[],
            watch: None,
            steps: &steps,
        };
        let expect = |ok, contains: &str| Expectation::Step {
            index: 1,
            ok,
            contains: Some(contains.into()),
        };
        assert!(check(&expect(false, "$.price"), &evidence).pass);
        assert!(!check(&expect(true, "$.price"), &evidence).pass);
        assert!(!check(&expect(false, "$.name"), &evidence).pass);
    }

    #[test]
    fn no_requests_never_passes_an_error_check() {
        let check = evidence_check(
            Expectation::Errors {
                max_rate: 0.0,
                load: None,
                from: None,
                until: None,
            },
            LoadReport::default(),
        );
        assert!(!check.pass);
    }
}
