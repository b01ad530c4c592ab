//! `[[services.NAME.analysis]]`: a PromQL query run against Prometheus while a canary takes
//! traffic, and the condition its answer must meet. Everything is checked here, at parse
//! time, without the network: the URL's shape, the placeholders, the condition, the bounds
//! of every number.

use super::HumanDuration;
use super::SpannedProblem;
use serde::Deserialize;
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

/// The shortest and longest `every`: faster than Prometheus scrapes is noise, slower than
/// an hour is no judgment at all.
const EVERY_MIN: Duration = Duration::from_secs(1);
const EVERY_MAX: Duration = Duration::from_secs(3600);
/// The most failed runs in a row an analysis may wait for before it aborts.
const FAILURES_MAX: i64 = 100;
/// The longest a query may take; a shorter `every` bounds it further.
pub const QUERY_TIMEOUT_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSection {
    pub name: Spanned<String>,
    /// Prometheus's base URL: `http://HOST:PORT`, optionally with a path prefix.
    pub prometheus: Spanned<String>,
    /// PromQL with `{version}` (and optionally `{service}`) placeholders.
    pub query: Spanned<String>,
    pub every: Spanned<HumanDuration>,
    /// "canary >= stable - 0.01" and the like; or bounds with `min`/`max`.
    pub pass: Option<Spanned<String>>,
    pub min: Option<Spanned<f64>>,
    pub max: Option<Spanned<f64>>,
    /// Failed runs in a row that abort the canary (default 2).
    pub failures: Option<Spanned<i64>>,
    /// "hold" (the default) or "fail"; never a pass.
    pub no_data: Option<Spanned<String>>,
}

/// A validated analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisSettings {
    pub name: String,
    /// `http://host:port` plus any path prefix, without a trailing slash.
    pub prometheus: String,
    pub query: String,
    pub every: Duration,
    pub condition: Condition,
    pub failures: u32,
    pub no_data: NoData,
}

impl AnalysisSettings {
    /// The query for `version` of `service`.
    pub fn query_for(&self, service: &str, version: &str) -> String {
        self.query
            .replace("{service}", service)
            .replace("{version}", version)
    }

    /// Whether the condition needs stable's value too.
    pub fn against_stable(&self) -> bool {
        matches!(self.condition, Condition::AgainstStable { .. })
    }

    /// How long one query may take.
    pub fn timeout(&self) -> Duration {
        self.every.min(QUERY_TIMEOUT_MAX)
    }
}

/// What "no data" (an empty answer, NaN) counts as. Never a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoData {
    /// The rollout holds; nothing aborts.
    Hold,
    /// A failed run.
    Fail,
}

/// When a run passes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// The canary's value within bounds (inclusive).
    Bounds { min: Option<f64>, max: Option<f64> },
    /// `canary OP stable [+|-|* number]`.
    AgainstStable {
        op: Comparison,
        adjust: Adjust,
        operand: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    AtLeast,
    AtMost,
    Above,
    Below,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adjust {
    Plus,
    Minus,
    Times,
}

impl Comparison {
    fn symbol(self) -> &'static str {
        match self {
            Comparison::AtLeast => ">=",
            Comparison::AtMost => "<=",
            Comparison::Above => ">",
            Comparison::Below => "<",
        }
    }

    pub fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Comparison::AtLeast => left >= right,
            Comparison::AtMost => left <= right,
            Comparison::Above => left > right,
            Comparison::Below => left < right,
        }
    }
}

impl Adjust {
    pub fn apply(self, value: f64, operand: f64) -> f64 {
        match self {
            Adjust::Plus => value + operand,
            Adjust::Minus => value - operand,
            Adjust::Times => value * operand,
        }
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::Bounds { min, max } => match (min, max) {
                (Some(min), Some(max)) => write!(f, "{min} <= canary <= {max}"),
                (Some(min), None) => write!(f, "canary >= {min}"),
                (None, Some(max)) => write!(f, "canary <= {max}"),
                (None, None) => write!(f, "any value"),
            },
            Condition::AgainstStable {
                op,
                adjust,
                operand,
            } => {
                let adjust = match adjust {
                    Adjust::Plus => "+",
                    Adjust::Minus => "-",
                    Adjust::Times => "*",
                };
                write!(f, "canary {} stable {adjust} {operand}", op.symbol())
            }
        }
    }
}

/// Parses `canary OP stable [(+|-|*) NUMBER]`.
pub fn parse_condition(text: &str) -> Result<Condition, String> {
    let shape = "write it as \"canary >= stable - 0.01\" (>=, <=, > or <; then + N, - N or * N, optional), or use min/max for bounds";
    let words: Vec<&str> = text.split_whitespace().collect();
    let (op, rest) = match words.as_slice() {
        ["canary", op, "stable", rest @ ..] => (*op, rest),
        _ => return Err(format!("{text:?} is not a condition: {shape}")),
    };
    let op = match op {
        ">=" => Comparison::AtLeast,
        "<=" => Comparison::AtMost,
        ">" => Comparison::Above,
        "<" => Comparison::Below,
        other => return Err(format!("{text:?}: unknown comparison {other:?}: {shape}")),
    };
    let (adjust, operand) = match rest {
        [] => (Adjust::Plus, 0.0),
        [adjust, number] => {
            let adjust = match *adjust {
                "+" => Adjust::Plus,
                "-" => Adjust::Minus,
                "*" => Adjust::Times,
                other => return Err(format!("{text:?}: unknown operator {other:?}: {shape}")),
            };
            match number.parse::<f64>() {
                Ok(n) if n.is_finite() && n >= 0.0 => (adjust, n),
                _ => return Err(format!("{text:?}: {number:?} is not a non-negative number")),
            }
        }
        _ => return Err(format!("{text:?} is not a condition: {shape}")),
    };
    Ok(Condition::AgainstStable {
        op,
        adjust,
        operand,
    })
}

impl AnalysisSection {
    /// The analysis, or every problem with it. `span` is the entry's own span.
    pub fn settings(
        &self,
        service: &str,
        span: Range<usize>,
        problems: &mut Vec<SpannedProblem>,
    ) -> Option<AnalysisSettings> {
        let before = problems.len();
        let name = self.name.get_ref().trim().to_string();
        let key = format!("services.{service}.analysis {name:?}");
        if name.is_empty() {
            problems.push((
                self.name.span(),
                format!("services.{service}.analysis needs a name"),
            ));
        }
        let prometheus = self.prometheus(&key, problems);
        self.check_query(&key, problems);
        let every = self.every.get_ref().0;
        if !(EVERY_MIN..=EVERY_MAX).contains(&every) {
            problems.push((
                self.every.span(),
                format!("{key}: every must be from 1s to 1h, not {every:?}"),
            ));
        }
        let condition = self.condition(&key, span, problems);
        let failures = match self.failures.as_ref() {
            None => 2,
            Some(failures) if (1..=FAILURES_MAX).contains(failures.get_ref()) => {
                *failures.get_ref() as u32
            }
            Some(failures) => {
                problems.push((
                    failures.span(),
                    format!(
                        "{key}: failures must be from 1 to {FAILURES_MAX} (failed runs in a row that abort), not {}",
                        failures.get_ref()
                    ),
                ));
                1
            }
        };
        let no_data = match self.no_data.as_ref().map(|n| (n, n.get_ref().as_str())) {
            None | Some((_, "hold")) => NoData::Hold,
            Some((_, "fail")) => NoData::Fail,
            Some((written, other)) => {
                problems.push((
                    written.span(),
                    format!("{key}: no_data must be \"hold\" or \"fail\" (no data is never a pass), not {other:?}"),
                ));
                NoData::Hold
            }
        };
        (problems.len() == before).then(|| AnalysisSettings {
            name,
            prometheus: prometheus.unwrap_or_default(),
            query: self.query.get_ref().clone(),
            every,
            condition: condition.unwrap_or(Condition::Bounds {
                min: None,
                max: None,
            }),
            failures,
            no_data,
        })
    }

    /// `http://host:port[/prefix]`: plain HTTP, a port, nothing after the path.
    fn prometheus(&self, key: &str, problems: &mut Vec<SpannedProblem>) -> Option<String> {
        let text = self.prometheus.get_ref().trim_end_matches('/');
        let problem = match text.parse::<http::Uri>() {
            Err(_) => "is not a URL".to_string(),
            Ok(uri) if uri.scheme_str() == Some("https") => {
                "uses https, which analysis does not speak yet: use http://".into()
            }
            Ok(uri) if uri.scheme_str() != Some("http") => {
                "needs http:// and a host, e.g. \"http://127.0.0.1:9090\"".into()
            }
            Ok(uri) if uri.host().is_none_or(str::is_empty) => "has no host".into(),
            Ok(uri) if uri.query().is_some() => {
                "must not carry a query (the query is the `query` key)".into()
            }
            Ok(_) if text.contains('@') => "must not carry credentials".into(),
            Ok(_) => return Some(text.to_string()),
        };
        problems.push((
            self.prometheus.span(),
            format!(
                "{key}: prometheus {:?} {problem}",
                self.prometheus.get_ref()
            ),
        ));
        None
    }

    /// `{version}` must be there (or canary and stable measure the same thing); no other
    /// placeholder than `{service}` may be.
    fn check_query(&self, key: &str, problems: &mut Vec<SpannedProblem>) {
        let query = self.query.get_ref();
        let span = self.query.span();
        if query.trim().is_empty() {
            problems.push((span, format!("{key}: query is empty")));
            return;
        }
        for placeholder in placeholders(query) {
            if placeholder != "version" && placeholder != "service" {
                problems.push((
                    span.clone(),
                    format!("{key}: query has an unknown placeholder {{{placeholder}}} (only {{service}} and {{version}})"),
                ));
            }
        }
        if !query.contains("{version}") {
            problems.push((
                span,
                format!("{key}: query must use {{version}} (e.g. checkout_total{{version=\"{{version}}\"}}), or it measures every version alike"),
            ));
        }
    }

    fn condition(
        &self,
        key: &str,
        span: Range<usize>,
        problems: &mut Vec<SpannedProblem>,
    ) -> Option<Condition> {
        let bound = |value: &Option<Spanned<f64>>, problems: &mut Vec<SpannedProblem>| {
            let value = value.as_ref()?;
            if value.get_ref().is_finite() {
                return Some(*value.get_ref());
            }
            problems.push((
                value.span(),
                format!("{key}: bounds must be finite numbers"),
            ));
            None
        };
        match (&self.pass, &self.min, &self.max) {
            (Some(pass), None, None) => match parse_condition(pass.get_ref()) {
                Ok(condition) => Some(condition),
                Err(problem) => {
                    problems.push((pass.span(), format!("{key}: pass {problem}")));
                    None
                }
            },
            (None, None, None) => {
                problems.push((
                    span,
                    format!("{key} needs a condition: pass = \"canary >= stable - 0.01\", or min/max bounds"),
                ));
                None
            }
            (Some(pass), _, _) => {
                problems.push((
                    pass.span(),
                    format!("{key}: give either pass or min/max, not both"),
                ));
                None
            }
            (None, min, max) => {
                let (min, max) = (bound(min, problems), bound(max, problems));
                if let (Some(low), Some(high), Some(written)) = (min, max, &self.min) {
                    if low > high {
                        problems.push((
                            written.span(),
                            format!("{key}: min {low} is above max {high}: nothing could pass"),
                        ));
                    }
                }
                Some(Condition::Bounds { min, max })
            }
        }
    }
}

/// The `{word}` placeholders of a query (PromQL's own braces hold matchers, never a bare word).
fn placeholders(query: &str) -> impl Iterator<Item = &str> {
    query.split('{').skip(1).filter_map(|after| {
        let word = after.split('}').next()?;
        let bare = after.contains('}')
            && !word.is_empty()
            && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        bare.then_some(word)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse_and_hold() {
        let condition = parse_condition("canary >= stable - 0.01").unwrap();
        let Condition::AgainstStable {
            op,
            adjust,
            operand,
        } = condition
        else {
            panic!("{condition:?}");
        };
        assert!(op.holds(0.985, adjust.apply(0.99, operand)));
        assert!(!op.holds(0.90, adjust.apply(0.99, operand)));
        assert_eq!(condition.to_string(), "canary >= stable - 0.01");
        assert!(parse_condition("canary <= stable * 1.2").is_ok());
        assert!(parse_condition("canary > stable").is_ok());
        for bad in [
            "",
            "canary",
            "canary => stable",
            "stable >= canary",
            "canary >= stable -",
            "canary >= stable - x",
            "canary >= stable / 2",
            "canary >= stable - -1",
            "canary >= stable - NaN",
            "canary >= stable - 1 + 2",
        ] {
            assert!(parse_condition(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn placeholders_are_bare_words_in_braces() {
        let found: Vec<&str> =
            placeholders(r#"sum(rate(x{version="{version}",job="{service}"}[1m])) {foo}"#)
                .collect();
        assert_eq!(found, ["version", "service", "foo"]);
        assert_eq!(placeholders("up{job=\"a\"} {").count(), 0);
    }
}
