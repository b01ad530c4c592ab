//! `switchyard run`: the proxy process, its signals and its shutdown.

use crate::config::Config;
use crate::control::Controller;
use crate::dataplane::server::{bind, serve, ServerSettings};
use crate::dataplane::tls;
use std::path::Path;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
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

/// Runs the proxy until SIGTERM or SIGINT, then drains.
pub async fn run(config_path: &Path, config: Config, workers: usize) -> Result<(), RunError> {
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
    let settings = ServerSettings::from_config(&config, tls);
    let controller = Arc::new(Controller::new(config, config_path.to_path_buf(), workers));
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut hangup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let reloader = controller.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match reloader.reload().await {
                Ok(revision) => tracing::info!(revision, "config reloaded"),
                Err(err) => tracing::error!("reload rejected, routing unchanged:\n{err}"),
            }
        }
    });
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    tracing::info!(listen = %settings_addr(&controller).await, "switchyard is serving");
    serve(listener, controller.plane.clone(), settings, stop_rx).await;
    Ok(())
}

async fn settings_addr(controller: &Controller) -> std::net::SocketAddr {
    controller.config().await.listen
}
