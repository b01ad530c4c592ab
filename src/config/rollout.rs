//! `[services.NAME.rollout]`: a progressive rollout. The canary's share of traffic climbs
//! through `steps` (percent), each held for `bake` of continuously healthy guard verdicts;
//! the last step (100) is the promotion.

use super::{GuardSettings, HumanDuration, VersionConfig};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSection {
    /// The canary's percent of traffic at each step, strictly increasing, ending with 100.
    pub steps: Spanned<Vec<Spanned<i64>>>,
    /// How long the guard must call the canary healthy, without a break, before the next step.
    pub bake: Spanned<HumanDuration>,
    /// The version that rolls out; default: the one version besides stable.
    pub canary: Option<Spanned<String>>,
}

/// A validated rollout plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutSettings {
    pub canary: String,
    pub steps: Vec<u32>,
    pub bake: Duration,
}

/// The facts about the service a rollout section is checked against.
pub struct ServiceFacts<'a> {
    pub name: &'a str,
    pub stable: &'a str,
    pub weights: &'a BTreeMap<String, u64>,
    pub versions: &'a [VersionConfig],
    pub guard: &'a GuardSettings,
}

/// A problem and the span of the file it points at.
pub type SpannedProblem = (Range<usize>, String);

impl RolloutSection {
    /// The plan, or every problem with it. `span` is the section's own span.
    pub fn settings(
        &self,
        span: Range<usize>,
        service: &ServiceFacts,
    ) -> Result<RolloutSettings, Vec<SpannedProblem>> {
        let key = format!("services.{}.rollout", service.name);
        let mut problems = Vec::new();
        let steps = self.check_steps(&key, &mut problems);
        let bake = self.bake.get_ref().0;
        if bake.is_zero() {
            problems.push((self.bake.span(), format!("{key}.bake must be more than 0")));
        }
        if !service.guard.enabled {
            problems.push((
                span.clone(),
                format!("{key} needs the guard: a step advances only on its healthy verdict (guard.enabled is false)"),
            ));
        }
        let canary = self.canary(&key, span, service, &mut problems);
        match (canary, problems.is_empty()) {
            (Some(canary), true) => Ok(RolloutSettings {
                canary,
                steps,
                bake,
            }),
            _ => Err(problems),
        }
    }

    fn check_steps(&self, key: &str, problems: &mut Vec<SpannedProblem>) -> Vec<u32> {
        let list = self.steps.get_ref();
        let mut steps = Vec::new();
        let mut previous: Option<i64> = None;
        for step in list {
            let value = *step.get_ref();
            if !(1..=100).contains(&value) {
                problems.push((
                    step.span(),
                    format!("{key}.steps: {value} is not a percent from 1 to 100"),
                ));
            } else if previous.is_some_and(|p| value <= p) {
                problems.push((
                    step.span(),
                    format!(
                        "{key}.steps must be strictly increasing: {value} comes after {}",
                        previous.unwrap_or_default()
                    ),
                ));
            } else {
                steps.push(value as u32);
            }
            previous = Some(value);
        }
        match list.last().map(|s| *s.get_ref()) {
            None => problems.push((
                self.steps.span(),
                format!("{key}.steps is empty: list the canary's percent at each step, ending with 100"),
            )),
            Some(100) if list.len() == 1 => problems.push((
                self.steps.span(),
                format!("{key}.steps needs a step below 100 (to move all traffic at once, use `switchyard ctl switch`)"),
            )),
            Some(100) => {}
            Some(last) => problems.push((
                self.steps.span(),
                format!("{key}.steps must end with 100 (the promotion), not {last}"),
            )),
        }
        steps
    }

    /// The named canary, else the one version besides stable (or the one with weight).
    fn canary(
        &self,
        key: &str,
        span: Range<usize>,
        service: &ServiceFacts,
        problems: &mut Vec<SpannedProblem>,
    ) -> Option<String> {
        let known = |name: &str| service.versions.iter().any(|v| v.name == name);
        if let Some(canary) = &self.canary {
            let name = canary.get_ref();
            let problem = if !known(name) {
                format!("{key}.canary names version {name:?}, which is not defined")
            } else if name == service.stable {
                format!(
                    "{key}.canary is {name:?}, the stable version: name the version to roll out"
                )
            } else {
                return Some(name.clone());
            };
            problems.push((canary.span(), problem));
            return None;
        }
        let others: Vec<&str> = service
            .versions
            .iter()
            .map(|v| v.name.as_str())
            .filter(|name| *name != service.stable)
            .collect();
        let weighted: Vec<&str> = others
            .iter()
            .copied()
            .filter(|name| service.weights.get(*name).is_some_and(|&w| w > 0))
            .collect();
        match (others.as_slice(), weighted.as_slice()) {
            ([only], _) | (_, [only]) => return Some(only.to_string()),
            ([], _) => problems.push((
                span,
                format!("{key}: there is no version besides the stable one to roll out"),
            )),
            (all, _) => problems.push((
                span,
                format!(
                    "{key}: cannot tell which version rolls out ({}); set canary = \"VERSION\"",
                    all.join(", ")
                ),
            )),
        }
        None
    }
}
