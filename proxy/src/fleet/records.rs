//! Shared state: a durable KV bucket of records every instance reads, each written with
//! compare-and-set on its KV revision so a writer that read an old record cannot
//! overwrite a newer one. Rollouts (`rollout.SERVICE`) and webhook cursors (`hook.URL`)
//! live here.

use super::bucket::{Bucket, Keep};
use super::LogError;
use async_nats::jetstream::kv::UpdateErrorKind;
use bytes::Bytes;

#[derive(Clone)]
pub struct Records {
    bucket: Bucket,
}

/// What a compare-and-set write found.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// Stored, with this KV revision.
    At(u64),
    /// The record moved on since the revision named: read it again.
    Conflict,
}

impl Records {
    pub(crate) fn new(client: &async_nats::Client, fleet: &str) -> Records {
        Records {
            bucket: Bucket::new(client, format!("switchyard-{fleet}-state"), Keep::Durable),
        }
    }

    /// The record and its KV revision.
    pub async fn get(&self, key: &str) -> Result<Option<(Bytes, u64)>, LogError> {
        let store = self.bucket.store().await?;
        let entry = store
            .entry(key)
            .await
            .map_err(|err| LogError::Unreachable(err.to_string()))?;
        Ok(entry.map(|e| (e.value, e.revision)))
    }

    /// Writes `key` only if its KV revision is still `read` (0: only if it has none).
    pub async fn put(&self, key: &str, value: Bytes, read: u64) -> Result<Written, LogError> {
        let store = self.bucket.store().await?;
        match store.update(key, value, read).await {
            Ok(revision) => Ok(Written::At(revision)),
            Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => Ok(Written::Conflict),
            Err(err) => Err(LogError::Unreachable(err.to_string())),
        }
    }

    /// The keys under `prefix` (e.g. `rollout.`).
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, LogError> {
        self.bucket.keys(prefix).await
    }
}
