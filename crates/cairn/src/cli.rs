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
    /// The OCI registry: serve it alone, list repositories and tags.
    Registry {
        /// What to do.
        #[command(subcommand)]
        command: RegistryCommand,
    },
}

/// `cairn registry ...`.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Serve only the OCI registry (/v2) on the data dir.
    Serve {
        /// Port to listen on (0 picks a free one; the address is printed).
        #[arg(long, default_value_t = 5000)]
        port: u16,
        /// Address to bind, e.g. 127.0.0.1 or 0.0.0.0.
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
        /// Forget an upload after this long without new bytes.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        upload_ttl: std::time::Duration,
    },
    /// List repositories.
    Ls,
    /// List the tags of a repository, with the digest each points at.
    Tags {
        /// Repository name, e.g. library/alpine.
        repo: String,
    },
}
