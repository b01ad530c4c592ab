//! `loadtest verdicts` from the command line: a markdown table on stdout, nothing else.

use std::process::Command;

fn verdicts(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .arg("verdicts")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_few_seeds_print_the_markdown_table() {
    let output = verdicts(&["--seeds", "2"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 7, "{stdout}");
    assert!(rows[0].starts_with("| canary | runs |"), "{stdout}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with("| 20% errors | 2 | bad | 2/2 |")),
        "{stdout}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("| healthy (same as stable) | 2 | healthy |")),
        "{stdout}"
    );
}

#[test]
fn zero_seeds_are_refused_with_a_reason() {
    let output = verdicts(&["--seeds", "0"]);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--seeds"));
}
