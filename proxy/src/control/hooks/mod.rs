//! Event hooks: each revision is POSTed as a typed event (`event`) to every configured
//! webhook, as JSON or Slack-shaped, signed when `secret_file` is set, at least once and in
//! order, straight from the journal.
//!
//! Each webhook has a deliverer task that tails the journal file on its own and keeps a
//! cursor (the last revision the hook acknowledged with a 2xx) in `STATE/hooks/`. A hook
//! that is down is retried until it answers, from where it stopped, across restarts of the
//! proxy; every event carries its revision and hash, so a receiver can drop a repeat.
//! The controller only rings a bell after each journaled change (`send`): a slow or dead
//! hook never delays a change.
//!
//! In a fleet (`[cluster]`) each revision goes to each hook once from the fleet, not once
//! per instance: every instance runs a deliverer per hook, but only the holder of the
//! hook's lease (`hook.DIGEST` in the leases bucket) delivers, and the cursor is shared
//! (`hook.DIGEST` in the fleet's state bucket, written compare-and-set). When the
//! deliverer dies its lease expires and another instance carries on from the shared
//! cursor (the revision in flight may come twice: at least once, in order).

mod event;
mod post;
mod sign;

use super::journal::JOURNAL_FILE;
use super::record::RevisionRecord;
use crate::config::secret::{read_secret, MIN_SHARED_SECRET};
use crate::config::{HookFormat, HooksConfig};
use crate::fleet::{self, Fleet, Leases, Records, Written};
use bytes::Bytes;
use event::EventType;
use http::{HeaderName, HeaderValue, Uri};
use post::{post, Delivery};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// A deliverer looks at the journal this often even without a bell (belt and braces).
const LOOK_EVERY: Duration = Duration::from_secs(5);
/// The longest pause between two tries at a hook that is down.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);

/// The deliverers, one per webhook URL, and the bell they listen to.
pub struct Hooks {
    state_dir: PathBuf,
    /// In a fleet: the leases and the shared cursors.
    fleet: Option<(Leases, Records)>,
    /// The hooks settings in force; every change rings it.
    bell: watch::Sender<HooksConfig>,
    running: Mutex<HashMap<Uri, tokio::task::JoinHandle<()>>>,
}

impl Hooks {
    /// Resumes every configured hook that has a cursor (it may have missed revisions while
    /// the proxy was down). Needs a tokio runtime.
    pub fn new(state_dir: &Path, hooks: &HooksConfig) -> Hooks {
        Hooks::new_in(state_dir, hooks, None)
    }

    /// `new`, in a fleet when given: every configured hook gets a deliverer at once, which
    /// delivers while it holds the hook's lease, from the shared cursor (or, for a hook new
    /// to the fleet, from the revision after `applied`).
    pub fn new_in(state_dir: &Path, hooks: &HooksConfig, fleet: Option<(&Fleet, u64)>) -> Hooks {
        let this = Hooks {
            state_dir: state_dir.to_path_buf(),
            fleet: fleet.map(|(f, _)| (f.leases.clone(), f.records.clone())),
            bell: watch::Sender::new(hooks.clone()),
            running: Mutex::new(HashMap::new()),
        };
        for url in hooks.urls() {
            let cursor = match fleet {
                Some((_, applied)) => Some(applied),
                None => read_cursor(&cursor_path(state_dir, url)),
            };
            if let Some(cursor) = cursor {
                this.start(url, cursor);
            }
        }
        this
    }

    /// Tells the deliverers that `record` is in the journal; never waits. A hook seen for
    /// the first time starts with this record.
    pub fn send(&self, hooks: &HooksConfig, record: &RevisionRecord) {
        self.bell.send_replace(hooks.clone());
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.retain(|_, task| !task.is_finished());
        for url in hooks.urls() {
            if running.contains_key(url) {
                continue;
            }
            let path = cursor_path(&self.state_dir, url);
            let cursor = match self.fleet {
                // Where the fleet's cursor is, unless the hook is new to the fleet.
                Some(_) => record.revision.saturating_sub(1),
                None => read_cursor(&path).unwrap_or_else(|| {
                    let cursor = record.revision.saturating_sub(1);
                    save_cursor(&path, url, cursor);
                    cursor
                }),
            };
            running.insert(url.clone(), self.spawn(url, cursor));
        }
    }

    fn start(&self, url: &Uri, cursor: u64) {
        let task = self.spawn(url, cursor);
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(url.clone(), task);
    }

    fn spawn(&self, url: &Uri, cursor: u64) -> tokio::task::JoinHandle<()> {
        let deliverer = Deliverer {
            url: url.clone(),
            cursor,
            cursor_path: cursor_path(&self.state_dir, url),
            journal: JournalTail::new(self.state_dir.join(JOURNAL_FILE)),
            bell: self.bell.subscribe(),
            shared: self.fleet.as_ref().map(|(leases, records)| SharedCursor {
                held: fleet::keep(leases, format!("hook.{}", url_key(url))),
                records: records.clone(),
                key: format!("hook.{}", url_key(url)),
                revision: 0,
            }),
        };
        tokio::spawn(deliverer.run())
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        for task in self
            .running
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            task.abort();
        }
    }
}

/// One hook's delivery: journal revisions after `cursor`, one at a time, until acknowledged.
struct Deliverer {
    url: Uri,
    cursor: u64,
    cursor_path: PathBuf,
    journal: JournalTail,
    bell: watch::Receiver<HooksConfig>,
    /// In a fleet: the hook's lease and its shared cursor.
    shared: Option<SharedCursor>,
}

/// A hook's cursor as the fleet shares it.
struct SharedCursor {
    /// Whether this instance holds the hook's lease (kept by `fleet::keep`).
    held: watch::Receiver<bool>,
    records: Records,
    key: String,
    /// The cursor's KV revision as last read or written.
    revision: u64,
}

impl Deliverer {
    async fn run(mut self) {
        loop {
            if !self.configured() {
                return;
            }
            if self.follow_shared_cursor().await {
                let records = match self.journal.read_new() {
                    Ok(records) => records,
                    Err(err) => {
                        tracing::warn!(url = %shown(&self.url), error = %err, "webhook: cannot read the journal");
                        Vec::new()
                    }
                };
                let delivered = self.cursor;
                for record in records.iter().filter(|r| r.revision > delivered) {
                    if !self.deliver(record).await || !self.save_cursor(record.revision).await {
                        // The rest is read again when this instance delivers again.
                        self.journal.rewind();
                        break;
                    }
                }
            }
            let (bell, shared) = (&mut self.bell, &mut self.shared);
            let lease_moved = async {
                let moved = match shared {
                    Some(shared) => shared.held.changed().await.is_ok(),
                    None => false,
                };
                if !moved {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                changed = bell.changed() => if changed.is_err() { return },
                () = lease_moved => {}
                () = tokio::time::sleep(LOOK_EVERY) => {}
            }
        }
    }

    fn configured(&self) -> bool {
        self.bell.borrow().urls().any(|url| *url == self.url)
    }

    /// Alone: true. In a fleet: true while this instance holds the hook's lease, with the
    /// cursor read from the fleet (made from this instance's when the fleet has none).
    async fn follow_shared_cursor(&mut self) -> bool {
        let Some(shared) = &mut self.shared else {
            return true;
        };
        if !*shared.held.borrow_and_update() {
            return false;
        }
        let read = match shared.records.get(&shared.key).await {
            Ok(Some((bytes, revision))) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
                .map(|cursor| (cursor, revision)),
            Ok(None) => Some((self.cursor, 0)),
            Err(err) => {
                tracing::debug!(url = %shown(&self.url), %err, "webhook: shared cursor not read");
                return false;
            }
        };
        let Some((cursor, revision)) = read else {
            tracing::warn!(url = %shown(&self.url), key = %shared.key, "webhook: the shared cursor does not read; delivering from this instance's");
            return true;
        };
        if cursor < self.cursor {
            // Behind what this deliverer sent already: read the journal from the start.
            self.journal.rewind();
        }
        self.cursor = cursor;
        shared.revision = revision;
        true
    }

    /// Moves the cursor past `revision`: the local file alone, or the fleet's shared
    /// cursor (false when another deliverer moved it meanwhile or the fleet is out of
    /// reach: this one stops and reads it again).
    async fn save_cursor(&mut self, revision: u64) -> bool {
        self.cursor = revision;
        let Some(shared) = &mut self.shared else {
            save_cursor(&self.cursor_path, &self.url, revision);
            return true;
        };
        let value = Bytes::from(format!("{revision}\n"));
        match shared
            .records
            .put(&shared.key, value, shared.revision)
            .await
        {
            Ok(Written::At(kv_revision)) => {
                shared.revision = kv_revision;
                *shared.held.borrow()
            }
            Ok(Written::Conflict) => false,
            Err(err) => {
                tracing::debug!(url = %shown(&self.url), %err, "webhook: shared cursor not written");
                false
            }
        }
    }

    /// False once another instance may deliver this hook (this one's lease is gone).
    fn holds(&self) -> bool {
        self.shared.as_ref().is_none_or(|s| *s.held.borrow())
    }

    /// Tries until the hook answers 2xx; false if the hook was removed (or, in a fleet,
    /// this instance lost its lease) meanwhile.
    async fn deliver(&mut self, record: &RevisionRecord) -> bool {
        let mut attempt = 0u32;
        loop {
            let hooks = self.bell.borrow().clone();
            let (timeout, quick_tries) = (hooks.timeout, hooks.attempts.max(1));
            attempt += 1;
            let attempted = async {
                let delivery = delivery(&hooks, &self.url, record)?;
                post(&self.url, hooks.ca.as_ref(), delivery).await
            };
            let result = tokio::time::timeout(timeout, attempted)
                .await
                .unwrap_or_else(|_| Err("timed out".to_string()));
            let err = match result {
                Ok(()) if attempt > quick_tries => {
                    tracing::info!(url = %shown(&self.url), revision = record.revision, "webhook answers again; delivering what it missed");
                    return true;
                }
                Ok(()) => return true,
                Err(err) => err,
            };
            if attempt == quick_tries {
                tracing::warn!(url = %shown(&self.url), revision = record.revision, error = %err, "webhook down; retrying until it answers");
            } else {
                tracing::debug!(url = %shown(&self.url), attempt, error = %err, "webhook failed; retrying");
            }
            tokio::time::sleep(retry_pause(attempt, quick_tries)).await;
            if !self.configured() || !self.holds() {
                return false;
            }
        }
    }
}

/// The body in the hook's format and its headers, signed now (each attempt carries its own
/// timestamp). A secret that cannot be read fails the attempt: never sent unsigned.
fn delivery(hooks: &HooksConfig, url: &Uri, record: &RevisionRecord) -> Result<Delivery, String> {
    let body = Bytes::from(match hooks.format_of(url) {
        HookFormat::Json => event::json(record),
        HookFormat::Slack => event::slack(record),
    });
    let mut headers = vec![(
        HeaderName::from_static("x-switchyard-event"),
        HeaderValue::from_static(EventType::of(record).label()),
    )];
    if let Some(path) = &hooks.secret_file {
        let secret = read_secret(path, MIN_SHARED_SECRET)
            .map_err(|why| format!("hooks.secret_file: {why}"))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = sign::signature(secret.as_bytes(), now, &body);
        for (name, value) in [
            (sign::TIMESTAMP_HEADER, now.to_string()),
            (sign::SIGNATURE_HEADER, signature),
        ] {
            let value = HeaderValue::try_from(value).map_err(|err| err.to_string())?;
            headers.push((HeaderName::from_static(name), value));
        }
    }
    Ok(Delivery { body, headers })
}

/// 200 ms, 400 ms, ... for the quick tries, then doubling from 1 s up to 30 s.
fn retry_pause(attempt: u32, quick_tries: u32) -> Duration {
    if attempt < quick_tries {
        return Duration::from_millis(200) * attempt;
    }
    let doublings = (attempt - quick_tries).min(5);
    (Duration::from_secs(1) * (1 << doublings)).min(MAX_RETRY_PAUSE)
}

/// Reads the journal from where it stopped: complete lines only, oldest first.
struct JournalTail {
    path: PathBuf,
    offset: u64,
}

impl JournalTail {
    fn new(path: PathBuf) -> JournalTail {
        JournalTail { path, offset: 0 }
    }

    /// Reads from the start again next time.
    fn rewind(&mut self) {
        self.offset = 0;
    }

    fn read_new(&mut self) -> std::io::Result<Vec<RevisionRecord>> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        // A journal set aside and begun anew is shorter: read it from the start.
        if file.metadata()?.len() < self.offset {
            self.offset = 0;
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        self.offset += complete as u64;
        Ok(bytes[..complete]
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect())
    }
}

/// A hook's URL as logs show it: scheme and host, and the digest that names its cursor.
/// The path is left out: a Slack (or any capability) URL is itself the secret.
fn shown(url: &Uri) -> String {
    let port = url.port_u16().map_or(String::new(), |p| format!(":{p}"));
    format!(
        "{}://{}{port}/… ({})",
        url.scheme_str().unwrap_or("http"),
        url.host().unwrap_or("?"),
        url_key(url)
    )
}

/// A short digest of the URL: the cursor's file name, and its key in a fleet.
fn url_key(url: &Uri) -> String {
    let digest = Sha256::digest(url.to_string().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn cursor_path(state_dir: &Path, url: &Uri) -> PathBuf {
    state_dir
        .join("hooks")
        .join(format!("{}.cursor", url_key(url)))
}

/// The cursor file: `REVISION`, one line (earlier versions wrote `REVISION URL`; the URL is
/// no longer kept anywhere but the config, since it may be the hook's only secret).
fn read_cursor(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Written to a temporary file and renamed, so a crash leaves the old cursor or the new.
/// A cursor that is lost or late only means a repeat, never a gap.
fn save_cursor(path: &Path, url: &Uri, revision: u64) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temporary = path.with_extension("cursor.tmp");
        std::fs::write(&temporary, format!("{revision}\n"))?;
        std::fs::rename(&temporary, path)
    };
    if let Err(err) = write() {
        tracing::warn!(url = %shown(url), error = %err, "webhook: cannot save the cursor");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_quick_at_first_then_back_off_to_30s() {
        assert_eq!(retry_pause(1, 3), Duration::from_millis(200));
        assert_eq!(retry_pause(2, 3), Duration::from_millis(400));
        assert_eq!(retry_pause(3, 3), Duration::from_secs(1));
        assert_eq!(retry_pause(4, 3), Duration::from_secs(2));
        assert_eq!(retry_pause(100, 3), MAX_RETRY_PAUSE);
    }

    #[test]
    fn a_cursor_reads_back_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let url: Uri = "http://127.0.0.1:9/hook".parse().unwrap();
        let path = cursor_path(dir.path(), &url);
        assert_eq!(read_cursor(&path), None);
        save_cursor(&path, &url, 42);
        assert_eq!(read_cursor(&path), Some(42));
    }
}
