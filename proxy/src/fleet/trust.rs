//! Who may steer the fleet: with `signing_key` and `trusted_keys`, every revision and every
//! evidence report carries its writer's Ed25519 signature over the exact payload bytes, in
//! two NATS headers beside the payload (so the record format is untouched). What is not
//! signed by a trusted key is not taken. Without them the fleet trusts whoever reaches NATS.

use super::rejected::Reason;
use crate::config::cluster::ClusterTrust;
use crate::config::key_files::{key_id, read_public_key, read_signing_key};
use async_nats::HeaderMap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use std::collections::HashMap;
use std::sync::Arc;

/// The key id of the signer (see `key_files::key_id`).
pub const SIGNER_HEADER: &str = "Switchyard-Signer";
/// The signature over the payload, base64.
pub const SIGNATURE_HEADER: &str = "Switchyard-Signature";

#[derive(Clone, Default)]
pub struct Trust(Option<Arc<Keys>>);

struct Keys {
    signing: SigningKey,
    id: String,
    /// By key id; this instance's own key included.
    trusted: HashMap<String, VerifyingKey>,
}

impl Trust {
    pub fn load(settings: Option<&ClusterTrust>) -> Result<Trust, String> {
        let Some(settings) = settings else {
            return Ok(Trust(None));
        };
        let signing = read_signing_key(&settings.signing_key)?;
        let mut trusted = HashMap::new();
        for path in &settings.trusted_keys {
            let key = read_public_key(path)?;
            trusted.insert(key_id(&key), key);
        }
        let own = signing.verifying_key();
        trusted.insert(key_id(&own), own);
        Ok(Trust(Some(Arc::new(Keys {
            id: key_id(&own),
            signing,
            trusted,
        }))))
    }

    /// Whether this fleet signs (and requires signatures).
    pub fn signs(&self) -> bool {
        self.0.is_some()
    }

    /// The headers that sign `payload`, as `(name, value)` (none when the fleet does not
    /// sign).
    pub fn signature(&self, payload: &[u8]) -> Option<[(&'static str, String); 2]> {
        let keys = self.0.as_ref()?;
        let signature = keys.signing.sign(payload);
        Some([
            (SIGNER_HEADER, keys.id.clone()),
            (
                SIGNATURE_HEADER,
                URL_SAFE_NO_PAD.encode(signature.to_bytes()),
            ),
        ])
    }

    /// `signature` as a header map.
    pub fn sign(&self, payload: &[u8]) -> Option<HeaderMap> {
        let mut headers = HeaderMap::new();
        for (name, value) in self.signature(payload)? {
            headers.insert(name, value.as_str());
        }
        Some(headers)
    }

    /// Ok when `payload` is signed by a trusted key (or the fleet does not sign); else why
    /// it is not taken.
    pub fn verify(
        &self,
        headers: Option<&HeaderMap>,
        payload: &[u8],
    ) -> Result<(), (Reason, String)> {
        let Some(keys) = &self.0 else {
            return Ok(());
        };
        let header = |name: &str| {
            headers
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        let (Some(signer), Some(signature)) = (header(SIGNER_HEADER), header(SIGNATURE_HEADER))
        else {
            return Err((Reason::Unsigned, "no signature".into()));
        };
        let Some(key) = keys.trusted.get(&signer) else {
            return Err((
                Reason::UnknownSigner,
                format!("signed by key {signer}, which is not in trusted_keys"),
            ));
        };
        let signature = URL_SAFE_NO_PAD
            .decode(&signature)
            .ok()
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .map(|bytes| Signature::from_bytes(&bytes))
            .ok_or_else(|| {
                (
                    Reason::BadSignature,
                    format!("key {signer}: the signature does not decode"),
                )
            })?;
        key.verify_strict(payload, &signature).map_err(|_| {
            (
                Reason::BadSignature,
                format!("key {signer}: the signature does not match the bytes carried"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::key_files::{generate, public_path};

    fn trust_of(dir: &std::path::Path, name: &str, trusted: &[&str]) -> Trust {
        let key = dir.join(name);
        if !key.exists() {
            generate(&key).unwrap();
        }
        let trusted_keys = trusted
            .iter()
            .map(|t| {
                let path = dir.join(t);
                if !path.exists() {
                    generate(&path).unwrap();
                }
                public_path(&path)
            })
            .collect();
        Trust::load(Some(&ClusterTrust {
            signing_key: key,
            trusted_keys,
        }))
        .unwrap()
    }

    #[test]
    fn only_what_a_trusted_key_signed_over_these_bytes_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let edge1 = trust_of(dir.path(), "edge-1", &["edge-2"]);
        let edge2 = trust_of(dir.path(), "edge-2", &["edge-1"]);
        let stranger = trust_of(dir.path(), "stranger", &[]);
        let payload = b"revision 7";
        let signed = edge2.sign(payload).unwrap();
        assert_eq!(edge1.verify(Some(&signed), payload), Ok(()));
        assert_eq!(edge2.verify(Some(&signed), payload), Ok(()), "own key");
        let reason = |r: Result<(), (Reason, String)>| r.unwrap_err().0;
        assert_eq!(reason(edge1.verify(None, payload)), Reason::Unsigned);
        assert_eq!(
            reason(edge1.verify(Some(&HeaderMap::new()), payload)),
            Reason::Unsigned
        );
        let forged = stranger.sign(payload).unwrap();
        assert_eq!(
            reason(edge1.verify(Some(&forged), payload)),
            Reason::UnknownSigner
        );
        assert_eq!(
            reason(edge1.verify(Some(&signed), b"revision 8")),
            Reason::BadSignature
        );
        let mut garbled = signed.clone();
        garbled.insert(SIGNATURE_HEADER, "not base64!");
        assert_eq!(
            reason(edge1.verify(Some(&garbled), payload)),
            Reason::BadSignature
        );
        // A stranger's signature under a member's name does not verify.
        let mut borrowed = forged.clone();
        borrowed.insert(SIGNER_HEADER, signed.get(SIGNER_HEADER).unwrap().as_str());
        assert_eq!(
            reason(edge1.verify(Some(&borrowed), payload)),
            Reason::BadSignature
        );
        // Without trust settings, anything goes (and nothing is signed).
        assert_eq!(Trust::default().verify(None, payload), Ok(()));
        assert!(Trust::default().sign(payload).is_none());
    }

    /// Not an assertion on time: prints what signing and verifying cost here.
    #[test]
    fn signing_cost() {
        let dir = tempfile::tempdir().unwrap();
        let edge1 = trust_of(dir.path(), "edge-1", &["edge-2"]);
        let edge2 = trust_of(dir.path(), "edge-2", &["edge-1"]);
        for (what, size) in [("revision", 1200), ("evidence report", 670)] {
            let payload = vec![b'x'; size];
            let n = 200;
            let started = std::time::Instant::now();
            let signed: Vec<_> = (0..n).map(|_| edge2.sign(&payload).unwrap()).collect();
            let sign = started.elapsed() / n;
            let started = std::time::Instant::now();
            for headers in &signed {
                edge1.verify(Some(headers), &payload).unwrap();
            }
            let verify = started.elapsed() / n;
            println!(
                "{what} of {size} bytes: sign {} µs, verify {} µs",
                sign.as_micros(),
                verify.as_micros()
            );
        }
    }
}
