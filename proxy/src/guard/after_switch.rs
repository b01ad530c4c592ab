//! The watch after a switch: once `switch` or `promote` makes a version stable, for
//! `watch_after_switch` the guard judges it (only its traffic since the change) against
//! the previous stable's window as it stood when the change was seen, with the canary's
//! statistics and bounds. A bad verdict switches back to the previous stable at once and
//! latches; if the previous version fails its checks or all its endpoints are held out by
//! health checks, the switch back is held and the alarm raised instead.

use super::evidence::{cause, p99, side, LATENCY_REFRESH};
use super::incident::Cutback;
use super::judge::{Evidence, Finding, Judge, Side, Verdict};
use super::Guard;
use crate::clock::unix_ms;
use crate::control::command::Change;
use crate::control::error::ControlError;
use crate::control::record::CheckReport;
use crate::control::record::{ChangeKind, Origin};
use crate::control::RoutingControl;
use crate::routing::{RoutingTable, ServiceRoute, VersionRoute};
use crate::telemetry::Tally;
use std::collections::HashMap;
use std::time::{Instant, SystemTime};

/// One new stable under watch.
pub struct SwitchWatch {
    previous: String,
    current: String,
    since: Instant,
    /// When the switch was recorded.
    switched_ms: u64,
    /// The previous stable's window when the change was seen: the bar to clear.
    baseline: Side,
    /// The new stable's pooled totals at the change, and at the last look.
    at_switch: Tally,
    seen: Tally,
    judge: Judge,
    latency_read: Option<Instant>,
}

/// The stable each guarded service had at the last look, and the watches running.
#[derive(Default)]
pub struct AfterSwitch {
    stables: HashMap<String, String>,
    watches: HashMap<String, SwitchWatch>,
}

/// A watched stable judged bad.
pub struct Regression {
    service: String,
    watch: SwitchWatch,
    finding: Finding,
}

impl AfterSwitch {
    /// Starts a watch for each stable changed by `switch`/`promote` since the last look,
    /// judges those running, and returns the ones found bad (their watch ends).
    pub fn look(&mut self, table: &RoutingTable, control: &impl RoutingControl) -> Vec<Regression> {
        let now = Instant::now();
        let mut bad = Vec::new();
        let guarded: Vec<&ServiceRoute> = table
            .services()
            .iter()
            .filter(|s| s.guard.enabled)
            .collect();
        self.stables
            .retain(|name, _| guarded.iter().any(|s| *s.name == **name));
        self.watches
            .retain(|name, _| guarded.iter().any(|s| *s.name == **name));
        for service in guarded {
            let stable = &service.versions[service.stable];
            let before = self
                .stables
                .insert(service.name.to_string(), stable.name.to_string());
            if let Some(previous) = before.filter(|p| **p != *stable.name) {
                self.watches.remove(&*service.name);
                if let Some(watch) = start(service, &previous, control, now) {
                    tracing::info!(service = %service.name, previous = %previous, stable = %stable.name, "watching the new stable against the previous one");
                    self.watches.insert(service.name.to_string(), watch);
                }
            }
            let Some(watch) = self.watches.get_mut(&*service.name) else {
                continue;
            };
            if watch.current != *stable.name
                || now.duration_since(watch.since) >= service.guard.watch_after_switch
            {
                self.watches.remove(&*service.name);
                continue;
            }
            if let Verdict::Bad(finding) = judge(watch, service, stable, now) {
                if let Some(watch) = self.watches.remove(&*service.name) {
                    bad.push(Regression {
                        service: service.name.to_string(),
                        watch,
                        finding,
                    });
                }
            }
        }
        bad
    }
}

/// A watch for `service`'s new stable, if the change was a `switch` or `promote` (not the
/// guard's own switch back, a rollback or a reload). A previous stable with no traffic in
/// its window is a baseline like a canary's idle stable: the judge's prior bound applies.
fn start(
    service: &ServiceRoute,
    previous: &str,
    control: &impl RoutingControl,
    now: Instant,
) -> Option<SwitchWatch> {
    let stable = &service.versions[service.stable];
    let history = control.revisions(&service.name);
    let last = history
        .iter()
        .rev()
        .find(|r| r.new.as_ref().is_some_and(|n| n.stable == *stable.name))?;
    let switched = matches!(last.kind, ChangeKind::Switch | ChangeKind::Promote)
        && last.actor != "guard"
        && last.old.as_ref().is_some_and(|o| o.stable == previous);
    if !switched {
        return None;
    }
    let old = service.versions.iter().find(|v| *v.name == *previous)?;
    let window = service.guard.window;
    let tally = old.stats.pooled_window_tally(window, now);
    let baseline = side(&tally, Some(p99(old.stats.pooled_window(window, now))));
    let at_switch = stable.stats.pooled_total_tally();
    Some(SwitchWatch {
        previous: previous.to_string(),
        current: stable.name.to_string(),
        since: now,
        switched_ms: last.time_ms,
        baseline,
        at_switch,
        seen: at_switch,
        judge: Judge::new(&service.guard),
        latency_read: None,
    })
}

/// One judgment of the new stable's traffic since the switch against the baseline.
fn judge(
    watch: &mut SwitchWatch,
    service: &ServiceRoute,
    stable: &VersionRoute,
    now: Instant,
) -> Verdict {
    let guard = &service.guard;
    let totals = stable.stats.pooled_total_tally();
    let since = Side {
        requests: totals.requests() - watch.at_switch.requests(),
        errors: totals.errors() - watch.at_switch.errors(),
        p99: None,
    };
    // Latency is compared once the new stable's window holds only its own traffic since
    // the switch: earlier, the window mixes in its canary days and its cold first
    // connections, and a healthy switch was seen sent back on that (p99 44 ms against a
    // baseline of 11.8 ms). Errors are judged from the first request.
    let judgeable = since.requests >= guard.latency_min_samples
        && watch.baseline.requests >= guard.latency_min_samples
        && now.duration_since(watch.since) >= guard.window;
    let due = watch
        .latency_read
        .is_none_or(|at| now.duration_since(at) >= LATENCY_REFRESH);
    let (current_p99, baseline_p99) = match judgeable && due {
        true => {
            watch.latency_read = Some(now);
            (
                Some(p99(stable.stats.pooled_window(guard.window, now))),
                watch.baseline.p99,
            )
        }
        false => (None, None),
    };
    let evidence = Evidence {
        canary_new_requests: totals.requests() - watch.seen.requests(),
        canary_new_errors: totals.errors() - watch.seen.errors(),
        canary_new_unreachable: 0,
        canary_all_refusing: false,
        canary_window: Side {
            p99: current_p99,
            ..since
        },
        stable_window: Side {
            p99: baseline_p99,
            ..watch.baseline
        },
    };
    watch.seen = totals;
    watch.judge.observe(&evidence)
}

/// Switches `regression`'s service back to its previous stable and latches it (two
/// journaled revisions; the switch passes the writer's gate, which runs the previous
/// version's checks), then records the incident. When the previous version is not fit to
/// take the traffic back, the routing is kept and the alarm raised instead.
pub async fn switch_back<C: RoutingControl>(
    guard: &Guard<C>,
    table: &RoutingTable,
    regression: Regression,
) {
    let Regression {
        service,
        watch,
        finding,
    } = regression;
    let Some(route) = table.services().iter().find(|s| *s.name == *service) else {
        return;
    };
    let why = format!(
        "{} is bad after the switch from {}: {}",
        watch.current, watch.previous, finding.summary
    );
    let Some(previous) = route.versions.iter().find(|v| *v.name == *watch.previous) else {
        // Retired since the switch (a runtime version): nothing to go back to, so the
        // alarm, never silence.
        let gone = format!("{} is no longer a version of {service}", watch.previous);
        return hold(guard, table, route, &watch, &finding, &why, (gone, None)).await;
    };
    let evidence = serde_json::to_value(&finding).unwrap_or_default();
    if let Some(unfit) = unfit(guard, &service, previous) {
        return hold(guard, table, route, &watch, &finding, &why, unfit).await;
    }
    let origin = Origin::new("guard", why.clone()).with_evidence(evidence);
    let switch = Change::Switch {
        version: watch.previous.clone(),
    };
    let record = match guard.control.change(&service, switch, origin).await {
        Ok(record) => record,
        // In a fleet another member may have switched back first (its revision applied).
        Err(_) if routing_on(guard, &service, &watch.previous) => {
            tracing::info!(service = %service, "already switched back (another member of the fleet decided first)");
            return;
        }
        Err(ControlError::Refused(refusal)) => {
            let unfit = (refusal, None);
            return hold(guard, table, route, &watch, &finding, &why, unfit).await;
        }
        Err(err) => {
            tracing::error!(service = %service, error = %err, "guard could not switch back");
            return;
        }
    };
    tracing::warn!(service = %service, revision = record.revision, "guard switched back: {why}");
    let latch = Origin::new(
        "guard",
        format!("latched after switching back from {}", watch.current),
    );
    // A switch keeps a latch already in force: then there is nothing to add.
    let latched = guard
        .control
        .routing_of(&service)
        .is_some_and(|r| r.latched);
    if !latched {
        if let Err(err) = guard
            .control
            .change(&service, Change::Abort {}, latch)
            .await
        {
            tracing::error!(service = %service, error = %err, "switched back but not latched");
        }
    }
    let cutback = describe(guard, table, route, &watch, &finding, record.time_ms);
    let cutback = Cutback {
        restored_by: record.revision,
        ..cutback
    };
    if let Err(err) = guard.incidents.record(cutback).await {
        tracing::error!(error = %err, "incident not recorded");
    }
}

/// Keeps the routing on the bad new stable and raises the alarm: a `cutback_held`
/// revision and a held incident saying why the previous version cannot take it back.
async fn hold<C: RoutingControl>(
    guard: &Guard<C>,
    table: &RoutingTable,
    route: &ServiceRoute,
    watch: &SwitchWatch,
    finding: &Finding,
    why: &str,
    (unfit, checks): (String, Option<CheckReport>),
) {
    let service = &route.name;
    let advice = format!("switch back held, routing kept: {unfit}; a hotfix is needed");
    tracing::error!(service = %service, "{why}; {advice}");
    let origin = Origin::new("guard", format!("{why}; {advice}"))
        .with_evidence(serde_json::to_value(finding).unwrap_or_default());
    let origin = match &checks {
        Some(report) => origin.with_checks(report.clone()),
        None => origin,
    };
    let ended_ms = match guard
        .control
        .note(service, ChangeKind::CutbackHeld, origin)
        .await
    {
        Ok(record) => record.time_ms,
        Err(err) => {
            tracing::error!(service = %service, error = %err, "held switch back not journaled");
            unix_ms(SystemTime::now())
        }
    };
    let cutback = describe(guard, table, route, watch, finding, ended_ms);
    if let Err(err) = guard.incidents.record_held(cutback, checks, advice).await {
        tracing::error!(error = %err, "incident not recorded");
    }
}

/// The numbers of a switch back (or a held one) for its incident: the new stable's
/// traffic since the switch against the previous stable's baseline.
fn describe<'a, C: RoutingControl>(
    guard: &Guard<C>,
    table: &RoutingTable,
    route: &'a ServiceRoute,
    watch: &'a SwitchWatch,
    finding: &'a Finding,
    ended_ms: u64,
) -> Cutback<'a> {
    let bad = route.versions.iter().find(|v| *v.name == *watch.current);
    let totals = bad
        .map(|v| v.stats.pooled_total_tally())
        .unwrap_or_default();
    let p99 = bad.map(|v| p99(v.stats.pooled_window(route.guard.window, Instant::now())));
    Cutback {
        service: &route.name,
        version: &watch.current,
        stable: &watch.previous,
        started_ms: watch.switched_ms,
        ended_ms,
        canary: Side {
            requests: totals.requests() - watch.at_switch.requests(),
            errors: totals.errors() - watch.at_switch.errors(),
            p99,
        },
        stable_side: watch.baseline,
        saved: totals.saved - watch.at_switch.saved,
        cause: cause(guard.control.as_ref(), &route.name, &watch.current, table),
        detection: serde_json::to_value(finding).unwrap_or_default(),
        summary: finding.summary.clone(),
        restored_by: 0,
    }
}

fn routing_on<C: RoutingControl>(guard: &Guard<C>, service: &str, version: &str) -> bool {
    guard
        .control
        .routing_of(service)
        .is_some_and(|r| r.stable == version)
}

/// Why the previous stable cannot take the traffic back, if it cannot: its last checks
/// failed, or health checks hold every one of its endpoints out.
fn unfit<C: RoutingControl>(
    guard: &Guard<C>,
    service: &str,
    previous: &VersionRoute,
) -> Option<(String, Option<CheckReport>)> {
    if let Some(failing) = guard.verifier.failing_return_point(service, &previous.name) {
        return Some((failing.summary(), Some(failing)));
    }
    let all_down =
        !previous.endpoints.is_empty() && previous.endpoints.iter().all(|e| e.is_checked_down());
    all_down.then(|| {
        let why = format!(
            "every endpoint of {} fails its health checks",
            previous.name
        );
        (why, None)
    })
}
