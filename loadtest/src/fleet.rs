//! Fleet scenarios (`[proxy] instances = 3`): a NATS server with JetStream started by the
//! harness on loopback, and that many switchyard instances sharing one routing through it,
//! the load spread evenly over them. Each instance's routing revision is watched through
//! its admin socket, so the run knows when the whole fleet had applied a change (the
//! fleet-wide cutback time).

use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use switchyard::ctl::client::AdminClient;

/// How often each instance's revision is read.
const POLL: Duration = Duration::from_millis(20);

/// The `[cluster]` section of instance `n` (1-based) of fleet "loadtest".
pub fn cluster_toml(nats_url: &str, n: usize) -> String {
    format!("\n[cluster]\nnats = [\"{nats_url}\"]\nname = \"loadtest\"\ninstance = \"edge-{n}\"\n")
}

/// When each instance first ran each revision.
#[derive(Clone, Default)]
pub struct Applied(Arc<Mutex<Vec<(usize, u64, Instant)>>>);

impl Applied {
    /// Reads the revision of every instance (by admin socket) until `stop` is dropped.
    pub fn watch(sockets: Vec<PathBuf>) -> (Applied, tokio::sync::oneshot::Sender<()>) {
        let applied = Applied::default();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let seen = applied.clone();
        tokio::spawn(async move {
            let clients: Vec<AdminClient> = sockets.iter().map(AdminClient::new).collect();
            let mut last = vec![0u64; clients.len()];
            loop {
                for (i, client) in clients.iter().enumerate() {
                    if let Ok(status) = client.status().await {
                        if status.revision > last[i] {
                            last[i] = status.revision;
                            seen.lock().push((i, status.revision, Instant::now()));
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = &mut stopped => return,
                }
            }
        });
        (applied, stop)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(usize, u64, Instant)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When instance `i` first ran `revision` or a later one.
    fn reached(&self, i: usize, revision: u64) -> Option<Instant> {
        self.lock()
            .iter()
            .filter(|(at, r, _)| *at == i && *r >= revision)
            .map(|(_, _, when)| *when)
            .min()
    }

    /// Each revision, timed from `epoch` by the first instance that ran it.
    pub fn marks(&self, epoch: Instant, instances: usize) -> Vec<crate::proxy::RevisionMark> {
        let mut revisions: Vec<u64> = self.lock().iter().map(|(_, r, _)| *r).collect();
        revisions.sort_unstable();
        revisions.dedup();
        revisions
            .into_iter()
            .filter_map(|revision| {
                let reached: Vec<Instant> = (0..instances)
                    .filter_map(|i| self.reached(i, revision))
                    .collect();
                let first = *reached.iter().min()?;
                let note = match (reached.len() == instances, reached.iter().max()) {
                    (true, Some(last)) => format!(
                        "on all {instances} after {:.0} ms",
                        last.duration_since(first).as_secs_f64() * 1e3
                    ),
                    _ => format!("on {} of {instances}", reached.len()),
                };
                Some(crate::proxy::RevisionMark {
                    at_secs: first.saturating_duration_since(epoch).as_secs_f64(),
                    revision,
                    note,
                })
            })
            .collect()
    }

    /// For each cutback revision: when the first and the last instance ran it.
    pub fn cutbacks(
        &self,
        epoch: Instant,
        instances: usize,
        revisions: impl IntoIterator<Item = u64>,
    ) -> Vec<FleetCutback> {
        revisions
            .into_iter()
            .filter_map(|revision| {
                let reached: Vec<Instant> = (0..instances)
                    .map(|i| self.reached(i, revision))
                    .collect::<Option<_>>()?;
                let secs = |t: &Instant| t.saturating_duration_since(epoch).as_secs_f64();
                Some(FleetCutback {
                    revision,
                    first_secs: reached.iter().map(secs).fold(f64::INFINITY, f64::min),
                    all_secs: reached.iter().map(secs).fold(0.0, f64::max),
                })
            })
            .collect()
    }
}

/// A cutback as the fleet applied it.
#[derive(Debug, Clone, Serialize)]
pub struct FleetCutback {
    pub revision: u64,
    /// Seconds into the run when the first instance (the one whose guard decided) and the
    /// last instance of the fleet ran the cutback's revision.
    pub first_secs: f64,
    pub all_secs: f64,
}

/// Waits (bounded) until every instance runs the same revision, past the first: the
/// fleet has formed (each joined the log and applied what it holds).
pub async fn wait_formed(sockets: &[PathBuf]) -> Result<(), String> {
    let clients: Vec<AdminClient> = sockets.iter().map(AdminClient::new).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut revisions = Vec::new();
        for client in &clients {
            revisions.push(client.status().await.map_or(0, |s| s.revision));
        }
        if revisions[0] > 0 && revisions.iter().all(|&r| r == revisions[0]) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the fleet did not form within 30 s (revisions {revisions:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
