//! Three real switchyard processes of one fleet ("edge") over real `nats-server` processes.

use super::nats::{cluster_toml, NatsNode};
use super::{Proxy, Setup};
use std::time::{Duration, Instant};
use switchyard::ctl::client::AdminClient;
use switchyard_testkit::SampleUpstream;

/// Instances of fleet "edge" (edge-1, edge-2, ...) in their own temp dirs, started and joined.
pub struct Fleet {
    pub setups: Vec<Setup>,
    pub proxies: Vec<Proxy>,
}

impl Fleet {
    /// Three instances, `weights` as the config's starting routing, `extra(i)` more TOML
    /// for instance `i` (0-based), written inside `[admin]` (start it with a table header
    /// for anything else).
    pub async fn start_with(
        nodes: &[&NatsNode],
        upstreams: &[SampleUpstream],
        weights: &str,
        extra: impl Fn(usize) -> String,
    ) -> Fleet {
        Fleet::start_with_cluster(nodes, upstreams, weights, extra, |_| String::new()).await
    }

    /// Like `start_with`, with `cluster(i)` more keys in instance `i`'s `[cluster]`.
    pub async fn start_with_cluster(
        nodes: &[&NatsNode],
        upstreams: &[SampleUpstream],
        weights: &str,
        extra: impl Fn(usize) -> String,
        cluster: impl Fn(usize) -> String,
    ) -> Fleet {
        let setups: Vec<Setup> = (0..3)
            .map(|i| {
                let section = cluster_toml(nodes, "edge", &format!("edge-{}", i + 1));
                Setup::new(
                    upstreams,
                    weights,
                    &format!("{}{section}{}\n", extra(i), cluster(i)),
                )
            })
            .collect();
        let mut proxies = Vec::new();
        for setup in &setups {
            proxies.push(Proxy::start(setup, &[]).await);
        }
        let fleet = Fleet { setups, proxies };
        fleet.wait_members(3).await;
        fleet
    }

    pub fn client(&self, i: usize) -> AdminClient {
        self.setups[i].client()
    }

    /// Waits (bounded) until instance 0 lists `n` members, all at the log's revision.
    pub async fn wait_members(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(fleet) = self.client(0).fleet().await {
                let settled = fleet.log_revision.is_some()
                    && fleet.members.len() == n
                    && fleet.members.iter().all(|m| m.lag == 0);
                if settled {
                    return;
                }
                assert!(Instant::now() < deadline, "fleet did not settle: {fleet:?}");
            }
            assert!(Instant::now() < deadline, "fleet did not answer");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until instance `i` runs at least `revision` (bounded); returns when.
    pub async fn wait_revision_on(&self, i: usize, revision: u64) -> Instant {
        // Generous: a member whose NATS node was killed reconnects with async-nats's
        // backoff, which took over 10 s on a loaded CI machine.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.client(i).status().await.unwrap();
            if status.revision >= revision {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "instance {i} stuck at {} (wanted {revision})",
                status.revision
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }

    /// Every instance's log, for a failure message.
    pub fn logs(&self) -> String {
        self.proxies
            .iter()
            .enumerate()
            .map(|(i, p)| format!("---- edge-{}\n{}", i + 1, p.log_text()))
            .collect()
    }
}

/// A counter from an instance's `/metrics` (0 when absent).
pub async fn metric(client: &AdminClient, line_start: &str) -> f64 {
    let (_, body) = super::admin_raw_on(client, http::Method::GET, "/metrics", "").await;
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// True once `addr` serves only `version` on ten requests in a row (bounded by `limit`).
pub async fn serves_only(addr: std::net::SocketAddr, version: &str, limit: Duration) -> bool {
    let http = super::client();
    let deadline = Instant::now() + limit;
    loop {
        let mut all = true;
        for _ in 0..10 {
            let reply = super::get(&http, addr, "/", &[]).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            all &= reply.version.as_deref() == Some(version);
        }
        if all {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The fleet log's lines, in order, byte for byte as NATS holds them.
pub async fn log_bytes(nats: &NatsNode) -> Vec<u8> {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let trust = switchyard::fleet::trust::Trust::load(None).unwrap();
    let log = switchyard::fleet::RevisionLog::new(client, "edge", Default::default(), trust);
    let mut bytes = Vec::new();
    for sequence in 1..=log.last().await.unwrap() {
        bytes.extend_from_slice(&log.read(sequence).await.unwrap().payload);
        if bytes.last() != Some(&b'\n') {
            bytes.push(b'\n');
        }
    }
    bytes
}
