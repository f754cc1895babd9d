//! Peers: the trait the cluster calls them through, and the peer set with
//! each peer's health and latency.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_store::{Digest, RefFile, RefName};
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::{ClusterError, Result};

/// A boxed future of a cluster result.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// A stream of blob bytes from a remote source.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// A blob body being received: its declared size (if any) and its bytes.
pub struct RemoteBlob {
    /// `Content-Length`, when the source sent one.
    pub size: Option<u64>,
    /// The bytes, unverified.
    pub body: ByteStream,
}

impl RemoteBlob {
    /// The body of a successful answer from `source_name`; a transport error
    /// mid-body becomes [`ClusterError::Truncated`] naming the source and digest.
    pub(crate) fn from_response(resp: reqwest::Response, source_name: String, digest: Digest) -> RemoteBlob {
        use futures_util::TryStreamExt;
        let size = resp.content_length();
        let body = resp.bytes_stream().map_err(move |e| ClusterError::Truncated {
            source_name: source_name.clone(),
            digest,
            reason: crate::net::error_chain(&e),
        });
        RemoteBlob { size, body: Box::pin(body) }
    }
}

/// Awaits a call to `peer`; no answer within `after` becomes
/// [`ClusterError::PeerTimeout`] naming the peer and `what` was asked.
pub(crate) async fn within<T>(
    after: Duration,
    peer: &str,
    what: impl FnOnce() -> String,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(after, call).await {
        Ok(r) => r,
        Err(_) => Err(ClusterError::PeerTimeout { peer: peer.to_owned(), what: what(), after }),
    }
}

/// A peer's `/v1/health` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHealth {
    /// Always `ok` for a live node.
    pub status: String,
    /// The peer's node id.
    pub node_id: String,
    /// The peer's clock, RFC 3339.
    pub time: String,
    /// A random id of the peer's running process (Cairn's addition): tells
    /// a node reached at another address apart from a duplicate node id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Whether the answer proved cluster membership (set by the client,
    /// never read from the body); `None` when no secret is configured.
    #[serde(skip)]
    pub proven: Option<bool>,
}

/// One entry of `/v1/manifests` (exact seed field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Manifest name.
    pub name: RefName,
    /// Its file in `refs/`.
    pub ref_file: RefFile,
    /// Number of objects listed.
    pub blob_count: usize,
    /// The node holding it.
    pub node_id: String,
}

/// What a tag points to, and who said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagTarget {
    /// The manifest digest.
    pub digest: Digest,
    /// Its media type, when the source knew it.
    pub media_type: Option<String>,
    /// Who answered: `peer ADDR`, `registry URL`, `registry URL (cached)`.
    pub source: String,
}

/// How the cluster calls a peer's `/v1` API. Implemented over HTTP by
/// `cairn-http`'s client; every answer must already be shape-checked.
pub trait PeerApi: Send + Sync + 'static {
    /// `GET /v1/health`.
    fn health<'a>(&'a self, peer: &'a str) -> BoxFut<'a, PeerHealth>;
    /// `HEAD /v1/blobs/{digest}`: the size when present, `None` on 404.
    fn head_blob<'a>(&'a self, peer: &'a str, digest: &'a Digest) -> BoxFut<'a, Option<u64>>;
    /// `GET /v1/blobs/{digest}` (a 404 is an error).
    fn get_blob<'a>(&'a self, peer: &'a str, digest: &'a Digest) -> BoxFut<'a, RemoteBlob>;
    /// `GET /v1/manifests`.
    fn list_manifests<'a>(&'a self, peer: &'a str) -> BoxFut<'a, Vec<ManifestEntry>>;
    /// `GET /v1/manifests/{ref_file}`: raw bytes, at most the manifest size limit.
    fn get_manifest<'a>(&'a self, peer: &'a str, ref_file: &'a RefFile) -> BoxFut<'a, Vec<u8>>;
    /// `GET /v1/fetch/{digest}` marked as forwarded by a peer: the owner's
    /// pipeline, which never forwards again. A client without it makes
    /// every node fetch on its own.
    fn fetch_via<'a>(&'a self, peer: &'a str, digest: &'a Digest) -> BoxFut<'a, RemoteBlob> {
        Box::pin(async move {
            Err(ClusterError::PeerStatus {
                peer: peer.to_owned(),
                what: format!("GET /v1/fetch/{digest}"),
                status: 501,
                body: "this peer client cannot forward fetches".into(),
            })
        })
    }
    /// `POST /v1/replicate/{digest}?from=FROM&pusher=PUSHER`: asks the peer
    /// to hold a copy of a blob pushed to `pusher`, pulling it from `from`
    /// (this node) when it lacks it. Peers that predate replication answer
    /// 404 (no such endpoint), which the replicator treats as a failure.
    fn replicate<'a>(
        &'a self,
        peer: &'a str,
        digest: &'a Digest,
        from: &'a str,
        pusher: &'a str,
    ) -> BoxFut<'a, ReplicaAnswer> {
        let _ = (digest, from, pusher);
        Box::pin(async move {
            Err(ClusterError::PeerStatus {
                peer: peer.to_owned(),
                what: "POST /v1/replicate".into(),
                status: 501,
                body: "this peer client cannot ask for replicas".into(),
            })
        })
    }
    /// `POST /v1/swarm/{digest}/announce?node=NODE_ID` with `body` (a
    /// [`crate::swarm::WireAnnounce`]): the owner's tracker answer, raw,
    /// at most [`crate::swarm::MAX_ANSWER_BYTES`]. Peers without the swarm
    /// answer 404.
    fn swarm_announce<'a>(
        &'a self,
        peer: &'a str,
        digest: &'a Digest,
        node_id: &'a str,
        body: Vec<u8>,
    ) -> BoxFut<'a, Vec<u8>> {
        let _ = (node_id, body);
        Box::pin(async move { Err(no_swarm(peer, format!("POST /v1/swarm/{digest}/announce"))) })
    }
    /// `GET /v1/swarm/{digest}/piece/{index}?blob_size=N&piece_size=N`:
    /// the piece's bytes, unverified, at most `piece_size`, and the
    /// bitfield the peer sent with them.
    fn swarm_piece<'a>(
        &'a self,
        peer: &'a str,
        digest: &'a Digest,
        index: u32,
        blob_size: u64,
        piece_size: u64,
    ) -> BoxFut<'a, SwarmPiece> {
        let _ = (blob_size, piece_size);
        Box::pin(async move { Err(no_swarm(peer, format!("GET /v1/swarm/{digest}/piece/{index}"))) })
    }
    /// `GET /v1/oci/tag`: the manifest a peer's registry has for
    /// `repo:tag` (its own tags and its fresh upstream answers), `None` when
    /// it has none. Peers that predate the mirror have none.
    fn resolve_tag<'a>(&'a self, _peer: &'a str, _repo: &'a str, _tag: &'a str) -> BoxFut<'a, Option<TagTarget>> {
        Box::pin(async { Ok(None) })
    }
}

/// A swarm piece as a peer sent it.
#[derive(Debug, Clone)]
pub struct SwarmPiece {
    /// Its bytes, unverified.
    pub bytes: Bytes,
    /// The peer's bitfield (`X-Cairn-Swarm-Have`, hex), unparsed: only
    /// the asker knows the geometry to read it with.
    pub have: Option<String>,
}

/// The response header a node sends its bitfield in with a piece.
pub const SWARM_HAVE_HEADER: &str = "x-cairn-swarm-have";

fn no_swarm(peer: &str, what: String) -> ClusterError {
    ClusterError::PeerStatus { peer: peer.to_owned(), what, status: 501, body: "this peer client has no swarm".into() }
}

/// A peer's answer to a replication request (`POST /v1/replicate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaAnswer {
    /// It holds the blob, pinned, now.
    Held,
    /// It queued the pull; ask again later to know it holds it.
    Queued,
}

/// One peer as `/v1/peers` shows it (exact seed field names; `latency` in
/// nanoseconds as the original encodes a Go duration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// `host:port`.
    pub address: String,
    /// Learned from the peer's health answer; empty until then.
    pub node_id: String,
    /// Whether the pipeline asks it.
    pub healthy: bool,
    /// Last health probe round trip, nanoseconds.
    pub latency: u64,
    /// Milliseconds since the last successful answer from this peer (any
    /// request); `None` when it never answered.
    #[serde(default)]
    pub last_contact_ms: Option<u64>,
    /// True when its node id is also this node's or another peer's: owner
    /// election needs unique ids.
    #[serde(default)]
    pub duplicate_node_id: bool,
    /// With a cluster secret: whether its last health answer proved
    /// membership (`None` before the first answer, or without a secret).
    #[serde(default)]
    pub proven: Option<bool>,
}

#[derive(Debug)]
struct PeerState {
    status: PeerStatus,
    failures: u32,
    next_probe: Instant,
    last_error: Option<String>,
    /// Added by discovery (not configured): removed when it leaves.
    discovered: bool,
    /// The last successful answer from it.
    last_contact: Option<Instant>,
    /// It answered with this node's own node id and instance: it is this
    /// node under another address, never asked.
    is_self: bool,
}

impl PeerState {
    fn new(address: &str, node_id: &str, now: Instant, discovered: bool) -> Self {
        PeerState {
            status: PeerStatus {
                address: address.to_owned(),
                node_id: node_id.to_owned(),
                healthy: true,
                latency: 0,
                last_contact_ms: None,
                duplicate_node_id: false,
                proven: None,
            },
            failures: 0,
            next_probe: now,
            last_error: None,
            discovered,
            last_contact: None,
            is_self: false,
        }
    }

    fn status(&self, now: Instant) -> PeerStatus {
        let age =
            self.last_contact.map(|t| u64::try_from(now.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX));
        PeerStatus { last_contact_ms: age, ..self.status.clone() }
    }
}

/// First re-probe delay after a failure; doubles up to the health interval.
pub const FIRST_REPROBE: Duration = Duration::from_millis(500);

/// Longest an unhealthy peer is waited on when it is tried last.
pub const UNHEALTHY_TIMEOUT: Duration = Duration::from_secs(2);

/// The configured peers and what is known of each.
#[derive(Debug)]
pub struct PeerSet {
    peers: Mutex<Vec<PeerState>>,
    interval: Duration,
    own_id: Mutex<String>,
    /// A cluster secret is configured: only proven peers count for tags,
    /// and unproven ones are not asked at all.
    proof_required: std::sync::atomic::AtomicBool,
    /// Discovered addresses that failed the membership proof: their
    /// announcements no longer add them.
    refused: Mutex<Vec<String>>,
}

fn lock_str(m: &Mutex<String>) -> String {
    m.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

impl PeerSet {
    /// Peers from configuration. They start healthy (the first probe runs at
    /// once), so a fresh node does not skip its peers.
    pub fn new(addresses: &[String], health_interval: Duration) -> Self {
        let now = Instant::now();
        let mut seen = Vec::new();
        let peers = addresses
            .iter()
            .filter(|a| {
                let new = !seen.contains(a);
                seen.push(*a);
                new
            })
            .map(|a| PeerState::new(a, "", now, false))
            .collect();
        PeerSet {
            peers: Mutex::new(peers),
            interval: health_interval,
            own_id: Mutex::new(String::new()),
            proof_required: Default::default(),
            refused: Mutex::new(Vec::new()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Vec<PeerState>) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-update of
        // plain fields; the data is still usable.
        let mut g = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// Every peer, in configuration order.
    pub fn snapshot(&self) -> Vec<PeerStatus> {
        let now = Instant::now();
        let dups = self.duplicate_ids();
        self.with(|v| {
            v.iter()
                .map(|p| PeerStatus { duplicate_node_id: dups.contains(&p.status.node_id), ..p.status(now) })
                .collect()
        })
    }

    /// Node ids held by more than one node: this one and a peer, or two
    /// peers at different addresses.
    pub fn duplicate_ids(&self) -> Vec<String> {
        let own = lock_str(&self.own_id);
        self.with(|v| {
            let mut dups: Vec<String> = Vec::new();
            for (i, p) in v.iter().enumerate() {
                let id = &p.status.node_id;
                if id.is_empty() || p.is_self || dups.contains(id) {
                    continue;
                }
                let twin = v[i + 1..].iter().any(|q| !q.is_self && &q.status.node_id == id);
                if *id == own || twin {
                    dups.push(id.clone());
                }
            }
            dups
        })
    }

    /// Whether peers must prove membership (a cluster secret is configured).
    pub fn require_proof(&self, on: bool) {
        self.proof_required.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// True when the node has a cluster secret: peers count only once proven.
    pub fn proof_required(&self) -> bool {
        self.proof_required.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records a health answer without a valid membership proof: the peer is
    /// never asked (for tags or blobs); one found by discovery is dropped
    /// and its address ignored from now on.
    pub fn mark_unproven(&self, address: &str) {
        let mut drop_it = false;
        self.with(|v| {
            if let Some(p) = v.iter_mut().find(|p| p.status.address == address) {
                if p.status.proven != Some(false) {
                    tracing::warn!(
                        peer = address,
                        "peer failed the cluster membership proof (no or another cluster secret); it is not asked"
                    );
                }
                p.status.proven = Some(false);
                p.status.healthy = false;
                p.last_contact = Some(Instant::now());
                p.last_error = Some("did not prove cluster membership".into());
                p.next_probe = Instant::now() + self.interval;
                drop_it = p.discovered;
            }
            if drop_it {
                v.retain(|p| p.status.address != address);
            }
        });
        if drop_it {
            let mut r = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            if !r.iter().any(|a| a == address) {
                r.push(address.to_owned());
            }
        }
    }

    /// Records a health answer with a valid membership proof.
    pub fn mark_proven(&self, address: &str) {
        self.with(|v| {
            if let Some(p) = v.iter_mut().find(|p| p.status.address == address) {
                p.status.proven = Some(true);
            }
        });
    }

    /// The peers whose word on a tag counts: healthy ones, and with a
    /// cluster secret only those whose last health answer proved membership.
    pub fn tag_peers(&self) -> Vec<String> {
        let need = self.proof_required();
        let proven: Vec<String> = self.with(|v| {
            v.iter().filter(|p| !need || p.status.proven == Some(true)).map(|p| p.status.address.clone()).collect()
        });
        self.healthy().into_iter().filter(|a| proven.contains(a)).collect()
    }

    /// Names this node, so answers carrying its id are told apart.
    pub fn set_own_id(&self, node_id: &str) {
        *self.own_id.lock().unwrap_or_else(|e| e.into_inner()) = node_id.to_owned();
    }

    /// Records that the peer at `address` is this node itself (it answered
    /// with this node's id and instance): never asked again; one found by
    /// discovery is dropped.
    pub fn mark_self(&self, address: &str) {
        self.with(|v| {
            if let Some(p) = v.iter_mut().find(|p| p.status.address == address) {
                if !p.is_self {
                    tracing::warn!(peer = address, "this peer address reaches this node itself; it is never asked");
                }
                p.is_self = true;
                p.status.healthy = false;
                p.last_error = Some("this node itself".into());
                p.next_probe = Instant::now() + self.interval;
            }
            v.retain(|p| !(p.discovered && p.is_self));
        });
    }

    /// Addresses of unhealthy peers: still tried, last and briefly, before
    /// a fetch gives up on the peers.
    pub fn unhealthy(&self) -> Vec<String> {
        self.with(|v| {
            v.iter()
                .filter(|p| !p.status.healthy && !p.is_self && p.status.proven != Some(false))
                .map(|p| p.status.address.clone())
                .collect()
        })
    }

    /// Records a successful answer from a peer to any request. One marked
    /// down is re-probed at once: it answers again.
    pub fn contact(&self, address: &str) {
        let now = Instant::now();
        self.with(|v| {
            if let Some(p) = v.iter_mut().find(|p| p.status.address == address) {
                p.last_contact = Some(now);
                if !p.status.healthy {
                    p.next_probe = p.next_probe.min(now);
                }
            }
        });
    }

    /// Addresses of every peer.
    pub fn addresses(&self) -> Vec<String> {
        self.with(|v| v.iter().map(|p| p.status.address.clone()).collect())
    }

    /// Healthy peers whose node id is known, as `(node_id, address)`: the
    /// set owners are elected from (see [`crate::rendezvous`]).
    pub fn members(&self) -> Vec<(String, String)> {
        self.with(|v| {
            v.iter()
                .filter(|p| p.status.healthy && !p.status.node_id.is_empty())
                .map(|p| (p.status.node_id.clone(), p.status.address.clone()))
                .collect()
        })
    }

    /// Adds a peer found by discovery, healthy and with its announced node
    /// id, so it is asked and elected at once (its first probe runs now).
    /// A peer already known (configured or found) is left as it is.
    pub fn add_discovered(&self, address: &str, node_id: &str) {
        if node_id == lock_str(&self.own_id) {
            tracing::warn!(peer = address, node_id, "ignoring a discovered peer with this node's own node_id");
            return;
        }
        if self.refused.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|a| a == address) {
            tracing::debug!(peer = address, "ignoring the announcement of a host that failed the membership proof");
            return;
        }
        self.with(|v| {
            if let Some(p) = v.iter_mut().find(|p| p.status.address == address) {
                if p.status.node_id.is_empty() {
                    p.status.node_id = node_id.to_owned();
                }
                return;
            }
            v.push(PeerState::new(address, node_id, Instant::now(), true));
        });
    }

    /// Removes a peer that discovery saw leave; configured peers stay.
    pub fn remove_discovered(&self, address: &str) {
        self.with(|v| v.retain(|p| !(p.discovered && p.status.address == address)));
    }

    /// Applies a discovery event.
    pub fn apply(&self, ev: &crate::discovery::PeerEvent) {
        match ev {
            crate::discovery::PeerEvent::Up { node_id, address } => self.add_discovered(address, node_id),
            crate::discovery::PeerEvent::Down { address, .. } => self.remove_discovered(address),
        }
    }

    /// Addresses of healthy peers, lowest latency first.
    pub fn healthy(&self) -> Vec<String> {
        let mut h: Vec<(u64, String)> = self.with(|v| {
            v.iter().filter(|p| p.status.healthy).map(|p| (p.status.latency, p.status.address.clone())).collect()
        });
        h.sort();
        h.into_iter().map(|(_, a)| a).collect()
    }

    /// The last error seen for a peer, if it is unhealthy.
    pub fn last_error(&self, address: &str) -> Option<String> {
        self.with(|v| v.iter().find(|p| p.status.address == address).and_then(|p| p.last_error.clone()))
    }

    /// Marks a peer down at once (connection refused, timeout, bad data);
    /// its first re-probe is within [`FIRST_REPROBE`].
    pub fn mark_down(&self, address: &str, reason: &str) {
        let now = Instant::now();
        self.with(|v| {
            if let Some(p) = v.iter_mut().find(|p| p.status.address == address) {
                if p.status.healthy {
                    tracing::warn!(peer = address, reason, "peer marked unhealthy");
                }
                p.status.healthy = false;
                p.last_error = Some(reason.to_owned());
                if p.failures == 0 {
                    p.failures = 1;
                    p.next_probe = now + FIRST_REPROBE;
                }
            }
        });
    }

    /// Records a good probe: healthy again, with its node id and latency.
    pub fn mark_up(&self, address: &str, node_id: &str, latency: Duration) {
        let now = Instant::now();
        self.with(|v| {
            if let Some(p) = v.iter_mut().find(|p| p.status.address == address) {
                if !p.status.healthy {
                    tracing::info!(peer = address, "peer healthy again");
                }
                p.status.healthy = true;
                p.status.node_id = node_id.to_owned();
                p.status.latency = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
                p.failures = 0;
                p.last_error = None;
                p.next_probe = now + self.interval;
                p.last_contact = Some(now);
            }
        });
    }

    /// Records a failed probe: unhealthy, re-probed with doubling backoff.
    pub fn probe_failed(&self, address: &str, err: &ClusterError) {
        let now = Instant::now();
        self.with(|v| {
            if let Some(p) = v.iter_mut().find(|p| p.status.address == address) {
                if p.status.healthy {
                    tracing::warn!(peer = address, error = %err, "peer failed its health probe");
                }
                p.status.healthy = false;
                p.last_error = Some(err.to_string());
                let backoff = FIRST_REPROBE.saturating_mul(1 << p.failures.min(16));
                p.failures = p.failures.saturating_add(1);
                p.next_probe = now + backoff.min(self.interval.max(FIRST_REPROBE));
            }
        });
    }

    /// Peers whose probe is due, and the time of the next one not yet due.
    pub fn due(&self, now: Instant) -> (Vec<String>, Option<Instant>) {
        self.with(|v| {
            let due = v.iter().filter(|p| p.next_probe <= now).map(|p| p.status.address.clone()).collect();
            let next = v.iter().filter(|p| p.next_probe > now).map(|p| p.next_probe).min();
            (due, next)
        })
    }

    /// Pushes a due peer's next probe out while it runs.
    pub(crate) fn probing(&self, address: &str, until: Instant) {
        self.with(|v| {
            if let Some(p) = v.iter_mut().find(|p| p.status.address == address) {
                p.next_probe = p.next_probe.max(until);
            }
        });
    }
}

/// The peer client as the cluster uses it: every answer of a peer is a
/// contact, and a refused connection (of any request, not only probes)
/// marks it down at once. Health probes record their own outcome.
pub(crate) struct Tracked {
    pub(crate) api: Arc<dyn PeerApi>,
    pub(crate) peers: Arc<PeerSet>,
}

impl Tracked {
    fn note<T>(&self, peer: &str, r: Result<T>) -> Result<T> {
        match &r {
            Ok(_) => self.peers.contact(peer),
            // A status or a bad answer still came from a live peer.
            Err(e) if e.peer_is_down() => self.peers.mark_down(peer, &e.to_string()),
            Err(ClusterError::PeerStatus { .. } | ClusterError::PeerBadAnswer { .. }) => self.peers.contact(peer),
            Err(_) => {}
        }
        r
    }
}

impl PeerApi for Tracked {
    fn health<'a>(&'a self, peer: &'a str) -> BoxFut<'a, PeerHealth> {
        self.api.health(peer)
    }
    fn head_blob<'a>(&'a self, peer: &'a str, digest: &'a Digest) -> BoxFut<'a, Option<u64>> {
        Box::pin(async move { self.note(peer, self.api.head_blob(peer, digest).await) })
    }
    fn get_blob<'a>(&'a self, peer: &'a str, digest: &'a Digest) -> BoxFut<'a, RemoteBlob> {
        Box::pin(async move { self.note(peer, self.api.get_blob(peer, digest).await) })
    }
    fn list_manifests<'a>(&'a self, peer: &'a str) -> BoxFut<'a, Vec<ManifestEntry>> {
        Box::pin(async move { self.note(peer, self.api.list_manifests(peer).await) })
    }
    fn get_manifest<'a>(&'a self, peer: &'a str, ref_file: &'a RefFile) -> BoxFut<'a, Vec<u8>> {
        Box::pin(async move { self.note(peer, self.api.get_manifest(peer, ref_file).await) })
    }
    fn fetch_via<'a>(&'a self, peer: &'a str, digest: &'a Digest) -> BoxFut<'a, RemoteBlob> {
        Box::pin(async move { self.note(peer, self.api.fetch_via(peer, digest).await) })
    }
    fn resolve_tag<'a>(&'a self, peer: &'a str, repo: &'a str, tag: &'a str) -> BoxFut<'a, Option<TagTarget>> {
        Box::pin(async move { self.note(peer, self.api.resolve_tag(peer, repo, tag).await) })
    }
    fn replicate<'a>(
        &'a self,
        peer: &'a str,
        digest: &'a Digest,
        from: &'a str,
        pusher: &'a str,
    ) -> BoxFut<'a, ReplicaAnswer> {
        Box::pin(async move { self.note(peer, self.api.replicate(peer, digest, from, pusher).await) })
    }
    fn swarm_announce<'a>(
        &'a self,
        peer: &'a str,
        digest: &'a Digest,
        node_id: &'a str,
        body: Vec<u8>,
    ) -> BoxFut<'a, Vec<u8>> {
        Box::pin(async move { self.note(peer, self.api.swarm_announce(peer, digest, node_id, body).await) })
    }
    fn swarm_piece<'a>(
        &'a self,
        peer: &'a str,
        digest: &'a Digest,
        index: u32,
        blob_size: u64,
        piece_size: u64,
    ) -> BoxFut<'a, SwarmPiece> {
        Box::pin(async move { self.note(peer, self.api.swarm_piece(peer, digest, index, blob_size, piece_size).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> PeerSet {
        PeerSet::new(&["a:1".into(), "b:2".into(), "a:1".into()], Duration::from_secs(30))
    }

    #[test]
    fn peers_start_healthy_and_duplicates_are_dropped() {
        let s = set();
        assert_eq!(s.addresses(), ["a:1", "b:2"]);
        assert!(s.snapshot().iter().all(|p| p.healthy));
        assert_eq!(s.due(Instant::now()).0.len(), 2);
    }

    #[test]
    fn marked_down_peer_is_skipped_and_reprobed_within_two_seconds() {
        let s = set();
        let now = Instant::now();
        s.mark_down("a:1", "connection refused");
        assert_eq!(s.healthy(), ["b:2"]);
        assert_eq!(s.last_error("a:1").as_deref(), Some("connection refused"));
        s.mark_up("b:2", "nb", Duration::from_millis(1));
        let (due, next) = s.due(now);
        assert!(due.is_empty());
        assert!(next.unwrap() <= now + Duration::from_secs(2));
    }

    #[test]
    fn failed_probes_back_off_up_to_the_interval_and_one_good_probe_heals() {
        let s = set();
        let err = ClusterError::PeerUnreachable { peer: "a:1".into(), reason: "refused".into() };
        for _ in 0..10 {
            s.probe_failed("a:1", &err);
        }
        let (_, next) = s.due(Instant::now());
        assert!(next.unwrap() <= Instant::now() + Duration::from_secs(30));
        s.mark_up("a:1", "na", Duration::from_micros(5));
        let p = &s.snapshot()[0];
        assert!(p.healthy);
        assert_eq!((p.node_id.as_str(), p.latency), ("na", 5000));
    }

    #[test]
    fn discovered_peers_join_healthy_with_their_id_and_leave_but_configured_ones_stay() {
        use crate::discovery::PeerEvent;
        let s = set();
        s.apply(&PeerEvent::Up { node_id: "nc".into(), address: "c:3".into() });
        s.apply(&PeerEvent::Up { node_id: "na".into(), address: "a:1".into() });
        assert_eq!(s.addresses(), ["a:1", "b:2", "c:3"]);
        assert!(s.healthy().contains(&"c:3".to_owned()));
        assert_eq!(s.members(), [("na".to_owned(), "a:1".to_owned()), ("nc".to_owned(), "c:3".to_owned())]);
        assert!(s.due(Instant::now()).0.contains(&"c:3".to_owned()), "probed at once");
        s.apply(&PeerEvent::Down { node_id: "nc".into(), address: "c:3".into() });
        s.apply(&PeerEvent::Down { node_id: "na".into(), address: "a:1".into() });
        assert_eq!(s.addresses(), ["a:1", "b:2"], "a configured peer is never removed by discovery");
    }

    #[test]
    fn a_discovered_peer_with_this_nodes_id_is_ignored_and_duplicate_ids_are_listed() {
        let s = set();
        s.set_own_id("me");
        s.add_discovered("c:3", "me");
        assert_eq!(s.addresses(), ["a:1", "b:2"], "an announcement of this node's own id adds nothing");
        s.mark_up("a:1", "x", Duration::from_millis(1));
        s.mark_up("b:2", "x", Duration::from_millis(1));
        assert_eq!(s.duplicate_ids(), ["x"]);
        s.mark_self("b:2");
        assert!(s.duplicate_ids().is_empty(), "this node itself is no duplicate");
        assert!(s.unhealthy().is_empty(), "this node itself is never asked");
    }

    #[test]
    fn a_discovered_host_that_fails_the_membership_proof_is_dropped_and_its_announcements_ignored() {
        use crate::discovery::PeerEvent;
        let s = set();
        s.require_proof(true);
        s.apply(&PeerEvent::Up { node_id: "imp".into(), address: "i:9".into() });
        assert!(s.addresses().contains(&"i:9".to_owned()));
        assert!(s.tag_peers().is_empty(), "no peer's word on tags counts before it proves membership");
        s.mark_unproven("i:9");
        s.apply(&PeerEvent::Up { node_id: "imp".into(), address: "i:9".into() });
        assert_eq!(s.addresses(), ["a:1", "b:2"], "its announcements no longer add it");
        s.mark_up("a:1", "na", Duration::from_millis(1));
        s.mark_proven("a:1");
        s.mark_up("b:2", "nb", Duration::from_millis(1));
        assert_eq!(s.tag_peers(), ["a:1"], "only proven peers are asked for tags");
        s.mark_unproven("b:2");
        assert_eq!(s.addresses(), ["a:1", "b:2"], "a configured peer stays, unproven");
        assert!(!s.healthy().contains(&"b:2".to_owned()) && !s.unhealthy().contains(&"b:2".to_owned()));
        s.require_proof(false);
        assert_eq!(s.tag_peers(), ["a:1"], "without a secret every healthy peer counts");
    }

    #[test]
    fn members_are_healthy_peers_with_a_known_id() {
        let s = set();
        assert!(s.members().is_empty(), "ids are unknown before the first probe");
        s.mark_up("a:1", "na", Duration::from_millis(1));
        s.mark_up("b:2", "nb", Duration::from_millis(1));
        s.mark_down("b:2", "refused");
        assert_eq!(s.members(), [("na".to_owned(), "a:1".to_owned())]);
    }

    #[test]
    fn healthy_peers_are_ordered_by_latency() {
        let s = set();
        s.mark_up("a:1", "na", Duration::from_millis(9));
        s.mark_up("b:2", "nb", Duration::from_millis(1));
        assert_eq!(s.healthy(), ["b:2", "a:1"]);
    }
}
