//! An instance's Ed25519 key files: `switchyard keygen FILE` writes the private key to FILE
//! (mode 0600) and the public key to FILE.pub, one line each: a tag naming what the file is,
//! then the key's 32 bytes in base64.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{SigningKey, VerifyingKey};
use std::io::Write;
use std::path::{Path, PathBuf};

const PRIVATE_TAG: &str = "switchyard-ed25519-private";
const PUBLIC_TAG: &str = "switchyard-ed25519-public";

/// How a key is named in headers, logs and `ctl fleet`: its public bytes in base64.
pub fn key_id(key: &VerifyingKey) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

/// `FILE.pub` beside `FILE`.
pub fn public_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Writes a new key pair; refuses to overwrite either file. Returns the public key's id.
pub fn generate(private: &Path) -> Result<String, String> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|err| format!("no randomness from the OS: {err}"))?;
    let key = SigningKey::from_bytes(&seed);
    let public = public_path(private);
    write_new(private, PRIVATE_TAG, key.as_bytes(), 0o600)?;
    write_new(&public, PUBLIC_TAG, key.verifying_key().as_bytes(), 0o644)?;
    Ok(key_id(&key.verifying_key()))
}

fn write_new(path: &Path, tag: &str, bytes: &[u8; 32], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|err| format!("cannot create {}: {err}", path.display()))?;
    writeln!(file, "{tag} {}", URL_SAFE_NO_PAD.encode(bytes))
        .and_then(|()| file.sync_all())
        .map_err(|err| format!("cannot write {}: {err}", path.display()))
}

fn read_key(path: &Path, tag: &str) -> Result<[u8; 32], String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let not_one = || {
        format!(
            "{} is not a {tag} key file (`switchyard keygen FILE` writes one)",
            path.display()
        )
    };
    let encoded = text
        .trim()
        .strip_prefix(tag)
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or_else(not_one)?;
    URL_SAFE_NO_PAD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(not_one)
}

pub fn read_signing_key(path: &Path) -> Result<SigningKey, String> {
    read_key(path, PRIVATE_TAG).map(|seed| SigningKey::from_bytes(&seed))
}

pub fn read_public_key(path: &Path) -> Result<VerifyingKey, String> {
    let bytes = read_key(path, PUBLIC_TAG)?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|err| format!("{} is not an Ed25519 public key: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keygen_writes_a_private_key_only_its_owner_reads_and_its_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge-1.key");
        let id = generate(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = read_signing_key(&path).unwrap();
        let public = read_public_key(&dir.path().join("edge-1.key.pub")).unwrap();
        assert_eq!(key.verifying_key(), public);
        assert_eq!(key_id(&public), id);
        // Never over an existing key.
        assert!(generate(&path).unwrap_err().contains("cannot create"));
        // A public key is not a private key, and garbage is neither.
        assert!(read_signing_key(&public_path(&path)).is_err());
        std::fs::write(dir.path().join("junk"), "switchyard-ed25519-public AAAA\n").unwrap();
        assert!(read_public_key(&dir.path().join("junk"))
            .unwrap_err()
            .contains("is not a switchyard-ed25519-public key file"));
    }
}
