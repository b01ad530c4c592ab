//! `switchyard ctl`: the admin API's command-line client.

pub mod client;
mod fleet;
mod render;

use crate::admin::api::{ReloadResponse, RolloutStatus};
use crate::config::runtime::RuntimeVersion;
use crate::config::{Release, DEFAULT_ADMIN_SOCKET};
use crate::control::command::{Change, Command, Order, RolloutAction};
use crate::control::record::RevisionRecord;
use crate::telemetry::shadow::ShadowVerdict;
use clap::{Args, Subcommand};
use client::{AdminClient, ClientError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// Admin socket of the running proxy [default: $SWITCHYARD_SOCKET, else /tmp/switchyard.sock]
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// Print the server's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// Who asks for a change, and why (recorded in the revision); and whether to wait for the
/// fleet.
#[derive(Args, Debug, Clone)]
pub struct Why {
    /// Why this change (recorded in history).
    #[arg(long)]
    pub reason: Option<String>,
    /// Who is changing it [default: the local user name].
    #[arg(long)]
    pub actor: Option<String>,
    /// Go ahead even where a pre-flight check refuses (recorded in history).
    #[arg(long)]
    pub force: bool,
    /// In a fleet: after the acknowledgement, also wait until every live member has
    /// applied it (at most LIMIT, default 10s; then name the members that lag and fail).
    #[arg(long, value_name = "LIMIT", num_args = 0..=1, default_missing_value = "10s", value_parser = crate::config::parse_duration)]
    pub wait_fleet: Option<Duration>,
}

#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Every service (or one): versions, weights, live rates, latency, latch and freeze.
    Status { service: Option<String> },
    /// Set a service's weights, e.g. `weights shop blue=90 canary=10` (unnamed versions get 0).
    Weights {
        service: String,
        #[arg(required = true, value_name = "VERSION=WEIGHT")]
        weights: Vec<String>,
        #[command(flatten)]
        why: Why,
    },
    /// All traffic to VERSION, which becomes stable (blue-green).
    Switch {
        service: String,
        version: String,
        #[command(flatten)]
        why: Why,
    },
    /// The canary becomes stable at 100%.
    Promote {
        service: String,
        #[command(flatten)]
        why: Why,
    },
    /// All traffic back to stable now, latched until `resume`.
    Abort {
        service: String,
        #[command(flatten)]
        why: Why,
    },
    /// Lift an abort's latch.
    Resume {
        service: String,
        #[command(flatten)]
        why: Why,
    },
    /// Return to the routing of a revision (default: before the last routing change).
    Rollback {
        service: String,
        #[arg(long, value_name = "REV")]
        to: Option<u64>,
        #[command(flatten)]
        why: Why,
    },
    /// No traffic increase toward a non-stable version until `unfreeze`.
    Freeze {
        service: String,
        #[command(flatten)]
        why: Why,
    },
    /// Allow traffic increases again.
    Unfreeze {
        service: String,
        #[command(flatten)]
        why: Why,
    },
    /// Who changed what, when and why.
    History {
        service: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Run a version's checks now (default: every version with traffic); exits non-zero
    /// when any fails.
    Checks {
        service: String,
        version: Option<String>,
    },
    /// What shadow traffic found ([services.NAME.shadow]): compared, differing, noise,
    /// skipped, the top differing fields; exits non-zero when the shadow check fails.
    Shadow { service: String },
    /// Automatic cutbacks the guard recorded, newest first.
    Incidents { service: Option<String> },
    /// The instances sharing this routing ([cluster]): applied revision, lag, last seen.
    Fleet,
    /// Start, pause or resume the service's progressive rollout ([services.NAME.rollout]).
    Rollout {
        service: String,
        /// start (the canary at the first step), pause (hold the step), or resume (carry on;
        /// the step's bake starts over).
        #[arg(value_name = "start|pause|resume", value_parser = rollout_action)]
        action: RolloutAction,
        #[command(flatten)]
        why: Why,
    },
    /// Add a version at runtime, with no traffic until a weights change, switch or
    /// rollout gives it some (its checks run first, as for a version from the file).
    Release {
        service: String,
        version: String,
        /// An endpoint of the version, IP:PORT or NAME:PORT (repeat for more).
        #[arg(long = "endpoint", value_name = "HOST:PORT", required = true)]
        endpoints: Vec<String>,
        /// How the proxy talks to it: http1 or h2c.
        #[arg(long, value_name = "http1|h2c")]
        protocol: Option<String>,
        /// What was deployed: version=..., commit=..., notes=... (repeatable).
        #[arg(long, value_name = "KEY=VALUE")]
        meta: Vec<String>,
        /// Then start the service's configured rollout of this version.
        #[arg(long)]
        rollout: bool,
        #[command(flatten)]
        why: Why,
    },
    /// Remove a version added at runtime that takes no traffic.
    Retire {
        service: String,
        version: String,
        #[command(flatten)]
        why: Why,
    },
    /// Let the rollout's step that waits for approval (`approve = true`) go on once it has
    /// baked; who and why are recorded as a revision.
    Approve {
        service: String,
        #[command(flatten)]
        why: Why,
    },
    /// Re-read the config file (topology; routing edits in the file apply as a revision).
    Reload {
        #[command(flatten)]
        why: Why,
    },
}

impl CtlCommand {
    /// Who and why, for the commands that change something.
    fn why(&self) -> Option<&Why> {
        match self {
            CtlCommand::Weights { why, .. }
            | CtlCommand::Switch { why, .. }
            | CtlCommand::Promote { why, .. }
            | CtlCommand::Abort { why, .. }
            | CtlCommand::Resume { why, .. }
            | CtlCommand::Rollback { why, .. }
            | CtlCommand::Freeze { why, .. }
            | CtlCommand::Unfreeze { why, .. }
            | CtlCommand::Rollout { why, .. }
            | CtlCommand::Release { why, .. }
            | CtlCommand::Retire { why, .. }
            | CtlCommand::Approve { why, .. }
            | CtlCommand::Reload { why } => Some(why),
            _ => None,
        }
    }
}

fn rollout_action(verb: &str) -> Result<RolloutAction, String> {
    crate::admin::rest::rollout_action(verb).map_err(|err| err.to_string())
}

/// Runs one ctl command; prints the answer, or one line of error and a failure code.
pub fn main(args: CtlArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("switchyard ctl: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(ClientError::Failed(output)) => {
            print!("{output}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("switchyard ctl: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The default socket: `$SWITCHYARD_SOCKET`, else /tmp/switchyard.sock.
pub fn default_socket() -> PathBuf {
    std::env::var_os("SWITCHYARD_SOCKET")
        .filter(|s| !s.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_ADMIN_SOCKET), PathBuf::from)
}

async fn run(args: CtlArgs) -> Result<String, ClientError> {
    let client = AdminClient::new(args.socket.clone().unwrap_or_else(default_socket));
    let json = args.json;
    let wait_fleet = args.command.why().and_then(|why| why.wait_fleet);
    let order = match args.command {
        CtlCommand::Status { service: None } => {
            let status = client.status().await?;
            return Ok(if json {
                as_json(&status)
            } else {
                render::status(&status)
            });
        }
        CtlCommand::Status {
            service: Some(service),
        } => {
            let status = client.service(&service).await?;
            return Ok(if json {
                as_json(&status)
            } else {
                render::service(&status)
            });
        }
        CtlCommand::History { service, limit } => {
            let history = client.history(&service, limit).await?;
            return Ok(if json {
                as_json(&history)
            } else {
                render::history(&history)
            });
        }
        CtlCommand::Checks { service, version } => {
            let found = client.checks(&service, version).await?;
            let text = match json {
                true => as_json(&found),
                false => render::checks(&found),
            };
            return match found.passed {
                true => Ok(text),
                false => Err(ClientError::Failed(text)),
            };
        }
        CtlCommand::Shadow { service } => {
            let found = client.shadow(&service).await?;
            let text = match json {
                true => as_json(&found),
                false => render::shadow(&service, &found),
            };
            return match found.verdict {
                ShadowVerdict::Fail { .. } => Err(ClientError::Failed(text)),
                _ => Ok(text),
            };
        }
        CtlCommand::Fleet => {
            let fleet = client.fleet().await?;
            let text = match json {
                true => as_json(&fleet),
                false => render::fleet(&fleet),
            };
            // During an outage the member list is not the fleet's: say so, and fail.
            return match fleet.connected && fleet.log_revision.is_some() {
                true => Ok(text),
                false => Err(ClientError::Failed(text)),
            };
        }
        CtlCommand::Incidents { service } => {
            let incidents = client.incidents(service.as_deref()).await?;
            return Ok(if json {
                as_json(&incidents)
            } else {
                render::incidents(&incidents)
            });
        }
        CtlCommand::Rollout {
            service,
            action,
            why,
        } => order(Command::Rollout { service, action }, why),
        CtlCommand::Approve { service, why } => order(Command::Approve { service }, why),
        CtlCommand::Reload { why } => order(Command::Reload {}, why),
        CtlCommand::Weights {
            service,
            weights,
            why,
        } => {
            let weights = parse_weights(&weights)?;
            change(service, Change::Weights { weights }, why)
        }
        CtlCommand::Switch {
            service,
            version,
            why,
        } => change(service, Change::Switch { version }, why),
        CtlCommand::Rollback { service, to, why } => change(service, Change::Rollback { to }, why),
        CtlCommand::Release {
            service,
            version,
            endpoints,
            protocol,
            meta,
            rollout,
            why,
        } => {
            let spec = RuntimeVersion {
                endpoints,
                protocol: protocol.unwrap_or_default(),
                release: parse_meta(&meta)?,
                rollout,
                addrs: Vec::new(),
            };
            let spec = Box::new(spec);
            change(service, Change::Release { version, spec }, why)
        }
        CtlCommand::Retire {
            service,
            version,
            why,
        } => change(service, Change::Retire { version }, why),
        CtlCommand::Promote { service, why } => change(service, Change::Promote {}, why),
        CtlCommand::Abort { service, why } => change(service, Change::Abort {}, why),
        CtlCommand::Resume { service, why } => change(service, Change::Resume {}, why),
        CtlCommand::Freeze { service, why } => change(service, Change::Freeze {}, why),
        CtlCommand::Unfreeze { service, why } => change(service, Change::Unfreeze {}, why),
    };
    let output = match &order.command {
        Command::Change { service, change } => {
            let record: RevisionRecord = client.send(&order).await?;
            match (json, change) {
                (true, _) => as_json(&record),
                (false, Change::Release { version, spec }) if spec.rollout => format!(
                    "{}{service}: rollout of {version} started\n",
                    render::revision(&record)
                ),
                (false, _) => render::revision(&record),
            }
        }
        Command::Rollout { service, .. } | Command::Approve { service } => {
            let status: RolloutStatus = client.send(&order).await?;
            match json {
                true => as_json(&status),
                false => format!("{service}: {}\n", render::rollout(&status)),
            }
        }
        Command::Reload {} => {
            let reloaded: ReloadResponse = client.send(&order).await?;
            match json {
                true => as_json(&reloaded),
                false => render::reload(&reloaded),
            }
        }
    };
    match wait_fleet {
        None => Ok(output),
        Some(limit) => match fleet::wait(&client, limit).await {
            Ok(line) => Ok(output + &line),
            Err(ClientError::Failed(line)) => Err(ClientError::Failed(output + &line)),
            Err(err) => Err(ClientError::Failed(format!(
                "{output}--wait-fleet: {err}\n"
            ))),
        },
    }
}

fn order(command: Command, why: Why) -> Order {
    Order {
        command,
        actor: actor(why.actor),
        reason: why.reason.unwrap_or_default(),
        force: why.force,
    }
}

fn change(service: String, change: Change, why: Why) -> Order {
    order(Command::Change { service, change }, why)
}

/// The server's answer as pretty JSON, for `--json`.
fn as_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// `VERSION=WEIGHT` pairs; weights are whole numbers of any sum.
fn parse_weights(pairs: &[String]) -> Result<BTreeMap<String, u64>, ClientError> {
    let mut weights = BTreeMap::new();
    for pair in pairs {
        let bad = |why: &str| ClientError::Api {
            status: http::StatusCode::BAD_REQUEST,
            message: format!("weights: {pair:?} {why}"),
        };
        let (version, weight) = pair
            .split_once('=')
            .ok_or_else(|| bad("is not VERSION=WEIGHT"))?;
        let weight: u64 = weight
            .parse()
            .map_err(|_| bad("needs a whole number weight of 0 or more"))?;
        if weights.insert(version.to_string(), weight).is_some() {
            return Err(bad("names the version a second time"));
        }
    }
    Ok(weights)
}

/// `--meta KEY=VALUE` pairs: the release's version, commit and notes.
fn parse_meta(pairs: &[String]) -> Result<Release, ClientError> {
    let mut release = Release::default();
    for pair in pairs {
        let bad = |why: String| ClientError::Api {
            status: http::StatusCode::BAD_REQUEST,
            message: format!("--meta {pair:?}: {why}"),
        };
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| bad("is not KEY=VALUE".into()))?;
        release.set(key, value).map_err(bad)?;
    }
    Ok(release)
}

/// `--actor`, else the local user name.
fn actor(given: Option<String>) -> String {
    given.unwrap_or_else(local_user)
}

fn local_user() -> String {
    if let Some(user) = std::env::var_os("USER").filter(|u| !u.is_empty()) {
        return user.to_string_lossy().into_owned();
    }
    passwd_name().unwrap_or_else(|| format!("uid:{}", current_uid()))
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

fn passwd_name() -> Option<String> {
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buffer = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live, correctly sized storage owned by this frame;
    // getpwuid_r writes only within `entry` and `buffer`.
    let code = unsafe {
        libc::getpwuid_r(
            libc::getuid(),
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if code != 0 || found.is_null() || entry.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points to a NUL-terminated string inside `buffer`.
    let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
    Some(name.to_string_lossy().into_owned())
}
