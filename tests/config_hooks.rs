//! The `[hooks]` config section: every bad key is reported with its line.

use std::path::Path;
use std::time::Duration;
use switchyard::config::Config;

const BASE: &str = "[proxy]\nlisten = \"127.0.0.1:0\"\n\n[services.shop]\nstable = \"blue\"\nweights = { blue = 1 }\n\n[services.shop.versions.blue]\nendpoints = [\"127.0.0.1:9001\"]\n\n[hooks]\n";
const HOOKS_LINE: usize = 12;

fn problems(hooks: &str) -> Vec<(usize, String)> {
    let text = format!("{BASE}{hooks}");
    match Config::parse(Path::new("hooks.toml"), &text) {
        Ok(_) => Vec::new(),
        Err(err) => err
            .problems()
            .iter()
            .map(|p| (p.line, p.message.clone()))
            .collect(),
    }
}

fn assert_problem(hooks: &str, line: usize, expected: &str) {
    let found = problems(hooks);
    assert!(
        found
            .iter()
            .any(|(l, m)| *l == line && m.contains(expected)),
        "{hooks:?}: expected line {line} with {expected:?}, got {found:?}"
    );
}

#[test]
fn good_hooks_parse() {
    let text = format!("{BASE}webhooks = [\"http://127.0.0.1:9999/events\", \"http://localhost/x\"]\ntimeout = \"500ms\"\nattempts = 5\n");
    let config = Config::parse(Path::new("hooks.toml"), &text).unwrap();
    assert_eq!(config.hooks.webhooks.len(), 2);
    assert_eq!(config.hooks.timeout, Duration::from_millis(500));
    assert_eq!(config.hooks.attempts, 5);
    let defaults = Config::parse(Path::new("hooks.toml"), BASE).unwrap();
    assert!(defaults.hooks.webhooks.is_empty());
    assert_eq!(
        (defaults.hooks.timeout, defaults.hooks.attempts),
        (Duration::from_secs(2), 3)
    );
}

#[test]
fn bad_hooks_are_reported_with_their_line() {
    let line = HOOKS_LINE;
    assert_problem(
        "webhooks = [\"ftp://example.com/x\"]",
        line,
        "is not an http[s]://HOST",
    );
    assert_problem(
        "webhooks = [\"not a url\"]",
        line,
        "is not an http[s]://HOST",
    );
    assert_problem(
        "webhooks = [\"/just/a/path\"]",
        line,
        "is not an http[s]://HOST",
    );
    assert_problem("slack = [\"https://\"]", line, "hooks.slack: \"https://\"");
    assert_problem(
        "webhooks = [\"http://a/x\"]\nslack = [\"http://a/x\"]",
        line + 1,
        "hooks.slack: http://a/x is listed twice",
    );
    assert_problem(
        "secret_file = \"/nonexistent/hook.secret\"",
        line,
        "hooks.secret_file: cannot read /nonexistent/hook.secret",
    );
    assert_problem("ca = \"/nonexistent/ca.pem\"", line, "hooks.ca: ");
    assert_problem(
        "webhooks = \"http://127.0.0.1/x\"",
        line,
        "expected a sequence",
    );
    assert_problem(
        "timeout = \"0s\"",
        line,
        "hooks.timeout must be more than 0",
    );
    assert_problem("timeout = \"2m\"", line, "at most 60s");
    assert_problem("timeout = \"5 parsecs\"", line, "unknown unit");
    assert_problem("timeout = 5", line, "invalid type");
    assert_problem("attempts = 0", line, "between 1 and 10");
    assert_problem("attempts = 11", line, "between 1 and 10");
    assert_problem("attempts = -1", line, "invalid value");
    assert_problem("retries = 3", line, "unknown field `retries`");
    assert_problem(
        "\nwebhooks = [\"gopher://a/\"]\nattempts = 0",
        line + 1,
        "is not an http[s]://",
    );
    assert_problem(
        "\nwebhooks = [\"gopher://a/\"]\nattempts = 0",
        line + 2,
        "between 1 and 10",
    );
}

#[test]
fn short_or_blank_secrets_are_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hook.secret");
    for text in ["", "\n \n", "12345\n", "fifteen-chars!!"] {
        std::fs::write(&secret, text).unwrap();
        let found = problems(&format!("secret_file = {:?}", secret.display().to_string()));
        assert!(
            found
                .iter()
                .any(|(l, m)| *l == HOOKS_LINE && m.starts_with("hooks.secret_file: ")),
            "{text:?}: {found:?}"
        );
    }
    std::fs::write(&secret, "sixteen-chars!!!\n").unwrap();
    let text = format!(
        "{BASE}webhooks = [\"https://hooks.example.com/a\"]\nslack = [\"http://127.0.0.1:1/s\"]\nsecret_file = {:?}\n",
        secret.display().to_string()
    );
    let config = Config::parse(Path::new("hooks.toml"), &text).unwrap();
    assert_eq!(config.hooks.webhooks.len(), 2);
    assert_eq!(config.hooks.secret_file.as_deref(), Some(secret.as_path()));
}

#[test]
fn check_lists_hook_problems_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hooks.toml");
    std::fs::write(&path, format!("{BASE}attempts = 99\n")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "hooks.toml:{HOOKS_LINE}: hooks.attempts must be between 1 and 10"
        )),
        "{stderr}"
    );
}
