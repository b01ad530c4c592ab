//! The gate, the validation and the watched return point, end to end over real sockets:
//! the proxy in this process, `ctl` as the real binary, sample upstreams that fail.

mod common;
use common::*;
use std::time::{Duration, Instant};
use switchyard::admin::api::HistoryResponse;
use switchyard::control::record::{ChangeKind, RevisionRecord};
use switchyard::control::RoutingControl;
use switchyard_testkit::SampleUpstream;

/// Smoke checks of "shop": the home page must say which version it is.
const CHECKS: &str = "checks_every = \"1s\"\n[[services.shop.checks]]\nname = \"home\"\npath = \"/\"\nexpect_body = \"version=\"\nmax_latency = \"1s\"\n";

fn socket(proxy: &TestProxy) -> std::path::PathBuf {
    proxy.dir.path().join("admin.sock")
}

async fn history(proxy: &TestProxy) -> Vec<RevisionRecord> {
    let history: HistoryResponse = proxy.admin().history("shop", 100).await.unwrap();
    history.revisions
}

/// Waits (bounded) for a revision of `kind` after `after`.
async fn wait_for_revision(proxy: &TestProxy, kind: ChangeKind, after: u64) -> RevisionRecord {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = history(proxy)
            .await
            .into_iter()
            .find(|r| r.kind == kind && r.revision > after);
        if let Some(record) = found {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind:?} revision after {after}: {:?}",
            history(proxy).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The latest revision of `kind` (validations may already follow it).
async fn latest(proxy: &TestProxy, kind: ChangeKind) -> RevisionRecord {
    history(proxy)
        .await
        .into_iter()
        .rev()
        .find(|r| r.kind == kind)
        .expect("no such revision")
}

async fn last_revision(proxy: &TestProxy) -> u64 {
    history(proxy).await.last().map_or(0, |r| r.revision)
}

/// Runs `ctl` and returns (success, stdout, stderr).
fn ctl(proxy: &TestProxy, args: &[&str]) -> (bool, String, String) {
    let out = ctl_at(&socket(proxy), args);
    (out.status.success(), stdout(&out), stderr(&out))
}

async fn served_by(proxy: &TestProxy) -> String {
    get(&client(), proxy.addr(), "/", &[]).await.body
}

fn assert_one_line_refusal(
    stderr: &str,
    verb: &str,
    version: &str,
    endpoint: &SampleUpstream,
    got: &str,
) {
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    let expected = format!(
        "{verb} refused: {version} fails its checks: \"home\" on {} got {got}",
        endpoint.addr
    );
    assert!(stderr.contains(&expected), "{stderr:?} lacks {expected:?}");
    assert!(
        stderr.contains("nothing changed (--force overrides)"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_to_a_failing_version_is_refused_and_forced_is_recorded_then_validated() {
    let Pair {
        proxy,
        stable: _blue,
        canary: green,
    } = pair("blue", "green", (100, 0), CHECKS).await;
    green.faults.break_path("/");
    let before = last_revision(&proxy).await;

    let (ok, _, stderr) = ctl(&proxy, &["switch", "shop", "green"]);
    assert!(!ok);
    assert_one_line_refusal(
        &stderr,
        "switch",
        "green",
        &green,
        "status 500 (expected 2xx)",
    );
    assert_eq!(last_revision(&proxy).await, before, "nothing journaled");
    assert_eq!(
        served_by(&proxy).await,
        "version=blue\n",
        "routing unchanged"
    );

    let (ok, out, stderr) = ctl(
        &proxy,
        &[
            "switch",
            "shop",
            "green",
            "--force",
            "--reason",
            "hotfix is live",
        ],
    );
    assert!(ok, "{stderr}");
    assert!(out.contains("switch (forced)"), "{out}");
    let forced = latest(&proxy, ChangeKind::Switch).await;
    assert!(forced.forced);
    let checks = forced.checks.expect("the failing checks are recorded");
    assert_eq!((checks.version.as_str(), checks.passed), ("green", false));
    assert_eq!(checks.failed[0].got, "status 500 (expected 2xx)");

    let validated = wait_for_revision(&proxy, ChangeKind::Validated, forced.revision).await;
    let checks = validated.checks.unwrap();
    assert_eq!((checks.version.as_str(), checks.passed), ("green", false));
    assert!(
        validated
            .reason
            .contains("green, now taking all traffic, fails its checks"),
        "{}",
        validated.reason
    );
    assert_eq!(validated.new, forced.new, "a validation changes no routing");

    let (_, out, _) = ctl(&proxy, &["history", "shop"]);
    assert!(
        out.contains("CHECKS") && out.contains("green FAIL \"home\""),
        "{out}"
    );
    proxy.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_that_give_a_down_version_traffic_are_refused() {
    let Pair {
        proxy,
        stable: _blue,
        canary,
    } = pair("blue", "canary", (100, 0), CHECKS).await;
    canary.stop();
    let before = last_revision(&proxy).await;
    let (ok, _, stderr) = ctl(&proxy, &["weights", "shop", "blue=95", "canary=5"]);
    assert!(!ok);
    assert_one_line_refusal(&stderr, "weights", "canary", &canary, "connection refused");
    assert_eq!(last_revision(&proxy).await, before);

    canary.restart().await.unwrap();
    let (ok, out, stderr) = ctl(&proxy, &["weights", "shop", "blue=95", "canary=5"]);
    assert!(ok, "{stderr}");
    assert!(out.contains("checks: canary passed its checks"), "{out}");
    // Raising a share the version already has is not gated.
    canary.stop();
    let (ok, _, stderr) = ctl(&proxy, &["weights", "shop", "blue=90", "canary=10"]);
    assert!(ok, "{stderr}");
    proxy.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_and_resume_are_gated_and_abort_is_validated() {
    let Pair {
        proxy,
        stable: blue,
        canary,
    } = pair("blue", "canary", (90, 10), CHECKS).await;
    let (ok, _, stderr) = ctl(&proxy, &["abort", "shop", "--reason", "look closer"]);
    assert!(ok, "{stderr}");
    let abort = latest(&proxy, ChangeKind::Abort).await;
    let validated = wait_for_revision(&proxy, ChangeKind::Validated, abort.revision).await;
    assert!(validated.checks.unwrap().passed);
    assert!(validated
        .reason
        .contains(&format!("after revision {} (abort)", abort.revision)));

    canary.faults.set_body("Oops\n");
    let (ok, _, stderr) = ctl(&proxy, &["resume", "shop"]);
    assert!(!ok);
    assert_one_line_refusal(
        &stderr,
        "resume",
        "canary",
        &canary,
        "a body without \"version=\" (it began \"Oops\\n\")",
    );
    let routing = proxy.proxy.controller.routing_of("shop").unwrap();
    assert!(routing.latched, "still latched");

    let (ok, _, stderr) = ctl(&proxy, &["resume", "shop", "--force"]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = ctl(&proxy, &["promote", "shop"]);
    assert!(!ok);
    assert_one_line_refusal(
        &stderr,
        "promote",
        "canary",
        &canary,
        "a body without \"version=\" (it began \"Oops\\n\")",
    );

    // Rolling back into a version that fails too: a hotfix is needed.
    blue.faults.break_path("/");
    let (ok, _, stderr) = ctl(&proxy, &["abort", "shop"]);
    assert!(ok, "{stderr}");
    let abort = latest(&proxy, ChangeKind::Abort).await;
    let validated = wait_for_revision(&proxy, ChangeKind::Validated, abort.revision).await;
    assert!(!validated.checks.unwrap().passed);
    assert!(
        validated
            .reason
            .contains("rolling back does not fix this, a hotfix is needed"),
        "{}",
        validated.reason
    );
    proxy.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_checks_prints_each_result_and_fails_when_one_fails() {
    let Pair {
        proxy,
        stable: _blue,
        canary,
    } = pair("blue", "canary", (90, 10), CHECKS).await;
    let (ok, out, stderr) = ctl(&proxy, &["checks", "shop"]);
    assert!(ok, "{stderr}");
    assert!(
        out.contains("shop: blue passed its checks")
            && out.contains("shop: canary passed its checks"),
        "{out}"
    );
    assert!(
        out.contains(&format!("ok      home   {}", canary.addr)),
        "{out}"
    );

    canary
        .faults
        .set_latency(Duration::from_millis(1500), Duration::ZERO);
    let (ok, out, _) = ctl(&proxy, &["checks", "shop", "canary"]);
    assert!(!ok, "exits non-zero");
    assert!(
        out.contains(&format!(
            "FAIL    home   {}  no answer within 1s (max_latency)",
            canary.addr
        )),
        "{out}"
    );
    assert!(!out.contains("blue"), "one version asked: {out}");

    let (ok, _, stderr) = ctl(&proxy, &["checks", "shop", "purple"]);
    assert!(!ok);
    assert!(
        stderr.contains("shop has no version \"purple\""),
        "{stderr}"
    );
    proxy.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_checks_requests_get_a_4xx_and_change_nothing() {
    let Pair { proxy, .. } = pair("blue", "canary", (90, 10), CHECKS).await;
    let before = last_revision(&proxy).await;
    let admin = proxy.admin();
    for (path, body, status) in [
        ("/services/shop/checks", "{\"version\": 5}", 400),
        ("/services/shop/checks", "{\"bogus\": true}", 400),
        ("/services/shop/checks", "canary", 400),
        ("/services/shop/checks", "{\"version\": \"../../etc\"}", 404),
        ("/services/nope/checks", "{}", 404),
    ] {
        let (got, answer) = admin
            .raw(http::Method::POST, path, body.into())
            .await
            .unwrap();
        assert_eq!(
            got.as_u16(),
            status,
            "{path} {body}: {}",
            String::from_utf8_lossy(&answer)
        );
        assert!(String::from_utf8_lossy(&answer).contains("\"error\""));
    }
    let (got, _) = admin
        .raw(http::Method::GET, "/services/shop/checks", "".into())
        .await
        .unwrap();
    assert_eq!(got.as_u16(), 405);
    assert_eq!(last_revision(&proxy).await, before);
    proxy.proxy.shutdown().await;
}

/// Waits (bounded) until the return point of "shop" was last found `passed`.
async fn wait_for_return_point(proxy: &TestProxy, passed: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy
        .proxy
        .verifier
        .return_point_status()
        .get("shop")
        .is_none_or(|p| p.last.passed != passed)
    {
        assert!(
            Instant::now() < deadline,
            "return point never passed={passed}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_never_cuts_back_into_a_failing_return_point() {
    let Pair {
        proxy,
        stable: blue,
        canary,
    } = pair("blue", "canary", (50, 50), CHECKS).await;
    blue.faults.break_path("/");
    wait_for_return_point(&proxy, false).await;
    canary.crash();
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    let held = loop {
        let _ = get(&client, proxy.addr(), "/x", &[]).await;
        if let Some(incident) = proxy.proxy.incidents.list(Some("shop")).into_iter().next() {
            break incident;
        }
        assert!(
            Instant::now() < deadline,
            "the guard never raised the alarm"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(held.held, "{held:?}");
    assert_eq!(held.restored_by, 0);
    let advice = held.advice.clone().unwrap();
    assert!(
        advice.contains("rolling back does not fix this; a hotfix is needed"),
        "{advice}"
    );
    assert!(!held.checks.unwrap().passed);
    let routing = proxy.proxy.controller.plane.table.load();
    assert!(routing.services()[0].share_of(1) > 0.0, "routing kept");
    let alarm = wait_for_revision(&proxy, ChangeKind::CutbackHeld, 0).await;
    assert!(!alarm.new.unwrap().latched);
    let metrics = String::from_utf8_lossy(
        &proxy
            .admin()
            .raw(http::Method::GET, "/metrics", "".into())
            .await
            .unwrap()
            .1,
    )
    .to_string();
    assert!(
        metrics.contains("switchyard_cutback_held{service=\"shop\"} 1"),
        "{metrics}"
    );
    let (_, status, _) = ctl(&proxy, &["status"]);
    assert!(status.contains("CUTBACK HELD"), "{status}");
    assert_eq!(
        proxy.proxy.incidents.list(Some("shop")).len(),
        1,
        "raised once"
    );

    // The return point passes again: the guard cuts back, and the validation joins the incident.
    blue.faults.heal();
    let deadline = Instant::now() + Duration::from_secs(10);
    let cut = loop {
        let _ = get(&client, proxy.addr(), "/x", &[]).await;
        let incidents = proxy.proxy.incidents.list(Some("shop"));
        if let Some(cut) = incidents
            .into_iter()
            .find(|i| !i.held && i.checks.is_some())
        {
            break cut;
        }
        assert!(Instant::now() < deadline, "never cut back once blue passed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(cut.checks.unwrap().passed);
    assert!(cut.advice.is_none());
    let (_, out, _) = ctl(&proxy, &["incidents"]);
    assert!(
        out.contains("cutback HELD") && out.contains("checks: blue passed its checks"),
        "{out}"
    );
    proxy.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_does_not_start_on_a_failing_canary_unless_forced() {
    let rollout = format!("{CHECKS}[services.shop.rollout]\nsteps = [10, 100]\nbake = \"30s\"\n");
    let Pair {
        proxy,
        stable: _blue,
        canary,
    } = pair("blue", "canary", (100, 0), &rollout).await;
    canary.faults.break_path("/");
    let before = last_revision(&proxy).await;
    let (ok, _, stderr) = ctl(&proxy, &["rollout", "shop", "start"]);
    assert!(!ok);
    assert!(
        stderr.contains("refused: canary fails its checks: \"home\""),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(last_revision(&proxy).await, before, "nothing changed");

    let (ok, _, stderr) = ctl(&proxy, &["rollout", "shop", "start", "--force"]);
    assert!(ok, "{stderr}");
    let step = latest(&proxy, ChangeKind::Weights).await;
    assert!(step.forced, "{step:?}");
    assert!(!step.checks.unwrap().passed);
    proxy.proxy.shutdown().await;
}
