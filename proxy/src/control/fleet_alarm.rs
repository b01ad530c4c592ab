//! The fleet log went back (NATS lost its store, or an old backup was restored) and was
//! carried on from a member's cache: every service gets one `fleet_log_went_back` revision
//! (routing as it is), which the webhooks deliver as an `alarm`. Recorded once per
//! occurrence, by the member that carried the log on when it had seen the log go back or
//! found it holding less than its cache (an empty log at start may be a new fleet's, seeded
//! from a standalone journal: no alarm); kept until recorded, so a join cut short by NATS
//! going away again tries it at the next.

use super::record::{ChangeKind, Origin};
use super::writer::Writer;

/// Where the log went back to, and what this instance had read of it (an alarm for this
/// occurrence comes after that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WentBack {
    pub log_held: u64,
    pub cache_had: u64,
}

impl Writer {
    /// Records the alarm for a log that went back, if one is waiting.
    pub(super) async fn record_went_back(&self) {
        let Some(fleet) = &self.fleet else { return };
        let Some(went_back) = fleet.alarm_due() else {
            return;
        };
        let (services, recorded) = {
            let state = self.shared.lock();
            let recorded = state.history.values().flatten().any(|r| {
                r.kind == ChangeKind::FleetLogWentBack && r.revision > went_back.cache_had
            });
            (state.services.keys().cloned().collect::<Vec<_>>(), recorded)
        };
        if recorded || services.is_empty() {
            fleet.set_alarm_due(None);
            return;
        }
        let origin = Origin::new("fleet", reason(&went_back, fleet.instance())).with_evidence(
            serde_json::json!({
                "rule": "fleet_log_went_back",
                "log_held": went_back.log_held,
                "cache_had": went_back.cache_had,
                "instance": fleet.instance(),
            }),
        );
        match self
            .note_each(&services, ChangeKind::FleetLogWentBack, origin)
            .await
        {
            Ok(_) => fleet.set_alarm_due(None),
            Err(err) => {
                tracing::error!(error = %err, "the fleet log's alarm is not recorded yet; it is tried again at the next join")
            }
        }
    }
}

fn reason(went_back: &WentBack, instance: &str) -> String {
    format!(
        "the fleet log went back: it held {} revision(s) where {instance} had read {}; carried on from the cache, every abort and latch kept",
        went_back.log_held, went_back.cache_had
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_says_where_the_log_went_back_to() {
        let went_back = WentBack {
            log_held: 0,
            cache_had: 7,
        };
        assert_eq!(
            reason(&went_back, "edge-1"),
            "the fleet log went back: it held 0 revision(s) where edge-1 had read 7; carried on from the cache, every abort and latch kept"
        );
    }
}
