//! gRPC end to end through switchyard over h2c, with a real gRPC server and client that
//! no one here wrote: Debian's python3-grpcio (`/usr/bin/python3`), driven by the
//! scripts in tests/grpc/. A missing grpcio fails these tests; it never skips them.

mod common;
use common::*;
use http_body_util::BodyExt;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/grpc")
        .join(name)
        .display()
        .to_string()
}

/// tests/grpc/server.py on a loopback port; killed (by PID) on drop.
struct GrpcServer {
    child: Child,
    /// Kept open: the server also ends when its stdin closes (should this test die).
    _stdin: ChildStdin,
    addr: SocketAddr,
}

impl GrpcServer {
    fn start(name: &str, fail: Option<(&str, f64)>) -> GrpcServer {
        GrpcServer::start_with(name, fail, None)
    }

    /// With `tls` (certificate and key files), the server speaks TLS only.
    fn start_with(
        name: &str,
        fail: Option<(&str, f64)>,
        tls: Option<(&Path, &Path)>,
    ) -> GrpcServer {
        let mut command = Command::new(PYTHON);
        command.arg(script("server.py")).args(["--name", name]);
        if let Some((cert, key)) = tls {
            command.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some((code, ratio)) = fail {
            command.args(["--fail-code", code, "--fail-ratio", &ratio.to_string()]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("{PYTHON} did not start: {err}"));
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(port) = line.trim().strip_prefix("PORT ") else {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "the gRPC test server did not start (is python3-grpcio installed?):\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        GrpcServer {
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            child,
            _stdin: stdin,
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs tests/grpc/client.py against `target`; its JSON answer.
async fn client(target: SocketAddr, args: &[&str]) -> Value {
    let output = tokio::process::Command::new(PYTHON)
        .arg(script("client.py"))
        .arg(target.to_string())
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "client.py {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Service "api" over gRPC servers: (version name, address) pairs, stable first.
fn config(versions: &[(&str, SocketAddr)], weights: &str, extra: &str) -> String {
    let mut text = format!(
        "\n[services.api]\nstable = \"{}\"\nweights = {weights}\n{extra}\n",
        versions[0].0
    );
    for (name, addr) in versions {
        text.push_str(&format!(
            "\n[services.api.versions.{name}]\nendpoints = [\"{addr}\"]\nprotocol = \"h2c\"\n"
        ));
    }
    text
}

async fn metrics(proxy: &TestProxy) -> String {
    let (status, text) = admin_raw_on(&proxy.admin(), http::Method::GET, "/metrics", "").await;
    assert_eq!(status, http::StatusCode::OK);
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_four_call_kinds_pass_with_metadata_and_trailers() {
    let blue = GrpcServer::start("blue", None);
    let body = config(
        &[("blue", blue.addr)],
        "{ blue = 100 }",
        "sticky = { cookie = \"sy\" }",
    );
    let proxy = TestProxy::start(&body).await;
    let out = client(proxy.addr(), &["calls"]).await;
    assert_calls(&out);

    let text = metrics(&proxy).await;
    let line = "switchyard_grpc_calls_total{service=\"api\",version=\"blue\",status=\"OK\"} 4";
    assert!(text.contains(line), "{text}");
    let status = proxy.admin().service("api").await.unwrap();
    assert_eq!(status.versions[0].grpc.get("OK"), Some(&4), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_four_call_kinds_pass_over_tls_to_the_upstream() {
    // protocol = "h2": HTTP/2 over TLS (ALPN h2) to a gRPC server with a certificate
    // for "localhost" from a CA of the test's own; the client side stays h2c.
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let blue = GrpcServer::start_with("blue", None, Some((&cert, &key)));
    let body = config(
        &[("blue", blue.addr)],
        "{ blue = 100 }",
        "sticky = { cookie = \"sy\" }",
    )
    .replace(
        "protocol = \"h2c\"",
        &format!(
            "protocol = \"h2\"\ntls = {{ ca = \"{}\", server_name = \"localhost\" }}",
            ca.display()
        ),
    );
    let proxy = TestProxy::start(&body).await;
    let out = client(proxy.addr(), &["calls"]).await;
    assert_calls(&out);
}

/// A CA, and a server certificate and key it signed for "localhost": their files.
fn certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// The four call kinds of `client.py calls` all answered by "blue", with everything intact.
fn assert_calls(out: &Value) {
    let expected = [
        ("unary", "response", Value::from("blue:ping")),
        (
            "server_stream",
            "responses",
            serde_json::json!(["blue:0", "blue:1", "blue:2"]),
        ),
        ("client_stream", "response", Value::from("blue:a,b,c")),
        (
            "bidi",
            "responses",
            serde_json::json!(["blue:x", "blue:y", "blue:z"]),
        ),
    ];
    for (kind, field, answer) in expected {
        let call = &out[kind];
        assert_eq!(call["code"], "OK", "{kind}: {call}");
        assert_eq!(call[field], answer, "{kind}: {call}");
        for part in ["initial", "trailing"] {
            // Metadata the client sent reached the server, and the server's came back,
            // binary metadata included; trailing metadata are HTTP/2 trailers.
            assert_eq!(call[part]["x-echo"], "hello", "{kind} {part}: {call}");
            assert_eq!(call[part]["x-echo-bin"], "0001fe", "{kind} {part}: {call}");
            assert_eq!(call[part]["x-served-by"], "blue", "{kind} {part}: {call}");
        }
        // The proxy's own headers reach a gRPC client as for any other.
        assert_eq!(call["initial"]["switchyard-version"], "blue", "{call}");
        let cookie = call["initial"]["set-cookie"].as_str().unwrap_or_default();
        assert!(cookie.starts_with("sy="), "{kind}: {call}");
    }
}

async fn cut_back(proxy: &TestProxy) -> bool {
    let table = proxy.proxy.controller.plane.table.load();
    let service = &table.services()[0];
    service.share_of(1) == 0.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_answering_unavailable_is_cut_back_and_one_answering_not_found_is_not() {
    let stable = GrpcServer::start("blue", None);
    let failing = GrpcServer::start("canary", Some(("UNAVAILABLE", 0.2)));
    let proxy = TestProxy::start(&config(
        &[("blue", stable.addr), ("canary", failing.addr)],
        "{ blue = 50, canary = 50 }",
        "",
    ))
    .await;
    let load = tokio::spawn(client(proxy.addr(), &["load", "6000"]));
    let end = Instant::now() + Duration::from_secs(30);
    while !cut_back(&proxy).await {
        assert!(
            Instant::now() < end,
            "an UNAVAILABLE canary was never cut back"
        );
        assert!(
            !load.is_finished(),
            "all calls sent, and the canary still not cut back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    load.abort();
    // The incident is written just after the routing change.
    let end = Instant::now() + Duration::from_secs(5);
    while proxy.proxy.incidents.list(Some("api")).is_empty() && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let incidents = proxy.proxy.incidents.list(Some("api"));
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0].version, "canary");
    let text = metrics(&proxy).await;
    assert!(
        text.contains(
            "switchyard_errors_total{service=\"api\",version=\"canary\",kind=\"grpc_error\"}"
        ),
        "{text}"
    );

    // The same share of NOT_FOUND is the application answering: no cut-back.
    let app_answers = GrpcServer::start("canary", Some(("NOT_FOUND", 0.2)));
    let proxy = TestProxy::start(&config(
        &[("blue", stable.addr), ("canary", app_answers.addr)],
        "{ blue = 50, canary = 50 }",
        "",
    ))
    .await;
    let out = client(proxy.addr(), &["load", "3000"]).await;
    let not_found = out["codes"]["canary NOT_FOUND"].as_u64().unwrap_or(0);
    assert!(
        not_found > 200,
        "the canary barely answered NOT_FOUND: {out}"
    );
    assert!(
        !cut_back(&proxy).await,
        "a NOT_FOUND canary was cut back: {out}"
    );
    let status = proxy.admin().service("api").await.unwrap();
    assert_eq!(status.versions[1].grpc.get("NOT_FOUND"), Some(&not_found));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_deadline_gives_deadline_exceeded_and_a_dead_upstream_unavailable() {
    let blue = GrpcServer::start("blue", None);
    let refused = free_addr();
    let proxy = TestProxy::start(&format!(
        "{}\n{}",
        config(&[("blue", blue.addr)], "{ blue = 100 }", ""),
        config(
            &[("gone", refused)],
            "{ gone = 100 }",
            "hosts = [\"gone.test\"]"
        )
        .replace("services.api", "services.gone")
    ))
    .await;

    let out = client(proxy.addr(), &["deadline", "3000", "0.3"]).await;
    assert_eq!(out["code"], "DEADLINE_EXCEEDED", "{out}");

    // Without a timer of the client's own: the proxy itself ends the call at its
    // deadline, trailers-only (the client's fault: blue has no history longer than it).
    let started = Instant::now();
    let (head, trailers) = raw_call(
        proxy.addr(),
        "localhost",
        "/test.Echo/Sleep",
        b"3000",
        "200m",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let status = trailers
        .as_ref()
        .unwrap_or(&head)
        .get("grpc-status")
        .cloned();
    assert_eq!(status.unwrap(), "4", "{head:?} {trailers:?}");
    // (The Python client's own timer races the proxy's for the first call.)
    let text = metrics(&proxy).await;
    let counted = text
        .lines()
        .find_map(|line| line.strip_prefix("switchyard_grpc_calls_total{service=\"api\",version=\"blue\",status=\"DEADLINE_EXCEEDED\"} "))
        .and_then(|count| count.parse::<u64>().ok());
    assert!(matches!(counted, Some(1 | 2)), "{text}");

    // A version nobody listens for: UNAVAILABLE with the proxy's reason, not a 502.
    let (head, trailers) =
        raw_call(proxy.addr(), "gone.test", "/test.Echo/Unary", b"x", "5S").await;
    assert_eq!(head.get("grpc-status").unwrap(), "14", "{head:?}");
    assert_eq!(head.get("content-type").unwrap(), "application/grpc");
    assert_eq!(
        head.get("grpc-message").unwrap(),
        "upstream refused the connection"
    );
    assert!(
        trailers.is_none(),
        "a trailers-only answer has no trailers: {trailers:?}"
    );
}

/// One unary gRPC call over a plain HTTP/2 connection (no gRPC library, so no client-side
/// deadline): the response head and trailers.
async fn raw_call(
    proxy: SocketAddr,
    host: &str,
    path: &str,
    message: &[u8],
    timeout: &str,
) -> (http::HeaderMap, Option<http::HeaderMap>) {
    raw_call_with(proxy, host, path, message, &[("grpc-timeout", timeout)]).await
}

/// `raw_call` with metadata of the caller's choosing.
async fn raw_call_with(
    proxy: SocketAddr,
    host: &str,
    path: &str,
    message: &[u8],
    metadata: &[(&str, &str)],
) -> (http::HeaderMap, Option<http::HeaderMap>) {
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    let mut request = http::Request::post(format!("http://{host}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in metadata {
        request = request.header(*name, *value);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(framed)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let (head, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    (head.headers, collected.trailers().cloned())
}

/// The `grpc-status` of a call: in the trailers, else in the head (trailers-only).
fn status_of(head: &http::HeaderMap, trailers: &Option<http::HeaderMap>) -> String {
    let status = trailers.as_ref().unwrap_or(head).get("grpc-status");
    status.map_or_else(String::new, |s| s.to_str().unwrap_or_default().to_string())
}

/// A metric's value in /metrics text, 0 when absent.
fn metric(text: &str, line: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_deadlines_never_abort_a_healthy_canary_and_a_slow_one_is_still_blamed() {
    let blue = GrpcServer::start("blue", None);
    let canary = GrpcServer::start("canary", None);
    let matched =
        "\n[[services.api.match]]\nheader = \"x-canary\"\nvalue = \"1\"\nversion = \"canary\"\n";
    let proxy = TestProxy::start(&format!(
        "{}{matched}",
        config(
            &[("blue", blue.addr), ("canary", canary.addr)],
            "{ blue = 90, canary = 10 }",
            ""
        )
    ))
    .await;
    let to_canary = |timeout| [("x-canary", "1"), ("grpc-timeout", timeout)];
    for _ in 0..20 {
        let (head, trailers) = raw_call_with(
            proxy.addr(),
            "localhost",
            "/test.Echo/Unary",
            b"x",
            &to_canary("5S"),
        )
        .await;
        assert_eq!(status_of(&head, &trailers), "0", "{head:?}");
    }
    // The attack: 200 calls through the match header, each with a deadline of 1 ns.
    // The upstream resets most (UNAVAILABLE), the proxy ends some (DEADLINE_EXCEEDED),
    // and a few slip through in time (OK).
    let mut cut_off = 0;
    for _ in 0..200 {
        let (head, trailers) = raw_call_with(
            proxy.addr(),
            "localhost",
            "/test.Echo/Unary",
            b"x",
            &to_canary("1n"),
        )
        .await;
        cut_off += u64::from(status_of(&head, &trailers) != "0");
    }
    assert!(cut_off > 100, "the deadline hardly ever passed: {cut_off}");
    let text = metrics(&proxy).await;
    let faults =
        "switchyard_client_faults_total{service=\"api\",version=\"canary\",kind=\"deadline\"}";
    assert_eq!(metric(&text, faults), cut_off, "{text}");
    let errors = |text: &str| {
        ["timeout", "grpc_error"]
            .map(|kind| {
                let line = format!(
                    "switchyard_errors_total{{service=\"api\",version=\"canary\",kind=\"{kind}\"}}"
                );
                metric(text, &line)
            })
            .iter()
            .sum::<u64>()
    };
    assert_eq!(errors(&text), 0, "{text}");
    // A few of the guard's looks later, still no incident.
    proxy.guard_looks(5).await;
    assert!(
        !cut_back(&proxy).await,
        "a healthy canary was cut back by client deadlines"
    );
    assert!(proxy.proxy.incidents.list(Some("api")).is_empty());

    // A canary that takes 3 s where it took about a millisecond runs out a 1 s deadline:
    // that is the version's doing.
    let (head, trailers) = raw_call_with(
        proxy.addr(),
        "localhost",
        "/test.Echo/Sleep",
        b"3000",
        &to_canary("1S"),
    )
    .await;
    assert_eq!(status_of(&head, &trailers), "4", "{head:?} {trailers:?}");
    let text = metrics(&proxy).await;
    assert_eq!(errors(&text), 1, "{text}");
    assert_eq!(metric(&text, faults), cut_off, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_bad_binary_metadata_fails_only_its_own_call() {
    let blue = GrpcServer::start("blue", None);
    let proxy = TestProxy::start(&config(&[("blue", blue.addr)], "{ blue = 100 }", "")).await;
    // Eight calls of other clients in flight on the proxy's shared upstream connection.
    let others: Vec<_> = (0..8)
        .map(|_| {
            let addr = proxy.addr();
            tokio::spawn(async move {
                let metadata = [("grpc-timeout", "20S")];
                raw_call_with(addr, "localhost", "/test.Echo/Sleep", b"3000", &metadata).await
            })
        })
        .collect();
    // Each of those calls sleeps 3 s upstream: after 1 s all eight are well on their way.
    let reach_the_upstream = Duration::from_millis(1000);
    tokio::time::sleep(reach_the_upstream).await;
    // Binary metadata that is not base64, as an attacker's raw HTTP/2 client sends it.
    let metadata = [("grpc-timeout", "5S"), ("x-echo-bin", "!!!not base64")];
    let (head, trailers) = raw_call_with(
        proxy.addr(),
        "localhost",
        "/test.Echo/Unary",
        b"x",
        &metadata,
    )
    .await;
    assert_eq!(head.get("grpc-status").unwrap(), "13", "{head:?}");
    assert_eq!(head.get("grpc-message").unwrap(), "malformed metadata");
    assert!(trailers.is_none());
    for other in others {
        let (head, trailers) = other.await.unwrap();
        assert_eq!(status_of(&head, &trailers), "0", "{head:?} {trailers:?}");
    }
    let text = metrics(&proxy).await;
    let errors = text
        .lines()
        .filter(|line| line.starts_with("switchyard_errors_total") && !line.ends_with(" 0"))
        .count();
    assert_eq!(errors, 0, "{text}");
}
