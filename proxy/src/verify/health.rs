//! Active health checks: each endpoint of a service with a `[health]` section is asked
//! for `path` every `interval` on a connection of its own. `fall` failures in a row take
//! it out of the rotation, `rise` successes bring it back; each change is logged once.
//! The endpoints of a service are checked at evenly spread moments of the interval, and
//! nothing here touches the request path beyond one flag on the endpoint.

use super::request::{self, Probe};
use crate::config::{Config, HealthSettings};
use crate::control::Controller;
use crate::routing::{RoutingTable, VersionRoute};
use crate::upstream::connect::Dial;
use crate::upstream::endpoint::Endpoint;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{interval_at, timeout, Instant, MissedTickBehavior};

/// Consecutive results turned into up or down, with `fall`/`rise` as hysteresis, so an
/// endpoint that fails every other check never changes state (and never floods the log).
#[derive(Debug, Clone)]
pub struct Hysteresis {
    fall: u32,
    rise: u32,
    up: bool,
    /// Results in a row that disagree with the current state.
    streak: u32,
}

impl Hysteresis {
    pub fn new(fall: u32, rise: u32, up: bool) -> Hysteresis {
        Hysteresis {
            fall,
            rise,
            up,
            streak: 0,
        }
    }

    /// Takes one result; the new state when it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        Some(ok)
    }
}

/// What the checks last found, per endpoint: for status, `/metrics` and the page.
#[derive(Debug, Default)]
pub struct HealthBoard {
    endpoints: Mutex<BTreeMap<SocketAddr, EndpointHealth>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EndpointHealth {
    pub service: String,
    pub version: String,
    pub up: bool,
    pub checks: u64,
    pub failures: u64,
    /// Changes of state (down or up) since the checker started.
    pub changes: u64,
    /// What the last failed check got.
    pub last_failure: Option<String>,
}

impl HealthBoard {
    pub fn snapshot(&self) -> BTreeMap<SocketAddr, EndpointHealth> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SocketAddr, EndpointHealth>> {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, watched: &Watched, result: &Result<(), String>, change: Option<bool>) {
        let mut endpoints = self.lock();
        let entry = endpoints
            .entry(watched.endpoint.addr)
            .or_insert_with(|| EndpointHealth {
                service: watched.service.clone(),
                version: watched.version.clone(),
                up: !watched.endpoint.is_checked_down(),
                ..EndpointHealth::default()
            });
        entry.checks += 1;
        if let Err(got) = result {
            entry.failures += 1;
            entry.last_failure = Some(got.clone());
        }
        if let Some(up) = change {
            entry.up = up;
            entry.changes += 1;
        }
    }

    fn forget(&self, addr: SocketAddr) {
        self.lock().remove(&addr);
    }
}

/// An endpoint under active checks, and where it belongs.
#[derive(Debug, Clone)]
pub struct Watched {
    pub endpoint: Arc<Endpoint>,
    pub service: String,
    pub version: String,
    /// The Host the check sends.
    pub host: String,
    /// The check speaks HTTP/2, as the version does.
    pub http2: bool,
}

/// Checks one endpoint for ever: the first check `offset` after the start, then one
/// every interval. `check` is one attempt; it gets `settings.timeout` to answer.
pub async fn watch_endpoint<F, Fut>(
    watched: Watched,
    settings: HealthSettings,
    offset: Duration,
    board: Arc<HealthBoard>,
    mut check: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let endpoint = &watched.endpoint;
    let mut state = Hysteresis::new(settings.fall, settings.rise, !endpoint.is_checked_down());
    let mut ticks = interval_at(Instant::now() + offset, settings.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let result = match timeout(settings.timeout, check()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", settings.timeout)),
        };
        let change = state.record(result.is_ok());
        board.record(&watched, &result, change);
        match change {
            Some(false) => {
                endpoint.set_checked_up(false);
                tracing::warn!(
                    service = %watched.service,
                    version = %watched.version,
                    endpoint = %endpoint.addr,
                    got = result.err().unwrap_or_default(),
                    "endpoint down: {} health checks failed in a row; out of the rotation",
                    settings.fall
                );
            }
            Some(true) => {
                endpoint.set_checked_up(true);
                tracing::info!(
                    service = %watched.service,
                    version = %watched.version,
                    endpoint = %endpoint.addr,
                    "endpoint up: {} health checks passed in a row; back in the rotation",
                    settings.rise
                );
            }
            None => {}
        }
    }
}

/// One health check over HTTP: `path` answered with an expected status.
pub async fn http_check(
    dial: &Dial,
    http2: bool,
    host: &str,
    settings: &HealthSettings,
) -> Result<(), String> {
    let probe = Probe {
        method: &http::Method::GET,
        path: &settings.path,
        host,
        headers: &[],
        body: "",
        body_limit: 0,
    };
    let reply = request::send(dial, http2, &probe, settings.timeout)
        .await
        .map_err(|err| err.to_string())?;
    match settings.expect.accepts(reply.status) {
        true => Ok(()),
        false => Err(format!(
            "status {} (expected {})",
            reply.status, settings.expect
        )),
    }
}

/// One checker task per endpoint under active checks, started and stopped as tables
/// change: an endpoint no longer checked goes back to passive signals only.
#[derive(Default)]
pub struct Checkers {
    running: HashMap<SocketAddr, Running>,
}

struct Running {
    settings: HealthSettings,
    endpoint: Arc<Endpoint>,
    task: JoinHandle<()>,
}

impl Checkers {
    /// Brings the running checkers in line with `config` and `table`.
    pub fn reconcile(&mut self, config: &Config, table: &RoutingTable, board: &Arc<HealthBoard>) {
        let wanted = wanted(config, table);
        self.running.retain(|addr, running| {
            let keep = wanted.get(addr).is_some_and(|(w, settings, _)| {
                *settings == running.settings && Arc::ptr_eq(&w.endpoint, &running.endpoint)
            });
            if !keep {
                running.task.abort();
                running.endpoint.set_checked_up(true);
                board.forget(*addr);
            }
            keep
        });
        for (addr, (watched, settings, offset)) in wanted {
            if self.running.contains_key(&addr) {
                continue;
            }
            let endpoint = watched.endpoint.clone();
            let (host, check_settings) = (watched.host.clone(), settings.clone());
            let (dial, http2) = (endpoint.dial(), watched.http2);
            let task = tokio::spawn(watch_endpoint(
                watched,
                settings.clone(),
                offset,
                board.clone(),
                move || {
                    let (host, settings, dial) =
                        (host.clone(), check_settings.clone(), dial.clone());
                    async move { http_check(&dial, http2, &host, &settings).await }
                },
            ));
            self.running.insert(
                addr,
                Running {
                    settings,
                    endpoint,
                    task,
                },
            );
        }
    }

    pub fn stop_all(&mut self) {
        for (_, running) in self.running.drain() {
            running.task.abort();
        }
    }
}

/// Every endpoint to check, with its settings and its moment in the interval. An address
/// shared by two services is checked once, with the settings of the first.
fn wanted(
    config: &Config,
    table: &RoutingTable,
) -> HashMap<SocketAddr, (Watched, HealthSettings, Duration)> {
    let mut wanted = HashMap::new();
    for route in table.services() {
        let Some(service) = config.service(&route.name) else {
            continue;
        };
        let Some(settings) = &service.verify.health else {
            continue;
        };
        let mut endpoints: Vec<(&VersionRoute, &Arc<Endpoint>)> = route
            .versions
            .iter()
            .flat_map(|v| v.endpoints.iter().map(move |e| (v, e)))
            .collect();
        endpoints.sort_by_key(|(_, e)| e.addr);
        endpoints.dedup_by_key(|(_, e)| e.addr);
        let count = endpoints.len().max(1) as u32;
        for (index, (version, endpoint)) in endpoints.into_iter().enumerate() {
            let offset = settings.interval * index as u32 / count;
            let host = service
                .hosts
                .first()
                .cloned()
                .unwrap_or_else(|| endpoint.addr.to_string());
            let watched = Watched {
                endpoint: endpoint.clone(),
                service: service.name.clone(),
                version: version.name.to_string(),
                host,
                http2: version.protocol.is_http2(),
            };
            wanted
                .entry(endpoint.addr)
                .or_insert((watched, settings.clone(), offset));
        }
    }
    wanted
}

/// How often the table is looked at for endpoints that came or went.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// Keeps the checkers in line with the live table and config until `stop`.
pub async fn run(
    controller: Arc<Controller>,
    board: Arc<HealthBoard>,
    mut stop: watch::Receiver<bool>,
) {
    let mut checkers = Checkers::default();
    let mut seen: Option<Arc<RoutingTable>> = None;
    loop {
        let current = controller.plane.table.load_full();
        if !seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &current)) {
            checkers.reconcile(&controller.config().await, &current, &board);
            seen = Some(current);
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            _ = stop.changed() => break,
        }
    }
    checkers.stop_all();
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
