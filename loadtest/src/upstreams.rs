//! The scenario's upstreams: sample upstreams in the harness process, on loopback.

use crate::scenario::FaultSpec;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use switchyard_testkit::{Faults, SampleUpstream};

pub struct Upstreams {
    pub by_name: BTreeMap<String, SampleUpstream>,
}

impl Upstreams {
    /// Starts one upstream per entry, each on its own OS-picked port, with its faults.
    pub async fn start(specs: &BTreeMap<String, FaultSpec>) -> std::io::Result<Upstreams> {
        let mut by_name = BTreeMap::new();
        for (name, faults) in specs {
            let upstream =
                SampleUpstream::start(name, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            apply(&upstream, faults).await?;
            by_name.insert(name.clone(), upstream);
        }
        Ok(Upstreams { by_name })
    }

    pub fn addresses(&self) -> BTreeMap<String, SocketAddr> {
        self.by_name
            .iter()
            .map(|(name, upstream)| (name.clone(), upstream.addr))
            .collect()
    }
}

/// Applies a fault change; returns a short description for the timeline.
pub async fn apply(upstream: &SampleUpstream, spec: &FaultSpec) -> std::io::Result<String> {
    let faults = &upstream.faults;
    let mut said = Vec::new();
    if spec.heal {
        faults.heal();
        said.push("healed".to_string());
    }
    if let Some(rate) = spec.error_rate {
        faults.set_error_rate(rate);
        said.push(format!("errors {:.0}%", rate * 100.0));
    }
    if spec.latency.is_some() || spec.jitter.is_some() {
        let latency = spec.latency.map_or(Duration::ZERO, |d| d.0);
        let jitter = spec.jitter.map_or(Duration::ZERO, |d| d.0);
        faults.set_latency(latency, jitter);
        said.push(format!("latency {latency:?}+{jitter:?}"));
    }
    if let Some(fraction) = spec.tail_fraction {
        let tail = spec.tail.map_or(Duration::ZERO, |d| d.0);
        faults.set_tail_latency(fraction, tail);
        said.push(format!("{:.0}% wait +{tail:?}", fraction * 100.0));
    }
    if let Some(chunks) = spec.slow_body_chunks {
        let pause = spec.slow_body_pause.map_or(Duration::ZERO, |d| d.0);
        faults.set_slow_body(chunks, pause);
        said.push(format!("slow body {chunks}x{pause:?}"));
    }
    if let Some(fraction) = spec.wrong_price_paths {
        faults.set_wrong_price_paths(fraction);
        said.push(format!("wrong price on {:.1}% of items", fraction * 100.0));
    }
    if let Some(share) = spec.checkout_success {
        upstream.checkouts.set_success(share);
        said.push(format!("checkout success {:.0}%", share * 100.0));
    }
    let switches = [
        (spec.reset, "reset", Faults::set_reset as fn(&Faults, bool)),
        (spec.stall, "stall", Faults::set_stall),
        (spec.garbage, "garbage", Faults::set_garbage),
    ];
    for (setting, label, set) in switches {
        if let Some(on) = setting {
            set(faults, on);
            said.push(format!("{label} {}", if on { "on" } else { "off" }));
        }
    }
    if spec.crash {
        upstream.crash();
        said.push("crashed".into());
    }
    if spec.restart {
        upstream.restart().await?;
        said.push("restarted".into());
    }
    Ok(format!("{}: {}", upstream.name, said.join(", ")))
}
