//! A version's `tls = { ca, server_name, cert, key }`: TLS to its endpoints. Every file is
//! read and checked when the config is loaded, and the client config built then, once.

use super::VersionConfig;
use crate::upstream::connect::{Dial, TlsTarget};
use crate::upstream::tls::{host_of, TlsKey, TlsSettings, UpstreamTls};
use serde::Deserialize;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionTlsSection {
    /// CA certificates that signed the endpoints' certificates; default: the system's.
    pub ca: Option<Spanned<PathBuf>>,
    /// The name the endpoints' certificates must carry (and SNI); default: the name the
    /// endpoint is written with, else its IP address.
    pub server_name: Option<Spanned<String>>,
    /// Client certificate and key, for upstreams that require one (mutual TLS).
    pub cert: Option<Spanned<PathBuf>>,
    pub key: Option<Spanned<PathBuf>>,
}

/// The version's TLS, built; or every problem with the span it points at. `sources` are
/// the endpoint entries as written.
pub fn check(
    label: &str,
    section: &Spanned<VersionTlsSection>,
    sources: &[String],
) -> Result<Arc<UpstreamTls>, Vec<(Range<usize>, String)>> {
    let tls = section.get_ref();
    let path = |p: &Option<Spanned<PathBuf>>| p.as_ref().map(|p| p.get_ref().clone());
    let settings = TlsSettings {
        ca: path(&tls.ca),
        server_name: tls.server_name.as_ref().map(|n| n.get_ref().clone()),
        cert: path(&tls.cert),
        key: path(&tls.key),
    };
    let span_of = |key: TlsKey| {
        let span = match key {
            TlsKey::Table => None,
            TlsKey::Ca => tls.ca.as_ref().map(Spanned::span),
            TlsKey::ServerName => tls.server_name.as_ref().map(Spanned::span),
            TlsKey::Cert => tls.cert.as_ref().map(Spanned::span),
            TlsKey::Key => tls.key.as_ref().map(Spanned::span),
        };
        span.unwrap_or_else(|| section.span())
    };
    let mut problems = Vec::new();
    let mut names: Vec<&str> = sources.iter().filter_map(|s| host_of(s)).collect();
    names.sort_unstable();
    names.dedup();
    if settings.server_name.is_none() && names.len() > 1 {
        problems.push((
            section.span(),
            format!(
                "{label}.tls: endpoints named {} need tls.server_name (the one name their certificates carry)",
                names.join(", ")
            ),
        ));
    }
    match UpstreamTls::build(&settings) {
        Ok(built) if problems.is_empty() => Ok(Arc::new(built)),
        Ok(_) => Err(problems),
        Err(found) => {
            problems.extend(
                found
                    .into_iter()
                    .map(|(key, problem)| (span_of(key), format!("{label}.{problem}"))),
            );
            Err(problems)
        }
    }
}

impl VersionConfig {
    /// How to reach `addr`, one of this version's endpoints: TLS with the name its
    /// certificate must carry when the version has `tls`.
    pub fn dial(&self, addr: SocketAddr) -> Dial {
        let tls = self.tls.as_ref().map(|tls| {
            // An endpoint written as an address is verified as that address; one that
            // came from a name, as the (only) name.
            let written_as_ip = self
                .sources
                .iter()
                .any(|s| s.parse::<SocketAddr>() == Ok(addr));
            let host = match written_as_ip {
                true => None,
                false => self.sources.iter().find_map(|s| host_of(s)),
            };
            TlsTarget {
                tls: tls.clone(),
                name: tls.name_for(host, addr),
            }
        });
        Dial { addr, tls }
    }
}
