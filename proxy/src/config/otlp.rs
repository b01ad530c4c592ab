//! `[telemetry.otlp]`: a span per request, exported over OTLP/HTTP (protobuf) to a
//! collector, sampled by ratio unless the caller's `traceparent` already decided.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    pub otlp: Option<Spanned<OtlpSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSection {
    /// The collector's OTLP/HTTP base URL; spans go to its `/v1/traces`.
    pub endpoint: String,
    /// The share of new traces recorded, 0 to 1 (a caller's sampled flag wins).
    #[serde(default = "default_sample")]
    pub sample: f64,
}

fn default_sample() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    /// Where batches are posted: the endpoint's path with `/v1/traces` added.
    pub traces_url: http::Uri,
    pub sample: f64,
}

impl OtlpSection {
    /// The settings, or what is wrong, in one line.
    pub fn settings(&self) -> Result<OtlpSettings, String> {
        let problem = |why: &str| format!("telemetry.otlp.endpoint: {:?} {why}", self.endpoint);
        let url: http::Uri = self.endpoint.parse().map_err(|_| problem("is not a URL"))?;
        match url.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(problem(
                    "is https: only plain http is supported (a collector beside the proxy)",
                ))
            }
            _ => return Err(problem("is not an http:// URL")),
        }
        if url.host().is_none_or(str::is_empty) {
            return Err(problem("has no host"));
        }
        if url.query().is_some() {
            return Err(problem("has a query; give the collector's base URL"));
        }
        let base = url.path().trim_end_matches('/');
        let traces_url = format!(
            "http://{}{base}/v1/traces",
            url.authority().map_or("", |a| a.as_str())
        )
        .parse()
        .map_err(|_| problem("is not a URL"))?;
        if !(0.0..=1.0).contains(&self.sample) {
            return Err(format!(
                "telemetry.otlp.sample: {} is not between 0 and 1",
                self.sample
            ));
        }
        Ok(OtlpSettings {
            traces_url,
            sample: self.sample,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(endpoint: &str, sample: f64) -> OtlpSection {
        OtlpSection {
            endpoint: endpoint.to_string(),
            sample,
        }
    }

    #[test]
    fn the_traces_path_goes_after_the_base() {
        for (endpoint, url) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://collector:4318/", "http://collector:4318/v1/traces"),
            ("http://c:80/otel/", "http://c:80/otel/v1/traces"),
        ] {
            let settings = section(endpoint, 0.5).settings().expect(endpoint);
            assert_eq!(settings.traces_url, url);
        }
    }

    #[test]
    fn bad_endpoints_and_samples_are_named() {
        for (endpoint, sample, said) in [
            ("not a url", 0.1, "is not a URL"),
            ("https://c:4318", 0.1, "only plain http"),
            ("ftp://c:4318", 0.1, "not an http:// URL"),
            ("/v1/traces", 0.1, "not an http:// URL"),
            ("http://c:4318/?a=b", 0.1, "has a query"),
            ("http://c:4318", 1.5, "1.5 is not between 0 and 1"),
            ("http://c:4318", -0.1, "not between 0 and 1"),
            ("http://c:4318", f64::NAN, "not between 0 and 1"),
        ] {
            let err = section(endpoint, sample).settings().unwrap_err();
            assert!(err.contains(said), "{endpoint} {sample}: {err}");
        }
    }
}
