//! The `tally` binary: parses the command line, sets up logging and metrics, and wires
//! the library crates together. It owns no domain logic: ingest, the log, the store and
//! the metadata store live in their own crates behind traits, and this crate only
//! chooses the single-binary implementations of those traits.

mod cli;
mod datadir;
mod demo;
mod import;
mod serve;
mod telemetry;
mod tenant;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = telemetry::init_logging(&cli.global) {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(&cli.global, *args).await,
            Command::Tenant(cmd) => tenant::run(&cli.global, cmd).await,
            Command::OperatorKey(cmd) => tenant::run_operator_key(&cli.global, cmd).await,
            Command::Import(args) => import::run(&cli.global, args).await,
            Command::Demo(args) => demo::run(&cli.global, args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
