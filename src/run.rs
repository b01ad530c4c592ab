//! `switchyard run`: the proxy process, its signals and its shutdown.

use crate::config::Config;
use crate::control::Controller;
use crate::dataplane::server::{bind, serve, ServerSettings};
use crate::dataplane::tls;
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
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
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
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
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
        let controller = Arc::new(Controller::new(config, config_path.to_path_buf(), shards));
        let (stop, stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve(listener, controller.plane.clone(), settings, stop_rx));
        Ok(RunningProxy {
            controller,
            addr,
            stop,
            server,
        })
    }

    /// Stops accepting and waits for open requests to drain (up to the drain deadline).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
    }
}

/// Runs the proxy until SIGTERM or SIGINT, then drains. SIGHUP reloads the config.
pub async fn run(config_path: &Path, config: Config, workers: usize) -> Result<(), RunError> {
    let mut hangup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let proxy = RunningProxy::start(config, config_path, workers).await?;
    tracing::info!(listen = %proxy.addr, "switchyard is serving");
    let reloader = proxy.controller.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match reloader.reload().await {
                Ok(revision) => tracing::info!(revision, "config reloaded"),
                Err(err) => tracing::error!("reload rejected, routing unchanged:\n{err}"),
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
