//! The `cairn` command: one node of a distributed content-addressed store.

mod cli;
mod cmd;
mod config;
mod exit;

use clap::Parser;

// Transfers allocate and free ~1 MiB buffers at a high rate; glibc's malloc
// hands such blocks back to the kernel each time (a page fault per page on
// reuse, measured at ~15% of a pull-through's CPU). mimalloc keeps them.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    init_tracing();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("cairn: {err:#}");
            exit::code_for(&err)
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
