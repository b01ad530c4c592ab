//! The comparison run: the same upstreams and the same load through switchyard, HAProxy
//! and NGINX, alternating in rounds so no proxy always goes first, and a table of
//! requests/s and latency with each one's ratio to switchyard.

use crate::comparison::table;
use crate::configgen::{config_text, Layout, Routing};
use crate::peers::{self, Backends, Peer};
use crate::proxy::ProxyUnderTest;
use crate::result::{ScenarioResult, Verdict};
use crate::scenario::{CompareSpec, Scenario};
use crate::system::free_port;
use crate::upstreams::Upstreams;
use crate::{chart, Context, HarnessError};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_testkit::load::{Load, LoadReport, LoadSpec, Recorder};

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
