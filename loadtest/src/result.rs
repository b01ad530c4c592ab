//! A run's result: what happened, what the clients saw, which expectations held.

use crate::check::Check;
use crate::comparison::{render_table, CompareRow};
use crate::incidents::{AnalysisAbort, GuardCutback};
use crate::proxy::RevisionMark;
use crate::scenario::Scenario;
use crate::trickle::TrickleReport;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use switchyard_testkit::load::{LoadReport, NO_VERSION, TENTH};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Could not run as meant: a feature it needs is missing from this build.
    Blocked(String),
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Blocked(_) => "BLOCKED",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub at_secs: f64,
    pub what: String,
    pub ok: bool,
    pub outcome: String,
}

/// A version that had traffic and then none until the end of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Cutback {
    pub version: String,
    /// Send time just after its last answered request.
    pub at_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub scenario: String,
    pub about: String,
    pub needs: Vec<String>,
    pub verdict: Verdict,
    pub duration_secs: f64,
    pub proxy_mode: String,
    pub rss_peak_mib: Option<f64>,
    pub rss_end_mib: Option<f64>,
    pub revisions: Vec<RevisionMark>,
    pub steps: Vec<StepRecord>,
    pub loads: BTreeMap<String, LoadReport>,
    pub slow_clients: Vec<TrickleReport>,
    pub cutbacks: Vec<Cutback>,
    /// The guard's cutbacks, from the proxy's incident log.
    pub guard_cutbacks: Vec<GuardCutback>,
    /// Aborts by a Prometheus analysis, from the same log.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub analysis_aborts: Vec<AnalysisAbort>,
    /// The proxy's own view over the run (scenarios with `[prometheus]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<crate::watch::ServiceWatch>,
    /// Instances of the proxy (a fleet when more than one).
    pub instances: usize,
    /// In a fleet: when the first and the last instance ran each guard cutback.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fleet_cutbacks: Vec<crate::fleet::FleetCutback>,
    pub checks: Vec<Check>,
    /// The comparison table (compare scenarios only).
    pub comparison: Vec<CompareRow>,
    pub files: Vec<PathBuf>,
}

/// Versions whose traffic stopped for good at least a second before the end.
pub fn cutbacks(load: &LoadReport, duration_secs: f64) -> Vec<Cutback> {
    let tenths_in_run = (duration_secs / TENTH.as_secs_f64()) as usize;
    load.versions
        .iter()
        .filter(|v| v.name != NO_VERSION)
        .filter_map(|v| {
            let last = v.per_tenth.iter().rposition(|&n| n > 0)?;
            (last + 10 < tenths_in_run).then(|| Cutback {
                version: v.name.clone(),
                at_secs: (last + 1) as f64 * TENTH.as_secs_f64(),
            })
        })
        .collect()
}

impl ScenarioResult {
    /// A result with nothing measured yet.
    pub fn empty(scenario: &Scenario, verdict: Verdict) -> ScenarioResult {
        ScenarioResult {
            scenario: scenario.name.clone(),
            about: scenario.about.clone(),
            needs: scenario.needs.clone(),
            verdict,
            duration_secs: 0.0,
            proxy_mode: format!("{:?}", scenario.proxy.mode).to_lowercase(),
            rss_peak_mib: None,
            rss_end_mib: None,
            revisions: Vec::new(),
            steps: Vec::new(),
            loads: BTreeMap::new(),
            slow_clients: Vec::new(),
            cutbacks: Vec::new(),
            guard_cutbacks: Vec::new(),
            analysis_aborts: Vec::new(),
            watch: None,
            instances: scenario.proxy.instances,
            fleet_cutbacks: Vec::new(),
            checks: Vec::new(),
            comparison: Vec::new(),
            files: Vec::new(),
        }
    }

    /// One line per load stream with the figures that matter, plus proxy facts.
    pub fn headline(&self) -> String {
        let mut out = String::new();
        for (name, load) in &self.loads {
            let rate = load.requests as f64 / self.duration_secs.max(1e-9);
            let shares: Vec<String> = load
                .versions
                .iter()
                .map(|v| format!("{} {:.1}%", v.name, v.share * 100.0))
                .collect();
            let _ = write!(
                out,
                "{name}: {} req ({rate:.0}/s), {} errors ({:.2}%), p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms; {}",
                load.requests,
                load.errors,
                100.0 * load.errors as f64 / load.requests.max(1) as f64,
                load.p50_ms,
                load.p99_ms,
                load.p999_ms,
                shares.join(", "),
            );
            if load.unsent > 0 {
                let _ = write!(out, "; {} unsent (target fell behind)", load.unsent);
            }
            out.push('\n');
        }
        for cut in &self.cutbacks {
            let _ = writeln!(
                out,
                "{} had no traffic from {:.1}s on",
                cut.version, cut.at_secs
            );
        }
        for cut in &self.guard_cutbacks {
            let _ = writeln!(
                out,
                "guard cut {} back at {:.3}s on {} (revision {}; failed canary requests: {} reached clients, {} answered by stable)",
                cut.version, cut.at_secs, cut.rule, cut.revision, cut.failed, cut.saved
            );
        }
        for abort in &self.analysis_aborts {
            let _ = writeln!(
                out,
                "analysis {:?} aborted {} at {:.3}s (revision {}): canary {} against stable {} on `{}`",
                abort.analysis,
                abort.version,
                abort.at_secs,
                abort.revision,
                value(abort.canary_value),
                value(abort.stable_value),
                abort.condition
            );
        }
        for cut in &self.fleet_cutbacks {
            let _ = writeln!(
                out,
                "fleet of {}: cutback revision {} ran on the first instance at {:.3}s, on all at {:.3}s (+{:.0} ms)",
                self.instances,
                cut.revision,
                cut.first_secs,
                cut.all_secs,
                (cut.all_secs - cut.first_secs) * 1e3
            );
        }
        for slow in &self.slow_clients {
            let _ = writeln!(
                out,
                "slow clients: {} connections opened, {} dropped by the proxy",
                slow.opened, slow.dropped_by_proxy
            );
        }
        if !self.comparison.is_empty() {
            let ratios: Vec<String> = self
                .comparison
                .iter()
                .filter(|row| row.proxy != "switchyard")
                .map(|row| format!("{} {:.2}x", row.proxy, row.rps_ratio))
                .collect();
            let _ = writeln!(out, "req/s relative to switchyard: {}", ratios.join(", "));
            out.push_str(&render_table(&self.comparison));
        }
        if let Some(peak) = self.rss_peak_mib {
            let _ = writeln!(out, "proxy RSS peak {peak:.1} MiB");
        }
        out
    }
}

/// A value an analysis read, or "no data".
pub fn value(value: Option<f64>) -> String {
    value.map_or_else(|| "no data".into(), |v| format!("{v:.4}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_testkit::load::VersionReport;

    #[test]
    fn a_version_that_went_quiet_is_a_cutback_and_one_that_kept_going_is_not() {
        let version = |name: &str, tenths: Vec<u32>| VersionReport {
            name: name.into(),
            requests: tenths.iter().map(|&n| u64::from(n)).sum(),
            errors: 0,
            share: 0.0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            p999_ms: 0.0,
            max_ms: 0.0,
            per_second: vec![],
            per_tenth: tenths,
        };
        let load = LoadReport {
            versions: vec![
                version("blue", vec![5; 100]),
                version("canary", [vec![1; 42], vec![0; 58]].concat()),
            ],
            ..LoadReport::default()
        };
        let cuts = cutbacks(&load, 10.0);
        assert_eq!(cuts.len(), 1);
        assert_eq!(cuts[0].version, "canary");
        assert!((cuts[0].at_secs - 4.2).abs() < 1e-9);
    }
}
