//! Bad admin input: each gets a 4xx with a one-line JSON error, and neither live routing
//! nor the journal changes.

mod common;

use common::{admin_raw, Setup};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use switchyard::config::Config;
use switchyard::run::RunningProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "s3cret-token-0123456789";

async fn start(setup: &Setup) -> RunningProxy {
    let config = Config::load(&setup.config).unwrap();
    RunningProxy::start(config, &setup.config, 1).await.unwrap()
}

fn tcp_setup(upstreams: &[switchyard_testkit::SampleUpstream]) -> Setup {
    let setup = Setup::new(upstreams, "{ blue = 95, canary = 5 }", "");
    let token = setup.dir.path().join("admin.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let extra = format!(
        "listen = \"127.0.0.1:0\"\ntoken_file = \"{}\"",
        token.display()
    );
    setup.write(upstreams, "{ blue = 95, canary = 5 }", &extra);
    setup
}

/// What must not change: the routing the data plane runs and the journal's bytes.
async fn fingerprint(setup: &Setup, proxy: &RunningProxy) -> (String, u64, Vec<u8>) {
    let status = setup.client().service("shop").await.unwrap();
    let routing = serde_json::to_string(
        &status
            .versions
            .iter()
            .map(|v| (&v.name, v.weight, v.share))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let revision = proxy.controller.plane.table.load().revision;
    (
        routing + &status.stable + &status.latched.to_string(),
        revision,
        std::fs::read(setup.journal()).unwrap(),
    )
}

fn assert_one_line_error(
    status: StatusCode,
    body: &str,
    expected_status: StatusCode,
    expected: &str,
) {
    assert_eq!(status, expected_status, "{body}");
    let error: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    let message = error["error"].as_str().unwrap();
    assert!(!message.contains('\n'), "{message:?}");
    assert!(
        message.contains(expected),
        "{message:?} should mention {expected:?}"
    );
}

#[tokio::test]
async fn bad_requests_over_the_socket_change_nothing() {
    let upstreams = common::upstreams(&["blue", "canary"]).await;
    let setup = tcp_setup(&upstreams);
    let proxy = start(&setup).await;
    let before = fingerprint(&setup, &proxy).await;
    let big = format!("{{\"reason\":\"{}\"}}", "x".repeat(70 * 1024));
    let big_order = format!(
        "{{\"command\":{{\"type\":\"reload\"}},\"reason\":\"{}\"}}",
        "x".repeat(70 * 1024)
    );
    // Deep nesting where serde skips a field it does not know (a release's spec takes
    // fields of later releases): refused at serde_json's recursion limit, no stack overflow.
    let deep = format!(
        "{{\"command\":{{\"type\":\"change\",\"service\":\"shop\",\"change\":{{\"action\":\"release\",\"version\":\"v9\",\"spec\":{{\"endpoints\":[\"127.0.0.1:1\"],\"later\":{}1{}}}}}}}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let cases: Vec<(Method, &str, &str, StatusCode, &str)> = vec![
        (
            Method::PUT,
            "/services/nope/weights",
            r#"{"weights":{"blue":1}}"#,
            StatusCode::NOT_FOUND,
            "no service \"nope\"",
        ),
        (
            Method::PUT,
            "/services/shop/weights",
            r#"{"weights":{"purple":1}}"#,
            StatusCode::NOT_FOUND,
            "no version \"purple\"",
        ),
        (
            Method::PUT,
            "/services/shop/weights",
            r#"{"weights":{"blue":-5}}"#,
            StatusCode::BAD_REQUEST,
            "-5",
        ),
        (
            Method::PUT,
            "/services/shop/weights",
            r#"{"weights":{"blue":2.5}}"#,
            StatusCode::BAD_REQUEST,
            "2.5",
        ),
        (
            Method::PUT,
            "/services/shop/weights",
            r#"{"weights":{"blue":"10"}}"#,
            StatusCode::BAD_REQUEST,
            "expected u64",
        ),
        (
            Method::PUT,
            "/services/shop/weights",
            r#"{"weights":{"blue":0,"canary":0}}"#,
            StatusCode::BAD_REQUEST,
            "all zero",
        ),
        (
            Method::PUT,
            "/services/shop/weights",
            r#"{"weights":{}}"#,
            StatusCode::BAD_REQUEST,
            "all zero",
        ),
        (
            Method::PUT,
            "/services/shop/weights",
            r#"{"weights":{"blue":1"#,
            StatusCode::BAD_REQUEST,
            "bad request body",
        ),
        (
            Method::PUT,
            "/services/shop/weights",
            "not json",
            StatusCode::BAD_REQUEST,
            "bad request body",
        ),
        (
            Method::PUT,
            "/services/shop/weights",
            r#"{"weights":{"blue":1},"colour":"red"}"#,
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            Method::PUT,
            "/services/shop/weights",
            "",
            StatusCode::BAD_REQUEST,
            "missing field `weights`",
        ),
        (
            Method::PUT,
            "/services/shop/weights",
            &big,
            StatusCode::PAYLOAD_TOO_LARGE,
            "over 65536 bytes",
        ),
        (
            Method::POST,
            "/services/shop/switch",
            r#"{"version":"purple"}"#,
            StatusCode::NOT_FOUND,
            "no version",
        ),
        (
            Method::POST,
            "/services/shop/promote",
            r#"{"version":"canary"}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `version`",
        ),
        (
            Method::POST,
            "/services/shop/rollback",
            r#"{"to":999}"#,
            StatusCode::NOT_FOUND,
            "no revision 999",
        ),
        (
            Method::POST,
            "/services/shop/rollback",
            "",
            StatusCode::CONFLICT,
            "no earlier routing",
        ),
        (
            Method::POST,
            "/services/shop/resume",
            "",
            StatusCode::CONFLICT,
            "no change",
        ),
        (
            Method::POST,
            "/services/shop/abort",
            r#"{"actor":""}"#,
            StatusCode::BAD_REQUEST,
            "actor must be",
        ),
        (
            Method::POST,
            "/services/shop/abort",
            r#"{"reason":"two\nlines"}"#,
            StatusCode::BAD_REQUEST,
            "one line",
        ),
        (
            Method::POST,
            "/services/shop/weights",
            r#"{"weights":{"blue":1}}"#,
            StatusCode::METHOD_NOT_ALLOWED,
            "use PUT",
        ),
        (
            Method::POST,
            "/services/shop/explode",
            "",
            StatusCode::NOT_FOUND,
            "no such endpoint",
        ),
        // `POST /commands`, the body an `Order`, as an attacker would write it.
        (
            Method::POST,
            "/commands",
            "",
            StatusCode::BAD_REQUEST,
            "the body is an order",
        ),
        (
            Method::POST,
            "/commands",
            r#"{"command":{"type":"explode","service":"shop"}}"#,
            StatusCode::BAD_REQUEST,
            "unknown variant `explode`",
        ),
        (
            Method::POST,
            "/commands",
            r#"{"command":{"type":"change","service":"shop","change":{"action":"weights","weights":{"blue":1},"stable":"canary"}}}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `stable`",
        ),
        (
            Method::POST,
            "/commands",
            r#"{"command":{"type":"change","service":"shop","change":{"action":"promote","version":"canary"}}}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `version`",
        ),
        (
            Method::POST,
            "/commands",
            r#"{"command":{"type":"reload","config":"/etc/passwd"}}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `config`",
        ),
        (
            Method::POST,
            "/commands",
            r#"{"command":{"type":"reload"},"actor":"eve","sudo":true}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `sudo`",
        ),
        (
            Method::POST,
            "/commands",
            r#"{"command":{"type":"change","service":"shop","change":{"action":"switch","version":["canary"]}}}"#,
            StatusCode::BAD_REQUEST,
            "bad request body",
        ),
        (
            Method::POST,
            "/commands",
            r#"{"command":{"type":"change","service":"shop","change":{"action":"weights","weights":{"blue":18446744073709551616}}}}"#,
            StatusCode::BAD_REQUEST,
            "bad request body",
        ),
        (
            Method::POST,
            "/commands",
            &deep,
            StatusCode::BAD_REQUEST,
            "recursion limit",
        ),
        (
            Method::POST,
            "/commands",
            &big_order,
            StatusCode::PAYLOAD_TOO_LARGE,
            "over 65536 bytes",
        ),
        (
            Method::POST,
            "/commands",
            r#"{"command":{"type":"change","service":"nope","change":{"action":"abort"}}}"#,
            StatusCode::NOT_FOUND,
            "no service \"nope\"",
        ),
        (
            Method::POST,
            "/commands",
            r#"{"command":{"type":"change","service":"shop","change":{"action":"abort"}},"actor":"eve\nroot"}"#,
            StatusCode::BAD_REQUEST,
            "actor must be",
        ),
        (
            Method::POST,
            "/commands",
            r#"{"command":{"type":"rollout","service":"shop","action":"approve"}}"#,
            StatusCode::BAD_REQUEST,
            "a command of its own",
        ),
        (
            Method::POST,
            "/commands",
            r#"{"command":{"type":"approve","service":"shop"},"force":true}"#,
            StatusCode::BAD_REQUEST,
            "takes no force",
        ),
        (
            Method::GET,
            "/commands",
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "use POST",
        ),
        (
            Method::GET,
            "/services/shop/history?limit=abc",
            "",
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            Method::GET,
            "/services/nope/history",
            "",
            StatusCode::NOT_FOUND,
            "no service",
        ),
        (
            Method::DELETE,
            "/status",
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET",
        ),
    ];
    for (method, path, body, status, expected) in cases {
        let (got, text) = admin_raw(&setup, method.clone(), path, body).await;
        assert_one_line_error(got, &text, status, expected);
        assert_eq!(
            fingerprint(&setup, &proxy).await,
            before,
            "{method} {path} {body:.60} changed something"
        );
    }

    // An invalid config file makes reload a 400 that changes nothing.
    let good = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        good.replace(
            "weights = { blue = 95, canary = 5 }",
            "weights = { blue = 95, purple = 5 }",
        ),
    )
    .unwrap();
    let (got, text) = admin_raw(&setup, Method::POST, "/reload", "").await;
    assert_one_line_error(got, &text, StatusCode::BAD_REQUEST, "purple");
    assert_eq!(fingerprint(&setup, &proxy).await, before);
    proxy.shutdown().await;
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let upstreams = common::upstreams(&["blue", "canary"]).await;
    let setup = tcp_setup(&upstreams);
    let proxy = start(&setup).await;
    let before = fingerprint(&setup, &proxy).await;
    let mut stream = tokio::net::UnixStream::connect(&setup.socket)
        .await
        .unwrap();
    let head = format!(
        "GET /status HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert_eq!(fingerprint(&setup, &proxy).await, before);
    proxy.shutdown().await;
}

async fn tcp(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "admin");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = sender
        .send_request(
            request
                .body(Full::new(bytes::Bytes::from(body.to_string())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn tcp_reads_are_open_and_changes_need_the_token() {
    let upstreams = common::upstreams(&["blue", "canary"]).await;
    let setup = tcp_setup(&upstreams);
    let proxy = start(&setup).await;
    let addr = proxy.admin.tcp.unwrap();
    let before = fingerprint(&setup, &proxy).await;
    let change = r#"{"weights":{"blue":50,"canary":50}}"#;
    for path in [
        "/status",
        "/services/shop",
        "/services/shop/history",
        "/metrics",
        "/incidents",
        "/",
    ] {
        assert_eq!(
            tcp(addr, Method::GET, path, None, "").await.0,
            StatusCode::OK,
            "{path}"
        );
    }
    let (status, body) = tcp(addr, Method::PUT, "/services/shop/weights", None, change).await;
    assert_one_line_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "Authorization: Bearer",
    );
    for wrong in ["nope", "s3cret-token-012345678", "s3cret-token-01234567890"] {
        let (status, body) = tcp(
            addr,
            Method::PUT,
            "/services/shop/weights",
            Some(wrong),
            change,
        )
        .await;
        assert_one_line_error(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            "wrong bearer token",
        );
    }
    let (status, _) = tcp(
        addr,
        Method::PUT,
        "/services/shop/weights",
        Some(""),
        change,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = tcp(addr, Method::POST, "/reload", Some("wrong"), "").await;
    assert_one_line_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "wrong bearer token",
    );
    let order = r#"{"command":{"type":"change","service":"shop","change":{"action":"abort"}}}"#;
    for (token, expected) in [
        (None, "Authorization: Bearer"),
        (Some("wrong"), "wrong bearer token"),
    ] {
        for (path, body) in [("/services/shop/rollout/start", ""), ("/commands", order)] {
            let (status, body) = tcp(addr, Method::POST, path, token, body).await;
            assert_one_line_error(status, &body, StatusCode::UNAUTHORIZED, expected);
        }
    }
    assert_eq!(fingerprint(&setup, &proxy).await, before);

    let (status, body) = tcp(
        addr,
        Method::PUT,
        "/services/shop/weights",
        Some(TOKEN),
        change,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(fingerprint(&setup, &proxy).await, before);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_missing_short_or_blank_token_file_is_refused_by_check_and_by_run() {
    let upstreams = common::upstreams(&["blue", "canary"]).await;
    let setup = tcp_setup(&upstreams);
    let token = setup.dir.path().join("admin.token");
    for (content, expected) in [
        (None, "No such file"),
        (Some("short\n"), "at least 16 characters"),
        (Some("12345"), "at least 16 characters"),
        (Some(" \n\t\n"), "is empty"),
    ] {
        match content {
            Some(text) => std::fs::write(&token, text).unwrap(),
            None => std::fs::remove_file(&token).unwrap(),
        }
        let err = Config::load(&setup.config).err().unwrap().to_string();
        assert!(
            err.contains("admin.token_file: ") && err.contains(expected),
            "{err}"
        );
        let check = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["check", "--config"])
            .arg(&setup.config)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&check.stderr);
        assert!(!check.status.success() && said.contains(expected), "{said}");
    }
    // A token that passed `check` and was then removed: `run` refuses too.
    std::fs::write(&token, "0123456789abcdef\n").unwrap();
    let config = Config::load(&setup.config).unwrap();
    std::fs::remove_file(&token).unwrap();
    let err = RunningProxy::start(config, &setup.config, 1)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("admin token_file") && err.contains("No such file"),
        "{err}"
    );
    assert!(!setup.socket.exists(), "no socket left behind");
}
