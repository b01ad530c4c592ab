//! `switchyard run`: the proxy process, its signals and its shutdown. This is where the
//! parts are wired together: the control plane, the guard and the rollout driver (which use
//! it through `RoutingControl`), the data plane and the admin API.

use crate::admin::{AdminError, AdminServer, Parts};
use crate::analysis::{Analysis, AnalysisBoard};
use crate::config::Config;
use crate::control::journal::JournalError;
use crate::control::record::Origin;
use crate::control::Controller;
use crate::dataplane::server::{bind, serve, ServerSettings};
use crate::dataplane::tls;
use crate::guard::incident::{IncidentError, IncidentLog};
use crate::guard::watch::Board;
use crate::guard::Guard;
use crate::rollout::{self, RolloutHandle};
use crate::verify::gate::{GateChecks, Verified};
use crate::verify::Verifier;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("the endpoint name lookups failed: {0}")]
    Lookup(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Incidents(#[from] IncidentError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
}

/// Choices made on the command line rather than in the config.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// Start even if the journal's hash chain is broken (the old file is kept aside).
    pub accept_broken_journal: bool,
}

/// Threads to run: the config's choice, else one per core this process may use.
pub fn worker_threads(config: &Config) -> usize {
    match config.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// A proxy serving in this process (used by `run`, `demo`, tests and the load harness).
pub struct RunningProxy {
    pub controller: Arc<Controller>,
    /// The guard's latest verdicts, and the incidents it recorded.
    pub board: Arc<Board>,
    pub incidents: Arc<IncidentLog>,
    pub rollouts: RolloutHandle,
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    pub admin: AdminServer,
    /// What the health checks and the return point's checks last found.
    pub verifier: Arc<Verifier>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl RunningProxy {
    /// Binds the listener and starts serving. `config_path` is what a reload re-reads.
    pub async fn start(
        config: Config,
        config_path: &Path,
        shards: usize,
    ) -> Result<RunningProxy, RunError> {
        Self::start_with(config, config_path, shards, StartOptions::default()).await
    }

    /// Replays the journal in `config.state_dir`, binds the proxy listener and the admin
    /// API, and starts serving with the last acknowledged routing.
    pub async fn start_with(
        config: Config,
        config_path: &Path,
        shards: usize,
        options: StartOptions,
    ) -> Result<RunningProxy, RunError> {
        // Applying the config looks its endpoint names up and builds its TLS clients
        // (reading it does neither); lookups may block, so off the runtime's threads.
        let path = config_path.to_path_buf();
        let config = tokio::task::spawn_blocking(move || {
            let mut config = config;
            crate::control::resolve::resolve_names(&mut config, &path)?;
            crate::upstream::tls_cache::shared().apply(&config, &path)?;
            Ok::<_, crate::config::ConfigError>(config)
        })
        .await
        .map_err(|err| RunError::Lookup(err.to_string()))??;
        let tls = match &config.tls {
            Some(paths) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(paths)?)),
            None => None,
        };
        let listener = bind(config.listen)
            .await
            .map_err(|source| RunError::Listen {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| RunError::Listen {
            addr: config.listen,
            source,
        })?;
        let settings = ServerSettings::from_config(&config, tls);
        let incidents = Arc::new(IncidentLog::open(&config.state_dir)?);
        let fleet = match &config.cluster {
            Some(cluster) => Some(crate::fleet::Fleet::connect(cluster).await?),
            None => None,
        };
        let controller = Arc::new(
            Controller::open_with(
                config.clone(),
                config_path.to_path_buf(),
                shards,
                options.accept_broken_journal,
                fleet,
            )
            .await?,
        );
        let board = Arc::new(Board::default());
        let (stop, stop_rx) = watch::channel(false);
        let verifier = Arc::new(Verifier::default());
        controller.set_checks(Arc::new(GateChecks {
            plane: controller.plane.clone(),
            verifier: verifier.clone(),
        }));
        // Operators, rollouts and the guard all change routing through the validation.
        let verified = Arc::new(Verified {
            control: controller.clone(),
            plane: controller.plane.clone(),
            verifier: verifier.clone(),
            incidents: incidents.clone(),
        });
        let analyses = Arc::new(AnalysisBoard::default());
        let rollouts = rollout::spawn(
            &config.state_dir,
            controller.fleet.as_ref(),
            rollout::Wired {
                control: verified.clone(),
                board: board.clone(),
                analyses: analyses.clone(),
                plane: controller.plane.clone(),
                incidents: incidents.clone(),
            },
            stop_rx.clone(),
        );
        let parts = Parts {
            controller: controller.clone(),
            board: board.clone(),
            incidents: incidents.clone(),
            rollouts: rollouts.clone(),
            analyses: analyses.clone(),
            verified: verified.clone(),
        };
        let admin = match AdminServer::start(parts, &config, addr).await {
            Ok(admin) => admin,
            Err(err) => {
                // Release the journal now, so a corrected start in this process can open it.
                let _ = stop.send(true);
                controller.stop().await;
                return Err(err.into());
            }
        };
        let driven = rollouts.clone();
        let analysis = Analysis {
            control: verified.clone(),
            plane: controller.plane.clone(),
            incidents: incidents.clone(),
            board: analyses.clone(),
            scope: Arc::new(move |service: &str| driven.drives(service)),
        };
        tokio::spawn(crate::analysis::run(analysis, stop_rx.clone()));
        let guard = Guard {
            control: verified,
            verifier: verifier.clone(),
            plane: controller.plane.clone(),
            board: board.clone(),
            incidents: incidents.clone(),
        };
        tokio::spawn(crate::guard::watch::run(guard, stop_rx.clone()));
        // In a fleet the guard's evidence is pooled: this instance's slices go out, the
        // other members' come into its telemetry (the guard reads them from there).
        if let Some(fleet) = &controller.fleet {
            tokio::spawn(
                fleet
                    .evidence
                    .clone()
                    .run(controller.telemetry.clone(), stop_rx.clone()),
            );
        }
        tokio::spawn(crate::control::resolve::run(
            controller.clone(),
            stop_rx.clone(),
        ));
        tokio::spawn(crate::verify::health::run(
            controller.clone(),
            verifier.health.clone(),
            stop_rx.clone(),
        ));
        tokio::spawn(crate::verify::return_point::run(
            verifier.clone(),
            controller.clone(),
            stop_rx.clone(),
        ));
        let server = tokio::spawn(serve(listener, controller.plane.clone(), settings, stop_rx));
        Ok(RunningProxy {
            controller,
            board,
            incidents,
            rollouts,
            addr,
            admin,
            verifier,
            stop,
            server,
        })
    }

    /// Stops accepting and waits for open requests to drain (up to the drain deadline).
    pub async fn shutdown(self) {
        self.admin.stop();
        let _ = self.stop.send(true);
        let _ = self.server.await;
        self.controller.stop().await;
        // The last lines and spans of the drained requests, written before the process ends.
        let telemetry = self.controller.telemetry.clone();
        let closed = tokio::task::spawn_blocking(move || telemetry.close_outputs());
        if tokio::time::timeout(OUTPUTS_CLOSE, closed).await.is_err() {
            tracing::warn!(
                "access log or span export still busy after {OUTPUTS_CLOSE:?}; stopping without it"
            );
        }
    }
}

/// How long shutdown waits for the access log's writer and the span exporter to finish.
const OUTPUTS_CLOSE: std::time::Duration = std::time::Duration::from_secs(15);

/// Runs the proxy until SIGTERM or SIGINT, then drains. SIGHUP reloads the config;
/// SIGUSR1 reopens the access log file (after logrotate moved it).
pub async fn run(
    config_path: &Path,
    config: Config,
    workers: usize,
    options: StartOptions,
) -> Result<(), RunError> {
    // A file-size limit (`ulimit -f`) must fail a write as a full disk does, which the
    // journal survives, rather than kill the proxy.
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let mut hangup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let mut reopen = signal(SignalKind::user_defined1()).map_err(RunError::Signals)?;
    tokio::spawn(async move {
        while reopen.recv().await.is_some() {
            crate::telemetry::access_log::reopen_files();
        }
    });
    let proxy = RunningProxy::start_with(config, config_path, workers, options).await?;
    tracing::info!(
        listen = %proxy.addr,
        admin_socket = %proxy.admin.socket.display(),
        admin_listen = ?proxy.admin.tcp,
        revision = proxy.controller.plane.table.load().revision,
        "switchyard is serving"
    );
    let reloader = proxy.controller.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match reloader.reload(Origin::new("reload", "SIGHUP")).await {
                Ok(reloaded) => tracing::info!(
                    revision = reloaded.revision,
                    changes = reloaded.changes.len(),
                    "config reloaded"
                ),
                Err(err) => tracing::error!("reload rejected, routing unchanged: {err}"),
            }
        }
    });
    tokio::select! {
        _ = terminate.recv() => {},
        _ = interrupt.recv() => {},
    }
    tracing::info!("shutting down: draining open requests");
    proxy.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
