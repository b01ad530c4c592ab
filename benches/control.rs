//! How fast a routing change reaches traffic.
//!
//! - `apply_until_acknowledged`: `Controller::apply` from call to return: check, journal
//!   write + fsync, table build, swap. This is what `ctl weights` waits for (plus the socket).
//! - `apply_until_visible`: from the same call until another thread's `table.load()` (what
//!   every request does) sees the new revision. The swap happens before the acknowledgement,
//!   so this is never later than the ack.
//! - `build_and_swap`: the table build and the `ArcSwap` store alone (no journal).

use criterion::{criterion_group, criterion_main, Criterion};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::config::Config;
use switchyard::control::command::Change;
use switchyard::control::record::Origin;
use switchyard::control::Controller;
use switchyard::routing::{RoutingTable, ServiceState};
use switchyard::telemetry::Telemetry;
use switchyard::upstream::endpoint::{EndpointRegistry, EndpointSettings};

fn config(state_dir: &Path) -> Config {
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = \"{}\"\n\
         [services.shop]\nstable = \"blue\"\nweights = {{ blue = 95, canary = 5 }}\n\
         [services.shop.versions.blue]\nendpoints = [\"127.0.0.1:9001\", \"127.0.0.1:9011\"]\n\
         [services.shop.versions.canary]\nendpoints = [\"127.0.0.1:9003\"]\n\
         [services.shop.versions.green]\nendpoints = [\"127.0.0.1:9004\"]\n",
        state_dir.display()
    );
    Config::parse(Path::new("bench.toml"), &text).unwrap()
}

fn weights(i: u64) -> Change {
    let canary = i % 50 + 1;
    Change::Weights {
        weights: BTreeMap::from([
            ("blue".to_string(), 100 - canary),
            ("canary".to_string(), canary),
        ]),
    }
}

fn control(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let controller = Arc::new(
        runtime
            .block_on(Controller::open(
                config.clone(),
                "bench.toml".into(),
                1,
                false,
            ))
            .unwrap(),
    );
    let mut group = c.benchmark_group("control");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(5));
    let mut counter = 0u64;

    group.bench_function("apply_until_acknowledged", |b| {
        b.iter(|| {
            counter += 1;
            let origin = Origin::new("bench", "");
            runtime
                .block_on(controller.apply("shop", weights(counter), origin))
                .unwrap()
        })
    });

    // A reader thread stands in for the request path: it spins on `table.load()` and
    // notes when it first sees each new revision.
    let stop = Arc::new(AtomicBool::new(false));
    let seen_at = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    let reader = {
        let (plane, stop, seen_at) = (controller.plane.clone(), stop.clone(), seen_at.clone());
        std::thread::spawn(move || {
            let mut last = plane.table.load().revision;
            while !stop.load(Ordering::Relaxed) {
                let revision = plane.table.load().revision;
                if revision != last {
                    last = revision;
                    seen_at.store(epoch.elapsed().as_nanos() as u64, Ordering::Release);
                }
            }
        })
    };
    group.bench_function("apply_until_visible", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                counter += 1;
                seen_at.store(0, Ordering::Release);
                let called = epoch.elapsed().as_nanos() as u64;
                let origin = Origin::new("bench", "");
                runtime
                    .block_on(controller.apply("shop", weights(counter), origin))
                    .unwrap();
                let mut seen = seen_at.load(Ordering::Acquire);
                while seen == 0 {
                    std::hint::spin_loop();
                    seen = seen_at.load(Ordering::Acquire);
                }
                total += Duration::from_nanos(seen.saturating_sub(called));
            }
            total
        })
    });
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();

    let endpoints = EndpointRegistry::new(EndpointSettings {
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        backoff: Duration::from_secs(1),
    });
    let telemetry = Telemetry::new(1);
    let state = ServiceState {
        stable: "blue".into(),
        weights: BTreeMap::from([("blue".into(), 90), ("canary".into(), 10)]),
        latched: false,
        frozen: false,
        ..ServiceState::default()
    };
    let states = BTreeMap::from([("shop".to_string(), state)]);
    group.bench_function("build_and_swap", |b| {
        b.iter(|| {
            counter += 1;
            let table = RoutingTable::build(&config, &states, &endpoints, &telemetry, counter);
            controller.plane.table.store(Arc::new(table));
        })
    });
    group.finish();
}

criterion_group!(benches, control);
criterion_main!(benches);
