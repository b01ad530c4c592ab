//! What a webhook receives for one journaled revision: a typed event, as JSON or as a
//! Slack-compatible message (`{"text": ...}`, which Slack, Mattermost and Rocket.Chat take).

use crate::control::record::CheckReport;
use crate::control::record::{ChangeKind, RevisionRecord};
use crate::routing::ServiceState;
use serde::Serialize;
use std::collections::BTreeMap;

/// The event types a receiver dispatches on (the `event` field and `X-Switchyard-Event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The routing changed (an operator, a reload, a rollout).
    Revision,
    /// The guard (or another judge) took traffic away from a version: the revision carries
    /// its evidence.
    Incident,
    /// The checks of the version taking the traffic, run after a change.
    Validation,
    /// Someone must act: a version was found bad but the cutback is held (the return point
    /// fails its checks), or the fleet log went back and was carried on from a cache.
    Alarm,
    /// A rollout step waits for `ctl approve`.
    ApprovalNeeded,
}

impl EventType {
    pub fn of(record: &RevisionRecord) -> EventType {
        match record.kind {
            ChangeKind::Validated => EventType::Validation,
            ChangeKind::CutbackHeld | ChangeKind::FleetLogWentBack => EventType::Alarm,
            ChangeKind::ApprovalNeeded => EventType::ApprovalNeeded,
            _ if record.evidence.is_some() => EventType::Incident,
            _ => EventType::Revision,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            EventType::Revision => "revision",
            EventType::Incident => "incident",
            EventType::Validation => "validation",
            EventType::Alarm => "alarm",
            EventType::ApprovalNeeded => "approval_needed",
        }
    }
}

/// The JSON event.
#[derive(Debug, Serialize)]
struct HookEvent<'r> {
    event: &'static str,
    revision: u64,
    /// The journal line's hash: with `revision`, what a receiver deduplicates on.
    hash: &'r str,
    time: &'r str,
    service: &'r str,
    kind: &'static str,
    actor: &'r str,
    reason: &'r str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    forced: bool,
    /// The routing after the change; absent when the service was removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    routing: Option<RoutingView<'r>>,
    /// The judge's proof, on incidents and alarms (the guard's verdict, with its numbers).
    #[serde(skip_serializing_if = "Option::is_none")]
    evidence: Option<&'r serde_json::Value>,
    /// The checks the gate ran, or the validation's.
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<&'r CheckReport>,
}

/// What a receiver learns of the routing: who gets traffic, not the topology behind it
/// (runtime versions' endpoints and addresses stay inside).
#[derive(Debug, Serialize)]
struct RoutingView<'r> {
    stable: &'r str,
    weights: &'r BTreeMap<String, u64>,
    latched: bool,
    frozen: bool,
}

impl<'r> RoutingView<'r> {
    fn of(state: &'r ServiceState) -> RoutingView<'r> {
        RoutingView {
            stable: &state.stable,
            weights: &state.weights,
            latched: state.latched,
            frozen: state.frozen,
        }
    }
}

pub fn json(record: &RevisionRecord) -> Vec<u8> {
    let event = HookEvent {
        event: EventType::of(record).label(),
        revision: record.revision,
        hash: &record.hash,
        time: &record.time,
        service: &record.service,
        kind: record.kind.label(),
        actor: &record.actor,
        reason: &record.reason,
        forced: record.forced,
        routing: record.new.as_ref().map(RoutingView::of),
        evidence: record.evidence.as_ref(),
        checks: record.checks.as_ref(),
    };
    serde_json::to_vec(&event).unwrap_or_default()
}

/// One line a person reads in a channel: what happened, to what, by whom, why.
pub fn slack(record: &RevisionRecord) -> Vec<u8> {
    let event = EventType::of(record);
    let mark = match event {
        EventType::Incident => ":rotating_light: ",
        EventType::Alarm => ":warning: ",
        EventType::ApprovalNeeded => ":raised_hand: ",
        EventType::Validation if record.checks.as_ref().is_some_and(|c| !c.passed) => ":x: ",
        EventType::Revision | EventType::Validation => "",
    };
    let routing = record.new.as_ref().map_or(String::new(), |state| {
        let weights: Vec<String> = state
            .weights
            .iter()
            .filter(|(_, &weight)| weight > 0)
            .map(|(version, weight)| format!("{version}={weight}"))
            .collect();
        format!(" → stable {}, {}", state.stable, weights.join(" "))
    });
    let forced = if record.forced { " (forced)" } else { "" };
    let text = format!(
        "{mark}switchyard {} {}: {}{forced} by {} (revision {}): {}{routing}",
        event.label(),
        record.service,
        record.kind.label(),
        record.actor,
        record.revision,
        record.reason,
    );
    serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: &str, evidence: Option<serde_json::Value>) -> RevisionRecord {
        serde_json::from_value(serde_json::json!({
            "revision": 7, "time": "2026-12-02T18:00:00.000Z", "time_ms": 0,
            "service": "shop", "actor": "guard", "reason": "why", "kind": kind,
            "old": null, "new": null, "evidence": evidence, "prev": "",
        }))
        .unwrap()
    }

    #[test]
    fn each_record_has_the_event_type_a_receiver_dispatches_on() {
        let verdict = Some(serde_json::json!({"rule": "error_rate"}));
        for (kind, evidence, expected) in [
            ("weights", None, "revision"),
            ("abort", None, "revision"),
            ("abort", verdict.clone(), "incident"),
            ("switch", verdict, "incident"),
            ("validated", None, "validation"),
            ("cutback_held", None, "alarm"),
            ("approval_needed", None, "approval_needed"),
            ("fleet_log_went_back", None, "alarm"),
            (
                "fleet_log_went_back",
                Some(serde_json::json!({"rule": "fleet_log_went_back"})),
                "alarm",
            ),
        ] {
            let record = record(kind, evidence);
            assert_eq!(EventType::of(&record).label(), expected, "{kind}");
            let body: serde_json::Value = serde_json::from_slice(&json(&record)).unwrap();
            assert_eq!(body["event"], expected);
            let text: serde_json::Value = serde_json::from_slice(&slack(&record)).unwrap();
            assert!(text["text"].as_str().unwrap().contains(expected), "{text}");
        }
    }
}
