//! The demo's timeline: what the demo does at set times (the script), and what it saw the
//! proxy do (the story). The proxy's own reactions (the guard cutting a bad canary back)
//! are not scripted: the revision watch notices every new routing table, whoever made it.

use crate::routing::RoutingTable;
use serde::Serialize;
use std::time::Duration;

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

/// Notices each new routing table and says how the split changed.
#[derive(Debug, Default)]
pub struct RevisionWatch {
    revision: u64,
    split: String,
}

impl RevisionWatch {
    /// A sentence when the table's revision changed since the last look.
    pub fn look(&mut self, table: &RoutingTable) -> Option<String> {
        if table.revision == self.revision {
            return None;
        }
        let split = describe_split(table);
        let text = if self.revision == 0 {
            format!("routing revision {}: {split}", table.revision)
        } else {
            format!(
                "routing revision {}: {} -> {split}",
                table.revision, self.split
            )
        };
        self.revision = table.revision;
        self.split = split;
        Some(text)
    }
}

/// "blue 90%, canary 10%" (versions without traffic left out).
pub fn describe_split(table: &RoutingTable) -> String {
    let mut parts = Vec::new();
    for service in table.services() {
        for (index, version) in service.versions.iter().enumerate() {
            let share = service.share_of(index);
            if share > 0.0 {
                parts.push(format!("{} {}", version.name, percent(share)));
            }
        }
    }
    parts.join(", ")
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
