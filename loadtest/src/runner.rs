//! Running one timeline scenario: upstreams, proxy, load, steps at their times, a
//! progress line, then the checks, the JSON result and the chart.

use crate::configgen::{config_text, Layout, Routing, SERVICE};
use crate::expect::{self, Evidence};
use crate::fleet;
use crate::proxy::{ProxyError, ProxyUnderTest};
use crate::result::{cutbacks, ScenarioResult, StepRecord, Verdict};
use crate::scenario::{LoadStream, Scenario, Step, PROMETHEUS_URL};
use crate::system::{free_port, open_files_limit};
use crate::trickle::Trickle;
use crate::upstreams::{self, Upstreams};
use crate::{chart, incidents, watch, Context, HarnessError};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_testkit::load::{Load, LoadSpec, Recorder};
use switchyard_testkit::nats::NatsServer;
use switchyard_testkit::prometheus::{PrometheusError, PrometheusServer};

const TICK: Duration = Duration::from_millis(50);

pub async fn run(scenario: &Scenario, context: &Context) -> Result<ScenarioResult, HarnessError> {
    let sockets: usize = scenario.load.iter().map(|l| l.connections).sum::<usize>()
        + scenario
            .slow_clients
            .iter()
            .map(|s| s.connections)
            .sum::<usize>();
    let limit = open_files_limit();
    if sockets as u64 + 256 > limit {
        return Err(HarnessError::Setup(format!(
            "{sockets} client connections need more open files than the limit of {limit} allows"
        )));
    }
    let dir = context.run_dir(&scenario.name)?;
    let upstreams = Upstreams::start(&scenario.upstreams)
        .await
        .map_err(|e| HarnessError::Io("cannot start the sample upstreams".into(), e))?;
    let addresses = upstreams.addresses();
    let prometheus = match &scenario.prometheus {
        None => None,
        Some(spec) => {
            let targets: Vec<SocketAddr> = addresses.values().copied().collect();
            match PrometheusServer::find(&dir.join("prometheus"), &targets, spec.scrape.0) {
                Ok(mut server) => {
                    tokio::task::block_in_place(|| server.start())
                        .map_err(|e| HarnessError::Setup(e.to_string()))?;
                    Some(server)
                }
                Err(PrometheusError::Missing) => {
                    let why = format!("a scenario with [prometheus] {}", PrometheusError::Missing);
                    return Ok(ScenarioResult::empty(scenario, Verdict::Blocked(why)));
                }
                Err(err) => return Err(HarnessError::Setup(err.to_string())),
            }
        }
    };
    let extra = match &prometheus {
        Some(server) => scenario.proxy.extra.replace(PROMETHEUS_URL, &server.url()),
        None => scenario.proxy.extra.clone(),
    };
    let instances = scenario.proxy.instances.max(1);
    let nats = match instances {
        1 => None,
        _ => match NatsServer::find(&dir.join("nats")) {
            Ok(mut server) => {
                server
                    .start()
                    .await
                    .map_err(|e| HarnessError::Setup(e.to_string()))?;
                Some(server)
            }
            Err(err) => {
                let why = format!("a fleet scenario {err}");
                return Ok(ScenarioResult::empty(scenario, Verdict::Blocked(why)));
            }
        },
    };
    // One home per instance (the run's directory itself when alone).
    let homes: Vec<PathBuf> = (1..=instances)
        .map(|n| match nats {
            None => dir.clone(),
            Some(_) => dir.join(format!("edge-{n}")),
        })
        .collect();
    let extras: Vec<String> = (1..=instances)
        .map(|n| match &nats {
            None => extra.clone(),
            Some(server) => format!("{extra}\n{}", fleet::cluster_toml(&server.url(), n)),
        })
        .collect();
    let mut layouts = Vec::new();
    for (home, extra) in homes.iter().zip(&extras) {
        std::fs::create_dir_all(home)
            .map_err(|e| HarnessError::Io(home.display().to_string(), e))?;
        let listen = free_port().map_err(|e| HarnessError::Io("no free port".into(), e))?;
        layouts.push(Layout {
            listen,
            dir: home,
            workers: scenario.proxy.workers,
            upstreams: &addresses,
            extra,
            upstream_protocol: scenario.proxy.upstream_protocol.as_deref(),
        });
    }
    let mut routing = Routing::of(scenario);
    let mut proxies = Vec::new();
    for layout in &layouts {
        let config_path = layout.dir.join("switchyard.toml");
        match ProxyUnderTest::start(
            scenario.proxy.mode,
            &context.binary,
            &config_path,
            &config_text(layout, &routing),
        )
        .await
        {
            Ok(proxy) => proxies.push(proxy),
            Err(ProxyError::Refused(why)) => {
                let why = format!("the proxy refused the scenario's config: {why}");
                return Ok(ScenarioResult::empty(scenario, Verdict::Blocked(why)));
            }
            Err(err) => return Err(HarnessError::Proxy(err)),
        }
    }
    let (layout, proxy, listen) = (&layouts[0], &proxies[0], layouts[0].listen);
    let config_path = layout.dir.join("switchyard.toml");
    let sockets: Vec<PathBuf> = layouts.iter().map(|l| l.dir.join("admin.sock")).collect();
    let watched = match nats {
        Some(_) => {
            fleet::wait_formed(&sockets)
                .await
                .map_err(HarnessError::Setup)?;
            Some(fleet::Applied::watch(sockets.clone()))
        }
        None => None,
    };

    let epoch = Instant::now();
    let epoch_wall = std::time::SystemTime::now();
    // With Prometheus, the proxy's own view (weights, guard, analysis runs) is charted.
    let watching = prometheus
        .as_ref()
        .map(|_| watch::start(sockets[0].clone(), SERVICE, epoch));
    let end = epoch + scenario.duration();
    let mut streams = BTreeMap::new();
    let mut loads = Vec::new();
    for stream in &scenario.load {
        let recorder = Arc::new(Recorder::new(epoch));
        // Spread over the instances, as an L4 balancer would.
        for layout in &layouts {
            let mut spec = load_spec(stream, layout.listen, scenario.duration());
            spec.rate = stream.rate.map(|rate| rate / instances as f64);
            spec.connections = stream.connections.div_ceil(instances);
            loads.push(Load::start(spec, recorder.clone()).map_err(HarnessError::Load)?);
        }
        streams.insert(stream.name.clone(), recorder);
    }
    let trickles: Vec<Trickle> = scenario
        .slow_clients
        .iter()
        .map(|slow| {
            let start = epoch + slow.start.map_or(Duration::ZERO, |d| d.0);
            let stop = epoch + slow.stop.map_or(scenario.duration(), |d| d.0);
            Trickle::start(listen, slow.connections, slow.interval.0, start, stop)
        })
        .collect();

    let mut steps = scenario.steps.clone();
    steps.sort_by_key(|s| s.at.0);
    let mut steps = steps.into_iter().peekable();
    let mut records = Vec::new();
    let mut rss_peak: Option<u64> = None;
    let mut progress = Progress::new(scenario);
    let main = scenario.load[0].name.clone();
    loop {
        tokio::time::sleep(TICK).await;
        let elapsed = epoch.elapsed();
        while let Some(step) = steps.next_if(|s| s.at.0 <= elapsed) {
            let record = perform(&step, &upstreams, proxy, layout, &mut routing, elapsed).await;
            progress.note(&record);
            records.push(record);
        }
        if let Some(rss) = proxy.rss_kib() {
            rss_peak = Some(rss_peak.map_or(rss, |peak| peak.max(rss)));
        }
        progress.tick(elapsed, &streams[&main], rss_peak);
        if Instant::now() >= end {
            break;
        }
    }
    for load in loads {
        load.finished().await;
    }
    let mut slow_clients = Vec::new();
    for trickle in trickles {
        slow_clients.push(trickle.finished().await);
    }
    progress.done();
    let service_watch = watching.map(|(watching, stop)| {
        drop(stop);
        watching.take()
    });
    let rss_end = proxy.rss_kib();
    let (revisions, applied) = match watched {
        Some((applied, stop)) => {
            drop(stop);
            (applied.marks(epoch, instances), Some(applied))
        }
        None => (proxy.revisions(epoch), None),
    };
    for proxy in proxies {
        proxy.stop().await;
    }
    drop(nats);
    drop(prometheus);
    drop(upstreams);
    // Each cutback is in the incident log of the instance whose guard (or analysis) decided.
    let (mut guard_cutbacks, mut analysis_aborts) = (Vec::new(), Vec::new());
    for layout in &layouts {
        let found = incidents::read(&layout.dir.join("state"), epoch_wall, &revisions);
        guard_cutbacks.extend(found.guard);
        analysis_aborts.extend(found.analysis);
    }
    guard_cutbacks.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
    // A cutback another guard also recorded (pooled judgment, the same moment) once.
    guard_cutbacks.dedup_by(|a, b| a.revision == b.revision);
    analysis_aborts.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
    let fleet_cutbacks = applied.map_or_else(Vec::new, |applied| {
        applied.cutbacks(epoch, instances, guard_cutbacks.iter().map(|c| c.revision))
    });

    let loads: BTreeMap<_, _> = streams
        .iter()
        .map(|(name, recorder)| (name.clone(), recorder.report()))
        .collect();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let checks: Vec<_> = scenario
        .expectations
        .iter()
        .map(|e| {
            expect::check(
                e,
                &Evidence {
                    loads: &loads,
                    default_load: &main,
                    rss_peak_mib: rss_peak.map(mib),
                    guard_cutbacks: &guard_cutbacks,
                    analysis_aborts: &analysis_aborts,
                    watch: service_watch.as_ref(),
                    steps: &records,
                },
            )
        })
        .collect();
    let ctl_missing = records
        .iter()
        .find(|r| !r.ok && r.what.starts_with("ctl ") && ctl_unavailable(&r.outcome));
    let verdict = match ctl_missing {
        Some(record) => Verdict::Blocked(format!(
            "`switchyard {}` failed: {}",
            record.what, record.outcome
        )),
        None if checks.iter().all(|c| c.pass) && records.iter().all(|r| r.ok) => Verdict::Pass,
        None => Verdict::Fail,
    };
    let duration_secs = scenario.duration().as_secs_f64();
    let mut result = ScenarioResult::empty(scenario, verdict);
    result.duration_secs = duration_secs;
    result.rss_peak_mib = rss_peak.map(mib);
    result.rss_end_mib = rss_end.map(mib);
    result.revisions = revisions;
    result.steps = records;
    result.cutbacks = cutbacks(&loads[&main], duration_secs);
    result.guard_cutbacks = guard_cutbacks;
    result.analysis_aborts = analysis_aborts;
    result.watch = service_watch;
    result.fleet_cutbacks = fleet_cutbacks;
    result.loads = loads;
    result.slow_clients = slow_clients;
    result.checks = checks;
    let svg_path = dir.join("chart.svg");
    let json_path = dir.join("result.json");
    result.files = vec![json_path.clone(), svg_path.clone(), config_path];
    let svg = chart::render(&result, &result.loads[&main]);
    context.write(&svg_path, &svg)?;
    let json = serde_json::to_string_pretty(&result).unwrap_or_default();
    context.write(&json_path, &json)?;
    Ok(result)
}

/// A `ctl` that does not exist yet, rather than one that said no.
fn ctl_unavailable(outcome: &str) -> bool {
    [
        "unrecognized subcommand",
        "No such file",
        "Connection refused",
        "cannot connect",
    ]
    .iter()
    .any(|sign| outcome.contains(sign))
}

fn load_spec(stream: &LoadStream, target: SocketAddr, duration: Duration) -> LoadSpec {
    let mut spec = LoadSpec::new(target, stream.connections, stream.rate);
    spec.protocol = stream.protocol;
    spec.path = stream.path.clone();
    spec.paths = stream.paths;
    spec.headers = stream
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v.parse().ok()?)))
        .collect();
    spec.start = stream.start.map_or(Duration::ZERO, |d| d.0);
    spec.stop = stream.stop.map_or(duration, |d| d.0);
    spec.ramp = stream.ramp.map_or(Duration::ZERO, |d| d.0);
    if let Some(timeout) = stream.timeout {
        spec.timeout = timeout.0;
    }
    spec
}

async fn perform(
    step: &Step,
    upstreams: &Upstreams,
    proxy: &ProxyUnderTest,
    layout: &Layout<'_>,
    routing: &mut Routing,
    elapsed: Duration,
) -> StepRecord {
    let (what, outcome) = if let (Some(faults), Some(name)) = (&step.faults, &step.upstream) {
        match upstreams.by_name.get(name) {
            Some(upstream) => match upstreams::apply(upstream, faults).await {
                Ok(said) => (said, Ok(String::new())),
                Err(err) => (format!("{name}: faults"), Err(err.to_string())),
            },
            None => (format!("{name}: faults"), Err("no such upstream".into())),
        }
    } else if let Some(args) = &step.ctl {
        (format!("ctl {}", args.join(" ")), proxy.ctl(args).await)
    } else if let Some(change) = &step.reload {
        if let Some(stable) = &change.stable {
            routing.stable = stable.clone();
        }
        if let Some(weights) = &change.weights {
            routing.weights = weights.clone();
        }
        if let Some(extra) = &change.extra {
            routing.extra = extra.clone();
        }
        let weights: Vec<String> = routing
            .weights
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        (
            format!(
                "reload: stable {} {}{}",
                routing.stable,
                weights.join(" "),
                if change.extra.is_some() {
                    " (config added)"
                } else {
                    ""
                }
            ),
            proxy.reload(&config_text(layout, routing)).await,
        )
    } else {
        ("nothing".into(), Ok(String::new()))
    };
    StepRecord {
        at_secs: elapsed.as_secs_f64(),
        what,
        ok: outcome.is_ok(),
        outcome: outcome.unwrap_or_else(|err| err),
    }
}

/// The progress line on stderr: rewritten in place on a terminal, else every 5 s.
struct Progress {
    live: bool,
    total: Duration,
    last: Option<u64>,
}

impl Progress {
    fn new(scenario: &Scenario) -> Progress {
        Progress {
            live: std::io::stderr().is_terminal(),
            total: scenario.duration(),
            last: None,
        }
    }

    fn note(&self, record: &StepRecord) {
        let mark = if record.ok { "ok" } else { "FAILED" };
        let clear = if self.live { "\r\x1b[K" } else { "" };
        eprintln!(
            "{clear}  [{:5.1}s] {} ({mark}{}{})",
            record.at_secs,
            record.what,
            if record.outcome.is_empty() { "" } else { ": " },
            record.outcome
        );
    }

    fn tick(&mut self, elapsed: Duration, main: &Recorder, rss_kib: Option<u64>) {
        let second = elapsed.as_secs();
        let every = if self.live { 1 } else { 5 };
        if second == 0 || self.last == Some(second) || !second.is_multiple_of(every) {
            return;
        }
        self.last = Some(second);
        let report = main.report();
        let s = (second - 1) as usize;
        let total = report.requests_in_second(s);
        let mut line = format!("  [{second:>3}s/{}s] {total} req/s", self.total.as_secs());
        for version in &report.versions {
            let this = version.second(s);
            line.push_str(&format!(
                " | {} {:.0}% err {} p99 {:.1}ms",
                version.name,
                100.0 * this.requests as f64 / total.max(1) as f64,
                this.errors,
                this.p99_ms
            ));
        }
        if let Some(rss) = rss_kib {
            line.push_str(&format!(" | proxy RSS {:.0} MiB", rss as f64 / 1024.0));
        }
        if self.live {
            eprint!("\r\x1b[K{line}");
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("{line}");
        }
    }

    fn done(&self) {
        if self.live {
            eprintln!();
        }
    }
}
