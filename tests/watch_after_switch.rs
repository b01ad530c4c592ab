//! The watch after a switch, over real sockets: the proxy in this process, `ctl` as the
//! real binary, sample upstreams under steady load. A forced `switch` to a version that
//! answers errors is switched back by the guard, latched, with an incident naming both.

mod common;
use common::*;
use std::time::{Duration, Instant};
use switchyard::admin::api::HistoryResponse;
use switchyard::control::record::{ChangeKind, RevisionRecord};

/// These tests measure how fast the guard reacts under load: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The baseline is read before the switch and the new stable after it: on a loaded 2-core
/// machine running a debug build, p99 moves by tens of ms between the two (and a new
/// stable starts on a cold connection pool), so these tests judge errors only.
const ERRORS_ONLY: &str = "[services.shop.guard]\nlatency_min_increase = \"10s\"\n";

/// Health checks every 200 ms, two failures in a row take an endpoint out.
const HEALTH: &str = "[services.shop.health]\npath = \"/\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nfall = 2\nrise = 2\n";

async fn history(proxy: &TestProxy) -> Vec<RevisionRecord> {
    let history: HistoryResponse = proxy.admin().history("shop", 100).await.unwrap();
    history.revisions
}

/// Runs `ctl` and returns (success, stdout, stderr).
fn ctl(proxy: &TestProxy, args: &[&str]) -> (bool, String, String) {
    let out = ctl_at(&proxy.dir.path().join("admin.sock"), args);
    (out.status.success(), stdout(&out), stderr(&out))
}

/// The revisions after `after` that change routing or raise an alarm (validations,
/// which run beside them, left out), waiting (bounded) until there are `count`.
async fn changes_after(proxy: &TestProxy, after: u64, count: usize) -> Vec<RevisionRecord> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let changes: Vec<RevisionRecord> = history(proxy)
            .await
            .into_iter()
            .filter(|r| r.revision > after && r.kind != ChangeKind::Validated)
            .collect();
        if changes.len() >= count || Instant::now() > deadline {
            return changes;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Blue stable under ~300 requests/s for two seconds (the baseline), then a forced
/// switch to green; returns the switch's revision.
async fn switch_under_load(proxy: &TestProxy) -> (Load, RevisionRecord) {
    let load = Load::start(proxy.addr(), 300, Duration::from_secs(30));
    let baseline = Duration::from_secs(2);
    tokio::time::sleep(baseline).await;
    let (ok, out, err) = ctl(proxy, &["switch", "shop", "green", "--force"]);
    assert!(ok, "{out}{err}");
    let switch = history(proxy)
        .await
        .into_iter()
        .rev()
        .find(|r| r.kind == ChangeKind::Switch)
        .expect("the switch is recorded");
    assert_eq!(switch.new.as_ref().unwrap().stable, "green");
    (load, switch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_to_a_version_failing_three_in_ten_is_switched_back_and_latched() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Pair {
        proxy,
        stable: _blue,
        canary: green,
    } = pair("blue", "green", (100, 0), ERRORS_ONLY).await;
    green.faults.set_error_rate(0.3);
    let (load, switch) = switch_under_load(&proxy).await;

    let changes = changes_after(&proxy, switch.revision, 2).await;
    let result = load.stop().await;
    let order: Vec<(ChangeKind, &str)> =
        changes.iter().map(|r| (r.kind, r.actor.as_str())).collect();
    assert_eq!(
        order,
        [(ChangeKind::Switch, "guard"), (ChangeKind::Abort, "guard")],
        "{changes:#?}"
    );
    let (back, latch) = (&changes[0], &changes[1]);
    let after = back.new.as_ref().unwrap();
    assert_eq!(after.stable, "blue");
    assert!(
        back.reason
            .contains("green is bad after the switch from blue"),
        "{back:?}"
    );
    assert!(latch.new.as_ref().unwrap().latched, "{latch:?}");
    let took = Duration::from_millis(back.time_ms - switch.time_ms);
    eprintln!(
        "switched back {took:?} after the switch; {} requests, {} failed",
        result.sent, result.failed
    );
    // The promise is 2 s; the bound is generous for a loaded 2-core machine.
    assert!(
        took < Duration::from_secs(5),
        "switched back after {took:?}"
    );

    let incidents = proxy.proxy.incidents.list(Some("shop"));
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let incident = &incidents[0];
    assert_eq!(
        (incident.version.as_str(), incident.stable.as_str()),
        ("green", "blue")
    );
    assert_eq!(incident.restored_by, back.revision);
    assert!(incident.summary.contains("error rate"), "{incident:?}");
    assert_eq!(
        incident.cause.as_ref().map(|c| c.revision),
        Some(switch.revision)
    );

    // Everyone is on blue again, and green stays out until `resume`.
    let served = get(&client(), proxy.addr(), "/", &[]).await.body;
    assert!(served.contains("version=blue"), "{served}");
    let (ok, _, err) = ctl(&proxy, &["switch", "shop", "green"]);
    let expected = format!("green was aborted at revision {}", back.revision);
    assert!(!ok && err.contains(&expected), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_switch_back_into_a_previous_version_that_fails_its_health_checks() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Pair {
        proxy,
        stable: blue,
        canary: green,
    } = pair("blue", "green", (100, 0), &format!("{ERRORS_ONLY}{HEALTH}")).await;
    let (load, switch) = switch_under_load(&proxy).await;
    // Blue goes down right after the switch, then green goes bad.
    blue.faults.set_error_rate(1.0);
    let table = || proxy.proxy.controller.plane.table.load_full();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !table().services()[0]
        .versions
        .iter()
        .find(|v| &*v.name == "blue")
        .is_some_and(|v| v.endpoints.iter().all(|e| e.is_checked_down()))
    {
        assert!(Instant::now() < deadline, "blue never checked down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    green.faults.set_error_rate(0.3);

    let changes = changes_after(&proxy, switch.revision, 1).await;
    load.stop().await;
    let kinds: Vec<ChangeKind> = changes.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [ChangeKind::CutbackHeld], "{changes:#?}");
    let held = &changes[0];
    assert_eq!(held.actor, "guard");
    assert!(
        held.reason
            .contains("every endpoint of blue fails its health checks"),
        "{held:?}"
    );
    assert_eq!(held.new.as_ref().unwrap().stable, "green", "routing kept");
    let incidents = proxy.proxy.incidents.list(Some("shop"));
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert!(incidents[0].held, "{incidents:?}");
    assert_eq!(incidents[0].version, "green");
    assert_eq!(incidents[0].stable, "blue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_to_a_healthy_version_stays() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Pair {
        proxy,
        stable: _blue,
        canary: _green,
    } = pair("blue", "green", (100, 0), ERRORS_ONLY).await;
    let (load, switch) = switch_under_load(&proxy).await;
    // Thirty looks of judging (about 900 requests) find nothing: the watch is still on.
    proxy.guard_looks(30).await;
    let result = load.stop().await;
    let changes = changes_after(&proxy, switch.revision, 0).await;
    assert!(changes.is_empty(), "{changes:#?}");
    assert_eq!(result.failed, 0, "{result:?}");
    assert!(proxy.proxy.incidents.list(Some("shop")).is_empty());
}
