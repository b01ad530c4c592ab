//! The access log, request ids and trace context over real sockets: every field of a
//! line for an answered request, a canary failure retried on stable, a client that left
//! before its answer; ids kept, replaced and made, and carried upstream and back; hostile
//! bytes kept valid JSON, the text format, and the file reopened on SIGUSR1.

mod common;

use common::{client, get, pair, TestProxy};
use http::StatusCode;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn access_log(dir: &Path) -> String {
    format!(
        "\n[proxy.access_log]\nto = \"file\"\npath = \"{}\"\n",
        dir.join("access.log").display()
    )
}

/// Waits (bounded) until the log holds `count` lines; returns them parsed.
async fn lines(dir: &Path, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(dir.join("access.log")).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} lines: {text}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_request_has_every_field_and_its_ids() {
    let dir = tempfile::tempdir().unwrap();
    let pair = pair("blue", "canary", (100, 0), &access_log(dir.path())).await;
    let http = client();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reply = get(
        &http,
        pair.proxy.addr(),
        "/cart?item=7",
        &[
            ("x-request-id", "req-42"),
            ("traceparent", traceparent),
            ("user-agent", "probe/1.0"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["x-request-id"], "req-42");
    // None given: one is made, 128 bits in hex.
    let made = get(&http, pair.proxy.addr(), "/", &[]).await;
    let id = made.headers["x-request-id"].to_str().unwrap().to_string();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    // One that could split a log line is replaced.
    let odd = get(&http, pair.proxy.addr(), "/", &[("x-request-id", "a b\"c")]).await;
    assert_ne!(odd.headers["x-request-id"], "a b\"c");

    let lines = lines(dir.path(), 3).await;
    let line = &lines[0];
    for field in [
        "start",
        "duration_ms",
        "method",
        "authority",
        "path",
        "protocol",
        "status",
        "end",
        "bytes_in",
        "bytes_out",
        "upstream_ms",
        "service",
        "version",
        "endpoint",
        "revision",
        "request_id",
        "trace_id",
        "client",
        "user_agent",
    ] {
        assert!(line.get(field).is_some(), "no {field} in {line}");
    }
    assert_eq!(line["method"], "GET");
    assert_eq!(line["authority"], pair.proxy.addr().to_string());
    assert_eq!(line["path"], "/cart?item=7");
    assert_eq!(line["protocol"], "HTTP/1.1");
    assert_eq!(line["status"], 200);
    assert_eq!(line["end"], "completed");
    assert_eq!(line["bytes_out"], reply.body.len() as u64);
    assert_eq!(line["service"], "shop");
    assert_eq!(line["version"], "blue");
    assert_eq!(line["endpoint"], pair.stable.addr.to_string());
    assert_eq!(line["request_id"], "req-42");
    assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(line["client"], "127.0.0.1");
    assert_eq!(line["user_agent"], "probe/1.0");
    assert!(line["start"].as_str().unwrap().ends_with('Z'), "{line}");
    assert!(line["duration_ms"].as_f64().unwrap() >= line["upstream_ms"].as_f64().unwrap());
    assert_eq!(lines[1]["request_id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failure_retried_on_stable_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let pair = pair("blue", "canary", (0, 100), &access_log(dir.path())).await;
    pair.canary.faults.set_error_rate(1.0);
    let reply = get(&client(), pair.proxy.addr(), "/", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let lines = lines(dir.path(), 1).await;
    assert_eq!(lines[0]["end"], "retried_on_stable", "{}", lines[0]);
    assert_eq!(lines[0]["version"], "blue");
    // The endpoint that answered: stable's, not the canary's that failed.
    assert_eq!(lines[0]["endpoint"], pair.stable.addr.to_string());
}

/// An upstream that reads a request head, remembers it, and answers after `delay`.
async fn recording_upstream(
    delay: Duration,
) -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads, seen) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = heads
                    .send(String::from_utf8_lossy(&head).into_owned())
                    .await;
                tokio::time::sleep(delay).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    (addr, seen)
}

fn one_version(addr: std::net::SocketAddr, dir: &Path) -> String {
    format!(
        "{}\n[services.shop]\nstable = \"v1\"\nweights = {{ v1 = 100 }}\n[services.shop.versions.v1]\nendpoints = [\"{addr}\"]\n",
        access_log(dir)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_id_goes_upstream_and_a_client_that_left_is_logged_as_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, mut seen) = recording_upstream(Duration::from_secs(1)).await;
    let proxy = TestProxy::start(&one_version(addr, dir.path())).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
    stream
        // `Connection` naming the id cannot take it off the upstream request.
        .write_all(b"GET /slow HTTP/1.1\r\nhost: shop\r\nconnection: x-request-id\r\nx-request-id: leaving-1\r\n\r\n")
        .await
        .unwrap();
    let head = seen.recv().await.unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("x-request-id: leaving-1\r\n"),
        "{head}"
    );
    drop(stream);
    let lines = lines(dir.path(), 1).await;
    assert_eq!(lines[0]["end"], "client_gone", "{}", lines[0]);
    assert_eq!(lines[0]["status"], 499);
    assert_eq!(lines[0]["request_id"], "leaving-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_refused_at_max_connections_has_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let blue = common::upstream("blue").await;
    let body = format!(
        "max_connections = 1\n{}\n[services.shop]\nstable = \"v1\"\nweights = {{ v1 = 100 }}\n[services.shop.versions.v1]\nendpoints = [\"{}\"]\n",
        access_log(dir.path()),
        blue.addr
    );
    let proxy = TestProxy::start(&body).await;
    let mut held = TcpStream::connect(proxy.addr()).await.unwrap();
    held.write_all(b"GET / HTTP/1.1\r\nhost: shop\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = held.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), refused.read_to_end(&mut answer))
        .await
        .expect("the refused connection was closed")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 503"));
    let lines = lines(dir.path(), 2).await;
    let line = &lines[1];
    assert_eq!(line["end"], "refused_by_limit", "{line}");
    assert_eq!(line["status"], 503);
    assert_eq!(line["client"], "127.0.0.1");
    assert_eq!(line["method"], Value::Null);
    assert_eq!(line["path"], Value::Null);
    assert_eq!(line["service"], Value::Null);
    assert!(line["start"].as_str().unwrap().ends_with('Z'), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_at_sigterm_is_logged_before_the_process_ends() {
    let blue = common::upstream("blue").await;
    // The answer's head comes at once, its body over about a second.
    blue.faults.set_slow_body(5, Duration::from_millis(200));
    let setup = common::Setup::new(std::slice::from_ref(&blue), "{ blue = 100 }", "");
    let log = setup.dir.path().join("access.log");
    let extra = format!(
        "[proxy.access_log]\nto = \"file\"\npath = \"{}\"\n",
        log.display()
    );
    setup.write(std::slice::from_ref(&blue), "{ blue = 100 }", &extra);
    let mut proxy = common::Proxy::start(&setup, &[]).await;
    let addr = proxy.addr;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: shop\r\nx-request-id: last-one\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 16];
    stream.read_exact(&mut head).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 200"));
    // Mid-body: the drain lets it finish, and its line must reach the file.
    proxy.signal(libc::SIGTERM);
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest))
        .await
        .expect("the drained request finished")
        .unwrap();
    let exited = tokio::task::spawn_blocking(move || {
        let status = proxy.child.wait().unwrap();
        (status, proxy)
    });
    let (status, _proxy) = tokio::time::timeout(Duration::from_secs(20), exited)
        .await
        .expect("the proxy exited")
        .unwrap();
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let line: Value = serde_json::from_str(text.lines().last().expect("a line")).unwrap();
    assert_eq!(line["request_id"], "last-one", "{text}");
    assert_eq!(line["end"], "completed");
}

/// Sends `head` on a connection of its own and reads the answer to its end.
async fn raw_exchange(addr: std::net::SocketAddr, head: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bytes_in_a_request_still_make_valid_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let pair = pair("blue", "canary", (100, 0), &access_log(dir.path())).await;
    let addr = pair.proxy.addr();
    // Quotes, backslashes, braces, UTF-8 and a tab where a client chooses the bytes.
    let answer = raw_exchange(
        addr,
        b"GET /a\"b\\c{}\xc3\xa9?q=x\\y HTTP/1.1\r\nhost: shop\r\nuser-agent: evil \"agent\"\t\\u0000 </script>\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // A user agent that is not text (obs-text bytes), and a host no route knows.
    let answer = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nhost: sh\"op\\\r\nuser-agent: caf\xe9 \xff\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with(b"HTTP/1.1 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // `lines` parses every line as JSON.
    let lines = lines(dir.path(), 2).await;
    assert_eq!(lines[0]["path"], "/a\"b\\c{}é?q=x\\y", "{}", lines[0]);
    assert_eq!(lines[0]["user_agent"], "evil \"agent\"\t\\u0000 </script>");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[1]["authority"], "sh\"op\\", "{}", lines[1]);
    assert_eq!(lines[1]["user_agent"], "(not text)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_format_and_a_file_reopened_on_sigusr1() {
    let blue = common::upstream("blue").await;
    let setup = common::Setup::new(std::slice::from_ref(&blue), "{ blue = 100 }", "");
    let log = setup.dir.path().join("access.log");
    let extra = format!(
        "[proxy.access_log]\nto = \"file\"\npath = \"{}\"\nformat = \"text\"\n",
        log.display()
    );
    setup.write(std::slice::from_ref(&blue), "{ blue = 100 }", &extra);
    let proxy = common::Proxy::start(&setup, &[]).await;
    let http = client();
    let reply = get(
        &http,
        proxy.addr,
        "/x?a=1",
        &[("user-agent", "probe 1.0"), ("x-request-id", "text-1")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.ends_with('\n') {
            break text;
        }
        assert!(Instant::now() < deadline, "no line: {}", proxy.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let line = first.trim_end();
    // Keys in alphabetical order; a value with a space or `=` quoted, a missing one `-`.
    assert!(
        line.starts_with(&format!("authority={} bytes_in=- bytes_out=", proxy.addr)),
        "{line}"
    );
    for part in [
        " method=GET path=\"/x?a=1\" protocol=HTTP/1.1 request_id=text-1 revision=",
        " service=shop start=",
        " status=200 trace_id=- upstream_ms=",
        " user_agent=\"probe 1.0\" version=blue",
        " client=127.0.0.1 duration_ms=",
        " end=completed endpoint=",
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }
    // logrotate moves the file, then signals.
    let rotated = setup.dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    proxy.signal(libc::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = get(&http, proxy.addr, "/after", &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("path=/after") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new file: {}",
            proxy.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.starts_with(&first), "{old}");
}

#[test]
fn bad_access_log_sections_are_named() {
    let cases = [
        ("to = \"file\"", "needs a path"),
        ("to = \"syslog\"", "not \"off\", \"stdout\" or \"file\""),
        (
            "to = \"stdout\"\nformat = \"xml\"",
            "not \"json\" or \"text\"",
        ),
        (
            "to = \"stdout\"\npath = \"x.log\"",
            "only with to = \"file\"",
        ),
        ("to = \"stdout\"\ncolour = 1", "unknown field"),
    ];
    for (section, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let body = format!(
            "[proxy.access_log]\n{section}\n[services.shop]\nstable = \"v1\"\nweights = {{ v1 = 1 }}\n[services.shop.versions.v1]\nendpoints = [\"127.0.0.1:9\"]\n"
        );
        let text = common::full_config("127.0.0.1:0", dir.path(), &body);
        let err = switchyard::config::Config::parse(Path::new("log.toml"), &text)
            .expect_err(section)
            .to_string();
        assert!(
            err.contains(expected) && err.contains("log.toml:"),
            "{section}: {err}"
        );
    }
}
