//! Secret files: the admin token, the webhooks' signing secret, NATS passwords and tokens.
//! `check` reads each one with the same rule `run` (or the code using it) applies, so a
//! file that would be refused later is a FILE:LINE problem now. The text is never kept in
//! the config nor printed: its owner reads it again when it needs it.

use std::path::Path;

/// The shortest admin token or webhook secret taken: shorter ones are guessable.
pub const MIN_SHARED_SECRET: usize = 16;

/// A secret file's text, trimmed of surrounding white space; refused when shorter than
/// `min_chars` characters (or empty).
pub fn read_secret(path: &Path, min_chars: usize) -> Result<String, String> {
    let text = read(path)?;
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    if text.chars().count() < min_chars {
        return Err(format!(
            "{}: the secret must be at least {min_chars} characters",
            path.display()
        ));
    }
    Ok(text.to_string())
}

/// A NATS password or token file: only its trailing line ending is taken off (spaces may
/// be part of a password); an empty one is refused.
pub fn read_password(path: &Path) -> Result<String, String> {
    let text = read(path)?;
    match text.trim_end_matches(['\n', '\r']) {
        "" => Err(format!("{} is empty", path.display())),
        text => Ok(text.to_string()),
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|err| format!("cannot read {}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_blank_and_missing_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        assert!(read_secret(&file, 1).unwrap_err().contains("cannot read"));
        for text in ["", " \n\t\n", "12345\n"] {
            std::fs::write(&file, text).unwrap();
            assert!(read_secret(&file, MIN_SHARED_SECRET).is_err(), "{text:?}");
        }
        std::fs::write(&file, "  0123456789abcdef\n").unwrap();
        assert_eq!(
            read_secret(&file, MIN_SHARED_SECRET).unwrap(),
            "0123456789abcdef"
        );
    }
}
