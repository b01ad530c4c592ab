//! One run's verdict, as a pure function of the values Prometheus gave.

use super::RunOutcome;
use crate::config::analysis::{Condition, NoData};
use crate::config::AnalysisSettings;

/// The outcome of a run whose canary (and, when the condition compares, stable) query
/// answered `canary` and `stable` (`None`: no data), and why, in one line.
pub fn judge(
    settings: &AnalysisSettings,
    canary: Option<f64>,
    stable: Option<f64>,
) -> (RunOutcome, String) {
    let no_data = |whose: &str| {
        let outcome = match settings.no_data {
            NoData::Hold => RunOutcome::NoData,
            NoData::Fail => RunOutcome::Fail,
        };
        (outcome, format!("no data for {whose} (NaN or no series)"))
    };
    let Some(value) = canary else {
        return no_data("the canary");
    };
    match settings.condition {
        Condition::Bounds { min, max } => {
            if let Some(min) = min.filter(|&min| value < min) {
                return (
                    RunOutcome::Fail,
                    format!("canary {value:.4} below min {min}"),
                );
            }
            if let Some(max) = max.filter(|&max| value > max) {
                return (
                    RunOutcome::Fail,
                    format!("canary {value:.4} above max {max}"),
                );
            }
            (
                RunOutcome::Pass,
                format!("canary {value:.4} within {}", settings.condition),
            )
        }
        Condition::AgainstStable {
            op,
            adjust,
            operand,
        } => {
            let Some(stable) = stable else {
                return no_data("stable");
            };
            let bound = adjust.apply(stable, operand);
            let outcome = match op.holds(value, bound) {
                true => RunOutcome::Pass,
                false => RunOutcome::Fail,
            };
            let held = if outcome == RunOutcome::Pass {
                "meets"
            } else {
                "fails"
            };
            (
                outcome,
                format!(
                    "canary {value:.4} {held} {} (stable {stable:.4}: bound {bound:.4})",
                    settings.condition
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::analysis::parse_condition;
    use std::time::Duration;

    fn settings(condition: Condition, no_data: NoData) -> AnalysisSettings {
        AnalysisSettings {
            name: "checkout".into(),
            prometheus: "http://127.0.0.1:9090".into(),
            query: "x{version=\"{version}\"}".into(),
            every: Duration::from_secs(1),
            condition,
            failures: 2,
            no_data,
        }
    }

    #[test]
    fn against_stable_with_a_tolerance() {
        let against = settings(
            parse_condition("canary >= stable - 0.01").unwrap(),
            NoData::Hold,
        );
        assert_eq!(judge(&against, Some(0.985), Some(0.99)).0, RunOutcome::Pass);
        let (outcome, why) = judge(&against, Some(0.90), Some(0.99));
        assert_eq!(outcome, RunOutcome::Fail);
        assert!(why.contains("0.9000") && why.contains("0.9900"), "{why}");
        assert_eq!(judge(&against, Some(0.99), None).0, RunOutcome::NoData);
    }

    #[test]
    fn bounds_and_no_data_never_pass() {
        let bounds = Condition::Bounds {
            min: Some(0.95),
            max: Some(1.0),
        };
        let hold = settings(bounds, NoData::Hold);
        assert_eq!(judge(&hold, Some(0.97), None).0, RunOutcome::Pass);
        assert_eq!(judge(&hold, Some(0.94), None).0, RunOutcome::Fail);
        assert_eq!(judge(&hold, Some(1.01), None).0, RunOutcome::Fail);
        assert_eq!(judge(&hold, None, None).0, RunOutcome::NoData);
        let fail = settings(bounds, NoData::Fail);
        assert_eq!(judge(&fail, None, None).0, RunOutcome::Fail);
    }
}
