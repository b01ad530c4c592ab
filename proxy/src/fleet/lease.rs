//! Leases: one holder at a time per key (a service's rollout, a webhook's delivery), in a
//! KV bucket whose entries expire `TTL` after their last write. The holder renews its
//! entry every `RENEW_EVERY`, each time naming the KV revision it read (compare-and-set),
//! so two instances can never both renew or both take the same key. When the holder dies
//! or loses NATS its entry expires and another instance takes the key.

use super::bucket::{Bucket, Keep};
use super::LogError;
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use std::time::Duration;
use tokio::time::Instant;

/// An entry not renewed for this long is gone: another instance may take the key.
pub const TTL: Duration = Duration::from_secs(3);
/// How often a holder renews (three tries before its entry expires).
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// A holder that could not renew for this long stops acting as one, before its entry can
/// expire and another instance take over.
const TRUST: Duration = Duration::from_millis(TTL.as_millis() as u64 - 500);

/// The fleet's leases bucket.
#[derive(Clone)]
pub struct Leases {
    bucket: Bucket,
    instance: String,
}

/// Who holds a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Ours,
    Theirs(String),
}

impl Leases {
    pub(crate) fn new(client: &async_nats::Client, fleet: &str, instance: &str) -> Leases {
        Leases {
            bucket: Bucket::new(
                client,
                format!("switchyard-{fleet}-leases"),
                Keep::Expiring(TTL),
            ),
            instance: instance.to_string(),
        }
    }

    /// Takes `key` if nobody holds it, renews it if this instance does.
    pub async fn claim(&self, key: &str) -> Result<Claim, LogError> {
        let store = self.bucket.store().await?;
        let unreachable = |err: &dyn std::fmt::Display| LogError::Unreachable(err.to_string());
        let us = Bytes::from(self.instance.clone());
        let entry = store.entry(key).await.map_err(|e| unreachable(&e))?;
        match entry {
            Some(entry) if entry.operation == Operation::Put && entry.value != us => Ok(
                Claim::Theirs(String::from_utf8_lossy(&entry.value).into_owned()),
            ),
            Some(entry) if entry.operation == Operation::Put => {
                match store.update(key, us, entry.revision).await {
                    Ok(_) => Ok(Claim::Ours),
                    Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => {
                        Ok(self.holder(&store, key).await)
                    }
                    Err(err) => Err(unreachable(&err)),
                }
            }
            // Absent, expired or released: take it (only one `create` can win).
            _ => match store.create(key, us).await {
                Ok(_) => Ok(Claim::Ours),
                Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {
                    Ok(self.holder(&store, key).await)
                }
                Err(err) => Err(unreachable(&err)),
            },
        }
    }

    async fn holder(&self, store: &kv::Store, key: &str) -> Claim {
        match store.get(key).await {
            Ok(Some(value)) => Claim::Theirs(String::from_utf8_lossy(&value).into_owned()),
            _ => Claim::Theirs("another instance".into()),
        }
    }

    /// Gives `key` up at once (only if this instance still holds it).
    pub async fn release(&self, key: &str) {
        let Ok(store) = self.bucket.store().await else {
            return;
        };
        if let Ok(Some(entry)) = store.entry(key).await {
            if entry.operation == Operation::Put && entry.value == self.instance.as_bytes() {
                let _ = store
                    .delete_expect_revision(key, Some(entry.revision))
                    .await;
            }
        }
    }
}

/// One key's lease as its would-be holder keeps it.
pub struct Lease {
    leases: Leases,
    key: String,
    /// When this instance last renewed it.
    renewed: Option<Instant>,
    tried: Option<Instant>,
    /// Who held it at the last look, when not this instance.
    pub holder: Option<String>,
}

impl Lease {
    pub fn new(leases: &Leases, key: String) -> Lease {
        Lease {
            leases: leases.clone(),
            key,
            renewed: None,
            tried: None,
            holder: None,
        }
    }

    /// True when `hold` will go to NATS (at most once a `RENEW_EVERY`).
    pub fn due(&self) -> bool {
        self.tried.is_none_or(|at| at.elapsed() >= RENEW_EVERY)
    }

    /// Claims or renews the key when due; true while this instance may act as its holder.
    pub async fn hold(&mut self) -> bool {
        if self.due() {
            self.tried = Some(Instant::now());
            match self.leases.claim(&self.key).await {
                Ok(Claim::Ours) => {
                    if self.renewed.is_none() {
                        tracing::info!(lease = %self.key, "took the lease");
                    }
                    self.renewed = Some(Instant::now());
                    self.holder = None;
                }
                Ok(Claim::Theirs(holder)) => {
                    self.renewed = None;
                    self.holder = Some(holder);
                }
                // Unreachable: the lease runs out on its own below.
                Err(err) => tracing::debug!(lease = %self.key, %err, "lease not renewed"),
            }
        }
        self.held()
    }

    /// True while the last renewal is recent enough to trust (no network).
    pub fn held(&self) -> bool {
        self.renewed.is_some_and(|at| at.elapsed() < TRUST)
    }

    /// Gives the lease up (a rollout that stopped running, a hook removed).
    pub async fn release(&mut self) {
        if self.renewed.take().is_some() {
            self.leases.release(&self.key).await;
        }
        self.tried = None;
    }
}

/// Keeps `key` for as long as the returned receiver (or a clone of it) lives: claims it
/// when it is free, renews it while held, and says whether this instance holds it. The
/// lease is given up when the last receiver is dropped.
pub fn keep(leases: &Leases, key: String) -> tokio::sync::watch::Receiver<bool> {
    let (held, receiver) = tokio::sync::watch::channel(false);
    let mut lease = Lease::new(leases, key);
    tokio::spawn(async move {
        loop {
            let holds = lease.hold().await;
            held.send_if_modified(|was| std::mem::replace(was, holds) != holds);
            tokio::select! {
                _ = tokio::time::sleep(RENEW_EVERY) => {}
                _ = held.closed() => break,
            }
        }
        lease.release().await;
    });
    receiver
}
