//! Promises on every path, end to end over real sockets (the proxy in this process, `ctl`
//! as the real binary, sample upstreams that fail): a reload, a rollback and a change
//! after a forced switch meet the same gate and latch as an operator's verb.

mod common;
use common::*;
use std::time::Duration;
use switchyard::admin::api::HistoryResponse;
use switchyard::control::record::{ChangeKind, RevisionRecord};
use switchyard_testkit::SampleUpstream;

/// Smoke checks of "shop": the home page must say which version it is.
const CHECKS: &str = "[[services.shop.checks]]\nname = \"home\"\npath = \"/\"\nexpect_body = \"version=\"\nmax_latency = \"1s\"\n";

/// Runs `ctl` and returns (success, stdout, stderr).
fn ctl(proxy: &TestProxy, args: &[&str]) -> (bool, String, String) {
    let out = ctl_at(&proxy.dir.path().join("admin.sock"), args);
    (out.status.success(), stdout(&out), stderr(&out))
}

async fn history(proxy: &TestProxy, service: &str) -> Vec<RevisionRecord> {
    let history: HistoryResponse = proxy.admin().history(service, 100).await.unwrap();
    history.revisions
}

/// Each version's share of shop's traffic as the data plane has it, and the latch.
async fn shares(proxy: &TestProxy) -> (Vec<(String, f64)>, bool) {
    let shop = proxy.admin().service("shop").await.unwrap();
    let shares = shop
        .versions
        .iter()
        .map(|v| (v.name.clone(), v.share))
        .collect();
    (shares, shop.latched)
}

fn share(shares: &[(String, f64)], version: &str) -> f64 {
    shares
        .iter()
        .find(|(v, _)| v == version)
        .map_or(0.0, |(_, s)| *s)
}

/// Service "web" (stable `stable`, canary `canary` at 10) in TOML.
fn web(stable: &SampleUpstream, canary: &SampleUpstream) -> String {
    format!(
        "\n[services.web]\nhosts = [\"web.test\"]\nstable = \"{s}\"\nweights = {{ {s} = 90, {c} = 10 }}\n\
         [services.web.versions.{s}]\nendpoints = [\"{sa}\"]\n[services.web.versions.{c}]\nendpoints = [\"{ca}\"]\n",
        s = stable.name,
        c = canary.name,
        sa = stable.addr,
        ca = canary.addr,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_gives_a_failing_version_traffic_is_refused_whole_and_force_is_on_the_record()
{
    let Pair {
        proxy,
        stable: blue,
        canary,
    } = pair("blue", "canary", (100, 0), CHECKS).await;
    canary.faults.break_path("/");
    let shop_before = history(&proxy, "shop").await;

    // An edit of the weights and a service added with a canary, in one reload.
    let edited = two_versions(&blue, &canary, (90, 10), CHECKS);
    proxy.rewrite(&format!("{edited}{}", web(&blue, &canary)));
    let (ok, _, stderr) = ctl(&proxy, &["reload"]);
    assert!(!ok, "a reload gave a failing version traffic");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("reload refused: shop/canary fails its checks: \"home\"")
            && stderr.contains("--force overrides"),
        "{stderr}"
    );
    assert_eq!(
        history(&proxy, "shop").await,
        shop_before,
        "nothing recorded"
    );
    assert!(
        proxy.admin().service("web").await.is_err(),
        "refused whole: web not added"
    );
    assert_eq!(share(&shares(&proxy).await.0, "canary"), 0.0);

    // A service whose canary passes is added with its checks on the record.
    let twin = upstream("twin").await;
    let unedited = two_versions(&blue, &canary, (100, 0), CHECKS);
    proxy.rewrite(&format!("{unedited}{}", web(&blue, &twin)));
    let (ok, _, stderr) = ctl(&proxy, &["reload"]);
    assert!(ok, "{stderr}");
    let added = history(&proxy, "web").await;
    let checks = added[0]
        .checks
        .clone()
        .expect("the canary's checks are recorded");
    assert!(checks.passed && checks.version == "twin", "{checks:?}");

    // Forced: it goes through, and the revision says so with the failing checks.
    proxy.rewrite(&format!("{edited}{}", web(&blue, &twin)));
    let (ok, _, stderr) = ctl(&proxy, &["reload", "--force", "--reason", "known bad"]);
    assert!(ok, "{stderr}");
    let edit = history(&proxy, "shop").await.pop().unwrap();
    assert_eq!((edit.kind, edit.forced), (ChangeKind::ConfigEdit, true));
    let checks = edit.checks.expect("the failing checks are recorded");
    assert_eq!((checks.version.as_str(), checks.passed), ("canary", false));
    assert!(share(&shares(&proxy).await.0, "canary") > 0.0);
    proxy.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_into_a_stable_that_fails_its_checks_needs_force() {
    let Pair {
        proxy,
        stable: blue,
        canary: _green,
    } = pair("blue", "green", (100, 0), CHECKS).await;
    let (ok, _, stderr) = ctl(&proxy, &["switch", "shop", "green"]);
    assert!(ok, "{stderr}");
    let switched = history(&proxy, "shop").await.pop().unwrap().revision;
    blue.faults.break_path("/");

    for args in [
        vec!["rollback", "shop"],
        vec!["rollback", "shop", "--to", "1"],
    ] {
        let (ok, _, stderr) = ctl(&proxy, &args);
        assert!(!ok, "{args:?}: rolled back into a broken version");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains("rollback refused: blue fails its checks: \"home\""),
            "{stderr}"
        );
    }
    let served = get(&client(), proxy.addr(), "/", &[]).await.body;
    assert_eq!(served, "version=green\n", "routing unchanged");

    let (ok, _, stderr) = ctl(&proxy, &["rollback", "shop", "--force"]);
    assert!(ok, "{stderr}");
    let rollback = history(&proxy, "shop")
        .await
        .into_iter()
        .find(|r| r.kind == ChangeKind::Rollback && r.revision > switched)
        .expect("the forced rollback");
    assert!(rollback.forced);
    assert_eq!(rollback.checks.map(|c| c.passed), Some(false));
    proxy.proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_canary_stays_at_zero_through_a_switch_and_a_rollback_until_resume() {
    let green = upstream("green").await;
    let green_version = format!(
        "\n[services.shop.versions.green]\nendpoints = [\"{}\"]\n",
        green.addr
    );
    let Pair {
        proxy,
        stable: _blue,
        canary: _canary,
    } = pair("blue", "canary", (90, 10), &green_version).await;
    let (ok, _, stderr) = ctl(&proxy, &["abort", "shop", "--reason", "canary is bad"]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = ctl(&proxy, &["switch", "shop", "green", "--force"]);
    assert!(ok, "{stderr}");

    // Back to blue 90 / canary 10: the routing returns, the latch holds the canary at 0.
    let (ok, _, stderr) = ctl(&proxy, &["rollback", "shop"]);
    assert!(ok, "{stderr}");
    let (now, latched) = shares(&proxy).await;
    assert!(latched, "the latch was lifted by a rollback");
    assert_eq!(
        share(&now, "canary"),
        0.0,
        "the aborted canary got traffic back"
    );
    assert_eq!(share(&now, "blue"), 1.0);

    // Nothing but resume brings it back; it cannot even become stable.
    let (ok, _, stderr) = ctl(&proxy, &["switch", "shop", "canary", "--force"]);
    assert!(!ok);
    assert!(
        stderr.contains("canary was aborted at revision"),
        "{stderr}"
    );
    let (ok, _, stderr) = ctl(&proxy, &["resume", "shop"]);
    assert!(ok, "{stderr}");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (now, latched) = shares(&proxy).await;
    assert!(!latched);
    assert!(share(&now, "canary") > 0.0);
    proxy.proxy.shutdown().await;
}
