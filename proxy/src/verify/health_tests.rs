//! Health-check timing under paused tokio time: the checks themselves are scripted.

use super::*;
use crate::config::ExpectStatus;
use crate::upstream::connect::Dial;
use crate::upstream::endpoint::{EndpointRegistry, EndpointSettings};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

fn registry() -> EndpointRegistry {
    EndpointRegistry::new(EndpointSettings {
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        backoff: Duration::from_secs(5),
    })
}

fn settings() -> HealthSettings {
    HealthSettings {
        path: "/healthz".into(),
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(300),
        fall: 3,
        rise: 2,
        expect: ExpectStatus::Class(2),
    }
}

#[test]
fn fall_and_rise_need_results_in_a_row() {
    let mut state = Hysteresis::new(3, 2, true);
    assert_eq!(state.record(false), None);
    assert_eq!(state.record(false), None);
    assert_eq!(state.record(true), None, "a success breaks the run");
    assert_eq!(state.record(false), None);
    assert_eq!(state.record(false), None);
    assert_eq!(state.record(false), Some(false));
    assert_eq!(state.record(false), None, "already down");
    assert_eq!(state.record(true), None);
    assert_eq!(state.record(true), Some(true));
}

#[test]
fn flapping_never_changes_state() {
    let mut state = Hysteresis::new(2, 2, true);
    for round in 0..1000 {
        assert_eq!(state.record(round % 2 == 0), None);
    }
}

/// A scripted endpoint: healthy or not, answering or hanging; counts the checks.
#[derive(Default)]
struct Script {
    failing: AtomicBool,
    hanging: AtomicBool,
    checks: AtomicU32,
}

fn start(
    script: &Arc<Script>,
    endpoint: Arc<Endpoint>,
    offset: Duration,
) -> (Arc<HealthBoard>, JoinHandle<()>) {
    let board = Arc::new(HealthBoard::default());
    let watched = Watched {
        endpoint,
        service: "shop".into(),
        version: "blue".into(),
        host: "shop".into(),
        http2: false,
    };
    let script = script.clone();
    let task = tokio::spawn(watch_endpoint(
        watched,
        settings(),
        offset,
        board.clone(),
        move || {
            let script = script.clone();
            async move {
                script.checks.fetch_add(1, Ordering::SeqCst);
                if script.hanging.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                match script.failing.load(Ordering::SeqCst) {
                    true => Err("status 500 (expected 2xx)".to_string()),
                    false => Ok(()),
                }
            }
        },
    ));
    (board, task)
}

/// Sleeps on the paused clock: time jumps, the checker runs every tick it reaches.
async fn at(start: Instant, millis: u64) {
    tokio::time::sleep_until(start + Duration::from_millis(millis)).await;
}

#[tokio::test(start_paused = true)]
async fn leaves_after_fall_checks_and_returns_after_rise() {
    let registry = registry();
    let endpoint = registry.get(Dial::plain("127.0.0.1:9".parse().unwrap()));
    let script = Arc::new(Script::default());
    let t0 = Instant::now();
    let (board, task) = start(&script, endpoint.clone(), Duration::ZERO);
    at(t0, 500).await;
    script.failing.store(true, Ordering::SeqCst);
    // Checks at 1 s, 2 s and 3 s fail: down at the third.
    at(t0, 2_500).await;
    assert!(!endpoint.is_checked_down(), "two failures are not enough");
    at(t0, 3_100).await;
    assert!(
        endpoint.is_checked_down(),
        "three failures in a row take it out"
    );
    assert!(
        endpoint.is_backing_off(std::time::Instant::now()),
        "out of the rotation"
    );
    script.failing.store(false, Ordering::SeqCst);
    // Checks at 4 s and 5 s pass: back at the second.
    at(t0, 4_500).await;
    assert!(endpoint.is_checked_down(), "one success is not enough");
    at(t0, 5_100).await;
    assert!(!endpoint.is_checked_down(), "two successes bring it back");
    let health = board.snapshot()[&endpoint.addr].clone();
    assert_eq!((health.changes, health.failures, health.checks), (2, 3, 6));
    assert_eq!(
        health.last_failure.as_deref(),
        Some("status 500 (expected 2xx)")
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_check_that_never_answers_fails_at_the_timeout() {
    let registry = registry();
    let endpoint = registry.get(Dial::plain("127.0.0.1:9".parse().unwrap()));
    let script = Arc::new(Script::default());
    script.hanging.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    let (board, task) = start(&script, endpoint.clone(), Duration::ZERO);
    // Checks at 0, 1 and 2 s each give up 300 ms later.
    at(t0, 2_200).await;
    assert!(!endpoint.is_checked_down());
    at(t0, 2_400).await;
    assert!(endpoint.is_checked_down());
    let health = board.snapshot()[&endpoint.addr].clone();
    assert_eq!(
        health.last_failure.as_deref(),
        Some("no answer within 300ms")
    );
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn flapping_endpoint_stays_in_and_logs_nothing() {
    let registry = registry();
    let endpoint = registry.get(Dial::plain("127.0.0.1:9".parse().unwrap()));
    let script = Arc::new(Script::default());
    let t0 = Instant::now();
    let (board, task) = start(&script, endpoint.clone(), Duration::ZERO);
    for second in 0..60u64 {
        script.failing.store(second % 2 == 0, Ordering::SeqCst);
        at(t0, second * 1_000 + 500).await;
        assert!(!endpoint.is_checked_down());
    }
    let health = board.snapshot()[&endpoint.addr].clone();
    assert_eq!(health.changes, 0, "no state change, so no log line");
    assert_eq!(health.checks, 60);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn first_check_waits_for_its_offset() {
    let registry = registry();
    let endpoint = registry.get(Dial::plain("127.0.0.1:9".parse().unwrap()));
    let script = Arc::new(Script::default());
    let t0 = Instant::now();
    let (_board, task) = start(&script, endpoint, Duration::from_millis(700));
    at(t0, 600).await;
    assert_eq!(script.checks.load(Ordering::SeqCst), 0);
    at(t0, 800).await;
    assert_eq!(script.checks.load(Ordering::SeqCst), 1);
    at(t0, 1_800).await;
    assert_eq!(script.checks.load(Ordering::SeqCst), 2);
    task.abort();
}

#[tokio::test]
async fn endpoints_are_spread_over_the_interval_and_released_when_unchecked() {
    let text = "[proxy]\nlisten = \"127.0.0.1:1\"\n[services.shop]\nstable = \"blue\"\nweights = { blue = 1 }\n[services.shop.health]\ninterval = \"2s\"\n[services.shop.versions.blue]\nendpoints = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n[services.shop.versions.green]\nendpoints = [\"127.0.0.1:3\", \"127.0.0.1:4\"]\n[services.other]\nhosts = [\"other\"]\nstable = \"v\"\nweights = { v = 1 }\n[services.other.versions.v]\nendpoints = [\"127.0.0.1:5\"]\n";
    let config = Config::parse(std::path::Path::new("t.toml"), text).unwrap();
    let registry = registry();
    let telemetry = crate::telemetry::Telemetry::new(1);
    let table = RoutingTable::build(&config, &Default::default(), &registry, &telemetry, 1);
    let wanted = wanted(&config, &table);
    let mut offsets: Vec<(u16, u128)> = wanted
        .iter()
        .map(|(addr, (_, _, offset))| (addr.port(), offset.as_millis()))
        .collect();
    offsets.sort();
    assert_eq!(
        offsets,
        [(1, 0), (2, 500), (3, 1000), (4, 1500)],
        "no [health]: not checked"
    );

    let board = Arc::new(HealthBoard::default());
    let mut checkers = Checkers::default();
    checkers.reconcile(&config, &table, &board);
    let third = registry.get(Dial::plain("127.0.0.1:3".parse().unwrap()));
    third.set_checked_up(false);
    let without = Config::parse(
        std::path::Path::new("t.toml"),
        &text.replace("[services.shop.health]\ninterval = \"2s\"\n", ""),
    )
    .unwrap();
    checkers.reconcile(&without, &table, &board);
    assert!(checkers.running.is_empty());
    assert!(
        !third.is_checked_down(),
        "an endpoint no longer checked is back on passive signals"
    );
}
