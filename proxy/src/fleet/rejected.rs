//! What the fleet's subjects carried that this instance did not take: revisions and
//! evidence reports that are unsigned, signed by a key the fleet does not trust, malformed
//! or out of the chain. Each is skipped (never applied), counted here (for `/metrics`,
//! status and `ctl fleet`) and logged at most once per kind per minute, so a stranger
//! flooding a subject costs a counter, not the log.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A kind is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Which subject the entry came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Carrier {
    Revision,
    Evidence,
}

/// Why it was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No signature, where the fleet requires one.
    Unsigned,
    /// Signed by a key not in `trusted_keys`.
    UnknownSigner,
    /// A signature that does not verify over the bytes carried.
    BadSignature,
    /// Does not decode (garbage, another format).
    Malformed,
    /// A revision that does not follow the chain (wrong number or predecessor).
    OutOfChain,
    /// An evidence report no newer than the last one heard from its publisher.
    Replayed,
}

impl Carrier {
    pub fn as_str(self) -> &'static str {
        match self {
            Carrier::Revision => "revision",
            Carrier::Evidence => "evidence",
        }
    }
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unsigned => "unsigned",
            Reason::UnknownSigner => "unknown_signer",
            Reason::BadSignature => "bad_signature",
            Reason::Malformed => "malformed",
            Reason::OutOfChain => "out_of_chain",
            Reason::Replayed => "replayed",
        }
    }
}

/// How many entries of one kind were skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedCount {
    pub carrier: Carrier,
    pub reason: Reason,
    pub count: u64,
}

#[derive(Default)]
struct Tally {
    count: u64,
    logged_at: Option<Instant>,
}

/// Shared by every reader of the fleet's subjects on this instance.
#[derive(Clone, Default)]
pub struct Rejections(Arc<Mutex<BTreeMap<(Carrier, Reason), Tally>>>);

impl Rejections {
    /// Counts one skipped entry; logs it unless its kind was logged within the minute.
    pub fn reject(&self, carrier: Carrier, reason: Reason, detail: &str) {
        let now = Instant::now();
        let (due, count) = {
            let mut kinds = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            let tally = kinds.entry((carrier, reason)).or_default();
            tally.count += 1;
            let due = tally
                .logged_at
                .is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
            if due {
                tally.logged_at = Some(now);
            }
            (due, tally.count)
        };
        if due {
            tracing::warn!(
                what = carrier.as_str(),
                why = reason.as_str(),
                total = count,
                "fleet {} skipped, never applied: {detail} (this kind is logged at most once a minute; counted in /metrics)",
                carrier.as_str()
            );
        }
    }

    /// Every kind seen so far, with its count.
    pub fn counts(&self) -> Vec<RejectedCount> {
        let kinds = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kinds
            .iter()
            .map(|(&(carrier, reason), tally)| RejectedCount {
                carrier,
                reason,
                count: tally.count,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_entry_and_keeps_kinds_apart() {
        let rejections = Rejections::default();
        for _ in 0..3 {
            rejections.reject(Carrier::Revision, Reason::Malformed, "x");
        }
        rejections.reject(Carrier::Evidence, Reason::UnknownSigner, "y");
        assert_eq!(
            rejections.counts(),
            [
                RejectedCount {
                    carrier: Carrier::Revision,
                    reason: Reason::Malformed,
                    count: 3
                },
                RejectedCount {
                    carrier: Carrier::Evidence,
                    reason: Reason::UnknownSigner,
                    count: 1
                },
            ]
        );
    }
}
