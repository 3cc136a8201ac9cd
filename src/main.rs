//! The `lookout` binary: parse flags, start logging, run.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: a probe is dozens of short-lived allocations spread over
/// the runtime's threads, where glibc's per-thread arenas and locking cost about a quarter of the
/// user-space CPU. Measured with benches/vs-blackbox (docs/benchmarks.md): http_2xx probes/s +30%,
/// https_2xx +9%, peak RSS unchanged (THP is kept off its heap: the `no_thp` feature).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = lookout::cli::Cli::parse();
    lookout::logging::init(cli.level(), cli.prober_level(), cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lookout: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(lookout::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lookout: {e:#}");
            ExitCode::FAILURE
        }
    }
}
