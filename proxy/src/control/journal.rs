//! The revision journal: one JSON line per revision, each chained to the previous by a
//! SHA-256 hash, fsynced before a change is acknowledged, replayed on start.
//!
//! A line's hash covers its own bytes up to the `"hash"` field, and those bytes include the
//! previous line's hash (`prev`), so editing or removing any line breaks every later link.
//! The hash is checked on the raw bytes, so old lines stay verifiable when fields are added.

use super::record::RevisionRecord;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

pub const JOURNAL_FILE: &str = "journal.jsonl";
/// `prev` of the first line of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const HASH_PREFIX: &str = ",\"hash\":\"";
/// `,"hash":"` + 64 hex digits + `"}`.
const HASH_SUFFIX_LEN: usize = HASH_PREFIX.len() + 64 + 2;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal {}: another switchyard process is using this state directory", path.display())]
    Locked { path: PathBuf },
    #[error("journal {}:{line}: chain is broken: {why} (start with --accept-broken-journal to keep what still reads, set the file aside and begin a new chain)", path.display())]
    Broken {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("journal {}: unusable after a failed write ({0}); restart switchyard", path.display())]
    Poisoned { path: PathBuf, reason: String },
}

/// Where a broken chain was found and where the old file was kept.
#[derive(Debug, Clone)]
pub struct BrokenChain {
    pub line: usize,
    pub why: String,
    pub kept_as: PathBuf,
}

/// What opening the journal found.
pub struct Opened {
    pub journal: Journal,
    /// Every record that read back, oldest first.
    pub records: Vec<RevisionRecord>,
    /// A torn last line was dropped (crash mid-write): its length in bytes.
    pub torn_bytes: Option<usize>,
    /// Only with `accept_broken`: the chain was broken and a new one begins.
    pub broken: Option<BrokenChain>,
}

pub struct Journal {
    path: PathBuf,
    writer: Arc<Mutex<Writer>>,
}

struct Writer {
    file: File,
    last_hash: String,
    len: u64,
    poisoned: Option<String>,
    #[cfg(test)]
    full: bool,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Journal {
    /// Opens (or creates) `dir/journal.jsonl`, locks it against a second process, drops a
    /// torn last line and verifies the chain.
    pub fn open(dir: &Path, accept_broken: bool) -> Result<Opened, JournalError> {
        let path = dir.join(JOURNAL_FILE);
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let (mut file, created) = open_locked(&path)?;
        if created {
            sync_dir(dir).map_err(io_error(dir))?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_error(&path))?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let torn_bytes = (complete < bytes.len()).then(|| bytes.len() - complete);
        if torn_bytes.is_some() {
            file.set_len(complete as u64).map_err(io_error(&path))?;
            file.sync_all().map_err(io_error(&path))?;
        }
        let (records, failure) = read_chain(&bytes[..complete], accept_broken);
        let mut broken = None;
        let (file, last_hash, len) = match failure {
            None => {
                let last = records
                    .last()
                    .map_or(GENESIS.to_string(), |r| r.hash.clone());
                (file, last, complete as u64)
            }
            Some((line, why)) if accept_broken => {
                drop(file);
                let kept_as = set_aside(&path)?;
                let (file, _) = open_locked(&path)?;
                sync_dir(dir).map_err(io_error(dir))?;
                broken = Some(BrokenChain { line, why, kept_as });
                (file, GENESIS.to_string(), 0)
            }
            Some((line, why)) => return Err(JournalError::Broken { path, line, why }),
        };
        Ok(Opened {
            journal: Journal {
                path,
                writer: Arc::new(Mutex::new(Writer {
                    file,
                    last_hash,
                    len,
                    poisoned: None,
                    #[cfg(test)]
                    full: false,
                })),
            },
            records,
            torn_bytes,
            broken,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A switch that makes this journal's writes fail as on a full disk.
    #[cfg(test)]
    pub(crate) fn faults(&self) -> Faults {
        Faults(self.writer.clone())
    }

    /// The hash of the last line written (`GENESIS` when empty): what the next line's
    /// `prev` will be.
    pub(crate) fn last_hash(&self) -> String {
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        writer.last_hash.clone()
    }

    /// Chains, writes and fsyncs `records` as one write; returns them with `prev`/`hash`
    /// set. On failure nothing counts as written (the file is cut back).
    pub async fn append(
        &self,
        records: Vec<RevisionRecord>,
    ) -> Result<Vec<RevisionRecord>, JournalError> {
        self.blocking(move |writer, path| writer.append(path, records))
            .await
    }
}

impl Journal {
    /// `append`, of lines whose bytes are kept exactly (see `Writer::append_exact`).
    pub(crate) async fn append_exact(&self, lines: Vec<Line>) -> Result<Vec<Line>, JournalError> {
        self.blocking(move |writer, path| writer.append_exact(path, &lines).map(|()| lines))
            .await
    }

    /// Keeps the first `keep` lines, whose last hash is `last_hash` (a cache that
    /// disagreed with the fleet log past them).
    pub(crate) async fn truncate(
        &self,
        keep: usize,
        last_hash: String,
    ) -> Result<(), JournalError> {
        self.blocking(move |writer, path| writer.truncate(path, keep, last_hash))
            .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Writer, &Path) -> Result<T, JournalError> + Send + 'static,
    ) -> Result<T, JournalError> {
        let writer = self.writer.clone();
        let path = self.path.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut writer, &path)
        });
        match task.await {
            Ok(result) => result,
            Err(err) => Err(JournalError::Poisoned {
                path: self.path.clone(),
                reason: err.to_string(),
            }),
        }
    }
}

impl Writer {
    fn append(
        &mut self,
        path: &Path,
        mut records: Vec<RevisionRecord>,
    ) -> Result<Vec<RevisionRecord>, JournalError> {
        let mut bytes = Vec::new();
        let mut prev = self.last_hash.clone();
        for record in &mut records {
            let line = chained_line(record, &prev).map_err(|err| JournalError::Poisoned {
                path: path.to_path_buf(),
                reason: err.to_string(),
            })?;
            bytes.extend_from_slice(&line);
            prev = record.hash.clone();
        }
        self.write(path, &bytes, prev)?;
        Ok(records)
    }

    /// Appends lines exactly as given (their records already chained after this journal's
    /// last line): a fleet member's cache holds the log's bytes, never a re-serialization.
    fn append_exact(&mut self, path: &Path, lines: &[Line]) -> Result<(), JournalError> {
        let mut bytes = Vec::new();
        let mut prev = self.last_hash.clone();
        for line in lines {
            if line.record.prev != prev {
                return Err(JournalError::Broken {
                    path: path.to_path_buf(),
                    line: 0,
                    why: format!(
                        "revision {} does not follow the journal's last line",
                        line.record.revision
                    ),
                });
            }
            bytes.extend_from_slice(&line.bytes);
            if line.bytes.last() != Some(&b'\n') {
                bytes.push(b'\n');
            }
            prev = line.record.hash.clone();
        }
        self.write(path, &bytes, prev)
    }

    /// Writes and fsyncs `bytes`, after which `last_hash` is the journal's last hash; on
    /// failure nothing counts as written (the file is cut back).
    fn write(&mut self, path: &Path, bytes: &[u8], last_hash: String) -> Result<(), JournalError> {
        if let Some(reason) = &self.poisoned {
            return Err(JournalError::Poisoned {
                path: path.to_path_buf(),
                reason: reason.clone(),
            });
        }
        #[cfg(test)]
        if self.full {
            return Err(JournalError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            });
        }
        let written = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(source) = written {
            // Cut back whatever part reached the file; if even that fails, stop writing.
            if let Err(err) = self.file.set_len(self.len) {
                self.poisoned = Some(format!("{source}; then truncating failed: {err}"));
            }
            return Err(JournalError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
        self.len += bytes.len() as u64;
        self.last_hash = last_hash;
        Ok(())
    }

    /// Keeps the first `keep` lines (whose last hash is `last_hash`) and drops the rest.
    fn truncate(
        &mut self,
        path: &Path,
        keep: usize,
        last_hash: String,
    ) -> Result<(), JournalError> {
        let mut bytes = Vec::new();
        let read = (&self.file)
            .seek(std::io::SeekFrom::Start(0))
            .and_then(|_| (&self.file).read_to_end(&mut bytes));
        read.map_err(io_error(path))?;
        let cut = bytes
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .map(|(at, _)| at + 1)
            .nth(keep.wrapping_sub(1))
            .filter(|_| keep > 0)
            .unwrap_or(0);
        self.file.set_len(cut as u64).map_err(io_error(path))?;
        self.file.sync_all().map_err(io_error(path))?;
        self.len = cut as u64;
        self.last_hash = last_hash;
        Ok(())
    }
}

/// A record and the exact bytes of its line (as the fleet log carries it).
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub(crate) record: RevisionRecord,
    pub(crate) bytes: Vec<u8>,
}

/// Test seam: every write fails as on a full disk (ENOSPC) until healed.
#[cfg(test)]
pub(crate) struct Faults(Arc<Mutex<Writer>>);

#[cfg(test)]
impl Faults {
    pub(crate) fn set_full(&self, full: bool) {
        self.0.lock().unwrap().full = full;
    }
}

/// Serializes a record as one line and sets its hash: `{...,"prev":"..","hash":"<hex>"}\n`.
fn encode_line(record: &mut RevisionRecord) -> serde_json::Result<Vec<u8>> {
    let body = serde_json::to_vec(&*record)?;
    let hash = hex(&Sha256::digest(&body));
    let mut line = body;
    line.pop(); // the closing brace
    line.extend_from_slice(HASH_PREFIX.as_bytes());
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    record.hash = hash;
    Ok(line)
}

/// `record` chained after `prev` as the journal would write it (its `prev` and `hash` set):
/// the bytes a shared log carries, so every copy of the chain has the same hashes.
pub(crate) fn chained_line(record: &mut RevisionRecord, prev: &str) -> serde_json::Result<Vec<u8>> {
    record.prev = prev.to_string();
    record.hash = String::new();
    encode_line(record)
}

/// Checks one line's own hash and parses it.
pub(crate) fn decode_line(line: &[u8]) -> Result<RevisionRecord, String> {
    let record: RevisionRecord =
        serde_json::from_slice(line).map_err(|err| format!("not a revision record: {err}"))?;
    if line.len() < HASH_SUFFIX_LEN
        || !line[line.len() - HASH_SUFFIX_LEN..].starts_with(HASH_PREFIX.as_bytes())
    {
        return Err("the line does not end with its hash".into());
    }
    let mut body = line[..line.len() - HASH_SUFFIX_LEN].to_vec();
    body.push(b'}');
    let actual = hex(&Sha256::digest(&body));
    if actual != record.hash {
        return Err(format!(
            "revision {} does not match its hash (edited?)",
            record.revision
        ));
    }
    Ok(record)
}

/// Reads complete lines. Returns what reads back and, if any, the first broken link
/// (1-based line number and why). Past a break it keeps every line that parses.
fn read_chain(bytes: &[u8], keep_going: bool) -> (Vec<RevisionRecord>, Option<(usize, String)>) {
    let mut records: Vec<RevisionRecord> = Vec::new();
    let mut failure = None;
    let mut prev = GENESIS.to_string();
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let checked = decode_line(line).and_then(|record| {
            if record.prev != prev {
                return Err(format!(
                    "revision {} does not follow the line before it (a line was removed or edited)",
                    record.revision
                ));
            }
            match records.last() {
                Some(last) if record.revision <= last.revision => Err(format!(
                    "revision {} comes after revision {}",
                    record.revision, last.revision
                )),
                _ => Ok(record),
            }
        });
        match checked {
            Ok(record) => {
                prev = record.hash.clone();
                records.push(record);
            }
            Err(why) => {
                failure.get_or_insert((index + 1, why));
                if !keep_going {
                    break;
                }
                // Resume the chain after the bad line so later good lines still read.
                if let Ok(record) = serde_json::from_slice::<RevisionRecord>(line) {
                    prev = record.hash.clone();
                    if records
                        .last()
                        .is_none_or(|last| record.revision > last.revision)
                    {
                        records.push(record);
                    }
                }
            }
        }
    }
    (records, failure)
}

/// Verifies a whole journal file (no torn tail tolerated). Returns the number of records.
pub fn verify_file(path: &Path) -> Result<usize, JournalError> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    if !bytes.is_empty() && bytes.last() != Some(&b'\n') {
        return Err(JournalError::Broken {
            path: path.to_path_buf(),
            line: bytes.split(|&b| b == b'\n').count(),
            why: "the last line is incomplete".into(),
        });
    }
    match read_chain(&bytes, false) {
        (records, None) => Ok(records.len()),
        (_, Some((line, why))) => Err(JournalError::Broken {
            path: path.to_path_buf(),
            line,
            why,
        }),
    }
}

fn open_locked(path: &Path) -> Result<(File, bool), JournalError> {
    let created = !path.exists();
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_error(path))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        let err = std::io::Error::last_os_error();
        return Err(match err.kind() {
            std::io::ErrorKind::WouldBlock => JournalError::Locked {
                path: path.to_path_buf(),
            },
            _ => JournalError::Io {
                path: path.to_path_buf(),
                source: err,
            },
        });
    }
    Ok((file, created))
}

fn set_aside(path: &Path) -> Result<PathBuf, JournalError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let kept_as = path.with_file_name(format!("journal.broken-{stamp}.jsonl"));
    std::fs::rename(path, &kept_as).map_err(io_error(path))?;
    Ok(kept_as)
}

/// Makes a file's creation or rename durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
