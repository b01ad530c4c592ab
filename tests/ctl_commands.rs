//! Every `switchyard ctl` command against a running `switchyard run`, with real upstreams.

mod common;

use common::{fails, ok, Client, Proxy, Setup};
use std::collections::BTreeMap;
use switchyard::admin::api::{HistoryResponse, StatusResponse};
use switchyard::routing::ServiceState;

async fn routing(setup: &Setup) -> ServiceState {
    let status = setup.client().service("shop").await.unwrap();
    ServiceState {
        stable: status.stable,
        weights: status
            .versions
            .iter()
            .filter(|v| v.weight > 0)
            .map(|v| (v.name.clone(), v.weight))
            .collect(),
        latched: status.latched,
        frozen: status.frozen,
        ..ServiceState::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_against_the_real_binary() {
    let upstreams = common::upstreams(&["blue", "canary", "green"]).await;
    let setup = Setup::new(&upstreams, "{ blue = 100 }", "");
    let proxy = Proxy::start(&setup, &[]).await;
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(
        client.tally(20).await,
        BTreeMap::from([("blue".into(), 20)])
    );

    // status: human and JSON
    let text = ok(setup.ctl(&["status"]));
    assert!(
        text.contains("shop") && text.contains("blue*") && text.contains("1.0-canary"),
        "{text}"
    );
    let json: StatusResponse = serde_json::from_str(&ok(setup.ctl(&["--json", "status"]))).unwrap();
    assert_eq!(json.services[0].name, "shop");
    assert_eq!(json.listen, proxy.addr.to_string());

    // weights: the very next request follows the new split, every time.
    for round in 0..5 {
        let (to, from) = if round % 2 == 0 {
            ("canary", "blue")
        } else {
            ("blue", "canary")
        };
        let pair = [format!("{to}=1"), format!("{from}=0")];
        ok(setup.ctl(&["weights", "shop", &pair[0], &pair[1], "--reason", "flip"]));
        assert_eq!(client.get("/").await.1, to, "round {round}");
    }
    assert_eq!(
        routing(&setup).await.weights,
        BTreeMap::from([("canary".into(), 1)])
    );

    // A canary at 10%, then promote: canary becomes stable at 100%.
    ok(setup.ctl(&[
        "weights",
        "shop",
        "blue=90",
        "canary=10",
        "--reason",
        "canary 10%",
    ]));
    let out = ok(setup.ctl(&["promote", "shop", "--reason", "looks good"]));
    assert!(out.contains("promote by tester"), "{out}");
    assert_eq!(
        client.tally(10).await,
        BTreeMap::from([("canary".into(), 10)])
    );
    assert_eq!(routing(&setup).await.stable, "canary");

    // switch: blue-green to green.
    ok(setup.ctl(&[
        "switch",
        "shop",
        "green",
        "--actor",
        "carol",
        "--reason",
        "blue-green",
    ]));
    assert_eq!(client.get("/").await.1, "green");

    // abort: all on stable, latched; resume: the split is back.
    ok(setup.ctl(&["weights", "shop", "green=50", "blue=50"]));
    ok(setup.ctl(&["abort", "shop", "--reason", "errors on blue"]));
    assert_eq!(
        client.tally(30).await,
        BTreeMap::from([("green".into(), 30)])
    );
    assert!(ok(setup.ctl(&["status"])).contains("ABORTED"));
    fails(setup.ctl(&["abort", "shop"]), "no change");
    ok(setup.ctl(&["resume", "shop"]));
    assert!(client.tally(60).await.contains_key("blue"));

    // freeze: no rise toward blue (non-stable); a cut is fine; unfreeze lifts it.
    ok(setup.ctl(&["freeze", "shop", "--reason", "investigating"]));
    fails(
        setup.ctl(&["weights", "shop", "green=10", "blue=90"]),
        "frozen",
    );
    ok(setup.ctl(&["weights", "shop", "green=60", "blue=40"]));
    ok(setup.ctl(&["unfreeze", "shop"]));
    ok(setup.ctl(&["weights", "shop", "green=10", "blue=90"]));

    // rollback (default): back to the exact routing before the last routing change.
    let before = routing(&setup).await;
    ok(setup.ctl(&["weights", "shop", "green=1", "canary=3", "--reason", "oops"]));
    assert_ne!(routing(&setup).await, before);
    ok(setup.ctl(&["rollback", "shop", "--reason", "undo oops"]));
    assert_eq!(routing(&setup).await, before);

    // rollback --to REV: the routing recorded at that revision.
    let history: HistoryResponse = serde_json::from_str(&ok(
        setup.ctl(&["--json", "history", "shop", "--limit", "100"])
    ))
    .unwrap();
    let switched = history
        .revisions
        .iter()
        .find(|r| r.actor == "carol")
        .unwrap();
    let rev = switched.revision.to_string();
    ok(setup.ctl(&["rollback", "shop", "--to", &rev]));
    let back = routing(&setup).await;
    let recorded = switched.new.as_ref().unwrap();
    assert_eq!(
        (&back.stable, &back.weights),
        (&recorded.stable, &recorded.weights)
    );
    assert_eq!(
        client.tally(10).await,
        BTreeMap::from([("green".into(), 10)])
    );

    // history: who, why, when.
    let text = ok(setup.ctl(&["history", "shop", "--limit", "100"]));
    for expected in [
        "carol",
        "tester",
        "blue-green",
        "looks good",
        "abort",
        "rollback",
        "startup",
        "T",
    ] {
        assert!(
            text.contains(expected),
            "history lacks {expected:?}:\n{text}"
        );
    }
    let history: HistoryResponse =
        serde_json::from_str(&ok(setup.ctl(&["--json", "history", "shop"]))).unwrap();
    assert!(history
        .revisions
        .iter()
        .all(|r| r.time_ms > 0 && r.time.ends_with('Z')));

    // reload: a topology-only edit records nothing; an edit of the file's weights applies.
    setup.write(&upstreams, "{ blue = 100 }", "");
    let out = ok(setup.ctl(&["reload", "--reason", "same file"]));
    assert!(out.contains("0 routing change"), "{out}");
    setup.write(&upstreams, "{ blue = 70, canary = 30 }", "");
    let out = ok(setup.ctl(&["reload", "--reason", "file edit"]));
    assert!(out.contains("config_edit"), "{out}");
    let now = routing(&setup).await;
    assert_eq!(
        now.weights,
        BTreeMap::from([("blue".into(), 70), ("canary".into(), 30)])
    );
    let history = setup.client().history("shop", 1).await.unwrap();
    assert!(
        history.revisions[0].reason.contains("tester: file edit"),
        "{:?}",
        history.revisions[0]
    );

    // Errors are one line, non-zero.
    fails(
        setup.ctl(&["weights", "shop", "purple=5"]),
        "no version \"purple\"",
    );
    fails(setup.ctl(&["weights", "shop", "blue=-5"]), "whole number");
    fails(setup.ctl(&["weights", "shop", "blue=2.5"]), "whole number");
    fails(
        setup.ctl(&["weights", "nope", "blue=5"]),
        "no service \"nope\"",
    );
    fails(setup.ctl(&["switch", "shop", "purple"]), "no version");
    fails(
        setup.ctl(&["rollback", "shop", "--to", "9999"]),
        "no revision 9999",
    );
    let wrong = setup.dir.path().join("wrong.sock");
    fails(
        common::ctl_at(&wrong, &["status"]),
        "cannot reach switchyard at",
    );
    drop(proxy);
}
