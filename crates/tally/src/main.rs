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

/// How long mimalloc keeps freed memory before returning it to the OS.
///
/// The bundled mimalloc's default is 1 s. A query reads hundreds of MB (a funnel over
/// 14 M events groups ~300 MB), and a dashboard asks again seconds later: with the
/// default, a query that came more than a second after the last one got its memory
/// back from the kernel, which zeroes each page on first touch (a tenth of the
/// funnel's time in perf; the same funnel every 3 s took 600–630 ms, against 450–540
/// ms with this setting). Ten seconds is also jemalloc's default decay for dirty
/// pages. The cost: after a burst of queries the process stays that much larger for
/// up to 10 s; queries stay under the engine's memory limit either way.
pub const ALLOCATOR_PURGE_DELAY_MS: i64 = 10_000;

/// `mi_option_purge_delay` in the bundled mimalloc's option enum (`mimalloc.h`), which
/// `libmimalloc-sys` does not name: right before `use_numa_nodes`. The assertion fails
/// the build if a new binding moves that one; a test reads the option back.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const _: () = assert!(MI_OPTION_PURGE_DELAY + 1 == libmimalloc_sys::mi_option_use_numa_nodes);

/// Applies [`ALLOCATOR_PURGE_DELAY_MS`]; call first thing in `main`.
fn configure_allocator() {
    // SAFETY: sets a plain integer option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ALLOCATOR_PURGE_DELAY_MS as _) };
}

use crate::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    configure_allocator();
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

#[cfg(test)]
mod allocator_tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_configured() {
        // SAFETY: reads and sets plain integer options.
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // The bundled mimalloc's purge_delay defaults to 1000 (ms, `src/options.c`); no
        // neighbouring option has that default.
        assert_eq!(
            before, 1000,
            "option {MI_OPTION_PURGE_DELAY} is not purge_delay"
        );
        configure_allocator();
        let after = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(after as i64, ALLOCATOR_PURGE_DELAY_MS);
    }
}
