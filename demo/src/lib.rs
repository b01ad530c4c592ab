//! `switchyard demo`: the newcomer's first command. Starts sample upstreams (blue, green,
//! canary) on loopback, the proxy in front of them and steady load; shows live weights,
//! rates, errors and latency per version; turns the canary bad part-way and shows what
//! the proxy does about it; exits by itself and leaves a report.

mod fleet;
mod report;
mod screen;
mod stage;
mod timeline;
mod view;

use report::DemoReport;
pub(crate) use screen::Screen;
use stage::{Stage, StageError, CANARY};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::control::command::Change;
use switchyard::control::record::Origin;
use switchyard::control::RoutingControl;
use switchyard::routing::RoutingTable;
use switchyard::verify::gate::Verified;
use switchyard_testkit::load::{Load, LoadError, LoadSpec, Recorder};
use timeline::{percent, Action, RevisionWatch, Story};

/// The demo's client: a few keep-alive connections at a steady, open-loop rate.
const CONNECTIONS: usize = 4;
const RATE: f64 = 300.0;
/// How often the demo looks at the proxy (the screen is redrawn once a second).
const TICK: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub duration: Duration,
    /// Where to write the JSON report; default: the demo's temporary directory.
    pub report: Option<PathBuf>,
    /// Three proxies in a fleet through a NATS server (`demo --fleet`).
    pub fleet: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot create the demo directory {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("cannot start the demo load: {0}")]
    Load(#[from] LoadError),
    #[error("cannot write the report {}: {source}", path.display())]
    Report {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--fleet: {0}")]
    Nats(#[from] switchyard_testkit::nats::NatsError),
}

/// Runs the demo for `options.duration`; returns where the report was written.
pub async fn run(options: DemoOptions, shards: usize) -> Result<PathBuf, DemoError> {
    if options.fleet {
        return fleet::run(options, shards).await;
    }
    let dir = std::env::temp_dir().join(format!("switchyard-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| DemoError::Dir {
        path: dir.clone(),
        source,
    })?;
    let stage = Stage::start(&dir, shards).await?;
    let epoch = Instant::now();
    let recorder = Arc::new(Recorder::new(epoch));
    let mut spec = LoadSpec::new(stage.proxy.addr, CONNECTIONS, Some(RATE));
    spec.stop = options.duration;
    let load = Load::start(spec, recorder.clone())?;

    let screen = Screen::new(stage.proxy.addr);
    let mut story = Story::default();
    tell(
        &screen,
        &mut story,
        Duration::ZERO,
        format!(
            "proxy up at {}, {RATE:.0} req/s of steady load; config: {}",
            stage.proxy.addr,
            stage.config_path.display()
        ),
    );
    let proxy = &stage.proxy;
    let plane = proxy.controller.plane.clone();
    let mut last_verdict = String::new();
    let mut incident_told = false;
    let mut validation_told = false;
    let mut watch = RevisionWatch::default();
    let mut script = timeline::script(options.duration).into_iter().peekable();
    let mut canary_bad_since = None;
    let mut cut_back = false;
    let mut next_frame = Duration::from_secs(1);
    let mut ticker = tokio::time::interval(TICK);
    loop {
        ticker.tick().await;
        let elapsed = epoch.elapsed();
        while let Some(step) = script.next_if(|step| step.at <= elapsed) {
            match step.action {
                Action::SwitchToBrokenGreen => {
                    let said = switch_to_broken_green(&stage).await;
                    tell(&screen, &mut story, elapsed, said);
                }
                Action::CanaryTurnsBad { error_rate } => {
                    if let Some(canary) = stage.upstream(CANARY) {
                        canary.faults.set_error_rate(error_rate);
                    }
                    canary_bad_since = Some(elapsed);
                    tell(
                        &screen,
                        &mut story,
                        elapsed,
                        format!(
                            "canary turns bad: {} of its answers are now 500s",
                            percent(error_rate)
                        ),
                    );
                }
            }
        }
        let table = plane.table.load();
        for revision in watch.look(&proxy.controller.revisions(stage::SERVICE)) {
            tell(&screen, &mut story, elapsed, revision);
        }
        // The guard's verdict on the canary, whenever it changes.
        if let Some(verdict) = proxy.board.get(stage::SERVICE) {
            let said = format!(
                "guard: {} is {} ({})",
                verdict.version, verdict.verdict, verdict.detail
            );
            if said != last_verdict {
                tell(&screen, &mut story, elapsed, said.clone());
                last_verdict = said;
            }
        }
        if let (true, false) = (incident_told, validation_told) {
            let incidents = proxy.incidents.list(Some(stage::SERVICE));
            if let Some(checks) = incidents.first().and_then(|i| i.checks.as_ref()) {
                validation_told = true;
                tell(
                    &screen,
                    &mut story,
                    elapsed,
                    format!("validation after the cutback: {}", checks.summary()),
                );
            }
        }
        if !incident_told {
            if let Some(incident) = proxy.incidents.list(Some(stage::SERVICE)).first() {
                incident_told = true;
                tell(
                    &screen,
                    &mut story,
                    elapsed,
                    format!(
                        "incident #{} recorded: {}; users saw {} failed requests, {} were saved by a retry on {}; restored by revision {}",
                        incident.id, incident.summary, incident.users.failed, incident.users.saved, incident.stable, incident.restored_by
                    ),
                );
            }
        }
        // Whoever cuts the canary back (the guard, an operator), the demo says when.
        if let (Some(since), false) = (canary_bad_since, cut_back) {
            if share_of(&table, CANARY) == 0.0 {
                cut_back = true;
                let after = elapsed.saturating_sub(since).as_secs_f64();
                tell(
                    &screen,
                    &mut story,
                    elapsed,
                    format!("canary cut back to 0% {after:.1} s after it turned bad"),
                );
            }
        }
        let done = elapsed >= options.duration;
        if elapsed >= next_frame || done {
            let client = recorder.report();
            let now = Instant::now();
            screen.show(
                &view::gather(&table, &client, elapsed, options.duration, now),
                &story,
            );
            next_frame += Duration::from_secs(1);
        }
        if done {
            break;
        }
    }
    load.finished().await;

    let table = plane.table.load();
    let client = recorder.report();
    if let (Some(_), false) = (canary_bad_since, cut_back) {
        let errors = client.version(CANARY).map_or(0, |v| v.errors);
        tell(
            &screen,
            &mut story,
            epoch.elapsed(),
            format!(
                "no cutback happened: the canary still has {} of the traffic; clients got {errors} errors from it",
                percent(share_of(&table, CANARY))
            ),
        );
    }
    let report = DemoReport {
        duration_secs: options.duration.as_secs_f64(),
        proxy: stage.proxy.addr.to_string(),
        config: stage.config_path.clone(),
        final_revision: table.revision,
        versions: report::summarise(&table, &client),
        events: story.events,
    };
    let path = publish(&report, options.report, &dir)?;
    stage.proxy.shutdown().await;
    Ok(path)
}

/// Breaks green's home page and asks to switch all traffic to it, as an operator would:
/// the gate runs green's checks and refuses; what it said.
async fn switch_to_broken_green(stage: &Stage) -> String {
    let Some(green) = stage.upstream(stage::GREEN) else {
        return "no green upstream to switch to".to_string();
    };
    green.faults.break_path("/");
    let proxy = &stage.proxy;
    let verified = Verified {
        control: proxy.controller.clone(),
        plane: proxy.controller.plane.clone(),
        verifier: proxy.verifier.clone(),
        incidents: proxy.incidents.clone(),
    };
    let switch = Change::Switch {
        version: stage::GREEN.to_string(),
    };
    let origin = Origin::new("demo", "try green, whose home page was just broken");
    let said = match verified.change(stage::SERVICE, switch, origin).await {
        Err(refused) => {
            format!("`switch shop green` refused by its checks, routing unchanged: {refused}")
        }
        Ok(record) => format!(
            "`switch shop green` went through (revision {}): its checks passed",
            record.revision
        ),
    };
    green.faults.heal();
    said
}

/// Adds to the story and, on plain output, prints it at once.
/// Prints the report and writes it to `chosen`, or to `report.json` in the demo's folder.
fn publish(
    report: &DemoReport,
    chosen: Option<PathBuf>,
    dir: &std::path::Path,
) -> Result<PathBuf, DemoError> {
    println!("{}", report::render(report));
    let path = chosen.unwrap_or_else(|| dir.join("report.json"));
    report::write(report, &path).map_err(|source| DemoError::Report {
        path: path.clone(),
        source,
    })?;
    println!("Report written to {}", path.display());
    Ok(path)
}

fn tell(screen: &Screen, story: &mut Story, at: Duration, text: String) {
    screen.event(story.tell(at, text));
}

/// A version's share of traffic in the live table (0 when it is not there).
fn share_of(table: &RoutingTable, name: &str) -> f64 {
    table
        .services()
        .iter()
        .flat_map(|service| {
            service
                .versions
                .iter()
                .position(|v| &*v.name == name)
                .map(|index| service.share_of(index))
        })
        .sum()
}
