//! `[services.NAME.health]`: active checks of every endpoint. Without the section an
//! endpoint leaves the rotation only on passive signals (refused connections).

use super::answer::{check_path, ExpectStatus, StatusValue};
use super::HumanDuration;
use super::SpannedProblem;
use serde::Deserialize;
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    pub path: Option<Spanned<String>>,
    pub interval: Option<Spanned<HumanDuration>>,
    pub timeout: Option<Spanned<HumanDuration>>,
    pub fall: Option<Spanned<i64>>,
    pub rise: Option<Spanned<i64>>,
    pub expect: Option<Spanned<StatusValue>>,
}

/// Validated health-check settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that take an endpoint out of the rotation.
    pub fall: u32,
    /// Consecutive successes that bring it back.
    pub rise: u32,
    pub expect: ExpectStatus,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            path: "/healthz".to_string(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            fall: 3,
            rise: 2,
            expect: ExpectStatus::Class(2),
        }
    }
}

const SHORTEST_INTERVAL: Duration = Duration::from_millis(100);
const LONGEST_INTERVAL: Duration = Duration::from_secs(3600);

impl HealthSection {
    /// The settings, or `None` after pushing every problem (`span`: the section's).
    pub fn settings(
        &self,
        service: &str,
        span: Range<usize>,
        problems: &mut Vec<SpannedProblem>,
    ) -> Option<HealthSettings> {
        let key = |k: &str| format!("services.{service}.health.{k}");
        let before = problems.len();
        let mut settings = HealthSettings::default();
        if let Some(path) = &self.path {
            check_path(path, &key("path"), problems);
            settings.path = path.get_ref().clone();
        }
        if let Some(interval) = &self.interval {
            settings.interval = interval.get_ref().0;
            if !(SHORTEST_INTERVAL..=LONGEST_INTERVAL).contains(&settings.interval) {
                problems.push((
                    interval.span(),
                    format!("{} must be between 100ms and 1h", key("interval")),
                ));
            }
        }
        if let Some(timeout) = &self.timeout {
            settings.timeout = timeout.get_ref().0;
            if settings.timeout.is_zero() {
                problems.push((
                    timeout.span(),
                    format!("{} must be more than 0", key("timeout")),
                ));
            }
        }
        if settings.timeout > settings.interval {
            let at = self.timeout.as_ref().map_or(span, Spanned::span);
            problems.push((
                at,
                format!(
                    "{} ({:?}) must not be longer than the interval ({:?})",
                    key("timeout"),
                    settings.timeout,
                    settings.interval
                ),
            ));
        }
        for (name, value, slot) in [
            ("fall", &self.fall, &mut settings.fall),
            ("rise", &self.rise, &mut settings.rise),
        ] {
            if let Some(value) = value {
                match u32::try_from(*value.get_ref()) {
                    Ok(count @ 1..=100) => *slot = count,
                    _ => problems.push((
                        value.span(),
                        format!(
                            "{} must be between 1 and 100, not {}",
                            key(name),
                            value.get_ref()
                        ),
                    )),
                }
            }
        }
        if let Some(expect) = &self.expect {
            match ExpectStatus::parse(expect.get_ref()) {
                Ok(parsed) => settings.expect = parsed,
                Err(why) => problems.push((expect.span(), format!("{}: {why}", key("expect")))),
            }
        }
        (problems.len() == before).then_some(settings)
    }
}
