//! Command-line interface: `run` (the fleet agent) and `probe` (one check).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vantage_agent::{oneshot, AgentOptions, Identity};

/// Exit code when a one-shot probe failed.
const EXIT_PROBE_FAILED: u8 = 1;
/// Exit code for errors (bad arguments, runtime failure).
const EXIT_ERROR: u8 = 2;

#[derive(Parser)]
#[command(
    name = "vantage-agent",
    version,
    about = "Vantage agent: runs checks and streams results to the coordinator"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Dial the coordinator and run the checks it assigns.
    Run {
        /// Coordinator gRPC URL.
        #[arg(
            long,
            env = "VANTAGE_COORDINATOR",
            default_value = "http://127.0.0.1:7070"
        )]
        coordinator: String,
        /// Region this agent probes from.
        #[arg(long, env = "VANTAGE_REGION")]
        region: String,
        /// Agent name, unique in the fleet (default: the host name).
        #[arg(long, env = "VANTAGE_AGENT_NAME")]
        name: Option<String>,
        /// Probes in flight at once.
        #[arg(long, default_value_t = vantage_agent::scheduler::DEFAULT_MAX_CONCURRENT_PROBES)]
        max_concurrent_probes: usize,
    },
    /// Run one check now and print its phases, status and TLS facts.
    Probe {
        /// https://host/path, http://..., tcp://host:port or tls://host:port.
        target: String,
        /// Deadline for the whole attempt.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Accept an untrusted certificate (facts are still reported).
        #[arg(long, short = 'k')]
        insecure: bool,
        /// PEM file with extra trust anchors.
        #[arg(long)]
        ca_file: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn execute(cli: Cli) -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match cli.command {
        Command::Run {
            coordinator,
            region,
            name,
            max_concurrent_probes,
        } => {
            let name = name.unwrap_or_else(default_name);
            let mut opts = AgentOptions::new(Identity {
                coordinator,
                name,
                region,
            });
            opts.max_concurrent_probes = max_concurrent_probes;
            match rt.block_on(vantage_agent::run(opts, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(EXIT_ERROR)
                }
            }
        }
        Command::Probe {
            target,
            timeout,
            insecure,
            ca_file,
            json,
        } => match rt.block_on(oneshot::probe_url(&target, timeout, insecure, ca_file)) {
            Ok(outcome) => {
                if json {
                    println!("{}", oneshot::render_json(&outcome, &target));
                } else {
                    print!("{}", oneshot::render(&outcome, &target));
                }
                if outcome.is_success() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_PROBE_FAILED)
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_ERROR)
            }
        },
    }
}

fn default_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| vantage_proto::is_valid_name(s))
        .unwrap_or_else(|| "agent".to_owned())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
