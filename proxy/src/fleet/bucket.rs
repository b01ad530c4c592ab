//! KV buckets, made by hand as the client would make them: the client's own
//! `create_key_value` first reads the account info, which it cannot parse from the 2.9
//! servers Debian ships.

use super::LogError;
use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use std::time::Duration;

/// How a bucket keeps its entries.
#[derive(Clone, Copy)]
pub(crate) enum Keep {
    /// In memory, each entry gone `ttl` after its last write (members, leases).
    Expiring(Duration),
    /// On disk, for good (shared state: rollouts, webhook cursors).
    Durable,
}

/// A handle on bucket `name`, created on first use.
#[derive(Clone)]
pub(crate) struct Bucket {
    js: jetstream::Context,
    client: async_nats::Client,
    name: String,
    keep: Keep,
}

impl Bucket {
    pub(crate) fn new(client: &async_nats::Client, name: String, keep: Keep) -> Bucket {
        Bucket {
            js: jetstream::new(client.clone()),
            client: client.clone(),
            name,
            keep,
        }
    }

    pub(crate) fn stream_name(&self) -> String {
        format!("KV_{}", self.name)
    }

    pub(crate) fn js(&self) -> &jetstream::Context {
        &self.js
    }

    pub(crate) async fn store(&self) -> Result<kv::Store, LogError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(LogError::Unreachable("not connected".into()));
        }
        if let Ok(store) = self.js.get_key_value(&self.name).await {
            return Ok(store);
        }
        let (max_age, storage) = match self.keep {
            Keep::Expiring(ttl) => (ttl, jetstream::stream::StorageType::Memory),
            Keep::Durable => (Duration::ZERO, jetstream::stream::StorageType::File),
        };
        self.js
            .get_or_create_stream(jetstream::stream::Config {
                name: self.stream_name(),
                subjects: vec![format!("$KV.{}.>", self.name)],
                max_messages_per_subject: 1,
                max_age,
                duplicate_window: match self.keep {
                    Keep::Expiring(ttl) => ttl,
                    Keep::Durable => Duration::from_secs(120),
                },
                storage,
                num_replicas: super::replicas(&self.client),
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: jetstream::stream::DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(|err| LogError::Unreachable(err.to_string()))?;
        self.js
            .get_key_value(&self.name)
            .await
            .map_err(|err| LogError::Unreachable(err.to_string()))
    }

    /// The subjects (`$KV.BUCKET.KEY`) holding an entry under `prefix`, read from the
    /// bucket's stream (a key listing that follows live updates never ends while entries
    /// keep being written).
    pub(crate) async fn subjects(&self, prefix: &str) -> Result<Vec<String>, LogError> {
        self.store().await?;
        let unreachable = |err: &dyn std::fmt::Display| LogError::Unreachable(err.to_string());
        let stream = self
            .js
            .get_stream(self.stream_name())
            .await
            .map_err(|e| unreachable(&e))?;
        let mut subjects = stream
            .info_with_subjects(format!("$KV.{}.{prefix}>", self.name))
            .await
            .map_err(|e| unreachable(&e))?;
        let mut keys = Vec::new();
        while let Some(subject) = subjects.next().await {
            keys.push(subject.map_err(|e| unreachable(&e))?.0);
        }
        Ok(keys)
    }

    /// The keys under `prefix` (without the bucket's subject prefix).
    pub(crate) async fn keys(&self, prefix: &str) -> Result<Vec<String>, LogError> {
        let head = format!("$KV.{}.", self.name);
        Ok(self
            .subjects(prefix)
            .await?
            .into_iter()
            .filter_map(|s| s.strip_prefix(&head).map(str::to_string))
            .collect())
    }
}

/// A name as a part of a KV key: letters, digits, `-` and `_` stay; anything else is
/// written `=XX` per byte (so any service name or URL digest makes a valid key).
pub fn key_part(name: &str) -> String {
    let mut key = String::new();
    for byte in name.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => key.push(byte as char),
            other => key.push_str(&format!("={other:02X}")),
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::key_part;

    #[test]
    fn any_name_makes_a_valid_key_part() {
        assert_eq!(key_part("shop-1_a"), "shop-1_a");
        assert_eq!(key_part("a.b c/é"), "a=2Eb=20c=2F=C3=A9");
    }
}
