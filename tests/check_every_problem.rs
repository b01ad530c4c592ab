//! `switchyard check` lists every problem in a file, unknown keys and bad values alike,
//! each as FILE:LINE: message, and exits non-zero.

mod common;
use common::*;
use std::process::Command;

#[test]
fn check_lists_every_unknown_key_and_bad_value_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    let lines = [
        "[proxy]",                             // 1
        "listen = \"127.0.0.1:8080\"",         // 2
        "lisen = \"127.0.0.1:8081\"",          // 3 unknown key
        "max_connections = 0",                 // 4 bad value
        "",                                    // 5
        "[proxy.timeouts]",                    // 6
        "connect = \"10 parsecs\"",            // 7 bad duration
        "response_header = \"5s\"",            // 8 unknown key
        "",                                    // 9
        "[services.shop]",                     // 10
        "stable = \"blue\"",                   // 11
        "weights = { blue = 95, canary = 5 }", // 12 canary not defined
        "stikcy = { cookie = \"sy_user\" }",   // 13 unknown key
        "",                                    // 14
        "[services.shop.versions.blue]",       // 15
        "endpoints = [\"127.0.0.1:9001\"]",    // 16
        "relase = { version = \"1.4.2\" }",    // 17 unknown key
        "",                                    // 18
        "[services.shop.gaurd]",               // 19 unknown table
        "max_error_rate = 0.05",               // 20
    ];
    std::fs::write(&path, lines.join("\n")).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!("{}{}", stdout(&out), stderr(&out));
    let file = path.display().to_string();
    for (line, word) in [
        (3, "lisen"),
        (4, "max_connections"),
        (7, "parsecs"),
        (8, "response_header"),
        (12, "canary"),
        (13, "stikcy"),
        (17, "relase"),
        (19, "gaurd"),
    ] {
        let prefix = format!("{file}:{line}: ");
        assert!(
            text.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(word)),
            "no problem reported at line {line} ({word}):\n{text}"
        );
    }
}

#[test]
fn check_reports_bad_upstream_protocols_and_grpc_codes_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    let lines = [
        "[proxy]",                                              // 1
        "listen = \"127.0.0.1:8080\"",                          // 2
        "",                                                     // 3
        "[services.api]",                                       // 4
        "stable = \"blue\"",                                    // 5
        "weights = { blue = 90, canary = 10 }",                 // 6
        "grpc_error_codes = [\"UNAVAILABLE\", 17, \"BROKEN\"]", // 7 two bad entries
        "",                                                     // 8
        "[services.api.versions.blue]",                         // 9
        "endpoints = [\"127.0.0.1:9001\"]",                     // 10
        "protocol = \"h3\"",                                    // 11 no such protocol
        "",                                                     // 12
        "[services.api.versions.canary]",                       // 13
        "endpoints = [\"127.0.0.1:9002\"]",                     // 14
        "protocol = 2",                                         // 15 not a string
    ];
    std::fs::write(&path, lines.join("\n")).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!("{}{}", stdout(&out), stderr(&out));
    let file = path.display().to_string();
    for (line, word) in [(7, "17"), (7, "BROKEN"), (11, "h3"), (15, "integer")] {
        let prefix = format!("{file}:{line}: ");
        assert!(
            text.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(word)),
            "no problem reported at line {line} ({word}):\n{text}"
        );
    }

    // Fixed, the same file passes.
    let fixed = lines
        .join("\n")
        .replace("17, \"BROKEN\"", "\"data_loss\", 13")
        .replace("\"h3\"", "\"h2c\"")
        .replace("protocol = 2", "protocol = \"http1\"");
    std::fs::write(&path, fixed).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn check_reports_a_protocol_that_disagrees_with_tls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    let lines = [
        "[proxy]",                              // 1
        "listen = \"127.0.0.1:8080\"",          // 2
        "[services.api]",                       // 3
        "stable = \"blue\"",                    // 4
        "weights = { blue = 90, canary = 10 }", // 5
        "[services.api.versions.blue]",         // 6
        "endpoints = [\"127.0.0.1:9001\"]",     // 7
        "protocol = \"h2\"",                    // 8 TLS protocol, no tls table
        "[services.api.versions.canary]",       // 9
        "endpoints = [\"127.0.0.1:9002\"]",     // 10
        "tls = {}",                             // 11
        "protocol = \"h2c\"",                   // 12 clear protocol, with tls
    ];
    std::fs::write(&path, lines.join("\n")).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!("{}{}", stdout(&out), stderr(&out));
    let file = path.display().to_string();
    for (line, words) in [(8, "needs a tls table"), (12, "use \"h2\"")] {
        let prefix = format!("{file}:{line}: ");
        assert!(
            text.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(words)),
            "no problem reported at line {line} ({words}):\n{text}"
        );
    }
}
