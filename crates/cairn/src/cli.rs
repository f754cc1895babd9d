//! Command-line definition (clap). Each command's work lives in `cmd/<name>.rs`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Cairn: a distributed content-addressed store and OCI registry.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about)]
pub struct Cli {
    /// Data directory [default: $CAIRN_DATA_DIR, else /var/lib/cairn as root, else the XDG data dir]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show blob count, bytes, manifest count and the data dir.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}
