//! Checking when the guard or an analysis acted, against when the fault began.

use super::Evidence;
use std::time::Duration;

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
pub(super) fn analysis_abort(
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
pub(super) fn guard_cutback(
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
