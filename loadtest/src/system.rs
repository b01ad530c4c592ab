//! The harness's dealings with the machine: file limits, building the proxy binary.

use crate::HarnessError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Raises the soft limit on open files to the hard limit: 10,000 client connections
/// need 10,000 descriptors here, and the proxy (a child) inherits the same limit.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a live struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The soft limit on open files now in force.
pub fn open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    limit.rlim_cur
}

/// The switchyard binary to test: the one given, or a fresh build in this harness's
/// own target directory and profile (so `cargo run --release -p loadtest` tests
/// `target/release/switchyard`).
pub fn switchyard_binary(given: Option<PathBuf>) -> Result<PathBuf, HarnessError> {
    if let Some(path) = given {
        return Ok(path);
    }
    let exe = std::env::current_exe()
        .map_err(|e| HarnessError::Io("cannot find this program's path".into(), e))?;
    let profile_dir = exe
        .parent()
        .ok_or_else(|| HarnessError::Setup("this program has no directory".into()))?;
    let release = profile_dir
        .file_name()
        .is_some_and(|name| name == "release");
    let target_dir = profile_dir.parent().unwrap_or(profile_dir);
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "building the switchyard binary ({})",
        if release { "release" } else { "debug" }
    );
    let mut build = Command::new(cargo);
    // `cargo run` hands this program its package's variables; passed on, they would make
    // the nested build look different from a plain `cargo build` and rebuild everything.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || key.starts_with("CARGO_BIN_")
            || key == "CARGO_CRATE_NAME"
            || key == "CARGO_PRIMARY_PACKAGE"
        {
            build.env_remove(key.as_ref());
        }
    }
    build
        .args(["build", "--bin", "switchyard", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target_dir);
    if release {
        build.arg("--release");
    }
    let status = build
        .status()
        .map_err(|e| HarnessError::Io("cannot run cargo to build switchyard".into(), e))?;
    if !status.success() {
        return Err(HarnessError::Setup("building switchyard failed".into()));
    }
    Ok(profile_dir.join("switchyard"))
}

/// Whether a program is on the PATH.
pub fn has_program(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        || Path::new("/usr/sbin").join(name).is_file()
}

/// A loopback port that was free a moment ago (the proxy binds it next).
pub fn free_port() -> std::io::Result<std::net::SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}
