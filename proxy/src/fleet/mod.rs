//! Fleet: several instances that share one routing through NATS JetStream (`[cluster]`).
//! The revision log (`log`) is the fleet's one sequence of revisions; members (`members`)
//! announce what they applied; `evidence` pools what each member's proxy sees, for the guard. This module speaks NATS; the control plane decides what a
//! revision means and applies it through its one writer.

mod bucket;
mod connect;
pub mod evidence;
pub mod lease;
pub mod log;
pub mod members;
pub mod records;
pub mod rejected;
pub mod trust;

use crate::config::cluster::ClusterSettings;

pub use bucket::key_part;
pub use lease::{keep, Claim, Lease, Leases};
pub use log::{Entry, LogError, RevisionLog};
pub use members::{FleetStatus, Member, MemberStatus, Members};
pub use records::{Records, Written};
pub use rejected::{Carrier, Reason, RejectedCount, Rejections};

/// The connection to the fleet's NATS cluster and what lives there.
#[derive(Clone)]
pub struct Fleet {
    pub settings: ClusterSettings,
    pub log: RevisionLog,
    pub members: Members,
    /// One holder at a time: a service's rollout driver, a webhook's deliverer.
    pub leases: Leases,
    /// Shared state: rollouts and webhook cursors.
    pub records: Records,
    /// The members' pooled evidence for the guard.
    pub evidence: evidence::Evidence,
    /// What the fleet's subjects carried that this instance did not take.
    pub rejections: Rejections,
}

#[derive(Debug, thiserror::Error)]
#[error("cluster: {0}")]
pub struct FleetError(pub(crate) String);

impl Fleet {
    /// Connects; an unreachable NATS does not stop a start (the instance serves from its
    /// local cache and joins when NATS answers), but NATS refusing this instance's
    /// credentials or certificates does, with one line.
    pub async fn connect(settings: &ClusterSettings) -> Result<Fleet, FleetError> {
        let trust = trust::Trust::load(settings.trust.as_ref()).map_err(FleetError)?;
        let client = connect::connect(settings).await?;
        let rejections = Rejections::default();
        Ok(Fleet {
            log: RevisionLog::new(
                client.clone(),
                &settings.name,
                rejections.clone(),
                trust.clone(),
            ),
            leases: Leases::new(&client, &settings.name, &settings.instance),
            records: Records::new(&client, &settings.name),
            evidence: evidence::Evidence::new(
                client.clone(),
                &settings.name,
                &settings.instance,
                rejections.clone(),
                trust,
            ),
            members: Members::new(client, settings),
            settings: settings.clone(),
            rejections,
        })
    }
}

/// Replicas for what this fleet keeps in JetStream: three in a NATS cluster (so one node
/// down changes nothing), one on a single server.
fn replicas(client: &async_nats::Client) -> usize {
    match client.server_info().cluster {
        Some(_) => 3,
        None => 1,
    }
}
