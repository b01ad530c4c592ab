//! `[services.NAME.guard]`: how the canary is judged against stable. Every key has a
//! default, so a service without the section is guarded sensibly.

use super::HumanDuration;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardSection {
    pub enabled: bool,
    /// Error-rate increase over stable that counts as bad (0.02 = two points).
    pub error_margin: f64,
    /// Bound on the chance that a canary as good as stable is cut back, per test.
    pub false_abort: f64,
    /// Bound on the chance that a canary `error_margin` worse is passed as healthy.
    pub missed_detection: f64,
    /// Canary p99 over stable p99 that counts as bad...
    pub latency_ratio: f64,
    /// ...when it is also at least this much slower in absolute terms.
    pub latency_min_increase: HumanDuration,
    /// Requests each side needs in the window before latency is judged.
    pub latency_min_samples: u64,
    /// Recent traffic that latency and the stable baseline are read from.
    pub window: HumanDuration,
    /// How often the guard looks (it is also woken at once by connection failures).
    pub interval: HumanDuration,
    /// Failed connections to a canary whose endpoints all refuse before it is cut back.
    pub unreachable_after: u64,
    /// Retry failed idempotent canary requests on stable.
    pub retry: bool,
    /// Retries allowed as a fraction of the service's requests.
    pub retry_budget: f64,
    /// After `switch` or `promote`, how long the new stable is judged against the
    /// previous one's baseline (and switched back if bad).
    pub watch_after_switch: HumanDuration,
}

impl Default for GuardSection {
    fn default() -> Self {
        GuardSection {
            enabled: true,
            error_margin: 0.02,
            false_abort: 0.0001,
            missed_detection: 0.01,
            latency_ratio: 1.5,
            latency_min_increase: HumanDuration(Duration::from_millis(25)),
            latency_min_samples: 500,
            window: HumanDuration(Duration::from_secs(30)),
            interval: HumanDuration(Duration::from_millis(100)),
            unreachable_after: 3,
            retry: true,
            retry_budget: 0.2,
            watch_after_switch: HumanDuration(Duration::from_secs(600)),
        }
    }
}

/// Validated guard settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardSettings {
    pub enabled: bool,
    pub error_margin: f64,
    pub false_abort: f64,
    pub missed_detection: f64,
    pub latency_ratio: f64,
    pub latency_min_increase: Duration,
    pub latency_min_samples: u64,
    pub window: Duration,
    pub interval: Duration,
    pub unreachable_after: u64,
    pub retry: bool,
    pub retry_budget: f64,
    pub watch_after_switch: Duration,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSection::default().settings()
    }
}

impl GuardSection {
    /// Problems with the values, as messages naming the key.
    pub fn problems(&self, service: &str) -> Vec<String> {
        let key = |k: &str| format!("services.{service}.guard.{k}");
        let mut problems = Vec::new();
        let mut fraction = |name: &str, value: f64, low: f64, high: f64| {
            if !(value > low && value < high) {
                problems.push(format!(
                    "{} must be between {low} and {high} (exclusive), not {value}",
                    key(name)
                ));
            }
        };
        fraction("error_margin", self.error_margin, 0.0, 1.0);
        fraction("false_abort", self.false_abort, 0.0, 0.5);
        fraction("missed_detection", self.missed_detection, 0.0, 0.5);
        fraction("retry_budget", self.retry_budget, 0.0, 1.0);
        if self.latency_ratio <= 1.0 || !self.latency_ratio.is_finite() {
            problems.push(format!(
                "{} must be above 1.0, not {}",
                key("latency_ratio"),
                self.latency_ratio
            ));
        }
        if self.interval.0 < Duration::from_millis(10) || self.interval.0 > self.window.0 {
            problems.push(format!(
                "{} must be at least 10ms and at most the window",
                key("interval")
            ));
        }
        if self.window.0 > Duration::from_secs(60) {
            problems.push(format!(
                "{} can be at most 60s (telemetry keeps one minute)",
                key("window")
            ));
        }
        if self.unreachable_after == 0 {
            problems.push(format!("{} must be at least 1", key("unreachable_after")));
        }
        problems
    }

    pub fn settings(&self) -> GuardSettings {
        GuardSettings {
            enabled: self.enabled,
            error_margin: self.error_margin,
            false_abort: self.false_abort,
            missed_detection: self.missed_detection,
            latency_ratio: self.latency_ratio,
            latency_min_increase: self.latency_min_increase.0,
            latency_min_samples: self.latency_min_samples,
            window: self.window.0,
            interval: self.interval.0,
            unreachable_after: self.unreachable_after,
            retry: self.retry,
            retry_budget: self.retry_budget,
            watch_after_switch: self.watch_after_switch.0,
        }
    }
}
