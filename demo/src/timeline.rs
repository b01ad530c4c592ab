//! The demo's timeline: what the demo does at set times (the script), and what it saw the
//! proxy do (the story). The proxy's own reactions (the guard cutting a bad canary back)
//! are not scripted: the revision watch notices every new revision, whoever made it, and
//! says what it was.

use serde::Serialize;
use std::time::Duration;
use switchyard::control::record::RevisionRecord;
use switchyard::routing::ServiceState;

/// Error rate the canary is given when it turns bad.
pub const BAD_CANARY_ERROR_RATE: f64 = 0.3;

/// A scripted action.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// Green's home page breaks, and the demo tries to switch all traffic to it: the gate
    /// runs green's checks first and refuses.
    SwitchToBrokenGreen,
    /// The canary starts answering this fraction of requests with a 500.
    CanaryTurnsBad { error_rate: f64 },
}

#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub at: Duration,
    pub action: Action,
}

/// The script for a demo of `duration`: a refused switch at 3 s (or 15% of the way), the
/// canary turns bad at 8 s (or 40% of the way), leaving time to see what follows.
pub fn script(duration: Duration) -> Vec<Step> {
    let at = Duration::from_secs(8).min(duration.mul_f64(0.4));
    vec![
        Step {
            at: Duration::from_secs(3).min(duration.mul_f64(0.15)),
            action: Action::SwitchToBrokenGreen,
        },
        Step {
            at,
            action: Action::CanaryTurnsBad {
                error_rate: BAD_CANARY_ERROR_RATE,
            },
        },
    ]
}

/// One line of "what happened".
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at_secs: f64,
    pub text: String,
}

/// Everything that happened, in order.
#[derive(Debug, Default, Serialize)]
pub struct Story {
    pub events: Vec<Event>,
}

impl Story {
    pub fn tell(&mut self, at: Duration, text: String) -> &Event {
        self.events.push(Event {
            at_secs: at.as_secs_f64(),
            text,
        });
        &self.events[self.events.len() - 1]
    }
}

/// Notices each new revision and says what it was: a routing change (its kind, who made
/// it, the split before and after), or a revision that left the routing as it was (a
/// validation, an alarm).
#[derive(Debug, Default)]
pub struct RevisionWatch {
    revision: u64,
}

impl RevisionWatch {
    /// A sentence for each revision in `history` since the last look.
    pub fn look(&mut self, history: &[RevisionRecord]) -> Vec<String> {
        let mut said = Vec::new();
        let seen = self.revision;
        for record in history.iter().filter(|r| r.revision > seen) {
            let what = format!("{} by {}", record.kind.label(), record.actor);
            let split = |state: &Option<ServiceState>| state.as_ref().map(describe_state);
            said.push(match (split(&record.old), split(&record.new)) {
                (None, Some(new)) => {
                    format!("routing revision {} ({what}): {new}", record.revision)
                }
                (Some(old), Some(new)) if old != new => format!(
                    "routing revision {} ({what}): {old} -> {new}",
                    record.revision
                ),
                _ => format!("revision {} ({what}): routing unchanged", record.revision),
            });
            self.revision = record.revision;
        }
        said
    }
}

/// "blue 90%, canary 10%" for a service's routing (versions without traffic left out; a
/// latched service sends everything to stable, whatever its weights say).
fn describe_state(state: &ServiceState) -> String {
    if state.latched {
        return format!("{} 100% (latched)", state.stable);
    }
    let total: u64 = state.weights.values().sum();
    let parts: Vec<String> = state
        .weights
        .iter()
        .filter(|(_, &weight)| weight > 0)
        .map(|(name, &weight)| format!("{name} {}", percent(weight as f64 / total as f64)))
        .collect();
    match parts.is_empty() {
        true => format!("{} 100%", state.stable),
        false => parts.join(", "),
    }
}

/// A share as a short percentage: "10%", "0.1%".
pub fn percent(share: f64) -> String {
    let value = share * 100.0;
    if value == 0.0 || value >= 10.0 || (value - value.round()).abs() < 0.05 {
        format!("{value:.0}%")
    } else {
        format!("{value:.1}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canary_turns_bad_with_time_left_to_see_it() {
        let long = script(Duration::from_secs(20));
        assert_eq!(long[0].at, Duration::from_secs(3));
        assert_eq!(long[0].action, Action::SwitchToBrokenGreen);
        assert_eq!(long[1].at, Duration::from_secs(8));
        let short = script(Duration::from_secs(4));
        assert!(short[0].at < short[1].at);
        assert!(short[1].at < Duration::from_secs(2));
    }

    #[test]
    fn percentages_read_naturally() {
        assert_eq!(percent(0.9), "90%");
        assert_eq!(percent(0.1), "10%");
        assert_eq!(percent(0.001), "0.1%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.05), "5%");
    }
}
