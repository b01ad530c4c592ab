//! Upstream endpoints: address, keep-alive pool, in-flight count and refusal back-off.
//! Endpoints outlive routing tables, so pools and health survive every swap.

use super::connect::{self, ConnectError, Dial, TlsTarget, ALPN_ANY, ALPN_H2, ALPN_HTTP1};
use super::connection::Connection;
use super::h2::{H2ConnectError, H2Pool, StreamSlot};
use super::pool::{Lease, Pool};
use super::stream::UpstreamStream;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// TLS settings and the name to verify, when the endpoint's version has `tls`.
    pub tls: Option<TlsTarget>,
    /// The TLS failure last logged; each change is logged once, never every request.
    tls_trouble: Mutex<Option<String>>,
    tls_troubled: AtomicBool,
    pub pool: Arc<Pool>,
    /// Shared HTTP/2 connections, used when a version speaks HTTP/2 to this address.
    pub h2: H2Pool,
    connect_timeout: Duration,
    in_flight: AtomicU32,
    /// Milliseconds since `epoch` until which the endpoint is skipped after a refusal.
    skip_until_ms: AtomicU64,
    epoch: Instant,
    backoff: Duration,
    /// Set by the active health checker after `fall` failed checks, cleared after `rise`.
    checked_down: AtomicBool,
}

impl Endpoint {
    /// A connection for one exchange: an idle pooled one if any is fit, else a new one.
    /// `now` may be the request's start.
    pub async fn checkout(&self, now: Instant) -> Result<Lease, ConnectError> {
        let connection = match self.pool.take(now) {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        Ok(Lease::new(connection, Some(self.pool.clone())))
    }

    /// A new connection that never goes back to the pool (an upgrade's tunnel).
    pub async fn checkout_unpooled(&self) -> Result<Lease, ConnectError> {
        Ok(Lease::new(self.connect().await?, None))
    }

    /// A stream on one of the endpoint's HTTP/2 connections: in clear (`h2c`), or over
    /// TLS where the upstream chose `h2` by ALPN (`h2`).
    pub async fn h2_stream(&self) -> Result<StreamSlot, H2ConnectError> {
        self.h2.stream(|| self.open(ALPN_H2)).await
    }

    async fn connect(&self) -> Result<Box<Connection>, ConnectError> {
        Ok(Box::new(Connection::new(self.open(ALPN_HTTP1).await?)))
    }

    /// A connection offering `alpn` over TLS; TLS failures are logged once per change.
    async fn open(&self, alpn: &[&[u8]]) -> Result<UpstreamStream, ConnectError> {
        let opened = connect::open(self.addr, self.tls.as_ref(), alpn, self.connect_timeout).await;
        match &opened {
            Err(ConnectError::Tls { reason, .. }) => self.note_tls_trouble(Some(reason)),
            Ok(_) if self.tls_troubled.load(Ordering::Relaxed) => self.note_tls_trouble(None),
            _ => {}
        }
        opened
    }

    fn tls_name(&self) -> String {
        self.tls
            .as_ref()
            .map(|t| t.name.to_str().into_owned())
            .unwrap_or_default()
    }

    /// How health and smoke checks reach this endpoint: as requests do.
    pub fn dial(&self) -> Dial {
        Dial {
            addr: self.addr,
            tls: self.tls.clone(),
        }
    }

    /// Opens and drops a connection (with its TLS handshake): does the endpoint take
    /// connections at all? `None` when the attempt says nothing about the endpoint (a
    /// timeout, or the proxy's own trouble such as running out of sockets); only a
    /// refusal is a "no".
    pub async fn accepts(&self) -> Option<bool> {
        // Whatever HTTP its versions speak: any protocol the upstream chooses will do.
        match self.open(ALPN_ANY).await {
            Ok(_) => Some(true),
            Err(err) if err.is_refusal() => Some(false),
            Err(_) => None,
        }
    }

    /// The upstream refused our TLS after the handshake looked done (with TLS 1.3, a
    /// client certificate it does not accept): out of the rotation, as a refused connect.
    pub fn refused_tls(&self, reason: &str, now: Instant) {
        self.mark_refused(now);
        self.note_tls_trouble(Some(reason));
    }

    /// Logs a TLS failure, or the end of one, once per change.
    fn note_tls_trouble(&self, reason: Option<&str>) {
        let mut last = self
            .tls_trouble
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.as_deref() == reason {
            return;
        }
        let name = self.tls_name();
        match reason {
            Some(reason) => tracing::warn!(
                endpoint = %self.addr,
                name,
                "TLS to the endpoint refused: {reason}; out of the rotation"
            ),
            None => tracing::info!(
                endpoint = %self.addr,
                name,
                "TLS to the endpoint works again"
            ),
        }
        *last = reason.map(str::to_string);
        self.tls_troubled.store(last.is_some(), Ordering::Relaxed);
    }

    /// True while the endpoint is left out of the rotation: after refusing a connection,
    /// or while active health checks hold it down.
    pub fn is_backing_off(&self, now: Instant) -> bool {
        self.is_checked_down() || self.skip_until_ms.load(Ordering::Relaxed) > self.millis(now)
    }

    /// Active health checks take the endpoint out of the rotation (`false`) or bring it
    /// back (`true`); passive back-off after refusals applies on top.
    pub fn set_checked_up(&self, up: bool) {
        self.checked_down.store(!up, Ordering::Relaxed);
    }

    pub fn is_checked_down(&self) -> bool {
        self.checked_down.load(Ordering::Relaxed)
    }

    /// Leaves the endpoint out of the rotation for the back-off time.
    pub fn mark_refused(&self, now: Instant) {
        let until = self.millis(now) + self.backoff.as_millis() as u64;
        self.skip_until_ms.store(until, Ordering::Relaxed);
        self.pool.clear();
    }

    pub fn mark_healthy(&self) {
        if self.skip_until_ms.load(Ordering::Relaxed) != 0 {
            self.skip_until_ms.store(0, Ordering::Relaxed);
        }
    }

    fn millis(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Picks an endpoint: the less busy of two random ones that are not backing off
/// ("power of two choices"); when all are backing off, any, so a recovered one is found.
pub fn pick_endpoint(
    endpoints: &[Arc<Endpoint>],
    now: Instant,
    exclude: Option<&Arc<Endpoint>>,
) -> Option<Arc<Endpoint>> {
    let usable =
        |e: &&Arc<Endpoint>| !e.is_backing_off(now) && exclude.is_none_or(|x| !Arc::ptr_eq(x, e));
    match endpoints.len() {
        0 => None,
        1 => endpoints.first().filter(usable).cloned(),
        n => {
            let a = &endpoints[fastrand::usize(..n)];
            let b = &endpoints[fastrand::usize(..n)];
            let chosen = match (usable(&a), usable(&b)) {
                (true, true) if b.in_flight() < a.in_flight() => Some(b),
                (true, _) => Some(a),
                (false, true) => Some(b),
                (false, false) => endpoints
                    .iter()
                    .filter(usable)
                    .min_by_key(|e| e.in_flight()),
            };
            chosen.cloned()
        }
    }
}

/// The endpoint for the next attempt: one not backing off (nor the one that just refused).
/// On a first attempt with every endpoint backing off, one is still tried: back-off must
/// never turn a recovered upstream into a permanent outage.
pub fn next_endpoint(
    endpoints: &[Arc<Endpoint>],
    started: Instant,
    last_refused: Option<&Arc<Endpoint>>,
) -> Option<Arc<Endpoint>> {
    pick_endpoint(endpoints, started, last_refused).or_else(|| {
        (last_refused.is_none() && !endpoints.is_empty())
            .then(|| endpoints[fastrand::usize(..endpoints.len())].clone())
    })
}

/// Settings every endpoint's pool shares.
#[derive(Debug, Clone, Copy)]
pub struct EndpointSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub backoff: Duration,
}

/// What makes two endpoints the same: the address, and for TLS the settings' digest and
/// the name verified. A plain and a TLS version at one address never share a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EndpointKey {
    addr: SocketAddr,
    tls: Option<([u8; 32], String)>,
}

/// Every endpoint by address and transport, so a new table reuses the same endpoint
/// objects (and their pools, back-off and health).
#[derive(Debug)]
pub struct EndpointRegistry {
    settings: EndpointSettings,
    epoch: Instant,
    endpoints: Mutex<HashMap<EndpointKey, Arc<Endpoint>>>,
}

impl EndpointRegistry {
    pub fn new(settings: EndpointSettings) -> EndpointRegistry {
        EndpointRegistry {
            settings,
            epoch: Instant::now(),
            endpoints: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, dial: Dial) -> Arc<Endpoint> {
        let key = EndpointKey {
            addr: dial.addr,
            tls: dial
                .tls
                .as_ref()
                .map(|t| (t.tls.digest(), t.name.to_str().into_owned())),
        };
        let mut endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        endpoints
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Endpoint {
                    addr: dial.addr,
                    tls: dial.tls,
                    tls_trouble: Mutex::new(None),
                    tls_troubled: AtomicBool::new(false),
                    pool: Arc::new(Pool::new(self.settings.idle_timeout)),
                    h2: H2Pool::new(self.settings.idle_timeout),
                    connect_timeout: self.settings.connect_timeout,
                    in_flight: AtomicU32::new(0),
                    skip_until_ms: AtomicU64::new(0),
                    epoch: self.epoch,
                    backoff: self.settings.backoff,
                    checked_down: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// Forgets endpoints no table uses any more (called after a swap).
    pub fn retain_used(&self) {
        let mut endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        endpoints.retain(|_, endpoint| Arc::strong_count(endpoint) > 1);
    }
}
