use super::*;
use crate::control::record::Origin;
use crate::control::record::{CheckFailure, CheckReport};

fn state(stable: &str, weights: &[(&str, u64)], latched: bool) -> ServiceState {
    ServiceState {
        stable: stable.into(),
        weights: weights.iter().map(|(v, w)| (v.to_string(), *w)).collect(),
        latched,
        frozen: false,
        ..ServiceState::default()
    }
}

fn plan(
    kind: ChangeKind,
    old: Option<ServiceState>,
    new: ServiceState,
    origin: Origin,
) -> PlannedRevision {
    PlannedRevision {
        service: "shop".into(),
        kind,
        old,
        new: Some(new),
        declared: None,
        origin,
    }
}

fn report(version: &str, passed: bool) -> CheckReport {
    CheckReport {
        version: version.into(),
        passed,
        failed: match passed {
            true => Vec::new(),
            false => vec![CheckFailure {
                check: "home".into(),
                endpoint: "127.0.0.1:1".into(),
                got: "status 500".into(),
            }],
        },
        ms: 1,
    }
}

fn abort_record(old: ServiceState) -> RevisionRecord {
    let mut new = old.clone();
    new.latched = true;
    plan(
        ChangeKind::Abort,
        Some(old),
        new,
        Origin::new("guard", "bad"),
    )
    .into_record(7, None, std::time::SystemTime::now())
}

#[test]
fn gates_what_gains_traffic_or_stability() {
    let blue = state("blue", &[("blue", 100)], false);
    let canary5 = state("blue", &[("blue", 95), ("canary", 5)], false);
    let canary10 = state("blue", &[("blue", 90), ("canary", 10)], false);
    assert_eq!(gated_versions(Some(&blue), &canary5, false), ["canary"]);
    assert!(
        gated_versions(Some(&canary5), &canary10, false).is_empty(),
        "had traffic already"
    );
    assert_eq!(
        gated_versions(Some(&canary5), &canary10, true),
        ["canary"],
        "a rollout step"
    );
    assert!(
        gated_versions(Some(&canary10), &canary5, true).is_empty(),
        "a step down"
    );
    let latched = state("blue", &[("blue", 95), ("canary", 5)], true);
    assert_eq!(
        gated_versions(Some(&latched), &canary5, false),
        ["canary"],
        "resume"
    );
    let green = state("green", &[("green", 100)], false);
    assert_eq!(
        gated_versions(Some(&blue), &green, false),
        ["green"],
        "switch"
    );
    assert_eq!(
        gated_versions(None, &canary5, false),
        ["canary"],
        "a new service's canary"
    );
    assert!(
        gated_versions(Some(&canary5), &latched, false).is_empty(),
        "abort"
    );
    let back = state("blue", &[("blue", 100)], false);
    assert!(
        gated_versions(Some(&canary10), &back, false).is_empty(),
        "a rollback lowering risk"
    );
}

#[test]
fn a_reload_or_rollback_giving_traffic_needs_passing_checks() {
    let blue = state("blue", &[("blue", 100)], false);
    let canary = state("blue", &[("blue", 90), ("canary", 10)], false);
    for kind in [
        ChangeKind::ConfigEdit,
        ChangeKind::Rollback,
        ChangeKind::Weights,
    ] {
        let mut unchecked = plan(
            kind,
            Some(blue.clone()),
            canary.clone(),
            Origin::new("reload", ""),
        );
        assert_eq!(
            enforce(&mut unchecked, &[]),
            Err(ControlError::ChecksDue(vec![(
                "shop".into(),
                "canary".into()
            )])),
            "{kind:?}"
        );
    }
    let mut origin = Origin::new("reload", "");
    origin
        .verified
        .push(("shop".into(), report("canary", false)));
    let mut failing = plan(
        ChangeKind::ConfigEdit,
        Some(blue.clone()),
        canary.clone(),
        origin.clone(),
    );
    let refused = enforce(&mut failing, &[]).unwrap_err().to_string();
    assert!(
        refused.contains("canary fails its checks") && refused.contains("home"),
        "{refused}"
    );
    let mut forced = plan(
        ChangeKind::ConfigEdit,
        Some(blue.clone()),
        canary.clone(),
        origin.forced(true),
    );
    enforce(&mut forced, &[]).unwrap();
    assert_eq!(
        forced.origin.checks,
        Some(report("canary", false)),
        "on the record"
    );
    let mut passing = Origin::new("reload", "");
    passing
        .verified
        .push(("shop".into(), report("canary", true)));
    let mut checked = plan(ChangeKind::Added, None, canary, passing);
    enforce(&mut checked, &[]).unwrap();
    assert_eq!(checked.origin.checks, Some(report("canary", true)));
}

#[test]
fn an_abort_never_waits_on_checks() {
    let all_canary = state("blue", &[("blue", 0), ("canary", 100)], false);
    let latched = state("blue", &[("blue", 0), ("canary", 100)], true);
    let mut abort = plan(
        ChangeKind::Abort,
        Some(all_canary),
        latched,
        Origin::new("guard", ""),
    );
    enforce(&mut abort, &[]).unwrap();
}

#[test]
fn only_resume_lifts_a_latch_and_an_aborted_version_never_becomes_stable() {
    let canary = state("blue", &[("blue", 90), ("canary", 10)], false);
    let aborted = abort_record(canary.clone());
    let history = [&aborted];
    let latched = state("blue", &[("blue", 90), ("canary", 10)], true);
    let unlatched = plan(
        ChangeKind::Rollback,
        Some(latched.clone()),
        canary.clone(),
        Origin::new("ops", ""),
    );
    let err = enforce(&mut unlatched.clone(), &history)
        .unwrap_err()
        .to_string();
    assert!(err.contains("resume first"), "{err}");
    let to_canary = plan(
        ChangeKind::Switch,
        Some(latched.clone()),
        state("canary", &[("canary", 100)], true),
        Origin::new("ops", "").forced(true),
    );
    let err = enforce(&mut to_canary.clone(), &history)
        .unwrap_err()
        .to_string();
    assert!(err.contains("canary was aborted at revision 7"), "{err}");
    let mut resumed = plan(
        ChangeKind::Resume,
        Some(latched),
        canary,
        Origin::new("ops", ""),
    );
    assert!(matches!(
        enforce(&mut resumed, &history),
        Err(ControlError::ChecksDue(_))
    ));
}

#[test]
fn the_guards_switch_back_latches_the_version_it_left() {
    let green = state("green", &[("green", 100)], false);
    let back = plan(
        ChangeKind::Switch,
        Some(green),
        state("blue", &[("blue", 100)], false),
        Origin::new("guard", "green is bad after the switch from blue"),
    )
    .into_record(8, None, std::time::SystemTime::now());
    let latched = state("blue", &[("blue", 100)], true);
    let to_green = plan(
        ChangeKind::Switch,
        Some(latched),
        state("green", &[("green", 100)], true),
        Origin::new("ops", "").forced(true),
    );
    let err = enforce(&mut to_green.clone(), &[&back])
        .unwrap_err()
        .to_string();
    assert!(err.contains("green was aborted at revision 8"), "{err}");
}

#[test]
fn a_freeze_holds_every_origin() {
    let mut frozen = state("blue", &[("blue", 95), ("canary", 5)], false);
    frozen.frozen = true;
    let mut raised = frozen.clone();
    raised.weights.insert("canary".into(), 50);
    for kind in [
        ChangeKind::ConfigEdit,
        ChangeKind::Rollback,
        ChangeKind::Weights,
    ] {
        let err = enforce(
            &mut plan(
                kind,
                Some(frozen.clone()),
                raised.clone(),
                Origin::new("x", ""),
            ),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("frozen"), "{kind:?}: {err}");
    }
}

#[test]
fn a_retire_keeps_the_return_point_unless_forced() {
    let runtime = |versions: &[&str]| -> BTreeMap<String, crate::config::runtime::RuntimeVersion> {
        versions
            .iter()
            .map(|v| (v.to_string(), Default::default()))
            .collect()
    };
    let mut on_v2 = state("v2", &[("v2", 100)], false);
    on_v2.runtime = runtime(&["v2"]);
    let mut on_v3 = state("v3", &[("v3", 100)], false);
    on_v3.runtime = runtime(&["v2", "v3"]);
    let promoted = plan(
        ChangeKind::Promote,
        Some(on_v2),
        on_v3.clone(),
        Origin::new("ops", "v3 is good"),
    )
    .into_record(12, None, std::time::SystemTime::now());
    let mut without_v2 = on_v3.clone();
    without_v2.runtime.remove("v2");
    let retire = |origin: Origin| {
        plan(
            ChangeKind::Retire,
            Some(on_v3.clone()),
            without_v2.clone(),
            origin,
        )
    };

    let err = enforce(&mut retire(Origin::new("ops", "")), &[&promoted])
        .unwrap_err()
        .to_string();
    assert!(err.contains("v2 is shop's return point"), "{err}");
    assert!(err.contains("revision 12"), "{err}");
    enforce(
        &mut retire(Origin::new("ops", "").forced(true)),
        &[&promoted],
    )
    .unwrap();

    // Once another version took over, the old return point may go.
    let mut on_v4 = on_v3.clone();
    on_v4.stable = "v4".into();
    let next = plan(
        ChangeKind::Switch,
        Some(on_v3.clone()),
        on_v4.clone(),
        Origin::new("ops", ""),
    )
    .into_record(13, None, std::time::SystemTime::now());
    let mut v4_without_v2 = on_v4.clone();
    v4_without_v2.runtime.remove("v2");
    let retire_old = plan(
        ChangeKind::Retire,
        Some(on_v4),
        v4_without_v2,
        Origin::new("ops", ""),
    );
    enforce(&mut retire_old.clone(), &[&promoted, &next]).unwrap();
}
