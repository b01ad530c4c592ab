//! `ctl release` and `ctl retire` against the real binary: a version added at runtime
//! takes traffic like one from the file (after its checks), survives a restart and a
//! reload, retires only when it takes none, and in a fleet reaches every member.

mod common;

use common::fleet::{serves_only, Fleet};
use common::nats::NatsNode;
use common::{admin_raw, fails, ok, upstreams, Proxy, Setup};
use http::{Method, StatusCode};
use std::collections::BTreeMap;
use std::time::Duration;
use switchyard::admin::api::ServiceStatus;

fn weights_of(status: &ServiceStatus) -> BTreeMap<String, u64> {
    status
        .versions
        .iter()
        .map(|v| (v.name.clone(), v.weight))
        .collect()
}

/// How many of `n` requests each version answered.
async fn tally(addr: std::net::SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let http = common::client();
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let reply = common::get(&http, addr, "/", &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        *counts.entry(reply.version.unwrap_or_default()).or_insert(0) += 1;
    }
    counts
}

/// A port nothing listens on.
fn closed_port() -> String {
    common::free_addr().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_version_takes_traffic_survives_a_restart_and_retires() {
    let versions = upstreams(&["blue", "canary", "v2"]).await;
    let setup = Setup::new(&versions[..2], "{ blue = 100, canary = 0 }", "");
    let mut proxy = Proxy::start(&setup, &[]).await;
    let v2 = versions[2].addr.to_string();

    let out = ok(setup.ctl(&[
        "release",
        "shop",
        "v2",
        "--endpoint",
        &v2,
        "--meta",
        "commit=abc123",
        "--meta",
        "version=2.0",
        "--reason",
        "ci deploy",
    ]));
    assert!(out.contains("release"), "{out}");
    let status = setup.client().service("shop").await.unwrap();
    let added = status.versions.iter().find(|v| v.name == "v2").unwrap();
    assert!(added.runtime && added.weight == 0, "{added:?}");
    assert_eq!(added.release.commit, "abc123");
    assert_eq!(added.endpoints, std::slice::from_ref(&v2));
    assert_eq!(
        tally(proxy.addr, 20).await.get("v2"),
        None,
        "no traffic yet"
    );
    let history = setup.client().history("shop", 5).await.unwrap();
    let released = history.revisions.last().unwrap();
    assert_eq!(
        (
            released.kind.label(),
            released.actor.as_str(),
            released.reason.as_str()
        ),
        ("release", "tester", "ci deploy")
    );

    // Its checks run before it gets traffic, as for a version from the file: one whose
    // endpoint is down is refused traffic, and nothing changes.
    ok(setup.ctl(&["release", "shop", "down", "--endpoint", &closed_port()]));
    let before = setup.client().status().await.unwrap().revision;
    let refused = setup.ctl(&["weights", "shop", "blue=50", "down=50"]);
    fails(refused, "down");
    assert_eq!(setup.client().status().await.unwrap().revision, before);
    ok(setup.ctl(&["retire", "shop", "down"]));

    ok(setup.ctl(&["weights", "shop", "blue=50", "v2=50"]));
    let served = tally(proxy.addr, 40).await;
    assert!(served.get("v2").copied().unwrap_or(0) > 0, "{served:?}");

    // A restart replays it: same routing, same traffic.
    proxy.terminate();
    let proxy = Proxy::start(&setup, &[]).await;
    let status = setup.client().service("shop").await.unwrap();
    assert_eq!(weights_of(&status)["v2"], 50, "{status:?}");
    let served = tally(proxy.addr, 40).await;
    assert!(served.get("v2").copied().unwrap_or(0) > 0, "{served:?}");

    // A reload keeps it, and says so.
    let out = ok(setup.ctl(&["reload"]));
    assert!(out.contains("kept runtime versions: shop/v2"), "{out}");
    assert!(proxy
        .log_text()
        .contains("reload kept runtime versions: shop/v2"));

    // Retired only when it takes no traffic.
    fails(setup.ctl(&["retire", "shop", "v2"]), "weight 50");
    fails(setup.ctl(&["retire", "shop", "blue"]), "config file");
    ok(setup.ctl(&["weights", "shop", "blue=100"]));
    ok(setup.ctl(&["retire", "shop", "v2", "--reason", "done"]));
    let status = setup.client().service("shop").await.unwrap();
    assert!(status.versions.iter().all(|v| v.name != "v2"), "{status:?}");
    fails(setup.ctl(&["retire", "shop", "v2"]), "no runtime version");
    assert_eq!(tally(proxy.addr, 10).await.get("blue"), Some(&10));

    // The stable a switch replaced is the return point: retired only when forced.
    ok(setup.ctl(&["release", "shop", "v2", "--endpoint", &v2]));
    ok(setup.ctl(&["switch", "shop", "v2"]));
    ok(setup.ctl(&["switch", "shop", "blue"]));
    let before = setup.client().status().await.unwrap().revision;
    fails(
        setup.ctl(&["retire", "shop", "v2"]),
        "v2 is shop's return point",
    );
    assert_eq!(
        setup.client().status().await.unwrap().revision,
        before,
        "a refused retire records nothing"
    );
    ok(setup.ctl(&["retire", "shop", "v2", "--force", "--reason", "v2 is gone"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_release_input_is_refused_and_changes_nothing() {
    let versions = upstreams(&["blue", "canary"]).await;
    let setup = Setup::new(&versions, "{ blue = 100, canary = 0 }", "");
    let _proxy = Proxy::start(&setup, &[]).await;
    let up = versions[1].addr.to_string();
    let before = setup.client().status().await.unwrap();
    let many: Vec<String> = (0..65)
        .map(|i| format!("\"127.0.0.1:{}\"", 2000 + i))
        .collect();
    let many = format!(r#"{{"version":"v9","endpoints":[{}]}}"#, many.join(","));
    let body = |version: &str, endpoint: &str| {
        format!(r#"{{"version":{version:?},"endpoints":[{endpoint:?}]}}"#)
    };
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        (
            "/services/nope/release",
            body("v2", &up),
            StatusCode::NOT_FOUND,
            "no service",
        ),
        (
            "/services/shop/release",
            body("canary", &up),
            StatusCode::CONFLICT,
            "already has a version",
        ),
        (
            "/services/shop/release",
            body("blue", &up),
            StatusCode::CONFLICT,
            "already has a version",
        ),
        (
            "/services/shop/release",
            body("v2", "nowhere"),
            StatusCode::BAD_REQUEST,
            "not IP:port",
        ),
        (
            "/services/shop/release",
            body("v2", "no-such-host.invalid:80"),
            StatusCode::BAD_REQUEST,
            "no-such-host",
        ),
        (
            "/services/shop/release",
            body("", &up),
            StatusCode::BAD_REQUEST,
            "1 to 64",
        ),
        (
            "/services/shop/release",
            body("a b", &up),
            StatusCode::BAD_REQUEST,
            "letters, digits",
        ),
        (
            "/services/shop/release",
            many,
            StatusCode::BAD_REQUEST,
            "at most 64",
        ),
        (
            "/services/shop/release",
            r#"{"version":"v2","endpoints":[]}"#.into(),
            StatusCode::BAD_REQUEST,
            "at least one",
        ),
        (
            "/services/shop/release",
            r#"{"version":"v2"}"#.into(),
            StatusCode::BAD_REQUEST,
            "endpoints",
        ),
        (
            "/services/shop/release",
            format!(r#"{{"version":"v2","endpoints":["{up}"],"protocol":"h2"}}"#),
            StatusCode::BAD_REQUEST,
            "tls",
        ),
        (
            "/services/shop/release",
            format!(r#"{{"version":"v2","endpoints":["{up}"],"weights":{{"v2":1}}}}"#),
            StatusCode::BAD_REQUEST,
            "unknown field `weights`",
        ),
        (
            "/services/shop/release",
            format!(r#"{{"version":"v2","endpoints":["{up}"],"rollout":true}}"#),
            StatusCode::CONFLICT,
            "no rollout configured",
        ),
        (
            "/services/shop/retire",
            r#"{"version":"blue"}"#.into(),
            StatusCode::CONFLICT,
            "config file",
        ),
        (
            "/services/shop/retire",
            r#"{"version":"v7"}"#.into(),
            StatusCode::NOT_FOUND,
            "no runtime version",
        ),
        (
            "/services/shop/retire",
            r#"{"version":"v7","endpoints":["1.2.3.4:5"]}"#.into(),
            StatusCode::BAD_REQUEST,
            "unknown field `spec`",
        ),
    ];
    for (path, body, status, expected) in cases {
        let (got, answer) = admin_raw(&setup, Method::POST, path, &body).await;
        assert_eq!(got, status, "{path} {body}: {answer}");
        assert!(
            answer.contains(expected),
            "{path} {body}: {answer} should say {expected:?}"
        );
        assert_eq!(answer.trim().lines().count(), 1);
    }
    let after = setup.client().status().await.unwrap();
    assert_eq!(after.revision, before.revision, "nothing changed");
    assert_eq!(after.services, before.services);
    // The CLI says the same in one line.
    fails(
        setup.ctl(&[
            "release",
            "shop",
            "v2",
            "--endpoint",
            &up,
            "--meta",
            "owner=me",
        ]),
        "unknown release field",
    );
    fails(
        setup.ctl(&["release", "shop", "canary", "--endpoint", &up]),
        "already has a version",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_with_rollout_starts_the_configured_rollout_of_that_version() {
    let versions = upstreams(&["blue", "canary", "v2"]).await;
    let rollout = "[services.shop.rollout]\nsteps = [10, 50, 100]\nbake = \"1h\"\n";
    let setup = Setup::new(&versions[..2], "{ blue = 100, canary = 0 }", rollout);
    let _proxy = Proxy::start(&setup, &[]).await;
    let v2 = versions[2].addr.to_string();
    // Refused before anything is recorded while frozen.
    ok(setup.ctl(&["freeze", "shop"]));
    let before = setup.client().status().await.unwrap().revision;
    fails(
        setup.ctl(&["release", "shop", "v2", "--endpoint", &v2, "--rollout"]),
        "frozen",
    );
    assert_eq!(setup.client().status().await.unwrap().revision, before);
    ok(setup.ctl(&["unfreeze", "shop"]));
    // A version that fails its checks is released, but its rollout's gate refuses it.
    let down = closed_port();
    fails(
        setup.ctl(&["release", "shop", "bad", "--endpoint", &down, "--rollout"]),
        "(no traffic), but its rollout did not start: ",
    );
    let status = setup.client().service("shop").await.unwrap();
    assert_eq!(weights_of(&status)["bad"], 0, "{status:?}");
    let out = ok(setup.ctl(&["release", "shop", "v2", "--endpoint", &v2, "--rollout"]));
    assert!(out.contains("rollout of v2 started"), "{out}");
    let status = setup.client().service("shop").await.unwrap();
    let rollout = status.rollout.clone().expect("a rollout");
    assert_eq!(rollout.rollout.canary, "v2");
    assert_eq!(weights_of(&status)["v2"], 10, "{status:?}");
    // A second one while it runs is refused before anything is recorded.
    let before = setup.client().status().await.unwrap().revision;
    let up = versions[1].addr.to_string();
    fails(
        setup.ctl(&["release", "shop", "v3", "--endpoint", &up, "--rollout"]),
        "already",
    );
    assert_eq!(setup.client().status().await.unwrap().revision, before);
}

/// Asks for a release with its rollout on the admin socket and hangs up, sometimes at
/// once, sometimes a moment later, never reading the answer.
async fn release_and_hang_up(socket: &std::path::Path, version: &str, endpoint: &str) {
    use tokio::io::AsyncWriteExt;
    let body = format!(
        "{{\"version\":\"{version}\",\"endpoints\":[\"{endpoint}\"],\"rollout\":true,\"reason\":\"hang-up\"}}"
    );
    let head = format!(
        "POST /services/shop/release HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_micros(fastrand::u64(0..5_000))).await;
    drop(stream);
}

/// A client that hangs up between the release and its rollout's start never leaves a
/// release whose rollout did not start: both happen, or neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_with_rollout_is_never_left_half_done_by_a_hang_up() {
    let versions = upstreams(&["blue", "canary", "v2"]).await;
    let rollout = "[services.shop.rollout]\nsteps = [10, 50, 100]\nbake = \"1h\"\n";
    let setup = Setup::new(&versions[..2], "{ blue = 100, canary = 0 }", rollout);
    let proxy = Proxy::start(&setup, &[]).await;
    let v2 = versions[2].addr.to_string();
    for round in 0..6 {
        let name = format!("r{round}");
        release_and_hang_up(&setup.socket, &name, &v2).await;
        // Released and rolling out, or (after a quiet while) not released at all.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut absent_since = std::time::Instant::now();
        let released = loop {
            let status = setup.client().service("shop").await.unwrap();
            let present = status.versions.iter().any(|v| v.name == name);
            let rolling = status
                .rollout
                .as_ref()
                .is_some_and(|r| r.rollout.canary == name && r.rollout.status.is_active());
            match (present, rolling) {
                (true, true) => break true,
                (false, _) if absent_since.elapsed() > Duration::from_secs(3) => break false,
                (false, _) => {}
                (true, false) => absent_since = std::time::Instant::now(),
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} released but its rollout never started: {status:?}\n{}",
                proxy.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if released {
            ok(setup.ctl(&["abort", "shop"]));
            ok(setup.ctl(&["resume", "shop"]));
            ok(setup.ctl(&["weights", "shop", "blue=100"]));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_on_one_member_is_routed_by_all_three() {
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary", "v2"]).await;
    let mut fleet = Fleet::start_with(
        &[&nats],
        &versions[..2],
        "{ blue = 100, canary = 0 }",
        |_| String::new(),
    )
    .await;
    let v2 = versions[2].addr.to_string();
    ok(fleet.setups[1].ctl(&["release", "shop", "v2", "--endpoint", &v2, "--reason", "ci"]));
    let record = fleet
        .client(2)
        .change(
            "shop",
            "switch",
            &switchyard::admin::api::ChangeRequest {
                version: Some("v2".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|err| panic!("switch on another member: {err}\n{}", fleet.logs()));
    for i in 0..3 {
        fleet.wait_revision_on(i, record.revision).await;
    }
    for proxy in &fleet.proxies {
        assert!(
            serves_only(proxy.addr, "v2", Duration::from_secs(10)).await,
            "{}",
            fleet.logs()
        );
    }
    // A member that restarts comes back with it, from its cache and the log.
    fleet.proxies[2].terminate();
    fleet.proxies[2] = Proxy::start(&fleet.setups[2], &[]).await;
    fleet.wait_members(3).await;
    assert!(
        serves_only(fleet.proxies[2].addr, "v2", Duration::from_secs(10)).await,
        "{}",
        fleet.logs()
    );
    // Retired from a third member once it takes no traffic (forced: it is the return
    // point of the switch back to blue); every member drops it.
    ok(fleet.setups[0].ctl(&["switch", "shop", "blue"]));
    let out = ok(fleet.setups[0].ctl(&["retire", "shop", "v2", "--force", "--wait-fleet"]));
    assert!(out.contains("retire"), "{out}");
    for i in 0..3 {
        let status = fleet.client(i).service("shop").await.unwrap();
        assert!(status.versions.iter().all(|v| v.name != "v2"), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_watch_a_released_version_like_one_from_the_file() {
    let versions = upstreams(&["blue", "v2"]).await;
    let health = "[services.shop.health]\npath = \"/\"\ninterval = \"100ms\"\ntimeout = \"50ms\"\nfall = 1\nrise = 1\n";
    let setup = Setup::new(&versions[..1], "{ blue = 100 }", health);
    let _proxy = Proxy::start(&setup, &[]).await;
    let down = closed_port();
    let v2 = versions[1].addr.to_string();
    ok(setup.ctl(&["release", "shop", "down", "--endpoint", &down]));
    ok(setup.ctl(&["release", "shop", "v2", "--endpoint", &v2]));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = setup.client().service("shop").await.unwrap();
        let refusing = |name: &str| {
            let version = status.versions.iter().find(|v| v.name == name).unwrap();
            version.refusing.clone().unwrap_or_default()
        };
        let (_, metrics) = admin_raw(&setup, Method::GET, "/metrics", "").await;
        let checked_down = format!(
            "switchyard_health_up{{service=\"shop\",version=\"down\",endpoint=\"{down}\"}} 0"
        );
        let checked_up =
            format!("switchyard_health_up{{service=\"shop\",version=\"v2\",endpoint=\"{v2}\"}} 1");
        let checked = metrics.contains(&checked_down) && metrics.contains(&checked_up);
        if refusing("down") == [down.clone()] && refusing("v2").is_empty() && checked {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the released version's endpoint was never checked down: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fails(setup.ctl(&["switch", "shop", "down"]), "down");
    ok(setup.ctl(&["switch", "shop", "v2"]));
}
