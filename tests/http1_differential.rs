//! The request head parser (`http1::request_head`) against hyper's server, head by head:
//! a corpus of valid, odd and hostile request heads, each written to a real hyper HTTP/1
//! connection and given to switchyard's parser. Every head one accepts and the other
//! refuses is listed below with the RFC's reason; a new difference, or a listed one
//! that went away, fails the test.

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;
use switchyard::http1::request_head::{RequestHead, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `max_header_bytes` for both (hyper's buffer cannot be set below 8 KiB).
const LIMIT: usize = 8192;

/// Heads switchyard refuses and hyper takes, with why.
const STRICTER: &[(&str, &str)] = &[
    ("te-and-cl", "RFC 9112 6.3 point 3: Transfer-Encoding with Content-Length ought to be handled as an error (request smuggling); hyper lets chunked win and drops the length"),
    ("cl-and-te", "RFC 9112 6.3 point 3: as above, the fields in the other order"),
    ("te-and-bad-cl", "RFC 9112 6.3 point 3: as above, whatever the length says"),
    ("no-host-1.1", "RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without Host (hyper leaves it to the service; the request path refused it before)"),
    ("two-hosts", "RFC 9112 3.2: ... or with more than one Host field (as above)"),
    ("host-twice-same", "RFC 9112 3.2: more than one Host field, even two equal ones"),
    ("asterisk-get", "RFC 9112 3.2.4: asterisk-form is for OPTIONS only"),
    ("authority-get", "RFC 9112 3.2.3: authority-form is for CONNECT only"),
    ("connect-origin", "RFC 9112 3.2.3: CONNECT takes authority-form only"),
    ("absolute-no-slashes", "RFC 9112 3.2.2 and RFC 9110 4.2: an http URI has an authority (`http://`); `http:shop` names no host"),
];

/// Heads hyper refuses and switchyard takes, with why.
const LOOSER: &[(&str, &str)] = &[];

#[tokio::test]
async fn the_request_head_parser_agrees_with_hyper_except_where_listed() {
    let corpus = corpus();
    assert!(corpus.len() >= 300, "{} heads", corpus.len());
    let mut stricter = BTreeMap::new();
    let mut looser = BTreeMap::new();
    let (mut both_take, mut both_refuse) = (0, 0);
    for (name, wire) in &corpus {
        let ours = ours_accepts(wire);
        let theirs = hyper_accepts(wire).await;
        match (ours, theirs) {
            (false, true) => drop(stricter.insert(name.clone(), ours_says(wire))),
            (true, false) => drop(looser.insert(name.clone(), String::new())),
            (true, true) => both_take += 1,
            (false, false) => both_refuse += 1,
        };
    }
    // The corpus has both kinds in numbers: neither side can pass by taking, or by
    // refusing, everything.
    assert!(
        both_take >= 150 && both_refuse >= 80,
        "{both_take} taken and {both_refuse} refused by both, of {}",
        corpus.len()
    );
    let listed = |list: &[(&str, &str)]| list.iter().map(|(n, _)| n.to_string()).collect();
    let stricter_found: Vec<String> = stricter.keys().cloned().collect();
    let looser_found: Vec<String> = looser.keys().cloned().collect();
    assert_eq!(
        stricter_found,
        sorted(listed(STRICTER)),
        "refused by switchyard only: {stricter:#?}"
    );
    assert_eq!(
        looser_found,
        sorted(listed(LOOSER)),
        "taken by switchyard only"
    );
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

fn ours_accepts(wire: &[u8]) -> bool {
    matches!(
        RequestHead::default().parse(wire, LIMIT),
        Ok(Status::Complete)
    )
}

fn ours_says(wire: &[u8]) -> String {
    match RequestHead::default().parse(wire, LIMIT) {
        Ok(status) => format!("{status:?}"),
        Err(err) => err.to_string(),
    }
}

/// Whether hyper's server, built as the proxy builds it, hands the request to its service.
async fn hyper_accepts(wire: &[u8]) -> bool {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let service = service_fn(|_request| async {
        let mut response = http::Response::new(http_body_util::Empty::<Bytes>::new());
        response
            .headers_mut()
            .insert("x-served", http::HeaderValue::from_static("1"));
        Ok::<_, Infallible>(response)
    });
    let connection = tokio::spawn(async move {
        let mut builder = hyper::server::conn::http1::Builder::new();
        // Half-close: the client ends its side after the head, and hyper still answers.
        // Parsing is as the proxy's server builds it.
        builder
            .max_buf_size(LIMIT)
            .keep_alive(true)
            .writev(false)
            .half_close(true);
        let _ = builder
            .serve_connection(TokioIo::new(server), service)
            .with_upgrades()
            .await;
    });
    // hyper may refuse a head, and close, before all of it is written.
    let _ = client.write_all(wire).await;
    let _ = client.shutdown().await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
        .await
        .expect("hyper answers or closes")
        .expect("read the answer");
    connection.abort();
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    answer.contains("x-served: 1")
}

/// The heads: named, so a difference can be listed by name.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut heads: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: String, wire: Vec<u8>| heads.push((name, wire));
    let get = |fields: &str| format!("GET / HTTP/1.1\r\nHost: shop\r\n{fields}\r\n").into_bytes();
    let put = |fields: &str| format!("PUT /up HTTP/1.1\r\nHost: shop\r\n{fields}\r\n").into_bytes();

    // Request lines: methods, targets and versions that are all fine.
    let methods = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "PURGE", "M-SEARCH",
    ];
    let targets = [
        "/",
        "/a/b?c=d&e",
        "/%7Euser/x.html",
        "/a;b,c:d@e!$'()*+=",
        "http://shop/x?y",
    ];
    for method in methods {
        for target in targets {
            for version in ["1.0", "1.1"] {
                add(
                    format!("line-{method}-{target}-{version}"),
                    format!("{method} {target} HTTP/{version}\r\nHost: shop\r\n\r\n").into_bytes(),
                );
            }
        }
    }
    // Request lines that are not.
    let lines: &[(&str, &str)] = &[
        ("line-lower-version", "GET / http/1.1"),
        ("line-version-1.2", "GET / HTTP/1.2"),
        ("line-version-2", "GET / HTTP/2.0"),
        ("line-version-0.9", "GET / HTTP/0.9"),
        ("line-no-version", "GET /"),
        ("line-extra-token", "GET / HTTP/1.1 x"),
        ("line-two-spaces", "GET  / HTTP/1.1"),
        ("line-tab", "GET\t/ HTTP/1.1"),
        ("line-leading-space", " GET / HTTP/1.1"),
        ("line-trailing-space", "GET / HTTP/1.1 "),
        ("line-space-in-target", "GET /a b HTTP/1.1"),
        ("line-empty-method", " / HTTP/1.1"),
        ("line-bad-method-char", "G(T / HTTP/1.1"),
        ("line-method-slash", "GE/T / HTTP/1.1"),
        ("line-empty-target", "GET  HTTP/1.1"),
        ("line-nul-target", "GET /\0 HTTP/1.1"),
        ("line-del-target", "GET /\x7f HTTP/1.1"),
        ("line-ctl-target", "GET /\x01 HTTP/1.1"),
        ("line-quote-target", "GET /\" HTTP/1.1"),
        ("line-backslash-target", "GET /\\ HTTP/1.1"),
        ("line-brace-target", "GET /{} HTTP/1.1"),
        ("line-pipe-target", "GET /| HTTP/1.1"),
        ("line-caret-target", "GET /^ HTTP/1.1"),
        ("line-backtick-target", "GET /` HTTP/1.1"),
        ("line-lt-target", "GET /< HTTP/1.1"),
        ("line-gt-target", "GET /?a=> HTTP/1.1"),
        ("line-hash-target", "GET /a#frag HTTP/1.1"),
        ("line-pct-bad", "GET /%zz HTTP/1.1"),
        ("line-pct-nul", "GET /%00 HTTP/1.1"),
        ("line-dotdot", "GET /../../etc/passwd HTTP/1.1"),
        ("line-double-slash", "GET //x HTTP/1.1"),
        ("line-relative", "GET a/b HTTP/1.1"),
        ("asterisk-options", "OPTIONS * HTTP/1.1"),
        ("asterisk-get", "GET * HTTP/1.1"),
        ("authority-connect", "CONNECT shop:443 HTTP/1.1"),
        ("authority-get", "GET shop:443 HTTP/1.1"),
        ("connect-origin", "CONNECT / HTTP/1.1"),
        ("absolute-https", "GET https://shop/a HTTP/1.1"),
        ("absolute-upper", "GET HTTP://SHOP/a HTTP/1.1"),
        ("absolute-port", "GET http://shop:8080/a HTTP/1.1"),
        ("absolute-no-path", "GET http://shop HTTP/1.1"),
        ("absolute-query-only", "GET http://shop?x HTTP/1.1"),
        ("absolute-userinfo", "GET http://u:p@shop/ HTTP/1.1"),
        ("absolute-empty-host", "GET http:/// HTTP/1.1"),
        ("absolute-no-slashes", "GET http:shop HTTP/1.1"),
        ("absolute-ipv6", "GET http://[::1]:80/ HTTP/1.1"),
        ("absolute-bad-ipv6", "GET http://[::1/ HTTP/1.1"),
        ("long-target", "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1"),
        ("long-method", "GETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGET / HTTP/1.1"),
        ("utf8-target", "GET /caf\u{e9} HTTP/1.1"),
    ];
    for (name, line) in lines {
        add(
            name.to_string(),
            format!("{line}\r\nHost: shop\r\n\r\n").into_bytes(),
        );
    }
    for (name, wire) in [
        ("empty", &b""[..]),
        ("only-crlf", b"\r\n\r\n"),
        ("leading-crlf", b"\r\nGET / HTTP/1.1\r\nHost: shop\r\n\r\n"),
        ("leading-lf", b"\nGET / HTTP/1.1\r\nHost: shop\r\n\r\n"),
        ("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: shop\n\n"),
        ("bare-lf-end", b"GET / HTTP/1.1\r\nHost: shop\r\n\n"),
        ("bare-cr-line", b"GET / HTTP/1.1\rHost: shop\r\n\r\n"),
        ("bare-cr-end", b"GET / HTTP/1.1\r\nHost: shop\r\r\n"),
        ("no-host-1.1", b"GET / HTTP/1.1\r\n\r\n"),
        ("no-host-1.0", b"GET / HTTP/1.0\r\n\r\n"),
        ("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        (
            "host-twice-same",
            b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
        ),
        (
            "te-1.0",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        (
            "binary-garbage",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        ),
        ("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ("nul-line", b"\0\0\0\0\r\n\r\n"),
    ] {
        add(name.to_string(), wire.to_vec());
    }

    // Fields: names and values, one odd field in an otherwise plain GET.
    let fields: &[(&str, &str)] = &[
        ("field-plain", "X-A: b"),
        ("field-empty-value", "X-A:"),
        ("field-empty-value-space", "X-A: "),
        ("field-no-space", "X-A:b"),
        ("field-tabs", "X-A:\tb\t"),
        ("field-inner-tab", "X-A: b\tc"),
        ("field-many-spaces", "X-A:      b      "),
        ("field-lower", "x-a: b"),
        ("field-upper", "X-ABC-DEF: b"),
        ("field-token-chars", "!#$%&'*+-.^_`|~09azAZ: b"),
        ("field-obs-text", "X-A: caf\u{e9}"),
        ("field-high-bytes", "X-A: \u{ff}\u{fe}"),
        ("field-quote", "X-A: \"b\""),
        ("field-colon-in-value", "X-A: b: c"),
        ("field-comma-list", "X-A: a, b, c"),
        ("field-space-before-colon", "X-A : b"),
        ("field-tab-before-colon", "X-A\t: b"),
        ("field-space-in-name", "X A: b"),
        ("field-no-colon", "X-A b"),
        ("field-empty-name", ": b"),
        ("field-paren-name", "X(A): b"),
        ("field-quote-name", "X\"A: b"),
        ("field-slash-name", "X/A: b"),
        ("field-at-name", "X@A: b"),
        ("field-utf8-name", "X-\u{e9}: b"),
        ("field-nul-value", "X-A: b\0c"),
        ("field-del-value", "X-A: b\x7fc"),
        ("field-ctl-value", "X-A: b\x01c"),
        ("field-esc-value", "X-A: b\x1bc"),
        ("field-cr-value", "X-A: b\rc"),
        ("field-vt-value", "X-A: b\x0bc"),
        ("field-ff-value", "X-A: b\x0cc"),
        ("field-obs-fold-space", "X-A: b\r\n c"),
        ("field-obs-fold-tab", "X-A: b\r\n\tc"),
        ("field-leading-space-line", " X-A: b"),
        ("field-long-value", "X-A: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
        ("connection-close", "Connection: close"),
        ("connection-keep-alive", "Connection: keep-alive"),
        ("connection-list", "Connection: x-a, close, keep-alive"),
        ("connection-garbage", "Connection: ,,,"),
        ("upgrade-websocket", "Connection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13"),
        ("upgrade-h2c", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"),
        ("upgrade-no-connection", "Upgrade: websocket"),
        ("upgrade-empty", "Connection: upgrade\r\nUpgrade:"),
        ("expect-continue", "Expect: 100-continue"),
        ("expect-continue-upper", "Expect: 100-CONTINUE"),
        ("expect-other", "Expect: something"),
        ("te-trailers", "TE: trailers"),
        ("te-gzip", "TE: gzip"),
        ("proxy-connection", "Proxy-Connection: keep-alive"),
        ("keep-alive-field", "Keep-Alive: timeout=5"),
        ("cookie-many", "Cookie: a=1\r\nCookie: b=2\r\nCookie: c=3"),
        ("x-forwarded-for", "X-Forwarded-For: 1.2.3.4, 5.6.7.8"),
        ("traceparent", "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("grpc-timeout", "content-type: application/grpc\r\ngrpc-timeout: 10S"),
    ];
    for (name, field) in fields {
        add(name.to_string(), get(&format!("{field}\r\n")));
    }
    for (name, host) in [
        ("host-value-empty", ""),
        ("host-port", "shop:8080"),
        ("host-ipv4", "127.0.0.1"),
        ("host-ipv6", "[::1]:8080"),
        ("host-userinfo", "u@shop"),
        ("host-path", "shop/x"),
        ("host-space", "sh op"),
        ("host-bad-port", "shop:x"),
        ("host-utf8", "sh\u{f6}p"),
        ("host-trailing-dot", "shop."),
        ("host-underscore", "my_shop"),
        (
            "host-long",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example",
        ),
    ] {
        add(
            name.to_string(),
            format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes(),
        );
    }

    // Framing: content-length and transfer-encoding, alone and together.
    let lengths: &[(&str, &str)] = &[
        ("cl-0", "0"),
        ("cl-5", "5"),
        ("cl-leading-zero", "05"),
        ("cl-plus", "+5"),
        ("cl-minus", "-1"),
        ("cl-space-before", " 5"),
        ("cl-space-after", "5 "),
        ("cl-inner-space", "5 5"),
        ("cl-list-same", "5, 5"),
        ("cl-list-same-tight", "5,5"),
        ("cl-list-differ", "5, 6"),
        ("cl-list-empty", "5,"),
        ("cl-hex", "0x5"),
        ("cl-exponent", "1e3"),
        ("cl-empty", ""),
        ("cl-letters", "abc"),
        ("cl-19-digits", "1000000000000000000"),
        ("cl-max-u64", "18446744073709551615"),
        ("cl-over-u64", "18446744073709551616"),
        ("cl-huge", "99999999999999999999999"),
        ("cl-decimal", "5.0"),
        ("cl-unicode-digit", "\u{0665}"),
    ];
    for (name, value) in lengths {
        add(
            name.to_string(),
            put(&format!("Content-Length: {value}\r\n")),
        );
    }
    add(
        "cl-twice-same".into(),
        put("Content-Length: 5\r\nContent-Length: 5\r\n"),
    );
    add(
        "cl-twice-differ".into(),
        put("Content-Length: 5\r\nContent-Length: 6\r\n"),
    );
    add(
        "cl-twice-list".into(),
        put("Content-Length: 5,5\r\nContent-Length: 5\r\n"),
    );
    add("cl-name-space".into(), put("Content-Length : 5\r\n"));
    add(
        "cl-1.0".into(),
        b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n".to_vec(),
    );
    let codings: &[(&str, &str)] = &[
        ("te-chunked", "chunked"),
        ("te-upper", "CHUNKED"),
        ("te-gzip-chunked", "gzip, chunked"),
        ("te-chunked-gzip", "chunked, gzip"),
        ("te-chunked-chunked", "chunked, chunked"),
        ("te-identity", "identity"),
        ("te-gzip", "gzip"),
        ("te-empty", ""),
        ("te-space-before", " chunked"),
        ("te-tab", "\tchunked"),
        ("te-trailing-comma", "chunked,"),
        ("te-leading-comma", ", chunked"),
        ("te-x-chunked", "x-chunked"),
        ("te-chunked-param", "chunked;q=1"),
        ("te-quoted", "\"chunked\""),
        ("te-chunk", "chunk"),
        ("te-identity-chunked", "identity, chunked"),
    ];
    for (name, value) in codings {
        add(
            name.to_string(),
            put(&format!("Transfer-Encoding: {value}\r\n")),
        );
    }
    add(
        "te-two-fields".into(),
        put("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"),
    );
    add(
        "te-two-fields-bad".into(),
        put("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"),
    );
    add(
        "te-and-cl".into(),
        put("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
    );
    add(
        "cl-and-te".into(),
        put("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
    );
    add(
        "te-and-bad-cl".into(),
        put("Transfer-Encoding: chunked\r\nContent-Length: x\r\n"),
    );
    add(
        "te-name-space".into(),
        put("Transfer-Encoding : chunked\r\n"),
    );
    add(
        "te-name-tab".into(),
        put("Transfer-Encoding\t: chunked\r\n"),
    );
    add(
        "te-obs-fold".into(),
        put("Transfer-Encoding:\r\n chunked\r\n"),
    );
    add(
        "te-vertical-tab".into(),
        put("Transfer-Encoding:\x0bchunked\r\n"),
    );
    add(
        "te-1.0".into(),
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
    );
    add(
        "te-and-cl-1.0".into(),
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n".to_vec(),
    );

    // Sizes: around the limit, and field counts around the parsers' caps.
    for (name, size) in [
        ("size-4k", 4096),
        ("size-8000", 8000),
        ("size-limit", LIMIT),
        ("size-limit-plus-1", LIMIT + 1),
        ("size-9000", 9000),
        ("size-20k", 20_000),
        ("size-70k", 70_000),
    ] {
        let start = "GET / HTTP/1.1\r\nHost: shop\r\nX-Pad: ";
        let pad = size - start.len() - 4;
        add(
            name.to_string(),
            format!("{start}{}\r\n\r\n", "a".repeat(pad)).into_bytes(),
        );
    }
    for count in [10, 50, 98, 99, 100, 101, 127, 128, 129, 200] {
        let fields: String = (0..count - 1).map(|i| format!("X-{i}: v\r\n")).collect();
        add(format!("fields-{count}"), get(&fields));
    }
    heads
}
