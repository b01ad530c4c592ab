//! The TOML config: typed sections, parsed strictly (unknown keys are errors) and then
//! validated as a whole, so `check` can list every problem with its line.

pub mod access_log;
pub mod analysis;
mod answer;
pub mod checks;
pub mod cluster;
mod cluster_files;
mod duration;
pub mod endpoint;
pub mod grpc;
mod guard;
pub mod health;
pub mod key_files;
pub mod otlp;
mod rollout;
pub mod routes;
pub mod runtime;
mod salvage;
pub mod secret;
pub mod shadow;
pub mod upstream_tls;
mod validate;

pub use analysis::AnalysisSettings;
pub use answer::ExpectStatus;
pub use checks::{SmokeCheck, VerifySettings};
pub use duration::{parse_duration, HumanDuration};
pub use guard::{GuardSection, GuardSettings};
pub use health::HealthSettings;
pub use rollout::{RolloutSection, RolloutSettings, StepGate, WebhookGate};
pub use upstream_tls::{TlsFileCheck, TlsKey, TlsLines, TlsSettings, VersionTls};
pub use validate::{ConfigError, Problem};

/// A problem found in one table of the file: the span it points at, and what is wrong.
pub type SpannedProblem = (std::ops::Range<usize>, String);

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

pub const DEFAULT_ADMIN_SOCKET: &str = "/tmp/switchyard.sock";

/// The raw file as written. Fields that later checks point at keep their span.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub proxy: ProxySection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub state: StateSection,
    #[serde(default)]
    pub hooks: HooksSection,
    pub cluster: Option<cluster::ClusterSection>,
    #[serde(default)]
    pub services: BTreeMap<String, Spanned<ServiceSection>>,
    /// Which service takes a request, first match wins (`[[routes]]`).
    #[serde(default)]
    pub routes: Vec<Spanned<routes::RouteSection>>,
    /// `[telemetry.otlp]`: spans exported to a collector.
    #[serde(default)]
    pub telemetry: otlp::TelemetrySection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    pub listen: Spanned<String>,
    pub tls: Option<TlsSection>,
    /// Response header naming the version that served; "" turns it off.
    #[serde(default = "default_version_header")]
    pub version_header: Spanned<String>,
    #[serde(default = "default_timeouts")]
    pub timeouts: Spanned<TimeoutSection>,
    /// Largest request head (request line plus headers) a client may send.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: Spanned<usize>,
    /// Client connections open at once; past it new ones are refused (503 and closed).
    #[serde(default = "default_max_connections")]
    pub max_connections: Spanned<usize>,
    /// `[proxy.access_log]`, or `access_log = true` for JSON lines on stdout.
    pub access_log: Option<Spanned<access_log::AccessLogSection>>,
    /// Worker threads; 0 means one per available core.
    #[serde(default)]
    pub workers: usize,
    /// How often endpoint names are resolved again; "0s" only at start and reload.
    #[serde(default = "default_resolve_every")]
    pub resolve_every: Spanned<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: Spanned<PathBuf>,
    pub key: Spanned<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutSection {
    pub connect: HumanDuration,
    pub response_headers: HumanDuration,
    /// Time a client has to send a request head; on HTTP/1 it also bounds keep-alive idle time.
    pub client_headers: HumanDuration,
    pub upstream_idle: HumanDuration,
    pub tls_handshake: HumanDuration,
    pub drain: HumanDuration,
    /// No body bytes from the upstream for this long ends the exchange (the version's timeout).
    pub upstream_body_idle: HumanDuration,
    /// A client connection whose exchanges wait this long on the client (a body that
    /// stopped arriving, a response not read, an HTTP/2 stream at window 0) is dropped.
    pub client_idle: HumanDuration,
    /// How long an endpoint that refused a connection is left out of the rotation.
    pub endpoint_backoff: HumanDuration,
}

impl Default for TimeoutSection {
    fn default() -> Self {
        let secs = |s| HumanDuration(Duration::from_secs(s));
        TimeoutSection {
            connect: secs(2),
            response_headers: secs(30),
            client_headers: secs(10),
            upstream_idle: secs(50),
            tls_handshake: secs(10),
            drain: secs(30),
            upstream_body_idle: secs(30),
            client_idle: secs(30),
            endpoint_backoff: secs(5),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    #[serde(default = "default_admin_socket")]
    pub socket: PathBuf,
    pub listen: Option<Spanned<String>>,
    pub token_file: Option<Spanned<PathBuf>>,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            socket: default_admin_socket(),
            listen: None,
            token_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    pub dir: PathBuf,
}

impl Default for StateSection {
    fn default() -> Self {
        StateSection {
            dir: PathBuf::from("state"),
        }
    }
}

/// Event hooks: every revision is POSTed as a small JSON event to each webhook, in the
/// background; a slow or dead hook never delays a change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksSection {
    /// `http[s]://HOST[:PORT]/path` URLs that get JSON events.
    #[serde(default)]
    pub webhooks: Vec<Spanned<String>>,
    /// URLs that get Slack-compatible messages (`{"text": ...}`).
    #[serde(default)]
    pub slack: Vec<Spanned<String>>,
    /// Key of the HMAC-SHA256 signature on every delivery (at least 16 characters).
    pub secret_file: Option<Spanned<PathBuf>>,
    /// CA certificates for https hooks; default: the system's roots.
    pub ca: Option<Spanned<PathBuf>>,
    /// Time one delivery attempt may take.
    #[serde(default = "default_hook_timeout")]
    pub timeout: Spanned<HumanDuration>,
    /// Delivery attempts per event and hook (1 to 10).
    #[serde(default = "default_hook_attempts")]
    pub attempts: Spanned<u32>,
}

impl Default for HooksSection {
    fn default() -> Self {
        HooksSection {
            webhooks: Vec::new(),
            slack: Vec::new(),
            secret_file: None,
            ca: None,
            timeout: default_hook_timeout(),
            attempts: default_hook_attempts(),
        }
    }
}

fn default_hook_timeout() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(2)))
}

fn default_hook_attempts() -> Spanned<u32> {
    Spanned::new(0..0, 3)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    pub stable: Spanned<String>,
    pub weights: Spanned<BTreeMap<String, Spanned<i64>>>,
    pub sticky: Option<Spanned<StickySection>>,
    pub versions: BTreeMap<String, Spanned<VersionSection>>,
    #[serde(default, rename = "match")]
    pub matches: Vec<Spanned<MatchSection>>,
    pub guard: Option<Spanned<GuardSection>>,
    pub rollout: Option<Spanned<RolloutSection>>,
    pub health: Option<Spanned<health::HealthSection>>,
    #[serde(default)]
    pub checks: Vec<Spanned<checks::CheckSection>>,
    pub checks_every: Option<Spanned<HumanDuration>>,
    /// gRPC status codes that count as the version's failure (default: UNKNOWN,
    /// DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS).
    pub grpc_error_codes: Option<Spanned<Vec<grpc::GrpcCodeEntry>>>,
    pub shadow: Option<Spanned<shadow::ShadowSection>>,
    /// `[[services.NAME.analysis]]`: Prometheus queries that judge a canary beside the guard.
    #[serde(default)]
    pub analysis: Vec<Spanned<analysis::AnalysisSection>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickySection {
    pub cookie: Option<String>,
    pub header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSection {
    pub endpoints: Vec<Spanned<String>>,
    #[serde(default)]
    pub release: Release,
    /// TLS to the endpoints; `tls = {}` verifies them against the system's CAs.
    pub tls: Option<Spanned<upstream_tls::VersionTlsSection>>,
    /// "http1" (the default), "h2c" or "h2".
    pub protocol: Option<Spanned<String>>,
}

/// How the proxy talks to a version's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 in clear, with the proxy's own codec.
    #[default]
    Http1,
    /// HTTP/2 in clear with prior knowledge.
    H2c,
    /// HTTP/2 over TLS, chosen by ALPN.
    H2,
}

impl UpstreamProtocol {
    pub fn parse(text: &str) -> Option<UpstreamProtocol> {
        match text {
            "http1" => Some(UpstreamProtocol::Http1),
            "h2c" => Some(UpstreamProtocol::H2c),
            "h2" => Some(UpstreamProtocol::H2),
            _ => None,
        }
    }

    pub fn is_http2(self) -> bool {
        self != UpstreamProtocol::Http1
    }
}

/// What was deployed as a version; carried into history and incidents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSection {
    /// What is tested: one of a header, a cookie or a query parameter.
    pub header: Option<String>,
    pub cookie: Option<String>,
    pub query: Option<String>,
    /// How: equal to `value`, or matching `regex`.
    pub value: Option<String>,
    pub regex: Option<String>,
    pub version: String,
}

fn default_version_header() -> Spanned<String> {
    Spanned::new(0..0, "switchyard-version".to_string())
}

fn default_resolve_every() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(30)))
}

fn default_max_header_bytes() -> Spanned<usize> {
    Spanned::new(0..0, 64 * 1024)
}

fn default_timeouts() -> Spanned<TimeoutSection> {
    Spanned::new(0..0, TimeoutSection::default())
}

fn default_max_connections() -> Spanned<usize> {
    Spanned::new(0..0, 100_000)
}

fn default_admin_socket() -> PathBuf {
    PathBuf::from(DEFAULT_ADMIN_SOCKET)
}

/// A config that passed every check, in the shapes the rest of the program uses.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub tls: Option<TlsPaths>,
    pub version_header: Option<http::HeaderName>,
    pub timeouts: TimeoutSection,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub access_log: Option<access_log::AccessLogSettings>,
    /// `[telemetry.otlp]`: a span per request, when set.
    pub otlp: Option<otlp::OtlpSettings>,
    pub workers: usize,
    pub resolve_every: Duration,
    pub admin_socket: PathBuf,
    pub admin_listen: Option<SocketAddr>,
    pub admin_token_file: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub hooks: HooksConfig,
    /// The fleet this instance belongs to, when `[cluster]` is set.
    pub cluster: Option<cluster::ClusterSettings>,
    pub services: Vec<ServiceConfig>,
    /// `[[routes]]` in order; a request none takes goes by the services' `hosts`.
    pub routes: Vec<routes::RouteRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HooksConfig {
    pub webhooks: Vec<Webhook>,
    pub timeout: Duration,
    pub attempts: u32,
    /// Read at each delivery, so a rotated secret is used without a reload.
    pub secret_file: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: http::Uri,
    pub format: HookFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookFormat {
    Json,
    Slack,
}

impl HooksConfig {
    pub fn urls(&self) -> impl Iterator<Item = &http::Uri> {
        self.webhooks.iter().map(|hook| &hook.url)
    }

    pub fn format_of(&self, url: &http::Uri) -> HookFormat {
        self.webhooks
            .iter()
            .find(|hook| hook.url == *url)
            .map_or(HookFormat::Json, |hook| hook.format)
    }
}

#[derive(Debug, Clone)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub name: String,
    /// Lower-cased host names; empty means this service takes every host.
    pub hosts: Vec<String>,
    pub stable: String,
    pub weights: BTreeMap<String, u64>,
    pub sticky: Option<Sticky>,
    /// Versions sorted by name: the fixed order sticky buckets are assigned in.
    pub versions: Vec<VersionConfig>,
    pub matches: Vec<MatchRule>,
    pub guard: GuardSettings,
    /// The progressive rollout, when the service has a `rollout` section.
    pub rollout: Option<RolloutSettings>,
    /// Health checks of its endpoints and smoke checks of its versions.
    pub verify: VerifySettings,
    pub grpc_error_codes: grpc::GrpcCodes,
    /// Copies of stable's requests to another version, compared (`[shadow]`).
    pub shadow: Option<shadow::ShadowSettings>,
    /// Prometheus analyses run while a canary takes traffic.
    pub analyses: Vec<AnalysisSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    Cookie(String),
    Header(http::HeaderName),
}

#[derive(Debug, Clone)]
pub struct VersionConfig {
    pub name: String,
    /// The addresses of `sources`, resolved when the config was loaded or refreshed since.
    pub endpoints: Vec<SocketAddr>,
    /// The endpoint entries as written: `IP:port` or `name:port`.
    pub sources: Vec<String>,
    pub release: Release,
    /// TLS to the endpoints, as written; the upstream module builds it when applied.
    pub tls: Option<VersionTls>,
    pub protocol: UpstreamProtocol,
}

#[derive(Debug, Clone)]
pub struct MatchRule {
    pub source: MatchSource,
    pub test: routes::ValueMatch,
    pub version: String,
}

/// Where a version match looks.
#[derive(Debug, Clone)]
pub enum MatchSource {
    Header(http::HeaderName),
    Cookie(String),
    Query(String),
}

impl Config {
    /// Reads, parses and validates a config file; every problem is reported, not just the first.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::parse(path, &read_text(path)?)
    }

    /// Parses config text; `path` is used to name the file in problems and to resolve relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        validate::parse_and_validate(path, text, None)
    }

    /// `load`, and every file a version's `tls` names read with `tls_files` (the upstream
    /// module's builder), so `check` lists their problems with the rest.
    pub fn load_checked(path: &Path, tls_files: TlsFileCheck) -> Result<Config, ConfigError> {
        validate::parse_and_validate(path, &read_text(path)?, Some(tls_files))
    }

    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|err| ConfigError::Unreadable {
        path: path.to_path_buf(),
        reason: err.to_string(),
    })
}

impl ServiceConfig {
    pub fn version(&self, name: &str) -> Option<&VersionConfig> {
        self.versions.iter().find(|v| v.name == name)
    }
}
