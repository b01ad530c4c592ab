use super::*;
use crate::upstream::endpoint::EndpointSettings;

/// A writer over a fresh journal in `dir`, with service "shop" at blue 90 / canary 10.
fn writer(dir: &std::path::Path) -> (Commands, Arc<Shared>, super::super::journal::Faults) {
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = \"{}\"\n\
         [services.shop]\nstable = \"blue\"\nweights = {{ blue = 90, canary = 10 }}\n\
         [services.shop.versions.blue]\nendpoints = [\"127.0.0.1:1\"]\n\
         [services.shop.versions.canary]\nendpoints = [\"127.0.0.1:2\"]\n",
        dir.display()
    );
    let config = Config::parse(&dir.join("switchyard.toml"), &text).unwrap();
    let opened = Journal::open(dir, false).unwrap();
    let faults = opened.journal.faults();
    let mut state = ControlState::new(config.clone());
    let service = config.service("shop").unwrap();
    let routing = ServiceState {
        stable: service.stable.clone(),
        weights: service.weights.clone(),
        latched: false,
        frozen: false,
        ..ServiceState::default()
    };
    state.services.insert("shop".into(), routing);
    let endpoints = EndpointRegistry::new(EndpointSettings {
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        backoff: Duration::from_secs(1),
    });
    let telemetry = Arc::new(Telemetry::new(1));
    let table = RoutingTable::build(&config, &state.services, &endpoints, &telemetry, 0);
    let shared = Shared::new(state);
    let commands = Writer {
        shared: shared.clone(),
        journal: opened.journal,
        pending_file: None,
        fleet: None,
        hooks: Hooks::new(dir, &config.hooks),
        plane: Arc::new(DataPlane::new(table)),
        endpoints,
        telemetry,
    }
    .spawn();
    (commands, shared, faults)
}

async fn apply(commands: &Commands, change: Change) -> Result<RevisionRecord, ControlError> {
    commands
        .call(|reply| Request::Apply {
            service: "shop".into(),
            change,
            origin: Origin::new("test", ""),
            expect: None,
            reply,
        })
        .await
        .unwrap()
}

fn journaled(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join(super::super::journal::JOURNAL_FILE))
        .unwrap()
        .lines()
        .count()
}

#[tokio::test(start_paused = true)]
async fn an_abort_waits_for_the_journal_and_is_written_on_the_next_retry() {
    let dir = tempfile::tempdir().unwrap();
    let (commands, shared, faults) = writer(dir.path());
    faults.set_full(true);
    let abort = apply(&commands, Change::Abort {}).await.unwrap();
    assert_eq!(abort.revision, 1);
    assert!(shared.lock().services["shop"].latched, "in force at once");
    assert_eq!(shared.lock().pending.len(), 1);
    let refused = apply(&commands, Change::Resume {}).await.unwrap_err();
    assert!(matches!(refused, ControlError::NotRecorded(_)), "{refused}");

    // Writes work again; nothing is written before the retry is due.
    faults.set_full(false);
    tokio::time::advance(RETRY - Duration::from_millis(1)).await;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(journaled(dir.path()), 0, "retried before its time");
    tokio::time::advance(Duration::from_millis(1)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !shared.lock().pending.is_empty() {
        assert!(std::time::Instant::now() < deadline, "never retried");
        tokio::task::yield_now().await;
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(journaled(dir.path()), 1);
    assert!(shared.lock().outage.is_none());
    let chained = shared.lock().history["shop"][0].clone();
    assert_eq!((chained.revision, chained.hash.len()), (1, 64));
    // A resume gives the canary traffic again: only with its checks passed (the gate).
    let due = apply(&commands, Change::Resume {}).await.unwrap_err();
    assert_eq!(
        due,
        ControlError::ChecksDue(vec![("shop".into(), "canary".into())])
    );
    let mut origin = Origin::new("test", "");
    let passed = crate::control::record::CheckReport {
        version: "canary".into(),
        passed: true,
        failed: Vec::new(),
        ms: 1,
    };
    origin.verified.push(("shop".into(), passed.clone()));
    let resumed = commands
        .call(|reply| Request::Apply {
            service: "shop".into(),
            change: Change::Resume {},
            origin,
            expect: None,
            reply,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!((resumed.revision, resumed.checks), (2, Some(passed)));
}

#[tokio::test(start_paused = true)]
async fn an_unwritable_journal_is_logged_at_most_once_a_minute() {
    let mut outage = Outage::new("No space left on device".into());
    assert!(
        outage.log_due(Instant::now()),
        "the first failure is logged"
    );
    for _ in 0..59 {
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            !outage.log_due(Instant::now()),
            "logged again within a minute"
        );
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(
        outage.log_due(Instant::now()),
        "a minute on, it is logged again"
    );
    assert!(!outage.log_due(Instant::now()));
}

#[test]
fn a_fleet_member_says_it_has_not_caught_up_until_it_applied_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[state]\ndir = \"{}\"\n\
         [services.shop]\nstable = \"blue\"\nweights = {{ blue = 100 }}\n\
         [services.shop.versions.blue]\nendpoints = [\"127.0.0.1:1\"]\n",
        dir.path().display()
    );
    let config = Config::parse(&dir.path().join("switchyard.toml"), &text).unwrap();
    let mut state = ControlState::new(config);
    // Without a fleet: never.
    assert_eq!(state.not_caught_up(), None);
    state.log = Some(LogProgress::default());
    let said = |state: &ControlState| state.not_caught_up().map(|e| e.to_string());
    assert_eq!(
        said(&state).unwrap(),
        "this instance has not caught up with the fleet's log yet (applied 0; the fleet's log has not been reached since this instance started); try again or ask another instance"
    );
    state.log = Some(LogProgress {
        joined: true,
        last: Some(12),
        ..LogProgress::default()
    });
    state.revision = 3;
    assert!(said(&state).unwrap().contains("(applied 3 of 12)"));
    // Read past the rest (entries skipped as not revisions of this fleet's): caught up.
    state.log = Some(LogProgress {
        joined: true,
        last: Some(12),
        passed: 12,
    });
    assert_eq!(said(&state), None);
    state.revision = 12;
    assert_eq!(said(&state), None);
    // A cache that is not part of the log never counts as caught up.
    state.log = Some(LogProgress {
        joined: false,
        last: Some(12),
        ..LogProgress::default()
    });
    assert!(said(&state)
        .unwrap()
        .contains("(applied 12 of 12, and not joined to the log)"));
}

#[tokio::test]
async fn a_change_expecting_a_routing_that_moved_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (commands, shared, _) = writer(dir.path());
    let planned_from = shared.lock().services["shop"].clone();
    apply(&commands, Change::Freeze {}).await.unwrap();
    let moved = commands
        .call(|reply| Request::Apply {
            service: "shop".into(),
            change: Change::Unfreeze {},
            origin: Origin::new("test", ""),
            expect: Some(planned_from),
            reply,
        })
        .await
        .unwrap();
    assert_eq!(moved.unwrap_err(), ControlError::Moved);
    assert!(shared.lock().services["shop"].frozen, "nothing changed");
    assert_eq!(journaled(dir.path()), 1);
}
