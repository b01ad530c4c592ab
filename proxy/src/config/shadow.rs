//! `[services.NAME.shadow]`: copies of live requests to stable go to another version too;
//! its answers are compared with stable's and dropped. The user never waits for a copy.

use super::SpannedProblem;
use serde::Deserialize;
use std::ops::Range;
use toml::Spanned;

/// The largest `max_body`: answers are held in memory and compared whole.
const MAX_BODY: usize = 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowSection {
    pub version: Spanned<String>,
    pub percent: Option<Spanned<f64>>,
    pub methods: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub allow_side_effects: bool,
    /// Copies carry `Authorization` and `Cookie` only when this is set.
    #[serde(default)]
    pub forward_credentials: bool,
    pub max_body: Option<Spanned<ByteSize>>,
    pub max_in_flight: Option<Spanned<i64>>,
    pub compare: Option<Spanned<CompareSection>>,
    pub noise_percent: Option<Spanned<f64>>,
    pub max_extra_diff: Option<Spanned<f64>>,
    pub min_samples: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareSection {
    pub status: Option<bool>,
    #[serde(default)]
    pub headers: Vec<String>,
    /// "json", "bytes" or "off".
    pub body: Option<String>,
    #[serde(default)]
    pub ignore: Vec<String>,
}

/// A size as written: a number of bytes, or a string such as "64KiB" or "1MiB".
#[derive(Debug, Clone, Copy)]
pub struct ByteSize(pub usize);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Bytes(u64),
            Text(String),
        }
        match Written::deserialize(d)? {
            Written::Bytes(n) => Ok(ByteSize(n as usize)),
            Written::Text(text) => parse_size(&text).map(ByteSize).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a size (e.g. 65536, \"64KiB\", \"1MiB\")"
                ))
            }),
        }
    }
}

fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "KB" | "K" => 1024,
        "MiB" | "MB" | "M" => 1024 * 1024,
        _ => return None,
    };
    number.parse::<usize>().ok()?.checked_mul(unit)
}

/// How a body is compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyCompare {
    Off,
    Bytes,
    /// As JSON documents, field by field, leaving out the ignored paths.
    Json {
        ignore: Vec<JsonPath>,
    },
}

/// A JSON path as written in `ignore`: `$.now`, `$.items[*].id`, `$.list[0]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath(pub Vec<PathStep>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    Key(String),
    Index(usize),
    AnyIndex,
}

impl JsonPath {
    pub fn parse(text: &str) -> Option<JsonPath> {
        let mut rest = text.strip_prefix('$')?;
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                if end == 0 {
                    return None;
                }
                steps.push(PathStep::Key(after[..end].to_string()));
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let end = after.find(']')?;
                steps.push(match &after[..end] {
                    "*" => PathStep::AnyIndex,
                    n => PathStep::Index(n.parse().ok()?),
                });
                rest = &after[end + 1..];
            } else {
                return None;
            }
        }
        Some(JsonPath(steps))
    }

    /// Whether this path covers `at` (the path itself or anything below it).
    pub fn covers(&self, at: &[PathStep]) -> bool {
        self.0.len() <= at.len()
            && self.0.iter().zip(at).all(|(want, got)| match (want, got) {
                (PathStep::AnyIndex, PathStep::Index(_)) => true,
                (want, got) => want == got,
            })
    }
}

/// Validated shadow settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowSettings {
    pub version: String,
    /// Share of stable's eligible requests copied, 0 to 100.
    pub percent: f64,
    pub methods: Vec<http::Method>,
    pub forward_credentials: bool,
    /// Largest response body compared (a larger one is skipped, counted).
    pub max_body: usize,
    pub max_in_flight: usize,
    pub status: bool,
    pub headers: Vec<http::HeaderName>,
    pub body: BodyCompare,
    /// Share of copies also sent to stable again, to learn what differs between two
    /// answers of the same version.
    pub noise_percent: f64,
    /// Percentage points a field may differ above its noise before the check fails.
    pub max_extra_diff: f64,
    pub min_samples: u64,
}

impl ShadowSection {
    /// The settings, or `None` after pushing every problem (`span`: the section's).
    pub fn settings(
        &self,
        service: &str,
        stable: &str,
        versions: &[&str],
        span: Range<usize>,
        problems: &mut Vec<SpannedProblem>,
    ) -> Option<ShadowSettings> {
        let before = problems.len();
        let key = |k: &str| format!("services.{service}.shadow.{k}");
        let version = self.version.get_ref();
        if !versions.contains(&version.as_str()) {
            problems.push((
                self.version.span(),
                format!(
                    "{}: no version {version:?} in services.{service}.versions",
                    key("version")
                ),
            ));
        } else if version == stable {
            problems.push((
                self.version.span(),
                format!(
                    "{}: {version:?} is the stable version: it cannot shadow itself",
                    key("version")
                ),
            ));
        }
        let percent = share(&self.percent, 10.0, &key("percent"), problems);
        let noise_percent = share(&self.noise_percent, 5.0, &key("noise_percent"), problems);
        let methods = self.methods(&key("methods"), span.clone(), problems);
        let max_body = self.max_body.as_ref().map_or(64 * 1024, |s| s.get_ref().0);
        if let Some(written) = self
            .max_body
            .as_ref()
            .filter(|_| !(1..=MAX_BODY).contains(&max_body))
        {
            problems.push((
                written.span(),
                format!(
                    "{} must be 1 byte to 1MiB (bodies are held and compared whole)",
                    key("max_body")
                ),
            ));
        }
        let max_in_flight = positive(&self.max_in_flight, 64, &key("max_in_flight"), problems);
        let min_samples = positive(&self.min_samples, 200, &key("min_samples"), problems);
        let max_extra_diff = self.max_extra_diff.as_ref().map_or(1.0, |d| *d.get_ref());
        if !(0.0..=100.0).contains(&max_extra_diff) {
            let span = self
                .max_extra_diff
                .as_ref()
                .map_or(span.clone(), Spanned::span);
            problems.push((
                span,
                format!("{} must be 0 to 100 (points)", key("max_extra_diff")),
            ));
        }
        let (status, headers, body) = self.compare(&key("compare"), problems);
        (problems.len() == before).then(|| ShadowSettings {
            version: version.clone(),
            percent,
            methods,
            forward_credentials: self.forward_credentials,
            max_body,
            max_in_flight: max_in_flight as usize,
            status,
            headers,
            body,
            noise_percent,
            max_extra_diff,
            min_samples,
        })
    }

    fn methods(
        &self,
        key: &str,
        span: Range<usize>,
        problems: &mut Vec<SpannedProblem>,
    ) -> Vec<http::Method> {
        let Some(written) = &self.methods else {
            return vec![http::Method::GET, http::Method::HEAD];
        };
        let mut methods = Vec::new();
        for name in written.get_ref() {
            match http::Method::from_bytes(name.as_bytes()) {
                Ok(method) if method.is_safe() || self.allow_side_effects => methods.push(method),
                Ok(_) => problems.push((
                    written.span(),
                    format!("{key}: {name} may change data on the shadow version; set allow_side_effects = true to copy it"),
                )),
                Err(_) => problems.push((written.span(), format!("{key}: {name:?} is not an HTTP method"))),
            }
        }
        if methods.is_empty() && problems.is_empty() {
            problems.push((span, format!("{key} is empty: nothing would be copied")));
        }
        methods
    }

    fn compare(
        &self,
        key: &str,
        problems: &mut Vec<SpannedProblem>,
    ) -> (bool, Vec<http::HeaderName>, BodyCompare) {
        let Some(compare) = &self.compare else {
            return (true, Vec::new(), BodyCompare::Bytes);
        };
        let (span, compare) = (compare.span(), compare.get_ref());
        let mut headers = Vec::new();
        for name in &compare.headers {
            match http::HeaderName::from_bytes(name.as_bytes()) {
                Ok(header) => headers.push(header),
                Err(_) => problems.push((
                    span.clone(),
                    format!("{key}.headers: {name:?} is not a header name"),
                )),
            }
        }
        let mut ignore = Vec::new();
        for path in &compare.ignore {
            match JsonPath::parse(path) {
                Some(path) => ignore.push(path),
                None => problems.push((span.clone(), format!("{key}.ignore: {path:?} is not a JSON path (e.g. \"$.now\", \"$.items[*].id\")"))),
            }
        }
        let body = match compare.body.as_deref() {
            None | Some("bytes") if ignore.is_empty() => BodyCompare::Bytes,
            None | Some("json") => BodyCompare::Json { ignore },
            Some("off") => BodyCompare::Off,
            Some("bytes") => {
                problems.push((span, format!("{key}.ignore needs body = \"json\"")));
                BodyCompare::Bytes
            }
            Some(other) => {
                problems.push((
                    span,
                    format!("{key}.body: {other:?} is not one of \"json\", \"bytes\", \"off\""),
                ));
                BodyCompare::Off
            }
        };
        (compare.status.unwrap_or(true), headers, body)
    }
}

fn share(
    value: &Option<Spanned<f64>>,
    default: f64,
    key: &str,
    problems: &mut Vec<SpannedProblem>,
) -> f64 {
    let Some(value) = value else { return default };
    let share = *value.get_ref();
    if !(0.0..=100.0).contains(&share) {
        problems.push((value.span(), format!("{key} must be 0 to 100")));
    }
    share
}

fn positive(
    value: &Option<Spanned<i64>>,
    default: u64,
    key: &str,
    problems: &mut Vec<SpannedProblem>,
) -> u64 {
    let Some(value) = value else { return default };
    match u64::try_from(*value.get_ref()) {
        Ok(n) if n > 0 => n,
        _ => {
            problems.push((value.span(), format!("{key} must be at least 1")));
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_cover() {
        let path = JsonPath::parse("$.items[*].id").expect("valid path");
        let at = [
            PathStep::Key("items".into()),
            PathStep::Index(3),
            PathStep::Key("id".into()),
        ];
        assert!(path.covers(&at));
        assert!(!path.covers(&at[..2]));
        assert!(JsonPath::parse("$.now")
            .expect("valid")
            .covers(&[PathStep::Key("now".into())]));
        for bad in ["now", "$..a", "$.a[", "$.a[x]", "$a"] {
            assert_eq!(JsonPath::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("99999999999999999999MiB"), None);
    }
}
