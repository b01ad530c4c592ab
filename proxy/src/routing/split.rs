//! The traffic split of one service: a fixed line of buckets cut into one range per version.
//!
//! Non-stable versions take ranges from bucket 0 in a fixed order (by name) and the stable
//! version takes the rest. Raising a canary only extends its range, so a sticky user who was
//! on the canary stays there; lowering it moves only the users at the end of its range.

/// Buckets on the line: the split's resolution is 1/65536 of traffic.
pub const BUCKETS: u32 = 1 << 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// (exclusive end of range, version index), in bucket order; empty ranges are left out.
    ranges: Box<[(u32, u16)]>,
}

impl Split {
    /// `weights[i]` is version i's weight; `stable` indexes the version that takes the rest.
    /// Callers guarantee at least one non-zero weight (config and admin checks refuse all-zero).
    pub fn new(weights: &[u64], stable: usize) -> Split {
        let total: u128 = weights.iter().map(|&w| u128::from(w)).sum::<u128>().max(1);
        let mut ranges = Vec::with_capacity(weights.len());
        let mut cumulative: u128 = 0;
        let mut start = 0u32;
        for (index, &weight) in weights.iter().enumerate() {
            if index == stable {
                continue;
            }
            cumulative += u128::from(weight);
            // Cut points come from cumulative weight, so rounding never leaves a gap.
            let end = (cumulative * u128::from(BUCKETS) / total) as u32;
            if end > start {
                ranges.push((end, index as u16));
                start = end;
            }
        }
        if start < BUCKETS {
            ranges.push((BUCKETS, stable as u16));
        }
        Split {
            ranges: ranges.into_boxed_slice(),
        }
    }

    /// The version owning `bucket` (taken modulo the line).
    #[inline]
    pub fn version_at(&self, bucket: u32) -> usize {
        let bucket = bucket % BUCKETS;
        for &(end, version) in self.ranges.iter() {
            if bucket < end {
                return version as usize;
            }
        }
        // Unreachable by construction: the last range always ends at BUCKETS.
        self.ranges.last().map_or(0, |&(_, v)| v as usize)
    }

    /// Share of traffic per version index, in buckets.
    pub fn buckets_of(&self, version: usize) -> u32 {
        let mut start = 0;
        let mut owned = 0;
        for &(end, v) in self.ranges.iter() {
            if v as usize == version {
                owned += end - start;
            }
            start = end;
        }
        owned
    }
}

/// The bucket of a sticky key: a stable hash, the same on every run and every build.
#[inline]
pub fn bucket_of_key(key: &[u8]) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key) >> 48) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_weights() {
        let split = Split::new(&[95, 5], 0);
        let canary = split.buckets_of(1) as f64 / BUCKETS as f64;
        assert!((canary - 0.05).abs() < 0.0001, "canary share {canary}");
        assert_eq!(split.buckets_of(0) + split.buckets_of(1), BUCKETS);
    }

    #[test]
    fn tiny_weights_of_any_sum() {
        let split = Split::new(&[999, 1], 0);
        let canary = split.buckets_of(1) as f64 / BUCKETS as f64;
        assert!((canary - 0.001).abs() < 0.0001, "canary share {canary}");
    }

    #[test]
    fn zero_stable_weight_gives_everything_to_the_others() {
        let split = Split::new(&[0, 1], 0);
        assert_eq!(split.buckets_of(1), BUCKETS);
        assert_eq!(split.buckets_of(0), 0);
    }

    #[test]
    fn raising_the_canary_keeps_its_users_and_lowering_moves_only_its_tail() {
        let low = Split::new(&[95, 5], 0);
        let high = Split::new(&[90, 10], 0);
        for bucket in 0..BUCKETS {
            if low.version_at(bucket) == 1 {
                assert_eq!(
                    high.version_at(bucket),
                    1,
                    "bucket {bucket} left the canary"
                );
            }
            if high.version_at(bucket) == 0 {
                assert_eq!(
                    low.version_at(bucket),
                    0,
                    "bucket {bucket} moved onto the canary"
                );
            }
        }
    }

    #[test]
    fn key_hash_is_stable_across_builds() {
        // Pinned values: if these change, every sticky user in production would move.
        assert_eq!(bucket_of_key(b"user-42"), 20734);
        assert_eq!(bucket_of_key(b""), 11526);
    }
}
