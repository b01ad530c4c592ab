//! `[cluster]`'s `auth` and `tls`: how an instance proves itself to NATS and checks the
//! servers. Every file named is read and parsed when the config is checked, so a missing or
//! unreadable one is a FILE:LINE problem, not a failure at start; the secrets themselves are
//! read again when connecting (never kept in the config, never printed).

use super::secret::read_password;
use super::SpannedProblem;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterAuthSection {
    pub user: Option<Spanned<String>>,
    pub password_file: Option<Spanned<PathBuf>>,
    pub token_file: Option<Spanned<PathBuf>>,
    pub nkey_seed_file: Option<Spanned<PathBuf>>,
    /// A NATS credentials file (user JWT and NKey seed).
    pub creds: Option<Spanned<PathBuf>>,
}

/// One of the ways NATS authenticates a client; files only (read when connecting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsAuth {
    UserPassword {
        user: String,
        password_file: PathBuf,
    },
    Token {
        file: PathBuf,
    },
    NkeySeed {
        file: PathBuf,
    },
    Creds {
        file: PathBuf,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTlsSection {
    /// CA that signed the servers' certificates; default: the system's roots.
    pub ca: Option<Spanned<PathBuf>>,
    /// Client certificate and key, for servers that ask for one.
    pub cert: Option<Spanned<PathBuf>>,
    pub key: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTls {
    pub ca: Option<PathBuf>,
    pub client: Option<(PathBuf, PathBuf)>,
}

const AUTH_KINDS: &str =
    "one of { user, password_file }, { token_file }, { nkey_seed_file } or { creds }";

impl ClusterAuthSection {
    /// The one way of authenticating this names, its files read; problems go to `problems`.
    pub fn check(
        &self,
        span: Range<usize>,
        problems: &mut Vec<SpannedProblem>,
    ) -> Option<NatsAuth> {
        let given = [
            self.user.is_some() || self.password_file.is_some(),
            self.token_file.is_some(),
            self.nkey_seed_file.is_some(),
            self.creds.is_some(),
        ];
        if given.iter().filter(|&&g| g).count() != 1 {
            problems.push((span, format!("cluster.auth needs {AUTH_KINDS}")));
            return None;
        }
        let before = problems.len();
        let mut read =
            |file: &Spanned<PathBuf>, what: &str, parse: fn(&str) -> Result<(), String>| {
                if let Err(why) = read_password(file.get_ref()).and_then(|text| parse(&text)) {
                    problems.push((file.span(), format!("cluster.auth.{what}: {why}")));
                }
                file.get_ref().clone()
            };
        let auth = match (&self.user, &self.password_file) {
            (Some(user), Some(file)) => NatsAuth::UserPassword {
                user: user.get_ref().clone(),
                password_file: read(file, "password_file", |_| Ok(())),
            },
            (Some(_), None) | (None, Some(_)) => {
                problems.push((
                    span,
                    "cluster.auth needs both user and password_file".into(),
                ));
                return None;
            }
            (None, None) => match (&self.token_file, &self.nkey_seed_file, &self.creds) {
                (Some(file), _, _) => NatsAuth::Token {
                    file: read(file, "token_file", |_| Ok(())),
                },
                (_, Some(file), _) => NatsAuth::NkeySeed {
                    file: read(file, "nkey_seed_file", nkey_seed),
                },
                (_, _, Some(file)) => NatsAuth::Creds {
                    file: read(file, "creds", creds),
                },
                (None, None, None) => return None,
            },
        };
        (problems.len() == before).then_some(auth)
    }
}

impl ClusterTlsSection {
    /// The TLS settings, each file read and parsed; problems go to `problems`.
    pub fn check(
        &self,
        span: Range<usize>,
        problems: &mut Vec<SpannedProblem>,
    ) -> Option<ClusterTls> {
        let before = problems.len();
        let mut pem =
            |file: &Spanned<PathBuf>, what: &str, parse: fn(&Path) -> Result<(), String>| {
                if let Err(why) = parse(file.get_ref()) {
                    problems.push((file.span(), format!("cluster.tls.{what}: {why}")));
                }
                file.get_ref().clone()
            };
        let ca = self.ca.as_ref().map(|ca| pem(ca, "ca", certificates));
        let client = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((
                pem(cert, "cert", certificates),
                pem(key, "key", private_key),
            )),
            (None, None) => None,
            _ => {
                problems.push((
                    span,
                    "cluster.tls needs both cert and key, or neither".into(),
                ));
                None
            }
        };
        (problems.len() == before).then_some(ClusterTls { ca, client })
    }
}

fn nkey_seed(text: &str) -> Result<(), String> {
    nkeys::KeyPair::from_seed(text.trim())
        .map(drop)
        .map_err(|err| format!("not an NKey seed ({err})"))
}

fn creds(text: &str) -> Result<(), String> {
    async_nats::ConnectOptions::with_credentials(text)
        .map(drop)
        .map_err(|err| format!("not a NATS credentials file ({err})"))
}

/// Also `hooks.ca`'s check: a file of PEM certificates, read without touching the network.
pub(super) fn certificates(path: &Path) -> Result<(), String> {
    let found: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|err| format!("{} is not PEM certificates: {err}", path.display()))?;
    match found.is_empty() {
        true => Err(format!("{} holds no PEM certificate", path.display())),
        false => Ok(()),
    }
}

fn private_key(path: &Path) -> Result<(), String> {
    PrivateKeyDer::from_pem_file(path)
        .map(drop)
        .map_err(|err| format!("{} is not a PEM private key: {err}", path.display()))
}
