//! The harness end to end on a small in-process scenario: load, a fault, a reload,
//! expectations, and the JSON and SVG it writes.

use std::process::Command;

const SCENARIO: &str = r#"
about = "in-process smoke: canary fails, a reload takes it out"
duration = "4s"

[proxy]
mode = "in-process"
stable = "blue"
weights = { blue = 50, canary = 50 }
# The harness is under test here, not the guard: without it the canary's errors reach
# the client until the reload takes it out.
extra = """
[services.shop.guard]
enabled = false
"""

[upstreams.blue]
[upstreams.canary]

[[load]]
connections = 4
rate = 200

[[step]]
at = "1s"
upstream = "canary"
faults = { error_rate = 1.0 }

[[step]]
at = "2s"
reload = { weights = { blue = 100 } }

[[expect]]
kind = "share_zero"
version = "canary"
after = "2s"
within = "500ms"

[[expect]]
kind = "errors"
max_rate = 0.0
until = "1s"
"#;

fn run(scenario: &str, out: &std::path::Path) -> std::process::Output {
    let file = out.join("smoke.toml");
    std::fs::write(&file, scenario).unwrap();
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(out)
        // In-process: no binary is started, so none needs building.
        .args(["--proxy-bin", "/nonexistent/switchyard"])
        .output()
        .unwrap()
}

#[test]
fn a_scenario_runs_checks_and_writes_its_result_and_chart() {
    let out = tempfile::tempdir().unwrap();
    let output = run(SCENARIO, out.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("PASS smoke"), "{stdout}");

    let run_dir = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("result.json")).unwrap())
            .unwrap();
    let main = &result["loads"]["main"];
    assert_eq!(main["requests"], 800);
    // The canary failed from 1 s until the reload at 2 s: those errors are counted.
    assert!(main["errors"].as_u64().unwrap() > 0);
    assert_eq!(result["revisions"].as_array().unwrap().len(), 2);
    assert_eq!(result["cutbacks"][0]["version"], "canary");
    let svg = std::fs::read_to_string(run_dir.join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("canary to 0%"));
}

#[test]
fn a_failed_expectation_fails_the_run() {
    let out = tempfile::tempdir().unwrap();
    let strict = SCENARIO.replace("until = \"1s\"\n", "");
    let output = run(&strict, out.path());
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("FAIL smoke"));
}

#[test]
fn a_bad_scenario_is_refused_with_its_reason_before_anything_runs() {
    let out = tempfile::tempdir().unwrap();
    let output = run(
        &SCENARIO.replace("rate = 200", "rate = 200\nbogus = 1"),
        out.path(),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("smoke.toml") && stderr.contains("bogus"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);
}
