//! `[cluster]`: the NATS servers a fleet of instances shares its routing through. Without
//! this section an instance stands alone and its local journal is the whole story.

pub use super::cluster_files::{ClusterAuthSection, ClusterTls, ClusterTlsSection, NatsAuth};
use super::SpannedProblem;
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Servers of one NATS cluster with JetStream: `nats://HOST:PORT`, `tls://HOST:PORT`
    /// or `HOST:PORT`.
    pub nats: Spanned<Vec<Spanned<String>>>,
    /// Instances with the same name share routing.
    pub name: Spanned<String>,
    /// Unique within the fleet; default: the host name.
    pub instance: Option<Spanned<String>>,
    /// How this instance proves itself to NATS: `{ user, password_file }`, `{ token_file }`,
    /// `{ nkey_seed_file }` or `{ creds }`.
    pub auth: Option<Spanned<ClusterAuthSection>>,
    pub tls: Option<Spanned<ClusterTlsSection>>,
    /// This instance's Ed25519 key (`switchyard keygen FILE`): it signs every revision and
    /// evidence report it writes.
    pub signing_key: Option<Spanned<PathBuf>>,
    /// The public keys (`FILE.pub`) of the fleet's members: only what they signed is taken.
    pub trusted_keys: Option<Spanned<Vec<Spanned<PathBuf>>>>,
}

/// A validated `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub servers: Vec<String>,
    pub name: String,
    pub instance: String,
    pub auth: Option<NatsAuth>,
    pub tls: Option<ClusterTls>,
    /// Signing: this instance's key and the fleet's trusted public keys (both or neither).
    pub trust: Option<ClusterTrust>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTrust {
    pub signing_key: PathBuf,
    pub trusted_keys: Vec<PathBuf>,
}

impl ClusterSection {
    /// The settings, or every problem with them. `span` is the section's own span.
    pub fn settings(&self) -> Result<ClusterSettings, Vec<SpannedProblem>> {
        let mut problems = Vec::new();
        let servers = self.servers(&mut problems);
        let name = self.name.get_ref().clone();
        if let Some(why) = name_problem(&name) {
            problems.push((self.name.span(), format!("cluster.name {name:?} {why}")));
        }
        let instance = match &self.instance {
            Some(instance) => {
                let value = instance.get_ref().clone();
                if let Some(why) = name_problem(&value) {
                    problems.push((instance.span(), format!("cluster.instance {value:?} {why}")));
                }
                value
            }
            None => host_name(),
        };
        let auth = self
            .auth
            .as_ref()
            .and_then(|auth| auth.get_ref().check(auth.span(), &mut problems));
        let tls = self
            .tls
            .as_ref()
            .and_then(|tls| tls.get_ref().check(tls.span(), &mut problems));
        let trust = self.trust(&mut problems);
        match problems.is_empty() {
            true => Ok(ClusterSettings {
                servers,
                name,
                instance,
                auth,
                tls,
                trust,
            }),
            false => Err(problems),
        }
    }

    /// `signing_key` and `trusted_keys`, each file read and checked.
    fn trust(&self, problems: &mut Vec<SpannedProblem>) -> Option<ClusterTrust> {
        let (key, trusted) = match (&self.signing_key, &self.trusted_keys) {
            (None, None) => return None,
            (Some(key), Some(trusted)) => (key, trusted),
            (Some(key), None) => {
                problems.push((key.span(), "cluster.signing_key needs cluster.trusted_keys (the public keys of the fleet's members)".into()));
                return None;
            }
            (None, Some(trusted)) => {
                problems.push((trusted.span(), "cluster.trusted_keys needs cluster.signing_key (this instance's key: `switchyard keygen FILE`)".into()));
                return None;
            }
        };
        let before = problems.len();
        if let Err(why) = super::key_files::read_signing_key(key.get_ref()) {
            problems.push((key.span(), format!("cluster.signing_key: {why}")));
        }
        if trusted.get_ref().is_empty() {
            problems.push((
                trusted.span(),
                "cluster.trusted_keys needs at least one public key".into(),
            ));
        }
        for path in trusted.get_ref() {
            if let Err(why) = super::key_files::read_public_key(path.get_ref()) {
                problems.push((path.span(), format!("cluster.trusted_keys: {why}")));
            }
        }
        (problems.len() == before).then(|| ClusterTrust {
            signing_key: key.get_ref().clone(),
            trusted_keys: trusted
                .get_ref()
                .iter()
                .map(|p| p.get_ref().clone())
                .collect(),
        })
    }

    fn servers(&self, problems: &mut Vec<SpannedProblem>) -> Vec<String> {
        let list = self.nats.get_ref();
        if list.is_empty() {
            problems.push((
                self.nats.span(),
                "cluster.nats needs at least one server (e.g. \"nats://127.0.0.1:4222\")".into(),
            ));
        }
        let mut servers = Vec::new();
        for server in list {
            let value = server.get_ref().trim();
            match server_problem(value) {
                None => servers.push(value.to_string()),
                Some(why) => problems.push((
                    server.span(),
                    format!("cluster.nats entry {value:?} {why} (e.g. \"nats://127.0.0.1:4222\")"),
                )),
            }
        }
        servers
    }
}

/// Why `value` cannot be a NATS server address, if it cannot.
fn server_problem(value: &str) -> Option<&'static str> {
    let rest = ["nats://", "tls://"]
        .iter()
        .find_map(|scheme| value.strip_prefix(scheme))
        .unwrap_or(value);
    if rest.contains("://") {
        return Some("has a scheme other than nats:// or tls://");
    }
    // Credentials in the URL would end up in logs and status; use `auth`.
    if rest.contains('@') {
        return Some("carries credentials; put them in cluster.auth instead");
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Some("has no port");
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Some("has no valid host");
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => None,
        _ => Some("has no valid port"),
    }
}

/// Fleet and instance names become parts of NATS stream names, subjects and keys.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 64 {
        return Some("must be 1 to 64 characters");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    (!name.chars().all(allowed)).then_some("may hold only letters, digits, '-' and '_'")
}

/// This machine's host name, made fit to be an instance name.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                true => c,
                false => '-',
            },
        )
        .take(64)
        .collect();
    match name.is_empty() {
        true => "switchyard".to_string(),
        false => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        for good in [
            "nats://127.0.0.1:4222",
            "tls://nats.internal:4443",
            "n1:4222",
        ] {
            assert_eq!(server_problem(good), None, "{good}");
        }
        for bad in [
            "127.0.0.1",
            "http://x:1",
            "nats://user:pw@h:4222",
            "nats://:4222",
            "nats://h:0",
            "nats://h:99999",
            "nats://h:x",
            "",
        ] {
            assert!(server_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(name_problem("shop-edge_1"), None);
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
            assert!(name_problem(bad).is_some(), "{bad}");
        }
        assert_eq!(name_problem(&host_name()), None);
    }
}

#[cfg(test)]
mod check_tests {
    use crate::config::Config;
    use std::path::Path;

    const BASE: &str = "[proxy]\nlisten = \"127.0.0.1:8080\"\n\n[services.shop]\nstable = \"blue\"\nweights = { blue = 1 }\n[services.shop.versions.blue]\nendpoints = [\"127.0.0.1:9001\"]\n";

    fn problems(cluster: &str) -> Vec<String> {
        let text = format!("{BASE}{cluster}");
        match Config::parse(Path::new("sy.toml"), &text) {
            Ok(_) => Vec::new(),
            Err(err) => err.to_string().lines().map(str::to_string).collect(),
        }
    }

    #[test]
    fn a_good_cluster_section_passes() {
        let text = format!(
            "{BASE}[cluster]\nnats = [\"nats://127.0.0.1:4222\", \"n2:4222\"]\nname = \"shop-edge\"\ninstance = \"edge-1\"\n"
        );
        let config = Config::parse(Path::new("sy.toml"), &text).unwrap();
        let cluster = config.cluster.unwrap();
        assert_eq!(cluster.servers.len(), 2);
        assert_eq!(cluster.instance, "edge-1");
        assert!(Config::parse(Path::new("sy.toml"), BASE)
            .unwrap()
            .cluster
            .is_none());
    }

    #[test]
    fn every_problem_is_listed_with_its_line() {
        let found = problems(
            "[cluster]\nnats = [\"http://x:1\", \"nats://h\"]\nname = \"shop.edge\"\ninstance = \"a b\"\ntls = { cert = \"c.pem\" }\n",
        );
        assert_eq!(found.len(), 5, "{found:#?}");
        assert!(
            found[0].starts_with("sy.toml:10: cluster.nats entry \"http://x:1\""),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with("sy.toml:10: cluster.nats entry \"nats://h\" has no port"),
            "{found:#?}"
        );
        assert!(
            found[2].starts_with("sy.toml:11: cluster.name \"shop.edge\""),
            "{found:#?}"
        );
        assert!(
            found[3].starts_with("sy.toml:12: cluster.instance \"a b\""),
            "{found:#?}"
        );
        assert!(
            found[4].starts_with("sy.toml:13: cluster.tls needs both"),
            "{found:#?}"
        );
        let found = problems("[cluster]\nnats = []\nname = \"e\"\nbogus = 1\n");
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[1].starts_with("sy.toml:12: unknown field `bogus`"),
            "{found:#?}"
        );
        let found = problems("[cluster]\nnats = []\nname = \"e\"\n");
        assert!(
            found[0].starts_with("sy.toml:10: cluster.nats needs at least one server"),
            "{found:#?}"
        );
    }

    /// Every file `[cluster]` names is read and parsed by `check`: a missing or
    /// unparseable one is a FILE:LINE problem.
    #[test]
    fn auth_tls_and_key_files_are_checked_with_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let junk = file("junk", "not what it should be\n");
        let empty = file("empty", "\n");
        let missing = dir.path().join("missing").display().to_string();
        let key = dir.path().join("edge.key");
        crate::config::key_files::generate(&key).unwrap();
        let key = key.display().to_string();
        let cluster = |more: &str| {
            problems(&format!(
                "[cluster]\nnats = [\"n1:4222\"]\nname = \"e\"\n{more}\n"
            ))
        };
        let cases = [
            (
                format!("auth = {{ user = \"u\", password_file = \"{missing}\" }}"),
                "cluster.auth.password_file: cannot read",
            ),
            (
                format!("auth = {{ token_file = \"{empty}\" }}"),
                "cluster.auth.token_file:",
            ),
            (
                format!("auth = {{ nkey_seed_file = \"{junk}\" }}"),
                "cluster.auth.nkey_seed_file: not an NKey seed",
            ),
            (
                format!("auth = {{ creds = \"{junk}\" }}"),
                "cluster.auth.creds: not a NATS credentials file",
            ),
            (
                "auth = { user = \"u\" }".to_string(),
                "cluster.auth needs both user and password_file",
            ),
            (
                format!("auth = {{ token_file = \"{junk}\", creds = \"{junk}\" }}"),
                "cluster.auth needs one of",
            ),
            (format!("tls = {{ ca = \"{junk}\" }}"), "cluster.tls.ca:"),
            (
                format!("tls = {{ cert = \"{junk}\", key = \"{junk}\" }}"),
                "cluster.tls.cert:",
            ),
            (
                format!("signing_key = \"{key}\""),
                "cluster.signing_key needs cluster.trusted_keys",
            ),
            (
                format!("signing_key = \"{junk}\"\ntrusted_keys = [\"{key}.pub\"]"),
                "cluster.signing_key:",
            ),
            (
                format!("trusted_keys = [\"{key}\"]\nsigning_key = \"{key}\""),
                "cluster.trusted_keys:",
            ),
        ];
        for (more, expected) in cases {
            let found = cluster(&more);
            assert!(!found.is_empty(), "{more}: nothing found");
            assert!(
                found[0].starts_with(&format!("sy.toml:12: {expected}")),
                "{more}: {found:#?}"
            );
        }
        let good = cluster(&format!(
            "auth = {{ token_file = \"{junk}\" }}\nsigning_key = \"{key}\"\ntrusted_keys = [\"{key}.pub\"]"
        ));
        assert!(good.is_empty(), "{good:#?}");
    }

    #[test]
    fn an_empty_nats_list_is_named() {
        let found = problems("[cluster]\nnats = []\nname = \"e\"\n");
        assert!(
            found[0].starts_with("sy.toml:10: cluster.nats needs at least one server"),
            "{found:#?}"
        );
    }
}
