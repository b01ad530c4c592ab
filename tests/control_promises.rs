//! Promises of the control plane the docs make, over real sockets: latch and freeze survive
//! a reload that removes a service and one that adds it back; while frozen, a rollback may
//! lower risk but never raise a non-stable version's share; a reload rejected for 10,000
//! unresolvable names is one log line, within a deadline.

mod common;

use common::*;
use http::{Method, StatusCode};
use std::time::{Duration, Instant};

/// Service "shop" (stable and canary) and, when `with_shop` is false, only "web".
fn two_services(pair: &Pair, with_shop: bool) -> String {
    let web = format!(
        "\n[services.web]\nhosts = [\"web.test\"]\nstable = \"blue\"\nweights = {{ blue = 1 }}\n\
         [services.web.versions.blue]\nendpoints = [\"{}\"]\n",
        pair.stable.addr
    );
    let shop = two_versions(
        &pair.stable,
        &pair.canary,
        (90, 10),
        "hosts = [\"shop.test\"]",
    );
    match with_shop {
        true => format!("{web}{shop}"),
        false => web,
    }
}

async fn post(proxy: &TestProxy, path: &str, body: &str) -> (StatusCode, String) {
    admin_raw_on(&proxy.admin(), Method::POST, path, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latch_and_freeze_survive_a_reload_that_removes_a_service_and_one_that_adds_it_back() {
    let pair = pair("blue", "canary", (90, 10), "").await;
    let proxy = &pair.proxy;
    proxy.rewrite(&two_services(&pair, true));
    assert_eq!(post(proxy, "/reload", "").await.0, StatusCode::OK);
    for action in ["abort", "freeze"] {
        let (status, body) = post(proxy, &format!("/services/shop/{action}"), "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    // A file cut off at a section boundary: valid TOML, without shop.
    proxy.rewrite(&two_services(&pair, false));
    let (status, body) = post(proxy, "/reload", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(proxy.admin().service("shop").await.is_err(), "shop is gone");

    proxy.rewrite(&two_services(&pair, true));
    let (status, body) = post(proxy, "/reload", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let shop = proxy.admin().service("shop").await.unwrap();
    assert!(shop.latched, "the latch was forgotten");
    assert!(shop.frozen, "the freeze was forgotten");
    let canary = shop.versions.iter().find(|v| v.name == "canary").unwrap();
    assert_eq!(canary.share, 0.0, "all traffic on stable while latched");
    // And a raise is refused while frozen (after resume lifts the latch, it stays frozen).
    let (status, _) = post(proxy, "/services/shop/resume", "").await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "resume raises the canary: frozen"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_frozen_a_rollback_may_lower_the_canary_but_never_raise_it() {
    let pair = pair("blue", "canary", (90, 10), "").await;
    let proxy = &pair.proxy;
    let admin = proxy.admin();
    let put = |blue: u64, canary: u64| {
        let body = format!("{{\"weights\":{{\"blue\":{blue},\"canary\":{canary}}}}}");
        let admin = &admin;
        async move { admin_raw_on(admin, Method::PUT, "/services/shop/weights", &body).await }
    };
    assert_eq!(put(50, 50).await.0, StatusCode::OK);
    let fifty = admin.history("shop", 1).await.unwrap().revisions[0].revision;
    assert_eq!(put(80, 20).await.0, StatusCode::OK);
    assert_eq!(
        post(proxy, "/services/shop/freeze", "").await.0,
        StatusCode::OK
    );

    let raise = format!("{{\"to\":{fifty}}}");
    let (status, body) = post(proxy, "/services/shop/rollback", &raise).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("frozen"), "{body}");
    let weight = |status: &switchyard::admin::api::ServiceStatus| {
        status
            .versions
            .iter()
            .find(|v| v.name == "canary")
            .unwrap()
            .weight
    };
    assert_eq!(weight(&admin.service("shop").await.unwrap()), 20);

    let (status, body) = post(proxy, "/services/shop/rollback", "{\"to\":1}").await;
    assert_eq!(status, StatusCode::OK, "lowering risk always works: {body}");
    let shop = admin.service("shop").await.unwrap();
    assert_eq!(weight(&shop), 10);
    assert!(shop.frozen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_ten_thousand_unresolvable_names_is_one_line_within_a_deadline() {
    let upstreams = upstreams(&["blue", "canary"]).await;
    let setup = Setup::new(&upstreams, "{ blue = 90, canary = 10 }", "");
    let proxy = Proxy::start(&setup, &[]).await;
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let names: Vec<String> = (0..10_000)
        .map(|i| format!("\"nothing-{i}.invalid:80\""))
        .collect();
    let bad = text.replace(
        &format!("endpoints = [\"{}\"]", upstreams[1].addr),
        &format!("endpoints = [{}]", names.join(", ")),
    );
    assert_ne!(bad, text);
    std::fs::write(&setup.config, bad).unwrap();

    let asked = Instant::now();
    proxy.signal(libc::SIGHUP);
    let deadline = asked + Duration::from_secs(40);
    while !proxy.log_text().contains("reload rejected") {
        assert!(
            Instant::now() < deadline,
            "no answer:\n{}",
            proxy.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("rejected after {:?}", asked.elapsed());
    let log = proxy.log_text();
    let rejected: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("reload rejected"))
        .collect();
    assert_eq!(rejected.len(), 1, "{log}");
    assert!(
        log.lines().filter(|l| l.contains(".invalid")).count() <= 1,
        "the names were logged one by one:\n{log:.2000}"
    );
    assert!(log.lines().count() < 20, "{log:.2000}");
    // Nothing changed: the canary still serves its share.
    let status = setup.client().service("shop").await.unwrap();
    let canary = status.versions.iter().find(|v| v.name == "canary").unwrap();
    assert_eq!(canary.endpoints, vec![upstreams[1].addr.to_string()]);
}
