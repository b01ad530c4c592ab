//! The sample load client against real sample upstreams on loopback.

use http::HeaderName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_testkit::load::{Load, LoadSpec, Protocol, Recorder};
use switchyard_testkit::SampleUpstream;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn spec_for(upstream: &SampleUpstream, connections: usize, rate: Option<f64>) -> LoadSpec {
    let mut spec = LoadSpec::new(upstream.addr, connections, rate);
    // Straight at the upstream: it names itself in x-upstream.
    spec.version_header = HeaderName::from_static("x-upstream");
    spec.stop = Duration::from_secs(1);
    spec
}

async fn run(spec: LoadSpec) -> switchyard_testkit::load::LoadReport {
    let recorder = Arc::new(Recorder::new(Instant::now()));
    Load::start(spec, recorder.clone())
        .unwrap()
        .finished()
        .await;
    recorder.report()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_keeps_its_rate_and_names_the_version() {
    let blue = SampleUpstream::start("blue", loopback()).await.unwrap();
    for protocol in [Protocol::Http1, Protocol::H2] {
        let mut spec = spec_for(&blue, 4, Some(200.0));
        spec.protocol = protocol;
        let report = run(spec).await;
        assert_eq!(report.requests, 200, "{protocol:?}: {report:?}");
        assert_eq!(report.errors, 0);
        let version = report.version("blue").unwrap();
        assert_eq!(version.share, 1.0);
        assert_eq!(version.per_second[0].requests, 200);
        assert_eq!(version.per_tenth.iter().sum::<u32>(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_counts_the_wait_of_the_requests_behind_it() {
    let slow = SampleUpstream::start("slow", loopback()).await.unwrap();
    slow.faults
        .set_latency(Duration::from_millis(50), Duration::ZERO);
    // One connection asked for 100 req/s can answer only about 20: the schedule falls
    // behind, and latency is measured from when each request was due.
    let mut spec = spec_for(&slow, 1, Some(100.0));
    spec.timeout = Duration::from_millis(500);
    let report = run(spec).await;
    let version = report.version("slow").unwrap();
    assert!(version.p99_ms > 400.0, "p99 {} ms", version.p99_ms);
    assert!(report.unsent > 0, "{report:?}");
    assert!(report.requests + report.unsent >= 95, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_measures_from_the_actual_send() {
    let slow = SampleUpstream::start("slow", loopback()).await.unwrap();
    slow.faults
        .set_latency(Duration::from_millis(50), Duration::ZERO);
    let report = run(spec_for(&slow, 1, None)).await;
    let version = report.version("slow").unwrap();
    // About 20 in the second; fewer only if the machine stalls, never more.
    assert!((10..=21).contains(&report.requests), "{report:?}");
    assert!(version.p99_ms < 200.0, "p99 {} ms", version.p99_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_per_kind() {
    let flaky = SampleUpstream::start("flaky", loopback()).await.unwrap();
    flaky.faults.set_error_rate(1.0);
    let report = run(spec_for(&flaky, 2, Some(50.0))).await;
    assert_eq!(report.errors, 50);
    assert_eq!(report.endings.get("500"), Some(&50));

    let gone = SampleUpstream::start("gone", loopback()).await.unwrap();
    gone.stop();
    let report = run(spec_for(&gone, 2, Some(50.0))).await;
    assert_eq!(report.errors, 50);
    assert_eq!(report.endings.get("connect_failed"), Some(&50));
    assert_eq!(
        report.versions[0].name,
        switchyard_testkit::load::NO_VERSION
    );
}

#[test]
fn bad_load_specs_are_refused() {
    let recorder = Arc::new(Recorder::new(Instant::now()));
    let target = SocketAddr::from(([127, 0, 0, 1], 9));
    for rate in [0.0, -1.0, f64::NAN] {
        let spec = LoadSpec::new(target, 1, Some(rate));
        assert!(Load::start(spec, recorder.clone()).is_err());
    }
    assert!(Load::start(LoadSpec::new(target, 0, None), recorder.clone()).is_err());
    let mut spec = LoadSpec::new(target, 1, None);
    spec.path = "not a path".into();
    assert!(Load::start(spec, recorder).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_count_by_their_grpc_status() {
    // The sample upstream answers gRPC calls as a gRPC server would: OK in the trailers,
    // an injected failure as a trailers-only UNAVAILABLE (HTTP 200 all the same).
    let blue = SampleUpstream::start("blue", loopback()).await.unwrap();
    let mut spec = spec_for(&blue, 2, Some(100.0));
    spec.protocol = Protocol::Grpc;
    let report = run(spec.clone()).await;
    assert_eq!(report.requests, 100, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    blue.faults.set_error_rate(1.0);
    let report = run(spec).await;
    assert_eq!(report.requests, 100, "{report:?}");
    assert_eq!(
        report.errors, 100,
        "UNAVAILABLE calls are errors: {report:?}"
    );
}
