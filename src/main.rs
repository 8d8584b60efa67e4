//! The `rollbot` command line: sets the process up (allocator, logging, TLS,
//! the async runtime) and hands the parsed [`cli::Args`] to the subcommand's
//! function in `src/cli/`.

use clap::Parser;
use std::process::ExitCode;

mod cli;

// sled allocates per node and per batch; mimalloc keeps that off the
// contended glibc arenas.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (see mimalloc.h): freed memory goes back
/// to the OS at once instead of after 10 ms, which keeps the controller's
/// resident memory at what it uses, not at its per-tick peaks.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Logs go to standard error, as text or, with `ROLLBOT_LOG_FORMAT=json`,
/// one JSON object per line for a cluster's log pipeline. `serve` logs every
/// audit entry too (`rollbot::audit` at info), so the pipeline keeps a copy
/// of the log beyond the store's volume; `ROLLBOT_LOG` overrides the filter.
fn init_logging(serve: bool) {
    let default = if serve {
        "warn,rollbot::audit=info"
    } else {
        "warn,rollbot::audit=off"
    };
    // An empty ROLLBOT_LOG (a manifest's placeholder) counts as unset.
    let filter = std::env::var("ROLLBOT_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| default.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("ROLLBOT_LOG_FORMAT").as_deref() {
        Ok("json") => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        _ => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn main() -> ExitCode {
    // SAFETY: sets a process-wide allocator option before any thread starts.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    // No transparent huge pages: the allocator's arenas are advised for
    // them, and a 2 MiB page made resident for a few small per-rollout
    // objects raised the controller's peak memory by about a third (152 MB
    // against 116 MB with 5,000 rollouts). Faults from here on use 4 KiB.
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    // One process-wide TLS provider, before any client is built: with more
    // than one compiled in, rustls refuses to pick.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = cli::Args::parse();
    init_logging(args.serves());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(cli::run(args)) {
        Ok(code) => code,
        // The reader has all it wanted (`| head`): not an error.
        Err(e) if closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
