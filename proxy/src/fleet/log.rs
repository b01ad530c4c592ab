//! The fleet's revision log: one JetStream stream per fleet, one message per revision, so
//! a revision's number is its stream sequence. An append names the sequence it follows
//! (optimistic concurrency), so two instances can never both write revision N.
//!
//! This module moves bytes; what a revision means is the control plane's business.

use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::rejected::{Carrier, Reason, Rejections};
use super::trust::Trust;

/// How long one append attempt waits for the stream's acknowledgement.
const APPEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an append waits for a lost connection to come back before it gives up.
const RECONNECT_PATIENCE: Duration = Duration::from_secs(3);
/// How long an append keeps trying while connected (a stream leader election).
const ELECTION_PATIENCE: Duration = Duration::from_secs(10);

/// What a re-seeded log holds where the old one held an entry every member skipped, so
/// revisions keep their numbers (read past without a word; never a revision).
pub const GAP: &[u8] = b"switchyard: no revision at this sequence\n";

/// One revision as the log holds it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub sequence: u64,
    /// The id the appender gave it (so an appender whose acknowledgement was lost can
    /// recognise its own entry).
    pub id: String,
    pub payload: Bytes,
    /// Whether a trusted key signed the payload (always, when the fleet does not sign).
    pub signature: Result<(), (Reason, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Another instance appended first: catch up and plan again.
    #[error("the fleet log moved on (another instance appended first)")]
    Behind,
    #[error("fleet log unreachable (NATS): {0}")]
    Unreachable(String),
    /// The append was sent but its fate is unknown (no acknowledgement in time).
    #[error("fleet log did not confirm the append: {0}")]
    Unconfirmed(String),
    #[error("fleet log: {0}")]
    Other(String),
}

/// The stream of one fleet.
#[derive(Clone)]
pub struct RevisionLog {
    js: jetstream::Context,
    client: async_nats::Client,
    stream: String,
    subject: String,
    /// The last sequence this instance read past: applied, or skipped as not a revision
    /// of this fleet's (so one bad entry is skipped once, and never blocks what follows).
    passed: Arc<AtomicU64>,
    rejections: Rejections,
    trust: Trust,
    /// Set while the log is known to have gone back (lost its store).
    alarm: Arc<std::sync::Mutex<Option<String>>>,
}

impl RevisionLog {
    pub fn new(
        client: async_nats::Client,
        fleet: &str,
        rejections: Rejections,
        trust: Trust,
    ) -> RevisionLog {
        let js = jetstream::new(client.clone());
        RevisionLog {
            js,
            client,
            stream: format!("switchyard-{fleet}-revisions"),
            subject: format!("switchyard.{fleet}.revisions"),
            passed: Arc::new(AtomicU64::new(0)),
            rejections,
            trust,
            alarm: Arc::default(),
        }
    }

    /// What is wrong with the log, when something is (for status and `ctl fleet`).
    pub fn alarm(&self) -> Option<String> {
        self.alarm
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn set_alarm(&self, alarm: Option<String>) {
        *self
            .alarm
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = alarm;
    }

    /// The last sequence this instance read past (applied or skipped).
    pub fn passed(&self) -> u64 {
        self.passed.load(Ordering::Acquire)
    }

    /// Notes that this instance read past `sequence`.
    pub fn pass(&self, sequence: u64) {
        self.passed.fetch_max(sequence, Ordering::AcqRel);
    }

    /// Skips an entry that is not a revision of this fleet's: counted, logged at most once
    /// a minute per kind, read past.
    pub fn skip(&self, entry: &Entry, reason: Reason, detail: &str) {
        self.rejections.reject(
            Carrier::Revision,
            reason,
            &format!("log entry {}: {detail}", entry.sequence),
        );
        self.pass(entry.sequence);
    }

    /// True while the connection to NATS is up.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn unreachable_unless_connected(&self) -> Result<(), LogError> {
        match self.connected() {
            true => Ok(()),
            false => Err(LogError::Unreachable("not connected".into())),
        }
    }

    /// The stream, created on first use (every instance may race to create it; creating
    /// an identical stream twice is no error).
    async fn stream(&self) -> Result<stream::Stream, LogError> {
        self.unreachable_unless_connected()?;
        self.js
            .get_or_create_stream(stream::Config {
                name: self.stream.clone(),
                subjects: vec![self.subject.clone()],
                storage: stream::StorageType::File,
                num_replicas: super::replicas(&self.client),
                // Every revision is kept: the log is the fleet's history.
                discard: stream::DiscardPolicy::New,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|err| LogError::Unreachable(err.to_string()))
    }

    /// The sequence of the last revision in the log (0 when empty).
    pub async fn last(&self) -> Result<u64, LogError> {
        let mut stream = self.stream().await?;
        let info = stream
            .info()
            .await
            .map_err(|err| LogError::Unreachable(err.to_string()))?;
        Ok(info.state.last_sequence)
    }

    /// Appends `payload` as revision `after + 1`, only if the log's last revision is `after`.
    /// Rides out a reconnect to another server (up to 3 s) or a stream leader election (one
    /// NATS node of three going down; up to 10 s) by trying again with the same id.
    /// `patient: false` makes one attempt only (for what must not wait).
    pub async fn append(
        &self,
        after: u64,
        id: &str,
        payload: Bytes,
        patient: bool,
    ) -> Result<u64, LogError> {
        let started = tokio::time::Instant::now();
        loop {
            let (failed, patience) = match self.connected() {
                true => match self.append_once(after, id, payload.clone()).await {
                    Err(err @ (LogError::Unreachable(_) | LogError::Unconfirmed(_))) => {
                        (err, ELECTION_PATIENCE)
                    }
                    done => return done,
                },
                false => (
                    LogError::Unreachable("not connected".into()),
                    RECONNECT_PATIENCE,
                ),
            };
            if !patient || started.elapsed() >= patience {
                return Err(failed);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn append_once(&self, after: u64, id: &str, payload: Bytes) -> Result<u64, LogError> {
        let mut message = jetstream::message::PublishMessage::build();
        for (name, value) in self.trust.signature(&payload).into_iter().flatten() {
            message = message.header(name, value.as_str());
        }
        let message = message
            .payload(payload)
            .message_id(id)
            .expected_last_sequence(after);
        let published = self
            .js
            .send_publish(self.subject.clone(), message)
            .await
            .map_err(|err| LogError::Unreachable(err.to_string()))?;
        let ack = match tokio::time::timeout(APPEND_TIMEOUT, async { published.await }).await {
            Err(_) => return Err(LogError::Unconfirmed("no acknowledgement within 2s".into())),
            Ok(ack) => ack,
        };
        match ack {
            Ok(ack) if ack.sequence == after + 1 => Ok(ack.sequence),
            Ok(ack) => Err(LogError::Other(format!(
                "revision stored as sequence {} where {} was expected{}",
                ack.sequence,
                after + 1,
                if ack.duplicate { " (a duplicate)" } else { "" }
            ))),
            Err(err) => Err(match err.kind() {
                PublishErrorKind::WrongLastSequence => LogError::Behind,
                PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                    LogError::Unconfirmed(err.to_string())
                }
                // No responders: the stream has no leader just now.
                PublishErrorKind::StreamNotFound => LogError::Unreachable(err.to_string()),
                _ => LogError::Other(err.to_string()),
            }),
        }
    }

    /// Revision `sequence`, read directly from the stream.
    pub async fn read(&self, sequence: u64) -> Result<Entry, LogError> {
        let stream = self.stream().await?;
        let message = stream
            .get_raw_message(sequence)
            .await
            .map_err(|err| LogError::Unreachable(format!("reading revision {sequence}: {err}")))?;
        Ok(Entry {
            sequence: message.sequence,
            id: message_id(&message.headers),
            signature: self.trust.verify(Some(&message.headers), &message.payload),
            payload: message.payload,
        })
    }

    /// Every revision from `from` on, in order, then each new one as it is appended.
    /// The stream ends when the connection is lost for good or the consumer fails; the
    /// caller follows again from where it got to.
    pub async fn follow(
        &self,
        from: u64,
    ) -> Result<impl Stream<Item = Result<Entry, LogError>>, LogError> {
        let stream = self.stream().await?;
        let consumer = stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(|err| LogError::Unreachable(err.to_string()))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|err| LogError::Unreachable(err.to_string()))?;
        let trust = self.trust.clone();
        Ok(messages.map(move |message| {
            let message = message.map_err(|err| LogError::Unreachable(err.to_string()))?;
            let sequence = message
                .info()
                .map_err(|err| LogError::Other(err.to_string()))?
                .stream_sequence;
            let id = message.headers.as_ref().map(message_id).unwrap_or_default();
            Ok(Entry {
                sequence,
                id,
                signature: trust.verify(message.headers.as_ref(), &message.payload),
                payload: message.payload.clone(),
            })
        }))
    }
}

fn message_id(headers: &HeaderMap) -> String {
    headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .map(|value| value.as_str().to_string())
        .unwrap_or_default()
}
