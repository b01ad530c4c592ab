//! A rollout that begins with a shadow step, over real sockets: the canary gets copies of
//! live requests and no user until its shadow check passes; a failed check aborts it.

mod common;

use common::json_upstream::{json_upstream, Answers, Seen};
use common::{client, ctl_at, get, stderr, stdout, TestProxy};
use http::StatusCode;
use std::net::SocketAddr;
use std::process::Output;
use std::time::{Duration, Instant};
use switchyard::admin::api::RolloutStatus;
use switchyard::rollout::Status;

/// The most a test waits for the rollout to get somewhere.
const PATIENCE: Duration = Duration::from_secs(60);

fn config(blue: SocketAddr, green: SocketAddr) -> String {
    format!(
        r#"
[services.shop]
stable = "blue"
weights = {{ blue = 100, green = 0 }}

[services.shop.guard]
latency_min_samples = 20
latency_min_increase = "1s"

[services.shop.rollout]
steps = [50, 100]
bake = "1s"
shadow_first = true

[services.shop.shadow]
version = "green"
percent = 100
noise_percent = 50
min_samples = 60
compare = {{ status = true, headers = ["content-type"], body = "json" }}

[services.shop.versions.blue]
endpoints = ["{blue}"]

[services.shop.versions.green]
endpoints = ["{green}"]
"#
    )
}

async fn ctl(proxy: &TestProxy, args: &[&str]) -> Output {
    let socket = proxy.admin().socket().to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ctl_at(&socket, &args)
    })
    .await
    .unwrap()
}

async fn rollout(proxy: &TestProxy) -> RolloutStatus {
    let status = proxy.admin().service("shop").await.unwrap();
    status.rollout.expect("a rollout")
}

/// Starts the rollout: it stands at its shadow step, green without users.
async fn start(proxy: &TestProxy) {
    let out = ctl(proxy, &["rollout", "shop", "start", "--reason", "e2e"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("rollout of green running at step 1/3 (shadow, no users)"),
        "{text}"
    );
    // Before any traffic it holds, and says why (`ctl rollout` shows the same status).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let held = rollout(proxy).await.held.unwrap_or_default();
        if held.starts_with("shadow step: too few samples yet (0 of 60 compared requests") {
            break;
        }
        assert!(Instant::now() < deadline, "never said why it holds: {held}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shown = stdout(&ctl(proxy, &["status", "shop"]).await);
    assert!(
        shown.contains("at step 1/3 (shadow, no users)")
            && shown.contains("held: shadow step: too few samples yet (0 of 60"),
        "{shown}"
    );
}

/// Sends users' GETs over /item/0../item/9 in rounds until `done` holds for the rollout;
/// returns the versions that answered the rounds that ended before it held, by count.
async fn users_until(
    proxy: &TestProxy,
    done: impl Fn(&RolloutStatus) -> bool,
) -> (RolloutStatus, std::collections::BTreeMap<String, usize>) {
    let http = client();
    let deadline = Instant::now() + PATIENCE;
    let mut answered = std::collections::BTreeMap::new();
    loop {
        let status = rollout(proxy).await;
        if done(&status) {
            return (status, answered);
        }
        assert!(
            Instant::now() < deadline,
            "the rollout never got there: {status:?}"
        );
        let mut round = Vec::new();
        for i in 0..20 {
            let reply = get(&http, proxy.addr(), &format!("/item/{}", i % 10), &[]).await;
            assert_eq!(reply.status, StatusCode::OK);
            round.push(reply.version.unwrap_or_default());
        }
        // A round during which the rollout got there is not counted.
        if !done(&rollout(proxy).await) {
            for version in round {
                *answered.entry(version).or_default() += 1;
            }
        }
    }
}

/// Requests green saw that were not copies (every copy carries `switchyard-shadow: 1`).
fn users_seen(seen: &Seen) -> usize {
    let heads = seen.heads.lock().unwrap();
    heads
        .iter()
        .filter(|(_, headers)| headers.get("switchyard-shadow").is_none())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_step_on_a_version_that_changes_a_json_field_aborts_before_any_user() {
    let (blue, _) = json_upstream(Answers {
        price_of_7: 5,
        delay: Duration::ZERO,
    })
    .await;
    let (green, seen) = json_upstream(Answers {
        price_of_7: 6,
        delay: Duration::ZERO,
    })
    .await;
    let proxy = TestProxy::start(&config(blue, green)).await;
    start(&proxy).await;

    let (status, answered) = users_until(&proxy, |r| r.rollout.status == Status::Aborted).await;
    let note = &status.rollout.note;
    assert!(
        note.starts_with("shadow check failed before any user traffic: $.price differs")
            && note.contains("GET /item/7: stable 5, shadow 6"),
        "{note}"
    );
    assert_eq!(
        answered.keys().collect::<Vec<_>>(),
        ["blue"],
        "{answered:?}"
    );
    assert!(seen.requests.load(std::sync::atomic::Ordering::SeqCst) > 0);
    assert_eq!(users_seen(&seen), 0, "a user reached the failing version");

    // All traffic stays on blue, latched, by an abort revision that names the finding.
    let service = proxy.admin().service("shop").await.unwrap();
    assert!(service.latched && service.stable == "blue", "{service:?}");
    let history = proxy.proxy.controller.history("shop", 10).await.unwrap();
    let abort = history.last().unwrap();
    assert_eq!(
        (abort.actor.as_str(), abort.kind.label()),
        ("rollout", "abort")
    );
    assert!(abort.reason.contains("$.price"), "{}", abort.reason);
    assert!(history
        .iter()
        .filter_map(|r| r.new.as_ref())
        .all(|state| state.weights.get("green").copied().unwrap_or(0) == 0));
    // And an incident, naming the field and a sample request.
    let incidents = proxy
        .admin()
        .incidents(Some("shop"))
        .await
        .unwrap()
        .incidents;
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let incident = &incidents[0];
    assert_eq!(
        (incident.version.as_str(), incident.restored_by),
        ("green", abort.revision)
    );
    assert!(
        incident.summary.contains("$.price") && incident.summary.contains("GET /item/7"),
        "{}",
        incident.summary
    );
    assert_eq!(incident.users.canary.requests, 0);
    let out = ctl(&proxy, &["incidents", "shop"]).await;
    assert!(stdout(&out).contains("$.price"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_step_on_a_version_that_differs_only_in_noise_passes_then_takes_users() {
    let same = Answers {
        price_of_7: 5,
        delay: Duration::ZERO,
    };
    let (blue, _) = json_upstream(same).await;
    let (green, seen) = json_upstream(same).await;
    let proxy = TestProxy::start(&config(blue, green)).await;
    start(&proxy).await;

    let (status, answered) = users_until(&proxy, |r| r.percent == 50).await;
    assert_eq!(status.rollout.step, 1, "{status:?}");
    // Until the shadow step passed, no user went to green.
    assert_eq!(
        answered.keys().collect::<Vec<_>>(),
        ["blue"],
        "{answered:?}"
    );
    let history = proxy.proxy.controller.history("shop", 10).await.unwrap();
    let step = history.last().unwrap();
    assert_eq!(step.actor, "rollout");
    assert!(
        step.reason
            .starts_with("rollout step 2/3: green at 50% (shadow check passed: ")
            && step.reason.ends_with(", this instance)"),
        "{}",
        step.reason
    );

    // Now users reach green, not only copies.
    let http = client();
    let mut green = 0;
    for i in 0..100 {
        let reply = get(&http, proxy.addr(), &format!("/item/{}", i % 10), &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        green += usize::from(reply.version.as_deref() == Some("green"));
    }
    assert!(green >= 10, "green answered {green} of 100 at 50%");
    assert!(users_seen(&seen) >= green);
}

#[test]
fn check_refuses_a_shadow_step_whose_shadow_is_another_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    let blue: SocketAddr = "127.0.0.1:9001".parse().unwrap();
    let green: SocketAddr = "127.0.0.1:9002".parse().unwrap();
    let body = config(blue, green);
    for (written, expected) in [
        (
            body.replace("version = \"green\"", "version = \"red\"")
                .replace("shadow_first = true", "shadow_first = true\ncanary = \"green\"")
                + "[services.shop.versions.red]\nendpoints = [\"127.0.0.1:9003\"]\n",
            "services.shop.rollout.shadow_first: the rollout's canary is \"green\" but services.shop.shadow.version is \"red\"",
        ),
        (
            body.replace("[services.shop.shadow]", "[services.shop.not_shadow]")
                .replace("[services.shop.not_shadow]", "")
                .replace("version = \"green\"\npercent = 100\nnoise_percent = 50\nmin_samples = 60\ncompare = { status = true, headers = [\"content-type\"], body = \"json\" }\n", ""),
            "services.shop.rollout.shadow_first needs [services.shop.shadow] with version = \"green\"",
        ),
    ] {
        std::fs::write(&path, common::full_config("127.0.0.1:0", dir.path(), &written)).unwrap();
        let out = std::process::Command::new(common::BIN)
            .args(["check", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let text = stderr(&out) + &stdout(&out);
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("shadow_first")).collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(lines[0].contains(expected), "{text}");
    }
}
