//! The routing table: immutable, built whole from config and state, swapped whole.

use super::split::{bucket_of_key, Split};
use super::state::ServiceState;
use crate::config::grpc::GrpcCodes;
use crate::config::routes::{HostMatch, PathMatch, RouteRule, ValueMatch};
use crate::config::shadow::ShadowSettings;
use crate::config::{
    Config, GuardSettings, MatchRule, MatchSource, Release, Sticky, UpstreamProtocol,
};
use crate::telemetry::shadow::{ShadowStats, VerdictBounds};
use crate::telemetry::{Telemetry, VersionStats};
use crate::upstream::budget::RetryBudget;
use crate::upstream::connect::Dial;
use crate::upstream::endpoint::{Endpoint, EndpointRegistry};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// Settings of the request path that a reload may change; carried in the table so a
/// request sees one consistent set.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub version_header: Option<HeaderName>,
    pub access_log: Option<Arc<crate::telemetry::access_log::AccessLog>>,
    /// `[telemetry.otlp]`: the sampler and span exporter.
    pub tracer: Option<Arc<crate::telemetry::spans::Tracer>>,
    pub response_headers_timeout: std::time::Duration,
    pub upstream_body_idle: std::time::Duration,
}

#[derive(Debug)]
pub struct RoutingTable {
    pub revision: u64,
    pub settings: ProxySettings,
    services: Box<[ServiceRoute]>,
    /// `[[routes]]` with the index of the service each names; tried before `by_host`.
    routes: Box<[(RouteRule, usize)]>,
    by_host: HashMap<Box<str>, usize>,
    catch_all: Option<usize>,
}

#[derive(Debug)]
pub struct ServiceRoute {
    pub name: Arc<str>,
    pub versions: Box<[VersionRoute]>,
    pub stable: usize,
    split: Split,
    sticky: Option<Sticky>,
    matches: Box<[(MatchSource, ValueMatch, usize)]>,
    /// Failed idempotent requests to a non-stable version are retried on stable.
    pub retry: Option<Retry>,
    pub guard: GuardSettings,
    /// gRPC status codes counted as the version's failure.
    pub grpc_errors: GrpcCodes,
    /// Copies of stable's requests to another version (`[shadow]`).
    pub shadow: Option<ShadowRoute>,
}

/// A service's shadow: which version gets the copies, and what they found so far.
#[derive(Debug)]
pub struct ShadowRoute {
    pub settings: Arc<ShadowSettings>,
    /// Index of the shadow version in the service's versions.
    pub version: usize,
    pub stats: Arc<ShadowStats>,
    /// Copies under way, held to `max_in_flight` (kept across table swaps with the stats).
    pub in_flight: Arc<AtomicUsize>,
}

#[derive(Debug)]
pub struct Retry {
    pub budget: Arc<RetryBudget>,
    /// Share of requests that may be retries.
    pub ratio: f64,
}

#[derive(Debug)]
pub struct VersionRoute {
    pub name: Arc<str>,
    /// The version's name as a ready header value for the response.
    pub header_value: HeaderValue,
    pub release: Release,
    pub endpoints: Box<[Arc<Endpoint>]>,
    pub stats: Arc<VersionStats>,
    pub protocol: UpstreamProtocol,
}

impl ShadowRoute {
    /// The bounds its verdict is judged against.
    pub fn bounds(&self) -> VerdictBounds {
        VerdictBounds {
            min_samples: self.settings.min_samples,
            max_extra_diff: self.settings.max_extra_diff,
            learns_noise: self.settings.noise_percent > 0.0,
        }
    }
}

/// How a version was chosen: sticky picks may need to hand the client a cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Forced(usize),
    Sticky(usize),
    /// Sticky by cookie, but the client had none: the proxy sets this key.
    NewSticky(usize, u64),
    Weighted(usize),
}

impl Pick {
    pub fn version(self) -> usize {
        match self {
            Pick::Forced(v) | Pick::Sticky(v) | Pick::NewSticky(v, _) | Pick::Weighted(v) => v,
        }
    }
}

impl RoutingTable {
    /// Builds a table. `states` must hold a state for every service of `config`
    /// whose versions all exist (the controller guarantees both).
    pub fn build(
        config: &Config,
        states: &BTreeMap<String, ServiceState>,
        endpoints: &EndpointRegistry,
        telemetry: &Telemetry,
        revision: u64,
    ) -> RoutingTable {
        let mut services = Vec::with_capacity(config.services.len());
        let mut by_host = HashMap::new();
        let mut catch_all = None;
        for service in &config.services {
            let index = services.len();
            if service.hosts.is_empty() {
                catch_all = Some(index);
            }
            for host in &service.hosts {
                by_host.insert(host.clone().into_boxed_str(), index);
            }
            let state = states.get(&service.name);
            let index_of = |name: &str| service.versions.iter().position(|v| v.name == name);
            let stable = state
                .and_then(|s| index_of(&s.stable))
                .or_else(|| index_of(&service.stable))
                .unwrap_or(0);
            let weights_by_name = state
                .map(ServiceState::effective_weights)
                .unwrap_or_else(|| service.weights.clone());
            let weights: Vec<u64> = service
                .versions
                .iter()
                .map(|v| weights_by_name.get(&v.name).copied().unwrap_or(0))
                .collect();
            let versions = service
                .versions
                .iter()
                .map(|version| VersionRoute {
                    name: Arc::from(version.name.as_str()),
                    header_value: HeaderValue::from_str(&version.name)
                        .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
                    release: version.release.clone(),
                    endpoints: version
                        .endpoints
                        .iter()
                        .map(|&addr| endpoints.get(Dial::to(version, addr)))
                        .collect(),
                    stats: telemetry.version(&service.name, &version.name),
                    protocol: version.protocol,
                })
                .collect();
            services.push(ServiceRoute {
                name: Arc::from(service.name.as_str()),
                versions,
                stable,
                split: Split::new(&weights, stable),
                sticky: service.sticky.clone(),
                matches: compile_matches(&service.matches, &index_of),
                retry: (service.guard.enabled && service.guard.retry).then(|| Retry {
                    budget: telemetry.retry_budget(&service.name),
                    ratio: service.guard.retry_budget,
                }),
                guard: service.guard.clone(),
                grpc_errors: service.grpc_error_codes,
                shadow: service.shadow.as_ref().and_then(|settings| {
                    let version = index_of(&settings.version)?;
                    // Once switched to (or promoted), the shadow version is stable: it
                    // would only copy its own requests to itself.
                    if version == stable {
                        return None;
                    }
                    // What is judged: new settings, endpoints or release start afresh.
                    let judged = &service.versions[version];
                    let what = format!("{settings:?} {:?} {:?}", judged.endpoints, judged.release);
                    let stats = telemetry.shadow(&service.name, &settings.version, &what);
                    Some(ShadowRoute {
                        version,
                        settings: Arc::new(settings.clone()),
                        in_flight: stats.in_flight.clone(),
                        stats,
                    })
                }),
            });
        }
        let service_index = |name: &str| config.services.iter().position(|s| s.name == name);
        let routes = config
            .routes
            .iter()
            .filter_map(|rule| Some((rule.clone(), service_index(&rule.service)?)))
            .collect();
        RoutingTable {
            revision,
            routes,
            settings: ProxySettings {
                version_header: config.version_header.clone(),
                access_log: telemetry.access_log(config.access_log.as_ref()),
                tracer: telemetry.tracer(config.otlp.as_ref()),
                response_headers_timeout: config.timeouts.response_headers.0,
                upstream_body_idle: config.timeouts.upstream_body_idle.0,
            },
            services: services.into_boxed_slice(),
            by_host,
            catch_all,
        }
    }

    /// The service for a request: the first route that takes it, else by its host.
    pub fn service_for(
        &self,
        host: Option<&str>,
        method: &http::Method,
        uri: &http::Uri,
        headers: &HeaderMap,
    ) -> Option<&ServiceRoute> {
        if !self.routes.is_empty() {
            let name = host.map(|h| strip_port(h).to_ascii_lowercase());
            let path = super::path::normalized(uri.path());
            let request = (method, &*path, uri.query(), headers);
            let taken = self
                .routes
                .iter()
                .find(|(rule, _)| route_takes(rule, name.as_deref(), request));
            if let Some((_, index)) = taken {
                return Some(&self.services[*index]);
            }
        }
        self.service_for_host(host)
    }

    /// The service for a Host value (port and case ignored), else the catch-all service.
    pub fn service_for_host(&self, host: Option<&str>) -> Option<&ServiceRoute> {
        let found = host.and_then(|host| {
            let name = strip_port(host);
            if name.bytes().any(|b| b.is_ascii_uppercase()) {
                self.by_host.get(name.to_ascii_lowercase().as_str())
            } else {
                self.by_host.get(name)
            }
        });
        found
            .or(self.catch_all.as_ref())
            .map(|&i| &self.services[i])
    }

    pub fn services(&self) -> &[ServiceRoute] {
        &self.services
    }
}

fn compile_matches(
    rules: &[MatchRule],
    index_of: &dyn Fn(&str) -> Option<usize>,
) -> Box<[(MatchSource, ValueMatch, usize)]> {
    rules
        .iter()
        .filter_map(|rule| {
            Some((
                rule.source.clone(),
                rule.test.clone(),
                index_of(&rule.version)?,
            ))
        })
        .collect()
}

/// Whether `rule` takes a request (`host`: lower-cased, without its port; the path as
/// the upstream will read it: `path::normalized`).
fn route_takes(
    rule: &RouteRule,
    host: Option<&str>,
    (method, path, query, headers): (&http::Method, &str, Option<&str>, &HeaderMap),
) -> bool {
    let host_ok = match (&rule.host, host) {
        (HostMatch::Any, _) => true,
        (HostMatch::Exact(want), Some(host)) => want == host,
        (HostMatch::Suffix(suffix), Some(host)) => {
            host.len() > suffix.len() && host.ends_with(suffix.as_str())
        }
        (_, None) => false,
    };
    let path_ok = match &rule.path {
        PathMatch::Any => true,
        PathMatch::Exact(want) => path == want,
        PathMatch::Prefix(prefix) => path.starts_with(prefix.as_str()),
        PathMatch::Regex(regex) => regex.is_match(path),
    };
    host_ok
        && path_ok
        && (rule.methods.is_empty() || rule.methods.contains(method))
        && rule
            .headers
            .iter()
            .all(|(name, test)| test.test(headers.get(name).map(HeaderValue::as_bytes)))
        && rule
            .query
            .iter()
            .all(|(name, test)| test.test(query_param(query, name)))
}

/// The raw value of the first `name=value` pair of a query (no percent-decoding: the
/// value is compared as the client sent it).
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q [u8]> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value.as_bytes())
    })
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: "[::1]:8080"
        return host
            .split_once(']')
            .map_or(host, |(addr, _)| &host[..addr.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

impl ServiceRoute {
    /// Picks the version for a request: forced match, else sticky bucket, else weight.
    pub fn pick(&self, headers: &HeaderMap, uri: &http::Uri) -> Pick {
        for (source, test, version) in self.matches.iter() {
            let value = match source {
                MatchSource::Header(name) => headers.get(name).map(HeaderValue::as_bytes),
                MatchSource::Cookie(name) => find_cookie(headers, name),
                MatchSource::Query(name) => query_param(uri.query(), name),
            };
            if test.test(value) {
                return Pick::Forced(*version);
            }
        }
        match &self.sticky {
            Some(Sticky::Header(name)) => {
                if let Some(key) = headers.get(name) {
                    return Pick::Sticky(self.split.version_at(bucket_of_key(key.as_bytes())));
                }
            }
            Some(Sticky::Cookie(cookie)) => {
                if let Some(key) = find_cookie(headers, cookie) {
                    return Pick::Sticky(self.split.version_at(bucket_of_key(key)));
                }
                let key = fastrand::u64(..);
                let bucket = bucket_of_key(sticky_cookie_value(key).as_bytes());
                return Pick::NewSticky(self.split.version_at(bucket), key);
            }
            None => {}
        }
        Pick::Weighted(self.split.version_at(fastrand::u32(..)))
    }

    pub fn sticky_cookie_name(&self) -> Option<&str> {
        match &self.sticky {
            Some(Sticky::Cookie(name)) => Some(name),
            _ => None,
        }
    }

    pub fn share_of(&self, version: usize) -> f64 {
        f64::from(self.split.buckets_of(version)) / f64::from(super::split::BUCKETS)
    }
}

/// The cookie value handed to a new sticky client.
pub fn sticky_cookie_value(key: u64) -> String {
    format!("{key:016x}")
}

fn find_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let (key, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
            (key == name.as_bytes()).then_some(&value[1..])
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("shop.example.com:8080"), "shop.example.com");
        assert_eq!(strip_port("shop.example.com"), "shop.example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    #[test]
    fn finds_cookies_among_many() {
        let mut headers = HeaderMap::new();
        headers.append(
            http::header::COOKIE,
            HeaderValue::from_static("a=1; sy_user=abc"),
        );
        headers.append(http::header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(find_cookie(&headers, "sy_user"), Some(&b"abc"[..]));
        assert_eq!(find_cookie(&headers, "b"), Some(&b"2"[..]));
        assert_eq!(find_cookie(&headers, "sy"), None);
    }
}
