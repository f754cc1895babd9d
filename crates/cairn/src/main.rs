//! The `cairn` command: one node of a distributed content-addressed store.

mod cli;
mod cmd;
mod config;
mod exit;

use clap::Parser;

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
