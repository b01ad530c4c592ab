//! Compares two answers to the same request, field by field: the status, the configured
//! headers, and the body (as bytes, or as JSON documents leaf by leaf, with ignored paths
//! left out). Field names fold array indexes into `[*]`, so one field of every item of a
//! list counts as one field. Values are shortened, and secrets never shown.

use crate::config::shadow::{BodyCompare, JsonPath, PathStep, ShadowSettings};
use crate::telemetry::shadow::{FieldDiff, Skip};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::Value;

/// Differences reported per comparison; a document that differs everywhere is one bad
/// version, not a reason to track thousands of fields.
const MAX_DIFFS: usize = 64;
const SHOWN_CHARS: usize = 60;

/// An answer, whole: head and (bounded) body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Whether the body is compressed (or otherwise encoded): such bodies are not compared,
/// since two encoders may differ where the documents do not.
pub fn encoded(answer: &Answer) -> bool {
    answer
        .headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|coding| !coding.as_bytes().eq_ignore_ascii_case(b"identity"))
}

/// What differs when stable answered and the other did not, or answered more than
/// `max_body`.
pub fn unanswered(stable: &Answer, why: Skip) -> Vec<FieldDiff> {
    let (field, stable, other) = match why {
        Skip::TooLarge => (
            "body",
            "(within max_body)".to_string(),
            "(larger than max_body)",
        ),
        _ => ("status", stable.status.as_u16().to_string(), "(no answer)"),
    };
    vec![FieldDiff {
        field: field.to_string(),
        stable,
        other: other.to_string(),
    }]
}

pub fn compare(settings: &ShadowSettings, stable: &Answer, other: &Answer) -> Vec<FieldDiff> {
    let mut diffs = Vec::new();
    if settings.status && stable.status != other.status {
        diffs.push(FieldDiff {
            field: "status".to_string(),
            stable: stable.status.as_u16().to_string(),
            other: other.status.as_u16().to_string(),
        });
    }
    for name in &settings.headers {
        let (a, b) = (stable.headers.get(name), other.headers.get(name));
        if a != b {
            diffs.push(FieldDiff {
                field: format!("header {name}"),
                stable: shown_header(name, a),
                other: shown_header(name, b),
            });
        }
    }
    match &settings.body {
        BodyCompare::Off => {}
        BodyCompare::Bytes => compare_bytes(&stable.body, &other.body, &mut diffs),
        BodyCompare::Json { ignore } => {
            match (
                serde_json::from_slice::<Value>(&stable.body),
                serde_json::from_slice::<Value>(&other.body),
            ) {
                (Ok(a), Ok(b)) => compare_json(&a, &b, &mut Vec::new(), ignore, &mut diffs),
                _ => compare_bytes(&stable.body, &other.body, &mut diffs),
            }
        }
    }
    diffs
}

fn compare_bytes(a: &Bytes, b: &Bytes, diffs: &mut Vec<FieldDiff>) {
    if a != b {
        diffs.push(FieldDiff {
            field: "body".to_string(),
            stable: shown(&String::from_utf8_lossy(a)),
            other: shown(&String::from_utf8_lossy(b)),
        });
    }
}

fn compare_json(
    a: &Value,
    b: &Value,
    at: &mut Vec<PathStep>,
    ignore: &[JsonPath],
    diffs: &mut Vec<FieldDiff>,
) {
    if diffs.len() >= MAX_DIFFS || ignore.iter().any(|path| path.covers(at)) {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys = x.keys().chain(y.keys().filter(|k| !x.contains_key(*k)));
            for key in keys {
                at.push(PathStep::Key(key.clone()));
                compare_json(
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                    at,
                    ignore,
                    diffs,
                );
                at.pop();
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for index in 0..x.len().max(y.len()) {
                at.push(PathStep::Index(index));
                compare_json(
                    x.get(index).unwrap_or(&Value::Null),
                    y.get(index).unwrap_or(&Value::Null),
                    at,
                    ignore,
                    diffs,
                );
                at.pop();
            }
        }
        (a, b) if a != b => {
            let field = field_name(at);
            if !diffs.iter().any(|d| d.field == field) {
                let secret = at
                    .last()
                    .is_some_and(|step| matches!(step, PathStep::Key(key) if looks_secret(key)));
                let show = |value: &Value| match secret {
                    true => "(redacted)".to_string(),
                    false => shown(&value.to_string()),
                };
                diffs.push(FieldDiff {
                    field,
                    stable: show(a),
                    other: show(b),
                });
            }
        }
        _ => {}
    }
}

/// A field whose values are never shown in samples: they are real users' answers, and
/// the report is readable without a token on the admin TCP port.
fn looks_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "token", "secret", "password", "passwd", "auth", "session", "cookie", "key", "email",
        "ssn", "card",
    ]
    .iter()
    .any(|word| key.contains(word))
}

fn field_name(at: &[PathStep]) -> String {
    let mut name = String::from("$");
    for step in at {
        match step {
            PathStep::Key(key) => {
                name.push('.');
                name.push_str(key);
            }
            PathStep::Index(_) | PathStep::AnyIndex => name.push_str("[*]"),
        }
    }
    name
}

fn shown_header(name: &http::HeaderName, value: Option<&http::HeaderValue>) -> String {
    use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE};
    match value {
        None => "(absent)".to_string(),
        Some(_) if [AUTHORIZATION, COOKIE, SET_COOKIE, PROXY_AUTHORIZATION].contains(name) => {
            "(redacted)".to_string()
        }
        Some(value) => shown(&String::from_utf8_lossy(value.as_bytes())),
    }
}

fn shown(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &str) -> Answer {
        Answer {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    fn json_settings(ignore: &[&str]) -> ShadowSettings {
        ShadowSettings {
            version: "green".into(),
            percent: 100.0,
            methods: vec![http::Method::GET],
            forward_credentials: false,
            max_body: 1024,
            max_in_flight: 8,
            status: true,
            headers: vec![http::header::CONTENT_TYPE],
            body: BodyCompare::Json {
                ignore: ignore.iter().filter_map(|p| JsonPath::parse(p)).collect(),
            },
            noise_percent: 5.0,
            max_extra_diff: 1.0,
            min_samples: 10,
        }
    }

    #[test]
    fn json_fields_differ_by_path_and_ignored_ones_do_not() {
        let settings = json_settings(&["$.now"]);
        let a = answer(r#"{"now": 1, "items": [{"price": 5}, {"price": 6}], "ok": true}"#);
        let b =
            answer(r#"{"now": 2, "items": [{"price": 5}, {"price": 7}], "extra": 1, "ok": true}"#);
        let fields: Vec<String> = compare(&settings, &a, &b)
            .into_iter()
            .map(|d| d.field)
            .collect();
        assert_eq!(fields, ["$.items[*].price", "$.extra"]);
    }

    #[test]
    fn status_headers_and_bodies_that_are_not_json() {
        let settings = json_settings(&[]);
        let mut a = answer("plain");
        let mut b = answer("plain!");
        b.status = StatusCode::INTERNAL_SERVER_ERROR;
        a.headers.insert(
            http::header::CONTENT_TYPE,
            "text/plain".parse().expect("value"),
        );
        let diffs = compare(&settings, &a, &b);
        let fields: Vec<&str> = diffs.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["status", "header content-type", "body"]);
        assert_eq!(diffs[1].other, "(absent)");
    }
}
