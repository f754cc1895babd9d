//! The `cairn` command: one node of a distributed content-addressed store.

mod cli;
mod cmd;
mod config;
mod exit;
mod storage;

use clap::Parser;

// Transfers allocate and free ~1 MiB buffers at a high rate; glibc's malloc
// hands such blocks back to the kernel each time (a page fault per page on
// reuse, measured at ~15% of a pull-through's CPU). mimalloc keeps them.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // `serve` sets up its log once its config (log_format, log_level) is read.
    if !matches!(cli.command, cli::Command::Serve(_)) {
        init_tracing(config::DEFAULT_LOG_LEVEL, config::LogFormat::Text);
    }
    match cmd::run(cli) {
        Ok(code) => code,
        // The reader of our output went away (`cairn ls | head`): done, not failed.
        Err(err) if exit::is_broken_pipe(&err) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            exit::print_error(&err);
            exit::code_for(&err)
        }
    }
}

/// Sets up the log on stderr: `$RUST_LOG` if set, else `level`.
pub fn init_tracing(level: &str, format: config::LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let log = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        config::LogFormat::Json => log.json().init(),
        // Colour codes only for a person at a terminal, never into a log file or journal.
        config::LogFormat::Text => log.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}
