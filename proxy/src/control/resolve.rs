//! Endpoint names are looked up when a config is applied (`resolve_names`: at start and at
//! every reload; reading and `check` never do), and again every `proxy.resolve_every`, so upstreams that move
//! (containers recreated, DNS-based discovery) are followed without a reload. A changed
//! address set rebuilds the table in one swap; that is topology, not routing, so it is
//! logged but is no revision. A name that does not resolve keeps its last addresses: a DNS
//! blip never empties a version.

use super::writer::{Request, Resolved};
use super::Controller;
use crate::config::endpoint::{self, Resolver};
use crate::config::{Config, ConfigError};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a refresh waits for its lookups before keeping the last addresses.
const LOOKUP_LIMIT: Duration = Duration::from_secs(10);

/// The addresses of one endpoint entry, looked up (names may block: call it off the
/// runtime's threads), or what is wrong with it (to follow its text).
pub fn lookup(text: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let (host, port) = endpoint::host_and_port(text)?;
    let mut addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|err| format!("does not resolve: {err}"))?
        .collect();
    addrs.sort();
    addrs.dedup();
    match addrs.is_empty() {
        true => Err("resolves to no address".into()),
        false => Ok(addrs),
    }
}

/// A version whose endpoint entries name hosts.
struct Named {
    service: String,
    version: String,
    sources: Vec<String>,
}

/// Looks up the endpoint names of a config being applied; every name that gives no
/// address is named. Blocking: call it off the runtime's threads.
pub fn resolve_names(config: &mut Config, path: &Path) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    for service in &mut config.services {
        for version in &mut service.versions {
            if !version.sources.iter().any(|s| endpoint::is_name(s)) {
                continue;
            }
            version.endpoints = endpoint::resolve_all(&version.sources, lookup, |index, why| {
                problems.push(format!(
                    "services.{}.versions.{} endpoint {:?} {why}",
                    service.name, version.name, version.sources[index]
                ))
            });
        }
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(ConfigError::Unresolved {
            path: path.to_path_buf(),
            problems,
        }),
    }
}

/// Runs until `stop` turns true.
pub async fn run(controller: Arc<Controller>, mut stop: watch::Receiver<bool>) {
    loop {
        let every = controller.shared.lock().config.resolve_every;
        // Off ("0s") until a reload turns it on: look again now and then.
        let wait = if every.is_zero() {
            Duration::from_secs(5)
        } else {
            every
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|&stop| stop) => return,
        }
        if !every.is_zero() {
            controller.refresh_endpoints(lookup).await;
        }
    }
}

impl Controller {
    /// Resolves every endpoint name again and swaps in a table with the new addresses if
    /// any changed. Returns the versions that changed, as "service/version".
    pub async fn refresh_endpoints(&self, resolve: Resolver) -> Vec<String> {
        let _topology = self.topology.lock().await;
        let named: Vec<Named> = {
            let state = self.shared.lock();
            state
                .config
                .services
                .iter()
                .flat_map(|service| {
                    service
                        .versions
                        .iter()
                        .filter(|v| v.sources.iter().any(|s| endpoint::is_name(s)))
                        .map(|v| Named {
                            service: service.name.clone(),
                            version: v.name.clone(),
                            sources: v.sources.clone(),
                        })
                })
                .collect()
        };
        if named.is_empty() {
            return Vec::new();
        }
        // The resolver may block: off the runtime's threads, without the state lock, and
        // given up after `LOOKUP_LIMIT` so a DNS outage never holds a reload up for long.
        let lookups = tokio::task::spawn_blocking(move || {
            named
                .into_iter()
                .map(|named| {
                    let mut failed = Vec::new();
                    let addrs = endpoint::resolve_all(&named.sources, resolve, |index, problem| {
                        failed.push(format!("{:?} {problem}", named.sources[index]))
                    });
                    (named, addrs, failed)
                })
                .collect::<Vec<_>>()
        });
        let resolved = match tokio::time::timeout(LOOKUP_LIMIT, lookups).await {
            Ok(resolved) => resolved.unwrap_or_default(),
            Err(_) => {
                tracing::warn!(limit = ?LOOKUP_LIMIT, "endpoint name lookups took too long; keeping the last addresses");
                Vec::new()
            }
        };

        let resolved = resolved
            .into_iter()
            .filter_map(|(named, addrs, failed)| {
                if !failed.is_empty() {
                    let label = format!("{}/{}", named.service, named.version);
                    tracing::warn!(version = %label, problems = %failed.join("; "), "endpoint names did not resolve; keeping the last addresses");
                    return None;
                }
                Some(Resolved {
                    service: named.service,
                    version: named.version,
                    sources: named.sources,
                    addrs,
                })
            })
            .collect();
        self.commands
            .call(|reply| Request::Endpoints { resolved, reply })
            .await
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::lookup;
    use std::net::SocketAddr;

    #[test]
    fn an_ip_address_is_taken_as_it_is() {
        let addr: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        assert_eq!(lookup("10.1.2.3:8080").unwrap(), [addr]);
        assert_eq!(lookup("[::1]:80").unwrap().len(), 1);
    }

    #[test]
    fn a_name_becomes_every_address_it_resolves_to() {
        let addrs = lookup("localhost:8080").unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 8080));
    }

    #[test]
    fn a_name_that_does_not_resolve_is_one_clear_problem() {
        let problem = lookup("no-such-host.invalid:80").unwrap_err();
        assert!(problem.starts_with("does not resolve"), "{problem}");
    }

    #[test]
    fn a_malformed_entry_is_never_looked_up() {
        let problem = lookup("10.0.1:8080").unwrap_err();
        assert!(
            problem.starts_with("is not IP:port or name:port"),
            "{problem}"
        );
    }
}
