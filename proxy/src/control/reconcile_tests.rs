use super::*;
use std::path::Path;

fn config(weights: &str, versions: &[&str]) -> Config {
    let mut text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[services.shop]\nstable = \"blue\"\nweights = {weights}\n"
    );
    for (i, version) in versions.iter().enumerate() {
        text.push_str(&format!(
            "[services.shop.versions.{version}]\nendpoints = [\"127.0.0.1:{}\"]\n",
            9000 + i
        ));
    }
    Config::parse(Path::new("test.toml"), &text).unwrap()
}

fn live(stable: &str, weights: &[(&str, u64)], latched: bool) -> BTreeMap<String, ServiceState> {
    let state = ServiceState {
        stable: stable.into(),
        weights: weights.iter().map(|(v, w)| (v.to_string(), *w)).collect(),
        latched,
        frozen: false,
        ..ServiceState::default()
    };
    BTreeMap::from([("shop".to_string(), state)])
}

fn declared(config: &Config) -> BTreeMap<String, Declared> {
    config
        .services
        .iter()
        .map(|s| (s.name.clone(), Declared::of(s)))
        .collect()
}

#[test]
fn an_unchanged_file_keeps_live_routing() {
    let file = config("{ blue = 95, canary = 5 }", &["blue", "canary"]);
    let live = live("blue", &[("blue", 50), ("canary", 50)], false);
    let planned = reconcile(
        &live,
        &declared(&file),
        &BTreeMap::new(),
        &file,
        &Origin::new("reload", ""),
    );
    assert!(planned.is_empty(), "{planned:?}");
}

#[test]
fn an_edited_file_wins_but_keeps_the_latch() {
    let before = config("{ blue = 95, canary = 5 }", &["blue", "canary"]);
    let after = config("{ blue = 80, canary = 20 }", &["blue", "canary"]);
    let live = live("blue", &[("blue", 50), ("canary", 50)], true);
    let planned = reconcile(
        &live,
        &declared(&before),
        &BTreeMap::new(),
        &after,
        &Origin::new("reload", "SIGHUP"),
    );
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0].kind, ChangeKind::ConfigEdit);
    let new = planned[0].new.as_ref().unwrap();
    assert_eq!(new.weights["canary"], 20);
    assert!(new.latched);
    assert!(planned[0].origin.reason.starts_with("SIGHUP: "));
}

#[test]
fn a_removed_version_falls_back_to_the_file() {
    let before = config("{ blue = 95, canary = 5 }", &["blue", "canary"]);
    let after = config("{ blue = 95, canary = 5 }", &["blue", "canary"]);
    let live = live("blue", &[("blue", 50), ("green", 50)], false);
    let planned = reconcile(
        &live,
        &declared(&before),
        &BTreeMap::new(),
        &after,
        &Origin::new("reload", ""),
    );
    assert_eq!(planned[0].kind, ChangeKind::VersionRemoved);
    assert!(planned[0].origin.reason.contains("\"green\""));
}

#[test]
fn services_are_added_and_removed() {
    let file = config("{ blue = 1 }", &["blue"]);
    let mut live_services = live("blue", &[("blue", 1)], false);
    let planned = reconcile(
        &BTreeMap::new(),
        &BTreeMap::new(),
        &BTreeMap::new(),
        &file,
        &Origin::new("startup", ""),
    );
    assert_eq!(planned[0].kind, ChangeKind::Added);
    assert!(planned[0].old.is_none());
    let gone = live_services.remove("shop").unwrap();
    live_services.insert("old".into(), gone);
    let planned = reconcile(
        &live_services,
        &declared(&file),
        &BTreeMap::new(),
        &file,
        &Origin::new("reload", ""),
    );
    let kinds: Vec<ChangeKind> = planned.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [ChangeKind::Added, ChangeKind::Removed]);
    assert!(planned[1].new.is_none());
}

#[test]
fn a_service_that_comes_back_keeps_its_latch_and_freeze() {
    let file = config("{ blue = 95, canary = 5 }", &["blue", "canary"]);
    let mut before = live("blue", &[("blue", 50), ("canary", 50)], true)
        .remove("shop")
        .unwrap();
    before.frozen = true;
    let departed = BTreeMap::from([("shop".to_string(), before)]);
    let planned = reconcile(
        &BTreeMap::new(),
        &BTreeMap::new(),
        &departed,
        &file,
        &Origin::new("reload", ""),
    );
    assert_eq!(planned[0].kind, ChangeKind::Added);
    let new = planned[0].new.as_ref().unwrap();
    assert!(new.latched && new.frozen, "{new:?}");
    assert_eq!(new.weights["canary"], 5, "the file's routing");
}

fn with_runtime(
    mut live: BTreeMap<String, ServiceState>,
    version: &str,
) -> BTreeMap<String, ServiceState> {
    let spec = RuntimeVersion {
        endpoints: vec!["127.0.0.1:7000".into()],
        addrs: vec!["127.0.0.1:7000".parse().unwrap()],
        ..RuntimeVersion::default()
    };
    for state in live.values_mut() {
        state.runtime.insert(version.into(), spec.clone());
    }
    live
}

#[test]
fn runtime_versions_outlive_a_reload_and_an_edit_of_the_file() {
    let before = config("{ blue = 95, canary = 5 }", &["blue", "canary"]);
    let live = with_runtime(live("blue", &[("blue", 90), ("v2", 10)], false), "v2");
    let origin = Origin::new("reload", "");
    let planned = reconcile(
        &live,
        &declared(&before),
        &BTreeMap::new(),
        &before,
        &origin,
    );
    assert!(
        planned.is_empty(),
        "routing to a runtime version stays: {planned:?}"
    );
    let after = config("{ blue = 80, canary = 20 }", &["blue", "canary"]);
    let planned = reconcile(&live, &declared(&before), &BTreeMap::new(), &after, &origin);
    let new = planned[0].new.as_ref().unwrap();
    assert!(
        new.runtime.contains_key("v2"),
        "the file's routing keeps it"
    );
}

#[test]
fn the_files_definition_of_a_runtime_name_wins() {
    let before = config("{ blue = 95, canary = 5 }", &["blue", "canary"]);
    let after = config("{ blue = 95, canary = 5 }", &["blue", "canary", "v2"]);
    let live = with_runtime(live("blue", &[("blue", 90), ("v2", 10)], false), "v2");
    let planned = reconcile(
        &live,
        &declared(&before),
        &BTreeMap::new(),
        &after,
        &Origin::new("reload", ""),
    );
    assert_eq!(planned.len(), 1, "{planned:?}");
    assert_eq!(planned[0].kind, ChangeKind::ConfigEdit);
    assert!(planned[0]
        .origin
        .reason
        .contains("the file's definition wins"));
    let new = planned[0].new.as_ref().unwrap();
    assert!(new.runtime.is_empty());
    assert_eq!(new.weights["v2"], 10, "routing unchanged");
}
