//! `[[routes]]`: which service takes a request, by host, path, method, headers and query,
//! in order, first match wins; and the value tests that version matches share with them.
//! A request no route takes goes by the services' `hosts`, as without routes.

use super::SpannedProblem;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub host: Option<String>,
    pub path: Option<PathSection>,
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub headers: BTreeMap<String, ValueSection>,
    #[serde(default)]
    pub query: BTreeMap<String, ValueSection>,
    pub service: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSection {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
}

/// A test of one value: `{ exact = "a" }`, `{ regex = "^a" }` or `{ present = true }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueSection {
    pub exact: Option<String>,
    pub regex: Option<String>,
    pub present: Option<bool>,
}

#[derive(Debug, Clone)]
pub enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (not the bare domain).
    Suffix(String),
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Any,
    Exact(String),
    Prefix(String),
    Regex(regex::Regex),
}

#[derive(Debug, Clone)]
pub enum ValueMatch {
    Exact(String),
    Regex(regex::Regex),
    Present,
}

impl ValueMatch {
    pub fn test(&self, value: Option<&[u8]>) -> bool {
        match (self, value) {
            (_, None) => false,
            (ValueMatch::Present, Some(_)) => true,
            (ValueMatch::Exact(want), Some(got)) => want.as_bytes() == got,
            (ValueMatch::Regex(regex), Some(got)) => {
                std::str::from_utf8(got).is_ok_and(|got| regex.is_match(got))
            }
        }
    }

    /// The test as written, or every problem with it (`key` names it in them).
    pub fn parse(section: &ValueSection, key: &str) -> Result<ValueMatch, String> {
        match (&section.exact, &section.regex, section.present) {
            (Some(exact), None, None) => Ok(ValueMatch::Exact(exact.clone())),
            (None, Some(pattern), None) => regex(pattern, key).map(ValueMatch::Regex),
            (None, None, Some(true)) => Ok(ValueMatch::Present),
            _ => Err(format!(
                "{key}: give one of exact = \"...\", regex = \"...\" or present = true"
            )),
        }
    }
}

fn regex(pattern: &str, key: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(pattern).map_err(|err| {
        let first = err.to_string();
        let first = first.lines().last().unwrap_or("invalid").trim().to_string();
        format!("{key}: regex {pattern:?} does not compile: {first}")
    })
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct RouteRule {
    pub host: HostMatch,
    pub path: PathMatch,
    /// Empty: any method.
    pub methods: Vec<http::Method>,
    pub headers: Vec<(http::HeaderName, ValueMatch)>,
    pub query: Vec<(String, ValueMatch)>,
    pub service: String,
    /// The line it was written on, to name it in problems.
    pub line: usize,
}

impl RouteSection {
    /// The route, or every problem with it. `n` numbers it in problems (from 1).
    pub fn rule(
        &self,
        n: usize,
        span: Range<usize>,
        line: usize,
        services: &[&str],
        problems: &mut Vec<SpannedProblem>,
    ) -> Option<RouteRule> {
        let before = problems.len();
        let key = format!("routes[{n}]");
        let mut report = |message: String| problems.push((span.clone(), message));
        let service = self.service.get_ref();
        if !services.contains(&service.as_str()) {
            report(format!("{key}.service: no service {service:?}"));
        }
        let host = match self.host.as_deref().map(str::to_ascii_lowercase) {
            None => HostMatch::Any,
            Some(host) if host.starts_with("*.") && !host[2..].contains('*') => {
                HostMatch::Suffix(host[1..].to_string())
            }
            Some(host) if host.contains(':') && !host.starts_with('[') => {
                report(format!(
                    "{key}.host: {host:?}: a route matches the host without its port"
                ));
                HostMatch::Any
            }
            Some(host) if !host.contains('*') && !host.is_empty() => HostMatch::Exact(host),
            Some(host) => {
                report(format!(
                    "{key}.host: {host:?} is neither a name nor \"*.domain\""
                ));
                HostMatch::Any
            }
        };
        let path = match &self.path {
            None => PathMatch::Any,
            Some(PathSection {
                exact: Some(p),
                prefix: None,
                regex: None,
            }) => PathMatch::Exact(p.clone()),
            Some(PathSection {
                exact: None,
                prefix: Some(p),
                regex: None,
            }) => PathMatch::Prefix(p.clone()),
            Some(PathSection {
                exact: None,
                prefix: None,
                regex: Some(p),
            }) => match regex(p, &format!("{key}.path")) {
                Ok(regex) => PathMatch::Regex(regex),
                Err(problem) => {
                    report(problem);
                    PathMatch::Any
                }
            },
            Some(_) => {
                report(format!("{key}.path: give one of exact, prefix or regex"));
                PathMatch::Any
            }
        };
        let path_ok = |p: &str| p.starts_with('/') && !p.contains(['?', '#']);
        match &path {
            PathMatch::Exact(p) | PathMatch::Prefix(p) if !path_ok(p) => report(format!(
                "{key}.path: {p:?} must start with / and hold no query (use query = {{ ... }})"
            )),
            _ => {}
        }
        if self.methods.as_ref().is_some_and(Vec::is_empty) {
            report(format!(
                "{key}.methods is empty: leave it out to take any method"
            ));
        }
        let mut methods = Vec::new();
        for name in self.methods.iter().flatten() {
            match http::Method::from_bytes(name.to_ascii_uppercase().as_bytes()) {
                Ok(method) => methods.push(method),
                Err(_) => report(format!("{key}.methods: {name:?} is not an HTTP method")),
            }
        }
        let mut headers = Vec::new();
        for (name, test) in &self.headers {
            let key = format!("{key}.headers.{name}");
            match (
                http::HeaderName::from_bytes(name.as_bytes()),
                ValueMatch::parse(test, &key),
            ) {
                (Ok(name), Ok(test)) => headers.push((name, test)),
                (Err(_), _) => report(format!("{key}: {name:?} is not a header name")),
                (_, Err(problem)) => report(problem),
            }
        }
        let mut query = Vec::new();
        for (name, test) in &self.query {
            match ValueMatch::parse(test, &format!("{key}.query.{name}")) {
                Ok(test) => query.push((name.clone(), test)),
                Err(problem) => report(problem),
            }
        }
        (problems.len() == before).then(|| RouteRule {
            host,
            path,
            methods,
            headers,
            query,
            service: service.clone(),
            line,
        })
    }
}

impl RouteRule {
    /// Whether this route takes every request `later` would: then `later` can never match.
    /// Regexes are only known to cover what they are written the same as.
    pub fn covers(&self, later: &RouteRule) -> bool {
        let host = match (&self.host, &later.host) {
            (HostMatch::Any, _) => true,
            (HostMatch::Exact(a), HostMatch::Exact(b)) => a == b,
            (HostMatch::Suffix(a), HostMatch::Exact(b) | HostMatch::Suffix(b)) => {
                b.ends_with(a.as_str())
            }
            _ => false,
        };
        let path = match (&self.path, &later.path) {
            (PathMatch::Any, _) => true,
            (PathMatch::Exact(a), PathMatch::Exact(b)) => a == b,
            (PathMatch::Prefix(a), PathMatch::Exact(b) | PathMatch::Prefix(b)) => {
                b.starts_with(a.as_str())
            }
            (PathMatch::Regex(a), PathMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        };
        let methods = self.methods.is_empty()
            || (!later.methods.is_empty()
                && later.methods.iter().all(|m| self.methods.contains(m)));
        let same = |a: &ValueMatch, b: &ValueMatch| match (a, b) {
            (ValueMatch::Present, _) => true,
            (ValueMatch::Exact(a), ValueMatch::Exact(b)) => a == b,
            (ValueMatch::Regex(a), ValueMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        };
        let headers = self.headers.iter().all(|(name, test)| {
            later
                .headers
                .iter()
                .any(|(n, t)| n == name && same(test, t))
        });
        let query = self
            .query
            .iter()
            .all(|(name, test)| later.query.iter().any(|(n, t)| n == name && same(test, t)));
        host && path && methods && headers && query
    }
}
