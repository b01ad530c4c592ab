//! The demo's stage: three sample upstreams, the config that names them, the proxy.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchyard::config::Config;
use switchyard::run::RunningProxy;
use switchyard_testkit::SampleUpstream;

/// The service every demo request goes to.
pub const SERVICE: &str = "shop";
/// The version the demo turns bad.
pub const CANARY: &str = "canary";
/// The standby version the demo tries (and fails) to switch to.
pub const GREEN: &str = "green";

/// A version on stage: its starting weight and how slow it is (base + random jitter).
struct Cast {
    name: &'static str,
    weight: u64,
    latency: Duration,
    jitter: Duration,
    release: &'static str,
}

const CAST: [Cast; 3] = [
    Cast {
        name: "blue",
        weight: 90,
        latency: Duration::from_millis(2),
        jitter: Duration::from_millis(3),
        release: r#"{ version = "1.4.2", notes = "current" }"#,
    },
    Cast {
        name: GREEN,
        weight: 0,
        latency: Duration::from_millis(2),
        jitter: Duration::from_millis(3),
        release: r#"{ version = "1.4.3", notes = "standby" }"#,
    },
    Cast {
        name: CANARY,
        weight: 10,
        latency: Duration::from_millis(3),
        jitter: Duration::from_millis(4),
        release: r#"{ version = "1.5.0", notes = "new checkout" }"#,
    },
];

pub struct Stage {
    pub upstreams: Vec<SampleUpstream>,
    pub proxy: RunningProxy,
    pub config_path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("cannot start sample upstream {name}: {source}")]
    Upstream {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("cannot write the demo config {}: {source}", path.display())]
    WriteConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the generated demo config is invalid (a bug):\n{0}")]
    Config(#[from] switchyard::config::ConfigError),
    #[error("cannot start the proxy: {0}")]
    Proxy(#[from] switchyard::run::RunError),
}

impl Stage {
    /// Starts the upstreams and the proxy; the config and state live in `dir`.
    pub async fn start(dir: &Path, shards: usize) -> Result<Stage, StageError> {
        let upstreams = cast().await?;
        let (config_path, config) = write_config(dir, &upstreams, "")?;
        let proxy = RunningProxy::start(config, &config_path, shards).await?;
        Ok(Stage {
            upstreams,
            proxy,
            config_path,
        })
    }

    pub fn upstream(&self, name: &str) -> Option<&SampleUpstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}

/// The sample upstreams (blue, green, canary) on loopback, slow as the cast says.
pub async fn cast() -> Result<Vec<SampleUpstream>, StageError> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut upstreams = Vec::new();
    for cast in &CAST {
        let upstream = SampleUpstream::start(cast.name, loopback)
            .await
            .map_err(|source| StageError::Upstream {
                name: cast.name,
                source,
            })?;
        upstream.faults.set_latency(cast.latency, cast.jitter);
        upstreams.push(upstream);
    }
    Ok(upstreams)
}

/// Writes the demo config (with `extra` TOML at its end) in `dir`, state in `dir/state`.
pub fn write_config(
    dir: &Path,
    upstreams: &[SampleUpstream],
    extra: &str,
) -> Result<(PathBuf, Config), StageError> {
    let config_path = dir.join("demo.toml");
    let text = config_text(dir, upstreams) + extra;
    std::fs::write(&config_path, &text).map_err(|source| StageError::WriteConfig {
        path: config_path.clone(),
        source,
    })?;
    let config = Config::parse(&config_path, &text)?;
    Ok((config_path, config))
}

/// The demo config, as a user would write it.
fn config_text(dir: &Path, upstreams: &[SampleUpstream]) -> String {
    let weights: Vec<String> = CAST
        .iter()
        .map(|c| format!("{} = {}", c.name, c.weight))
        .collect();
    let mut text = format!(
        "# Written by `switchyard demo`.\n\
         [proxy]\nlisten = \"127.0.0.1:0\"\n\n\
         [admin]\nsocket = {socket:?}\n\n\
         [state]\ndir = {state:?}\n\n\
         [services.{SERVICE}]\nstable = \"blue\"\nweights = {{ {weights} }}\n\
         checks_every = \"2s\"\n\n\
         [services.{SERVICE}.health]\npath = \"/healthz\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n\n\
         [[services.{SERVICE}.checks]]\nname = \"home page\"\npath = \"/\"\nexpect_body = \"version=\"\nmax_latency = \"500ms\"\n",
        socket = dir.join("admin.sock").display().to_string(),
        state = dir.join("state").display().to_string(),
        weights = weights.join(", "),
    );
    for (cast, upstream) in CAST.iter().zip(upstreams) {
        let _ = write!(
            text,
            "\n[services.{SERVICE}.versions.{name}]\nendpoints = [\"{addr}\"]\nrelease = {release}\n",
            name = cast.name,
            addr = upstream.addr,
            release = cast.release,
        );
    }
    text
}
