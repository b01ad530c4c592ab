//! `switchyard check` on `[[services.X.analysis]]` and gated rollout steps: every bad value
//! is reported with its line, no network is touched, nothing panics; a good file passes.

mod common;
use common::*;
use std::process::Command;

const SERVICE: &str = r#"[proxy]
listen = "127.0.0.1:8080"

[services.shop]
stable = "blue"
weights = { blue = 95, canary = 5 }

[services.shop.versions.blue]
endpoints = ["127.0.0.1:9001"]

[services.shop.versions.canary]
endpoints = ["127.0.0.1:9003"]
"#;

fn check(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!text.contains("panicked"), "{text}");
    (out.status.success(), text, path.display().to_string())
}

/// An analysis entry with `key = value` replacing the default of that key (or added).
fn analysis(replace: &[(&str, &str)]) -> String {
    let mut keys = vec![
        ("name", r#""checkout success""#),
        ("prometheus", r#""http://127.0.0.1:9090""#),
        (
            "query",
            r#"'sum(rate(checkout_ok_total{version="{version}"}[1m])) / sum(rate(checkout_total{version="{version}",service="{service}"}[1m]))'"#,
        ),
        ("every", r#""30s""#),
        ("pass", r#""canary >= stable - 0.01""#),
    ];
    for (key, value) in replace {
        match keys.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => keys.push((key, value)),
        }
    }
    let lines: Vec<String> = keys
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    format!("\n[[services.shop.analysis]]\n{}\n", lines.join("\n"))
}

#[test]
fn a_good_analysis_and_gated_steps_pass_check_without_the_network() {
    // Port 9 (discard) on a TEST-NET address: nothing is asked at parse time.
    let text = format!(
        "{SERVICE}{}{}\n[services.shop.rollout]\nsteps = [1, {{ percent = 10, approve = true }}, {{ percent = 50, gate = {{ url = \"http://192.0.2.1:9/gate\", timeout = \"5s\" }} }}, 100]\nbake = \"30s\"\n",
        analysis(&[("prometheus", r#""http://192.0.2.1:9/prom/""#)]),
        analysis(&[
            ("name", r#""errors""#),
            ("pass", ""),
            ("min", "0"),
            ("max", "0.05"),
            ("failures", "3"),
            ("no_data", r#""fail""#)
        ]),
    );
    let (ok, out, _) = check(&text);
    assert!(ok, "{out}");
}

#[test]
fn every_bad_analysis_value_is_reported_at_its_line() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("pass", r#""canary => stable""#)], "unknown comparison"),
        (&[("pass", r#""stable >= canary""#)], "is not a condition"),
        (
            &[("pass", r#""canary >= stable - lots""#)],
            "not a non-negative number",
        ),
        (&[("min", "0.9")], "either pass or min/max"),
        (
            &[("pass", ""), ("min", "0.9"), ("max", "0.5")],
            "is above max",
        ),
        (&[("pass", "")], "needs a condition"),
        (&[("prometheus", r#""https://prom:9090""#)], "https"),
        (&[("prometheus", r#""prom:9090""#)], "needs http://"),
        (
            &[("prometheus", r#""http://prom:9090/?x=1""#)],
            "must not carry a query",
        ),
        (&[("prometheus", r#""not a url at all""#)], "is not a URL"),
        (
            &[("prometheus", r#""http://user:pw@prom:9090""#)],
            "credentials",
        ),
        (
            &[("query", r#"'up{job="{job}"} and {version}'"#)],
            "unknown placeholder {job}",
        ),
        (
            &[("query", r#"'sum(rate(checkout_total[1m]))'"#)],
            "must use {version}",
        ),
        (&[("query", "''")], "query is empty"),
        (&[("every", r#""10ms""#)], "every must be from 1s to 1h"),
        (&[("every", r#""2h""#)], "every must be from 1s to 1h"),
        (&[("every", r#""often""#)], "often"),
        (&[("failures", "0")], "failures must be from 1"),
        (&[("failures", "1000")], "failures must be from 1"),
        (&[("no_data", r#""pass""#)], "never a pass"),
        (&[("name", r#""""#)], "needs a name"),
        (&[("treshold", "1")], "treshold"),
    ];
    for (replace, expected) in cases {
        let entry = analysis(replace);
        let text = format!("{SERVICE}{entry}");
        let (ok, out, file) = check(&text);
        assert!(!ok, "{replace:?} passed check");
        let line = out
            .lines()
            .find(|l| l.contains(expected))
            .unwrap_or_else(|| panic!("{replace:?}: no {expected:?} in:\n{out}"));
        assert!(line.starts_with(&format!("{file}:")), "{line}");
        let number: usize = line[file.len() + 1..]
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let first = SERVICE.lines().count() + 2;
        assert!(
            (first..first + 8).contains(&number),
            "{replace:?}: line {number} is not in the entry:\n{out}"
        );
    }
}

#[test]
fn two_analyses_of_one_name_are_refused() {
    let text = format!("{SERVICE}{}{}", analysis(&[]), analysis(&[]));
    let (ok, out, _) = check(&text);
    assert!(!ok);
    assert!(out.contains("defined twice"), "{out}");
}

#[test]
fn bad_gated_steps_are_reported() {
    for (steps, expected) in [
        (
            "[{ percent = 10, aprove = true }, 100]",
            "unknown key \"aprove\"",
        ),
        ("[{ approve = true }, 100]", "needs percent"),
        ("[10, { percent = 100, approve = true }]", "the last step"),
        (
            "[{ percent = 10, approve = \"yes\" }, 100]",
            "approve cannot be",
        ),
        (
            "[{ percent = 10, gate = { url = \"https://x:1/\" } }, 100]",
            "plain HTTP",
        ),
        (
            "[{ percent = 10, gate = { timeout = \"1s\" } }, 100]",
            "needs url",
        ),
        (
            "[{ percent = 10, gate = { url = \"http://x:1/\", timeout = \"5m\" } }, 100]",
            "at most 30s",
        ),
        (
            "[{ percent = 10, gate = { url = \"http://x:1/\", retries = 3 } }, 100]",
            "retries",
        ),
        ("[\"ten\", 100]", "neither a percent nor a table"),
        (
            "[{ percent = 50 }, { percent = 10 }, 100]",
            "strictly increasing",
        ),
    ] {
        let text = format!("{SERVICE}\n[services.shop.rollout]\nsteps = {steps}\nbake = \"30s\"\n");
        let (ok, out, file) = check(&text);
        assert!(!ok, "{steps} passed check");
        let line = format!("{file}:{}: ", SERVICE.lines().count() + 3);
        assert!(
            out.lines()
                .any(|l| l.starts_with(&line) && l.contains(expected)),
            "{steps}: no {expected:?} at {line}:\n{out}"
        );
    }
}
