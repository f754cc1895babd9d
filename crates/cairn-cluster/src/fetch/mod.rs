//! The fetch pipeline: local -> peers -> origins (DESIGN.md section 4).
//!
//! A miss starts one transfer per digest (single-flight, `flight.rs`). Its
//! driver tries sources in the order `order.rs` gives (the only place that
//! decides it); each try (`attempt.rs`) writes the bytes to a temp blob while
//! they stream, and forwards them to every caller that joined before the
//! first byte (`fanout.rs`). The last [`HOLD_BACK`] bytes are held until the
//! store has verified the digest, so a caller never receives a
//! complete-looking wrong body. Callers that join later wait for the
//! transfer and then read the committed blob.
//!
//! The layers under this module (`peer`, `upstream`, `origin`, `health`,
//! `rendezvous`, `stream`, `net`) never import it; `listing`, `push`,
//! `sync` and `mirror` sit above it.
//!
//! # Where a new source goes
//!
//! A place a blob can come from is a `Source` (`source.rs`): a name, the peer
//! behind it (if any), how long its body may pause, `open(digest)` giving a
//! [`RemoteBlob`](crate::peer::RemoteBlob), and what its failure means to the order
//! (`OnFailure`: next source, retry after a wait, or skip the rest
//! of the owner ranking). A new kind (an object-store tier, a piece swarm)
//! is one file under `fetch/source/` implementing the trait, plus the line
//! in `Sources::next` (`order.rs`) that decides where it is tried. Everything
//! else (size limits, rate watch, verification, hold-back, caller fan-out,
//! marking a peer down) is done for every source alike by `attempt.rs` and
//! `flight.rs`. A source also names its [`SourceKind`] (a fixed set, for
//! observers).
//!
//! # Observers
//!
//! The driver reports each try of a source, and a streaming caller that
//! joined a running transfer, to the cluster's [`Recorder`] (`record.rs`;
//! installed with [`Cluster::set_recorder`], none by default). Sources are
//! watched through a wrapper, so no source and no step of `attempt.rs`
//! knows it is observed; metrics live above this crate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cairn_store::{Digest, Store, StoreError};
use tokio::sync::Semaphore;

use crate::error::{ClusterError, Result};
use crate::health::Prober;
use crate::peer::{ByteStream, PeerApi, PeerSet};
use crate::ratelimit::TokenBucket;
use crate::upstream::OciHint;

pub(crate) mod attempt;
pub mod config;
pub(crate) mod fanout;
pub(crate) mod flight;
pub(crate) mod limits;
mod local;
pub(crate) mod order;
pub mod owner;
pub mod record;
pub(crate) mod source;
pub mod swarm_node;
#[cfg(test)]
mod tests;

pub use crate::stream::READ_CHUNK;
pub use config::{
    ClusterConfig, DEFAULT_BODY_TIMEOUT, DEFAULT_HEALTH_INTERVAL, DEFAULT_MAX_BLOB_SIZE,
    DEFAULT_MAX_CONCURRENT_FETCHES, DEFAULT_MAX_MANIFEST_OBJECTS, DEFAULT_MIN_FREE_SPACE, DEFAULT_MIN_TRANSFER_RATE,
    DEFAULT_PEER_TIMEOUT, DEFAULT_RATE_WINDOW, DEFAULT_REPLICAS, DEFAULT_SWARM_MIN_SEND_RATE, PeerTags,
};
use flight::{Transfer, wait_done};
use owner::Route;
pub use record::{AttemptReport, AttemptResult, NoRecorder, Recorder, SourceKind};

/// Bytes of a remote body held back until the digest is verified: a blob
/// this small is never released unverified (its callers see a clean error
/// or the next source), and no blob's end is released unverified.
pub const HOLD_BACK: u64 = 1 << 20;

/// A blob body for a caller.
pub struct BlobBody {
    /// Its length, when known before the bytes.
    pub size: Option<u64>,
    /// Where the bytes come from: `local`, a peer address or an origin.
    pub source: String,
    /// The kind of that place.
    pub kind: SourceKind,
    /// The bytes. An `Err` item means the body is cut: the caller must
    /// abort its own response.
    pub stream: ByteStream,
}

/// The cluster: the local store, the peers and the origins.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) cfg: ClusterConfig,
    pub(crate) peers: Arc<PeerSet>,
    pub(crate) api: Arc<dyn PeerApi>,
    pub(crate) http: reqwest::Client,
    pub(crate) inflight: Mutex<HashMap<(Digest, Route), Arc<Transfer>>>,
    /// Transfers from peers or origins.
    pub(crate) permits: Semaphore,
    /// Transfers through an owner: a separate pool, so transfers waiting
    /// on an owner never hold the permits the owner's direct fetches need.
    pub(crate) via_permits: Semaphore,
    egress: Option<Arc<TokenBucket>>,
    /// Peer manifest listings being read at once, node-wide.
    pub(crate) listings: Semaphore,
    /// The health prober; the cluster holds its only strong reference.
    pub(crate) health: Arc<Prober>,
    /// The observer, once one is installed ([`Cluster::set_recorder`]).
    recorder: std::sync::OnceLock<Arc<dyn Recorder>>,
    /// Trackers, piece transfers and upload slots (`swarm: true`).
    pub(crate) swarm: crate::fetch::swarm_node::SwarmState,
}

impl Inner {
    /// The observer, or one that does nothing.
    pub(crate) fn recorder(&self) -> &dyn Recorder {
        match self.recorder.get() {
            Some(r) => r.as_ref(),
            None => &NoRecorder,
        }
    }
}

/// Peer manifest listings read at once: with the client's size cap, the
/// bound on the memory `/v1/cluster/manifests` callers take together.
pub const LISTINGS_AT_ONCE: usize = 4;

impl Cluster {
    /// A cluster around `store`, calling peers through `api`.
    pub fn new(store: Store, cfg: ClusterConfig, api: Arc<dyn PeerApi>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.peer_timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let peers = Arc::new(PeerSet::new(&cfg.peers, cfg.health_interval));
        peers.set_own_id(&cfg.node_id);
        peers.require_proof(cfg.cluster_secret.is_some());
        let instance = format!("{:016x}", rand::random::<u64>());
        let api: Arc<dyn PeerApi> = Arc::new(crate::peer::Tracked { api, peers: Arc::clone(&peers) });
        let health = Arc::new(Prober {
            peers: Arc::clone(&peers),
            api: Arc::clone(&api),
            peer_timeout: cfg.peer_timeout,
            node_id: cfg.node_id.clone(),
            instance,
            proof: cfg.cluster_secret.is_some(),
        });
        let permits = Semaphore::new(cfg.max_concurrent_fetches.max(1));
        let via_permits = Semaphore::new(cfg.max_concurrent_fetches.max(1));
        let egress = cfg.egress_limit.map(|r| Arc::new(TokenBucket::new(r)));
        let inflight = Mutex::new(HashMap::new());
        let listings = Semaphore::new(LISTINGS_AT_ONCE);
        Cluster {
            inner: Arc::new(Inner {
                store,
                cfg,
                peers,
                api,
                http,
                inflight,
                permits,
                via_permits,
                egress,
                listings,
                health,
                recorder: std::sync::OnceLock::new(),
                swarm: crate::fetch::swarm_node::SwarmState::default(),
            }),
        }
    }

    /// `stream` limited to the node's egress rate, for bytes sent to peers.
    pub fn egress(&self, stream: ByteStream) -> ByteStream {
        match &self.inner.egress {
            Some(b) => crate::ratelimit::limit(stream, Arc::clone(b)),
            None => stream,
        }
    }

    /// Starts the health probe loop; it ends when the cluster is dropped.
    pub fn spawn_health_loop(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(crate::health::run(Arc::downgrade(&self.inner.health)))
    }

    /// Probes every peer once, now.
    pub async fn probe_all(&self) {
        let addrs = self.inner.peers.addresses();
        let p = &self.inner.health;
        futures_util::future::join_all(addrs.iter().map(|a| crate::health::probe(p, a))).await;
    }

    /// Installs the pipeline's observer (e.g. metrics). Only the first call
    /// has an effect: returns false when one was installed already.
    pub fn set_recorder(&self, r: Arc<dyn Recorder>) -> bool {
        self.inner.recorder.set(r).is_ok()
    }

    /// The local store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.cfg
    }

    /// The peers and their health.
    pub fn peers(&self) -> &PeerSet {
        &self.inner.peers
    }

    /// A random id of this process, sent in `/v1/health` answers so a node
    /// can tell itself (reached at another address) from a duplicate id.
    pub fn instance(&self) -> &str {
        &self.inner.health.instance
    }

    /// Problems of the cluster's membership that need an operator: node
    /// ids held by more than one node. Empty when all is well.
    pub fn membership_warnings(&self) -> Vec<String> {
        self.inner
            .peers
            .duplicate_ids()
            .into_iter()
            .map(|id| {
                format!("duplicate node_id {id:?}: more than one node answers with it; give each node its own node_id")
            })
            .collect()
    }

    /// The peer client.
    pub fn api(&self) -> &Arc<dyn PeerApi> {
        &self.inner.api
    }

    /// The whole pipeline: the local blob, else a verified pull-through
    /// streamed to the caller while it is cached.
    pub async fn fetch(&self, d: Digest) -> Result<BlobBody> {
        self.fetch_routed(d, None).await
    }

    /// [`Cluster::fetch`] for a peer that elected this node owner of `d`:
    /// never forwarded to another node.
    pub async fn fetch_for_peer(&self, d: Digest) -> Result<BlobBody> {
        self.fetch_routed(d, Some(Route::Direct)).await
    }

    async fn fetch_routed(&self, d: Digest, route: Option<Route>) -> Result<BlobBody> {
        if let Some(b) = self.try_local(d).await? {
            return Ok(b);
        }
        let route = route.unwrap_or_else(|| self.inner.route(&d));
        self.follow(self.transfer(d, None, None, route)).await
    }

    /// [`Cluster::fetch`] for a blob asked for through `/v2`: registry
    /// origins are tried too, since the hint names the repository. Never
    /// forwarded to an owner (a forwarded fetch carries no repository).
    pub async fn fetch_oci(&self, d: Digest, hint: OciHint) -> Result<BlobBody> {
        if let Some(b) = self.try_local(d).await? {
            return Ok(b);
        }
        self.with_oci_transfer(d, hint, |t| self.follow(t)).await
    }

    /// Runs `f` on the `/v2` transfer of `d`, and once more on a fresh one
    /// when the transfer joined was a bare digest's: that one skips
    /// registry origins, so absent there is not absent for this caller.
    async fn with_oci_transfer<T, F, Fut>(&self, d: Digest, hint: OciHint, f: F) -> Result<T>
    where
        F: Fn(Arc<Transfer>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let t = self.transfer(d, None, Some(hint.clone()), Route::Direct);
        let joined_bare = !t.with_oci;
        match f(t).await {
            Err(e) if joined_bare && e.is_not_found() => f(self.transfer(d, None, Some(hint), Route::Direct)).await,
            r => r,
        }
    }

    /// Streams transfer `t` as it arrives, or, when it has already started
    /// (or found the blob local), the stored blob once it is done.
    async fn follow(&self, t: Arc<Transfer>) -> Result<BlobBody> {
        let d = t.digest;
        if t.followers.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0 {
            self.inner.recorder().joined();
        }
        let (rx, mut done) = match t.join() {
            flight::Joined::Live(rx, done) => (Some(rx), done),
            flight::Joined::Wait(done) => (None, done),
        };
        drop(t);
        if let Some(mut rx) = rx {
            // Anything else means the transfer found the blob local, or failed.
            if let Some(fanout::Msg::Start { size, source, kind }) = rx.recv().await {
                return Ok(BlobBody { size, source, kind, stream: fanout::live_stream(d, rx) });
            }
        }
        wait_done(&mut done).await?;
        match self.try_local(d).await? {
            Some(b) => Ok(b),
            None => Err(ClusterError::Store(StoreError::BlobNotFound(d))),
        }
    }

    /// Makes the blob local (through the pipeline), trying `prefer` first.
    /// Returns true when it was fetched, false when already present.
    pub async fn ensure_local(&self, d: Digest, prefer: Option<&str>) -> Result<bool> {
        if self.local_size(d).await?.is_some() {
            return Ok(false);
        }
        let t = self.transfer(d, prefer.map(str::to_owned), None, self.inner.route(&d));
        let mut done = t.done.subscribe();
        drop(t);
        wait_done(&mut done).await?;
        Ok(true)
    }

    /// Makes a blob or manifest asked for through `/v2` local: like
    /// [`Cluster::ensure_local`], and registry origins are tried too, since
    /// the hint names the repository. Returns true when it was fetched.
    /// Never forwarded to an owner: a forwarded fetch carries no repository.
    pub async fn ensure_local_oci(&self, d: Digest, hint: OciHint) -> Result<bool> {
        if self.local_size(d).await?.is_some() {
            return Ok(false);
        }
        self.with_oci_transfer(d, hint, |t| async move {
            let mut done = t.done.subscribe();
            drop(t);
            wait_done(&mut done).await
        })
        .await?;
        Ok(true)
    }

    /// Remote transfers currently running.
    pub fn transfers_in_flight(&self) -> usize {
        lock(&self.inner.inflight).len()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data are plain maps and vectors, valid after a panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs blocking store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    cairn_store::aio::blocking(f).await.map_err(|e| ClusterError::Task(e.to_string()))
}
