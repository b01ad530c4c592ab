//! `switchyard demo` as a newcomer runs it: the real binary, bounded, with a report.

use std::process::Command;

/// The requests column of a version's row in the closing summary.
fn summary_requests(output: &str, version: &str) -> u64 {
    let summary = output
        .split("Summary:")
        .nth(1)
        .expect("the demo prints a summary");
    let row = summary
        .lines()
        .find(|line| line.split_whitespace().next() == Some(version))
        .unwrap_or_else(|| panic!("no summary row for {version} in:\n{summary}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    columns[2].parse().expect("requests is a number")
}

#[test]
fn demo_runs_by_itself_and_reports_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["demo", "--duration", "4", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Not a terminal here: plain lines, no cursor movement.
    assert!(!stdout.contains('\x1b'), "escape codes in plain output");
    assert!(summary_requests(&stdout, "blue") > 0, "{stdout}");
    assert!(summary_requests(&stdout, "canary") > 0, "{stdout}");
    assert!(stdout.contains("canary turns bad"), "{stdout}");
    assert!(
        stdout.contains("`switch shop green` refused by its checks, routing unchanged: switch refused: green fails its checks: \"home page\""),
        "{stdout}"
    );
    assert!(stdout.contains(&report.display().to_string()));

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let versions = json["versions"].as_array().unwrap();
    let blue = versions.iter().find(|v| v["name"] == "blue").unwrap();
    assert!(blue["client_requests"].as_u64().unwrap() > 0);
    assert!(json["events"].as_array().unwrap().len() >= 2);
}

#[test]
fn demo_rejects_a_bad_duration_with_one_clear_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["demo", "--duration", "soon"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("soon"), "{stderr}");
}
