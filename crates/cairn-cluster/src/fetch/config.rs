//! The cluster's settings and their defaults: the one place a default is
//! set (the node's config file reader takes its defaults from here).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::origin::Origin;

/// Cluster settings (the node's config, less what only the binary needs).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id.
    pub node_id: String,
    /// Peer addresses, `host:port`.
    pub peers: Vec<String>,
    /// Timeout of every peer request, and of a stalled body.
    pub peer_timeout: Duration,
    /// Time between health probes of a healthy peer.
    pub health_interval: Duration,
    /// Whether origins are used at all.
    pub enable_cdn_fallback: bool,
    /// Origins, tried in order after the peers.
    pub origins: Vec<Origin>,
    /// Remote transfers running at once (also the sync concurrency).
    pub max_concurrent_fetches: usize,
    /// Bytes per second this node sends to peers (`/v1/blobs` and forwarded
    /// fetches), all together; `None` for no limit.
    pub egress_limit: Option<u64>,
    /// One origin fetch per cluster: a miss no peer can serve goes to the
    /// digest's elected owner instead of the origins (see [`super::owner`]).
    pub elect_owner: bool,
    /// Bytes per second a source must keep up, measured over each
    /// `rate_window` of waiting on it after its first byte; a slower source
    /// is abandoned and the next one tried. 0 turns the check off.
    pub min_transfer_rate: u64,
    /// The window `min_transfer_rate` is measured over.
    pub rate_window: Duration,
    /// Largest blob fetched: a source declaring or sending more is
    /// abandoned before more than this is written.
    pub max_blob_size: u64,
    /// Free bytes kept in the data dir: a blob whose declared size would
    /// leave less is refused before any byte is written.
    pub min_free_space: u64,
    /// Most objects a manifest may list for a sync or a push: the bound on
    /// the work one request can cause.
    pub max_manifest_objects: usize,
    /// Longest a client's request body (an upload) may send nothing before
    /// the request is dropped with its temp data.
    pub body_timeout: Duration,
    /// When peers are asked for a tag while registry origins are configured.
    pub peer_tags: PeerTags,
    /// The shared cluster secret (`cluster_secret_file`): peers prove
    /// membership with it; `None` leaves peers unauthenticated.
    pub cluster_secret: Option<crate::membership::ClusterSecret>,
    /// Copies of every blob a client pushes, kept on distinct nodes (see
    /// `crate::replicate`); 1 keeps only the pushing node's.
    pub replicas: usize,
    /// Fetch blobs of at least [`crate::swarm::MIN_SWARM_BLOB`] as pieces
    /// from every node that holds some (README: "Swarm"); off by default.
    pub swarm: bool,
    /// The slowest an asker may take a swarm piece this node sends, bytes
    /// per second: past 1 s plus the piece at this rate, the connection is
    /// cut and the upload slot freed (see `swarm_node::send_deadline`).
    pub swarm_min_send_rate: u64,
}

/// Default `peer_timeout`.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `health_interval`.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);
/// Default `max_concurrent_fetches`.
pub const DEFAULT_MAX_CONCURRENT_FETCHES: usize = 16;
/// Default `body_timeout`.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `min_transfer_rate`: 64 KiB/s.
pub const DEFAULT_MIN_TRANSFER_RATE: u64 = 64 << 10;
/// Default `rate_window`.
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(10);
/// Default `max_blob_size`: 64 GiB.
pub const DEFAULT_MAX_BLOB_SIZE: u64 = 64 << 30;
/// Default `min_free_space`: 256 MiB.
pub const DEFAULT_MIN_FREE_SPACE: u64 = 256 << 20;
/// Default `max_manifest_objects`.
pub const DEFAULT_MAX_MANIFEST_OBJECTS: usize = 100_000;

/// Default `swarm_min_send_rate`: 1 MiB/s, the rate below which an
/// asker's own scheduler counts a piece as stalled.
pub const DEFAULT_SWARM_MIN_SEND_RATE: u64 = 1 << 20;

/// Default `replicas`: only the pushing node holds a pushed blob.
pub const DEFAULT_REPLICAS: usize = 1;

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: "cairn".into(),
            peers: Vec::new(),
            peer_timeout: DEFAULT_PEER_TIMEOUT,
            health_interval: DEFAULT_HEALTH_INTERVAL,
            enable_cdn_fallback: true,
            origins: Vec::new(),
            max_concurrent_fetches: DEFAULT_MAX_CONCURRENT_FETCHES,
            egress_limit: None,
            elect_owner: true,
            min_transfer_rate: DEFAULT_MIN_TRANSFER_RATE,
            rate_window: DEFAULT_RATE_WINDOW,
            max_blob_size: DEFAULT_MAX_BLOB_SIZE,
            min_free_space: DEFAULT_MIN_FREE_SPACE,
            max_manifest_objects: DEFAULT_MAX_MANIFEST_OBJECTS,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            peer_tags: PeerTags::default(),
            cluster_secret: None,
            replicas: DEFAULT_REPLICAS,
            swarm: false,
            swarm_min_send_rate: DEFAULT_SWARM_MIN_SEND_RATE,
        }
    }
}

/// When peers are asked for a tag while registry origins are configured
/// (`peer_tags`). Without registry origins the peers are the only source of
/// tags and are always asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerTags {
    /// Never: a tag no upstream answers is an error or a miss.
    Never,
    /// After the upstreams, when none had an answer (unreachable, an error,
    /// or no such tag, e.g. an image pushed to a node of the cluster). A tag
    /// an upstream knows, even from a stale cache, is never taken from a peer.
    #[default]
    Fallback,
    /// Before the upstreams: a peer's answer wins.
    First,
}

impl FromStr for PeerTags {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "never" => Ok(PeerTags::Never),
            "fallback" => Ok(PeerTags::Fallback),
            "first" => Ok(PeerTags::First),
            other => Err(format!("{other:?} is not one of never, fallback, first")),
        }
    }
}

impl fmt::Display for PeerTags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerTags::Never => "never",
            PeerTags::Fallback => "fallback",
            PeerTags::First => "first",
        })
    }
}
