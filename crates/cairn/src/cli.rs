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
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a blob to standard output or a file.
    Get {
        /// The blob's digest (64 hex, or sha256:HEX).
        digest: String,
        /// Write to this file (atomically: temp file, then rename).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Exit 0 when the blob is present, 1 when it is not.
    Has {
        /// The blob's digest (64 hex, or sha256:HEX).
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
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
        /// Keep setuid, setgid and sticky bits the manifest gives (dropped by default).
        #[arg(long)]
        preserve_special_bits: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Collect the durable tier's bucket (the `storage` section of
        /// $CAIRN_CONFIG) instead of the data dir: deletes objects no ref or
        /// registry tag in the bucket references.
        #[arg(long)]
        bucket: bool,
    },
    /// Re-hash blobs; corrupt ones are moved to quarantine/.
    Verify {
        /// Only these blobs (default: all).
        #[arg(value_name = "DIGEST")]
        digests: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a node: the /v1 API, peer health, verified pull-through.
    Serve(crate::config::Overrides),
    /// Pull a manifest and its missing blobs from a peer into the local data dir (resumable).
    Sync {
        /// The peer, host:port.
        peer: String,
        /// The ref file to pull, e.g. rootfs-0123456789ab.json.
        ref_file: String,
        /// Config file for peer_timeout and max_concurrent_fetches [default: $CAIRN_CONFIG]
        #[arg(long, value_name = "FILE", env = "CAIRN_CONFIG")]
        config: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a running node's peers and their health.
    Peers(NodeTarget),
    /// Ask a running node about the whole cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Fetch a blob through a running node's pipeline (local, peers, origins).
    Fetch {
        /// The blob's digest (64 hex, or sha256:HEX).
        digest: String,
        /// Write to this file (atomically) instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        target: NodeTarget,
    },
    /// The OCI registry: serve it alone, list repositories and tags.
    Registry {
        /// What to do.
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Check a config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Point container runtimes at this node as their registry mirror.
    #[command(subcommand)]
    Mirror(MirrorCommand),
    /// Print a shell completion script, e.g. `cairn completions bash > /etc/bash_completion.d/cairn`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages: cairn(1) and one per command (cairn-serve(1), ...).
    Man {
        /// Directory to write the pages to (created if missing).
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
}

/// `cairn config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file and print the effective config, every default
    /// filled in (JSON, which is also valid YAML and a loadable config file).
    Check {
        /// The config file (YAML or JSON).
        file: PathBuf,
    },
}

/// `cairn mirror ...`.
#[derive(Debug, Subcommand)]
pub enum MirrorCommand {
    /// Write a runtime's mirror configuration.
    #[command(subcommand)]
    Configure(ConfigureTarget),
}

/// Runtimes `cairn mirror configure` knows.
#[derive(Debug, Subcommand)]
pub enum ConfigureTarget {
    /// containerd: one `hosts.toml` per registry under its `config_path`
    /// (idempotent; a file not written by cairn is kept as `hosts.toml.orig`).
    Containerd {
        /// Registry to mirror, as in image references (docker.io, ghcr.io, registry.example:5000); repeatable.
        #[arg(long = "registry", value_name = "HOST", required = true)]
        registries: Vec<String>,
        /// The Cairn node containerd should ask first.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:7420")]
        node: String,
        /// containerd's `config_path`.
        #[arg(long, value_name = "DIR", default_value = "/etc/containerd/certs.d")]
        config_path: PathBuf,
        /// The upstream containerd falls back to [default: registry-1.docker.io for docker.io, else the registry host, over HTTPS]; only with one --registry.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which running node a command talks to.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeTarget {
    /// The node, host:port [default: the local config's listen address, else 127.0.0.1:7420]
    #[arg(long, value_name = "ADDR")]
    pub node: Option<String>,
    /// Config file whose listen_addr is the default node [default: $CAIRN_CONFIG]
    #[arg(long, value_name = "FILE", env = "CAIRN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl NodeTarget {
    /// The node address to call.
    pub fn node(&self) -> anyhow::Result<String> {
        crate::config::node_addr(self.node.clone(), self.config.as_deref())
    }
}

/// `cairn cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Node and manifest counts across the cluster.
    Stats {
        #[command(flatten)]
        target: NodeTarget,
    },
    /// Every manifest on the node and its peers.
    Manifests {
        #[command(flatten)]
        target: NodeTarget,
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
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        upload_ttl: std::time::Duration,
    },
    /// List repositories.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the tags of a repository, with the digest each points at.
    Tags {
        /// Repository name, e.g. library/alpine.
        repo: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}
