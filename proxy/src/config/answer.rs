//! What a probe asks and expects, shared by health checks and smoke checks: the path of
//! its request and the statuses its answer may have.

use super::SpannedProblem;
use serde::Deserialize;
use toml::Spanned;

/// A status expectation as written: `"2xx"` or a code such as `200`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StatusValue {
    Code(i64),
    Text(String),
}

/// The statuses a check accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectStatus {
    /// Any status of a class: 2 for "2xx".
    Class(u16),
    Code(u16),
}

impl ExpectStatus {
    pub fn accepts(self, status: u16) -> bool {
        match self {
            ExpectStatus::Class(class) => status / 100 == class,
            ExpectStatus::Code(code) => status == code,
        }
    }

    /// The expectation from its written form, or why it is not one.
    pub fn parse(value: &StatusValue) -> Result<ExpectStatus, String> {
        match value {
            StatusValue::Code(code @ 100..=599) => Ok(ExpectStatus::Code(*code as u16)),
            StatusValue::Code(code) => Err(format!("{code} is not an HTTP status (100 to 599)")),
            StatusValue::Text(text) => match text.as_bytes() {
                [class @ b'1'..=b'5', b'x', b'x'] => {
                    Ok(ExpectStatus::Class(u16::from(class - b'0')))
                }
                _ => text
                    .parse::<i64>()
                    .map_err(|_| {
                        format!("{text:?} is not a status class (\"2xx\") or a code (200)")
                    })
                    .and_then(|code| ExpectStatus::parse(&StatusValue::Code(code))),
            },
        }
    }
}

impl std::fmt::Display for ExpectStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectStatus::Class(class) => write!(f, "{class}xx"),
            ExpectStatus::Code(code) => write!(f, "{code}"),
        }
    }
}

/// A request path: starts with `/` and is a valid path and query.
pub(super) fn check_path(path: &Spanned<String>, key: &str, problems: &mut Vec<SpannedProblem>) {
    let text = path.get_ref();
    if !text.starts_with('/') || text.parse::<http::uri::PathAndQuery>().is_err() {
        problems.push((
            path.span(),
            format!("{key} {text:?} is not a request path starting with \"/\""),
        ));
    }
}
