//! `[[services.NAME.checks]]` (smoke checks of a version as a whole) and `checks_every`
//! (how often the return point is checked while another version takes traffic); the
//! service's `[health]` section is read here too, so the service hooks in with one call.

use super::answer::{check_path, ExpectStatus, StatusValue};
use super::health::{HealthSection, HealthSettings};
use super::HumanDuration;
use super::SpannedProblem;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

/// How long a check without `max_latency` may take before it counts as failed.
pub const DEFAULT_CHECK_DEADLINE: Duration = Duration::from_secs(5);
pub const DEFAULT_CHECKS_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSection {
    pub name: Spanned<String>,
    #[serde(default)]
    pub method: Option<Spanned<String>>,
    pub path: Spanned<String>,
    #[serde(default)]
    pub headers: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub expect_status: Option<Spanned<StatusValue>>,
    #[serde(default)]
    pub expect_body: Option<Spanned<String>>,
    #[serde(default)]
    pub max_latency: Option<Spanned<HumanDuration>>,
}

/// One validated smoke check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmokeCheck {
    pub name: String,
    pub method: http::Method,
    pub path: String,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub body: String,
    pub expect_status: ExpectStatus,
    pub expect_body: Option<String>,
    pub max_latency: Option<Duration>,
}

impl SmokeCheck {
    /// The time after which the check has failed, answered or not.
    pub fn deadline(&self) -> Duration {
        self.max_latency.unwrap_or(DEFAULT_CHECK_DEADLINE)
    }
}

/// What a service says about verifying its versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySettings {
    /// Active health checks of every endpoint; none: passive only.
    pub health: Option<HealthSettings>,
    /// Smoke checks; none: a version's checks are only "every endpoint accepts a connection".
    pub checks: Vec<SmokeCheck>,
    /// How often the stable version is checked while another version takes traffic.
    pub checks_every: Duration,
}

impl Default for VerifySettings {
    fn default() -> Self {
        VerifySettings {
            health: None,
            checks: Vec::new(),
            checks_every: DEFAULT_CHECKS_EVERY,
        }
    }
}

/// The service's verification settings and every problem with them.
pub fn verify_settings(
    service: &str,
    health: Option<&Spanned<HealthSection>>,
    checks: &[Spanned<CheckSection>],
    checks_every: Option<&Spanned<HumanDuration>>,
) -> (VerifySettings, Vec<SpannedProblem>) {
    let mut problems = Vec::new();
    let health = health.and_then(|h| h.get_ref().settings(service, h.span(), &mut problems));
    let mut names = HashSet::new();
    let checks = checks
        .iter()
        .enumerate()
        .filter_map(|(index, check)| {
            let key = format!("services.{service}.checks[{index}]");
            let name = check.get_ref().name.get_ref();
            if !names.insert(name.clone()) {
                problems.push((
                    check.get_ref().name.span(),
                    format!("{key}: a check named {name:?} is already defined"),
                ));
            }
            check.get_ref().settings(&key, check.span(), &mut problems)
        })
        .collect();
    let checks_every = checks_every.map_or(DEFAULT_CHECKS_EVERY, |every| {
        if every.get_ref().0 < Duration::from_secs(1) {
            problems.push((
                every.span(),
                format!("services.{service}.checks_every must be at least 1s"),
            ));
        }
        every.get_ref().0
    });
    let settings = VerifySettings {
        health,
        checks,
        checks_every,
    };
    (settings, problems)
}

impl CheckSection {
    fn settings(
        &self,
        key: &str,
        span: Range<usize>,
        problems: &mut Vec<SpannedProblem>,
    ) -> Option<SmokeCheck> {
        let before = problems.len();
        let name = self.name.get_ref().trim();
        if name.is_empty() || name.chars().any(char::is_control) {
            problems.push((
                self.name.span(),
                format!("{key}.name must be a non-empty line of text"),
            ));
        }
        let method = match &self.method {
            None => http::Method::GET,
            Some(method) => match http::Method::from_bytes(method.get_ref().as_bytes()) {
                Ok(parsed) if method.get_ref().bytes().all(|b| b.is_ascii_uppercase()) => parsed,
                _ => {
                    problems.push((
                        method.span(),
                        format!(
                            "{key}.method {:?} is not an HTTP method such as \"GET\"",
                            method.get_ref()
                        ),
                    ));
                    http::Method::GET
                }
            },
        };
        check_path(&self.path, &format!("{key}.path"), problems);
        let headers = self.headers(key, problems);
        let expect_status = match &self.expect_status {
            None => ExpectStatus::Class(2),
            Some(value) => ExpectStatus::parse(value.get_ref()).unwrap_or_else(|why| {
                problems.push((value.span(), format!("{key}.expect_status: {why}")));
                ExpectStatus::Class(2)
            }),
        };
        if let Some(body) = &self.expect_body {
            if body.get_ref().is_empty() {
                problems.push((body.span(), format!("{key}.expect_body must not be empty")));
            }
        }
        if let Some(latency) = &self.max_latency {
            let latency = latency.get_ref().0;
            if latency.is_zero() || latency > Duration::from_secs(60) {
                let span = self
                    .max_latency
                    .as_ref()
                    .map_or(span.clone(), Spanned::span);
                problems.push((
                    span,
                    format!("{key}.max_latency must be more than 0 and at most 60s"),
                ));
            }
        }
        (problems.len() == before).then(|| SmokeCheck {
            name: name.to_string(),
            method,
            path: self.path.get_ref().clone(),
            headers,
            body: self.body.clone().unwrap_or_default(),
            expect_status,
            expect_body: self.expect_body.as_ref().map(|b| b.get_ref().clone()),
            max_latency: self.max_latency.as_ref().map(|l| l.get_ref().0),
        })
    }

    fn headers(
        &self,
        key: &str,
        problems: &mut Vec<SpannedProblem>,
    ) -> Vec<(http::HeaderName, http::HeaderValue)> {
        let Some(headers) = &self.headers else {
            return Vec::new();
        };
        let mut parsed = Vec::new();
        for (name, value) in headers.get_ref() {
            match (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(value),
            ) {
                (Ok(name), Ok(value)) => parsed.push((name, value)),
                _ => problems.push((
                    headers.span(),
                    format!("{key}.headers: {name:?} = {value:?} is not a valid HTTP header"),
                )),
            }
        }
        parsed
    }
}
