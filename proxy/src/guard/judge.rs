//! The judge: canary against stable, as a pure function of the outcomes it is shown.
//!
//! Errors: sequential probability ratio tests (Wald) on the canary's outcomes. The null
//! hypothesis is "the canary fails no more often than stable" (stable's rate, taken at an
//! upper confidence bound so stable's own noise cannot condemn a canary); the alternative
//! is "it fails `error_margin` more often". Two tests run side by side: one at the
//! configured margin (sensitive) and one at a gross margin (fast on a canary that fails
//! outright), each at half the false-abort bound so together they keep it. Crossing the
//! upper boundary is a bad verdict. The statistic never sinks below the lower boundary
//! (where the canary counts as healthy), so a canary that turns bad later is caught
//! within a bounded number of requests, and evidence from a long healthy past never
//! piles up to hide a new failure.
//!
//! Latency: canary p99 against stable p99 over the recent window, judged only once both
//! sides have `latency_min_samples` requests, and bad only when several judgments in a row
//! agree.

use crate::config::GuardSettings;
use serde::Serialize;
use std::time::Duration;

/// Outcomes seen since the last look, and the recent window of both sides.
#[derive(Debug, Clone, Copy, Default)]
pub struct Evidence {
    /// Canary requests and errors since the previous call (deltas).
    pub canary_new_requests: u64,
    pub canary_new_errors: u64,
    /// Canary connection failures since the previous call.
    pub canary_new_unreachable: u64,
    /// True when every canary endpoint is refusing connections right now.
    pub canary_all_refusing: bool,
    pub canary_window: Side,
    pub stable_window: Side,
}

/// One version's traffic over the recent window.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Side {
    pub requests: u64,
    pub errors: u64,
    /// Measured afresh for this judgment, or `None` (latency is then not judged again).
    pub p99: Option<Duration>,
}

impl Side {
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    ErrorRate,
    Latency,
    Unreachable,
}

/// Why the canary was judged bad: the rule and its numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub rule: Rule,
    pub summary: String,
    pub canary_requests: u64,
    pub canary_errors: u64,
    pub canary_error_rate: f64,
    pub stable_error_rate: f64,
    pub canary_p99_ms: f64,
    pub stable_p99_ms: f64,
    /// The test statistic and the boundary it crossed (error rule).
    pub log_likelihood_ratio: f64,
    pub boundary: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Enough evidence that the canary is not worse than stable.
    Healthy,
    Bad(Finding),
    /// Not enough evidence either way: nothing may be decided on it.
    Inconclusive,
}

impl Verdict {
    pub fn kind(&self) -> VerdictKind {
        match self {
            Verdict::Healthy => VerdictKind::Healthy,
            Verdict::Bad(_) => VerdictKind::Bad,
            Verdict::Inconclusive => VerdictKind::Inconclusive,
        }
    }
}

/// A verdict without its evidence: what status, metrics and rollouts are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Healthy,
    Inconclusive,
    Bad,
}

impl VerdictKind {
    pub fn label(self) -> &'static str {
        match self {
            VerdictKind::Healthy => "healthy",
            VerdictKind::Inconclusive => "inconclusive",
            VerdictKind::Bad => "bad",
        }
    }

    /// The verdict as a number for metrics: 0 healthy, 1 inconclusive, 2 bad.
    pub fn level(self) -> u8 {
        match self {
            VerdictKind::Healthy => 0,
            VerdictKind::Inconclusive => 1,
            VerdictKind::Bad => 2,
        }
    }
}

impl std::fmt::Display for VerdictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// The gross margin: a canary failing this much more often than stable is cut back on
/// a few dozen requests.
const GROSS_MARGIN: f64 = 0.10;

/// One Wald test between stable's error rate and that plus `margin`.
#[derive(Debug, Clone)]
struct ErrorTest {
    margin: f64,
    upper: f64,
    lower: f64,
    llr: f64,
    /// Requests and errors since the statistic last stood at the lower boundary.
    requests: u64,
    errors: u64,
}

impl ErrorTest {
    fn new(margin: f64, alpha: f64, beta: f64) -> ErrorTest {
        ErrorTest {
            margin,
            upper: ((1.0 - beta) / alpha).ln(),
            lower: (beta / (1.0 - alpha)).ln(),
            llr: 0.0,
            requests: 0,
            errors: 0,
        }
    }

    /// Adds `errors` of `requests`; true when the upper boundary is crossed.
    fn add(&mut self, requests: u64, errors: u64, p0: f64) -> bool {
        let p1 = (p0 + self.margin).min(0.99);
        let successes = requests - errors;
        self.llr +=
            errors as f64 * (p1 / p0).ln() + successes as f64 * ((1.0 - p1) / (1.0 - p0)).ln();
        self.requests += requests;
        self.errors += errors;
        if self.llr <= self.lower {
            self.llr = self.lower;
            self.requests = 0;
            self.errors = 0;
        }
        self.llr >= self.upper
    }

    fn at_lower(&self) -> bool {
        self.llr <= self.lower
    }
}

/// Consecutive fresh latency readings that must all find the canary slower before latency
/// condemns it: one scheduler stall or GC pause must not cut a canary back. The live guard
/// reads latency every 200 ms, so this spans about half a second.
const LATENCY_PERSISTENCE: u32 = 3;

/// The running state of one canary's judgment.
#[derive(Debug, Clone)]
pub struct Judge {
    settings: GuardSettings,
    latency: LatencyCheck,
    /// The configured margin first, then the gross one.
    tests: [ErrorTest; 2],
    unreachable: u64,
    /// The sensitive test has reached its healthy boundary since this judge began.
    passed_error_test: bool,
}

impl Judge {
    pub fn new(settings: &GuardSettings) -> Judge {
        let (alpha, beta) = (settings.false_abort / 2.0, settings.missed_detection);
        Judge {
            settings: settings.clone(),
            tests: [
                ErrorTest::new(settings.error_margin, alpha, beta),
                ErrorTest::new(settings.error_margin.max(GROSS_MARGIN), alpha, beta),
            ],
            unreachable: 0,
            passed_error_test: false,
            latency: LatencyCheck::TooFew(0),
        }
    }

    /// The sensitive test's statistic (for display).
    pub fn log_likelihood_ratio(&self) -> f64 {
        self.tests[0].llr
    }

    /// True once the canary has shown, with enough evidence, that it errs no more than stable.
    pub fn passed_error_test(&self) -> bool {
        self.passed_error_test
    }

    /// Takes in new evidence and gives the verdict.
    pub fn observe(&mut self, evidence: &Evidence) -> Verdict {
        if let Some(finding) = self.unreachable(evidence) {
            return Verdict::Bad(finding);
        }
        if let Some(finding) = self.error_rate(evidence) {
            return Verdict::Bad(finding);
        }
        match self.latency(evidence) {
            LatencyCheck::Bad(finding) => Verdict::Bad(finding),
            LatencyCheck::Fine if self.passed_error_test => Verdict::Healthy,
            _ => Verdict::Inconclusive,
        }
    }

    fn unreachable(&mut self, evidence: &Evidence) -> Option<Finding> {
        if !evidence.canary_all_refusing {
            self.unreachable = 0;
            return None;
        }
        self.unreachable += evidence.canary_new_unreachable;
        (self.unreachable >= self.settings.unreachable_after).then(|| Finding {
            summary: format!(
                "every canary endpoint refuses connections ({} failed connections)",
                self.unreachable
            ),
            ..self.finding(Rule::Unreachable, evidence)
        })
    }

    fn error_rate(&mut self, evidence: &Evidence) -> Option<Finding> {
        let requests = evidence.canary_new_requests;
        let errors = evidence.canary_new_errors.min(requests);
        if requests == 0 {
            return None;
        }
        let p0 = stable_rate_bound(&evidence.stable_window);
        let crossed = self
            .tests
            .iter_mut()
            .map(|test| test.add(requests, errors, p0))
            .collect::<Vec<_>>();
        self.passed_error_test |= self.tests[0].at_lower();
        let index = crossed.iter().position(|&c| c)?;
        let test = &self.tests[index];
        let rate = test.errors as f64 / test.requests.max(1) as f64;
        Some(Finding {
            summary: format!(
                "canary error rate {:.2}% over {} requests against stable {:.2}% (bad at +{:.0} points)",
                rate * 100.0,
                test.requests,
                evidence.stable_window.error_rate() * 100.0,
                test.margin * 100.0
            ),
            canary_requests: test.requests,
            canary_errors: test.errors,
            canary_error_rate: rate,
            log_likelihood_ratio: test.llr,
            boundary: test.upper,
            ..self.finding(Rule::ErrorRate, evidence)
        })
    }

    /// Judges latency when both sides bring a fresh p99; otherwise the last judgment stands.
    fn latency(&mut self, evidence: &Evidence) -> LatencyCheck {
        let (canary, stable) = (&evidence.canary_window, &evidence.stable_window);
        let (Some(canary_p99), Some(stable_p99)) = (canary.p99, stable.p99) else {
            return self.latency.clone();
        };
        let min = self.settings.latency_min_samples;
        let slower = canary_p99.as_secs_f64()
            > stable_p99.as_secs_f64() * self.settings.latency_ratio
            && canary_p99.saturating_sub(stable_p99) >= self.settings.latency_min_increase;
        self.latency = match (canary.requests < min || stable.requests < min, slower, &self.latency) {
            (true, _, _) => LatencyCheck::TooFew(0),
            (false, false, _) => LatencyCheck::Fine,
            (false, true, LatencyCheck::TooFew(streak)) if streak + 1 < LATENCY_PERSISTENCE => LatencyCheck::TooFew(streak + 1),
            (false, true, LatencyCheck::Fine) if LATENCY_PERSISTENCE > 1 => LatencyCheck::TooFew(1),
            (false, true, _) => LatencyCheck::Bad(Finding {
                summary: format!(
                    "canary p99 {:.1} ms against stable {:.1} ms (bad above {:.2}x) over {} requests",
                    canary_p99.as_secs_f64() * 1e3,
                    stable_p99.as_secs_f64() * 1e3,
                    self.settings.latency_ratio,
                    canary.requests
                ),
                ..self.finding(Rule::Latency, evidence)
            }),
        };
        self.latency.clone()
    }

    fn finding(&self, rule: Rule, evidence: &Evidence) -> Finding {
        let (canary, stable) = (&evidence.canary_window, &evidence.stable_window);
        Finding {
            rule,
            summary: String::new(),
            canary_requests: canary.requests,
            canary_errors: canary.errors,
            canary_error_rate: canary.error_rate(),
            stable_error_rate: stable.error_rate(),
            canary_p99_ms: canary.p99.unwrap_or_default().as_secs_f64() * 1e3,
            stable_p99_ms: stable.p99.unwrap_or_default().as_secs_f64() * 1e3,
            log_likelihood_ratio: self.tests[0].llr,
            boundary: self.tests[0].upper,
        }
    }
}

/// Stable's error rate at an upper confidence bound (about two standard errors), so that
/// stable's own sampling noise cannot make a healthy canary look worse.
fn stable_rate_bound(stable: &Side) -> f64 {
    let n = stable.requests as f64;
    let rate = (stable.errors as f64 + 0.5) / (n + 1.0);
    let upper_bound = rate + 2.0 * (rate * (1.0 - rate) / (n + 1.0)).sqrt();
    upper_bound.clamp(0.0005, 0.5)
}

/// Where latency stands: not judgeable yet (or slower for this many fresh judgments in a
/// row, short of the persistence needed), fine, or bad.
#[derive(Debug, Clone)]
enum LatencyCheck {
    TooFew(u32),
    Fine,
    Bad(Finding),
}
