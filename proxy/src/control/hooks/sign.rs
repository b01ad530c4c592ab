//! Webhook signatures a receiver can check: HMAC-SHA256, keyed with `[hooks] secret_file`,
//! over `TIMESTAMP.BODY` (the Unix time of the attempt, a dot, the exact body bytes).
//! The timestamp is signed too, so a captured delivery replayed later is refused by a
//! receiver that rejects stale timestamps (five minutes is the usual bound).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "x-switchyard-signature";
pub const TIMESTAMP_HEADER: &str = "x-switchyard-timestamp";

/// `v1=HEX`: the version prefix lets a receiver accept a new scheme beside this one.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("v1={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value Python's `hmac.new(key, b"1700000000." + body, sha256)` gives.
    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        assert_eq!(
            signature(b"0123456789abcdef", 1_700_000_000, b"{\"a\":1}"),
            "v1=9eb18f493f8ec135d9eb2dad817c369bb4e9cbfa818657897a7437c1cd8c3a23"
        );
    }
}
