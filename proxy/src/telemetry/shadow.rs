//! What shadowing found for one (service, shadow version): how many copies were compared,
//! which fields differed from stable's answers, and how often the same fields differ
//! between two answers of stable itself (the noise). Updated off the request path, by the
//! tasks that compare; the request path only counts skipped copies.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Fields tracked per shadow version; differences in more go under one name.
const MAX_FIELDS: usize = 256;
const OTHER_FIELDS: &str = "(other fields)";
/// Noise comparisons needed before a verdict, when noise is being learned.
pub const MIN_NOISE_SAMPLES: u64 = 20;

/// Why a copy was not compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// `max_in_flight` copies were already under way.
    InFlight,
    /// The client broke its request body off before it had all passed.
    RequestBody,
    /// A response body larger than `max_body`.
    TooLarge,
    /// Stable's answer failed, or the user went away before it was whole.
    NoStableAnswer,
    /// The shadow version did not answer (down, timed out, reset). Not a skip when
    /// stable answered: then it is a difference (`status`: no answer).
    ShadowFailed,
    /// A compressed (or otherwise encoded) body.
    Encoded,
}

impl Skip {
    /// Every reason a copy is counted as skipped.
    pub const ALL: [Skip; 5] = [
        Skip::InFlight,
        Skip::RequestBody,
        Skip::TooLarge,
        Skip::NoStableAnswer,
        Skip::Encoded,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Skip::InFlight => "in_flight",
            Skip::RequestBody => "request_body",
            Skip::TooLarge => "too_large",
            Skip::NoStableAnswer => "no_stable_answer",
            Skip::ShadowFailed => "shadow_failed",
            Skip::Encoded => "encoded",
        }
    }
}

/// One field that differed in a comparison, with the values seen (already redacted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDiff {
    pub field: String,
    pub stable: String,
    pub other: String,
}

/// One example of a differing field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Method and path, query values left out.
    pub request: String,
    pub stable: String,
    pub shadow: String,
}

#[derive(Debug, Default, Clone)]
struct FieldTally {
    shadow: u64,
    noise: u64,
    sample: Option<Sample>,
}

#[derive(Debug, Default, Clone)]
struct Tallies {
    compared: u64,
    differing: u64,
    noise_compared: u64,
    noise_differing: u64,
    fields: BTreeMap<String, FieldTally>,
}

#[derive(Debug, Default)]
pub struct ShadowStats {
    /// Copies under way (the request path holds it to `max_in_flight`).
    pub in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    mirrored: AtomicU64,
    skipped: [AtomicU64; 6],
    tallies: Mutex<Tallies>,
    /// In a fleet: what each other member last reported of the same shadow, by member.
    pooled: Mutex<BTreeMap<String, Pooled>>,
}

/// Fields a member reports to the fleet: the ones that weigh most on the verdict.
pub const POOLED_FIELDS: usize = 32;

/// One instance's counts of one shadow since it began judging it, as the fleet's evidence
/// carries them (cumulative: a lost report costs nothing, the next one says it all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pooled {
    pub mirrored: u64,
    pub compared: u64,
    pub differing: u64,
    pub noise_compared: u64,
    pub noise_differing: u64,
    /// Per reason, in `Skip::ALL` order.
    pub skipped: Vec<u64>,
    pub fields: Vec<PooledField>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PooledField {
    pub field: String,
    pub shadow: u64,
    pub noise: u64,
    /// Already redacted where it was taken.
    pub sample: Option<Sample>,
}

/// The shadow check's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum ShadowVerdict {
    Pass,
    Fail { summary: String },
    Inconclusive { reason: String },
}

/// Limits the verdict is judged against.
#[derive(Debug, Clone, Copy)]
pub struct VerdictBounds {
    pub min_samples: u64,
    /// Percentage points above noise.
    pub max_extra_diff: f64,
    pub learns_noise: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldReport {
    pub field: String,
    /// Percent of compared copies where the field differed.
    pub shadow_percent: f64,
    /// Percent of stable-against-stable comparisons where it differed.
    pub noise_percent: f64,
    pub sample: Option<Sample>,
}

/// What `ctl shadow` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowReport {
    pub version: String,
    pub mirrored: u64,
    pub compared: u64,
    pub differing: u64,
    pub noise_compared: u64,
    pub noise_differing: u64,
    pub skipped: BTreeMap<String, u64>,
    /// The fields that differed most, worst first.
    pub fields: Vec<FieldReport>,
    /// Instances whose counts are in the figures: 1 alone; in a fleet, this one and every
    /// member that reported on the same shadow.
    #[serde(default = "one")]
    pub instances: u64,
    #[serde(flatten)]
    pub verdict: ShadowVerdict,
}

fn one() -> u64 {
    1
}

impl ShadowReport {
    /// Whose counts the figures are: "this instance" or "fleet-wide, 3 instances".
    pub fn scope(&self) -> String {
        match self.instances {
            0 | 1 => "this instance".to_string(),
            n => format!("fleet-wide, {n} instances"),
        }
    }
}

impl ShadowStats {
    pub fn mirrored(&self) {
        self.mirrored.fetch_add(1, Ordering::Relaxed);
    }

    pub fn skipped(&self, why: Skip) {
        self.skipped[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn tallies(&self) -> std::sync::MutexGuard<'_, Tallies> {
        self.tallies.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy's answer compared with stable's: `diffs` lists the fields that differed.
    pub fn compared(&self, request: &str, diffs: &[FieldDiff]) {
        let mut tallies = self.tallies();
        tallies.compared += 1;
        tallies.differing += u64::from(!diffs.is_empty());
        for (name, diff) in once_each(&tallies.fields, diffs) {
            let tally = tallies.fields.entry(name).or_default();
            tally.shadow += 1;
            tally.sample.get_or_insert_with(|| Sample {
                request: request.to_string(),
                stable: diff.stable.clone(),
                shadow: diff.other.clone(),
            });
        }
    }

    /// Two answers of stable compared: what differs here is noise.
    pub fn noise(&self, diffs: &[FieldDiff]) {
        let mut tallies = self.tallies();
        tallies.noise_compared += 1;
        tallies.noise_differing += u64::from(!diffs.is_empty());
        for (name, _) in once_each(&tallies.fields, diffs) {
            tallies.fields.entry(name).or_default().noise += 1;
        }
    }

    /// A field fails when it differs more often than its noise by more than the bound,
    /// beyond the statistical margin of both rates (`excess`).
    pub fn verdict(&self, bounds: VerdictBounds) -> ShadowVerdict {
        verdict_of(&self.merged().0, bounds)
    }

    /// This instance's counts for the fleet: the fields that weigh most on the verdict.
    pub fn own(&self) -> Pooled {
        let tallies = self.tallies().clone();
        let mut fields: Vec<(&String, &FieldTally, f64)> = tallies
            .fields
            .iter()
            .map(|(name, tally)| (name, tally, excess(tally, &tallies)))
            .collect();
        fields.sort_by(|a, b| b.2.total_cmp(&a.2));
        Pooled {
            mirrored: self.mirrored.load(Ordering::Relaxed),
            compared: tallies.compared,
            differing: tallies.differing,
            noise_compared: tallies.noise_compared,
            noise_differing: tallies.noise_differing,
            skipped: Skip::ALL
                .iter()
                .map(|&skip| self.skipped[skip as usize].load(Ordering::Relaxed))
                .collect(),
            fields: fields
                .into_iter()
                .take(POOLED_FIELDS)
                .map(|(name, tally, _)| PooledField {
                    field: name.clone(),
                    shadow: tally.shadow,
                    noise: tally.noise,
                    sample: tally.sample.clone(),
                })
                .collect(),
        }
    }

    /// Keeps what fleet member `member` last reported of this shadow.
    pub fn pool(&self, member: &str, counts: Pooled) {
        let mut pooled = self.pooled.lock().unwrap_or_else(PoisonError::into_inner);
        // A fleet has far fewer members; only made-up names fill it.
        if pooled.len() >= MAX_POOLED && !pooled.contains_key(member) {
            return;
        }
        pooled.insert(member.to_string(), counts);
    }

    /// This instance's tallies plus every member's last report: the tallies, mirrored,
    /// skipped per reason, and the number of instances in them.
    fn merged(&self) -> (Tallies, u64, [u64; 6], u64) {
        let mut tallies = self.tallies().clone();
        let mut mirrored = self.mirrored.load(Ordering::Relaxed);
        let mut skipped = std::array::from_fn(|i| self.skipped[i].load(Ordering::Relaxed));
        let pooled = self.pooled.lock().unwrap_or_else(PoisonError::into_inner);
        for counts in pooled.values() {
            mirrored = mirrored.saturating_add(counts.mirrored);
            tallies.compared = tallies.compared.saturating_add(counts.compared);
            tallies.differing = tallies.differing.saturating_add(counts.differing);
            tallies.noise_compared = tallies.noise_compared.saturating_add(counts.noise_compared);
            tallies.noise_differing = tallies
                .noise_differing
                .saturating_add(counts.noise_differing);
            for (skip, n) in Skip::ALL.iter().zip(&counts.skipped) {
                skipped[*skip as usize] = skipped[*skip as usize].saturating_add(*n);
            }
            for field in &counts.fields {
                let tally = tallies.fields.entry(field.field.clone()).or_default();
                tally.shadow = tally.shadow.saturating_add(field.shadow);
                tally.noise = tally.noise.saturating_add(field.noise);
                if tally.sample.is_none() {
                    tally.sample = field.sample.clone();
                }
            }
        }
        (tallies, mirrored, skipped, 1 + pooled.len() as u64)
    }
}

/// Members whose reports one shadow keeps.
const MAX_POOLED: usize = 256;

/// The verdict on `tallies` (see `ShadowStats::verdict`).
fn verdict_of(tallies: &Tallies, bounds: VerdictBounds) -> ShadowVerdict {
    if tallies.compared < bounds.min_samples {
        return ShadowVerdict::Inconclusive {
            reason: format!(
                "{} of {} compared requests",
                tallies.compared, bounds.min_samples
            ),
        };
    }
    if bounds.learns_noise && tallies.noise_compared < MIN_NOISE_SAMPLES {
        return ShadowVerdict::Inconclusive {
            reason: format!(
                "learning noise: {} of {MIN_NOISE_SAMPLES} stable-against-stable comparisons",
                tallies.noise_compared
            ),
        };
    }
    let worst = tallies
        .fields
        .iter()
        .map(|(name, tally)| (name, tally, excess(tally, tallies)))
        .max_by(|a, b| a.2.total_cmp(&b.2));
    match worst {
        Some((name, tally, excess)) if excess > bounds.max_extra_diff => {
            let sample = tally.sample.as_ref().map_or(String::new(), |s| {
                format!(
                    "; e.g. {}: stable {}, shadow {}",
                    s.request, s.stable, s.shadow
                )
            });
            ShadowVerdict::Fail {
                summary: format!(
                    "{name} differs in {:.1}% of {} compared requests (noise {:.1}%){sample}",
                    percent(tally.shadow, tallies.compared),
                    tallies.compared,
                    percent(tally.noise, tallies.noise_compared),
                ),
            }
        }
        _ => ShadowVerdict::Pass,
    }
}

impl ShadowStats {
    /// What `ctl shadow` shows: in a fleet, this instance's counts and every member's.
    pub fn report(&self, version: &str, bounds: VerdictBounds) -> ShadowReport {
        let (tallies, mirrored, skipped, instances) = self.merged();
        let verdict = verdict_of(&tallies, bounds);
        let mut fields: Vec<FieldReport> = tallies
            .fields
            .iter()
            .map(|(name, tally)| FieldReport {
                field: name.clone(),
                shadow_percent: percent(tally.shadow, tallies.compared),
                noise_percent: percent(tally.noise, tallies.noise_compared),
                sample: tally.sample.clone(),
            })
            .collect();
        fields.sort_by(|a, b| b.shadow_percent.total_cmp(&a.shadow_percent));
        fields.truncate(10);
        ShadowReport {
            version: version.to_string(),
            mirrored,
            compared: tallies.compared,
            differing: tallies.differing,
            noise_compared: tallies.noise_compared,
            noise_differing: tallies.noise_differing,
            skipped: Skip::ALL
                .iter()
                .map(|&skip| (skip.name().to_string(), skipped[skip as usize]))
                .collect(),
            fields,
            instances,
            verdict,
        }
    }
}

/// The tracked name of each differing field, once per comparison: past `MAX_FIELDS`
/// names, new ones count together as one.
fn once_each<'d>(
    fields: &BTreeMap<String, FieldTally>,
    diffs: &'d [FieldDiff],
) -> Vec<(String, &'d FieldDiff)> {
    let mut named: Vec<(String, &FieldDiff)> = Vec::new();
    let mut new_names = 0;
    for diff in diffs {
        let known = fields.contains_key(&diff.field);
        let name = match known || fields.len() + new_names < MAX_FIELDS {
            true => diff.field.clone(),
            false => OTHER_FIELDS.to_string(),
        };
        if !named.iter().any(|(n, _)| *n == name) {
            new_names += usize::from(!known && name != OTHER_FIELDS);
            named.push((name, diff));
        }
    }
    named
}

/// Points by which a field's shadow rate exceeds its noise, at the low end of a 95%
/// interval of the difference of the two rates (so neither a few shadow samples nor a
/// few noise samples condemn a field: a field must differ clearly more in the shadow).
fn excess(tally: &FieldTally, tallies: &Tallies) -> f64 {
    let shadow = rate(tally.shadow, tallies.compared);
    let noise = rate(tally.noise, tallies.noise_compared);
    let spread = |p: f64, n: u64| match n {
        0 => 0.0,
        n => p * (1.0 - p) / n as f64,
    };
    let margin =
        1.96 * (spread(shadow, tallies.compared) + spread(noise, tallies.noise_compared)).sqrt();
    100.0 * (shadow - noise - margin)
}

fn rate(part: u64, whole: u64) -> f64 {
    match whole {
        0 => 0.0,
        whole => part as f64 / whole as f64,
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    match whole {
        0 => 0.0,
        whole => 100.0 * part as f64 / whole as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(field: &str) -> Vec<FieldDiff> {
        vec![FieldDiff {
            field: field.to_string(),
            stable: "1".into(),
            other: "2".into(),
        }]
    }

    const BOUNDS: VerdictBounds = VerdictBounds {
        min_samples: 200,
        max_extra_diff: 1.0,
        learns_noise: true,
    };

    #[test]
    fn a_field_that_differs_only_in_the_shadow_fails() {
        let stats = ShadowStats::default();
        for i in 0..200 {
            stats.compared(
                "GET /item",
                &if i % 25 == 0 { diff("$.price") } else { vec![] },
            );
        }
        assert!(matches!(
            stats.verdict(BOUNDS),
            ShadowVerdict::Inconclusive { .. }
        ));
        for _ in 0..20 {
            stats.noise(&[]);
        }
        let ShadowVerdict::Fail { summary } = stats.verdict(BOUNDS) else {
            panic!("a 4% difference with no noise must fail")
        };
        assert!(
            summary.starts_with("$.price differs in 4.0% of 200"),
            "{summary}"
        );
    }

    #[test]
    fn a_field_that_differs_between_stable_answers_too_is_noise() {
        let stats = ShadowStats::default();
        for i in 0..400 {
            stats.compared("GET /", &diff("$.now"));
            if i % 10 == 0 {
                stats.noise(&diff("$.now"));
            }
        }
        assert_eq!(stats.verdict(BOUNDS), ShadowVerdict::Pass);
        // Random order: differs half the time in the shadow, a third in 40 noise samples.
        let random = ShadowStats::default();
        for i in 0..400 {
            random.compared("GET /", &if i % 2 == 0 { diff("$.order") } else { vec![] });
            if i % 10 == 0 {
                random.noise(&if i % 30 == 0 { diff("$.order") } else { vec![] });
            }
        }
        assert_eq!(random.verdict(BOUNDS), ShadowVerdict::Pass);
    }

    #[test]
    fn members_counts_pool_into_the_verdict_and_the_report() {
        let (here, there) = (ShadowStats::default(), ShadowStats::default());
        for stats in [&here, &there] {
            for i in 0..120 {
                stats.compared(
                    "GET /item",
                    &if i % 10 == 0 { diff("$.price") } else { vec![] },
                );
                if i % 10 == 5 {
                    stats.noise(&[]);
                }
            }
        }
        // Alone, each has 120 of the 200 compared requests needed.
        assert!(matches!(
            here.verdict(BOUNDS),
            ShadowVerdict::Inconclusive { .. }
        ));
        here.pool("edge-2", there.own());
        let report = here.report("green", BOUNDS);
        assert_eq!(
            (report.compared, report.noise_compared, report.instances),
            (240, 24, 2)
        );
        assert_eq!(report.scope(), "fleet-wide, 2 instances");
        let ShadowVerdict::Fail { summary } = report.verdict else {
            panic!("10% differing over 240 pooled requests must fail")
        };
        assert!(
            summary.starts_with("$.price differs in 10.0% of 240"),
            "{summary}"
        );
        // A member's later report replaces its earlier one: cumulative, not added twice.
        here.pool("edge-2", there.own());
        assert_eq!(here.report("green", BOUNDS).compared, 240);
    }
}
