//! The `tally` binary: parses the command line, sets up logging and metrics, and wires
//! the library crates together. It owns no domain logic: ingest, the log, the store and
//! the metadata store live in their own crates behind traits, and this crate only
//! chooses the single-binary implementations of those traits.

mod cli;
mod datadir;
mod demo;
mod export;
mod import;
mod query;
mod serve;
mod telemetry;
mod tenant;

use clap::Parser;

/// Ingest, the demo generator and Arrow building allocate many small objects; mimalloc
/// handles that several times faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crate::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A server's log is its main output; a CLI command's is noise unless something is wrong.
    let default_filter = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    if let Err(e) = telemetry::init_logging(&cli.global, default_filter) {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
            Command::Export(cmd) => export::run(&cli.global, cmd).await,
            Command::Query(args) => query::run(args).await,
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
