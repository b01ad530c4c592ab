//! Versions' TLS clients, built when a config is applied (at start and at each reload):
//! every file is read again, so a replaced CA or certificate takes effect, but settings
//! whose files did not change keep the client they had, the same `Arc`, so an unchanged
//! reload rebuilds nothing and keeps the endpoints, their pools and their sessions.
//!
//! Entries are never dropped: there is one per distinct `tls` table a config has named in
//! the process's life, and a refused reload must not take the live config's away.

use super::tls::UpstreamTls;
use crate::config::{Config, ConfigError, Problem, TlsSettings};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

#[derive(Debug, Default)]
pub struct TlsCache {
    built: Mutex<HashMap<TlsSettings, Arc<UpstreamTls>>>,
}

/// The process's cache: what `apply` fills and dialing reads.
pub fn shared() -> &'static TlsCache {
    static CACHE: OnceLock<TlsCache> = OnceLock::new();
    CACHE.get_or_init(TlsCache::default)
}

impl TlsCache {
    /// Builds every version's TLS client of `config`; any problem refuses the whole
    /// config with its lines and changes nothing here. Reads files: call it off the
    /// runtime's threads.
    pub fn apply(&self, config: &Config, path: &Path) -> Result<(), ConfigError> {
        let mut built = Vec::new();
        let mut problems = Vec::new();
        for service in &config.services {
            for version in &service.versions {
                let Some(tls) = &version.tls else { continue };
                match UpstreamTls::build(&tls.settings) {
                    Ok(client) => built.push((tls.settings.clone(), client)),
                    Err(found) => problems.extend(found.into_iter().map(|(key, why)| Problem {
                        line: tls.lines.of(key),
                        message: format!(
                            "services.{}.versions.{}.{why}",
                            service.name, version.name
                        ),
                    })),
                }
            }
        }
        if !problems.is_empty() {
            problems.sort_by_key(|p| p.line);
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            });
        }
        for (settings, client) in built {
            self.keep(settings, client);
        }
        Ok(())
    }

    /// The client for `settings`: the one applied; else (a config never applied, as in
    /// tests that build tables directly) built now, failing closed if its files are bad.
    pub fn get(&self, settings: &TlsSettings) -> Arc<UpstreamTls> {
        if let Some(client) = self.lock().get(settings) {
            return client.clone();
        }
        let client = UpstreamTls::build(settings).unwrap_or_else(|problems| {
            let whys: Vec<String> = problems.into_iter().map(|(_, why)| why).collect();
            UpstreamTls::unusable(whys.join("; "))
        });
        self.keep(settings.clone(), client)
    }

    /// Stores `client` unless the one kept for `settings` was built from the same files.
    fn keep(&self, settings: TlsSettings, client: UpstreamTls) -> Arc<UpstreamTls> {
        let mut built = self.lock();
        match built.get(&settings) {
            Some(kept) if kept.digest() == client.digest() => kept.clone(),
            _ => {
                let client = Arc::new(client);
                built.insert(settings, client.clone());
                client
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TlsSettings, Arc<UpstreamTls>>> {
        self.built.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two self-signed CA certificates (`openssl req -x509`, EC P-256, 100 years).
    const CA_ONE: &str = "-----BEGIN CERTIFICATE-----\nMIIBiTCCAS+gAwIBAgIULrg3WVw2FrDk4GgDvQF+KDP822swCgYIKoZIzj0EAwIw\nGTEXMBUGA1UEAwwOY2FjaGUgdGVzdCBvbmUwIBcNMjYxMjA0MDAxNjQxWhgPMjEy\nNjExMTAwMDE2NDFaMBkxFzAVBgNVBAMMDmNhY2hlIHRlc3Qgb25lMFkwEwYHKoZI\nzj0CAQYIKoZIzj0DAQcDQgAEYM+SNpvGcBeoA5EApwBBNK1Lg7zRSzmRWCesLJqv\nevyAV7q/uf+QhJLvVclK9T/UZ37+rtvPkXNIc1EuOZFXn6NTMFEwHQYDVR0OBBYE\nFMuBuKvo9BYM+QI5iPBAaIuDrcaBMB8GA1UdIwQYMBaAFMuBuKvo9BYM+QI5iPBA\naIuDrcaBMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgXe7XmJ5I\nMaE4Poy1Vv86symI1mPTHUfwiW71wMlBWmsCIQCstogyVvlSwAXigznSIF4axvv4\n4eSFZ/kxt+rtieNK1g==\n-----END CERTIFICATE-----\n";
    const CA_TWO: &str = "-----BEGIN CERTIFICATE-----\nMIIBiTCCAS+gAwIBAgIUQh15wUN3knE5gdFuhNx++TrNko4wCgYIKoZIzj0EAwIw\nGTEXMBUGA1UEAwwOY2FjaGUgdGVzdCB0d28wIBcNMjYxMjA0MDAxNjQxWhgPMjEy\nNjExMTAwMDE2NDFaMBkxFzAVBgNVBAMMDmNhY2hlIHRlc3QgdHdvMFkwEwYHKoZI\nzj0CAQYIKoZIzj0DAQcDQgAEahGZ/RtR3Sv7BHmdIMYCOv0U+gqWGLS9g4TDAh9Y\n/TlAQw0RpNBQXvekaCIUKqMYdETYk+pkBOXRPkz/Z3k/mKNTMFEwHQYDVR0OBBYE\nFKOmL6McaYDDyikrAokZ95LmJCiuMB8GA1UdIwQYMBaAFKOmL6McaYDDyikrAokZ\n95LmJCiuMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgDeYVDVPY\nB6rRsqpCAdGTr00RJW3hts5UQZapVPzzER0CIQCuGoVnJT3j874FylmwGqF3Ov8Q\nzYnDIzaWeINVBoRWgg==\n-----END CERTIFICATE-----\n";

    fn ca_file(dir: &Path, pem: &str) -> TlsSettings {
        let path = dir.join("ca.pem");
        std::fs::write(&path, pem).unwrap();
        TlsSettings {
            ca: Some(path),
            ..TlsSettings::default()
        }
    }

    fn built(settings: &TlsSettings) -> UpstreamTls {
        UpstreamTls::build(settings).unwrap()
    }

    #[test]
    fn unchanged_settings_and_files_keep_the_same_client() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TlsCache::default();
        let settings = ca_file(dir.path(), CA_ONE);
        let first = cache.keep(settings.clone(), built(&settings));
        let again = cache.keep(settings.clone(), built(&settings));
        assert!(Arc::ptr_eq(&first, &again));
        assert!(Arc::ptr_eq(&first, &cache.get(&settings)));
    }

    #[test]
    fn a_replaced_file_or_other_settings_build_a_new_client() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TlsCache::default();
        let settings = ca_file(dir.path(), CA_ONE);
        let first = cache.keep(settings.clone(), built(&settings));
        ca_file(dir.path(), CA_TWO);
        let replaced = cache.keep(settings.clone(), built(&settings));
        assert!(!Arc::ptr_eq(&first, &replaced));
        assert_ne!(first.digest(), replaced.digest());
        let named = TlsSettings {
            server_name: Some("api.internal".into()),
            ..settings.clone()
        };
        assert!(!Arc::ptr_eq(&replaced, &cache.get(&named)));
    }

    #[test]
    fn a_file_gone_bad_before_any_apply_gives_a_client_that_trusts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let settings = ca_file(dir.path(), "not a certificate\n");
        let client = TlsCache::default().get(&settings);
        assert!(
            client.trusted().starts_with("no CA ("),
            "{}",
            client.trusted()
        );
    }
}
