//! Test support: sample upstreams, configs in temp dirs, the proxy in this process or as
//! the real binary, `ctl`, and real HTTP clients. Everything is on 127.0.0.1, OS-picked ports.
#![allow(dead_code)] // each test binary uses a different subset

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client as LegacyClient};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use switchyard::config::Config;
use switchyard::ctl::client::AdminClient;
use switchyard::run::RunningProxy;
use switchyard_testkit::SampleUpstream;
use tokio::net::TcpStream;

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

    /// Waits for the guard to judge `looks` more times (it looks every 100 ms), so a
    /// verdict the evidence so far would bring has come; a busy machine only makes it wait
    /// longer.
    pub async fn guard_looks(&self, looks: u64) {
        let board = &self.proxy.board;
        let until = board.looks() + looks;
        let deadline = Instant::now() + Duration::from_secs(60);
        while board.looks() < until {
            assert!(Instant::now() < deadline, "the guard stopped looking");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The admin API client on this proxy's socket.
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(self.dir.path().join("admin.sock"))
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

/// Service "shop" with a stable and a canary version at `weights`, in this process.
pub struct Pair {
    pub proxy: TestProxy,
    pub stable: SampleUpstream,
    pub canary: SampleUpstream,
}

pub async fn pair(stable: &str, canary: &str, weights: (u64, u64), extra: &str) -> Pair {
    let stable = upstream(stable).await;
    let canary = upstream(canary).await;
    let proxy = TestProxy::start(&two_versions(&stable, &canary, weights, extra)).await;
    Pair {
        proxy,
        stable,
        canary,
    }
}

pub type HttpClient = LegacyClient<HttpConnector, Empty<Bytes>>;

pub fn client() -> HttpClient {
    LegacyClient::builder(TokioExecutor::new()).build_http()
}

/// What a test needs from one response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Option<String>,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub async fn read(response: http::Response<hyper::body::Incoming>) -> Reply {
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
    Reply::read(response).await
}

/// A free loopback port for the binary to listen on.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind(LOOPBACK_ANY)
        .unwrap()
        .local_addr()
        .unwrap()
}

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

pub async fn upstreams(names: &[&str]) -> Vec<SampleUpstream> {
    let mut started = Vec::new();
    for name in names {
        started.push(
            SampleUpstream::start(name, "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap(),
        );
    }
    started
}

/// A temp dir holding a config, its state dir and admin socket.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
}

impl Setup {
    /// Service `shop` over `upstreams` (stable = the first), with `weights` and `extra` TOML.
    pub fn new(upstreams: &[SampleUpstream], weights: &str, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let config = dir.path().join("switchyard.toml");
        let setup = Setup {
            dir,
            config,
            socket,
        };
        setup.write(upstreams, weights, extra);
        setup
    }

    pub fn write(&self, upstreams: &[SampleUpstream], weights: &str, extra: &str) {
        let mut text = format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nsocket = \"{}\"\n{extra}\n\n[state]\ndir = \"{}\"\n\n\
             [services.shop]\nstable = \"{}\"\nweights = {weights}\n",
            self.socket.display(),
            self.dir.path().join("state").display(),
            upstreams[0].name,
        );
        for upstream in upstreams {
            text.push_str(&format!(
                "\n[services.shop.versions.{}]\nendpoints = [\"{}\"]\nrelease = {{ version = \"1.0-{}\", commit = \"c0ffee\" }}\n",
                upstream.name, upstream.addr, upstream.name
            ));
        }
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn journal(&self) -> PathBuf {
        self.dir.path().join("state").join("journal.jsonl")
    }

    pub fn client(&self) -> AdminClient {
        AdminClient::new(&self.socket)
    }

    /// Runs `switchyard ctl --socket S ARGS...`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl_at(&self.socket, args)
    }
}

pub fn ctl_at(socket: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("ctl")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env("USER", "tester")
        .output()
        .unwrap()
}

/// `switchyard ctl ARGS` against an in-process proxy, off the runtime's threads.
pub async fn ctl(proxy: &TestProxy, args: &[&str]) -> Output {
    let socket = proxy.admin().socket().to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ctl_at(&socket, &args)
    })
    .await
    .unwrap()
}

/// A `ctl` that succeeded: its stdout.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "ctl failed: {}{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// A `ctl` that failed with exactly one line on stderr, containing `expected`.
pub fn fails(output: Output, expected: &str) {
    assert!(
        !output.status.success(),
        "ctl should fail: {}",
        stdout(&output)
    );
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "one line of error: {err:?}");
    assert!(
        err.contains(expected),
        "{err:?} should mention {expected:?}"
    );
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `switchyard run` as a child process; killed on drop.
pub struct Proxy {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Proxy {
    /// Starts the binary and waits (bounded) until its admin socket answers.
    pub async fn start(setup: &Setup, extra_args: &[&str]) -> Proxy {
        match Proxy::try_start(setup, extra_args).await {
            Ok(proxy) => proxy,
            Err(log) => panic!("switchyard did not start:\n{log}"),
        }
    }

    /// Like `start`, but returns the process's log if it exits or never answers.
    pub async fn try_start(setup: &Setup, extra_args: &[&str]) -> Result<Proxy, String> {
        let log = setup
            .dir
            .path()
            .join(format!("run-{}.log", fastrand::u32(..)));
        let child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(&setup.config)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut proxy = Proxy {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = proxy.child.try_wait() {
                return Err(proxy.log_text());
            }
            if let Ok(status) = setup.client().status().await {
                proxy.addr = status.listen.parse().unwrap();
                return Ok(proxy);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(format!("no answer within 15s\n{}", proxy.log_text()))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal to the proxy process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Resident memory of the proxy process.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit (bounded).
    pub fn terminate(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A keep-alive HTTP/1.1 connection to the proxy.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        Client { sender }
    }

    /// GET `path`; returns the status and the `switchyard-version` header.
    pub async fn get(&mut self, path: &str) -> (StatusCode, String) {
        let request = Request::get(path)
            .header(header::HOST, "shop.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let reply = self.send(request).await;
        (reply.status, reply.version.unwrap_or_default())
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Reply {
        self.sender.ready().await.unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        Reply::read(response).await
    }

    /// How many of `n` requests each version answered.
    pub async fn tally(&mut self, n: usize) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..n {
            let (status, version) = self.get("/").await;
            assert_eq!(status, StatusCode::OK);
            *counts.entry(version).or_insert(0) += 1;
        }
        counts
    }
}

/// `(status, body)` of a raw admin request over the Unix socket.
pub async fn admin_raw(
    setup: &Setup,
    method: http::Method,
    path: &str,
    body: &str,
) -> (StatusCode, String) {
    admin_raw_on(&setup.client(), method, path, body).await
}

/// `(status, body)` of a raw admin request through `client`.
pub async fn admin_raw_on(
    client: &AdminClient,
    method: http::Method,
    path: &str,
    body: &str,
) -> (StatusCode, String) {
    let (status, bytes) = client
        .raw(method, path, Bytes::from(body.to_string()))
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Open-loop GETs at about `rps` for at most `max`, in the background.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<LoadResult>>,
}

/// Requests sent, non-200 replies, and replies retried on stable.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadResult {
    pub sent: u64,
    pub failed: u64,
    pub retried: u64,
}

impl Load {
    pub fn start(addr: SocketAddr, rps: u64, max: Duration) -> Load {
        Load::start_on(addr, "/", rps, max)
    }

    /// `start`, with GETs of `path`.
    pub fn start_on(addr: SocketAddr, path: &'static str, rps: u64, max: Duration) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = client();
        let workers = 16;
        let tasks = (0..workers)
            .map(|_| {
                let (client, stop) = (client.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut tick =
                        tokio::time::interval(Duration::from_micros(1_000_000 * workers / rps));
                    let end = Instant::now() + max;
                    let mut result = LoadResult::default();
                    while Instant::now() < end && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        tick.tick().await;
                        let reply = get(&client, addr, path, &[]).await;
                        result.sent += 1;
                        result.failed += u64::from(reply.status != 200);
                        result.retried +=
                            u64::from(reply.headers.contains_key("switchyard-retried-from"));
                    }
                    result
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops now and sums up.
    pub async fn stop(self) -> LoadResult {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.finish().await
    }

    /// Waits for the load to end by itself and sums up.
    pub async fn finish(self) -> LoadResult {
        let mut total = LoadResult::default();
        for task in self.tasks {
            let part = task.await.unwrap();
            total.sent += part.sent;
            total.failed += part.failed;
            total.retried += part.retried;
        }
        total
    }
}

/// Open-loop GETs at about `rps` for `duration`.
pub async fn load(addr: SocketAddr, rps: u64, duration: Duration) -> LoadResult {
    Load::start(addr, rps, duration).finish().await
}

/// An incident as the guard would have recorded it.
pub fn incident(id: u64, service: &str, summary: &str) -> switchyard::guard::incident::Incident {
    use switchyard::guard::incident::{Incident, SideReport, UserImpact};
    let side = |requests, errors| SideReport {
        requests,
        errors,
        error_rate: errors as f64 / requests as f64,
        p99_ms: 4.0,
    };
    Incident {
        id,
        service: service.into(),
        version: "canary".into(),
        stable: "blue".into(),
        started: "2024-05-01T12:00:00.000Z".into(),
        started_ms: 1_714_564_800_000,
        ended: "2024-05-01T12:00:00.840Z".into(),
        ended_ms: 1_714_564_800_840,
        duration_ms: 840,
        users: UserImpact {
            canary: side(100, 30),
            stable: side(900, 0),
            failed: 2,
            saved: 28,
        },
        cause: None,
        detection: serde_json::json!({ "rule": "error_rate" }),
        summary: summary.into(),
        restored_by: 7 + id,
        held: false,
        checks: None,
        advice: None,
    }
}

/// Writes `incidents` where the proxy keeps them, as an earlier run would have.
pub fn write_incidents(state_dir: &Path, incidents: &[switchyard::guard::incident::Incident]) {
    std::fs::create_dir_all(state_dir).unwrap();
    let lines: String = incidents
        .iter()
        .map(|i| serde_json::to_string(i).unwrap() + "\n")
        .collect();
    std::fs::write(state_dir.join("incidents.jsonl"), lines).unwrap();
}
pub mod fleet;
pub mod hooks;
pub mod json_upstream;
pub mod nats;
pub mod prometheus;
pub mod signed_receiver;

const CHROMIUM: &str = "/usr/bin/chromium";

/// The DOM a real headless browser builds from `url` after running its scripts for
/// three seconds of virtual time. A missing browser fails the test rather than skipping
/// it: `./test` installs it.
pub async fn browser_dom(url: String) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install it (apt-get install -y chromium; ./test does)"
    );
    let profile = tempfile::tempdir().unwrap();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--virtual-time-budget=3000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
