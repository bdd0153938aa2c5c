//! Command-line interface.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vantage_coordinator::config;

/// Exit code for a configuration error (EX_CONFIG from sysexits.h).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code for any other error.
pub const EXIT_ERROR: u8 = 2;

#[derive(Parser)]
#[command(
    name = "vantage-coordinator",
    version,
    about = "Vantage coordinator: assigns checks to agents, stores their results, serves the API"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator with a config file.
    Run {
        /// Path of the TOML config.
        #[arg(long, short = 'c', env = "VANTAGE_CONFIG")]
        config: PathBuf,
    },
    /// Try Vantage offline: a demo target, this coordinator with its embedded
    /// store, and one local agent, all in this process.
    Demo {
        /// Path of the TOML config.
        #[arg(long, short = 'c', default_value = "deploy/examples/demo.toml")]
        config: PathBuf,
    },
    /// Check a config file and report every error with file:line:column.
    Validate {
        /// Path of the TOML config.
        file: PathBuf,
    },
}

pub fn execute(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate { file } => match config::load(&file) {
            Ok(cfg) => {
                println!("{}: ok ({} checks)", file.display(), cfg.checks.len());
                ExitCode::SUCCESS
            }
            Err(errs) => {
                eprintln!("{errs}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run { config: path } => match config::load(&path) {
            Ok(cfg) => run_async(vantage_coordinator::run(
                cfg,
                shutdown_signal(),
                print_bound,
            )),
            Err(errs) => {
                eprintln!("{errs}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Demo { config: path } => match config::load(&path) {
            Ok(cfg) => run_async(vantage_coordinator::demo::run(
                cfg,
                shutdown_signal(),
                print_bound,
            )),
            Err(errs) => {
                eprintln!("{errs}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
    }
}

/// Prints the bound addresses on stdout, one line, so scripts and tests that use
/// port 0 can find them.
fn print_bound(b: vantage_coordinator::Bound) {
    println!(
        "vantage-coordinator listening grpc={} http={}",
        b.grpc, b.http
    );
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
