//! What an operator sees of a fleet: `ctl --wait-fleet`, an instance that has not caught up
//! with the fleet's log, and the members in `ctl status`, `/status` and the status page.

mod common;

use common::fleet::Fleet;
use common::nats::{cluster_toml, NatsNode};
use common::{browser_dom, upstreams, Proxy, Setup};
use std::time::{Duration, Instant};

const WEIGHTS: &str = "{ blue = 100, canary = 0 }";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_wait_fleet_returns_once_all_three_applied_and_names_a_member_that_lags() {
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    let fleet = Fleet::start_with(&[&nats], &versions, WEIGHTS, |_| String::new()).await;

    // 50 changes, each on one instance, each until all three applied it.
    let mut took = Vec::new();
    for n in 0..50usize {
        let canary = format!("canary={}", n % 2);
        let started = Instant::now();
        let output =
            fleet.setups[n % 3].ctl(&["weights", "shop", "blue=1", &canary, "--wait-fleet"]);
        took.push(started.elapsed());
        let text = common::stdout(&output);
        assert!(output.status.success(), "{text}{}", common::stderr(&output));
        assert!(
            text.contains("fleet edge: all 3 live member(s) applied revision"),
            "{text}"
        );
    }
    // `--wait-fleet` returned: every instance serves the last change already.
    let last = fleet.client(0).status().await.unwrap().revision;
    for i in 0..3 {
        assert_eq!(fleet.client(i).status().await.unwrap().revision, last);
    }
    took.sort();
    println!(
        "`ctl weights --wait-fleet` over 50 changes (process start, change, all three applied): p50 {:?}, p99 {:?}",
        percentile(&took, 0.5),
        percentile(&took, 0.99)
    );
    // The figures are printed, not asserted: a timed bound fails on a busy machine (it did
    // at a load of 9 on 2 cores), and what the test proves is the order of events above.

    // A member that cannot apply (stopped): named, with where it is, once the bound passes.
    fleet.proxies[2].signal(libc::SIGSTOP);
    let output = fleet.setups[0].ctl(&["weights", "shop", "blue=1", "canary=5", "--wait-fleet=1s"]);
    fleet.proxies[2].signal(libc::SIGCONT);
    let text = common::stdout(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains(&format!("revision {}", last + 1)), "{text}");
    assert!(
        text.contains(&format!(
            "fleet edge: revision {} not applied within 1s by edge-3 (at {last})",
            last + 1
        )),
        "{text}"
    );
    assert!(
        !text.contains("edge-1 (at") && !text.contains("edge-2 (at"),
        "{text}"
    );
    // It catches up once it runs again.
    fleet.wait_revision_on(2, last + 1).await;

    // Without a fleet, --wait-fleet says so (the change itself is made).
    let alone = Setup::new(&versions, WEIGHTS, "");
    let _proxy = Proxy::start(&alone, &[]).await;
    let output = alone.ctl(&["weights", "shop", "blue=1", "canary=1", "--wait-fleet"]);
    let text = common::stdout(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("revision 2"), "{text}");
    assert!(
        text.contains("--wait-fleet: this instance is not in a fleet"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_has_not_caught_up_says_so_in_one_line() {
    let mut nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    let first = Setup::new(
        &versions,
        WEIGHTS,
        &cluster_toml(&[&nats], "edge", "edge-1"),
    );
    let first_proxy = Proxy::start(&first, &[]).await;
    wait_serving_shop(&first, &first_proxy).await;
    for canary in ["canary=10", "canary=20", "canary=30"] {
        let output = first.ctl(&["weights", "shop", "blue=90", canary]);
        assert!(output.status.success(), "{}", common::stderr(&output));
    }
    // A new instance (empty cache) that cannot reach the fleet's log yet.
    nats.kill();
    let late = Setup::new(
        &versions,
        WEIGHTS,
        &cluster_toml(&[&nats], "edge", "edge-2"),
    );
    let late_proxy = Proxy::start(&late, &[]).await;
    let expected = "this instance has not caught up with the fleet's log yet (applied 0; the fleet's log has not been reached since this instance started); try again or ask another instance";
    for args in [
        &["weights", "shop", "blue=50", "canary=50"][..],
        &["abort", "shop"],
        &["status", "shop"],
        &["history", "shop"],
    ] {
        let output = late.ctl(args);
        assert!(!output.status.success(), "{args:?}");
        let line = common::stderr(&output);
        assert_eq!(line.trim().lines().count(), 1, "{args:?}: {line}");
        assert!(line.contains(expected), "{args:?}: {line}");
    }
    let status = common::stdout(&late.ctl(&["status"]));
    assert!(
        status.contains("fleet edge: NATS UNREACHABLE from edge-2"),
        "{status}"
    );
    // NATS back: it joins, catches up, and answers for the fleet's routing.
    nats.start();
    nats.wait_listening();
    let text = wait_serving_shop(&late, &late_proxy).await;
    assert!(
        text.contains("shop  stable=blue  last change: revision 4"),
        "{text}"
    );
}

/// Waits (bounded) until the instance answers `ctl status shop` (it joined the fleet's log
/// and caught up); returns the answer.
async fn wait_serving_shop(setup: &Setup, proxy: &Proxy) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = setup.ctl(&["status", "shop"]);
        if output.status.success() {
            return common::stdout(&output);
        }
        let line = common::stderr(&output);
        assert!(
            line.contains("has not caught up"),
            "{line}\n{}",
            proxy.log_text()
        );
        assert!(Instant::now() < deadline, "{line}\n{}", proxy.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_how_many_members_share_the_routing_and_what_each_applied() {
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "fleet-page-token-0123456789").unwrap();
    let admin = format!(
        "listen = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
        token.path().display()
    );
    let fleet = Fleet::start_with(&[&nats], &versions, WEIGHTS, |i| match i {
        1 => admin.clone(),
        _ => String::new(),
    })
    .await;
    let revision = fleet.client(0).status().await.unwrap().revision;

    let status = fleet.client(1).status().await.unwrap();
    let shared = status.fleet.expect("no fleet in /status");
    assert_eq!(shared.instance, "edge-2");
    let members: Vec<(String, u64)> = shared
        .members
        .iter()
        .map(|m| (m.instance.clone(), m.applied))
        .collect();
    assert_eq!(
        members,
        [
            ("edge-1".into(), revision),
            ("edge-2".into(), revision),
            ("edge-3".into(), revision)
        ]
    );
    let text = common::stdout(&fleet.setups[1].ctl(&["status"]));
    let line = format!(
        "fleet edge: 3 live member(s) share this routing (edge-1 at {revision}, edge-2 at {revision}, edge-3 at {revision}); this is edge-2"
    );
    assert!(text.contains(&line), "{text}");

    // The status page says it too.
    let url = format!(
        "http://{}/",
        status.admin_listen.expect("admin TCP listener")
    );
    let dom = browser_dom(url).await;
    let shown = format!("fleet edge: 3 live member(s) share this routing (edge-1 at {revision}, edge-2 at {revision}, edge-3 at {revision}) · this is edge-2");
    assert!(dom.contains(&shown), "{dom}");
}
