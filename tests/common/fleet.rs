//! Three real switchyard processes sharing one routing through real `nats-server`s.

use super::nats::{cluster_toml, NatsNode};
use super::{Proxy, Setup};
use std::time::{Duration, Instant};
use switchyard::ctl::client::AdminClient;
use switchyard::sample::SampleUpstream;

/// Instances `edge-1..=edge-3` of fleet "edge", each in its own temp dir.
pub struct Fleet {
    pub setups: Vec<Setup>,
    pub proxies: Vec<Proxy>,
}

impl Fleet {
    /// Starts three instances with `extra` TOML each and waits until they have joined.
    pub async fn start(
        nodes: &[&NatsNode],
        upstreams: &[SampleUpstream],
        weights: &str,
        extra: &str,
    ) -> Fleet {
        let setups: Vec<Setup> = (1..=3)
            .map(|i| {
                let cluster = cluster_toml(nodes, "edge", &format!("edge-{i}"));
                Setup::new(upstreams, weights, &format!("{cluster}\n{extra}"))
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

    /// Every instance's log, for a failure message.
    pub fn logs(&self) -> String {
        self.proxies
            .iter()
            .zip(1..)
            .map(|(p, i)| format!("---- edge-{i}\n{}", p.log_text()))
            .collect()
    }
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
