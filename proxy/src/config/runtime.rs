//! A version added at runtime (`ctl release`): what the file would say of it, journaled
//! with the service's routing so a restart, a reload and every fleet member find it.

use super::endpoint;
use super::{Release, UpstreamProtocol, VersionConfig};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Endpoints one release may name; more is a mistake, not a deployment.
pub const MAX_ENDPOINTS: usize = 64;
/// Longest version name (it travels in a response header).
pub const MAX_NAME: usize = 64;
/// Longest release field (`--meta version=...`, `commit=...`, `notes=...`).
pub const MAX_META: usize = 512;

/// A version added with `ctl release`. Journaled in every revision, so it takes fields it
/// does not know (a later release's): an older binary must still read the journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeVersion {
    /// The endpoint entries as given: `IP:port` or `name:port`.
    pub endpoints: Vec<String>,
    /// Their addresses when it was released (names are looked up again like the file's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<SocketAddr>,
    /// "http1" (the default) or "h2c".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Release::is_empty")]
    pub release: Release,
    /// The version the service's configured rollout rolls out (`--rollout`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollout: bool,
}

impl Release {
    pub fn is_empty(&self) -> bool {
        *self == Release::default()
    }

    /// Sets one field from `--meta KEY=VALUE`: only `version`, `commit` and `notes` exist.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let field = match key {
            "version" => &mut self.version,
            "commit" => &mut self.commit,
            "notes" => &mut self.notes,
            other => {
                return Err(format!(
                    "unknown release field {other:?} (version, commit, notes)"
                ))
            }
        };
        *field = value.to_string();
        Ok(())
    }
}

/// Why a version name cannot be used, if it cannot: 1 to 64 letters, digits, `.`, `_`, `-`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!(
            "a version name is 1 to {MAX_NAME} characters, not {}",
            name.len()
        ));
    }
    match name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        true => Ok(()),
        false => Err(format!(
            "version name {name:?} may hold only letters, digits, '.', '_' and '-'"
        )),
    }
}

impl RuntimeVersion {
    /// Every rule the spec breaks on its own, first one found (addresses aside).
    pub fn check(&self) -> Result<(), String> {
        match self.endpoints.len() {
            0 => return Err("a release needs at least one --endpoint HOST:PORT".into()),
            n if n > MAX_ENDPOINTS => {
                return Err(format!(
                    "{n} endpoints: at most {MAX_ENDPOINTS} in one release"
                ))
            }
            _ => {}
        }
        for (index, entry) in self.endpoints.iter().enumerate() {
            if self.endpoints[..index].contains(entry) {
                return Err(format!("endpoint {entry:?} is named twice"));
            }
            if entry.len() > 255 || !valid_entry(entry) {
                return Err(format!(
                    "endpoint {entry:?} is not IP:port or name:port (e.g. \"127.0.0.1:8080\")"
                ));
            }
        }
        self.upstream_protocol()?;
        let release = &self.release;
        for (key, value) in [
            ("version", &release.version),
            ("commit", &release.commit),
            ("notes", &release.notes),
        ] {
            if value.chars().count() > MAX_META || value.chars().any(char::is_control) {
                return Err(format!(
                    "release {key} must be one line of at most {MAX_META} characters"
                ));
            }
        }
        Ok(())
    }

    /// The protocol to its endpoints. "h2" needs TLS settings only the file can carry.
    pub fn upstream_protocol(&self) -> Result<UpstreamProtocol, String> {
        match self.protocol.as_str() {
            "" | "http1" => Ok(UpstreamProtocol::Http1),
            "h2c" => Ok(UpstreamProtocol::H2c),
            "h2" => Err("protocol \"h2\" (HTTP/2 over TLS) needs a tls table: declare that version in the config file; a release takes \"http1\" or \"h2c\"".into()),
            other => Err(format!(
                "protocol must be \"http1\" or \"h2c\", not {other:?}"
            )),
        }
    }

    /// Looks its endpoint entries up with `resolve` (which may block: call it off the
    /// runtime's threads).
    pub fn resolve(&mut self, resolve: endpoint::Resolver) -> Result<(), String> {
        let mut problems = Vec::new();
        self.addrs = endpoint::resolve_all(&self.endpoints, resolve, |index, why| {
            problems.push(format!("endpoint {:?} {why}", self.endpoints[index]))
        });
        match problems.into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// The version as the table builds it; `addrs`: the latest addresses of its names.
    pub fn version_config(&self, name: &str, addrs: Option<&Vec<SocketAddr>>) -> VersionConfig {
        VersionConfig {
            name: name.to_string(),
            endpoints: addrs.unwrap_or(&self.addrs).clone(),
            sources: self.endpoints.clone(),
            release: self.release.clone(),
            tls: None,
            protocol: self.upstream_protocol().unwrap_or_default(),
        }
    }
}

/// `IP:port`, or `name:port` with a port.
fn valid_entry(entry: &str) -> bool {
    if entry.parse::<SocketAddr>().is_ok() {
        return true;
    }
    entry
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
        && !entry
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(endpoints: &[&str]) -> RuntimeVersion {
        RuntimeVersion {
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            ..RuntimeVersion::default()
        }
    }

    #[test]
    fn names_and_specs_are_checked() {
        assert!(check_name("v2.1_rc-3").is_ok());
        for bad in ["", "a b", "v2\n", "ü", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(spec(&["127.0.0.1:9000", "app:80"]).check().is_ok());
        assert!(spec(&[]).check().is_err());
        assert!(spec(&["127.0.0.1:9000", "127.0.0.1:9000"]).check().is_err());
        for bad in [
            "127.0.0.1",
            "host",
            ":80",
            "host:0",
            "host:99999",
            "a b:80",
            "h/x:80",
        ] {
            assert!(spec(&[bad]).check().is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..65).map(|i| format!("127.0.0.1:{}", 1000 + i)).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(spec(&refs).check().is_err());
        let mut h2 = spec(&["127.0.0.1:9000"]);
        h2.protocol = "h2".into();
        assert!(h2.check().unwrap_err().contains("tls"));
        h2.protocol = "h3".into();
        assert!(h2.check().is_err());
        let mut release = Release::default();
        assert!(release.set("commit", "abc").is_ok());
        assert!(release.set("owner", "x").is_err());
    }
}
