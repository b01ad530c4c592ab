//! A scenario file: the upstreams, the proxy's routing, the load, a timeline of steps,
//! and what must hold. Parsed strictly: an unknown key is an error, not a silent no-op.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchyard::config::HumanDuration;
use switchyard_testkit::load::Protocol;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub about: String,
    /// Features of switchyard the scenario relies on (say why it may not run yet).
    #[serde(default)]
    pub needs: Vec<String>,
    pub duration: HumanDuration,
    #[serde(default)]
    pub proxy: ProxySpec,
    pub upstreams: BTreeMap<String, FaultSpec>,
    #[serde(default)]
    pub load: Vec<LoadStream>,
    #[serde(default)]
    pub slow_clients: Vec<SlowClients>,
    #[serde(default, rename = "step")]
    pub steps: Vec<Step>,
    #[serde(default, rename = "expect")]
    pub expectations: Vec<Expectation>,
    /// A side-by-side run through switchyard, HAProxy and NGINX instead of a timeline.
    pub compare: Option<CompareSpec>,
    /// A Prometheus server the harness starts on loopback, scraping every sample upstream's
    /// `/metrics`; `{prometheus}` in `proxy.extra` becomes its URL.
    pub prometheus: Option<PrometheusSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSpec {
    /// The scrape interval (at least 1s).
    pub scrape: HumanDuration,
}

/// In `proxy.extra`: the URL of the scenario's Prometheus.
pub const PROMETHEUS_URL: &str = "{prometheus}";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyMode {
    /// The real `switchyard run` binary, as users run it.
    #[default]
    Binary,
    /// `RunningProxy` inside the harness, for steps that call the controller directly.
    InProcess,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySpec {
    #[serde(default)]
    pub mode: ProxyMode,
    #[serde(default = "one")]
    pub workers: usize,
    #[serde(default = "blue")]
    pub stable: String,
    /// Default: everything on the stable version.
    #[serde(default)]
    pub weights: BTreeMap<String, u64>,
    /// Raw TOML appended to the generated config (guard, rollout, timeouts sections).
    #[serde(default)]
    pub extra: String,
    /// Instances sharing one routing through a NATS server the harness starts (needs
    /// `nats-server`); every load stream is spread evenly over them.
    #[serde(default = "one")]
    pub instances: usize,
    /// How the proxy talks to every version: "http1" (default) or "h2c" (the sample
    /// upstreams speak both; gRPC calls need "h2c").
    #[serde(default)]
    pub upstream_protocol: Option<String>,
}

impl Default for ProxySpec {
    fn default() -> Self {
        ProxySpec {
            mode: ProxyMode::Binary,
            workers: 1,
            stable: blue(),
            weights: BTreeMap::new(),
            extra: String::new(),
            instances: 1,
            upstream_protocol: None,
        }
    }
}

fn one() -> usize {
    1
}

fn blue() -> String {
    "blue".to_string()
}

/// Faults of a sample upstream: its starting state, or a change in a step.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub error_rate: Option<f64>,
    pub latency: Option<HumanDuration>,
    pub jitter: Option<HumanDuration>,
    /// A fraction of answers waits `tail` more.
    pub tail_fraction: Option<f64>,
    pub tail: Option<HumanDuration>,
    /// Bodies sent in this many pieces, `slow_body_pause` before each.
    pub slow_body_chunks: Option<u32>,
    pub slow_body_pause: Option<HumanDuration>,
    /// Share of `/item/N` paths answered with a wrong price (the same paths every time).
    pub wrong_price_paths: Option<f64>,
    /// Share of `/checkout` requests that succeed (every answer is 200 either way), as the
    /// upstream's `checkout_ok_total` counts them.
    pub checkout_success: Option<f64>,
    pub reset: Option<bool>,
    pub stall: Option<bool>,
    pub garbage: Option<bool>,
    /// Drop every connection and refuse new ones, like a crashed process.
    #[serde(default)]
    pub crash: bool,
    #[serde(default)]
    pub restart: bool,
    /// Clear every fault first.
    #[serde(default)]
    pub heal: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadStream {
    #[serde(default = "main_stream")]
    pub name: String,
    #[serde(default = "http1")]
    pub protocol: Protocol,
    pub connections: usize,
    /// Requests per second over all connections; omit for closed loop (as fast as answered).
    pub rate: Option<f64>,
    pub start: Option<HumanDuration>,
    pub stop: Option<HumanDuration>,
    pub ramp: Option<HumanDuration>,
    #[serde(default = "root")]
    pub path: String,
    /// With `{n}` in `path`: how many paths the stream cycles through.
    #[serde(default = "one_path")]
    pub paths: u32,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub timeout: Option<HumanDuration>,
}

fn main_stream() -> String {
    "main".to_string()
}

fn http1() -> Protocol {
    Protocol::Http1
}

fn root() -> String {
    "/".to_string()
}

fn one_path() -> u32 {
    1
}

/// Clients that send their request head a byte at a time and never finish it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowClients {
    pub connections: usize,
    pub start: Option<HumanDuration>,
    pub stop: Option<HumanDuration>,
    /// Time between bytes.
    pub interval: HumanDuration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub at: HumanDuration,
    /// Change a sample upstream's faults.
    pub upstream: Option<String>,
    pub faults: Option<FaultSpec>,
    /// Run `switchyard ctl ARGS...` against the proxy's admin socket.
    pub ctl: Option<Vec<String>>,
    /// Rewrite the config with this routing and reload it (SIGHUP, or the controller).
    pub reload: Option<Routing>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    pub stable: Option<String>,
    pub weights: Option<BTreeMap<String, u64>>,
    /// Raw TOML added after the scenario's `proxy.extra` from this reload on (replacing
    /// what an earlier reload added).
    pub extra: Option<String>,
}

/// What must hold, checked on the named load stream (default: the first).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Expectation {
    /// Client-visible error rate (5xx and failed exchanges) at most `max_rate`.
    Errors {
        max_rate: f64,
        load: Option<String>,
        from: Option<HumanDuration>,
        until: Option<HumanDuration>,
    },
    /// No request sent later than `within` after `after` is answered by `version`.
    ShareZero {
        version: String,
        after: HumanDuration,
        within: HumanDuration,
        load: Option<String>,
    },
    /// The version's share of requests sent in [from, until) lies in [min, max].
    Share {
        version: String,
        from: HumanDuration,
        until: HumanDuration,
        min: Option<f64>,
        max: Option<f64>,
        load: Option<String>,
    },
    /// p99 latency below `max` (for one version, or for all requests): over the whole run,
    /// or, with `from`/`until`, in every whole second of [from, until) (the worst second's
    /// p99, per version, counts).
    P99 {
        max: HumanDuration,
        version: Option<String>,
        load: Option<String>,
        from: Option<HumanDuration>,
        until: Option<HumanDuration>,
    },
    /// Requests per second during [during) at least `min_ratio` of those during [baseline).
    ThroughputKept {
        baseline: [HumanDuration; 2],
        during: [HumanDuration; 2],
        min_ratio: f64,
        load: Option<String>,
    },
    /// The users' p99 during [during) at most `max_ratio` times that during [baseline):
    /// the median of the per-second p99s of each window (a feature's cost in latency,
    /// robust to one slow second of a busy machine).
    P99Kept {
        baseline: [HumanDuration; 2],
        during: [HumanDuration; 2],
        max_ratio: f64,
        load: Option<String>,
    },
    /// The proxy's peak resident memory (binary mode) at most this many MiB.
    Rss { max_mib: f64 },
    /// The guard cut `version` back (by `rule`, when given) at most `within` after the step
    /// scheduled at `after` was performed, as the proxy's incident log and revision say.
    GuardCutback {
        version: String,
        after: HumanDuration,
        within: HumanDuration,
        rule: Option<GuardRule>,
    },
    /// A Prometheus analysis (named `analysis`, when given) aborted `version` at most
    /// `within` after the step scheduled at `after` was performed; its incident names the
    /// query, the condition and the values.
    AnalysisAbort {
        version: String,
        analysis: Option<String>,
        after: HumanDuration,
        within: HumanDuration,
    },
    /// The guard never cut `version` back, and (when the run watched the proxy's status:
    /// scenarios with `[prometheus]`) its verdict was never "bad".
    NoGuardCutback { version: String },
    /// The `index`th step (from 1, in file order) succeeded or failed as `ok` says, and
    /// what it printed contains `contains`: a change the gate must refuse, naming why.
    Step {
        index: usize,
        ok: bool,
        contains: Option<String>,
    },
}

/// The guard's rules, as its incident log names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardRule {
    ErrorRate,
    Latency,
    Unreachable,
}

impl GuardRule {
    pub fn name(self) -> &'static str {
        match self {
            GuardRule::ErrorRate => "error_rate",
            GuardRule::Latency => "latency",
            GuardRule::Unreachable => "unreachable",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareSpec {
    #[serde(default = "all_proxies")]
    pub proxies: Vec<String>,
    pub rounds: usize,
    pub duration: HumanDuration,
    pub warmup: Option<HumanDuration>,
    pub connections: usize,
    pub rate: Option<f64>,
}

fn all_proxies() -> Vec<String> {
    ["switchyard", "haproxy", "nginx"]
        .map(String::from)
        .to_vec()
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|err| ScenarioError::Unreadable {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })?;
        let invalid = |reason: String| ScenarioError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let mut scenario: Scenario = toml::from_str(&text).map_err(|err| {
            let line = err.span().map_or(1, |span| {
                text[..span.start.min(text.len())].matches('\n').count() + 1
            });
            invalid(format!("line {line}: {}", err.message().trim()))
        })?;
        if scenario.name.is_empty() {
            scenario.name = path
                .file_stem()
                .map_or_else(|| "scenario".into(), |s| s.to_string_lossy().into_owned());
        }
        scenario.check().map_err(invalid)?;
        Ok(scenario)
    }

    pub fn duration(&self) -> Duration {
        self.duration.0
    }

    /// Checks that names refer to things that exist and times fall inside the run.
    fn check(&self) -> Result<(), String> {
        let end = self.duration();
        if end.is_zero() || end > Duration::from_secs(600) {
            return Err("duration must be between 1ms and 10m".into());
        }
        if self.compare.is_none() && self.load.is_empty() {
            return Err("a scenario needs at least one [[load]] stream (or [compare])".into());
        }
        let upstream = |name: &str, what: &str| {
            if self.upstreams.contains_key(name) {
                Ok(())
            } else {
                Err(format!(
                    "{what} names upstream {name:?}, which is not under [upstreams]"
                ))
            }
        };
        if self.compare.is_none() {
            upstream(&self.proxy.stable, "proxy.stable")?;
        }
        for name in self.proxy.weights.keys() {
            upstream(name, "proxy.weights")?;
        }
        if self.proxy.extra.contains(PROMETHEUS_URL) && self.prometheus.is_none() {
            return Err(format!(
                "proxy.extra names {PROMETHEUS_URL}, but there is no [prometheus] section"
            ));
        }
        for (index, stream) in self.load.iter().enumerate() {
            if stream.connections == 0 {
                return Err(format!("load {:?} has no connections", stream.name));
            }
            if self.load[..index].iter().any(|s| s.name == stream.name) {
                return Err(format!("two load streams are named {:?}", stream.name));
            }
        }
        for step in &self.steps {
            if step.at.0 > end {
                return Err(format!(
                    "a step at {:?} is after the end ({end:?})",
                    step.at.0
                ));
            }
            let kinds = [
                step.faults.is_some(),
                step.ctl.is_some(),
                step.reload.is_some(),
            ];
            if kinds.iter().filter(|&&k| k).count() != 1 {
                return Err(format!(
                    "the step at {:?} needs exactly one of faults, ctl or reload",
                    step.at.0
                ));
            }
            match (&step.faults, &step.upstream) {
                (Some(_), Some(name)) => upstream(name, "a step")?,
                (Some(_), None) => return Err("a faults step needs `upstream`".into()),
                _ => {}
            }
        }
        for expectation in &self.expectations {
            match expectation {
                Expectation::GuardCutback { version, .. } => {
                    upstream(version, "a guard_cutback expectation")?
                }
                Expectation::AnalysisAbort { version, .. } => {
                    upstream(version, "an analysis_abort expectation")?
                }
                Expectation::NoGuardCutback { version } => {
                    upstream(version, "a no_guard_cutback expectation")?
                }
                _ => {}
            }
            if let Expectation::Step { index, .. } = expectation {
                if *index == 0 || *index > self.steps.len() {
                    return Err(format!(
                        "a step expectation names step {index}; there are {} steps",
                        self.steps.len()
                    ));
                }
            }
            if let Some(load) = expectation.load() {
                if !self.load.iter().any(|s| s.name == load) {
                    return Err(format!(
                        "an expectation names load stream {load:?}, which is not defined"
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Expectation {
    pub fn load(&self) -> Option<&str> {
        match self {
            Expectation::Errors { load, .. }
            | Expectation::ShareZero { load, .. }
            | Expectation::Share { load, .. }
            | Expectation::P99 { load, .. }
            | Expectation::ThroughputKept { load, .. }
            | Expectation::P99Kept { load, .. } => load.as_deref(),
            Expectation::Rss { .. }
            | Expectation::GuardCutback { .. }
            | Expectation::AnalysisAbort { .. }
            | Expectation::NoGuardCutback { .. }
            | Expectation::Step { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let dir = std::env::temp_dir().join(format!("loadtest-scenario-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("t{}.toml", fastrand::u64(..)));
        std::fs::write(&path, text).unwrap();
        let result = Scenario::load(&path);
        let _ = std::fs::remove_file(&path);
        result
    }

    const BASE: &str = r#"
duration = "5s"
[upstreams.blue]
[upstreams.canary]
latency = "2ms"
[[load]]
connections = 2
rate = 100
"#;

    #[test]
    fn a_minimal_scenario_parses_with_defaults() {
        let scenario = parse(BASE).unwrap();
        assert_eq!(scenario.load[0].name, "main");
        assert_eq!(scenario.proxy.stable, "blue");
        assert_eq!(scenario.proxy.mode, ProxyMode::Binary);
        assert!(scenario.name.starts_with('t'));
    }

    #[test]
    fn bad_scenarios_get_one_clear_reason() {
        let cases = [
            ("duration = \"5s\"\nbogus = 1\n[upstreams.blue]", "unknown field"),
            (&format!("{BASE}[[step]]\nat = \"1s\"\nupstream = \"purple\"\nfaults = {{ error_rate = 0.5 }}"), "purple"),
            (&format!("{BASE}[[step]]\nat = \"9s\"\nctl = [\"abort\", \"shop\"]"), "after the end"),
            (&format!("{BASE}[[step]]\nat = \"1s\"\nupstream = \"blue\""), "exactly one"),
            (&format!("{BASE}[[expect]]\nkind = \"errors\"\nmax_rate = 0\nload = \"other\""), "other"),
            (&format!("{BASE}[[expect]]\nkind = \"vibes\""), "vibes"),
            (&format!("{BASE}[[expect]]\nkind = \"guard_cutback\"\nversion = \"canary\"\nafter = \"1s\"\nwithin = \"1s\"\nrule = \"vibes\""), "vibes"),
            ("duration = \"5s\"\n[upstreams.blue]", "at least one [[load]]"),
            (&BASE.replace("5s", "5 parsecs"), "parsecs"),
            (&format!("{BASE}[proxy]\nextra = \"prometheus = '{{prometheus}}'\"\n"), "[prometheus]"),
            (&format!("{BASE}[[expect]]\nkind = \"analysis_abort\"\nversion = \"green\"\nafter = \"1s\"\nwithin = \"1s\""), "green"),
            (&format!("{BASE}[prometheus]\nscrape = \"often\""), "often"),
        ];
        for (text, needle) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
            assert_eq!(err.lines().count(), 1, "one line: {err}");
        }
    }
}
