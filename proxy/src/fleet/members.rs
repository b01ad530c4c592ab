//! Members: each instance announces itself (applied revision, binary version, start time)
//! in a KV bucket whose entries expire, so an instance that stops announcing drops out.

use super::bucket::{Bucket, Keep};
use super::LogError;
use crate::config::cluster::ClusterSettings;
use async_nats::jetstream::kv;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// How often an instance announces itself.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// An entry not renewed for this long is gone.
const TTL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub instance: String,
    /// The last revision this instance applied.
    pub applied: u64,
    pub version: String,
    pub started_ms: u64,
    pub last_seen_ms: u64,
}

#[derive(Clone)]
pub struct Members {
    bucket: Bucket,
    instance: String,
    started_ms: u64,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Members {
    pub fn new(client: async_nats::Client, settings: &ClusterSettings) -> Members {
        Members {
            bucket: Bucket::new(
                &client,
                format!("switchyard-{}-members", settings.name),
                Keep::Expiring(TTL),
            ),
            instance: settings.instance.clone(),
            started_ms: now_ms(),
        }
    }

    async fn store(&self) -> Result<kv::Store, LogError> {
        self.bucket.store().await
    }

    /// Writes this instance's entry.
    pub async fn announce(&self, applied: u64) -> Result<(), LogError> {
        let member = Member {
            instance: self.instance.clone(),
            applied,
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_ms: self.started_ms,
            last_seen_ms: now_ms(),
        };
        let bytes = serde_json::to_vec(&member).map_err(|err| LogError::Other(err.to_string()))?;
        self.store()
            .await?
            .put(&self.instance, bytes.into())
            .await
            .map_err(|err| LogError::Unreachable(err.to_string()))?;
        Ok(())
    }

    /// Every live member, by instance name: the last entry of each key, read straight from
    /// the bucket's stream (a key listing that follows live updates never ends while
    /// members keep announcing).
    pub async fn list(&self) -> Result<Vec<Member>, LogError> {
        let keys = self.bucket.subjects("").await?;
        let stream = self
            .bucket
            .js()
            .get_stream(self.bucket.stream_name())
            .await
            .map_err(|err| LogError::Unreachable(err.to_string()))?;
        let mut members = Vec::new();
        for key in keys {
            // Gone since the listing (expired): not a member.
            let Ok(message) = stream.get_last_raw_message_by_subject(&key).await else {
                continue;
            };
            // An entry that does not read is some other writer's: not a member.
            if let Ok(member) = serde_json::from_slice::<Member>(&message.payload) {
                members.push(member);
            }
        }
        members.sort_by(|a, b| a.instance.cmp(&b.instance));
        Ok(members)
    }

    /// Announces every `ANNOUNCE_EVERY` and at once when `applied` moves, until the
    /// control plane stops.
    pub async fn run(self, mut applied: watch::Receiver<u64>) {
        loop {
            let revision = *applied.borrow_and_update();
            // Failures are the connection's: it logs its loss once.
            if let Err(err) = self.announce(revision).await {
                tracing::debug!(%err, "member announcement failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(ANNOUNCE_EVERY) => {}
                changed = applied.changed() => if changed.is_err() { return },
            }
        }
    }
}

/// `GET /fleet`: the members sharing this routing and how far each has applied the log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FleetStatus {
    pub fleet: String,
    pub instance: String,
    /// Whether this instance reaches NATS now.
    pub connected: bool,
    /// The last revision in the fleet's log (absent when NATS is unreachable).
    pub log_revision: Option<u64>,
    /// The last revision this instance applied.
    pub applied: u64,
    pub members: Vec<MemberStatus>,
    /// Why the members could not be listed, when they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Revisions and evidence reports this instance skipped (never applied), by why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<super::RejectedCount>,
    /// Set while the fleet's log is known to have gone back (lost its store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_alarm: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberStatus {
    pub instance: String,
    pub applied: u64,
    /// Revisions the log holds that this member has not applied.
    pub lag: u64,
    pub version: String,
    pub started_ms: u64,
    pub last_seen_ms_ago: u64,
}

impl super::Fleet {
    /// The fleet as this instance sees it; `applied` is its own last revision.
    pub async fn status(&self, applied: u64) -> FleetStatus {
        // Entries skipped as not revisions of this fleet's count as read.
        let applied = applied.max(self.log.passed());
        let log_revision = self.log.last().await.ok();
        let (members, problem) = match self.members.list().await {
            Ok(members) => (members, None),
            Err(err) => (Vec::new(), Some(err.to_string())),
        };
        let now = now_ms();
        let head = log_revision.unwrap_or(applied);
        FleetStatus {
            fleet: self.settings.name.clone(),
            instance: self.settings.instance.clone(),
            connected: self.log.connected(),
            log_revision,
            applied,
            members: members
                .into_iter()
                .map(|m| MemberStatus {
                    lag: head.saturating_sub(m.applied),
                    last_seen_ms_ago: now.saturating_sub(m.last_seen_ms),
                    instance: m.instance,
                    applied: m.applied,
                    version: m.version,
                    started_ms: m.started_ms,
                })
                .collect(),
            problem,
            rejected: self.rejections.counts(),
            log_alarm: self.log.alarm(),
        }
    }
}
