//! Whose fault a passed gRPC deadline is. The client chose it: a call that ran out of
//! its time is the client's doing, unless the version took longer than it recently
//! takes for nearly every call (its p99), which is the version being slow. Slowness
//! itself is the latency test's to judge, on the calls that finished.

use crate::telemetry::{ClientFault, VersionStats};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How far back "recently" reaches.
const RECENT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct DeadlineJudge {
    deadline: Duration,
    /// The service's stable version: its latency stands in while this version has none.
    stable: Arc<VersionStats>,
    /// When neither has recent calls: the proxy's own `response_headers` timeout.
    fallback: Duration,
}

impl DeadlineJudge {
    pub fn new(deadline: Duration, stable: Arc<VersionStats>, fallback: Duration) -> Self {
        DeadlineJudge {
            deadline,
            stable,
            fallback,
        }
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The deadline outlasted what `version` recently needed: the version is to blame.
    /// Runs only when a deadline passes; the request path never merges histograms.
    pub fn version_was_slow(&self, version: &VersionStats, now: Instant) -> bool {
        self.deadline > self.baseline(version, now)
    }

    fn baseline(&self, version: &VersionStats, now: Instant) -> Duration {
        [version, &*self.stable]
            .into_iter()
            .map(|stats| stats.window(RECENT, now))
            .find(|recent| recent.requests() > 0)
            .map_or(self.fallback, |recent| {
                Duration::from_micros(recent.latency.value_at_quantile(0.99))
            })
    }
}

/// A call that failed `elapsed` after it started, when its client's deadline had passed
/// (`judge`: `None` when the proxy chose it), is the client's fault: counted as such on
/// `version`, and not as an outcome. (An upstream that saw the deadline pass may answer
/// DEADLINE_EXCEEDED or just reset the stream.)
pub fn clients_deadline(
    judge: Option<&DeadlineJudge>,
    version: &VersionStats,
    elapsed: Duration,
) -> bool {
    let clients = judge.is_some_and(|judge| {
        elapsed >= judge.deadline && !judge.version_was_slow(version, Instant::now())
    });
    if clients {
        version.record_client_fault(ClientFault::Deadline);
    }
    clients
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{Outcome, Telemetry};

    #[test]
    fn a_deadline_shorter_than_the_versions_p99_is_the_clients_fault() {
        let telemetry = Telemetry::new(1);
        let canary = telemetry.version("api", "canary");
        let stable = telemetry.version("api", "blue");
        let now = Instant::now();
        for _ in 0..100 {
            canary.record(Outcome::Status2xx, Duration::from_millis(20), now);
        }
        let judge =
            |deadline| DeadlineJudge::new(deadline, stable.clone(), Duration::from_secs(30));
        assert!(!judge(Duration::from_nanos(1)).version_was_slow(&canary, now));
        assert!(!judge(Duration::from_millis(5)).version_was_slow(&canary, now));
        assert!(judge(Duration::from_millis(500)).version_was_slow(&canary, now));
    }

    #[test]
    fn without_history_the_stable_version_then_the_proxy_timeout_is_the_yardstick() {
        let telemetry = Telemetry::new(1);
        let canary = telemetry.version("api", "canary");
        let stable = telemetry.version("api", "blue");
        let now = Instant::now();
        let judge =
            |deadline| DeadlineJudge::new(deadline, stable.clone(), Duration::from_secs(30));
        assert!(!judge(Duration::from_secs(5)).version_was_slow(&canary, now));
        assert!(judge(Duration::from_secs(31)).version_was_slow(&canary, now));
        stable.record(Outcome::Status2xx, Duration::from_millis(10), now);
        assert!(judge(Duration::from_secs(5)).version_was_slow(&canary, now));
        assert!(!judge(Duration::from_millis(1)).version_was_slow(&canary, now));
    }
}
