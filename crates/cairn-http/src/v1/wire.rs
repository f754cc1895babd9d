//! Every JSON body, query and header of the `/v1` API, in one place: the
//! server's handlers write them and [`crate::client::Client`] (the
//! cluster's peer client, and the CLI's) reads them. The answers whose
//! types the cluster itself consumes ([`PeerApi`](cairn_cluster::PeerApi)
//! returns them) are defined in `cairn-cluster` and re-exported here, so
//! this file lists the whole wire.

use cairn_store::Digest;
use serde::{Deserialize, Serialize};

/// `/v1/manifests` and `/v1/cluster/manifests` entries, `/v1/peers`
/// rows, `/v1/cluster/stats`, the sync answer, and the client's view of
/// `/v1/health` ([`Health`] is what the server writes).
pub use cairn_cluster::{ClusterStats, ManifestEntry, PeerHealth, PeerStatus, SyncReport};

/// The header naming the node that served a blob or manifest.
pub const NODE_HEADER: &str = "x-volt-node";
/// The header naming where `/v1/fetch` got the bytes (Cairn's addition).
pub const SOURCE_HEADER: &str = "x-cairn-source";
/// Set by a node asking the owner of a digest to fetch it: the owner
/// fetches it itself and never forwards the request again (Cairn's addition).
pub const FORWARDED_HEADER: &str = "x-cairn-forwarded";

/// Names the peers whose listing `/v1/cluster/manifests` left out.
pub const SKIPPED_PEERS_HEADER: &str = "x-cairn-skipped-peers";

/// `GET /v1/info` (exact seed field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node id.
    pub node_id: String,
    /// The configured listen address, e.g. `:7420`.
    pub listen_addr: String,
    /// Peer addresses.
    pub peers: Vec<String>,
    /// The data directory, for loopback callers; empty for others.
    pub cas_base: String,
}

/// `GET /v1/health` (exact seed field names, plus `reason` when degraded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` (200), or `degraded` (503) when the store does not answer.
    pub status: String,
    /// The node id.
    pub node_id: String,
    /// Now, RFC 3339 UTC.
    pub time: String,
    /// Why the node is degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A random id of this node's process (Cairn's addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Cluster problems an operator must fix, e.g. a duplicate node_id
    /// (Cairn's addition; absent when none). The node still serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The answer to `PUT /v1/blobs/{digest}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutBlobAnswer {
    /// The digest stored.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// True when it was already there.
    pub existed: bool,
}

/// `?peer=ADDR` of a sync.
#[derive(Debug, Deserialize)]
pub struct SyncQuery {
    /// The peer to pull from.
    pub peer: String,
}

/// The query of `POST /v1/replicate/{digest}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReplicateQuery {
    /// The node id to pull from (the asker); with a cluster secret the
    /// proven id is used and this may be left out.
    pub from: Option<String>,
    /// The node id the blob was pushed to (decides the holders).
    pub pusher: String,
}

/// The answer of `POST /v1/replicate/{digest}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicateAnswer {
    /// `held` (200) or `queued` (202).
    pub status: cairn_cluster::peer::ReplicaAnswer,
}

/// `GET /v1/oci/tag?repo=R&tag=T`: what this node's registry has for a tag
/// (its own tags and its fresh upstream answers). 404 when it has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagAnswer {
    /// The repository asked for.
    pub repo: String,
    /// The tag asked for.
    pub tag: String,
    /// The manifest digest, `sha256:<hex>`.
    pub digest: String,
    /// The manifest's media type, when known.
    pub media_type: Option<String>,
}

/// The query of `GET /v1/oci/tag`.
#[derive(Debug, Deserialize)]
pub struct TagQuery {
    /// Repository name.
    pub repo: String,
    /// Tag.
    pub tag: String,
}

/// One remote transfer, as `GET /v1/status` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecentTransfer {
    /// When it ended, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The blob, `sha256:<hex>`.
    pub digest: String,
    /// The source as logs name it (`peer ADDR`, an origin's URL).
    pub source: String,
    /// `peer`, `owner`, `origin` or `upstream`.
    pub kind: String,
    /// `ok`, `corrupt`, `absent` or `failed`.
    pub result: String,
    /// Body bytes received.
    pub bytes: u64,
    /// From asking to the end.
    pub seconds: f64,
    /// `bytes / seconds`.
    pub bytes_per_second: u64,
}

/// `GET /v1/status`: what the status page shows besides peers and health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node id.
    pub node_id: String,
    /// Cairn's version.
    pub version: String,
    /// Seconds since the node started.
    pub uptime_seconds: u64,
    /// Size of the data dir's filesystem, bytes (absent when it cannot be read).
    pub disk_size_bytes: Option<u64>,
    /// Bytes used on it.
    pub disk_used_bytes: Option<u64>,
    /// Bytes free for this node on it.
    pub disk_free_bytes: Option<u64>,
    /// The cache's cap, bytes; absent without one.
    pub cache_max_bytes: Option<u64>,
    /// Blob requests answered from the local store.
    pub hits: u64,
    /// Blob requests that needed a remote transfer.
    pub misses: u64,
    /// Bytes received from URL origins and upstream registries.
    pub origin_egress_bytes: u64,
    /// Remote transfers running now.
    pub transfers_in_flight: u64,
    /// The last transfers, newest first.
    pub recent_transfers: Vec<RecentTransfer>,
    /// Bytes of blobs the cache holds (what counts against its cap); absent without one.
    #[serde(default)]
    pub cache_used_bytes: Option<u64>,
}
