//! A version's `tls = { ca, server_name, cert, key }`: TLS to its endpoints, as data. Loading
//! never reads the files; the upstream module builds the client when the config is
//! applied, and `check` asks it to read them (a `TlsFileCheck`) so their problems are
//! listed with their lines.

use serde::Deserialize;
use std::net::IpAddr;
use std::ops::Range;
use std::path::PathBuf;
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

/// A version's `tls` as written (paths already resolved).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Which key of the `tls` table a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsKey {
    Table,
    Ca,
    ServerName,
    Cert,
    Key,
}

/// The line each key of a version's `tls` is written on, for problems found when its
/// files are read (at apply), long after the text is gone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsLines {
    pub table: usize,
    pub ca: usize,
    pub server_name: usize,
    pub cert: usize,
    pub key: usize,
}

impl TlsLines {
    pub fn of(&self, key: TlsKey) -> usize {
        match key {
            TlsKey::Table => self.table,
            TlsKey::Ca => self.ca,
            TlsKey::ServerName => self.server_name,
            TlsKey::Cert => self.cert,
            TlsKey::Key => self.key,
        }
    }
}

/// A version's TLS: its settings, and where they are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionTls {
    pub settings: TlsSettings,
    pub lines: TlsLines,
}

/// Reads and checks the files `settings` name, never touching the network; each problem
/// names the key it is about. The upstream module gives its builder (see `Config::load_checked`).
pub type TlsFileCheck = fn(&TlsSettings) -> Result<(), Vec<(TlsKey, String)>>;

/// The version's TLS settings; or every problem with the span it points at. `sources` are
/// the endpoint entries as written; `files`, when given, reads the files named.
pub fn check(
    label: &str,
    section: &Spanned<VersionTlsSection>,
    sources: &[String],
    files: Option<TlsFileCheck>,
) -> Result<TlsSettings, Vec<(Range<usize>, String)>> {
    let tls = section.get_ref();
    let path = |p: &Option<Spanned<PathBuf>>| p.as_ref().map(|p| p.get_ref().clone());
    let settings = TlsSettings {
        ca: path(&tls.ca),
        server_name: tls.server_name.as_ref().map(|n| n.get_ref().clone()),
        cert: path(&tls.cert),
        key: path(&tls.key),
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
    if let Some(Err(found)) = files.map(|read| read(&settings)) {
        let span_of = |key| span_of(section, key);
        problems.extend(
            found
                .into_iter()
                .map(|(key, problem)| (span_of(key), format!("{label}.{problem}"))),
        );
    }
    match problems.is_empty() {
        true => Ok(settings),
        false => Err(problems),
    }
}

/// Where `key` is written, else the table itself.
pub fn span_of(section: &Spanned<VersionTlsSection>, key: TlsKey) -> Range<usize> {
    let tls = section.get_ref();
    let span = match key {
        TlsKey::Table => None,
        TlsKey::Ca => tls.ca.as_ref().map(Spanned::span),
        TlsKey::ServerName => tls.server_name.as_ref().map(Spanned::span),
        TlsKey::Cert => tls.cert.as_ref().map(Spanned::span),
        TlsKey::Key => tls.key.as_ref().map(Spanned::span),
    };
    span.unwrap_or_else(|| section.span())
}

/// The host part of an endpoint entry (`name:port`), when it is a name, not an address.
pub fn host_of(entry: &str) -> Option<&str> {
    let (host, _) = entry.rsplit_once(':')?;
    let host = host.trim_end_matches('.');
    (host.parse::<IpAddr>().is_err() && !host.starts_with('[')).then_some(host)
}
