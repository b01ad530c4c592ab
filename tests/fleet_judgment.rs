//! Pooled judgment: three real switchyard processes over a real `nats-server`, each guard
//! judging the fleet's traffic as one.

mod common;

use common::fleet::{metric, Fleet};
use common::nats::NatsNode;
use common::{upstreams, Load, LoadResult, Proxy, Setup};
use std::time::{Duration, Instant};
use switchyard::admin::api::ChangeRequest;
use switchyard::control::record::{ChangeKind, RevisionRecord};
use switchyard::ctl::client::AdminClient;

/// These tests time the guard under load: one at a time, so that they measure the guard
/// and not several fleets fighting over two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The canary gets 5% of the traffic and, once bad, fails 6% of its requests: a verdict
/// needs some 70 canary requests, so it takes seconds, and how many instances share the
/// evidence shows.
const WEIGHTS: &str = "{ blue = 95, canary = 5 }";
const BAD_RATE: f64 = 0.06;
/// Requests per second sent to each of the three instances.
const RPS_EACH: u64 = 200;
/// Real traffic before the fault, so each judge has a baseline of healthy answers.
const WARM_UP: Duration = Duration::from_secs(3);

/// Waits until every one of `clients` has the service latched; returns how long after
/// `onset` the last one did, or `None` after `within`.
async fn all_cut_back(
    clients: &[AdminClient],
    onset: Instant,
    within: Duration,
) -> Option<Duration> {
    let mut pending: Vec<&AdminClient> = clients.iter().collect();
    let mut last = Duration::ZERO;
    while !pending.is_empty() {
        if onset.elapsed() > within {
            return None;
        }
        let mut still = Vec::new();
        for client in pending {
            match client.service("shop").await {
                Ok(status) if status.latched => last = onset.elapsed(),
                _ => still.push(client),
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Some(last)
}

async fn aborts(client: &AdminClient) -> Vec<RevisionRecord> {
    let history = client.history("shop", 1000).await.unwrap();
    history
        .revisions
        .into_iter()
        .filter(|r| r.kind == ChangeKind::Abort)
        .collect()
}

async fn finish(loads: Vec<Load>) -> LoadResult {
    let mut total = LoadResult::default();
    for load in loads {
        let part = load.stop().await;
        total.sent += part.sent;
        total.failed += part.failed;
        total.retried += part.retried;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_canary_is_cut_back_on_all_three_as_fast_as_on_one_instance_with_all_traffic() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    let fleet = Fleet::start_with(&[&nats], &versions, WEIGHTS, |_| String::new()).await;
    let clients: Vec<AdminClient> = (0..3).map(|i| fleet.client(i)).collect();

    // The fleet: the traffic spread over three instances.
    let loads = fleet
        .proxies
        .iter()
        .map(|p| Load::start(p.addr, RPS_EACH, Duration::from_secs(40)))
        .collect();
    tokio::time::sleep(WARM_UP).await;
    versions[1].faults.set_error_rate(BAD_RATE);
    let onset = Instant::now();
    let pooled = all_cut_back(&clients, onset, Duration::from_secs(25)).await;
    let users = finish(loads).await;
    let Some(pooled) = pooled else {
        panic!("not cut back on all three within 25s\n{}", fleet.logs());
    };
    assert_eq!(users.failed, 0, "users saw {} errors", users.failed);
    assert!(
        users.retried > 0,
        "no canary failure was retried: the test proved nothing"
    );
    // One abort in the fleet's log, by the guard, applied by all three.
    let logged = aborts(&clients[2]).await;
    assert_eq!(logged.len(), 1, "{logged:#?}");
    assert_eq!(logged[0].actor, "guard");
    for i in 0..3 {
        fleet.wait_revision_on(i, logged[0].revision).await;
    }
    let deciders: usize = (0..3)
        .map(|i| {
            fleet.proxies[i]
                .log_text()
                .matches("guard cut back")
                .count()
        })
        .sum();
    assert_eq!(deciders, 1, "{}", fleet.logs());

    // One instance carrying all the traffic, same canary, same failure.
    versions[1].faults.set_error_rate(0.0);
    let setup = Setup::new(&versions, WEIGHTS, "");
    let single = Proxy::start(&setup, &[]).await;
    let load = Load::start(single.addr, 3 * RPS_EACH, Duration::from_secs(40));
    tokio::time::sleep(WARM_UP).await;
    versions[1].faults.set_error_rate(BAD_RATE);
    let onset = Instant::now();
    let alone = all_cut_back(&[setup.client()], onset, Duration::from_secs(25)).await;
    let users = load.stop().await;
    let alone = alone.expect("the single instance never cut back");
    assert_eq!(users.failed, 0, "users saw {} errors", users.failed);
    println!(
        "time to verdict, canary at 5% failing {:.0}% of {} req/s: pooled over three instances (last of the three cut back) {pooled:?}; one instance with all the traffic {alone:?}",
        BAD_RATE * 100.0,
        3 * RPS_EACH
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_without_traffic_of_its_own_cuts_back_on_the_fleets_evidence() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    // Only edge-1 judges, and it gets no traffic: it can only decide on what the others saw.
    let fleet = Fleet::start_with(&[&nats], &versions, WEIGHTS, |i| match i {
        0 => String::new(),
        _ => "\n[services.shop.guard]\nenabled = false\n".to_string(),
    })
    .await;
    versions[1].faults.set_error_rate(0.2);
    let loads = fleet.proxies[1..]
        .iter()
        .map(|p| Load::start(p.addr, 300, Duration::from_secs(30)))
        .collect();
    let clients: Vec<AdminClient> = (0..3).map(|i| fleet.client(i)).collect();
    let cut = all_cut_back(&clients, Instant::now(), Duration::from_secs(20)).await;
    finish(loads).await;
    assert!(cut.is_some(), "never cut back\n{}", fleet.logs());
    let incidents = clients[0].incidents(None).await.unwrap();
    assert_eq!(incidents.incidents.len(), 1, "{incidents:?}");
    let own = metric(
        &clients[0],
        "switchyard_requests_total{service=\"shop\",version=\"canary\",outcome=\"2xx\"}",
    )
    .await;
    assert_eq!(own, 0.0, "edge-1 served canary traffic itself");
    assert_eq!(aborts(&clients[1]).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_judged_by_the_fleet_is_never_cut_back() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    for side in &versions {
        side.faults.set_error_rate(0.01);
        side.faults
            .set_latency(Duration::from_millis(1), Duration::from_millis(2));
    }
    // The error rule is the statistical test whose false-abort bound pooling must keep. The
    // latency rule is a threshold on p99s, and three proxies, their upstreams and the load
    // on two loaded cores stall now and then for tens of ms: here it only judges gross
    // slowness, so a stall is not taken for a slow canary.
    let relaxed = "\n[services.shop.guard]\nlatency_min_increase = \"250ms\"\n";
    let fleet = Fleet::start_with(&[&nats], &versions, "{ blue = 90, canary = 10 }", |_| {
        relaxed.to_string()
    })
    .await;
    let clients: Vec<AdminClient> = (0..3).map(|i| fleet.client(i)).collect();
    let looks_before: Vec<f64> = futures_util::future::join_all(
        clients
            .iter()
            .map(|c| metric(c, "switchyard_guard_looks_total")),
    )
    .await;
    let run = Duration::from_secs(20);
    let tap = Tap::start(&nats).await;
    let loads = fleet
        .proxies
        .iter()
        .map(|p| Load::start(p.addr, RPS_EACH, run))
        .collect::<Vec<_>>();
    let mut users = LoadResult::default();
    for load in loads {
        let part = load.finish().await;
        users.sent += part.sent;
        users.failed += part.failed;
    }
    tap.report(run).await;
    let mut looks = 0.0;
    let mut canary_requests = 0.0;
    for (client, before) in clients.iter().zip(looks_before) {
        looks += metric(client, "switchyard_guard_looks_total").await - before;
        for outcome in ["2xx", "5xx"] {
            canary_requests += metric(
                client,
                &format!("switchyard_requests_total{{service=\"shop\",version=\"canary\",outcome=\"{outcome}\"}}"),
            )
            .await;
        }
        let status = client.service("shop").await.unwrap();
        assert!(
            !status.latched,
            "cut back: {:#?}\n{status:?}",
            aborts(client).await
        );
        let guard = status.guard.expect("the canary was judged");
        assert_eq!(guard.verdict.label(), "healthy", "{guard:?}");
    }
    let false_aborts = aborts(&clients[0]).await.len();
    println!(
        "healthy canary over {run:?}: {} requests ({canary_requests} to the canary, judged pooled by 3 guards), {looks} pooled judgments, {false_aborts} false aborts",
        users.sent
    );
    assert!(users.sent > 6000, "only {} requests", users.sent);
    assert_eq!(false_aborts, 0);
    for client in &clients {
        assert!(client.incidents(None).await.unwrap().incidents.is_empty());
    }
}

/// Everything NATS carries on the fleet's account (a subscriber to `>`), by kind.
struct Tap {
    stop: tokio::sync::oneshot::Sender<()>,
    counted: tokio::task::JoinHandle<std::collections::BTreeMap<&'static str, (u64, u64)>>,
}

impl Tap {
    async fn start(nats: &NatsNode) -> Tap {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let mut all = client.subscribe(">").await.unwrap();
        client.flush().await.unwrap();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let counted = tokio::spawn(async move {
            let _client = client;
            let mut counted = std::collections::BTreeMap::new();
            loop {
                let message = tokio::select! {
                    _ = &mut stopped => return counted,
                    message = futures_util::StreamExt::next(&mut all) => match message {
                        Some(message) => message,
                        None => return counted,
                    },
                };
                let subject = message.subject.as_str();
                let kind = match subject {
                    "switchyard.edge.evidence" => "evidence (core NATS)",
                    "switchyard.edge.revisions" => "revision log appends",
                    s if s.starts_with("$KV.") => "member announcements (KV puts)",
                    s if s.starts_with("$JS.API.") => "JetStream API requests",
                    s if s.starts_with("_INBOX.") => "replies and log deliveries",
                    // One per API request, from the server; delivered only to a subscriber.
                    s if s.starts_with("$JS.EVENT.") => "JetStream advisories",
                    _ => "other",
                };
                let entry: &mut (u64, u64) = counted.entry(kind).or_default();
                entry.0 += 1;
                entry.1 += message.payload.len() as u64;
            }
        });
        Tap { stop, counted }
    }

    /// Prints what NATS carried per second over `run`, by kind.
    async fn report(self, run: Duration) {
        let _ = self.stop.send(());
        let counted = self.counted.await.unwrap();
        let secs = run.as_secs_f64();
        for (kind, (messages, bytes)) in &counted {
            println!(
                "NATS, fleet of 3 under load: {kind}: {:.1} msg/s, {:.0} payload bytes/s ({:.0} bytes each)",
                *messages as f64 / secs,
                *bytes as f64 / secs,
                *bytes as f64 / (*messages).max(1) as f64
            );
        }
        let evidence = counted.get("evidence (core NATS)").map_or(0, |c| c.0);
        assert!(evidence > 0, "no evidence was published: {counted:?}");
    }
}

fn abort_request(reason: &str) -> ChangeRequest {
    ChangeRequest {
        reason: Some(reason.to_string()),
        ..ChangeRequest::default()
    }
}

/// Two members deciding at the same moment: the log's optimistic append lets one abort in,
/// the other is planned again against it and finds nothing left to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborts_decided_on_three_instances_at_once_make_one_revision() {
    let nats = NatsNode::single();
    let versions = upstreams(&["blue", "canary"]).await;
    let fleet = Fleet::start_with(&[&nats], &versions, WEIGHTS, |_| String::new()).await;
    for round in 0..5 {
        let before = fleet.client(0).status().await.unwrap().revision;
        let tasks: Vec<_> = (0..3)
            .map(|i| {
                let client = fleet.client(i);
                let reason = format!("round {round}: edge-{} says abort", i + 1);
                tokio::spawn(async move {
                    client
                        .change("shop", "abort", &abort_request(&reason))
                        .await
                })
            })
            .collect();
        let mut applied = Vec::new();
        let mut refused = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(record) => applied.push(record),
                Err(err) => refused.push(err.to_string()),
            }
        }
        assert_eq!(applied.len(), 1, "round {round}: {applied:#?} {refused:?}");
        assert_eq!(applied[0].revision, before + 1);
        for why in &refused {
            assert!(why.contains("no change"), "{why}");
        }
        let resumed = fleet
            .client(round % 3)
            .change("shop", "resume", &abort_request("next round"))
            .await
            .unwrap();
        for i in 0..3 {
            fleet.wait_revision_on(i, resumed.revision).await;
        }
    }
    assert_eq!(aborts(&fleet.client(1)).await.len(), 5);
}
