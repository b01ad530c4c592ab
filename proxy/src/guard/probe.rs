//! Confirming probes. When a request to a guarded version finds its connection refused or
//! reset, the guard does not wait for more users to be unlucky: it connects to every
//! endpoint of that version itself, a few rounds `ROUND_SPACING` apart. Each round in
//! which every endpoint refused counts as one more failed connection for the unreachable
//! rule, so a canary that went down is cut back within a few tens of milliseconds even at
//! low traffic, while one that is back up by the next round is not condemned.

use crate::upstream::endpoint::Endpoint;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time before each round, the first included: a round right after the user's refusal
/// would only count that same moment twice. With the default `unreachable_after` of 3,
/// a version must refuse for about 20 ms (one user request and two rounds) to be cut.
pub const ROUND_SPACING: Duration = Duration::from_millis(10);

/// What one round found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Every endpoint refused; more rounds may follow.
    AllRefused,
    /// The probe is over: an endpoint accepted, an attempt was inconclusive (a timeout,
    /// or the proxy short of sockets), or the rounds ran out.
    Done,
}

/// One version's probing, as the guard loop keeps it: at most one probe at a time, each
/// with an id so that a report from an earlier probe (of a version since cut back and
/// given traffic again) is never taken for the current one's.
#[derive(Debug, Default)]
pub struct Probing {
    running: Option<u64>,
    /// Connections were lost while a probe ran: probe again once it ends, so a version
    /// that dies just after a probe found it up is not left to the users to discover.
    again: bool,
    /// Rounds in which every endpoint refused, not yet shown to the judge.
    refused_rounds: u64,
}

impl Probing {
    /// At each look, with whether the version lost connections since the last one:
    /// the id of a probe to start now, if any (`last_id` counts ids across versions).
    pub fn start(&mut self, lost: bool, last_id: &mut u64) -> Option<u64> {
        if !(lost || self.again) {
            return None;
        }
        if self.running.is_some() {
            self.again = true;
            return None;
        }
        self.again = false;
        *last_id += 1;
        self.running = Some(*last_id);
        self.running
    }

    pub fn report(&mut self, id: u64, round: Round) {
        if self.running != Some(id) {
            return;
        }
        match round {
            Round::AllRefused => self.refused_rounds += 1,
            Round::Done => self.running = None,
        }
    }

    /// Refused rounds since the last call.
    pub fn take_refused_rounds(&mut self) -> u64 {
        std::mem::take(&mut self.refused_rounds)
    }
}

/// Runs up to `rounds` rounds, telling `report` after each; stops at the first round in
/// which an endpoint did not refuse. A refusing endpoint is also left out of the
/// rotation, exactly as if a request had been refused.
pub async fn probe(endpoints: &[Arc<Endpoint>], rounds: u64, mut report: impl FnMut(Round)) {
    for _ in 0..rounds {
        if endpoints.is_empty() {
            break;
        }
        tokio::time::sleep(ROUND_SPACING).await;
        let mut all_refused = true;
        for endpoint in endpoints {
            match endpoint.accepts().await {
                Some(false) => endpoint.mark_refused(Instant::now()),
                Some(true) => {
                    // Back in the rotation: it is not refusing any more.
                    endpoint.mark_healthy();
                    all_refused = false;
                    break;
                }
                None => {
                    all_refused = false;
                    break;
                }
            }
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
    use crate::upstream::connect::Dial;
    use crate::upstream::endpoint::{EndpointRegistry, EndpointSettings};
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
            registry.get(Dial::plain(closed_port().await)),
            registry.get(Dial::plain(closed_port().await)),
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
            registry.get(Dial::plain(closed_port().await)),
            registry.get(Dial::plain(live.local_addr().unwrap())),
        ];
        endpoints[1].mark_refused(Instant::now());
        assert_eq!(rounds_of(&endpoints, 3).await, [Round::Done]);
        assert!(
            !endpoints[1].is_backing_off(Instant::now()),
            "an endpoint seen accepting is back in the rotation"
        );
    }

    #[test]
    fn one_probe_at_a_time_and_losses_meanwhile_bring_another() {
        let mut ids = 0;
        let mut probing = Probing::default();
        assert_eq!(probing.start(false, &mut ids), None, "no loss, no probe");
        assert_eq!(probing.start(true, &mut ids), Some(1));
        assert_eq!(probing.start(true, &mut ids), None, "one at a time");
        probing.report(1, Round::AllRefused);
        probing.report(1, Round::Done);
        assert_eq!(probing.take_refused_rounds(), 1);
        assert_eq!(probing.take_refused_rounds(), 0);
        // The loss seen while probe 1 ran brings probe 2 without a new loss.
        assert_eq!(probing.start(false, &mut ids), Some(2));
        probing.report(2, Round::Done);
        assert_eq!(probing.start(false, &mut ids), None);
    }

    #[test]
    fn a_report_from_an_earlier_probe_is_ignored() {
        let mut ids = 7;
        let mut probing = Probing::default();
        assert_eq!(probing.start(true, &mut ids), Some(8));
        probing.report(3, Round::AllRefused);
        probing.report(3, Round::Done);
        assert_eq!(probing.take_refused_rounds(), 0);
        assert_eq!(probing.start(true, &mut ids), None, "probe 8 still runs");
    }

    #[tokio::test]
    async fn a_version_without_endpoints_is_never_counted_as_refusing() {
        assert_eq!(rounds_of(&[], 3).await, [Round::Done]);
    }
}
