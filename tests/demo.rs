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

#[test]
fn demo_fleet_shows_three_instances_one_routing_a_cutback_on_all_and_a_restart_during_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["demo", "--fleet", "--duration", "30", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo --fleet failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    for said in [
        "fleet \"demo\" formed: edge-1, edge-2, edge-3",
        "`ctl weights shop blue=80 canary=20` on edge-1",
        "served by all three instances",
        "canary cut back to 0% on all three",
        "1 abort revision in the fleet log",
        "NATS stopped: every instance keeps serving",
        "edge-3 restarted while NATS is down: it serves revision",
        "canary at 0%",
        "NATS back: edge-3 rejoined the fleet",
    ] {
        assert!(stdout.contains(said), "{said:?} missing from:\n{stdout}");
    }
    assert!(summary_requests(&stdout, "blue") > 0, "{stdout}");
    assert!(report.exists());
}

#[test]
fn demo_fleet_without_nats_server_says_what_to_install_and_fails() {
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["demo", "--fleet", "--duration", "5"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("apt-get install nats-server"), "{stderr}");
}
