//! Test support: sample upstreams, a proxy in this process or as the real binary, and a
//! real HTTP client. Everything listens on 127.0.0.1 with OS-picked ports.
#![allow(dead_code)]

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchyard::config::Config;
use switchyard::run::RunningProxy;
use switchyard::sample::SampleUpstream;

pub const LOOPBACK_ANY: &str = "127.0.0.1:0";

pub async fn upstream(name: &str) -> SampleUpstream {
    SampleUpstream::start(name, LOOPBACK_ANY.parse().unwrap())
        .await
        .unwrap()
}

/// A proxy running in this process, with its config file in a temp dir.
pub struct TestProxy {
    pub proxy: RunningProxy,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl TestProxy {
    /// `body` is the config after the [proxy] section's listen line.
    pub async fn start(body: &str) -> TestProxy {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("switchyard.toml");
        std::fs::write(&config_path, full_config(LOOPBACK_ANY, dir.path(), body)).unwrap();
        let config = Config::load(&config_path).unwrap();
        let proxy = RunningProxy::start(config, &config_path, 1).await.unwrap();
        TestProxy {
            proxy,
            dir,
            config_path,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr
    }

    /// Rewrites the config file (same listen address) for a reload.
    pub fn rewrite(&self, body: &str) {
        let text = full_config(&self.addr().to_string(), self.dir.path(), body);
        std::fs::write(&self.config_path, text).unwrap();
    }
}

pub fn full_config(listen: &str, dir: &Path, body: &str) -> String {
    format!(
        "[proxy]\nlisten = \"{listen}\"\n{body}\n\n[admin]\nsocket = \"{}\"\n\n[state]\ndir = \"{}\"\n",
        dir.join("admin.sock").display(),
        dir.join("state").display()
    )
}

/// A two-version service "shop" in TOML.
pub fn two_versions(
    stable: &SampleUpstream,
    canary: &SampleUpstream,
    weights: (u64, u64),
    extra: &str,
) -> String {
    format!(
        r#"
[services.shop]
stable = "{s}"
weights = {{ {s} = {ws}, {c} = {wc} }}
{extra}

[services.shop.versions.{s}]
endpoints = ["{sa}"]

[services.shop.versions.{c}]
endpoints = ["{ca}"]
"#,
        s = stable.name,
        c = canary.name,
        ws = weights.0,
        wc = weights.1,
        sa = stable.addr,
        ca = canary.addr,
    )
}

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// What a test needs from one response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Option<String>,
    pub headers: http::HeaderMap,
    pub body: String,
}

pub async fn get(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = Request::get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let version = headers
        .get("switchyard-version")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        version,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// The real `switchyard` binary, killed when dropped.
pub struct BinaryProxy {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl BinaryProxy {
    /// Starts `switchyard run` on `config` and waits until it accepts connections.
    pub fn spawn(config: &Path, addr: SocketAddr, log: PathBuf) -> BinaryProxy {
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let proxy = BinaryProxy { child, addr, log };
        wait_for_port(addr);
        proxy
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for BinaryProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_for_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listening on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free loopback port for the binary to listen on.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind(LOOPBACK_ANY)
        .unwrap()
        .local_addr()
        .unwrap()
}
