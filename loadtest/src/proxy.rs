//! The proxy under test: the real `switchyard run` binary (default), or `RunningProxy`
//! in the harness process. Either way the harness can reload it, run `ctl` against it,
//! and learn each routing revision and when it appeared.

use crate::scenario::ProxyMode;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use switchyard::config::Config;
use switchyard::run::RunningProxy;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};

/// The binary prints this once it is accepting connections.
const READY_LINE: &str = "switchyard is serving";
const START_TIMEOUT: Duration = Duration::from_secs(15);
const CTL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Serialize)]
pub struct RevisionMark {
    /// Seconds into the run (0 for what happened before the load began).
    pub at_secs: f64,
    pub revision: u64,
    pub note: String,
}

/// A revision as first seen, before the run's time zero is known.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    revision: u64,
    note: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The proxy would not start with this scenario's config: usually a feature the
    /// scenario needs is not built yet.
    #[error("the proxy refused to start: {0}")]
    Refused(String),
    #[error("cannot start {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

enum Process {
    Binary(Child),
    InProcess(RunningProxy),
}

pub struct ProxyUnderTest {
    process: Process,
    binary: PathBuf,
    config_path: PathBuf,
    admin_socket: PathBuf,
    revisions: Arc<Mutex<Vec<Seen>>>,
}

impl ProxyUnderTest {
    /// Writes `text` to `config_path` and starts the proxy it configures.
    pub async fn start(
        mode: ProxyMode,
        binary: &Path,
        config_path: &Path,
        text: &str,
    ) -> Result<ProxyUnderTest, ProxyError> {
        write_config(config_path, text)?;
        let revisions = Arc::new(Mutex::new(Vec::new()));
        let process = match mode {
            ProxyMode::Binary => {
                let child = spawn_binary(binary, config_path, revisions.clone()).await?;
                Process::Binary(child)
            }
            ProxyMode::InProcess => {
                let config = Config::parse(config_path, text)
                    .map_err(|e| ProxyError::Refused(e.to_string()))?;
                let workers = config.workers.max(1);
                let proxy = RunningProxy::start(config, config_path, workers)
                    .await
                    .map_err(|e| ProxyError::Refused(e.to_string()))?;
                watch_table(&proxy, revisions.clone());
                Process::InProcess(proxy)
            }
        };
        Ok(ProxyUnderTest {
            process,
            binary: binary.to_path_buf(),
            config_path: config_path.to_path_buf(),
            admin_socket: config_path.with_file_name("admin.sock"),
            revisions,
        })
    }

    /// Replaces the config file and has the proxy reload it.
    pub async fn reload(&self, text: &str) -> Result<String, String> {
        write_config(&self.config_path, text).map_err(|e| e.to_string())?;
        match &self.process {
            Process::Binary(child) => {
                let pid = child.id().ok_or("the proxy has exited")?;
                // SAFETY: kill(2) with a pid we spawned and a valid signal number.
                let sent = unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
                if sent != 0 {
                    return Err(format!(
                        "SIGHUP failed: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                Ok("config rewritten, SIGHUP sent".into())
            }
            Process::InProcess(proxy) => match proxy
                .controller
                .reload(switchyard::control::record::Origin::new(
                    "loadtest",
                    "scenario step",
                ))
                .await
            {
                Ok(reloaded) => Ok(format!(
                    "controller reloaded: revision {}",
                    reloaded.revision
                )),
                Err(err) => Err(err.to_string()),
            },
        }
    }

    /// Runs `switchyard ctl --socket ADMIN ARGS...`; its output, or why it failed.
    pub async fn ctl(&self, args: &[String]) -> Result<String, String> {
        let output = Command::new(&self.binary)
            .arg("ctl")
            .arg("--socket")
            .arg(&self.admin_socket)
            .args(args)
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(CTL_TIMEOUT, output)
            .await
            .map_err(|_| "ctl did not finish within 15 s".to_string())?
            .map_err(|e| format!("cannot run ctl: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let text = text.trim().to_string();
        if output.status.success() {
            Ok(text)
        } else {
            Err(first_line(&text))
        }
    }

    /// Resident memory of the proxy process in KiB (binary mode only).
    pub fn rss_kib(&self) -> Option<u64> {
        let Process::Binary(child) = &self.process else {
            return None;
        };
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Every revision seen, timed from `epoch` (the run's time zero).
    pub fn revisions(&self, epoch: Instant) -> Vec<RevisionMark> {
        self.revisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|seen| RevisionMark {
                at_secs: seen.at.saturating_duration_since(epoch).as_secs_f64(),
                revision: seen.revision,
                note: seen.note.clone(),
            })
            .collect()
    }

    /// SIGTERM and a bounded wait for the drain; killed if it does not stop.
    pub async fn stop(self) {
        match self.process {
            Process::Binary(mut child) => {
                if let Some(pid) = child.id() {
                    // SAFETY: as in reload.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                }
                if tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            }
            Process::InProcess(proxy) => {
                let _ = tokio::time::timeout(Duration::from_secs(10), proxy.shutdown()).await;
            }
        }
    }
}

fn write_config(path: &Path, text: &str) -> Result<(), ProxyError> {
    std::fs::write(path, text).map_err(|source| ProxyError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("(no output)").to_string()
}

async fn spawn_binary(
    binary: &Path,
    config_path: &Path,
    revisions: Arc<Mutex<Vec<Seen>>>,
) -> Result<Child, ProxyError> {
    let mut child = Command::new(binary)
        .arg("run")
        .arg("--config")
        .arg(config_path)
        .env("NO_COLOR", "1")
        .env("SWITCHYARD_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ProxyError::Spawn {
            binary: binary.to_path_buf(),
            source,
        })?;
    let Some(stderr) = child.stderr.take() else {
        return Err(ProxyError::Refused("no stderr from the proxy".into()));
    };
    let mut lines = BufReader::new(stderr).lines();
    let mut said = Vec::new();
    let ready = tokio::time::timeout(START_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            let line = strip_ansi(&line);
            if line.contains(READY_LINE) {
                return true;
            }
            said.push(line);
        }
        false
    })
    .await;
    if ready != Ok(true) {
        let _ = child.kill().await;
        let why = match ready {
            Err(_) => "it did not say it was serving within 15 s".to_string(),
            Ok(_) => said.join("\n"),
        };
        return Err(ProxyError::Refused(why));
    }
    mark(&revisions, 1, "started".into());
    tokio::spawn(follow_log(lines, revisions));
    Ok(child)
}

/// Reads the proxy's log to the end, noting every line that names a new revision.
async fn follow_log(
    mut lines: tokio::io::Lines<BufReader<ChildStderr>>,
    revisions: Arc<Mutex<Vec<Seen>>>,
) {
    while let Ok(Some(line)) = lines.next_line().await {
        let line = strip_ansi(&line);
        if let Some(revision) = revision_in(&line) {
            let note = line
                .split_once(": ")
                .map_or(line.as_str(), |(_, message)| message)
                .trim()
                .to_string();
            mark(&revisions, revision, note);
        }
    }
}

/// In-process: the table itself says when its revision changes.
fn watch_table(proxy: &RunningProxy, revisions: Arc<Mutex<Vec<Seen>>>) {
    let plane = proxy.controller.plane.clone();
    tokio::spawn(async move {
        let mut seen = 0;
        // Ends with the harness: Arc::strong_count drops to one when the proxy is gone.
        while Arc::strong_count(&plane) > 1 {
            let revision = plane.table.load().revision;
            if revision != seen {
                seen = revision;
                mark(&revisions, revision, "new routing table".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

fn mark(revisions: &Mutex<Vec<Seen>>, revision: u64, note: String) {
    revisions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Seen {
            at: Instant::now(),
            revision,
            note,
        });
}

/// `revision=N` in a log line (tracing's key=value form).
fn revision_in(line: &str) -> Option<u64> {
    let rest = line.split("revision=").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Removes terminal colour codes, in case the log has them anyway.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for end in chars.by_ref() {
                if end.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_read_from_log_lines() {
        let line = "2026-01-01T00:00:00Z  INFO switchyard::run: config reloaded revision=12";
        assert_eq!(revision_in(line), Some(12));
        assert_eq!(revision_in("nothing here"), None);
        assert_eq!(revision_in("revision=x"), None);
        let colored = "\x1b[2mrevision\x1b[0m\x1b[2m=\x1b[0m7 done";
        assert_eq!(revision_in(&strip_ansi(colored)), Some(7));
    }
}
