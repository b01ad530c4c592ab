//! Confirming probes. When a request to a guarded version finds its connection refused or
//! reset, the guard does not wait for more users to be unlucky: it connects to every
//! endpoint of that version itself, a few rounds a few milliseconds apart. Each round in
//! which every endpoint refused counts as one more failed connection for the unreachable
//! rule, so a canary that went down is cut back within milliseconds even at low traffic,
//! while a canary that is back up by the next round is not condemned by one refusal.

use crate::dataplane::endpoint::Endpoint;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time between rounds: long enough that one refusal is not simply counted twice.
pub const ROUND_SPACING: Duration = Duration::from_millis(5);

/// What one round found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Every endpoint refused; more rounds may follow.
    AllRefused,
    /// The probe is over: an endpoint accepted, or the rounds ran out.
    Done,
}

/// Runs up to `rounds` rounds, telling `report` after each; stops at the first round in
/// which an endpoint accepted. A refusing endpoint is also left out of the rotation,
/// exactly as if a request had been refused.
pub async fn probe(endpoints: &[Arc<Endpoint>], rounds: u64, mut report: impl FnMut(Round)) {
    for round in 0..rounds {
        if endpoints.is_empty() {
            break;
        }
        if round > 0 {
            tokio::time::sleep(ROUND_SPACING).await;
        }
        let mut all_refused = true;
        for endpoint in endpoints {
            if endpoint.pool.accepts().await {
                all_refused = false;
                break;
            }
            endpoint.mark_refused(Instant::now());
        }
        if !all_refused {
            break;
        }
        report(Round::AllRefused);
    }
    report(Round::Done);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::endpoint::{EndpointRegistry, EndpointSettings};
    use tokio::net::TcpListener;

    fn registry() -> EndpointRegistry {
        EndpointRegistry::new(EndpointSettings {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            backoff: Duration::from_secs(5),
        })
    }

    /// An address on loopback where nothing listens (bound, then let go).
    async fn closed_port() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    async fn rounds_of(endpoints: &[Arc<Endpoint>], rounds: u64) -> Vec<Round> {
        let mut seen = Vec::new();
        probe(endpoints, rounds, |round| seen.push(round)).await;
        seen
    }

    #[tokio::test]
    async fn every_round_in_which_all_endpoints_refuse_is_reported_and_they_back_off() {
        let registry = registry();
        let endpoints = [
            registry.get(closed_port().await),
            registry.get(closed_port().await),
        ];
        let seen = rounds_of(&endpoints, 3).await;
        assert_eq!(
            seen,
            [
                Round::AllRefused,
                Round::AllRefused,
                Round::AllRefused,
                Round::Done
            ]
        );
        let now = Instant::now();
        assert!(endpoints.iter().all(|e| e.is_backing_off(now)));
    }

    #[tokio::test]
    async fn one_endpoint_that_accepts_ends_the_probe_without_a_refused_round() {
        let registry = registry();
        let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoints = [
            registry.get(closed_port().await),
            registry.get(live.local_addr().unwrap()),
        ];
        assert_eq!(rounds_of(&endpoints, 3).await, [Round::Done]);
        assert!(!endpoints[1].is_backing_off(Instant::now()));
    }

    #[tokio::test]
    async fn a_version_without_endpoints_is_never_counted_as_refusing() {
        assert_eq!(rounds_of(&[], 3).await, [Round::Done]);
    }
}
