//! Fleet: several instances that share one routing through NATS JetStream (`[cluster]`).
//! The revision log (`log`) is the fleet's one sequence of revisions; members (`members`)
//! announce what they applied; `evidence` pools what each member's proxy sees, for the guard. This module speaks NATS; the control plane decides what a
//! revision means and applies it through its one writer.

mod bucket;
pub mod evidence;
pub mod lease;
pub mod log;
pub mod members;
pub mod records;
pub mod rejected;

use crate::config::cluster::ClusterSettings;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
pub struct FleetError(String);

impl Fleet {
    /// Connects in the background: an unreachable NATS does not stop a start (the instance
    /// serves from its local cache and joins when NATS answers).
    pub async fn connect(settings: &ClusterSettings) -> Result<Fleet, FleetError> {
        let client = options(settings)
            .await?
            .connect(settings.servers.clone())
            .await
            .map_err(|err| FleetError(err.to_string()))?;
        let rejections = Rejections::default();
        Ok(Fleet {
            log: RevisionLog::new(client.clone(), &settings.name, rejections.clone()),
            leases: Leases::new(&client, &settings.name, &settings.instance),
            records: Records::new(&client, &settings.name),
            evidence: evidence::Evidence::new(
                client.clone(),
                &settings.name,
                &settings.instance,
                rejections.clone(),
            ),
            members: Members::new(client, settings),
            settings: settings.clone(),
            rejections,
        })
    }
}

async fn options(settings: &ClusterSettings) -> Result<async_nats::ConnectOptions, FleetError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!(
            "switchyard {}/{}",
            settings.name, settings.instance
        ))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempt| {
            Duration::from_millis((attempt as u64 * 250).min(2_000))
        })
        .event_callback(log_once());
    if let Some(path) = &settings.credentials {
        options = options.credentials_file(path).await.map_err(|err| {
            FleetError(format!(
                "cannot read credentials file {}: {err}",
                path.display()
            ))
        })?;
    }
    if let Some(tls) = &settings.tls {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &tls.client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    Ok(options)
}

/// Logs the loss and the return of NATS once each, not on every reconnect attempt.
fn log_once() -> impl Fn(async_nats::Event) -> std::future::Ready<()> + Send + Sync + 'static {
    let down = Arc::new(AtomicBool::new(false));
    move |event| {
        match event {
            async_nats::Event::Disconnected => {
                if !down.swap(true, Ordering::Relaxed) {
                    tracing::warn!("NATS unreachable: serving the last routing; operator changes are refused until it is back");
                }
            }
            async_nats::Event::Connected => {
                if down.swap(false, Ordering::Relaxed) {
                    tracing::info!("NATS reachable again: catching up with the fleet log");
                }
            }
            other => tracing::debug!(event = %other, "NATS event"),
        }
        std::future::ready(())
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
