use super::*;
use crate::config::{Release, VersionConfig};
use crate::control::record::{ChangeKind, Origin, PlannedRevision};
use std::time::SystemTime;

use crate::control::promises::next_kept as next;

fn service() -> ServiceConfig {
    let version = |name: &str| VersionConfig {
        name: name.into(),
        endpoints: vec!["127.0.0.1:1".parse().unwrap()],
        sources: vec!["127.0.0.1:1".into()],
        release: Release::default(),
        tls: None,
        protocol: Default::default(),
    };
    ServiceConfig {
        name: "shop".into(),
        hosts: vec![],
        stable: "blue".into(),
        weights: BTreeMap::from([("blue".into(), 95), ("canary".into(), 5)]),
        sticky: None,
        versions: vec![version("blue"), version("canary"), version("green")],
        matches: vec![],
        guard: Default::default(),
        rollout: None,
        verify: Default::default(),
        grpc_error_codes: Default::default(),
        shadow: None,
        analyses: Vec::new(),
    }
}

fn state(stable: &str, weights: &[(&str, u64)]) -> ServiceState {
    ServiceState {
        stable: stable.into(),
        weights: weights.iter().map(|(v, w)| (v.to_string(), *w)).collect(),
        latched: false,
        frozen: false,
        ..ServiceState::default()
    }
}

fn weights(pairs: &[(&str, u64)]) -> Change {
    Change::Weights {
        weights: pairs.iter().map(|(v, w)| (v.to_string(), *w)).collect(),
    }
}

fn revision(revision: u64, old: Option<ServiceState>, new: ServiceState) -> RevisionRecord {
    PlannedRevision {
        service: "shop".into(),
        kind: ChangeKind::Weights,
        old,
        new: Some(new),
        declared: None,
        origin: Origin::new("test", ""),
    }
    .into_record(revision, None, SystemTime::now())
}

#[test]
fn weights_replace_the_split() {
    let current = state("blue", &[("blue", 95), ("canary", 5)]);
    let next = next(
        &service(),
        &current,
        &weights(&[("blue", 50), ("canary", 50)]),
        &[],
    )
    .unwrap();
    assert_eq!(next, state("blue", &[("blue", 50), ("canary", 50)]));
}

#[test]
fn bad_weights_are_refused() {
    let current = state("blue", &[("blue", 95), ("canary", 5)]);
    let cases = [
        (weights(&[("purple", 5)]), "no version \"purple\""),
        (weights(&[("blue", 0), ("canary", 0)]), "all zero"),
        (weights(&[]), "all zero"),
        (weights(&[("blue", u64::MAX), ("canary", 1)]), "past 2^64"),
        (weights(&[("blue", 95), ("canary", 5)]), "no change"),
    ];
    for (change, expected) in cases {
        let err = next(&service(), &current, &change, &[]).unwrap_err();
        assert!(err.to_string().contains(expected), "{change:?}: {err}");
    }
}

#[test]
fn switch_and_promote_move_everything_and_keep_the_latch() {
    let mut current = state("blue", &[("blue", 95), ("canary", 5)]);
    current.latched = true;
    let switched = next(
        &service(),
        &current,
        &Change::Switch {
            version: "green".into(),
        },
        &[],
    )
    .unwrap();
    let mut green = state("green", &[("green", 100)]);
    green.latched = true;
    assert_eq!(switched, green, "only resume lifts a latch");
    let promoted = next(&service(), &current, &Change::Promote {}, &[]).unwrap();
    let mut canary = state("canary", &[("canary", 100)]);
    canary.latched = true;
    assert_eq!(promoted, canary);
}

#[test]
fn promote_needs_exactly_one_canary() {
    let only_stable = state("blue", &[("blue", 100), ("canary", 0)]);
    let err = next(&service(), &only_stable, &Change::Promote {}, &[]).unwrap_err();
    assert!(err.to_string().contains("no canary"), "{err}");
    let two = state("blue", &[("blue", 90), ("canary", 5), ("green", 5)]);
    let err = next(&service(), &two, &Change::Promote {}, &[]).unwrap_err();
    assert!(err.to_string().contains("use switch"), "{err}");
}

#[test]
fn abort_latches_and_resume_unlatches() {
    let current = state("blue", &[("blue", 95), ("canary", 5)]);
    let aborted = next(&service(), &current, &Change::Abort {}, &[]).unwrap();
    assert!(aborted.latched);
    let err = next(&service(), &aborted, &Change::Abort {}, &[]).unwrap_err();
    assert!(err.to_string().contains("no change"), "{err}");
    let resumed = next(&service(), &aborted, &Change::Resume {}, &[]).unwrap();
    assert_eq!(resumed, current);
}

#[test]
fn frozen_refuses_rises_toward_non_stable_versions_only() {
    let mut current = state("blue", &[("blue", 90), ("canary", 10)]);
    current.frozen = true;
    let service = service();
    let err = next(
        &service,
        &current,
        &weights(&[("blue", 80), ("canary", 20)]),
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("frozen"), "{err}");
    // Same share at a different scale is no rise.
    assert!(next(
        &service,
        &current,
        &weights(&[("blue", 900), ("canary", 100)]),
        &[]
    )
    .is_ok());
    assert!(next(
        &service,
        &current,
        &weights(&[("blue", 95), ("canary", 5)]),
        &[]
    )
    .is_ok());
    assert!(next(
        &service,
        &current,
        &Change::Switch {
            version: "canary".into()
        },
        &[]
    )
    .is_err());
    assert!(next(
        &service,
        &current,
        &Change::Switch {
            version: "blue".into()
        },
        &[]
    )
    .is_ok());
    assert!(next(&service, &current, &Change::Promote {}, &[]).is_err());
    assert!(next(&service, &current, &Change::Abort {}, &[]).is_ok());
    let mut latched = current.clone();
    latched.latched = true;
    let err = next(&service, &latched, &Change::Resume {}, &[]).unwrap_err();
    assert!(err.to_string().contains("frozen"), "{err}");
}

#[test]
fn rollback_returns_to_the_routing_before_the_last_change() {
    let a = state("blue", &[("blue", 95), ("canary", 5)]);
    let b = state("blue", &[("blue", 50), ("canary", 50)]);
    let mut b_frozen = b.clone();
    b_frozen.frozen = true;
    let history = [
        revision(1, None, a.clone()),
        revision(2, Some(a.clone()), b.clone()),
        revision(3, Some(b.clone()), b_frozen.clone()),
    ];
    let refs: Vec<&RevisionRecord> = history.iter().collect();
    let service = service();
    let back = next(&service, &b_frozen, &Change::Rollback { to: None }, &refs).unwrap();
    let mut expected = a.clone();
    expected.frozen = true;
    assert_eq!(back, expected, "routing comes back, the freeze stays");
    let to_one = next(
        &service,
        &b_frozen,
        &Change::Rollback { to: Some(1) },
        &refs,
    )
    .unwrap();
    assert_eq!(to_one, expected);
    let err = next(
        &service,
        &b_frozen,
        &Change::Rollback { to: Some(9) },
        &refs,
    )
    .unwrap_err();
    assert!(matches!(err, ControlError::NotFound(_)), "{err}");
    let err = next(&service, &a, &Change::Rollback { to: None }, &refs[..1]).unwrap_err();
    assert!(err.to_string().contains("no earlier routing"), "{err}");
}

#[test]
fn a_frozen_rollback_may_lower_risk_but_never_raise_it() {
    let ten = state("blue", &[("blue", 90), ("canary", 10)]);
    let fifty = state("blue", &[("blue", 50), ("canary", 50)]);
    let mut twenty = state("blue", &[("blue", 80), ("canary", 20)]);
    twenty.frozen = true;
    let history = [
        revision(1, None, ten.clone()),
        revision(2, Some(ten.clone()), fifty.clone()),
        revision(3, Some(fifty.clone()), twenty.clone()),
    ];
    let refs: Vec<&RevisionRecord> = history.iter().collect();
    let service = service();
    let up = Change::Rollback { to: Some(2) };
    let err = next(&service, &twenty, &up, &refs).unwrap_err();
    assert!(err.to_string().contains("frozen"), "{err}");
    let down = Change::Rollback { to: Some(1) };
    let lowered = next(&service, &twenty, &down, &refs).unwrap();
    assert_eq!(lowered.weights, ten.weights);
    assert!(lowered.frozen);
}

fn release(version: &str, endpoint: &str) -> Change {
    Change::Release {
        version: version.into(),
        spec: Box::new(crate::config::runtime::RuntimeVersion {
            endpoints: vec![endpoint.into()],
            addrs: endpoint.parse().into_iter().collect(),
            ..Default::default()
        }),
    }
}

/// The config in force for `state`: the file's service plus its runtime versions.
fn in_force(state: &ServiceState) -> ServiceConfig {
    in_force_of(service(), state)
}

fn in_force_of(service: ServiceConfig, state: &ServiceState) -> ServiceConfig {
    let mut file = crate::config::Config::parse(
        std::path::Path::new("t.toml"),
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[services.shop]\nstable = \"blue\"\nweights = { blue = 1 }\n[services.shop.versions.blue]\nendpoints = [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    file.services = vec![service];
    let services = BTreeMap::from([("shop".to_string(), state.clone())]);
    let config = super::runtime::effective(&file, &services, &Default::default());
    config.services[0].clone()
}

#[test]
fn a_released_version_joins_with_no_traffic_and_takes_weights_like_any() {
    let current = state("blue", &[("blue", 95), ("canary", 5)]);
    let released = next(&service(), &current, &release("v2", "127.0.0.1:7"), &[]).unwrap();
    assert_eq!(released.weights, current.weights);
    assert!(released.runtime.contains_key("v2"));
    let config = in_force(&released);
    let names: Vec<&str> = config.versions.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        ["blue", "canary", "green", "v2"],
        "sorted: sticky order"
    );
    let weighted = next(
        &config,
        &released,
        &weights(&[("blue", 90), ("v2", 10)]),
        &[],
    )
    .unwrap();
    assert_eq!(weighted.weights["v2"], 10);
    assert!(weighted.runtime.contains_key("v2"), "a change keeps it");
    let retired = next(
        &config,
        &weighted,
        &Change::Retire {
            version: "v2".into(),
        },
        &[],
    );
    assert!(retired.unwrap_err().to_string().contains("weight 10"));
}

#[test]
fn bad_releases_and_retires_are_refused_with_one_line() {
    let current = state("blue", &[("blue", 95), ("canary", 5)]);
    let service = service();
    for (change, expected) in [
        (
            release("canary", "127.0.0.1:7"),
            "already has a version \"canary\"",
        ),
        (release("", "127.0.0.1:7"), "1 to 64"),
        (release("a b", "127.0.0.1:7"), "letters, digits"),
        (release("v2", "nowhere"), "not IP:port"),
        (
            Change::Retire {
                version: "blue".into(),
            },
            "config file",
        ),
        (
            Change::Retire {
                version: "nope".into(),
            },
            "no runtime version",
        ),
    ] {
        let err = next(&service, &current, &change, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err:?} should say {expected:?}");
        assert_eq!(err.lines().count(), 1);
    }
    let mut rollout = release("v2", "127.0.0.1:7");
    if let Change::Release { spec, .. } = &mut rollout {
        spec.rollout = true;
    }
    let err = next(&service, &current, &rollout, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("no rollout configured"), "{err}");
    let released = next(&service, &current, &release("v2", "127.0.0.1:7"), &[]).unwrap();
    let config = in_force(&released);
    let again = next(&config, &released, &release("v2", "127.0.0.1:8"), &[]).unwrap_err();
    assert!(again.to_string().contains("released at runtime"), "{again}");
    let switched = next(
        &config,
        &released,
        &Change::Switch {
            version: "v2".into(),
        },
        &[],
    )
    .unwrap();
    let err = next(
        &config,
        &switched,
        &Change::Retire {
            version: "v2".into(),
        },
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("stable version"), "{err}");
    let retired = next(
        &config,
        &released,
        &Change::Retire {
            version: "v2".into(),
        },
        &[],
    )
    .unwrap();
    assert!(retired.runtime.is_empty());
}

#[test]
fn a_service_carries_at_most_64_runtime_versions() {
    let mut current = state("blue", &[("blue", 100)]);
    for n in 0..super::runtime::MAX_RUNTIME_VERSIONS {
        let change = release(&format!("v{n}"), "127.0.0.1:7");
        current = next(&in_force(&current), &current, &change, &[]).unwrap();
    }
    let err = next(
        &in_force(&current),
        &current,
        &release("one-more", "127.0.0.1:7"),
        &[],
    );
    assert!(err.unwrap_err().to_string().contains("retire some first"));
}

#[test]
fn a_version_released_with_rollout_is_the_rollouts_canary_until_it_is_stable() {
    let mut service = service();
    service.rollout = Some(crate::config::RolloutSettings {
        canary: "canary".into(),
        steps: vec![10, 100],
        gates: Vec::new(),
        bake: std::time::Duration::from_secs(1),
        shadow_first: false,
    });
    let current = state("blue", &[("blue", 100)]);
    let mut change = release("v2", "127.0.0.1:7");
    if let Change::Release { spec, .. } = &mut change {
        spec.rollout = true;
    }
    let released = next(&service, &current, &change, &[]).unwrap();
    let canary_of =
        |state: &ServiceState| in_force_of(service.clone(), state).rollout.unwrap().canary;
    assert_eq!(canary_of(&released), "v2");
    let mut promoted = released.clone();
    promoted.stable = "v2".into();
    promoted.weights = BTreeMap::from([("v2".to_string(), 100)]);
    assert_eq!(canary_of(&promoted), "canary", "the file's canary again");
}
