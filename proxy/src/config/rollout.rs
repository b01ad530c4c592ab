//! `[services.NAME.rollout]`: a progressive rollout. The canary's share of traffic climbs
//! through `steps` (percent), each held for `bake` of continuously healthy guard verdicts;
//! the last step (100) is the promotion. A step may be a table that also holds the rollout
//! at that step until an operator approves (`approve = true`, `ctl approve`) or a webhook
//! answers 2xx (`gate = { url, timeout }`): `{ percent = 50, approve = true }`.

use super::SpannedProblem;
use super::{parse_duration, GuardSettings, HumanDuration, VersionConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSection {
    /// The canary's percent of traffic at each step, strictly increasing, ending with 100;
    /// each a number, or a table `{ percent, approve, gate }`.
    pub steps: Spanned<Vec<Spanned<toml::Value>>>,
    /// How long the guard must call the canary healthy, without a break, before the next step.
    pub bake: Spanned<HumanDuration>,
    /// The version that rolls out; default: the one version besides stable.
    pub canary: Option<Spanned<String>>,
    /// Begin with a shadow step: the canary gets copies of live requests (as the service's
    /// `[shadow]` version) and no user traffic until its shadow check passes.
    #[serde(default)]
    pub shadow_first: bool,
}

/// A validated rollout plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutSettings {
    pub canary: String,
    pub steps: Vec<u32>,
    /// What must say yes before the rollout leaves a step (the steps that have a gate).
    pub gates: Vec<StepGate>,
    pub bake: Duration,
    /// A shadow step comes before the first step (`shadow_first`).
    pub shadow_first: bool,
}

/// What holds a rollout at a step (after its bake and analyses) until it says yes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepGate {
    /// The step it holds (index into `steps`).
    pub step: usize,
    /// An operator's `ctl approve SERVICE`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approve: bool,
    /// A POST that must answer 2xx within its timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookGate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookGate {
    /// `http://HOST:PORT/path`.
    pub url: String,
    pub timeout_ms: u64,
}

/// The longest a webhook gate may take to answer: the rollout waits on it.
const GATE_TIMEOUT_MAX: Duration = Duration::from_secs(30);
/// The facts about the service a rollout section is checked against.
pub struct ServiceFacts<'a> {
    pub name: &'a str,
    pub stable: &'a str,
    pub weights: &'a BTreeMap<String, u64>,
    pub versions: &'a [VersionConfig],
    pub guard: &'a GuardSettings,
}

impl RolloutSection {
    /// The plan, or every problem with it. `span` is the section's own span.
    pub fn settings(
        &self,
        span: Range<usize>,
        service: &ServiceFacts,
    ) -> Result<RolloutSettings, Vec<SpannedProblem>> {
        let key = format!("services.{}.rollout", service.name);
        let mut problems = Vec::new();
        let (steps, gates) = self.check_steps(&key, &mut problems);
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
                gates,
                bake,
                shadow_first: self.shadow_first,
            }),
            _ => Err(problems),
        }
    }

    fn check_steps(
        &self,
        key: &str,
        problems: &mut Vec<SpannedProblem>,
    ) -> (Vec<u32>, Vec<StepGate>) {
        let list = self.steps.get_ref();
        let mut steps = Vec::new();
        let mut gates = Vec::new();
        let mut previous: Option<i64> = None;
        let mut percents = Vec::new();
        for (index, step) in list.iter().enumerate() {
            let Some((value, gate)) = step_entry(key, step, problems) else {
                continue;
            };
            percents.push(value);
            if gate.approve || gate.webhook.is_some() {
                if value == 100 {
                    problems.push((
                        step.span(),
                        format!("{key}.steps: the last step (100, the promotion) has no step after it to hold; put approve or gate on the step before"),
                    ));
                }
                gates.push(StepGate {
                    step: index,
                    ..gate
                });
            }
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
        // A step that did not read was reported; what the rest end with says nothing.
        if percents.len() < list.len() {
            return (steps, gates);
        }
        match percents.last().copied() {
            None => problems.push((
                self.steps.span(),
                format!("{key}.steps is empty: list the canary's percent at each step, ending with 100"),
            )),
            Some(100) if percents.len() == 1 => problems.push((
                self.steps.span(),
                format!("{key}.steps needs a step below 100 (to move all traffic at once, use `switchyard ctl switch`)"),
            )),
            Some(100) => {}
            Some(last) => problems.push((
                self.steps.span(),
                format!("{key}.steps must end with 100 (the promotion), not {last}"),
            )),
        }
        (steps, gates)
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

/// One entry of `steps`: a percent, or `{ percent, approve, gate }`.
fn step_entry(
    key: &str,
    step: &Spanned<toml::Value>,
    problems: &mut Vec<SpannedProblem>,
) -> Option<(i64, StepGate)> {
    let mut report =
        |problem: String| problems.push((step.span(), format!("{key}.steps: {problem}")));
    let table = match step.get_ref() {
        toml::Value::Integer(percent) => return Some((*percent, StepGate::default())),
        toml::Value::Table(table) => table,
        other => {
            report(format!(
                "{other} is neither a percent nor a table {{ percent = 50, approve = true }}"
            ));
            return None;
        }
    };
    let mut gate = StepGate::default();
    let mut percent = None;
    let mut fine = true;
    for (name, value) in table {
        match (name.as_str(), value) {
            ("percent", toml::Value::Integer(p)) => percent = Some(*p),
            ("approve", toml::Value::Boolean(approve)) => gate.approve = *approve,
            ("gate", toml::Value::Table(webhook)) => match webhook_gate(webhook) {
                Ok(webhook) => gate.webhook = Some(webhook),
                Err(problem) => {
                    report(format!("gate {problem}"));
                    fine = false;
                }
            },
            ("percent" | "approve" | "gate", value) => {
                report(format!("{name} cannot be {value}"));
                fine = false;
            }
            (other, _) => {
                report(format!(
                    "unknown key {other:?} in a step (percent, approve, gate)"
                ));
                fine = false;
            }
        }
    }
    match percent {
        None => {
            report("a step table needs percent".into());
            None
        }
        Some(percent) => fine.then_some((percent, gate)),
    }
}

/// `{ url = "http://...", timeout = "5s" }`.
fn webhook_gate(table: &toml::Table) -> Result<WebhookGate, String> {
    let mut url = None;
    let mut timeout = Duration::from_secs(5);
    for (name, value) in table {
        match (name.as_str(), value) {
            ("url", toml::Value::String(text)) => url = Some(text.clone()),
            ("timeout", toml::Value::String(text)) => timeout = parse_duration(text)?,
            (other, _) => {
                return Err(format!(
                    "has an unknown or mistyped key {other:?} (url, timeout)"
                ))
            }
        }
    }
    let url = url.ok_or("needs url = \"http://HOST:PORT/path\"")?;
    let parsed: http::Uri = url
        .parse()
        .map_err(|_| format!("url {url:?} is not a URL"))?;
    if parsed.scheme_str() != Some("http") || parsed.host().is_none_or(str::is_empty) {
        return Err(format!(
            "url {url:?} must be http://HOST:PORT/path (plain HTTP)"
        ));
    }
    if timeout.is_zero() || timeout > GATE_TIMEOUT_MAX {
        return Err(format!(
            "timeout must be more than 0 and at most 30s, not {timeout:?}"
        ));
    }
    Ok(WebhookGate {
        url,
        timeout_ms: timeout.as_millis() as u64,
    })
}
