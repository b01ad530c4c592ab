//! One instant query against Prometheus's HTTP API (`GET /api/v1/query`), bounded in time
//! and size. The answer is one number, or none: an empty vector, NaN or an infinity is no
//! data (never a pass).

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;
use std::time::Duration;

/// Why a query gave no answer to judge.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// Prometheus could not be reached or did not answer in time.
    #[error("Prometheus unreachable: {0}")]
    Unreachable(String),
    /// It answered, but not with one number (a PromQL error, several series...).
    #[error("Prometheus answered: {0}")]
    Refused(String),
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

/// A range query's matrix or a string does not read: no number to judge.
#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<Series>),
    Scalar((f64, String)),
}

#[derive(Deserialize)]
struct Series {
    value: (f64, String),
}

/// The value of `query` now at the Prometheus at `base` (`http://host:port[/prefix]`);
/// `Ok(None)` is no data.
pub async fn query(base: &str, query: &str, timeout: Duration) -> Result<Option<f64>, QueryError> {
    let encoded: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", query)
        .finish();
    let url: http::Uri = format!("{base}/api/v1/query?{encoded}")
        .parse()
        .map_err(|err| QueryError::Refused(format!("bad URL: {err}")))?;
    let body = tokio::time::timeout(timeout, get(&url))
        .await
        .map_err(|_| QueryError::Unreachable(format!("no answer within {timeout:?}")))??;
    read(&body)
}

async fn get(url: &http::Uri) -> Result<Bytes, QueryError> {
    let (status, body) = super::client::exchange(Method::GET, url, Bytes::new())
        .await
        .map_err(QueryError::Unreachable)?;
    // Prometheus answers a bad query with 400/422 and a JSON error: read it for the reason.
    match status {
        StatusCode::OK | StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Ok(body),
        StatusCode::SERVICE_UNAVAILABLE => Err(QueryError::Unreachable(format!("status {status}"))),
        other => Err(QueryError::Refused(format!("status {other}"))),
    }
}

/// The one number in an answer's body.
fn read(body: &[u8]) -> Result<Option<f64>, QueryError> {
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|err| QueryError::Refused(format!("not a query answer ({err})")))?;
    if answer.status != "success" {
        return Err(QueryError::Refused(
            answer.error.unwrap_or_else(|| answer.status.clone()),
        ));
    }
    let text = match answer.data {
        Some(Data::Scalar((_, value))) => value,
        Some(Data::Vector(series)) => match <[Series; 1]>::try_from(series) {
            Ok([one]) => one.value.1,
            Err(series) if series.is_empty() => return Ok(None),
            Err(series) => {
                return Err(QueryError::Refused(format!(
                    "{} series where one number was expected: aggregate the query (e.g. sum(...))",
                    series.len()
                )))
            }
        },
        None => return Err(QueryError::Refused("an answer without data".into())),
    };
    let value: f64 = text
        .parse()
        .map_err(|_| QueryError::Refused(format!("{text:?} is not a number")))?;
    Ok(value.is_finite().then_some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(values: &[&str]) -> String {
        let series: Vec<String> = values
            .iter()
            .map(|v| format!(r#"{{"metric":{{}},"value":[1700000000.1,"{v}"]}}"#))
            .collect();
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            series.join(",")
        )
    }

    #[test]
    fn one_number_or_no_data() {
        assert_eq!(read(vector(&["0.99"]).as_bytes()), Ok(Some(0.99)));
        assert_eq!(read(vector(&[]).as_bytes()), Ok(None));
        assert_eq!(read(vector(&["NaN"]).as_bytes()), Ok(None));
        assert_eq!(read(vector(&["+Inf"]).as_bytes()), Ok(None));
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"2"]}}"#;
        assert_eq!(read(scalar.as_bytes()), Ok(Some(2.0)));
    }

    #[test]
    fn anything_else_is_a_refusal_never_a_number() {
        let error = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        for bad in [
            vector(&["1", "2"]),
            vector(&["x"]),
            error.to_string(),
            "{}".into(),
            "not json".into(),
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.into(),
        ] {
            assert!(
                matches!(read(bad.as_bytes()), Err(QueryError::Refused(_))),
                "{bad}"
            );
        }
        assert_eq!(
            read(error.as_bytes()),
            Err(QueryError::Refused("parse error at char 4".into()))
        );
    }
}
