//! The guard loop's timing, in paused tokio time.

use super::*;
use crate::config::Config;
use crate::control::Controller;
use crate::guard::incident::IncidentLog;

const INTERVAL: Duration = Duration::from_millis(100);

/// A guard over a controller with one canary at 10%.
async fn guarded(dir: &std::path::Path) -> Guard<Controller> {
    let text = format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
[state]
dir = "{}"
[services.shop]
stable = "blue"
weights = {{ blue = 90, canary = 10 }}
[services.shop.guard]
interval = "100ms"
[services.shop.versions.blue]
endpoints = ["127.0.0.1:1"]
[services.shop.versions.canary]
endpoints = ["127.0.0.1:2"]
"#,
        dir.join("state").display()
    );
    let path = dir.join("switchyard.toml");
    let config = Config::parse(&path, &text).unwrap();
    let controller = Arc::new(Controller::open(config, path, 1, false).await.unwrap());
    Guard {
        plane: controller.plane.clone(),
        control: controller,
        verifier: Arc::default(),
        board: Arc::default(),
        incidents: Arc::new(IncidentLog::open(&dir.join("state")).unwrap()),
    }
}

/// Lets every ready task run without moving the clock.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_guard_looks_once_per_interval_and_at_once_when_the_data_plane_rings() {
    let dir = tempfile::tempdir().unwrap();
    let guarded = guarded(dir.path()).await;
    let (board, plane) = (guarded.board.clone(), guarded.plane.clone());
    let (stop, stop_rx) = watch::channel(false);
    let guard = tokio::spawn(run(guarded, stop_rx));
    settle().await;
    assert_eq!(board.looks(), 0, "looked before the interval");

    tokio::time::advance(INTERVAL - Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(board.looks(), 0, "looked before the interval");
    tokio::time::advance(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(board.looks(), 1);
    let verdict = board.get("shop").expect("the canary was judged");
    assert_eq!(
        (verdict.version.as_str(), verdict.verdict),
        ("canary", VerdictKind::Inconclusive)
    );

    for tick in 2..=11 {
        tokio::time::advance(INTERVAL).await;
        settle().await;
        assert_eq!(board.looks(), tick, "one look per interval");
    }

    // A ring is answered at once, with no time passing, and the interval starts over.
    let rung_at = tokio::time::Instant::now();
    tokio::time::advance(INTERVAL / 2).await;
    plane.guard_wake.notify_one();
    settle().await;
    assert_eq!(board.looks(), 12, "the ring was not answered at once");
    assert_eq!(tokio::time::Instant::now(), rung_at + INTERVAL / 2);
    tokio::time::advance(INTERVAL - Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(board.looks(), 12);
    tokio::time::advance(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(board.looks(), 13);

    stop.send(true).unwrap();
    guard.await.unwrap();
}
