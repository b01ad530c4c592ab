/// mimalloc: the request path allocates small, short-lived objects across tasks; measured
/// faster than the system allocator for this proxy.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use switchyard::config::{parse_duration, Config};
use switchyard::upstream::tls::UpstreamTls;
use switchyard_demo::DemoOptions;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Weighted blue/green/canary reverse proxy with automatic cutback"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Start even if the journal's hash chain is broken: the old journal is kept aside
        /// and a new chain begins from the state that still reads.
        #[arg(long)]
        accept_broken_journal: bool,
    },
    /// Validate a config: exit 0, or non-zero with every problem as FILE:LINE: message.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Talk to a running proxy over its admin socket.
    Ctl(switchyard::ctl::CtlArgs),
    /// Write a new Ed25519 key pair for a fleet member: the private key to FILE (mode
    /// 0600, for `[cluster] signing_key`), the public key to FILE.pub (for the other
    /// members' `trusted_keys`). Never overwrites a file.
    Keygen { file: PathBuf },
    /// Start sample upstreams, the proxy and load; watch a bad canary happen. Exits by itself.
    Demo {
        /// How long to run: seconds ("20") or a duration ("20s", "1m").
        #[arg(long, default_value = "20s", value_parser = demo_duration)]
        duration: Duration,
        /// Where to write the JSON report (default: in the demo's temporary directory).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Three proxies sharing one routing through NATS (needs `nats-server`).
        #[arg(long)]
        fleet: bool,
    },
}

fn demo_duration(text: &str) -> Result<Duration, String> {
    let duration = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => parse_duration(text)?,
    };
    if duration < Duration::from_secs(1) {
        return Err("the demo needs at least 1s".to_string());
    }
    Ok(duration)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => {
            match Config::load_checked(&config, UpstreamTls::check_files) {
                Ok(_) => {
                    println!("{}: ok", config.display());
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("{err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Ctl(args) => switchyard::ctl::main(args),
        Command::Keygen { file } => match switchyard::config::key_files::generate(&file) {
            Ok(id) => {
                println!(
                    "wrote {} (private, mode 0600) and {} (public key {id})",
                    file.display(),
                    switchyard::config::key_files::public_path(&file).display()
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("keygen: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Demo {
            duration,
            report,
            fleet,
        } => {
            let workers = 2;
            let result = build_runtime(workers)
                .map_err(|err| err.to_string())
                .and_then(|runtime| {
                    runtime
                        .block_on(switchyard_demo::run(
                            DemoOptions {
                                duration,
                                report,
                                fleet,
                            },
                            workers,
                        ))
                        .map_err(|err| err.to_string())
                });
            match result {
                Ok(_) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("switchyard demo: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            config: path,
            accept_broken_journal,
        } => {
            init_logging();
            let config = match Config::load(&path) {
                Ok(config) => config,
                Err(err) => {
                    eprintln!("{err}");
                    return ExitCode::FAILURE;
                }
            };
            let workers = switchyard::run::worker_threads(&config);
            let runtime = match build_runtime(workers) {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("switchyard: cannot start the runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            let options = switchyard::run::StartOptions {
                accept_broken_journal,
            };
            let result = runtime.block_on(switchyard::run::run(&path, config, workers, options));
            // Drained already. A journal or incident write still running gets a second to
            // finish; a DNS lookup still running must not hold the exit up longer.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("switchyard: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// One worker runs on the current thread: no cross-thread wake-ups at all.
fn build_runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: files and `docker logs` get plain text.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
}
