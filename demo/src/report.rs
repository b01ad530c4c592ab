//! The demo's ending: a summary on screen and the same facts as a JSON file.

use super::timeline::{percent, Event};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use switchyard::routing::RoutingTable;
use switchyard_testkit::load::LoadReport;

#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub duration_secs: f64,
    pub proxy: String,
    pub config: PathBuf,
    pub final_revision: u64,
    pub versions: Vec<VersionSummary>,
    pub events: Vec<Event>,
}

#[derive(Debug, Serialize)]
pub struct VersionSummary {
    pub name: String,
    /// Share of traffic in the routing table at the end.
    pub weight: f64,
    /// The proxy's count of requests it sent to this version, and how they ended.
    pub requests: u64,
    /// Failures at this version, as the proxy counted them (saved ones included).
    pub errors: u64,
    /// Failures that a retry on stable answered, so no user saw them.
    pub saved: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// What the client saw, by the version header of each answer.
    pub client_requests: u64,
    pub client_errors: u64,
    pub client_share: f64,
}

/// Per version: the proxy's totals since start next to the client's.
pub fn summarise(table: &RoutingTable, client: &LoadReport) -> Vec<VersionSummary> {
    let mut versions = Vec::new();
    for service in table.services() {
        for (index, version) in service.versions.iter().enumerate() {
            let totals = version.stats.totals();
            let seen = client.version(&version.name);
            versions.push(VersionSummary {
                name: version.name.to_string(),
                weight: service.share_of(index),
                requests: totals.requests(),
                errors: totals.errors(),
                saved: totals.tally.saved,
                p50_ms: totals.quantile_secs(0.5) * 1e3,
                p99_ms: totals.quantile_secs(0.99) * 1e3,
                client_requests: seen.map_or(0, |v| v.requests),
                client_errors: seen.map_or(0, |v| v.errors),
                client_share: seen.map_or(0.0, |v| v.share),
            });
        }
    }
    versions
}

/// The closing text: the table of versions and everything that happened.
pub fn render(report: &DemoReport) -> String {
    let requests: u64 = report.versions.iter().map(|v| v.requests).sum();
    let mut out = format!(
        "\nSummary: {requests} requests in {:.0} s through {}, revision {} at the end\n\n",
        report.duration_secs, report.proxy, report.final_revision
    );
    let _ = writeln!(
        out,
        "{:<10}{:>8}{:>10}{:>8}{:>7}{:>10}{:>10}{:>15}{:>14}",
        "version",
        "weight",
        "requests",
        "errors",
        "saved",
        "p50",
        "p99",
        "users' errors",
        "client share"
    );
    for v in &report.versions {
        let _ = writeln!(
            out,
            "{:<10}{:>8}{:>10}{:>8}{:>7}{:>7.1} ms{:>7.1} ms{:>15}{:>14}",
            v.name,
            percent(v.weight),
            v.requests,
            v.errors,
            v.saved,
            v.p50_ms,
            v.p99_ms,
            v.client_errors,
            percent(v.client_share),
        );
    }
    out.push_str("\nWhat happened\n");
    for event in &report.events {
        let _ = writeln!(out, "  {:5.1}s  {}", event.at_secs, event.text);
    }
    out
}

pub fn write(report: &DemoReport, path: &Path) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(path, json + "\n")
}
