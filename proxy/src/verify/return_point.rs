//! The watched return point: while any non-stable version of a service takes traffic, the
//! stable version (where an abort would send everyone) has its checks run every
//! `checks_every`, so a cutback never lands on a version nobody has seen work lately.

use super::{check_version, ReturnPoint, Verifier};
use crate::config::Config;
use crate::control::Controller;
use crate::routing::{RoutingTable, ServiceRoute};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How often the watch looks for services whose return point is due.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// True while a version other than the stable one has a share of the weighted traffic.
pub fn others_take_traffic(route: &ServiceRoute) -> bool {
    (0..route.versions.len()).any(|v| v != route.stable && route.share_of(v) > 0.0)
}

/// Whether the return point's checks should run now.
pub fn due(last: Option<&ReturnPoint>, stable: &str, every: Duration, now_ms: u64) -> bool {
    match last {
        Some(point) if point.version == stable => {
            now_ms.saturating_sub(point.checked_ms) >= every.as_millis() as u64
        }
        _ => true,
    }
}

/// Services whose stable version should be checked now: (service, stable).
fn due_services(
    config: &Config,
    table: &RoutingTable,
    verifier: &Verifier,
) -> Vec<(String, String)> {
    let points = verifier.return_point_status();
    let now = super::unix_ms();
    let watched: Vec<&ServiceRoute> = table
        .services()
        .iter()
        .filter(|r| others_take_traffic(r))
        .collect();
    verifier.retain_return_points(|service| watched.iter().any(|r| *r.name == *service));
    watched
        .into_iter()
        .filter_map(|route| {
            let service = config.service(&route.name)?;
            let stable = route.versions[route.stable].name.to_string();
            due(
                points.get(service.name.as_str()),
                &stable,
                service.verify.checks_every,
                now,
            )
            .then(|| (service.name.clone(), stable))
        })
        .collect()
}

/// Watches every service's return point until `stop`.
pub async fn run(
    verifier: Arc<Verifier>,
    controller: Arc<Controller>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let table = controller.plane.table.load_full();
        let config = controller.config().await;
        let mut running = JoinSet::new();
        for (service, stable) in due_services(&config, &table, &verifier) {
            let (config, table) = (config.clone(), table.clone());
            running.spawn(async move {
                let service = config.service(&service)?;
                let run = check_version(service, &table, &stable).await;
                Some((service.name.clone(), run.report))
            });
        }
        while let Some(joined) = running.join_next().await {
            if let Ok(Some((service, report))) = joined {
                log_change(&verifier, &service, &report);
                verifier.note_return_point(&service, &report);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One log line when the return point starts failing or passes again.
fn log_change(verifier: &Verifier, service: &str, report: &crate::control::record::CheckReport) {
    let before = verifier
        .return_point_status()
        .get(service)
        .filter(|p| p.version == report.version)
        .map(|p| p.last.passed);
    match (before, report.passed) {
        (Some(true) | None, false) => tracing::error!(
            service,
            "return point failing: {}; an abort or cutback would not help",
            report.summary()
        ),
        (Some(false), true) => tracing::info!(
            service,
            "return point passes its checks again: {}",
            report.summary()
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::record::CheckReport;

    fn point(version: &str, checked_ms: u64) -> ReturnPoint {
        ReturnPoint {
            version: version.into(),
            checked: String::new(),
            checked_ms,
            passed: None,
            passed_ms: None,
            last: CheckReport {
                version: version.into(),
                passed: true,
                failed: Vec::new(),
                ms: 1,
            },
            held: None,
        }
    }

    #[test]
    fn due_at_first_after_the_interval_and_when_stable_changes() {
        let every = Duration::from_secs(10);
        assert!(due(None, "blue", every, 5));
        let blue = point("blue", 1_000);
        assert!(!due(Some(&blue), "blue", every, 10_999));
        assert!(due(Some(&blue), "blue", every, 11_000));
        assert!(
            due(Some(&blue), "green", every, 1_001),
            "a new stable is checked at once"
        );
    }

    #[test]
    fn a_held_cutback_is_raised_once_and_cleared_when_the_return_point_passes() {
        let verifier = Verifier::default();
        let failing = CheckReport {
            version: "blue".into(),
            passed: false,
            failed: Vec::new(),
            ms: 3,
        };
        assert!(
            !verifier.hold_cutback("shop", "canary bad"),
            "nothing known: nothing held"
        );
        verifier.note_return_point("shop", &failing);
        assert_eq!(
            verifier.failing_return_point("shop", "blue"),
            Some(failing.clone())
        );
        assert_eq!(verifier.failing_return_point("shop", "green"), None);
        assert!(verifier.hold_cutback("shop", "canary bad"));
        assert!(
            !verifier.hold_cutback("shop", "canary bad"),
            "once per failing stretch"
        );
        verifier.note_return_point("shop", &failing);
        assert!(verifier.return_point_status()["shop"].held.is_some());
        let passing = CheckReport {
            passed: true,
            ..failing
        };
        verifier.note_return_point("shop", &passing);
        let point = &verifier.return_point_status()["shop"];
        assert!(point.held.is_none() && point.passed.is_some());
        assert_eq!(verifier.failing_return_point("shop", "blue"), None);
    }
}
