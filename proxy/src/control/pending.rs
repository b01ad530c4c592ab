//! Aborts in force but not yet in the journal (it could not be written: disk full, I/O
//! error) are kept in `state.dir/pending.jsonl`, a file whose space is reserved when the
//! journal opens, so writing into it needs no new blocks. A restart before the journal
//! can take them still comes back with them in force.

use super::record::RevisionRecord;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const PENDING_FILE: &str = "pending.jsonl";
/// Room for a few hundred aborts.
const RESERVED: usize = 64 * 1024;

/// The reserved file: JSON lines, then zeros.
pub struct PendingFile {
    path: PathBuf,
    file: File,
}

impl PendingFile {
    /// Opens (or creates and reserves) the file; returns it with the records it holds.
    pub fn open(dir: &Path) -> std::io::Result<(PendingFile, Vec<RevisionRecord>)> {
        let path = dir.join(PENDING_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        // SAFETY: posix_fallocate on a file descriptor we own; no memory is involved.
        let reserved = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, RESERVED as i64) };
        if reserved != 0 {
            return Err(std::io::Error::from_raw_os_error(reserved));
        }
        let used = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let records = bytes[..used]
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect();
        Ok((PendingFile { path, file }, records))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the content with `records` (none: clears it), durably.
    pub fn write(&self, records: &[RevisionRecord]) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for record in records {
            serde_json::to_writer(&mut bytes, record)?;
            bytes.push(b'\n');
        }
        if bytes.len() > RESERVED {
            return Err(std::io::Error::other(format!(
                "{} pending aborts do not fit in {RESERVED} bytes",
                records.len()
            )));
        }
        bytes.resize(RESERVED, 0);
        self.file.write_all_at(&bytes, 0)?;
        self.file.sync_data()
    }
}
