//! loadtest: runs switchyard (the real binary) under load and faults, following scenario
//! files, and reports what clients saw per version, with a JSON result and an SVG chart.

mod chart;
mod chart_proxy;
mod check;
mod compare;
mod comparison;
mod configgen;
mod expect;
mod fleet;
mod incidents;
mod peers;
mod proxy;
mod result;
mod runner;
mod scenario;
mod svg;
mod system;
mod trickle;
mod upstreams;
mod verdicts;
mod watch;

use clap::{Parser, Subcommand};
use result::{ScenarioResult, Verdict};
use scenario::Scenario;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "loadtest",
    about = "Load and fault scenarios against switchyard"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where results go (default: loadtest/results).
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// The switchyard binary to test (default: build it next to this harness).
    #[arg(long, global = true)]
    proxy_bin: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario file.
    Run { scenario: PathBuf },
    /// Run every scenario in a directory (default: loadtest/scenarios).
    RunAll { dir: Option<PathBuf> },
    /// Time-to-verdict of the guard's judge, simulated over many seeds (markdown table).
    Verdicts {
        /// Runs per kind of canary.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        seeds: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error(transparent)]
    Scenario(#[from] scenario::ScenarioError),
    #[error(transparent)]
    Proxy(#[from] proxy::ProxyError),
    #[error("cannot start the load: {0}")]
    Load(switchyard_testkit::load::LoadError),
    #[error("{0}")]
    Setup(String),
}

/// What every run shares: the binary under test and where results go.
pub struct Context {
    pub binary: PathBuf,
    pub out: PathBuf,
    stamp: u64,
}

impl Context {
    /// A fresh directory for one run of `name`.
    pub fn run_dir(&self, name: &str) -> Result<PathBuf, HarnessError> {
        let dir = self.out.join(format!("{name}-{}", self.stamp));
        std::fs::create_dir_all(&dir)
            .map_err(|e| HarnessError::Io(format!("cannot create {}", dir.display()), e))?;
        Ok(dir)
    }

    pub fn write(&self, path: &Path, text: &str) -> Result<(), HarnessError> {
        std::fs::write(path, text)
            .map_err(|e| HarnessError::Io(format!("cannot write {}", path.display()), e))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Verdicts { seeds } = cli.command {
        print!("{}", verdicts::report(seeds));
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("loadtest: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_cli(cli)) {
        Ok(results) => exit_code(&results),
        Err(err) => {
            eprintln!("loadtest: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run_cli(cli: Cli) -> Result<Vec<ScenarioResult>, HarnessError> {
    let files = match &cli.command {
        Command::Run { scenario } => vec![scenario.clone()],
        Command::RunAll { dir } => scenario_files(dir.as_deref())?,
        Command::Verdicts { .. } => return Ok(Vec::new()),
    };
    // Parse everything first: a typo in the last file should not waste the first runs.
    let scenarios = files
        .iter()
        .map(|path| Scenario::load(path))
        .collect::<Result<Vec<_>, _>>()?;
    system::raise_open_files_limit();
    let context = Context {
        binary: system::switchyard_binary(cli.proxy_bin)?,
        out: cli
            .out
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results")),
        stamp: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let mut results = Vec::new();
    for scenario in &scenarios {
        eprintln!("\n== {}: {}", scenario.name, scenario.about);
        let result = match &scenario.compare {
            Some(spec) => compare::run(scenario, spec, &context).await?,
            None => runner::run(scenario, &context).await?,
        };
        print_result(&result);
        results.push(result);
    }
    if results.len() > 1 {
        println!("\n{:<28} {:<8} headline", "scenario", "verdict");
        for result in &results {
            let headline = result.headline();
            let first = headline.lines().next().unwrap_or("");
            println!(
                "{:<28} {:<8} {first}",
                result.scenario,
                result.verdict.label()
            );
        }
    }
    Ok(results)
}

fn print_result(result: &ScenarioResult) {
    println!("\n{} {}", result.verdict.label(), result.scenario);
    if let Verdict::Blocked(reason) = &result.verdict {
        println!("  blocked: {reason}");
        if !result.needs.is_empty() {
            println!("  needs: {}", result.needs.join(", "));
        }
    }
    for line in result.headline().lines() {
        println!("  {line}");
    }
    for check in &result.checks {
        let mark = if check.pass { "ok  " } else { "FAIL" };
        println!("  [{mark}] {} -- {}", check.expectation, check.detail);
    }
    for file in &result.files {
        println!("  wrote {}", file.display());
    }
}

fn scenario_files(dir: Option<&Path>) -> Result<Vec<PathBuf>, HarnessError> {
    let dir = dir.map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios"),
        Path::to_path_buf,
    );
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| HarnessError::Io(format!("cannot read {}", dir.display()), e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// 0: every scenario passed; 1: one failed; 2: none failed but some could not run.
fn exit_code(results: &[ScenarioResult]) -> ExitCode {
    if results.iter().any(|r| matches!(r.verdict, Verdict::Fail)) {
        ExitCode::from(1)
    } else if results
        .iter()
        .any(|r| matches!(r.verdict, Verdict::Blocked(_)))
    {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
