//! `switchyard check` on `[health]`, `[[checks]]` and `checks_every`: good files pass,
//! every bad value is listed as FILE:LINE with the key it is about.

use std::process::Command;

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    for line in stderr.lines() {
        assert!(
            line.starts_with(path.to_str().unwrap()),
            "not FILE:LINE: {line}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.success(), stderr)
}

const SERVICE: &str = "[proxy]\nlisten = \"127.0.0.1:1\"\n[services.shop]\nstable = \"blue\"\nweights = { blue = 1 }\n[services.shop.versions.blue]\nendpoints = [\"127.0.0.1:1\"]\n";

#[test]
fn accepts_the_design_example() {
    let text = format!(
        "{SERVICE}[services.shop.health]\npath = \"/healthz\"\ninterval = \"2s\"\ntimeout = \"1s\"\nfall = 3\nrise = 2\nexpect = \"2xx\"\n\n[[services.shop.checks]]\nname = \"home page\"\npath = \"/\"\nexpect_status = \"2xx\"\nexpect_body = \"Welcome\"\nmax_latency = \"500ms\"\n\n[[services.shop.checks]]\nname = \"login\"\nmethod = \"POST\"\npath = \"/login?next=/\"\nheaders = {{ content-type = \"application/json\" }}\nbody = \"{{}}\"\nexpect_status = 200\n"
    );
    let (ok, stderr) = check(&text);
    assert!(ok, "{stderr}");
    let (ok, stderr) = check(&format!("{SERVICE}[services.shop.health]\nexpect = 204\n"));
    assert!(ok, "defaults for the rest: {stderr}");
}

#[test]
fn lists_every_bad_value_with_its_line() {
    let service = SERVICE.replace(
        "[services.shop.versions",
        "checks_every = \"100ms\"\n[services.shop.versions",
    );
    let text = format!(
        "{service}[services.shop.health]\npath = \"healthz\"\ninterval = \"50ms\"\ntimeout = \"0s\"\nfall = 0\nrise = 101\nexpect = \"2xy\"\n[[services.shop.checks]]\nname = \"home\"\npath = \"/\"\nexpect_status = 700\n[[services.shop.checks]]\nname = \"home\"\nmethod = \"get me\"\npath = \"/ x\"\nheaders = {{ \"bad header\" = \"v\" }}\nexpect_body = \"\"\nmax_latency = \"0ms\"\n"
    );
    let (ok, stderr) = check(&text);
    assert!(!ok);
    for needle in [
        ":6: services.shop.checks_every must be at least 1s",
        ":10: services.shop.health.path \"healthz\" is not a request path",
        ":11: services.shop.health.interval must be between 100ms and 1h",
        ":12: services.shop.health.timeout must be more than 0",
        ":13: services.shop.health.fall must be between 1 and 100, not 0",
        ":14: services.shop.health.rise must be between 1 and 100, not 101",
        ":15: services.shop.health.expect: \"2xy\" is not a status class",
        ":19: services.shop.checks[0].expect_status: 700 is not an HTTP status",
        ":21: services.shop.checks[1]: a check named \"home\" is already defined",
        ":22: services.shop.checks[1].method \"get me\" is not an HTTP method",
        ":23: services.shop.checks[1].path \"/ x\" is not a request path",
        ":24: services.shop.checks[1].headers: \"bad header\" = \"v\" is not a valid HTTP header",
        ":25: services.shop.checks[1].expect_body must not be empty",
        ":26: services.shop.checks[1].max_latency must be more than 0 and at most 60s",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
}

#[test]
fn timeout_longer_than_interval_and_unknown_keys_are_errors() {
    let (ok, stderr) = check(&format!(
        "{SERVICE}[services.shop.health]\ninterval = \"500ms\"\n"
    ));
    assert!(!ok);
    assert!(
        stderr.contains(
            ":8: services.shop.health.timeout (1s) must not be longer than the interval (500ms)"
        ),
        "{stderr}"
    );
    let (ok, stderr) = check(&format!("{SERVICE}[services.shop.health]\nretries = 3\n"));
    assert!(!ok);
    assert!(stderr.contains(":9: unknown field `retries`"), "{stderr}");
    let (ok, stderr) = check(&format!(
        "{SERVICE}[[services.shop.checks]]\nname = \"x\"\npath = \"/\"\nexpect = 200\n"
    ));
    assert!(!ok);
    assert!(stderr.contains(":11: unknown field `expect`"), "{stderr}");
    let (ok, stderr) = check(&format!(
        "{SERVICE}[[services.shop.checks]]\nname = \"x\"\n"
    ));
    assert!(!ok);
    assert!(stderr.contains("missing field `path`"), "{stderr}");
}
