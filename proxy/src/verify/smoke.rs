//! Smoke checks of a version as a whole: every check against every endpoint in the
//! rotation, all at once, each under its own deadline. The report is what revisions,
//! incidents, the gate and `ctl checks` show.

use super::request::{self, Probe, ProbeError};
use crate::config::{ExpectStatus, SmokeCheck};
use crate::control::record::{CheckFailure, CheckReport};
use crate::upstream::connect::Dial;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The check run when a service defines none: every endpoint must accept a connection.
pub const CONNECT_CHECK: &str = "connect";
const CONNECT_DEADLINE: Duration = Duration::from_secs(2);
/// Body bytes read to look for `expect_body`.
const BODY_LIMIT: usize = 256 * 1024;

/// One check against one endpoint, passed or not (what `ctl checks` prints line by line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub check: String,
    pub endpoint: String,
    pub passed: bool,
    pub got: String,
    pub ms: u64,
}

/// A version's checks, with every single result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRun {
    pub report: CheckReport,
    pub results: Vec<CheckResult>,
}

/// The version to check and where it runs.
#[derive(Debug, Clone)]
pub struct Target {
    pub version: String,
    /// The Host the checks send (the service's first host, else the endpoint address).
    pub host: Option<String>,
    /// Each endpoint, and whether it is in the rotation (active health checks may hold
    /// it out; such an endpoint takes no traffic, so it is not checked).
    pub endpoints: Vec<(Dial, bool)>,
    /// The checks speak HTTP/2, as the version does (`h2c`, or `h2` over TLS).
    pub http2: bool,
}

impl CheckReport {
    /// One line: the first failure in full and how many more there were.
    pub fn summary(&self) -> String {
        match self.failed.as_slice() {
            [] => format!("{} passed its checks ({} ms)", self.version, self.ms),
            [first, rest @ ..] => {
                let more = match rest.len() {
                    0 => String::new(),
                    n => format!(" (and {n} more failed)"),
                };
                format!(
                    "{} fails its checks: {:?} on {} got {}{more}",
                    self.version, first.check, first.endpoint, first.got
                )
            }
        }
    }
}

/// Runs `checks` (none: the connect check) against every endpoint of `target` in the
/// rotation. No endpoint in the rotation is itself a failure. Dropping the future stops
/// every check at once.
pub async fn run(checks: &[SmokeCheck], target: &Target) -> CheckRun {
    let started = Instant::now();
    let up: Vec<&Dial> = target
        .endpoints
        .iter()
        .filter(|(_, up)| *up)
        .map(|(dial, _)| dial)
        .collect();
    let mut results = Vec::new();
    if up.is_empty() {
        results.extend(target.endpoints.iter().map(|(dial, _)| CheckResult {
            check: "health".to_string(),
            endpoint: dial.addr.to_string(),
            passed: false,
            got: "no endpoint up: active health checks hold every endpoint out".to_string(),
            ms: 0,
        }));
        if target.endpoints.is_empty() {
            results.push(CheckResult {
                check: "health".to_string(),
                endpoint: "-".to_string(),
                passed: false,
                got: "the version has no endpoints".to_string(),
                ms: 0,
            });
        }
    }
    // Keyed by (check, endpoint) so results come out in the config's order.
    let mut running = JoinSet::new();
    for (e, &dial) in up.iter().enumerate() {
        let host = target.host.clone().unwrap_or_else(|| dial.addr.to_string());
        if checks.is_empty() {
            let dial = dial.clone();
            running.spawn(async move { ((0, e), connect(&dial).await) });
        }
        for (c, check) in checks.iter().enumerate() {
            let (check, host, dial) = (check.clone(), host.clone(), dial.clone());
            let http2 = target.http2;
            running.spawn(async move { ((c, e), run_one(&check, &dial, http2, &host).await) });
        }
    }
    let mut ordered: Vec<((usize, usize), CheckResult)> = Vec::new();
    while let Some(joined) = running.join_next().await {
        if let Ok(result) = joined {
            ordered.push(result);
        }
    }
    ordered.sort_by_key(|(key, _)| *key);
    results.extend(ordered.into_iter().map(|(_, result)| result));
    let failed: Vec<CheckFailure> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| CheckFailure {
            check: r.check.clone(),
            endpoint: r.endpoint.clone(),
            got: r.got.clone(),
        })
        .collect();
    CheckRun {
        report: CheckReport {
            version: target.version.clone(),
            passed: failed.is_empty(),
            failed,
            ms: started.elapsed().as_millis() as u64,
        },
        results,
    }
}

impl CheckRun {
    /// Adds a result judged elsewhere (the shadow check).
    pub fn add(&mut self, result: CheckResult) {
        if !result.passed {
            self.report.passed = false;
            self.report.failed.push(CheckFailure {
                check: result.check.clone(),
                endpoint: result.endpoint.clone(),
                got: result.got.clone(),
            });
        }
        self.results.push(result);
    }
}

/// The connect check: the endpoint takes a connection (and completes the TLS handshake
/// when its version has `tls`).
async fn connect(dial: &Dial) -> CheckResult {
    let started = Instant::now();
    let outcome = request::connect(dial, CONNECT_DEADLINE).await;
    let ms = started.elapsed().as_millis() as u64;
    let (passed, got) = match outcome {
        Ok(()) => (true, format!("accepted in {ms} ms")),
        Err(err) => (false, err.to_string()),
    };
    CheckResult {
        check: CONNECT_CHECK.to_string(),
        endpoint: dial.addr.to_string(),
        passed,
        got,
        ms,
    }
}

async fn run_one(check: &SmokeCheck, dial: &Dial, http2: bool, host: &str) -> CheckResult {
    let probe = Probe {
        method: &check.method,
        path: &check.path,
        host,
        headers: &check.headers,
        body: &check.body,
        body_limit: if check.expect_body.is_some() {
            BODY_LIMIT
        } else {
            0
        },
    };
    let outcome = request::send(dial, http2, &probe, check.deadline()).await;
    let (passed, got, ms) = match outcome {
        Err(ProbeError::Timeout(deadline)) if check.max_latency.is_some() => (
            false,
            format!("no answer within {deadline:?} (max_latency)"),
            deadline.as_millis() as u64,
        ),
        Err(err) => (false, err.to_string(), 0),
        Ok(reply) => {
            let ms = reply.elapsed.as_millis() as u64;
            match judge(check.expect_status, check.expect_body.as_deref(), &reply) {
                Some(problem) => (false, problem, ms),
                None => (true, format!("status {} in {ms} ms", reply.status), ms),
            }
        }
    };
    CheckResult {
        check: check.name.clone(),
        endpoint: dial.addr.to_string(),
        passed,
        got,
        ms,
    }
}

/// What is wrong with an answer, if anything.
fn judge(expect: ExpectStatus, body: Option<&str>, reply: &request::Reply) -> Option<String> {
    if !expect.accepts(reply.status) {
        return Some(format!("status {} (expected {expect})", reply.status));
    }
    let wanted = body?;
    let text = String::from_utf8_lossy(&reply.body);
    if text.contains(wanted) {
        return None;
    }
    let start: String = text.chars().take(60).collect();
    Some(format!("a body without {wanted:?} (it began {start:?})"))
}
