//! Smoke checks and health checks against real sample upstreams on loopback, failing in
//! the ways that matter: down, a 500 on one path, a wrong body, too slow, and healthy on
//! `/healthz` but broken on `/`.

mod common;
use common::*;
use std::time::Duration;
use switchyard::config::{ExpectStatus, HealthSettings, SmokeCheck};
use switchyard::control::record::CheckFailure;
use switchyard::upstream::connect::Dial;
use switchyard::verify::health::http_check;
use switchyard::verify::smoke::{self, Target};
use switchyard_testkit::SampleUpstream;

fn check(name: &str, path: &str) -> SmokeCheck {
    SmokeCheck {
        name: name.into(),
        method: http::Method::GET,
        path: path.into(),
        headers: Vec::new(),
        body: String::new(),
        expect_status: ExpectStatus::Class(2),
        expect_body: None,
        max_latency: None,
    }
}

fn shop_checks(version: &str) -> Vec<SmokeCheck> {
    vec![
        SmokeCheck {
            expect_body: Some(format!("version={version}")),
            max_latency: Some(Duration::from_millis(200)),
            ..check("home page", "/")
        },
        check("cart", "/cart"),
    ]
}

fn target(version: &str, upstreams: &[&SampleUpstream]) -> Target {
    Target {
        version: version.into(),
        host: Some("shop.example.com".into()),
        endpoints: upstreams
            .iter()
            .map(|u| (Dial::plain(u.addr), true))
            .collect(),
        http2: false,
    }
}

fn failure(check: &str, endpoint: &SampleUpstream, got: &str) -> CheckFailure {
    CheckFailure {
        check: check.into(),
        endpoint: endpoint.addr.to_string(),
        got: got.into(),
    }
}

#[tokio::test]
async fn a_working_version_passes_every_check_on_every_endpoint() {
    let green = upstreams(&["green", "green"]).await;
    let run = smoke::run(
        &shop_checks("green"),
        &target("green", &[&green[0], &green[1]]),
    )
    .await;
    assert!(run.report.passed, "{:?}", run.report);
    assert!(run.report.failed.is_empty());
    assert_eq!(run.results.len(), 4, "two checks on two endpoints");
    assert!(
        run.results
            .iter()
            .all(|r| r.passed && r.got.starts_with("status 200 in ")),
        "{:?}",
        run.results
    );
    assert_eq!(run.results[0].check, "home page");
    assert_eq!(run.results[0].endpoint, green[0].addr.to_string());
}

#[tokio::test]
async fn each_way_of_failing_is_named_with_what_came_back() {
    let down = upstream("green").await;
    down.stop();
    let run = smoke::run(&shop_checks("green"), &target("green", &[&down])).await;
    assert!(!run.report.passed);
    assert_eq!(
        run.report.failed,
        [
            failure("home page", &down, "connection refused"),
            failure("cart", &down, "connection refused")
        ]
    );

    let cart_broken = upstream("green").await;
    cart_broken.faults.break_path("/cart");
    let run = smoke::run(&shop_checks("green"), &target("green", &[&cart_broken])).await;
    assert_eq!(
        run.report.failed,
        [failure("cart", &cart_broken, "status 500 (expected 2xx)")]
    );
    assert_eq!(
        run.report.summary(),
        format!(
            "green fails its checks: \"cart\" on {} got status 500 (expected 2xx)",
            cart_broken.addr
        )
    );

    let wrong_body = upstream("green").await;
    wrong_body.faults.set_body("Oops, maintenance\n");
    let run = smoke::run(&shop_checks("green"), &target("green", &[&wrong_body])).await;
    assert_eq!(
        run.report.failed,
        [failure(
            "home page",
            &wrong_body,
            "a body without \"version=green\" (it began \"Oops, maintenance\\n\")"
        )]
    );

    let slow = upstream("green").await;
    slow.faults
        .set_latency(Duration::from_millis(600), Duration::ZERO);
    let run = smoke::run(&shop_checks("green"), &target("green", &[&slow])).await;
    assert_eq!(
        run.report.failed,
        [failure(
            "home page",
            &slow,
            "no answer within 200ms (max_latency)"
        )]
    );
    assert!(
        run.results[1].passed,
        "cart has no max_latency: {:?}",
        run.results[1]
    );
}

#[tokio::test]
async fn healthy_on_healthz_but_broken_on_home_fails_the_smoke_check_only() {
    let green = upstream("green").await;
    green.faults.break_path("/");
    let health = HealthSettings::default();
    assert_eq!(
        http_check(&Dial::plain(green.addr), false, "shop.example.com", &health).await,
        Ok(())
    );
    let run = smoke::run(&shop_checks("green"), &target("green", &[&green])).await;
    assert_eq!(
        run.report.failed,
        [failure("home page", &green, "status 500 (expected 2xx)")]
    );
    green.faults.break_path("/healthz");
    assert_eq!(
        http_check(&Dial::plain(green.addr), false, "shop.example.com", &health).await,
        Err("status 500 (expected 2xx)".to_string())
    );
}

#[tokio::test]
async fn one_bad_endpoint_of_two_fails_the_version() {
    let green = upstreams(&["green", "green"]).await;
    green[1].crash();
    let run = smoke::run(
        &shop_checks("green"),
        &target("green", &[&green[0], &green[1]]),
    )
    .await;
    assert!(!run.report.passed);
    assert!(run
        .report
        .failed
        .iter()
        .all(|f| f.endpoint == green[1].addr.to_string()));
    assert_eq!(run.report.failed.len(), 2);
    assert_eq!(run.results.len(), 4);
}

#[tokio::test]
async fn endpoints_held_out_by_health_checks_are_skipped_and_none_up_fails() {
    let green = upstreams(&["green", "green"]).await;
    green[1].crash();
    let mut partly = target("green", &[&green[0], &green[1]]);
    partly.endpoints[1].1 = false;
    let run = smoke::run(&shop_checks("green"), &partly).await;
    assert!(
        run.report.passed,
        "the endpoint out of the rotation takes no traffic: {:?}",
        run.report
    );
    assert_eq!(run.results.len(), 2);

    let mut none = partly.clone();
    none.endpoints[0].1 = false;
    let run = smoke::run(&shop_checks("green"), &none).await;
    assert!(!run.report.passed);
    assert_eq!(run.report.failed.len(), 2);
    assert!(
        run.report.failed[0].got.starts_with("no endpoint up"),
        "{:?}",
        run.report
    );
}

#[tokio::test]
async fn without_checks_every_endpoint_must_accept_a_connection() {
    let green = upstreams(&["green", "green"]).await;
    let run = smoke::run(&[], &target("green", &[&green[0], &green[1]])).await;
    assert!(run.report.passed);
    assert_eq!(run.results.len(), 2);
    assert_eq!(run.results[0].check, "connect");
    green[0].stop();
    let run = smoke::run(&[], &target("green", &[&green[0], &green[1]])).await;
    assert_eq!(
        run.report.failed,
        [failure("connect", &green[0], "connection refused")]
    );
}

#[tokio::test]
async fn checks_send_their_method_headers_body_and_host() {
    let green = upstream("green").await;
    let echo = SmokeCheck {
        method: http::Method::POST,
        body: "ping".into(),
        expect_body: Some("ping".into()),
        ..check("echo", "/echo")
    };
    let headers = SmokeCheck {
        headers: vec![(
            http::HeaderName::from_static("x-smoke"),
            http::HeaderValue::from_static("1"),
        )],
        expect_body: Some("x-smoke: 1".into()),
        ..check("headers", "/headers")
    };
    let host = SmokeCheck {
        expect_body: Some("host: shop.example.com".into()),
        ..check("host", "/headers")
    };
    let run = smoke::run(&[echo, headers, host], &target("green", &[&green])).await;
    assert!(run.report.passed, "{:?}", run.report);
}
