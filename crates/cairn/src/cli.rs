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
    /// Store files as blobs; prints `<sha256>  <file>` like sha256sum.
    Put {
        /// Files to store; `-` reads standard input.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Write a blob to standard output or a file.
    Get {
        /// The blob's digest (64 hex, or sha256:<hex>).
        digest: String,
        /// Write to this file (atomically: temp file, then rename).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Exit 0 when the blob is present, 1 when it is not.
    Has {
        /// The blob's digest (64 hex, or sha256:<hex>).
        digest: String,
    },
    /// List blobs with their sizes.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Store a directory tree and save it as a manifest.
    Snapshot {
        /// The directory to store.
        dir: PathBuf,
        /// The manifest name ([A-Za-z0-9._-], at most 255 bytes).
        #[arg(long)]
        name: String,
    },
    /// Rebuild a manifest's tree in a new or empty directory.
    Checkout {
        /// A manifest name (its newest version) or a ref file.
        name: String,
        /// The directory to create.
        dir: PathBuf,
        /// Hard-link files from the store instead of copying (read-only files).
        #[arg(long)]
        link: bool,
    },
    /// List manifests.
    Manifests {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show or remove one manifest.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Delete blobs that no manifest references.
    Gc {
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Keep unreferenced blobs younger than this (e.g. 30m, 1h, 2days).
        #[arg(long, default_value = "1h", value_name = "DURATION")]
        grace: String,
    },
    /// Re-hash blobs; corrupt ones are moved to quarantine/.
    Verify {
        /// Only these blobs (default: all).
        #[arg(value_name = "DIGEST")]
        digests: Vec<String>,
    },
}

/// `cairn manifest ...`.
#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Print a manifest's JSON.
    Show {
        /// A manifest name (its newest version) or a ref file.
        name: String,
    },
    /// Remove a manifest version (its blobs stay until `cairn gc`).
    Rm {
        /// A manifest name (its newest version) or a ref file.
        name: String,
        /// Remove every version of the name.
        #[arg(long)]
        all: bool,
    },
}
