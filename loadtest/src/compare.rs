//! The comparison run: the same upstreams and the same load through switchyard, HAProxy
//! and NGINX, alternating in rounds so no proxy always goes first, and a table of
//! requests/s and latency with each one's ratio to switchyard.

use crate::configgen::{config_text, Layout, Routing};
use crate::peers::{self, Backends, Peer};
use crate::proxy::ProxyUnderTest;
use crate::result::{ScenarioResult, Verdict};
use crate::scenario::{CompareSpec, Scenario};
use crate::system::free_port;
use crate::upstreams::Upstreams;
use crate::{chart, Context, HarnessError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_testkit::load::{Load, LoadReport, LoadSpec, Recorder};

#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    pub proxy: String,
    /// Requests/s of each round, then the median of the rounds' figures.
    pub rounds_rps: Vec<f64>,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// Share answered by the canary (expect about the configured 10%).
    pub canary_share: f64,
    /// This proxy's figure over switchyard's.
    pub rps_ratio: f64,
    pub p50_ratio: f64,
    pub p99_ratio: f64,
}

enum Target {
    Switchyard(ProxyUnderTest),
    Peer(Peer),
}

pub async fn run(
    scenario: &Scenario,
    spec: &CompareSpec,
    context: &Context,
) -> Result<ScenarioResult, HarnessError> {
    let dir = context.run_dir(&scenario.name)?;
    let upstreams = Upstreams::start(&scenario.upstreams)
        .await
        .map_err(|e| HarnessError::Io("cannot start the sample upstreams".into(), e))?;
    let addresses = upstreams.addresses();
    let weight = |name: &str| scenario.proxy.weights.get(name).copied().unwrap_or(0) as u32;
    let canary = addresses
        .keys()
        .find(|name| **name != scenario.proxy.stable)
        .cloned()
        .ok_or_else(|| {
            HarnessError::Setup("compare needs a stable and a canary upstream".into())
        })?;
    let backends = Backends {
        stable: addresses[&scenario.proxy.stable],
        canary: addresses[&canary],
        stable_weight: weight(&scenario.proxy.stable),
        canary_weight: weight(&canary),
    };
    let mut skipped = Vec::new();
    if spec.proxies.iter().any(|p| p != "switchyard") {
        if let Err(why) = peers::ensure_installed() {
            skipped.push(why);
        }
    }
    let mut targets: Vec<(String, SocketAddr, Target)> = Vec::new();
    for name in &spec.proxies {
        let listen = free_port().map_err(|e| HarnessError::Io("no free port".into(), e))?;
        let started = match name.as_str() {
            "switchyard" => {
                let layout = Layout::of(scenario, listen, &dir, &addresses);
                let routing = Routing::of(scenario);
                ProxyUnderTest::start(
                    scenario.proxy.mode,
                    &context.binary,
                    &dir.join("switchyard.toml"),
                    &config_text(&layout, &routing),
                )
                .await
                .map(Target::Switchyard)
                .map_err(|e| e.to_string())
            }
            "haproxy" => peers::start_haproxy(&dir, listen, &backends)
                .await
                .map(Target::Peer),
            "nginx" => peers::start_nginx(&dir, listen, &backends)
                .await
                .map(Target::Peer),
            other => Err(format!(
                "unknown proxy {other:?} (switchyard, haproxy or nginx)"
            )),
        };
        match started {
            Ok(target) => targets.push((name.clone(), listen, target)),
            Err(why) => skipped.push(format!("{name}: {why}")),
        }
    }

    let warmup = spec.warmup.map_or(Duration::from_secs(1), |d| d.0);
    let mut rounds: BTreeMap<String, Vec<LoadReport>> = BTreeMap::new();
    for round in 0..spec.rounds {
        for offset in 0..targets.len() {
            let (name, addr, _) = &targets[(round + offset) % targets.len()];
            if round == 0 {
                measure(*addr, spec, warmup).await?;
            }
            let report = measure(*addr, spec, spec.duration.0).await?;
            eprintln!(
                "  round {}: {name:<10} {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
                round + 1,
                report.requests as f64 / spec.duration.0.as_secs_f64(),
                report.p50_ms,
                report.p99_ms,
                report.errors
            );
            rounds.entry(name.clone()).or_default().push(report);
        }
    }
    for (_, _, target) in targets {
        match target {
            Target::Switchyard(proxy) => proxy.stop().await,
            Target::Peer(peer) => peer.stop().await,
        }
    }
    drop(upstreams);

    let rows = table(&rounds, &spec.proxies, &canary, spec.duration.0);
    let verdict = if !skipped.is_empty() {
        Verdict::Blocked(skipped.join("; "))
    } else if rows.iter().all(|r| r.errors == 0) {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    let mut result = ScenarioResult::empty(scenario, verdict);
    result.duration_secs = spec.duration.0.as_secs_f64();
    result.comparison = rows;
    let svg_path = dir.join("chart.svg");
    let json_path = dir.join("result.json");
    result.files = vec![json_path.clone(), svg_path.clone()];
    context.write(&svg_path, &chart::render_comparison(&result))?;
    context.write(
        &json_path,
        &serde_json::to_string_pretty(&result).unwrap_or_default(),
    )?;
    Ok(result)
}

/// One bounded load run against `addr`.
async fn measure(
    addr: SocketAddr,
    spec: &CompareSpec,
    duration: Duration,
) -> Result<LoadReport, HarnessError> {
    let recorder = Arc::new(Recorder::new(Instant::now()));
    let mut load = LoadSpec::new(addr, spec.connections, spec.rate);
    load.stop = duration;
    // Every proxy passes the upstream's own name header through.
    load.version_header = http::HeaderName::from_static("x-upstream");
    Load::start(load, recorder.clone())
        .map_err(HarnessError::Load)?
        .finished()
        .await;
    Ok(recorder.report())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn table(
    rounds: &BTreeMap<String, Vec<LoadReport>>,
    order: &[String],
    canary: &str,
    duration: Duration,
) -> Vec<CompareRow> {
    let mut rows: Vec<CompareRow> = order
        .iter()
        .filter_map(|name| {
            let reports = rounds.get(name)?;
            let rps: Vec<f64> = reports
                .iter()
                .map(|r| r.requests as f64 / duration.as_secs_f64())
                .collect();
            let requests: u64 = reports.iter().map(|r| r.requests).sum();
            let canary_requests: u64 = reports
                .iter()
                .filter_map(|r| r.version(canary))
                .map(|v| v.requests)
                .sum();
            Some(CompareRow {
                proxy: name.clone(),
                rps: median(rps.clone()),
                rounds_rps: rps,
                p50_ms: median(reports.iter().map(|r| r.p50_ms).collect()),
                p99_ms: median(reports.iter().map(|r| r.p99_ms).collect()),
                errors: reports.iter().map(|r| r.errors).sum(),
                canary_share: canary_requests as f64 / requests.max(1) as f64,
                rps_ratio: 1.0,
                p50_ratio: 1.0,
                p99_ratio: 1.0,
            })
        })
        .collect();
    if let Some(base) = rows.iter().find(|r| r.proxy == "switchyard").cloned() {
        let over = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        for row in &mut rows {
            row.rps_ratio = over(row.rps, base.rps);
            row.p50_ratio = over(row.p50_ms, base.p50_ms);
            row.p99_ratio = over(row.p99_ms, base.p99_ms);
        }
    }
    rows
}

/// The comparison as a text table.
pub fn render_table(rows: &[CompareRow]) -> String {
    let mut out = format!(
        "{:<11}{:>10}{:>10}{:>10}{:>8}{:>8}{:>12}{:>10}{:>10}\n",
        "proxy",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "canary",
        "req/s ratio",
        "p50 ratio",
        "p99 ratio"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<11}{:>10.0}{:>10.2}{:>10.2}{:>8}{:>7.1}%{:>12.2}{:>10.2}{:>10.2}",
            row.proxy,
            row.rps,
            row.p50_ms,
            row.p99_ms,
            row.errors,
            row.canary_share * 100.0,
            row.rps_ratio,
            row.p50_ratio,
            row.p99_ratio
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn ratios_are_to_switchyard() {
        let report = |requests: u64, p99_ms: f64| LoadReport {
            requests,
            p50_ms: 1.0,
            p99_ms,
            ..LoadReport::default()
        };
        let rounds = BTreeMap::from([
            ("switchyard".to_string(), vec![report(1000, 2.0)]),
            ("haproxy".to_string(), vec![report(800, 4.0)]),
        ]);
        let order = ["switchyard".to_string(), "haproxy".to_string()];
        let rows = table(&rounds, &order, "canary", Duration::from_secs(1));
        assert_eq!(rows[0].rps_ratio, 1.0);
        assert!((rows[1].rps_ratio - 0.8).abs() < 1e-9);
        assert!((rows[1].p99_ratio - 2.0).abs() < 1e-9);
        assert!(render_table(&rows).contains("haproxy"));
    }
}
