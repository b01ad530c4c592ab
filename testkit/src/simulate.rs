//! Seeded simulation of canary and stable traffic through the judge: deterministic, fast,
//! and the same code the unit tests and the time-to-verdict report use.

use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::time::Duration;
use switchyard::config::GuardSettings;
use switchyard::guard::judge::{Evidence, Judge, Rule, Side, Verdict};

/// The traffic of one simulated run.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub stable_rps: f64,
    pub canary_rps: f64,
    pub stable_error_rate: f64,
    /// The canary errs like stable until `onset`, then at this rate.
    pub canary_error_rate: f64,
    /// Median latency of stable; latencies are log-normal with a fixed spread.
    pub stable_median: Duration,
    /// Canary latency as a multiple of stable's, from `onset` on.
    pub canary_latency_factor: f64,
    /// When the canary turns bad (verdict times are measured from here).
    pub onset: Duration,
    pub horizon: Duration,
}

impl Scenario {
    /// 1,000 requests/s with the canary at 10%, 1% errors and 20 ms on both sides.
    pub fn healthy() -> Scenario {
        Scenario {
            stable_rps: 900.0,
            canary_rps: 100.0,
            stable_error_rate: 0.01,
            canary_error_rate: 0.01,
            stable_median: Duration::from_millis(20),
            canary_latency_factor: 1.0,
            onset: Duration::ZERO,
            horizon: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// When the first bad verdict came after the onset, and by which rule.
    pub bad_at: Option<(Duration, Rule)>,
    /// When the first healthy verdict came.
    pub healthy_at: Option<Duration>,
}

const TICK: Duration = Duration::from_millis(100);
const SPREAD: f64 = 0.5;

struct Window {
    ticks: VecDeque<(u64, u64, Histogram<u64>)>,
    length: usize,
    requests: u64,
    errors: u64,
    latency: Histogram<u64>,
}

impl Window {
    fn new(length: usize) -> Window {
        Window {
            ticks: VecDeque::new(),
            length,
            requests: 0,
            errors: 0,
            latency: histogram(),
        }
    }

    fn push(&mut self, requests: u64, errors: u64, latency: Histogram<u64>) {
        self.requests += requests;
        self.errors += errors;
        let _ = self.latency.add(&latency);
        self.ticks.push_back((requests, errors, latency));
        if self.ticks.len() > self.length {
            if let Some((r, e, h)) = self.ticks.pop_front() {
                self.requests -= r;
                self.errors -= e;
                let _ = self.latency.subtract(&h);
            }
        }
    }

    fn side(&self) -> Side {
        Side {
            requests: self.requests,
            errors: self.errors,
            p99: Some(Duration::from_micros(self.latency.value_at_quantile(0.99))),
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 2).unwrap_or_else(|_| unreachable!())
}

/// Draws one tick of one side: (requests, errors, latencies).
fn draw(
    rng: &mut fastrand::Rng,
    rps: f64,
    error_rate: f64,
    median: Duration,
    carry: &mut f64,
) -> (u64, u64, Histogram<u64>) {
    *carry += rps * TICK.as_secs_f64();
    let requests = carry.floor() as u64;
    *carry -= requests as f64;
    let mut errors = 0;
    let mut latency = histogram();
    for _ in 0..requests {
        if rng.f64() < error_rate {
            errors += 1;
        }
        // Box-Muller: a standard normal from two uniforms.
        let z = (-2.0 * rng.f64().max(f64::MIN_POSITIVE).ln()).sqrt()
            * (std::f64::consts::TAU * rng.f64()).cos();
        let micros = median.as_micros() as f64 * (SPREAD * z).exp();
        latency.saturating_record(micros.max(1.0) as u64);
    }
    (requests, errors, latency)
}

/// Runs one scenario through a fresh judge; stops at the first bad verdict.
pub fn run(scenario: &Scenario, settings: &GuardSettings, seed: u64) -> RunResult {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut judge = Judge::new(settings);
    let length = (settings.window.as_millis() / TICK.as_millis()).max(1) as usize;
    let (mut stable, mut canary) = (Window::new(length), Window::new(length));
    let (mut stable_carry, mut canary_carry) = (0.0, 0.0);
    let mut result = RunResult {
        bad_at: None,
        healthy_at: None,
    };
    let ticks = (scenario.horizon.as_millis() / TICK.as_millis()) as u32;
    for tick in 1..=ticks {
        let now = TICK * tick;
        let (sr, se, sl) = draw(
            &mut rng,
            scenario.stable_rps,
            scenario.stable_error_rate,
            scenario.stable_median,
            &mut stable_carry,
        );
        let bad = now > scenario.onset;
        let (rate, factor) = match bad {
            true => (scenario.canary_error_rate, scenario.canary_latency_factor),
            false => (scenario.stable_error_rate, 1.0),
        };
        let median = scenario.stable_median.mul_f64(factor);
        let (cr, ce, cl) = draw(
            &mut rng,
            scenario.canary_rps,
            rate,
            median,
            &mut canary_carry,
        );
        stable.push(sr, se, sl);
        canary.push(cr, ce, cl);
        let evidence = Evidence {
            canary_new_requests: cr,
            canary_new_errors: ce,
            canary_window: canary.side(),
            stable_window: stable.side(),
            ..Evidence::default()
        };
        match judge.observe(&evidence) {
            Verdict::Bad(finding) => {
                result.bad_at = Some((now.saturating_sub(scenario.onset), finding.rule));
                return result;
            }
            Verdict::Healthy if result.healthy_at.is_none() => result.healthy_at = Some(now),
            _ => {}
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GuardSettings {
        GuardSettings::default()
    }

    #[test]
    fn healthy_canaries_are_not_cut_back() {
        let settings = settings();
        let runs = 100;
        let aborted = (0..runs)
            .filter(|&seed| run(&Scenario::healthy(), &settings, seed).bad_at.is_some())
            .count();
        assert_eq!(
            aborted, 0,
            "{aborted} of {runs} healthy one-minute runs were cut back"
        );
    }

    #[test]
    fn false_abort_rate_of_one_test_stays_under_its_bound() {
        // A loose bound (5%) makes false aborts common enough to count; each run is one
        // test that ends at its first verdict.
        let settings = GuardSettings {
            false_abort: 0.05,
            latency_min_samples: u64::MAX,
            ..settings()
        };
        let scenario = Scenario {
            horizon: Duration::from_secs(30),
            ..Scenario::healthy()
        };
        let runs = 1000;
        let mut aborted = 0;
        for seed in 0..runs {
            let mut judge = Judge::new(&settings);
            let mut rng = fastrand::Rng::with_seed(seed);
            loop {
                let errors = (0..10)
                    .filter(|_| rng.f64() < scenario.canary_error_rate)
                    .count() as u64;
                let stable = Side {
                    requests: 27_000,
                    errors: 270,
                    p99: None,
                };
                let verdict = judge.observe(&Evidence {
                    canary_new_requests: 10,
                    canary_new_errors: errors,
                    stable_window: stable,
                    ..Evidence::default()
                });
                if matches!(verdict, Verdict::Bad(_)) {
                    aborted += 1;
                    break;
                }
                // The test ended healthy.
                if judge.passed_error_test() {
                    break;
                }
            }
        }
        let rate = aborted as f64 / runs as f64;
        assert!(rate <= 0.05, "false-abort rate {rate} above the 5% bound");
    }

    #[test]
    fn bad_canaries_are_caught() {
        let settings = settings();
        for (extra, rule) in [(0.02, Rule::ErrorRate), (0.05, Rule::ErrorRate)] {
            let scenario = Scenario {
                canary_error_rate: 0.01 + extra,
                ..Scenario::healthy()
            };
            let caught = (0..50)
                .filter(|&seed| {
                    run(&scenario, &settings, seed).bad_at.map(|(_, r)| r) == Some(rule)
                })
                .count();
            assert!(
                caught >= 45,
                "+{extra}: caught {caught} of 50 within a minute"
            );
        }
        let slow = Scenario {
            canary_latency_factor: 2.0,
            ..Scenario::healthy()
        };
        let result = run(&slow, &settings, 7);
        assert_eq!(
            result.bad_at.map(|(_, rule)| rule),
            Some(Rule::Latency),
            "{result:?}"
        );
    }

    #[test]
    fn a_canary_turning_to_fail_one_in_five_is_cut_within_a_second() {
        let scenario = Scenario {
            canary_error_rate: 0.20,
            onset: Duration::from_secs(20),
            ..Scenario::healthy()
        };
        for seed in 0..50 {
            let (at, rule) = run(&scenario, &settings(), seed).bad_at.expect("caught");
            assert_eq!(rule, Rule::ErrorRate);
            assert!(
                at <= Duration::from_secs(1),
                "seed {seed}: caught after {at:?}"
            );
        }
    }

    #[test]
    fn low_traffic_stays_inconclusive() {
        let scenario = Scenario {
            stable_rps: 50.0,
            canary_rps: 0.5,
            ..Scenario::healthy()
        };
        for seed in 0..20 {
            let result = run(&scenario, &settings(), seed);
            assert_eq!(result.bad_at, None);
            assert_eq!(
                result.healthy_at, None,
                "seed {seed}: healthy on 30 requests"
            );
        }
    }
}
