use super::*;
use crate::telemetry::Outcome;

/// A telemetry with one version that saw `requests` in its first slice (a few percent
/// failing, latency 1-20 ms), and a moment in the middle of that slice.
fn busy(requests: u64) -> (Telemetry, Instant) {
    let telemetry = Telemetry::new(2);
    let start = telemetry.slice_start(0) + Duration::from_millis(100);
    let stats = telemetry.version("shop", "canary");
    for n in 0..requests {
        let outcome = match n % 25 {
            0 => Outcome::Status5xx,
            _ => Outcome::Status2xx,
        };
        let latency = Duration::from_micros(1_000 + (n * 7_919) % 19_000);
        stats.record(outcome, latency, start);
    }
    (telemetry, start)
}

#[test]
fn a_report_reads_back_as_sent_and_weighs_little() {
    let (telemetry, _) = busy(500);
    let sent = report("edge-1", 1, &telemetry, 0);
    assert_eq!(sent.versions.len(), 1);
    let bytes = encode(&sent);
    assert_eq!(decode(&bytes), Some(sent.clone()));
    // 500 requests spread evenly over 1-20 ms: hundreds of latency buckets in use, each a
    // pair of small varints.
    let buckets = sent.versions[0].latency.len();
    println!(
        "one report (1 version, {buckets} latency buckets) weighs {} bytes",
        bytes.len()
    );
    assert!(bytes.len() < 64 + 3 * buckets, "{} bytes", bytes.len());
    // A slice without traffic is a heartbeat only.
    let empty = encode(&report("edge-1", 1, &telemetry, 7));
    assert!(empty.len() < 16, "{} bytes", empty.len());
}

#[test]
fn a_filed_report_is_pooled_exactly_as_the_members_own_slice() {
    let (source, _) = busy(400);
    let own = source.version("shop", "canary").slice(0);
    let receiver = Telemetry::new(1);
    let stats = receiver.version("shop", "canary");
    let now = receiver.slice_start(3) + Duration::from_millis(10);
    file(&receiver, report("edge-2", 1, &source, 0), now);
    let pooled = stats.pooled_window(Duration::from_secs(30), now);
    assert_eq!(pooled.tally, own.tally);
    for q in [0.5, 0.9, 0.99, 1.0] {
        assert_eq!(
            pooled.quantile_secs(q),
            own.quantile_secs(q),
            "quantile {q}"
        );
    }
    assert_eq!(stats.pooled_total_tally(), own.tally);
    // Its own view is untouched: status and metrics show this instance alone.
    assert_eq!(
        stats.window_tally(Duration::from_secs(30), now).requests(),
        0
    );
    assert_eq!(stats.total_tally().requests(), 0);
}

#[test]
fn a_member_silent_for_more_than_two_slices_leaves_the_window_but_not_the_totals() {
    let (source, _) = busy(100);
    let receiver = Telemetry::new(1);
    let stats = receiver.version("shop", "canary");
    let at = |slice: u64| receiver.slice_start(slice) + Duration::from_millis(10);
    let window = Duration::from_secs(30);
    file(&receiver, report("edge-2", 1, &source, 0), at(10));
    assert_eq!(stats.pooled_window_tally(window, at(12)).requests(), 100);
    assert_eq!(stats.pooled_window_tally(window, at(13)).requests(), 0);
    // The totals only grow: the guard's "new since the last look" never goes negative.
    assert_eq!(stats.pooled_total_tally().requests(), 100);
    // Heard again (an empty heartbeat is enough): its slices count again.
    file(&receiver, report("edge-2", 1, &source, 9), at(14));
    assert_eq!(stats.pooled_window_tally(window, at(14)).requests(), 100);
}

#[test]
fn reports_a_stranger_could_send_change_nothing() {
    let (source, _) = busy(50);
    let receiver = Telemetry::new(1);
    let stats = receiver.version("shop", "canary");
    let now = receiver.slice_start(1);
    let good = report("edge-2", 1, &source, 0);
    let mut other_format = good.clone();
    other_format.format = FORMAT + 1;
    let mut too_many_buckets = good.clone();
    too_many_buckets.versions[0].latency = vec![(1, 1); MAX_BUCKETS + 1];
    let garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0xff; 64],
        encode(&other_format),
        encode(&too_many_buckets),
        encode(&good)[..10].to_vec(),
    ];
    for bytes in &garbage {
        assert_eq!(decode(bytes), None, "{bytes:?}");
    }
    // Unknown versions are not kept; huge counts are capped, never overflow.
    let mut stranger = good.clone();
    stranger.versions[0].version = "nobody".into();
    file(&receiver, stranger, now);
    assert!(receiver.find("shop", "nobody").is_none());
    let mut huge = good;
    huge.versions[0].counts = [u64::MAX; OUTCOMES];
    huge.versions[0].latency = vec![(u64::MAX, u64::MAX), (u64::MAX, 1)];
    file(&receiver, huge.clone(), now);
    file(&receiver, huge, now);
    let totals = stats.pooled_total_tally();
    assert_eq!(totals.count(Outcome::Status5xx), 2 * u32::MAX as u64);
    assert!(totals.requests() > 0);
    let window = stats.pooled_window(Duration::from_secs(30), now);
    assert!(window.quantile_secs(1.0) > 0.0);
}

#[test]
fn a_report_no_newer_than_the_last_from_its_publisher_is_a_replay() {
    let (telemetry, _) = busy(10);
    let mut heard = Heard::default();
    let sent = |started, slice| report("edge-2", started, &telemetry, slice);
    assert!(heard.newer(&sent(5, 10)));
    assert!(!heard.newer(&sent(5, 10)), "the same report again");
    assert!(!heard.newer(&sent(5, 9)), "an older one");
    assert!(heard.newer(&sent(5, 11)));
    // A restarted publisher counts its slices from its new start.
    assert!(heard.newer(&sent(6, 0)));
    assert!(!heard.newer(&sent(5, 12)), "from before the restart");
}
