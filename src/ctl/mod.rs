//! `switchyard ctl`: the admin API's command-line client.

pub mod client;
mod render;

use crate::config::DEFAULT_ADMIN_SOCKET;
use crate::control::api::{ChangeRequest, ReloadRequest};
use clap::{Args, Subcommand, ValueEnum};
use client::{AdminClient, ClientError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

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

/// Who asks for a change, and why (recorded in the revision).
#[derive(Args, Debug, Clone)]
pub struct Why {
    /// Why this change (recorded in history).
    #[arg(long)]
    pub reason: Option<String>,
    /// Who is changing it [default: the local user name].
    #[arg(long)]
    pub actor: Option<String>,
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
    /// Automatic cutbacks the guard recorded, newest first.
    Incidents { service: Option<String> },
    /// The instances sharing this routing ([cluster]): applied revision, lag, last seen.
    Fleet,
    /// Start, pause or resume the service's progressive rollout ([services.NAME.rollout]).
    Rollout {
        service: String,
        action: RolloutAction,
        #[command(flatten)]
        why: Why,
    },
    /// Re-read the config file (topology; routing edits in the file apply as a revision).
    Reload {
        #[command(flatten)]
        why: Why,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum RolloutAction {
    /// Put the canary at the first step; it advances on healthy verdicts.
    Start,
    /// Hold the step in force.
    Pause,
    /// Carry on from the step in force (its bake starts over).
    Resume,
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
    let (service, action, request) = match args.command {
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
        CtlCommand::Fleet => {
            let fleet = client.fleet().await?;
            return Ok(if json {
                as_json(&fleet)
            } else {
                render::fleet(&fleet)
            });
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
        } => {
            let action = match action {
                RolloutAction::Start => "start",
                RolloutAction::Pause => "pause",
                RolloutAction::Resume => "resume",
            };
            let status = client
                .rollout(&service, action, &change_request(why))
                .await?;
            return Ok(if json {
                as_json(&status)
            } else {
                format!("{service}: {}\n", render::rollout(&status))
            });
        }
        CtlCommand::Reload { why } => {
            let request = ReloadRequest {
                actor: Some(actor(why.actor)),
                reason: why.reason,
            };
            let reloaded = client.reload(&request).await?;
            return Ok(if json {
                as_json(&reloaded)
            } else {
                render::reload(&reloaded)
            });
        }
        CtlCommand::Weights {
            service,
            weights,
            why,
        } => {
            let mut request = change_request(why);
            request.weights = Some(parse_weights(&weights)?);
            (service, "weights", request)
        }
        CtlCommand::Switch {
            service,
            version,
            why,
        } => {
            let mut request = change_request(why);
            request.version = Some(version);
            (service, "switch", request)
        }
        CtlCommand::Rollback { service, to, why } => {
            let mut request = change_request(why);
            request.to = to;
            (service, "rollback", request)
        }
        CtlCommand::Promote { service, why } => (service, "promote", change_request(why)),
        CtlCommand::Abort { service, why } => (service, "abort", change_request(why)),
        CtlCommand::Resume { service, why } => (service, "resume", change_request(why)),
        CtlCommand::Freeze { service, why } => (service, "freeze", change_request(why)),
        CtlCommand::Unfreeze { service, why } => (service, "unfreeze", change_request(why)),
    };
    let record = client.change(&service, action, &request).await?;
    Ok(if json {
        as_json(&record)
    } else {
        render::revision(&record)
    })
}

/// The server's answer as pretty JSON, for `--json`.
fn as_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

fn change_request(why: Why) -> ChangeRequest {
    ChangeRequest {
        actor: Some(actor(why.actor)),
        reason: why.reason,
        ..ChangeRequest::default()
    }
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
