//! The admin listeners: a Unix socket (mode 0600, never stolen from a live process) and an
//! optional TCP address where reads are open and mutations need the bearer token.

use super::context::{AdminContext, Parts};
use super::routes::{handle, Transport};
use crate::config::secret::{read_secret, MIN_SHARED_SECRET};
use crate::config::Config;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;

/// Largest request head the admin API reads.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin socket {}: {why}", path.display())]
    Socket { path: PathBuf, why: String },
    #[error("admin socket {}: another switchyard is answering on it; stop it or set another [admin] socket", path.display())]
    InUse { path: PathBuf },
    #[error("admin listen {addr}: {source}")]
    Tcp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin token_file: {why}")]
    Token { why: String },
}

/// The running admin API. `stop` (or drop) closes it and removes the socket file.
pub struct AdminServer {
    pub socket: PathBuf,
    /// The TCP address actually bound, when `[admin] listen` is set.
    pub tcp: Option<SocketAddr>,
    socket_inode: u64,
    tasks: Vec<JoinHandle<()>>,
}

impl AdminServer {
    pub async fn start(
        parts: Parts,
        config: &Config,
        proxy_addr: SocketAddr,
    ) -> Result<AdminServer, AdminError> {
        let token = match &config.admin_token_file {
            Some(path) => Some(read_token(path)?),
            None => None,
        };
        let tcp_listener = match config.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| AdminError::Tcp { addr, source })?,
            ),
            None => None,
        };
        let tcp = match &tcp_listener {
            Some(listener) => Some(listener.local_addr().map_err(|source| AdminError::Tcp {
                addr: config.admin_listen.unwrap_or(proxy_addr),
                source,
            })?),
            None => None,
        };
        let (unix_listener, socket_inode) = bind_unix(&config.admin_socket)?;
        let context = Arc::new(AdminContext {
            parts,
            proxy_addr,
            admin_addr: tcp,
            token,
        });
        let mut tasks = vec![tokio::spawn(accept_unix(unix_listener, context.clone()))];
        if let Some(listener) = tcp_listener {
            tasks.push(tokio::spawn(accept_tcp(listener, context)));
        }
        Ok(AdminServer {
            socket: config.admin_socket.clone(),
            tcp,
            socket_inode,
            tasks,
        })
    }

    pub fn stop(self) {
        // Drop does the work.
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // Remove the socket only if it is still ours (not replaced by a newer process).
        let ours = std::fs::symlink_metadata(&self.socket)
            .is_ok_and(|meta| meta.ino() == self.socket_inode);
        if ours {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

fn read_token(path: &Path) -> Result<Vec<u8>, AdminError> {
    read_secret(path, MIN_SHARED_SECRET)
        .map(String::into_bytes)
        .map_err(|why| AdminError::Token { why })
}

/// Binds the socket under a temporary name, restricts it to the owner, then renames it into
/// place: the final path never exists with looser permissions, and a stale file from a
/// crashed run is replaced in one step. A live socket (something answers) is refused.
fn bind_unix(path: &Path) -> Result<(UnixListener, u64), AdminError> {
    let socket_error = |why: String| AdminError::Socket {
        path: path.to_path_buf(),
        why,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(socket_error(
                "exists and is not a socket; remove it or set another [admin] socket".into(),
            ))
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(AdminError::InUse {
                    path: path.to_path_buf(),
                })
            }
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                tracing::warn!(socket = %path.display(), "replacing a stale admin socket");
            }
            Err(err) => return Err(socket_error(err.to_string())),
        },
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(socket_error(err.to_string())),
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| socket_error("is not a file path".into()))?;
    let temporary = path.with_file_name(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&temporary);
    let listener = std::os::unix::net::UnixListener::bind(&temporary)
        .map_err(|err| socket_error(format!("cannot bind: {err}")))?;
    let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temporary, path))
        .and_then(|()| std::fs::symlink_metadata(path))
        .and_then(|meta| listener.set_nonblocking(true).map(|()| meta.ino()));
    let inode = match placed {
        Ok(inode) => inode,
        Err(err) => {
            let _ = std::fs::remove_file(&temporary);
            return Err(socket_error(err.to_string()));
        }
    };
    let listener = UnixListener::from_std(listener).map_err(|err| socket_error(err.to_string()))?;
    Ok((listener, inode))
}

async fn accept_unix(listener: UnixListener, context: Arc<AdminContext>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, Transport::Unix, context.clone()));
            }
            Err(err) => accept_failed(err).await,
        }
    }
}

async fn accept_tcp(listener: TcpListener, context: Arc<AdminContext>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, Transport::Tcp, context.clone()));
            }
            Err(err) => accept_failed(err).await,
        }
    }
}

async fn accept_failed(err: std::io::Error) {
    tracing::warn!(error = %err, "admin accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn serve<S>(stream: S, transport: Transport, context: Arc<AdminContext>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| handle(context.clone(), transport, request));
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES + 16 * 1024)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(err) = served {
        tracing::debug!(error = %err, "admin connection ended with an error");
    }
}
