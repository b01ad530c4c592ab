//! A real Prometheus server for analysis tests (`switchyard_testkit::prometheus`): on
//! loopback, storage in a temp dir, scraping the given targets every second. A test that
//! needs it fails when it is missing (./test installs Debian's prometheus).

use std::net::SocketAddr;
use std::time::Duration;
use switchyard_testkit::prometheus::PrometheusServer;

pub struct Prometheus {
    // Dropped after the server: it stops before its storage goes.
    server: PrometheusServer,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `/metrics` of `targets` every second; returns once it is
    /// ready to answer queries.
    pub fn start(targets: &[SocketAddr]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let server = PrometheusServer::find(dir.path(), targets, Duration::from_secs(1))
            .unwrap_or_else(|err| panic!("{err}"));
        let mut prometheus = Prometheus { server, _dir: dir };
        prometheus.resume();
        prometheus
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Kills the process (by its PID) and waits for it.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Starts it again on the same port and storage, and waits until it is ready.
    pub fn resume(&mut self) {
        self.server.start().unwrap_or_else(|err| panic!("{err}"));
    }
}
