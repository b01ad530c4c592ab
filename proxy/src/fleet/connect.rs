//! The connection to NATS: `[cluster] auth` and `tls` made into connect options, one first
//! attempt that tells a refusal (credentials, certificates) from an outage, and a log that
//! says each condition once instead of on every reconnect.

use super::FleetError;
use crate::config::cluster::{ClusterSettings, NatsAuth};
use crate::config::secret::read_password;
use async_nats::{ConnectErrorKind, ConnectOptions, Event};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A refusal seen on reconnects is logged at most this often.
const SAY_REFUSAL_EVERY: Duration = Duration::from_secs(60);

/// Connects to NATS. A server that refuses this instance (authorization, TLS) stops the
/// start with one line; a server that does not answer does not (the client keeps trying in
/// the background and the instance serves its cache meanwhile).
pub(crate) async fn connect(settings: &ClusterSettings) -> Result<async_nats::Client, FleetError> {
    let servers = settings.servers.clone();
    match options(settings).await?.connect(servers.clone()).await {
        Ok(client) => Ok(client),
        Err(err) if refused(&err) => Err(FleetError(format!(
            "NATS refused this instance ({}): check [cluster] auth and tls against the server's configuration",
            causes(&err)
        ))),
        Err(err) => {
            tracing::debug!(%err, "NATS not reachable at start; connecting in the background");
            options(settings)
                .await?
                .retry_on_initial_connect()
                .connect(servers)
                .await
                .map_err(|err| FleetError(err.to_string()))
        }
    }
}

/// What no retry mends: the server does not accept this instance, or the TLS handshake
/// failed (a certificate either side does not trust; the client reports it as I/O).
fn refused(err: &async_nats::ConnectError) -> bool {
    let kind = matches!(
        err.kind(),
        ConnectErrorKind::AuthorizationViolation
            | ConnectErrorKind::Authentication
            | ConnectErrorKind::Tls
    );
    kind || chain(err).any(|cause| {
        cause.downcast_ref::<rustls::Error>().is_some()
            || cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
    })
}

fn chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

/// The error and its causes, as one line.
fn causes(err: &async_nats::ConnectError) -> String {
    let mut said: Vec<String> = Vec::new();
    for cause in chain(err) {
        let text = cause.to_string();
        if !said.iter().any(|s| s.contains(&text)) {
            said.push(text);
        }
    }
    said.join(": ")
}

async fn options(settings: &ClusterSettings) -> Result<ConnectOptions, FleetError> {
    let mut options = ConnectOptions::new()
        .name(format!(
            "switchyard {}/{}",
            settings.name, settings.instance
        ))
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempt| {
            Duration::from_millis((attempt as u64 * 250).min(2_000))
        })
        .event_callback(say_once());
    let secret = |path: &std::path::Path| {
        read_password(path).map_err(|why| FleetError(format!("auth: {why}")))
    };
    options = match &settings.auth {
        None => options,
        Some(NatsAuth::UserPassword {
            user,
            password_file,
        }) => options.user_and_password(user.clone(), secret(password_file)?),
        Some(NatsAuth::Token { file }) => options.token(secret(file)?),
        Some(NatsAuth::NkeySeed { file }) => options.nkey(secret(file)?.trim().to_string()),
        Some(NatsAuth::Creds { file }) => options.credentials_file(file).await.map_err(|err| {
            FleetError(format!("auth: cannot read creds {}: {err}", file.display()))
        })?,
    };
    let tls_scheme = settings.servers.iter().any(|s| s.starts_with("tls://"));
    if let Some(tls) = &settings.tls {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &tls.client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    } else if tls_scheme {
        options = options.require_tls(true);
    }
    Ok(options)
}

/// Logs the loss and the return of NATS once each, and a refusal at most once a minute,
/// not on every reconnect attempt.
fn say_once() -> impl Fn(Event) -> std::future::Ready<()> + Send + Sync + 'static {
    let down = Arc::new(AtomicBool::new(false));
    let refusal_said: Arc<Mutex<Option<Instant>>> = Arc::default();
    move |event| {
        match &event {
            Event::Disconnected => {
                if !down.swap(true, Ordering::Relaxed) {
                    tracing::warn!("NATS unreachable: serving the last routing; operator changes are refused until it is back");
                }
            }
            Event::Connected => {
                if down.swap(false, Ordering::Relaxed) {
                    tracing::info!("NATS reachable again: catching up with the fleet log");
                }
            }
            Event::ServerError(_) | Event::ClientError(_) => {
                let mut said = refusal_said.lock().unwrap_or_else(PoisonError::into_inner);
                if said.is_none_or(|at| at.elapsed() >= SAY_REFUSAL_EVERY) {
                    *said = Some(Instant::now());
                    tracing::error!(%event, "NATS connection error (said at most once a minute): check [cluster] auth, tls and the server's permissions");
                }
            }
            other => tracing::debug!(event = %other, "NATS event"),
        }
        std::future::ready(())
    }
}
