//! What the request path pays to be measured: one `record` per exchange (an uncontended
//! lock, two counters, two histogram buckets), and the guard's per-tick reads.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::time::{Duration, Instant};
use switchyard::telemetry::{Outcome, Telemetry};

fn telemetry(c: &mut Criterion) {
    let telemetry = Telemetry::new(2);
    let stats = telemetry.version("shop", "canary");
    let now = Instant::now();
    c.bench_function("telemetry/record", |b| {
        b.iter(|| {
            stats.record(
                black_box(Outcome::Status2xx),
                black_box(Duration::from_micros(1234)),
                now,
            )
        })
    });
    c.bench_function("telemetry/record_with_clock", |b| {
        b.iter(|| {
            let now = Instant::now();
            stats.record(Outcome::Status2xx, now.elapsed(), now)
        })
    });
    c.bench_function("guard_read/window_tally_30s", |b| {
        b.iter(|| black_box(stats.window_tally(Duration::from_secs(30), Instant::now())))
    });
    c.bench_function("guard_read/window_with_latency_30s", |b| {
        b.iter(|| black_box(stats.window(Duration::from_secs(30), Instant::now())))
    });
}

criterion_group!(benches, telemetry);
criterion_main!(benches);
