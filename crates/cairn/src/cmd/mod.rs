//! One module per command.

mod registry;
mod status;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let data_dir = crate::cmd::data_dir(cli.data_dir);
    match cli.command {
        Command::Status { json } => status::run(&data_dir, json),
        Command::Registry { command } => registry::run(&data_dir, command),
    }
}

/// The data dir: the flag, else `$CAIRN_DATA_DIR`, else `/var/lib/cairn`
/// as root, else `$XDG_DATA_HOME/cairn` (`~/.local/share/cairn`).
pub fn data_dir(flag: Option<std::path::PathBuf>) -> std::path::PathBuf {
    if let Some(d) = flag {
        return d;
    }
    if let Some(d) = std::env::var_os("CAIRN_DATA_DIR").filter(|d| !d.is_empty()) {
        return d.into();
    }
    let euid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap_or(1);
    if euid == 0 {
        return "/var/lib/cairn".into();
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return std::path::PathBuf::from(x).join("cairn");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    std::path::PathBuf::from(home).join(".local/share/cairn")
}
