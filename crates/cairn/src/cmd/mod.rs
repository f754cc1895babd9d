//! One module per command.

/// `println!` for command output: a reader that went away (`cairn ls | head`)
/// ends the command quietly with success, as it does for coreutils, instead
/// of a panic; another write error is reported as one.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::cmd::stdout_failed(e);
        }
    }};
}

mod checkout;
mod common;
mod config;
mod docs;
mod gc;
mod get;
mod has;
mod ls;
mod manifest;
mod manifests;
mod mirror;
mod put;
mod registry;
mod remote;
mod serve;
mod snapshot;
mod status;
mod sync;
mod table;
mod verify;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use cairn_store::CheckoutOptions;

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let data_dir_flag = cli.data_dir.clone();
    let data_dir = crate::cmd::data_dir(cli.data_dir);
    match cli.command {
        Command::Status { json } => status::run(&data_dir, json),
        Command::Registry { command } => registry::run(&data_dir, command),
        Command::Put { files, json } => put::run(&data_dir, &files, json),
        Command::Get { digest, output } => get::run(&data_dir, &digest, output.as_deref()),
        Command::Has { digest } => has::run(&data_dir, &digest),
        Command::Ls { json } => ls::run(&data_dir, json),
        Command::Snapshot { dir, name, json } => snapshot::run(&data_dir, &dir, &name, json),
        Command::Checkout { name, dir, link, preserve_special_bits, json } => {
            checkout::run(&data_dir, &name, &dir, CheckoutOptions { link, preserve_special_bits }, json)
        }
        Command::Manifests { json } => manifests::run(&data_dir, json),
        Command::Manifest(cmd) => manifest::run(&data_dir, cmd),
        Command::Gc { dry_run, grace, json, bucket } => gc::run(&data_dir, dry_run, &grace, json, bucket),
        Command::Verify { digests, json } => verify::run(&data_dir, &digests, json),
        Command::Serve(flags) => {
            let cfg = crate::config::NodeConfig::load(&flags, data_dir_flag)?;
            crate::init_tracing(&cfg.log_level, cfg.log_format);
            serve::run(cfg)
        }
        Command::Sync { peer, ref_file, config, json } => {
            let flags = crate::config::Overrides { config, ..Default::default() };
            sync::run(crate::config::NodeConfig::load(&flags, data_dir_flag)?, &peer, &ref_file, json)
        }
        Command::Peers(t) => remote::peers(&t.node()?, t.json),
        Command::Cluster(c) => remote::cluster(c),
        Command::Fetch { digest, output, target } => {
            remote::fetch(&target.node()?, &digest, output.as_deref(), target.json)
        }
        Command::Config(crate::cli::ConfigCommand::Check { file }) => config::check(&file),
        Command::Mirror(crate::cli::MirrorCommand::Configure(t)) => mirror::configure(t),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { out } => docs::man(&out),
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

/// Ends the process after a failed write to standard output.
pub fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("cairn: {}: {e}", crate::exit::STDOUT);
    std::process::exit(i32::from(crate::exit::NOT_FOUND));
}

/// Prints `v` as pretty JSON: the `--json` output of every command.
pub fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| anyhow::anyhow!("encoding the JSON output: {e}"))?;
    outln!("{text}");
    Ok(())
}
