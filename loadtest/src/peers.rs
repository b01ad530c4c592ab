//! HAProxy and NGINX as peers in a comparison: installed from Debian when missing,
//! configured like switchyard (90/10 weights, keep-alive both sides, one thread),
//! run in the foreground on loopback ports with their files in the run directory.

use crate::system::has_program;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub struct Peer {
    child: Child,
}

impl Peer {
    /// SIGTERM and a bounded wait, then SIGKILL. Killing NGINX's master outright would
    /// orphan its worker, which then keeps running (and holding its port) after the run.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) with a pid we spawned and a valid signal number.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            let exited = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
            if exited.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// What every proxy in the comparison forwards to.
pub struct Backends {
    pub stable: SocketAddr,
    pub canary: SocketAddr,
    pub stable_weight: u32,
    pub canary_weight: u32,
}

/// Installs haproxy and nginx with apt-get when either is missing.
pub fn ensure_installed() -> Result<(), String> {
    let missing: Vec<&str> = ["haproxy", "nginx"]
        .into_iter()
        .filter(|name| !has_program(name))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {} with apt-get", missing.join(" "));
    let install = || {
        std::process::Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // A fresh machine may have no package lists yet.
    if install() {
        return Ok(());
    }
    let _ = std::process::Command::new("apt-get")
        .args(["update", "-q"])
        .stdout(Stdio::null())
        .status();
    if install() {
        Ok(())
    } else {
        Err(format!("apt-get install {} failed", missing.join(" ")))
    }
}

pub async fn start_haproxy(dir: &Path, listen: SocketAddr, to: &Backends) -> Result<Peer, String> {
    let config = format!(
        "global\n    nbthread 1\n    maxconn 8000\n\n\
         defaults\n    mode http\n    option http-keep-alive\n    http-reuse always\n\
         \x20   timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         \x20   timeout http-keep-alive 30s\n    maxconn 8000\n\n\
         frontend fe\n    bind {listen} backlog 4096\n    default_backend split\n\n\
         backend split\n    balance roundrobin\n\
         \x20   server stable {} weight {} maxconn 4096\n\
         \x20   server canary {} weight {} maxconn 4096\n",
        to.stable, to.stable_weight, to.canary, to.canary_weight
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut command = Command::new("haproxy");
    command.arg("-db").arg("-f").arg(&path);
    start(command, dir, "haproxy", listen).await
}

pub async fn start_nginx(dir: &Path, listen: SocketAddr, to: &Backends) -> Result<Peer, String> {
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(&prefix)
        .map_err(|e| format!("cannot create {}: {e}", prefix.display()))?;
    let config = format!(
        "worker_processes 1;\npid nginx.pid;\nerror_log error.log warn;\n\
         events {{ worker_connections 20000; multi_accept on; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 75s;\n\
         \x20 client_body_temp_path body_temp;\n  proxy_temp_path proxy_temp;\n\
         \x20 fastcgi_temp_path fastcgi_temp;\n  uwsgi_temp_path uwsgi_temp;\n  scgi_temp_path scgi_temp;\n\
         \x20 upstream split {{\n    server {} weight={};\n    server {} weight={};\n\
         \x20   keepalive 256;\n    keepalive_requests 1000000;\n    keepalive_timeout 60s;\n  }}\n\
         \x20 server {{\n    listen {listen} backlog=4096;\n    location / {{\n\
         \x20     proxy_pass http://split;\n      proxy_http_version 1.1;\n\
         \x20     proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
        to.stable, to.stable_weight, to.canary, to.canary_weight
    );
    let path = prefix.join("nginx.conf");
    std::fs::write(&path, config).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut command = Command::new("nginx");
    command
        .arg("-e")
        .arg(prefix.join("early-error.log"))
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off;"]);
    start(command, dir, "nginx", listen).await
}

async fn start(
    mut command: Command,
    dir: &Path,
    name: &str,
    listen: SocketAddr,
) -> Result<Peer, String> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))
        .map_err(|e| format!("cannot create the {name} log: {e}"))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    let mut peer = Peer { child };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = peer.child.try_wait() {
            return Err(format!(
                "{name} exited at start ({status}); see {name}.log in {}",
                dir.display()
            ));
        }
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            return Ok(peer);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    peer.stop().await;
    Err(format!("{name} did not listen on {listen} within 10 s"))
}
