use super::*;
use crate::scenario::GuardRule;
use std::time::Duration;
use switchyard::config::HumanDuration;
use switchyard_testkit::load::{SecondReport, VersionReport};

fn version(name: &str, per_second: &[u64], per_tenth: Vec<u32>) -> VersionReport {
    VersionReport {
        name: name.into(),
        requests: per_second.iter().sum(),
        errors: 0,
        share: 0.0,
        p50_ms: 1.0,
        p99_ms: 2.0,
        p999_ms: 3.0,
        max_ms: 4.0,
        per_second: per_second
            .iter()
            .map(|&requests| SecondReport {
                requests,
                ..SecondReport::default()
            })
            .collect(),
        per_tenth,
    }
}

fn evidence_check(expectation: Expectation, load: LoadReport) -> Check {
    let loads = BTreeMap::from([("main".to_string(), load)]);
    check(
        &expectation,
        &Evidence {
            loads: &loads,
            default_load: "main",
            rss_peak_mib: None,
            guard_cutbacks: &[],
            analysis_aborts: &[],
            watch: None,
            steps: &[],
        },
    )
}

fn secs(s: u64) -> HumanDuration {
    HumanDuration(Duration::from_secs(s))
}

#[test]
fn share_zero_times_the_last_canary_answer() {
    // Canary answers until 10.3 s, then nothing.
    let mut tenths = vec![1; 104];
    tenths.extend([0; 96]);
    let load = LoadReport {
        requests: 100,
        versions: vec![version("canary", &[10; 20], tenths)],
        ..LoadReport::default()
    };
    let expect = |within: u64| Expectation::ShareZero {
        version: "canary".into(),
        after: secs(10),
        within: secs(within),
        load: None,
    };
    let quick = evidence_check(expect(1), load.clone());
    assert!(quick.pass, "{quick:?}");
    assert!(quick.detail.contains("10.3s"), "{}", quick.detail);
    let mut late = load;
    late.versions[0].per_tenth[150] = 1;
    assert!(!evidence_check(expect(1), late).pass);
}

#[test]
fn shares_and_throughput_come_from_whole_seconds() {
    let load = LoadReport {
        requests: 40,
        versions: vec![
            version("blue", &[9, 9, 5, 5], vec![]),
            version("canary", &[1, 1, 0, 0], vec![]),
        ],
        ..LoadReport::default()
    };
    let share = Expectation::Share {
        version: "canary".into(),
        from: secs(0),
        until: secs(2),
        min: Some(0.05),
        max: Some(0.15),
        load: None,
    };
    assert!(evidence_check(share, load.clone()).pass);
    let kept = Expectation::ThroughputKept {
        baseline: [secs(0), secs(2)],
        during: [secs(2), secs(4)],
        min_ratio: 0.8,
        load: None,
    };
    let check = evidence_check(kept, load);
    assert!(!check.pass);
    assert!(check.detail.contains("0.50x"), "{}", check.detail);
}

#[test]
fn guard_cutbacks_are_timed_from_the_step_as_performed() {
    let cut = GuardCutback {
        version: "canary".into(),
        rule: "error_rate".into(),
        at_secs: 5.09,
        revision: 2,
        summary: "canary error rate 30%".into(),
        failed: 0,
        saved: 12,
    };
    let steps = [StepRecord {
        at_secs: 5.04,
        what: "canary: errors 30%".into(),
        ok: true,
        outcome: String::new(),
    }];
    let loads = BTreeMap::new();
    let evidence = Evidence {
        loads: &loads,
        default_load: "main",
        rss_peak_mib: None,
        guard_cutbacks: std::slice::from_ref(&cut),
        analysis_aborts: &[],
        watch: None,
        steps: &steps,
    };
    let expect = |within_ms: u64, rule| Expectation::GuardCutback {
        version: "canary".into(),
        after: secs(5),
        within: HumanDuration(Duration::from_millis(within_ms)),
        rule,
    };
    let quick = check(&expect(100, Some(GuardRule::ErrorRate)), &evidence);
    assert!(quick.pass, "{quick:?}");
    assert!(quick.detail.contains("50 ms after"), "{}", quick.detail);
    assert!(!check(&expect(40, None), &evidence).pass);
    assert!(!check(&expect(100, Some(GuardRule::Latency)), &evidence).pass);
    let none = Evidence {
        guard_cutbacks: &[],
        ..evidence
    };
    let missing = check(&expect(1000, None), &none);
    assert!(
        !missing.pass && missing.detail.contains("never"),
        "{missing:?}"
    );
}

#[test]
fn a_windowed_p99_is_the_worst_second_in_the_window() {
    let mut blue = version("blue", &[10, 10, 10, 10], vec![]);
    for (second, p99) in blue.per_second.iter_mut().zip([250.0, 9.0, 31.0, 12.0]) {
        second.p99_ms = p99;
    }
    let load = LoadReport {
        requests: 40,
        p99_ms: 120.0,
        versions: vec![blue],
        ..LoadReport::default()
    };
    let expect = |from: Option<u64>, max_ms: u64| Expectation::P99 {
        max: HumanDuration(Duration::from_millis(max_ms)),
        version: None,
        load: None,
        from: from.map(secs),
        until: None,
    };
    let steady = evidence_check(expect(Some(1), 50), load.clone());
    assert!(steady.pass, "{steady:?}");
    assert!(
        steady.detail.contains("2s-3s: p99 31.00"),
        "{}",
        steady.detail
    );
    assert!(!evidence_check(expect(Some(1), 30), load.clone()).pass);
    let whole = evidence_check(expect(None, 100), load);
    assert!(!whole.pass && whole.detail.contains("120.00"), "{whole:?}");
}

#[test]
fn p99_kept_compares_the_median_seconds_of_two_windows() {
    let mut blue = version("blue", &[10; 6], vec![]);
    let p99s = [4.0, 5.0, 400.0, 6.0, 7.0, 500.0];
    for (second, p99) in blue.per_second.iter_mut().zip(p99s) {
        second.p99_ms = p99;
    }
    let load = LoadReport {
        requests: 60,
        versions: vec![blue],
        ..LoadReport::default()
    };
    let expect = |max_ratio| Expectation::P99Kept {
        baseline: [secs(0), secs(3)],
        during: [secs(3), secs(6)],
        max_ratio,
        load: None,
    };
    // One slow second in each window does not decide: 5 ms, then 7 ms.
    let kept = evidence_check(expect(1.5), load.clone());
    assert!(kept.pass && kept.detail.contains("1.40x"), "{kept:?}");
    assert!(!evidence_check(expect(1.2), load).pass);
}

#[test]
fn a_step_expectation_reads_the_step_as_performed() {
    let steps = [StepRecord {
        at_secs: 24.0,
        what: "ctl weights shop blue=90 green=10".into(),
        ok: false,
        outcome: "weights refused: green fails its checks: $.price differs".into(),
    }];
    let loads = BTreeMap::new();
    let evidence = Evidence {
        loads: &loads,
        default_load: "main",
        rss_peak_mib: None,
        guard_cutbacks: &[],
        analysis_aborts: &[],
        watch: None,
        steps: &steps,
    };
    let expect = |ok, contains: &str| Expectation::Step {
        index: 1,
        ok,
        contains: Some(contains.into()),
    };
    assert!(check(&expect(false, "$.price"), &evidence).pass);
    assert!(!check(&expect(true, "$.price"), &evidence).pass);
    assert!(!check(&expect(false, "$.name"), &evidence).pass);
}

#[test]
fn no_requests_never_passes_an_error_check() {
    let check = evidence_check(
        Expectation::Errors {
            max_rate: 0.0,
            load: None,
            from: None,
            until: None,
        },
        LoadReport::default(),
    );
    assert!(!check.pass);
}
