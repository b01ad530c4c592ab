//! A `nats-server -js` for the fleet demo and the fleet load scenario: on a loopback port,
//! its storage in a directory of the caller's, stopped (by PID) and started again at will.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("needs `nats-server` (NATS with JetStream, 2.9 or later), which is not on PATH: install it with `apt-get install nats-server` (Debian, Ubuntu) or from https://nats.io/download")]
    Missing,
    #[error("{0}")]
    Other(String),
}

/// A `nats-server -js` on a loopback port, stopped (by PID) and started again at will.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Finds `nats-server` on PATH, or says what to install.
    pub fn find(dir: &Path) -> Result<NatsServer, NatsError> {
        let binary = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("nats-server"))
            .find(|path| path.is_file())
            .ok_or(NatsError::Missing)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|source| NatsError::Other(format!("no free port: {source}")))?
            .port();
        Ok(NatsServer {
            binary,
            port,
            dir: dir.to_path_buf(),
            child: None,
        })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port and storage) and waits until it listens.
    pub async fn start(&mut self) -> Result<(), NatsError> {
        let log = std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::File::create(self.dir.join("nats.log")))
            .map_err(|err| NatsError::Other(format!("{}: {err}", self.dir.display())))?;
        let child = Command::new(&self.binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.join("js"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|err| {
                NatsError::Other(format!("cannot start {}: {err}", self.binary.display()))
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(NatsError::Other(format!(
                    "nats-server did not listen within 10s (see {})",
                    self.dir.join("nats.log").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
