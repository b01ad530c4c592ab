//! A real Prometheus server (Debian's `prometheus`) for the analysis tests and the
//! business-metric load scenario: on a loopback port, its storage in a directory of the
//! caller's, scraping `/metrics` of the given targets at a short interval; stopped (by PID)
//! and started again on the same port and storage.
//!
//! Blocking: start it from a thread that may block (`spawn_blocking`, `block_in_place`).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Prometheus may take to say it is ready (it replays its storage first).
const READY_WITHIN: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error("needs `prometheus` (the server, 2.x), which is not on PATH: install it with `apt-get install prometheus` (Debian, Ubuntu) or from https://prometheus.io/download")]
    Missing,
    #[error("{0}")]
    Other(String),
}

pub struct PrometheusServer {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrometheusServer {
    /// Finds `prometheus` on PATH and writes its config into `dir`: scrape `/metrics` of
    /// every target every `scrape` (at least 1s: Prometheus's own floor is finer, but a
    /// busy machine misses finer ones).
    pub fn find(
        dir: &Path,
        targets: &[SocketAddr],
        scrape: Duration,
    ) -> Result<PrometheusServer, PrometheusError> {
        let binary = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("prometheus"))
            .find(|path| path.is_file())
            .ok_or(PrometheusError::Missing)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|source| PrometheusError::Other(format!("no free port: {source}")))?
            .port();
        let scrape_ms = scrape.max(Duration::from_secs(1)).as_millis();
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: {scrape_ms}ms\n  scrape_timeout: {timeout_ms}ms\n  evaluation_interval: {scrape_ms}ms\n\
             scrape_configs:\n  - job_name: upstreams\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", "),
            timeout_ms = scrape_ms * 9 / 10,
        );
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(dir.join("prometheus.yml"), config))
            .map_err(|err| PrometheusError::Other(format!("{}: {err}", dir.display())))?;
        Ok(PrometheusServer {
            binary,
            port,
            dir: dir.to_path_buf(),
            child: None,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port and storage) and waits until it is ready to
    /// answer queries.
    pub fn start(&mut self) -> Result<(), PrometheusError> {
        self.stop();
        let log = std::fs::File::create(self.dir.join("prometheus.log"))
            .map_err(|err| PrometheusError::Other(format!("{}: {err}", self.dir.display())))?;
        let child = Command::new(&self.binary)
            .arg(format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|err| {
                PrometheusError::Other(format!("cannot start {}: {err}", self.binary.display()))
            })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), PrometheusError> {
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if self.ready() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(PrometheusError::Other(format!(
                    "prometheus exited ({status}): {}",
                    self.log().trim()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(PrometheusError::Other(format!(
            "prometheus not ready within {READY_WITHIN:?}: {}",
            self.log().trim()
        )))
    }

    /// `GET /-/ready` answers 200.
    fn ready(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!(
            "GET /-/ready HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 200")
    }

    /// Kills the process (by its PID) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What it logged (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        self.stop();
    }
}
