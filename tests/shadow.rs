//! Shadow traffic over real sockets: copies of stable's requests go to another version,
//! its answers are compared with the ones users got, and the gate judges the comparison.

mod common;

use bytes::Bytes;
use common::json_upstream::{json_upstream, Answers};
use common::{client, ctl_at, get, stderr, stdout, TestProxy};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use switchyard::telemetry::shadow::{ShadowReport, ShadowVerdict};

fn config(blue: SocketAddr, green: SocketAddr, shadow: &str) -> String {
    format!(
        r#"
[services.shop]
stable = "blue"
weights = {{ blue = 100, green = 0 }}

[services.shop.shadow]
{shadow}

[services.shop.versions.blue]
endpoints = ["{blue}"]

[services.shop.versions.green]
endpoints = ["{green}"]
"#
    )
}

const COMPARING: &str = r#"version = "green"
percent = 100
noise_percent = 50
min_samples = 60
compare = { status = true, headers = ["content-type"], body = "json" }"#;

/// Sends `count` GETs over /item/0../item/9, all answered by stable.
async fn traffic(proxy: &TestProxy, count: usize) {
    let http = client();
    for i in 0..count {
        let reply = get(&http, proxy.addr(), &format!("/item/{}", i % 10), &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.version.as_deref(), Some("blue"));
    }
}

/// Waits (bounded) until the shadow report satisfies `done`.
async fn report_when(proxy: &TestProxy, done: impl Fn(&ShadowReport) -> bool) -> ShadowReport {
    let socket = proxy.dir.path().join("admin.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ctl_at(&socket, &["--json", "shadow", "shop"]);
        let report: ShadowReport = serde_json::from_str(&stdout(&out))
            .unwrap_or_else(|e| panic!("ctl shadow: {e}: {}{}", stdout(&out), stderr(&out)));
        if done(&report) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "shadow never got there: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn enough(report: &ShadowReport) -> bool {
    report.compared >= 60 && report.noise_compared >= 20
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_that_changes_one_json_field_on_one_path_is_refused_by_the_gate() {
    let (blue, _) = json_upstream(Answers {
        price_of_7: 5,
        delay: Duration::ZERO,
    })
    .await;
    let (green, _) = json_upstream(Answers {
        price_of_7: 6,
        delay: Duration::ZERO,
    })
    .await;
    let proxy = TestProxy::start(&config(blue, green, COMPARING)).await;
    let mut sent = 0;
    let report = loop {
        traffic(&proxy, 100).await;
        sent += 100;
        let report = report_when(&proxy, |r| {
            r.mirrored + r.skipped.values().sum::<u64>() >= sent as u64 * 9 / 10
        })
        .await;
        if enough(&report) || sent >= 1000 {
            break report;
        }
    };
    let ShadowVerdict::Fail { summary } = &report.verdict else {
        panic!("a price that differs on 10% of requests must fail: {report:?}")
    };
    assert!(
        summary.contains("$.price") && summary.contains("GET /item/7"),
        "{summary}"
    );
    // `now` and `id` differ on every answer, between stable's own answers too: noise.
    assert!(
        report
            .fields
            .iter()
            .any(|f| f.field == "$.now" && f.noise_percent > 90.0),
        "{report:?}"
    );

    let socket = proxy.dir.path().join("admin.sock");
    let out = ctl_at(&socket, &["weights", "shop", "blue=90", "green=10"]);
    assert!(
        !out.status.success(),
        "the gate let a failing shadow take traffic"
    );
    let refusal = stderr(&out);
    assert_eq!(refusal.trim().lines().count(), 1, "{refusal}");
    assert!(
        refusal.contains("shadow")
            && refusal.contains("$.price")
            && refusal.contains("GET /item/7"),
        "{refusal}"
    );
    // Nothing changed: every request still goes to blue.
    traffic(&proxy, 20).await;
    // `ctl shadow` exits non-zero on a failing check and names the field.
    let out = ctl_at(&socket, &["shadow", "shop"]);
    assert!(!out.status.success());
    let shown = stdout(&out) + &stderr(&out);
    eprintln!("{shown}");
    assert!(shown.contains("FAIL: $.price differs"), "{shown}");
    let (status, metrics) =
        common::admin_raw_on(&proxy.admin(), http::Method::GET, "/metrics", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains("switchyard_shadow_failing{service=\"shop\",version=\"green\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_that_differs_only_in_clock_and_counter_passes() {
    let same = Answers {
        price_of_7: 5,
        delay: Duration::ZERO,
    };
    let (blue, _) = json_upstream(same).await;
    let (green, _) = json_upstream(same).await;
    let proxy = TestProxy::start(&config(blue, green, COMPARING)).await;
    let mut sent = 0;
    let report = loop {
        traffic(&proxy, 100).await;
        sent += 100;
        let report = report_when(&proxy, |r| {
            r.mirrored + r.skipped.values().sum::<u64>() >= sent as u64 * 9 / 10
        })
        .await;
        if enough(&report) || sent >= 1000 {
            break report;
        }
    };
    assert_eq!(report.verdict, ShadowVerdict::Pass, "{report:?}");
    // The clock differed on (nearly) every copy, and was learned as noise, not configured.
    assert!(
        report
            .fields
            .iter()
            .any(|f| f.field == "$.now" && f.shadow_percent > 90.0),
        "{report:?}"
    );
    let socket = proxy.dir.path().join("admin.sock");
    let out = ctl_at(&socket, &["weights", "shop", "blue=90", "green=10"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_down_shadow_never_slows_or_fails_a_user() {
    let (blue, _) = json_upstream(Answers {
        price_of_7: 5,
        delay: Duration::ZERO,
    })
    .await;
    let (slow, _) = json_upstream(Answers {
        price_of_7: 5,
        delay: Duration::from_secs(3),
    })
    .await;
    let down = common::free_addr();
    for (green, slow_one) in [(slow, true), (down, false)] {
        let proxy = TestProxy::start(&config(
            blue,
            green,
            "version = \"green\"\npercent = 100\nmax_in_flight = 4",
        ))
        .await;
        let http = client();
        let mut slowest = Duration::ZERO;
        for i in 0..100 {
            let started = Instant::now();
            let reply = get(&http, proxy.addr(), &format!("/item/{}", i % 10), &[]).await;
            slowest = slowest.max(started.elapsed());
            assert_eq!(reply.status, StatusCode::OK);
        }
        // A user who waited for a 3 s shadow would take 3 s; 2.5 s leaves room for a
        // busy machine.
        assert!(
            slowest < Duration::from_millis(2500),
            "a user waited {slowest:?} for a shadow"
        );
        let report = match slow_one {
            // Copies past the 4 in flight are skipped while the first ones wait.
            true => report_when(&proxy, |r| r.skipped["in_flight"] > 0).await,
            // A shadow that never answers differs from stable on every copy.
            false => report_when(&proxy, |r| r.compared > 0).await,
        };
        if !slow_one {
            assert_eq!(report.differing, report.compared, "{report:?}");
            assert!(
                report.fields.iter().any(|f| f.field == "status"),
                "{report:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_not_copied_and_copies_carry_no_credentials() {
    let (blue, _) = json_upstream(Answers {
        price_of_7: 5,
        delay: Duration::ZERO,
    })
    .await;
    let (green, seen) = json_upstream(Answers {
        price_of_7: 5,
        delay: Duration::ZERO,
    })
    .await;
    let proxy = TestProxy::start(&config(
        blue,
        green,
        "version = \"green\"\npercent = 100\nnoise_percent = 0",
    ))
    .await;
    let http = client();
    for _ in 0..5 {
        let reply = get(
            &http,
            proxy.addr(),
            "/item/1?token=secret",
            &[
                ("authorization", "Bearer secret"),
                ("cookie", "session=secret"),
            ],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let posts = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    for _ in 0..5 {
        let request = Request::post(format!("http://{}/order", proxy.addr()))
            .body(Full::new(Bytes::from_static(b"{\"buy\": 1}")))
            .unwrap();
        let response = posts.request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
    }
    let report = report_when(&proxy, |r| r.compared >= 5).await;
    assert_eq!(report.mirrored, 5, "{report:?}");
    let heads = seen.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 5, "green saw {heads:?}");
    for (line, headers) in &heads {
        assert_eq!(line, "GET /item/1");
        assert_eq!(
            headers.get("switchyard-shadow").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        assert!(
            headers.get("authorization").is_none() && headers.get("cookie").is_none(),
            "{headers:?}"
        );
    }
    // Samples never show the query, which may carry secrets.
    assert!(!serde_json::to_string(&report).unwrap().contains("secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_allowed_to_be_copied_goes_with_its_body_and_a_body_too_large_is_skipped() {
    let answers = Answers {
        price_of_7: 5,
        delay: Duration::ZERO,
    };
    let (blue, _) = json_upstream(answers).await;
    let (green, seen) = json_upstream(answers).await;
    let proxy = TestProxy::start(&config(
        blue,
        green,
        "version = \"green\"\npercent = 100\nnoise_percent = 0\nmethods = [\"POST\"]\n\
         allow_side_effects = true\nmax_body = \"1KiB\"\n\
         compare = { body = \"json\", ignore = [\"$.now\", \"$.id\"] }",
    ))
    .await;
    let posts = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut sent = Vec::new();
    for i in 0..8 {
        let body = Bytes::from(format!(
            "{{\"buy\": {i}, \"note\": \"{}\"}}",
            "x".repeat(i * 50)
        ));
        sent.push(body.clone());
        let request = Request::post(format!("http://{}/order", proxy.addr()))
            .body(Full::new(body))
            .unwrap();
        let response = posts.request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
    }
    // Past max_body: the user is served, no copy is made.
    let big = Request::post(format!("http://{}/order", proxy.addr()))
        .body(Full::new(Bytes::from(vec![b'a'; 4096])))
        .unwrap();
    let response = posts.request(big).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap();

    let report = report_when(&proxy, |r| r.compared >= 8).await;
    assert_eq!((report.mirrored, report.differing), (8, 0), "{report:?}");
    assert_eq!(report.skipped.get("too_large"), Some(&1), "{report:?}");
    let mut got = seen.bodies.lock().unwrap().clone();
    got.sort();
    sent.sort();
    assert_eq!(got, sent, "green got each user's body, whole");
}

#[test]
fn bad_shadow_sections_are_each_named_with_their_line() {
    let cases = [
        ("version = \"blue\"", "cannot shadow itself"),
        ("version = \"purple\"", "no version \"purple\""),
        (
            "version = \"green\"\nmethods = [\"POST\"]",
            "allow_side_effects",
        ),
        ("version = \"green\"\npercent = 140", "0 to 100"),
        ("version = \"green\"\nmax_body = \"lots\"", "not a size"),
        (
            "version = \"green\"\ncompare = { body = \"json\", ignore = [\"now\"] }",
            "not a JSON path",
        ),
        (
            "version = \"green\"\ncompare = { body = \"xml\" }",
            "not one of",
        ),
        ("version = \"green\"\nmax_in_flight = 0", "at least 1"),
        ("version = \"green\"\nmax_body = \"2MiB\"", "1 byte to 1MiB"),
        (
            "version = \"green\"\nmirror_everything = true",
            "unknown field",
        ),
    ];
    let blue: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for (section, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let text = common::full_config("127.0.0.1:0", dir.path(), &config(blue, blue, section));
        let err = switchyard::config::Config::parse(std::path::Path::new("shadow.toml"), &text)
            .expect_err(section)
            .to_string();
        assert!(
            err.contains(expected) && err.contains("shadow.toml:"),
            "{section}: {err}"
        );
    }
}
