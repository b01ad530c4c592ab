//! A comparison's rows: each proxy's median requests/s and latency over the rounds, its
//! ratios to switchyard's, and the rows as a text table.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;
use switchyard_testkit::load::LoadReport;

#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    pub proxy: String,
    /// Requests/s of each round, then the median of the rounds' figures.
    pub rounds_rps: Vec<f64>,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// Share answered by the canary (expect about the configured 10%).
    pub canary_share: f64,
    /// This proxy's figure over switchyard's.
    pub rps_ratio: f64,
    pub p50_ratio: f64,
    pub p99_ratio: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

pub fn table(
    rounds: &BTreeMap<String, Vec<LoadReport>>,
    order: &[String],
    canary: &str,
    duration: Duration,
) -> Vec<CompareRow> {
    let mut rows: Vec<CompareRow> = order
        .iter()
        .filter_map(|name| {
            let reports = rounds.get(name)?;
            let rps: Vec<f64> = reports
                .iter()
                .map(|r| r.requests as f64 / duration.as_secs_f64())
                .collect();
            let requests: u64 = reports.iter().map(|r| r.requests).sum();
            let canary_requests: u64 = reports
                .iter()
                .filter_map(|r| r.version(canary))
                .map(|v| v.requests)
                .sum();
            Some(CompareRow {
                proxy: name.clone(),
                rps: median(rps.clone()),
                rounds_rps: rps,
                p50_ms: median(reports.iter().map(|r| r.p50_ms).collect()),
                p99_ms: median(reports.iter().map(|r| r.p99_ms).collect()),
                errors: reports.iter().map(|r| r.errors).sum(),
                canary_share: canary_requests as f64 / requests.max(1) as f64,
                rps_ratio: 1.0,
                p50_ratio: 1.0,
                p99_ratio: 1.0,
            })
        })
        .collect();
    if let Some(base) = rows.iter().find(|r| r.proxy == "switchyard").cloned() {
        let over = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        for row in &mut rows {
            row.rps_ratio = over(row.rps, base.rps);
            row.p50_ratio = over(row.p50_ms, base.p50_ms);
            row.p99_ratio = over(row.p99_ms, base.p99_ms);
        }
    }
    rows
}

/// The comparison as a text table.
pub fn render_table(rows: &[CompareRow]) -> String {
    let mut out = format!(
        "{:<11}{:>10}{:>10}{:>10}{:>8}{:>8}{:>12}{:>10}{:>10}\n",
        "proxy",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "canary",
        "req/s ratio",
        "p50 ratio",
        "p99 ratio"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<11}{:>10.0}{:>10.2}{:>10.2}{:>8}{:>7.1}%{:>12.2}{:>10.2}{:>10.2}",
            row.proxy,
            row.rps,
            row.p50_ms,
            row.p99_ms,
            row.errors,
            row.canary_share * 100.0,
            row.rps_ratio,
            row.p50_ratio,
            row.p99_ratio
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn ratios_are_to_switchyard() {
        let report = |requests: u64, p99_ms: f64| LoadReport {
            requests,
            p50_ms: 1.0,
            p99_ms,
            ..LoadReport::default()
        };
        let rounds = BTreeMap::from([
            ("switchyard".to_string(), vec![report(1000, 2.0)]),
            ("haproxy".to_string(), vec![report(800, 4.0)]),
        ]);
        let order = ["switchyard".to_string(), "haproxy".to_string()];
        let rows = table(&rounds, &order, "canary", Duration::from_secs(1));
        assert_eq!(rows[0].rps_ratio, 1.0);
        assert!((rows[1].rps_ratio - 0.8).abs() < 1e-9);
        assert!((rows[1].p99_ratio - 2.0).abs() < 1e-9);
        assert!(render_table(&rows).contains("haproxy"));
    }
}
