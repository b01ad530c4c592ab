//! `state.dir/rollouts.json`: every service's latest rollout, rewritten whole and durably
//! (temporary file, fsync, rename, fsync of the directory) on each change of step or status,
//! so a restart resumes where the rollout stood.

use super::plan::Rollout;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const ROLLOUTS_FILE: &str = "rollouts.json";

#[derive(Debug)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The store in `dir` and what it holds. A file that cannot be read is reported and
    /// treated as empty: a lost rollout only stops advancing, it never advances by itself.
    pub fn open(dir: &Path) -> (Store, Vec<Rollout>) {
        let path = dir.join(ROLLOUTS_FILE);
        let read = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| err.to_string()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(err) => Err(err.to_string()),
        };
        let rollouts = read.unwrap_or_else(|error| {
            tracing::error!(file = %path.display(), %error, "rollout state unreadable: no rollout resumes");
            Vec::new()
        });
        (Store { path }, rollouts)
    }

    pub async fn save(&self, rollouts: Vec<Rollout>) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(&rollouts).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_durably(&path, &bytes))
            .await
            .map_err(std::io::Error::other)?
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
