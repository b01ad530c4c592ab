//! TLS to upstreams: one rustls client config per version, built when the config is
//! applied (never per connection; see `tls_cache`), and what a failed handshake says
//! about an endpoint.
//!
//! Certificates are always verified: against the version's `ca` when it has one, else
//! against the system's roots (read once per process with `rustls-native-certs`, so a CA
//! an operator added to the system store is trusted as it is by curl).

use crate::config::{TlsKey, TlsSettings};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

/// A version's TLS client side, ready to connect with.
pub struct UpstreamTls {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
    /// Digest of everything the config was built from (names and file contents): a reload
    /// that changes nothing keeps the same endpoints, their pools and their sessions.
    digest: [u8; 32],
    /// What certificates are checked against, for error lines.
    trusted: String,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// Reads and checks every file; each problem names the key it is about.
    pub fn build(settings: &TlsSettings) -> Result<UpstreamTls, Vec<(TlsKey, String)>> {
        let mut problems = Vec::new();
        let mut digest = Sha256::new();
        let server_name = settings.server_name.as_ref().and_then(|name| {
            digest.update(name.as_bytes());
            match ServerName::try_from(name.clone()) {
                Ok(name) => Some(name),
                Err(_) => {
                    problems.push((
                        TlsKey::ServerName,
                        format!("tls.server_name {name:?} is not a DNS name or IP address"),
                    ));
                    None
                }
            }
        });
        digest.update([0]);
        let (roots, trusted) = match &settings.ca {
            Some(path) => {
                let roots = read_certs(path, &mut digest)
                    .and_then(|certs| ca_roots(certs).map_err(|e| format!("{}: {e}", shown(path))))
                    .map_err(|problem| problems.push((TlsKey::Ca, format!("tls.ca {problem}"))))
                    .ok();
                (roots, format!("tls.ca {}", shown(path)))
            }
            None => {
                let roots = system_roots()
                    .map_err(|problem| problems.push((TlsKey::Table, problem)))
                    .ok();
                (roots, "the system's CA certificates".to_string())
            }
        };
        digest.update([0]);
        let identity = match (&settings.cert, &settings.key) {
            (Some(cert), Some(key)) => {
                let certs = read_certs(cert, &mut digest)
                    .map_err(|problem| problems.push((TlsKey::Cert, format!("tls.cert {problem}"))))
                    .ok();
                let key = read_key(key, &mut digest)
                    .map_err(|problem| problems.push((TlsKey::Key, format!("tls.key {problem}"))))
                    .ok();
                certs.zip(key)
            }
            (None, None) => None,
            (Some(_), None) => {
                problems.push((TlsKey::Cert, "tls.cert needs tls.key".to_string()));
                None
            }
            (None, Some(_)) => {
                problems.push((TlsKey::Key, "tls.key needs tls.cert".to_string()));
                None
            }
        };
        let Some(roots) = roots.filter(|_| problems.is_empty()) else {
            return Err(problems);
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|err| vec![(TlsKey::Table, format!("tls: {err}"))])?
            .with_root_certificates(roots);
        let config = match identity {
            Some((certs, key)) => builder.with_client_auth_cert(certs, key).map_err(|err| {
                vec![(
                    TlsKey::Key,
                    format!(
                        "tls.key does not go with tls.cert: {}",
                        tls_error_text(&err)
                    ),
                )]
            })?,
            None => builder.with_no_client_auth(),
        };
        Ok(UpstreamTls {
            config: Arc::new(config),
            server_name,
            digest: digest.finalize().into(),
            trusted,
        })
    }

    /// `build`'s checks alone: what `check` reads the files with (a `TlsFileCheck`).
    pub fn check_files(settings: &TlsSettings) -> Result<(), Vec<(TlsKey, String)>> {
        UpstreamTls::build(settings).map(drop)
    }

    /// A client that verifies nothing as trusted, so every handshake fails: for settings
    /// whose files went bad after the config was applied. Fails closed, never in clear.
    pub fn unusable(problem: String) -> UpstreamTls {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the default provider supports the default protocol versions")
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        UpstreamTls {
            config: Arc::new(config),
            server_name: None,
            digest: Sha256::digest(problem.as_bytes()).into(),
            trusted: format!("no CA ({problem})"),
        }
    }

    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The name an endpoint's certificate must carry (and SNI, when it is a DNS name):
    /// `server_name`, else the host name the endpoint was written with, else its IP.
    pub fn name_for(&self, host: Option<&str>, addr: SocketAddr) -> ServerName<'static> {
        if let Some(name) = &self.server_name {
            return name.clone();
        }
        host.and_then(|host| ServerName::try_from(host.to_string()).ok())
            .unwrap_or(ServerName::IpAddress(addr.ip().into()))
    }

    pub(crate) fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    pub(crate) fn trusted(&self) -> &str {
        &self.trusted
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn shown(path: &std::path::Path) -> String {
    path.display().to_string()
}

fn read_file(path: &std::path::Path, digest: &mut Sha256) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|err| format!("{}: {err}", shown(path)))?;
    digest.update(&bytes);
    digest.update([0]);
    Ok(bytes)
}

fn read_certs(
    path: &std::path::Path,
    digest: &mut Sha256,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_file(path, digest)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("{}: not PEM certificates: {err}", shown(path)))?;
    for cert in &certs {
        webpki_parse(cert).map_err(|err| format!("{}: {err}", shown(path)))?;
    }
    match certs.is_empty() {
        true => Err(format!("{}: no PEM certificate in the file", shown(path))),
        false => Ok(certs),
    }
}

/// A PEM block that decodes is not yet a certificate: its DER must parse as one.
fn webpki_parse(cert: &CertificateDer<'_>) -> Result<(), String> {
    rustls::server::ParsedCertificate::try_from(cert)
        .map(|_| ())
        .map_err(|err| format!("not a valid certificate ({})", tls_error_text(&err)))
}

fn read_key(path: &std::path::Path, digest: &mut Sha256) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read_file(path, digest)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|err| format!("{}: no PEM private key: {err}", shown(path)))?;
    provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|err| {
            format!(
                "{}: not a usable private key: {}",
                shown(path),
                tls_error_text(&err)
            )
        })?;
    Ok(key)
}

fn ca_roots(certs: Vec<CertificateDer<'static>>) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|err| format!("not a usable CA certificate: {}", tls_error_text(&err)))?;
    }
    Ok(Arc::new(roots))
}

/// The system's trusted CAs, read once per process.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            match added {
                0 => Err(
                    "tls: no system CA certificates found (install ca-certificates, or set tls.ca)"
                        .to_string(),
                ),
                _ => Ok(Arc::new(roots)),
            }
        })
        .clone()
}

/// Why a handshake failed, in words an operator acts on.
pub fn tls_error_text(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(cert) => certificate_text(cert),
        rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)
        | rustls::Error::NoApplicationProtocol => {
            "the upstream speaks none of the application protocols offered (ALPN)".to_string()
        }
        rustls::Error::AlertReceived(alert) => {
            format!("the upstream refused the handshake (alert: {alert:?})")
        }
        rustls::Error::InvalidMessage(_) => "the endpoint does not speak TLS".to_string(),
        rustls::Error::InconsistentKeys(_) => "the key is not the certificate's".to_string(),
        other => other.to_string(),
    }
}

fn certificate_text(err: &CertificateError) -> String {
    match err {
        CertificateError::UnknownIssuer => {
            "certificate not signed by a trusted CA (unknown issuer)".to_string()
        }
        CertificateError::Expired => "certificate expired".to_string(),
        CertificateError::ExpiredContext { time, not_after } => {
            format!("certificate expired {} ago", ago(*time, *not_after))
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "certificate not valid yet".to_string()
        }
        CertificateError::NotValidForName => "certificate not valid for the name asked for".into(),
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "certificate not valid for the name {:?} (it is for {})",
            expected.to_str(),
            match presented.as_slice() {
                [] => "no name".to_string(),
                names => names
                    .iter()
                    .map(|n| bare_name(n))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        ),
        CertificateError::BadEncoding => "badly encoded".to_string(),
        other => format!("bad certificate: {other}"),
    }
}

/// `DnsName("api.internal")`, as rustls lists presented names, as `api.internal`.
fn bare_name(presented: &str) -> &str {
    presented
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map_or(presented, |inner| inner.trim_matches('"'))
}

fn ago(now: UnixTime, then: UnixTime) -> String {
    let secs = now.as_secs().saturating_sub(then.as_secs());
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172_800 => format!("{}h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}
