//! Spans over OTLP/HTTP, decoded by OpenTelemetry's own protobuf classes (PyPI's
//! opentelemetry-proto, in `tests/otlp/receiver.py`): the HTTP server attributes and
//! switchyard's own, the caller's `traceparent` as parent and its sampled flag followed
//! (`ParentBased(TraceIdRatioBased)`), the context sent upstream, and an unreachable
//! collector that costs the requests nothing.

mod common;

use common::{admin_raw_on, client, get, pair};
use http::StatusCode;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The Python receiver, started for one test and stopped with it.
struct Collector {
    child: Child,
    port: u16,
    spans: PathBuf,
    _dir: tempfile::TempDir,
}

impl Collector {
    fn start() -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let spans = dir.path().join("spans.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otlp/receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(&spans)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut first = String::new();
        let stdout = child.stdout.take().unwrap();
        BufReader::new(stdout).read_line(&mut first).unwrap();
        let port = first.trim().parse().unwrap_or_else(|_| {
            panic!("the OTLP receiver did not start (is opentelemetry-proto installed? ./test installs it): {first:?}")
        });
        Collector {
            child,
            port,
            spans,
            _dir: dir,
        }
    }

    fn config(&self, sample: f64) -> String {
        format!(
            "\n[telemetry.otlp]\nendpoint = \"http://127.0.0.1:{}\"\nsample = {sample}\n",
            self.port
        )
    }

    /// Waits (bounded) until `count` spans arrived; returns all so far.
    async fn spans(&self, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&self.spans).unwrap_or_default();
            let spans: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if spans.len() >= count {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} spans",
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `traceparent` the upstream got, from the sample upstream's `/headers` listing.
fn sent_traceparent(listing: &str) -> Option<String> {
    listing
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_caller_is_followed_and_its_span_has_the_http_attributes() {
    let collector = Collector::start();
    // Ratio 0: only the caller's decision can sample.
    let pair = pair("blue", "canary", (100, 0), &collector.config(0.0)).await;
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let reply = get(
        &client(),
        pair.proxy.addr(),
        "/headers?x=1",
        &[
            ("traceparent", &caller),
            ("tracestate", "vendor=abc,other=x"),
            ("user-agent", "probe/1.0"),
            ("x-request-id", "req-7"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let sent = sent_traceparent(&reply.body).expect("a traceparent upstream");
    assert!(
        reply.body.contains("tracestate: vendor=abc,other=x\n"),
        "{}",
        reply.body
    );

    let spans = collector.spans(1).await;
    let span = &spans[0];
    assert_eq!(span["content_type"], "application/x-protobuf");
    assert_eq!(span["resource"]["service.name"], "switchyard");
    assert_eq!(span["name"], "GET");
    assert_eq!(span["kind"], 2, "SERVER");
    assert_eq!(span["trace_id"], CALLER_TRACE);
    assert_eq!(span["parent_span_id"], CALLER_SPAN);
    assert_eq!(span["trace_state"], "vendor=abc,other=x");
    // The upstream's parent is the proxy's span, in the caller's trace, sampled.
    assert_eq!(
        sent,
        format!("00-{CALLER_TRACE}-{}-01", span["span_id"].as_str().unwrap())
    );
    assert_eq!(
        span["flags"].as_u64().unwrap() & 0x301,
        0x301,
        "sampled, remote parent"
    );
    assert!(span["end"].as_u64() >= span["start"].as_u64());
    assert_eq!(span["status_code"], 0, "unset");
    let attributes = &span["attributes"];
    let port = pair.proxy.addr().port();
    for (key, value) in [
        ("http.request.method", Value::from("GET")),
        ("url.path", "/headers".into()),
        ("url.scheme", "http".into()),
        ("server.address", "127.0.0.1".into()),
        ("server.port", port.into()),
        ("network.protocol.version", "1.1".into()),
        ("client.address", "127.0.0.1".into()),
        ("user_agent.original", "probe/1.0".into()),
        ("http.response.status_code", 200.into()),
        ("switchyard.service", "shop".into()),
        ("switchyard.version", "blue".into()),
        ("switchyard.endpoint", pair.stable.addr.to_string().into()),
        ("switchyard.retried", false.into()),
        ("switchyard.end", "completed".into()),
        ("switchyard.request_id", "req-7".into()),
    ] {
        assert_eq!(attributes[key], value, "{key} in {attributes}");
    }
    assert!(
        attributes["switchyard.revision"].as_u64() >= Some(1),
        "{attributes}"
    );
    // The query may carry secrets: it never goes to the collector.
    assert!(attributes.get("url.query").is_none(), "{attributes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratio_zero_exports_nothing_of_its_own_and_an_unsampled_caller_is_followed() {
    let collector = Collector::start();
    let pair = pair("blue", "canary", (100, 0), &collector.config(0.0)).await;
    let http = client();
    for _ in 0..20 {
        let reply = get(&http, pair.proxy.addr(), "/headers", &[]).await;
        // A new trace, not sampled, and told so upstream.
        let sent = sent_traceparent(&reply.body).expect("a traceparent upstream");
        assert!(sent.starts_with("00-") && sent.ends_with("-00"), "{sent}");
    }
    let unsampled = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-00");
    let reply = get(
        &http,
        pair.proxy.addr(),
        "/headers",
        &[("traceparent", &unsampled)],
    )
    .await;
    assert_eq!(
        sent_traceparent(&reply.body),
        Some(unsampled),
        "passed untouched"
    );
    // Spans leave in order: once this one is in, any earlier one would be too.
    let sampled = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    get(
        &http,
        pair.proxy.addr(),
        "/",
        &[("traceparent", &sampled), ("x-request-id", "marker")],
    )
    .await;
    let spans = collector.spans(1).await;
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0]["attributes"]["switchyard.request_id"], "marker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_trace_at_ratio_one_is_exported_logged_and_sent_upstream() {
    let collector = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let extra = format!(
        "{}\n[proxy.access_log]\nto = \"file\"\npath = \"{}\"\n",
        collector.config(1.0),
        log.display()
    );
    let pair = pair("blue", "canary", (100, 0), &extra).await;
    let http = client();
    let reply = get(&http, pair.proxy.addr(), "/headers", &[]).await;
    let sent = sent_traceparent(&reply.body).expect("a traceparent upstream");
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!((parts.len(), parts[3]), (4, "01"), "{sent}");
    // An unsampled caller is followed even at ratio 1.
    let unsampled = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-00");
    get(
        &http,
        pair.proxy.addr(),
        "/",
        &[("traceparent", &unsampled)],
    )
    .await;
    get(&http, pair.proxy.addr(), "/", &[("x-request-id", "marker")]).await;

    let spans = collector.spans(2).await;
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert_eq!(spans[0]["trace_id"], parts[1]);
    assert_eq!(spans[0]["span_id"], parts[2]);
    assert_eq!(spans[0]["parent_span_id"], "", "a root span");
    assert_eq!(
        spans[0]["flags"].as_u64().unwrap() & 0x301,
        0x101,
        "no remote parent"
    );
    assert_eq!(spans[1]["attributes"]["switchyard.request_id"], "marker");
    // The access log names the trace the proxy started.
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(first) = text.lines().next() {
            break serde_json::from_str::<Value>(first).unwrap();
        }
        assert!(Instant::now() < deadline, "no access log line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(first["trace_id"], parts[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_canary_failure_is_one_span_marked_retried() {
    let collector = Collector::start();
    let pair = pair("blue", "canary", (0, 100), &collector.config(1.0)).await;
    pair.canary.faults.set_error_rate(1.0);
    let reply = get(&client(), pair.proxy.addr(), "/", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let spans = collector.spans(1).await;
    let attributes = &spans[0]["attributes"];
    assert_eq!(attributes["switchyard.retried"], true, "{attributes}");
    assert_eq!(attributes["switchyard.end"], "retried_on_stable");
    assert_eq!(attributes["switchyard.version"], "blue");
    assert_eq!(
        attributes["switchyard.endpoint"],
        pair.stable.addr.to_string()
    );
    assert_eq!(attributes["http.response.status_code"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_costs_requests_nothing_and_is_counted() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let config = format!("\n[telemetry.otlp]\nendpoint = \"http://127.0.0.1:{port}\"\n");
    let pair = pair("blue", "canary", (100, 0), &config).await;
    let http = client();
    for _ in 0..20 {
        assert_eq!(
            get(&http, pair.proxy.addr(), "/", &[]).await.status,
            StatusCode::OK
        );
    }
    let admin = pair.proxy.admin();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, metrics) = admin_raw_on(&admin, http::Method::GET, "/metrics", "").await;
        if metrics.contains("switchyard_otlp_spans_failed_total 20\n") {
            assert!(metrics.contains("switchyard_otlp_spans_exported_total 0\n"));
            assert!(metrics.contains("switchyard_otlp_spans_dropped_total 0\n"));
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn bad_otlp_sections_are_named() {
    let cases = [
        ("endpoint = \"not a url\"", "is not a URL"),
        ("endpoint = \"https://c:4318\"", "only plain http"),
        ("endpoint = \"127.0.0.1:4318\"", "not an http:// URL"),
        (
            "endpoint = \"http://c:4318\"\nsample = 1.5",
            "1.5 is not between 0 and 1",
        ),
        (
            "endpoint = \"http://c:4318\"\nsample = -0.5",
            "not between 0 and 1",
        ),
        (
            "endpoint = \"http://c:4318\"\nsample = \"all\"",
            "invalid type",
        ),
        ("sample = 0.5", "missing field `endpoint`"),
        (
            "endpoint = \"http://c:4318\"\nprotocol = \"grpc\"",
            "unknown field",
        ),
    ];
    for (section, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let body = format!(
            "[services.shop]\nstable = \"v1\"\nweights = {{ v1 = 1 }}\n[services.shop.versions.v1]\nendpoints = [\"127.0.0.1:9\"]\n[telemetry.otlp]\n{section}\n"
        );
        let text = common::full_config("127.0.0.1:0", dir.path(), &body);
        let err = switchyard::config::Config::parse(Path::new("otlp.toml"), &text)
            .expect_err(section)
            .to_string();
        assert!(
            err.contains(expected) && err.contains("otlp.toml:"),
            "{section}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_queued_at_sigterm_are_exported_before_the_process_ends() {
    let collector = Collector::start();
    let blue = common::upstream("blue").await;
    let setup = common::Setup::new(std::slice::from_ref(&blue), "{ blue = 100 }", "");
    setup.write(
        std::slice::from_ref(&blue),
        "{ blue = 100 }",
        &collector.config(1.0),
    );
    let mut proxy = common::Proxy::start(&setup, &[]).await;
    let reply = get(&client(), proxy.addr, "/", &[("x-request-id", "last-span")]).await;
    assert_eq!(reply.status, StatusCode::OK);
    // At once: the exporter is still waiting (a second) for more spans to batch.
    proxy.terminate();
    let status = proxy.child.try_wait().unwrap().expect("exited");
    assert!(status.success(), "{status}: {}", proxy.log_text());
    let spans = std::fs::read_to_string(&collector.spans).unwrap_or_default();
    assert!(spans.contains("last-span"), "{spans:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_exchange_with_an_unusual_method_is_an_error_span() {
    let collector = Collector::start();
    let pair = pair("blue", "canary", (100, 0), &collector.config(1.0)).await;
    pair.stable.faults.set_error_rate(1.0);
    let request = http::Request::builder()
        .method("PURGE")
        .uri(format!("http://{}/", pair.proxy.addr()))
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = client().request(request).await.unwrap();
    let status = response.status().as_u16();
    assert!(status >= 500, "{status}");
    let spans = collector.spans(1).await;
    let span = &spans[0];
    assert_eq!(span["name"], "HTTP");
    assert_eq!(span["status_code"], 2, "ERROR");
    let attributes = &span["attributes"];
    assert_eq!(attributes["http.request.method"], "_OTHER");
    assert_eq!(attributes["http.request.method_original"], "PURGE");
    assert_eq!(attributes["http.response.status_code"], status);
    assert_eq!(attributes["error.type"], status.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_request_says_so_in_its_span() {
    let collector = Collector::start();
    let pair = pair("blue", "canary", (100, 0), &collector.config(1.0)).await;
    let h2: common::HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let reply = get(&h2, pair.proxy.addr(), "/over-h2", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let spans = collector.spans(1).await;
    let attributes = &spans[0]["attributes"];
    assert_eq!(attributes["network.protocol.version"], "2", "{attributes}");
    assert_eq!(attributes["url.path"], "/over-h2");
    assert_eq!(attributes["server.address"], "127.0.0.1");
}
