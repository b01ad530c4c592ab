//! Human-readable output of `switchyard ctl`.

use crate::admin::api::{
    HistoryResponse, IncidentsResponse, ReloadResponse, RolloutStatus, ServiceStatus,
    StatusResponse,
};
use crate::control::describe;
use crate::control::record::CheckReport;
use crate::control::record::RevisionRecord;
use crate::routing::ServiceState;
use crate::telemetry::shadow::{ShadowReport, ShadowVerdict};
use crate::verify::ChecksResponse;
use std::fmt::Write;

pub fn status(status: &StatusResponse) -> String {
    let mut out = format!(
        "revision {}  proxy {}  (rates over {}s)\n",
        status.revision, status.listen, status.window_secs
    );
    if let Some(fleet) = &status.fleet {
        out.push_str(&fleet_summary(fleet));
    }
    if let Some(journal) = &status.journal {
        out.push_str(&format!(
            "JOURNAL UNWRITABLE since {}: {} ({} abort(s) in force, waiting to be recorded; other changes refused)\n",
            crate::control::record::rfc3339_millis(journal.since_ms),
            journal.error,
            journal.pending
        ));
    }
    for service in &status.services {
        out.push('\n');
        out.push_str(&self::service(service));
    }
    out
}

pub fn service(service: &ServiceStatus) -> String {
    let mut flags = String::new();
    if service.latched {
        flags.push_str("  ABORTED (latched: all traffic on stable until resume)");
    }
    if service.frozen {
        flags.push_str("  FROZEN");
    }
    let hosts = match service.hosts.as_slice() {
        [] => "any host".to_string(),
        hosts => hosts.join(", "),
    };
    let mut out = format!(
        "{}  stable={}  last change: revision {}  ({hosts}){flags}\n",
        service.name, service.stable, service.revision
    );
    let rows = service
        .versions
        .iter()
        .map(|v| {
            let runtime = v.runtime.then_some("(runtime)");
            let release = [&v.release.version, &v.release.commit, &v.release.notes]
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.as_str())
                .chain(runtime)
                .collect::<Vec<_>>()
                .join(" ");
            vec![
                format!("{}{}", v.name, if v.stable { "*" } else { "" }),
                v.weight.to_string(),
                format!("{:.1}%", v.share * 100.0),
                v.refusing.as_ref().map_or("-".to_string(), |refusing| {
                    format!(
                        "{}/{}",
                        v.endpoints.len().saturating_sub(refusing.len()),
                        v.endpoints.len()
                    )
                }),
                format!("{:.1}", v.requests_per_sec),
                format!("{:.2}%", v.error_rate * 100.0),
                format!("{:.1}", v.p50_ms),
                format!("{:.1}", v.p99_ms),
                release,
            ]
        })
        .collect();
    let headers = [
        "VERSION", "WEIGHT", "SHARE", "UP", "REQ/S", "ERRORS", "P50MS", "P99MS", "RELEASE",
    ];
    out.push_str(&indent(&table(&headers, rows)));
    for version in service.versions.iter().filter(|v| !v.grpc.is_empty()) {
        let counts: Vec<String> = version
            .grpc
            .iter()
            .map(|(status, count)| format!("{status} {count}"))
            .collect();
        out.push_str(&format!(
            "  grpc {} since start: {}\n",
            version.name,
            counts.join(", ")
        ));
    }
    if let Some(guard) = &service.guard {
        let healthy_for = guard
            .healthy_for_secs
            .map_or(String::new(), |secs| format!(" for {secs:.1}s"));
        out.push_str(&format!(
            "  guard: {} {}{healthy_for} ({})\n",
            guard.version, guard.verdict, guard.detail
        ));
    }
    if let Some(rollout) = &service.rollout {
        out.push_str(&format!("  {}\n", self::rollout(rollout)));
    }
    for analysis in &service.analysis {
        let outcome = analysis.outcome.map_or("not run yet", |o| o.label());
        out.push_str(&format!(
            "  analysis {:?} of {}: {outcome}, {} failed in a row of {} that abort ({} runs): {}\n",
            analysis.name,
            analysis.version,
            analysis.failed_in_a_row,
            analysis.failures,
            analysis.runs,
            analysis.detail
        ));
    }
    if let Some(point) = &service.return_point {
        let passed = point.passed.as_deref().unwrap_or("never");
        out.push_str(&format!(
            "  return point {}: last checked {}, last passed {passed}: {}\n",
            point.version,
            point.checked,
            point.last.summary()
        ));
        if let Some(held) = &point.held {
            out.push_str(&format!(
                "  CUTBACK HELD (routing kept, a hotfix is needed): {held}\n"
            ));
        }
    }
    out
}

/// One line: what the rollout is doing and why.
pub fn rollout(status: &RolloutStatus) -> String {
    let rollout = &status.rollout;
    let mut line = format!(
        "rollout of {} {} at {} since {}: {}",
        rollout.canary,
        rollout.status.label(),
        rollout.position(),
        rollout.since,
        rollout.note
    );
    if let Some(held) = &status.held {
        line.push_str(&format!("; held: {held}"));
    }
    if let Some(revision) = rollout.revision {
        line.push_str(&format!(" (last revision {revision})"));
    }
    line
}

/// For `status`: how many live members share this routing, and what each applied.
fn fleet_summary(fleet: &crate::fleet::FleetStatus) -> String {
    let mut out = match (&fleet.problem, fleet.connected) {
        (_, false) => format!(
            "fleet {}: NATS UNREACHABLE from {}: serving the routing it applied last (revision {}); changes refused\n",
            fleet.fleet, fleet.instance, fleet.applied
        ),
        (Some(problem), true) => format!(
            "fleet {}: members not listed ({problem}); this is {} (applied {})\n",
            fleet.fleet, fleet.instance, fleet.applied
        ),
        (None, true) => {
            let members: Vec<String> = fleet
                .members
                .iter()
                .map(|m| format!("{} at {}", m.instance, m.applied))
                .collect();
            format!(
                "fleet {}: {} live member(s) share this routing ({}); this is {}\n",
                fleet.fleet,
                fleet.members.len(),
                members.join(", "),
                fleet.instance
            )
        }
    };
    if let Some(last) = fleet.log_revision.filter(|&last| last > fleet.applied) {
        out.push_str(&format!(
            "THIS INSTANCE HAS NOT CAUGHT UP with the fleet's log: applied {} of {last}\n",
            fleet.applied
        ));
    }
    out + &fleet_rejected(fleet)
}

/// What this instance skipped on the fleet's subjects (empty when nothing was).
fn fleet_rejected(fleet: &crate::fleet::FleetStatus) -> String {
    let alarm = match &fleet.log_alarm {
        Some(alarm) => format!("FLEET LOG WENT BACK: {alarm}\n"),
        None => String::new(),
    };
    if fleet.rejected.is_empty() {
        return alarm;
    }
    let kinds: Vec<String> = fleet
        .rejected
        .iter()
        .map(|k| {
            format!(
                "{} {} {}",
                k.count,
                k.carrier.as_str(),
                k.reason.as_str().replace('_', " ")
            )
        })
        .collect();
    alarm
        + &format!(
            "SKIPPED on the fleet's subjects, never applied: {} (see {}'s log)\n",
            kinds.join(", "),
            fleet.instance
        )
}

pub fn fleet(fleet: &crate::fleet::FleetStatus) -> String {
    let Some(revision) = fleet.log_revision.filter(|_| fleet.connected) else {
        return format!(
            "fleet {}: NATS UNREACHABLE from {}: its members cannot be listed; this instance serves the routing it applied last (revision {})\n",
            fleet.fleet, fleet.instance, fleet.applied
        ) + &fleet_rejected(fleet);
    };
    let head = format!(
        "fleet {}: {} member(s), log at revision {revision}; this is {} (applied {})\n",
        fleet.fleet,
        fleet.members.len(),
        fleet.instance,
        fleet.applied
    );
    let rows = fleet
        .members
        .iter()
        .map(|m| {
            vec![
                m.instance.clone(),
                m.applied.to_string(),
                m.lag.to_string(),
                m.version.clone(),
                format!("{:.1}s ago", m.last_seen_ms_ago as f64 / 1e3),
            ]
        })
        .collect();
    head + &fleet_rejected(fleet)
        + &table(
            &["INSTANCE", "APPLIED", "LAG", "VERSION", "LAST_SEEN"],
            rows,
        )
}

pub fn incidents(incidents: &IncidentsResponse) -> String {
    if incidents.incidents.is_empty() {
        return "no incidents\n".to_string();
    }
    let rows = incidents
        .incidents
        .iter()
        .map(|i| {
            vec![
                i.id.to_string(),
                i.service.clone(),
                i.version.clone(),
                i.started.clone(),
                format!("{:.2}s", i.duration_ms as f64 / 1e3),
                format!("{}/{}", i.users.failed, i.users.saved),
                i.summary.clone(),
                i.restored_by.to_string(),
            ]
        })
        .collect();
    let headers = [
        "ID",
        "SERVICE",
        "VERSION",
        "STARTED",
        "DURATION",
        "FAILED/SAVED",
        "SUMMARY",
        "RESTORED_BY",
    ];
    let mut out = table(&headers, rows);
    for incident in &incidents.incidents {
        if incident.held {
            out.push_str(&format!("#{}: cutback HELD, routing kept\n", incident.id));
        }
        if let Some(checks) = &incident.checks {
            out.push_str(&format!("#{}: checks: {}\n", incident.id, checks.summary()));
        }
        if let Some(advice) = &incident.advice {
            out.push_str(&format!("#{}: {advice}\n", incident.id));
        }
    }
    out
}

pub fn history(history: &HistoryResponse) -> String {
    if history.revisions.is_empty() {
        return format!("{}: no revisions\n", history.service);
    }
    let rows = history
        .revisions
        .iter()
        .map(|r| {
            vec![
                r.revision.to_string(),
                r.time.clone(),
                r.actor.clone(),
                kind(r),
                routing(r.new.as_ref()),
                r.checks.as_ref().map_or("-".to_string(), checks_cell),
                r.reason.clone(),
            ]
        })
        .collect();
    let headers = [
        "REV", "TIME", "ACTOR", "KIND", "ROUTING", "CHECKS", "REASON",
    ];
    table(&headers, rows)
}

/// One line for an acknowledged change.
pub fn revision(record: &RevisionRecord) -> String {
    let mut out = format!(
        "revision {}: {} {} by {}: {} (was {})\n",
        record.revision,
        record.service,
        kind(record),
        record.actor,
        routing(record.new.as_ref()),
        routing(record.old.as_ref()),
    );
    if let Some(checks) = &record.checks {
        out.push_str(&format!("  checks: {}\n", checks.summary()));
    }
    out
}

/// The kind, with the runtime versions it added or removed, marked when the change was
/// forced past its gate.
fn kind(record: &RevisionRecord) -> String {
    let mut label = record.kind.label().to_string();
    if let (Some(old), Some(new)) = (&record.old, &record.new) {
        let changed: Vec<&str> = old
            .runtime
            .keys()
            .filter(|v| !new.runtime.contains_key(*v))
            .chain(new.runtime.keys().filter(|v| !old.runtime.contains_key(*v)))
            .map(String::as_str)
            .collect();
        if !changed.is_empty() {
            label = format!("{label} {}", changed.join(","));
        }
    }
    match record.forced {
        true => format!("{label} (forced)"),
        false => label,
    }
}

/// A check report in one short cell: `blue ok 12ms` or the first failure.
fn checks_cell(report: &CheckReport) -> String {
    match report.failed.as_slice() {
        [] => format!("{} ok {}ms", report.version, report.ms),
        [first, rest @ ..] => {
            let more = match rest.len() {
                0 => String::new(),
                n => format!(" +{n}"),
            };
            format!(
                "{} FAIL {:?}@{}: {}{more}",
                report.version, first.check, first.endpoint, first.got
            )
        }
    }
}

/// Each version's checks, one line per check and endpoint.
pub fn checks(found: &ChecksResponse) -> String {
    let mut out = String::new();
    for run in &found.runs {
        out.push_str(&format!("{}: {}\n", found.service, run.report.summary()));
        let rows = run
            .results
            .iter()
            .map(|r| {
                vec![
                    if r.passed { "ok" } else { "FAIL" }.to_string(),
                    r.check.clone(),
                    r.endpoint.clone(),
                    r.got.clone(),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &["RESULT", "CHECK", "ENDPOINT", "GOT"],
            rows,
        )));
    }
    out
}

pub fn shadow(service: &str, found: &ShadowReport) -> String {
    let verdict = match &found.verdict {
        ShadowVerdict::Pass => "pass: answers match stable's, beyond noise".to_string(),
        ShadowVerdict::Fail { summary } => format!("FAIL: {summary}"),
        ShadowVerdict::Inconclusive { reason } => format!("inconclusive: {reason}"),
    };
    let skipped: Vec<String> = found
        .skipped
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(why, n)| format!("{why} {n}"))
        .collect();
    let mut out = format!(
        "{service}: shadow {}: {verdict}\n  mirrored {}, compared {}, differing {}; noise: compared {}, differing {}; skipped: {} ({})\n",
        found.version,
        found.mirrored,
        found.compared,
        found.differing,
        found.noise_compared,
        found.noise_differing,
        if skipped.is_empty() { "none".to_string() } else { skipped.join(", ") },
        found.scope(),
    );
    let rows = found
        .fields
        .iter()
        .map(|f| {
            let sample = f.sample.as_ref();
            vec![
                f.field.clone(),
                format!("{:.1}%", f.shadow_percent),
                format!("{:.1}%", f.noise_percent),
                sample.map_or("-".into(), |s| s.request.clone()),
                sample.map_or("-".into(), |s| s.stable.clone()),
                sample.map_or("-".into(), |s| s.shadow.clone()),
            ]
        })
        .collect();
    out.push_str(&indent(&table(
        &[
            "FIELD",
            "DIFFERS",
            "NOISE",
            "E.G. REQUEST",
            "STABLE",
            "SHADOW",
        ],
        rows,
    )));
    out
}

pub fn reload(reloaded: &ReloadResponse) -> String {
    let mut out = format!(
        "reloaded: revision {}, {} routing change(s)\n",
        reloaded.revision,
        reloaded.changes.len()
    );
    for record in &reloaded.changes {
        out.push_str("  ");
        out.push_str(&revision(record));
    }
    if !reloaded.kept_runtime.is_empty() {
        out.push_str(&format!(
            "kept runtime versions: {}\n",
            reloaded.kept_runtime.join(", ")
        ));
    }
    out
}

fn routing(state: Option<&ServiceState>) -> String {
    state.map_or_else(|| "(none)".to_string(), describe)
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}\n")).collect()
}

/// Left-aligned columns, two spaces apart.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows.iter()) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
