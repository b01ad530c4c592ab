//! `switchyard demo --fleet`: three proxies sharing one routing through a NATS server
//! (JetStream, on loopback, its storage in the demo's directory) behind one client load.
//! One `weights` change on one instance is served by all three; the canary turns bad and
//! is cut back on all three with one abort in the fleet's log; NATS stops, every instance
//! keeps serving, and one restarted meanwhile serves from its local cache; NATS comes back
//! and it rejoins. Needs `nats-server` on PATH, and says how to get it when it is missing.

use super::stage::{self, CANARY, SERVICE};
use super::timeline::{percent, Story, BAD_CANARY_ERROR_RATE};
use super::{publish, report, share_of, tell, view, DemoError, DemoOptions, Screen};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::config::Config;
use switchyard::control::command::Change;
use switchyard::control::record::{ChangeKind, Origin};
use switchyard::run::RunningProxy;
use switchyard_testkit::load::{Load, LoadSpec, Recorder};
use switchyard_testkit::nats::{NatsError, NatsServer};

/// Requests per second over the whole fleet, spread evenly over its instances.
const RATE: f64 = 300.0;
const INSTANCES: usize = 3;
const TICK: Duration = Duration::from_millis(50);

/// One instance of the fleet: its config and, while it runs, the proxy.
struct Instance {
    name: String,
    config_path: PathBuf,
    config: Config,
    proxy: RunningProxy,
}

impl Instance {
    fn revision(&self) -> u64 {
        self.proxy.controller.plane.table.load().revision
    }

    fn canary_share(&self) -> f64 {
        share_of(&self.proxy.controller.plane.table.load(), CANARY)
    }
}

/// What the fleet demo does, at fractions of its duration.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Act {
    Weights,
    CanaryTurnsBad,
    StopNats,
    Restart,
    StartNats,
}

fn script(duration: Duration) -> Vec<(Duration, Act)> {
    [
        (0.1, Act::Weights),
        (0.3, Act::CanaryTurnsBad),
        (0.55, Act::StopNats),
        (0.6, Act::Restart),
        (0.8, Act::StartNats),
    ]
    .into_iter()
    .map(|(at, act)| (duration.mul_f64(at), act))
    .collect()
}

/// Runs the fleet demo for `options.duration`; returns where the report was written.
pub async fn run(options: DemoOptions, shards: usize) -> Result<PathBuf, DemoError> {
    let dir = std::env::temp_dir().join(format!("switchyard-demo-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| DemoError::Dir {
        path: dir.clone(),
        source,
    })?;
    let mut nats = NatsServer::find(&dir.join("nats"))?;
    nats.start().await?;
    let upstreams = stage::cast().await?;
    let mut instances = Vec::new();
    for n in 1..=INSTANCES {
        let name = format!("edge-{n}");
        let home = dir.join(&name);
        std::fs::create_dir_all(&home).map_err(|source| DemoError::Dir {
            path: home.clone(),
            source,
        })?;
        let cluster = format!(
            "\n[cluster]\nnats = [\"{}\"]\nname = \"demo\"\ninstance = \"{name}\"\n",
            nats.url()
        );
        let (config_path, config) = stage::write_config(&home, &upstreams, &cluster)?;
        let proxy = RunningProxy::start(config.clone(), &config_path, shards)
            .await
            .map_err(stage::StageError::from)?;
        instances.push(Instance {
            name,
            config_path,
            config,
            proxy,
        });
    }
    let formed = wait_formed(&instances).await?;

    let epoch = Instant::now();
    let recorder = Arc::new(Recorder::new(epoch));
    let script = script(options.duration);
    let restart_at = script
        .iter()
        .find(|(_, act)| *act == Act::Restart)
        .map_or(options.duration, |(at, _)| *at);
    // One client load spread over the three (as an L4 balancer would); the balancer takes
    // the instance being restarted out for a moment.
    let mut loads = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        let mut spec = LoadSpec::new(instance.proxy.addr, 2, Some(RATE / INSTANCES as f64));
        spec.stop = options.duration;
        if i + 1 == INSTANCES {
            let mut after = spec.clone();
            spec.stop = restart_at.saturating_sub(Duration::from_millis(300));
            after.start = restart_at + Duration::from_secs(1);
            loads.push(Load::start(after, recorder.clone())?);
        }
        loads.push(Load::start(spec, recorder.clone())?);
    }
    let screen = Screen::new(instances[0].proxy.addr);
    let mut story = Story::default();
    let names: Vec<String> = instances.iter().map(|i| i.name.clone()).collect();
    tell(
        &screen,
        &mut story,
        Duration::ZERO,
        format!(
            "fleet \"demo\" formed: {} at {}, sharing revision {formed} through NATS at {}; {RATE:.0} req/s spread over the three",
            names.join(", "),
            instances
                .iter()
                .map(|i| i.proxy.addr.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            nats.url()
        ),
    );

    let mut script = script.into_iter().peekable();
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut next_frame = Duration::from_secs(1);
    let mut ticker = tokio::time::interval(TICK);
    loop {
        ticker.tick().await;
        let elapsed = epoch.elapsed();
        while let Some((_, act)) = script.next_if(|(at, _)| *at <= elapsed) {
            let said = perform(act, elapsed, &mut instances, &mut nats, &upstreams, shards).await?;
            tell(&screen, &mut story, elapsed, said.text);
            waiting.extend(said.then);
        }
        let mut still = Vec::new();
        for w in waiting.drain(..) {
            match w.done(&instances, elapsed).await {
                Some(text) => tell(&screen, &mut story, elapsed, text),
                None => still.push(w),
            }
        }
        waiting = still;
        let done = elapsed >= options.duration;
        if elapsed >= next_frame || done {
            let table = instances[0].proxy.controller.plane.table.load();
            screen.show(
                &view::gather(
                    &table,
                    &recorder.report(),
                    elapsed,
                    options.duration,
                    Instant::now(),
                ),
                &story,
            );
            next_frame += Duration::from_secs(1);
        }
        if done {
            break;
        }
    }
    for load in loads {
        load.finished().await;
    }
    let table = instances[0].proxy.controller.plane.table.load();
    let report = report::DemoReport {
        duration_secs: options.duration.as_secs_f64(),
        proxy: format!(
            "{} (its own counts; the client's columns cover all three)",
            names[0]
        ),
        config: instances[0].config_path.clone(),
        final_revision: table.revision,
        versions: report::summarise(&table, &recorder.report()),
        events: story.events,
    };
    let path = publish(&report, options.report, &dir)?;
    for instance in instances {
        instance.proxy.shutdown().await;
    }
    nats.stop();
    Ok(path)
}

/// Waits (bounded) until every instance joined the log and runs the same revision.
async fn wait_formed(instances: &[Instance]) -> Result<u64, DemoError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let revision = instances[0].revision();
        let members = match &instances[0].proxy.controller.fleet {
            Some(fleet) => fleet.status(revision).await.members.len(),
            None => 0,
        };
        if revision > 0
            && members == instances.len()
            && instances.iter().all(|i| i.revision() == revision)
        {
            return Ok(revision);
        }
        if Instant::now() > deadline {
            return Err(DemoError::Nats(NatsError::Other(format!(
                "the fleet did not form within 20s ({members} member(s) at revision {revision})"
            ))));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What an act said, and what the demo then waits to see.
struct Said {
    text: String,
    then: Vec<Waiting>,
}

/// Something the demo waits to see across the fleet after an act.
enum Waiting {
    /// Every instance runs this revision.
    Revision { revision: u64, since: Duration },
    /// Every instance sends the canary nothing.
    CutBack { since: Duration },
    /// An instance's guard recorded the incident of the cutback.
    Incident,
    /// The restarted instance is back among the members.
    Rejoined { since: Duration },
}

impl Waiting {
    async fn done(&self, instances: &[Instance], elapsed: Duration) -> Option<String> {
        match *self {
            Waiting::Revision { revision, since } => instances
                .iter()
                .all(|i| i.revision() >= revision)
                .then(|| {
                    format!(
                        "revision {revision} served by all three instances {:.0} ms after the change",
                        elapsed.saturating_sub(since).as_secs_f64() * 1e3
                    )
                }),
            Waiting::CutBack { since } => {
                if !instances.iter().all(|i| i.canary_share() == 0.0) {
                    return None;
                }
                let aborts = instances[0]
                    .proxy
                    .controller
                    .history(SERVICE, 1000)
                    .await
                    .map_or(0, |h| h.iter().filter(|r| r.kind == ChangeKind::Abort).count());
                Some(format!(
                    "canary cut back to 0% on all three {:.1} s after it turned bad: {aborts} abort revision in the fleet log, applied by every instance",
                    elapsed.saturating_sub(since).as_secs_f64(),
                ))
            }
            Waiting::Incident => instances.iter().find_map(|i| {
                let incident = i.proxy.incidents.list(Some(SERVICE)).into_iter().next()?;
                Some(format!(
                    "the guard on {} decided, judged on the pooled traffic of {INSTANCES} instances: incident #{}: {}",
                    i.name, incident.id, incident.summary
                ))
            }),
            Waiting::Rejoined { since } => {
                let last = instances.last()?;
                let status = last
                    .proxy
                    .controller
                    .fleet
                    .as_ref()?
                    .status(last.revision())
                    .await;
                let joined = status.connected
                    && status.members.len() == instances.len()
                    && status.members.iter().all(|m| m.lag == 0);
                joined.then(|| {
                    format!(
                        "NATS back: {} rejoined the fleet {:.1} s later; {} members at revision {}",
                        last.name,
                        elapsed.saturating_sub(since).as_secs_f64(),
                        status.members.len(),
                        last.revision()
                    )
                })
            }
        }
    }
}

/// Performs one act of the script; what it said.
async fn perform(
    act: Act,
    since: Duration,
    instances: &mut Vec<Instance>,
    nats: &mut NatsServer,
    upstreams: &[switchyard_testkit::SampleUpstream],
    shards: usize,
) -> Result<Said, DemoError> {
    Ok(match act {
        Act::Weights => {
            let first = &instances[0];
            let change = Change::Weights {
                weights: BTreeMap::from([("blue".to_string(), 80), (CANARY.to_string(), 20)]),
            };
            let origin = Origin::new("demo", "more traffic to the canary");
            match first.proxy.controller.apply(SERVICE, change, origin).await {
                Ok(record) => Said {
                    text: format!(
                        "`ctl weights shop blue=80 canary=20` on {}: revision {}",
                        first.name, record.revision
                    ),
                    then: vec![Waiting::Revision {
                        revision: record.revision,
                        since,
                    }],
                },
                Err(err) => Said {
                    text: format!("`ctl weights` on {} refused: {err}", first.name),
                    then: Vec::new(),
                },
            }
        }
        Act::CanaryTurnsBad => {
            if let Some(canary) = upstreams.iter().find(|u| u.name == CANARY) {
                canary.faults.set_error_rate(BAD_CANARY_ERROR_RATE);
            }
            Said {
                text: format!(
                    "canary turns bad: {} of its answers are now 500s (each instance serves a third of its traffic; every guard judges the pooled traffic of the {INSTANCES} instances)",
                    percent(BAD_CANARY_ERROR_RATE)
                ),
                then: vec![Waiting::CutBack { since }, Waiting::Incident],
            }
        }
        Act::StopNats => {
            nats.stop();
            let revisions: Vec<String> =
                instances.iter().map(|i| i.revision().to_string()).collect();
            Said {
                text: format!(
                    "NATS stopped: every instance keeps serving its last routing (revisions {}); operator changes are refused until it is back",
                    revisions.join(", ")
                ),
                then: Vec::new(),
            }
        }
        Act::Restart => {
            let Some(mut last) = instances.pop() else {
                return Err(DemoError::Nats(NatsError::Other(
                    "no instance to restart".into(),
                )));
            };
            // The balancer knows it by its address: it comes back on the same one.
            last.config.listen = last.proxy.addr;
            last.proxy.shutdown().await;
            last.proxy = RunningProxy::start(last.config.clone(), &last.config_path, shards)
                .await
                .map_err(stage::StageError::from)?;
            let said = Said {
                text: format!(
                    "{} restarted while NATS is down: it serves revision {} from its local cache, canary at {}",
                    last.name,
                    last.revision(),
                    percent(last.canary_share())
                ),
                then: Vec::new(),
            };
            instances.push(last);
            said
        }
        Act::StartNats => {
            nats.start().await?;
            Said {
                text: "NATS started again".to_string(),
                then: vec![Waiting::Rejoined { since }],
            }
        }
    })
}
