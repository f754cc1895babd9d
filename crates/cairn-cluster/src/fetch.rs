//! The fetch pipeline: local -> peers -> origins (DESIGN.md section 4).
//!
//! A miss starts one [`Transfer`] per digest (single-flight). Its driver
//! tries sources in the order [`Sources`] gives (the only place that
//! decides it), writes the bytes to a temp blob while they stream, and
//! forwards them to every caller that joined before the first byte. The
//! last [`HOLD_BACK`] bytes are held until the store has verified the
//! digest, so a caller never receives a complete-looking wrong body. Callers that join
//! later wait for the transfer and then read the committed blob.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_store::{Digest, Store, StoreError};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::error::{ClusterError, Result};
use crate::origin::Origin;
use crate::owner::Route;
use crate::peer::{ByteStream, PeerApi, PeerSet, RemoteBlob};
use crate::ratelimit::TokenBucket;
use crate::stream::byte_stream;
use crate::upstream::{OciHint, Upstream, UpstreamError};

/// Chunk size used to stream local blobs: large reads, few hand-offs.
pub const READ_CHUNK: usize = cairn_store::aio::READ_CHUNK;

/// Bytes of a remote body held back until the digest is verified: a blob
/// this small is never released unverified (its callers see a clean error
/// or the next source), and no blob's end is released unverified.
pub const HOLD_BACK: u64 = 1 << 20;

/// A live caller that accepts no chunk for this long is dropped.
const CALLER_STALL: Duration = Duration::from_secs(30);

/// Chunks buffered per live caller before the transfer waits for it.
const CALLER_QUEUE: usize = 16;

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
    /// digest's elected owner instead of the origins (see [`crate::owner`]).
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
    pub peer_tags: crate::mirror::PeerTags,
    /// The shared cluster secret (`cluster_secret_file`): peers prove
    /// membership with it; `None` leaves peers unauthenticated.
    pub cluster_secret: Option<crate::membership::ClusterSecret>,
}

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

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: "cairn".into(),
            peers: Vec::new(),
            peer_timeout: Duration::from_secs(10),
            health_interval: Duration::from_secs(30),
            enable_cdn_fallback: true,
            origins: Vec::new(),
            max_concurrent_fetches: 16,
            egress_limit: None,
            elect_owner: true,
            min_transfer_rate: DEFAULT_MIN_TRANSFER_RATE,
            rate_window: DEFAULT_RATE_WINDOW,
            max_blob_size: DEFAULT_MAX_BLOB_SIZE,
            min_free_space: DEFAULT_MIN_FREE_SPACE,
            max_manifest_objects: DEFAULT_MAX_MANIFEST_OBJECTS,
            body_timeout: Duration::from_secs(30),
            peer_tags: crate::mirror::PeerTags::default(),
            cluster_secret: None,
        }
    }
}

/// A blob body for a caller.
pub struct BlobBody {
    /// Its length, when known before the bytes.
    pub size: Option<u64>,
    /// Where the bytes come from: `local`, a peer address or an origin.
    pub source: String,
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
    http: reqwest::Client,
    inflight: Mutex<HashMap<(Digest, Route), Arc<Transfer>>>,
    /// Transfers from peers or origins.
    permits: Semaphore,
    /// Transfers through an owner: a separate pool, so transfers waiting
    /// on an owner never hold the permits the owner's direct fetches need.
    via_permits: Semaphore,
    egress: Option<Arc<TokenBucket>>,
    /// Peer manifest listings being read at once, node-wide.
    pub(crate) listings: Semaphore,
    /// A random id of this process, sent in health answers.
    pub(crate) instance: String,
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
                instance,
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
        tokio::spawn(crate::health::run(Arc::downgrade(&self.inner)))
    }

    /// Probes every peer once, now.
    pub async fn probe_all(&self) {
        let addrs = self.inner.peers.addresses();
        futures_util::future::join_all(addrs.iter().map(|a| crate::health::probe(&self.inner, a))).await;
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
        &self.inner.instance
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

    /// Streams `len` bytes (or the rest) of a local blob from `offset`.
    /// Returns the whole blob's size and the stream.
    pub async fn local_blob(&self, d: Digest, offset: u64, len: Option<u64>) -> Result<(u64, u64, ByteStream)> {
        let (size, remaining, s) = self.inner.store.read_stream(d, offset, len).await?;
        Ok((size, remaining, byte_stream(s)))
    }

    /// The size of a local blob, `None` when absent.
    pub async fn local_size(&self, d: Digest) -> Result<Option<u64>> {
        let store = self.inner.store.clone();
        match blocking(move || store.size(&d)).await? {
            Ok(s) => Ok(Some(s)),
            // A planted symlink is no blob: never served, replaced by the next put.
            Err(StoreError::BlobNotFound(_) | StoreError::Symlink(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
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
        let (rx, mut done) = match t.join() {
            Joined::Live(rx, done) => (Some(rx), done),
            Joined::Wait(done) => (None, done),
        };
        drop(t);
        if let Some(mut rx) = rx {
            // Anything else means the transfer found the blob local, or failed.
            if let Some(Msg::Start { size, source }) = rx.recv().await {
                return Ok(BlobBody { size, source, stream: live_stream(d, rx) });
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

    async fn try_local(&self, d: Digest) -> Result<Option<BlobBody>> {
        match self.local_blob(d, 0, None).await {
            Ok((size, _, stream)) => Ok(Some(BlobBody { size: Some(size), source: "local".into(), stream })),
            Err(ClusterError::Store(StoreError::BlobNotFound(_))) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The transfer for `d`, joining a running one or starting it.
    fn transfer(&self, d: Digest, prefer: Option<String>, oci: Option<OciHint>, route: Route) -> Arc<Transfer> {
        let mut map = lock(&self.inner.inflight);
        if let Some(t) = map.get(&(d, route)) {
            return Arc::clone(t);
        }
        let (done, _) = watch::channel(None);
        let shared = Mutex::new(Shared::default());
        let t = Arc::new(Transfer { digest: d, route, with_oci: oci.is_some(), shared, done });
        map.insert((d, route), Arc::clone(&t));
        drop(map);
        let inner = Arc::clone(&self.inner);
        let t2 = Arc::clone(&t);
        tokio::spawn(async move { drive(inner, t2, prefer, oci).await });
        t
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data are plain maps and vectors, valid after a panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs blocking store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ClusterError::Task(e.to_string()))
}

type Outcome = Option<Result<(), Arc<ClusterError>>>;

async fn wait_done(done: &mut watch::Receiver<Outcome>) -> Result<()> {
    let v = done.wait_for(Option::is_some).await.map_err(|_| ClusterError::Task("transfer vanished".into()))?;
    match v.as_ref() {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(ClusterError::Shared(Arc::clone(e))),
        None => Err(ClusterError::Task("transfer vanished".into())),
    }
}

#[derive(Clone)]
enum Msg {
    Start { size: Option<u64>, source: String },
    Chunk(Bytes),
    End,
    Fail(String),
}

#[derive(Default)]
struct Shared {
    started: bool,
    subs: Vec<mpsc::Sender<Msg>>,
}

/// One remote transfer of one digest, shared by every caller of it.
pub(crate) struct Transfer {
    digest: Digest,
    route: Route,
    /// Whether registry origins are among its sources.
    with_oci: bool,
    shared: Mutex<Shared>,
    done: watch::Sender<Outcome>,
}

enum Joined {
    Live(mpsc::Receiver<Msg>, watch::Receiver<Outcome>),
    Wait(watch::Receiver<Outcome>),
}

impl Transfer {
    fn join(&self) -> Joined {
        let mut s = lock(&self.shared);
        // A finished transfer takes no new live callers: nothing would
        // ever send to them.
        if s.started || self.done.borrow().is_some() {
            return Joined::Wait(self.done.subscribe());
        }
        let (tx, rx) = mpsc::channel(CALLER_QUEUE);
        s.subs.push(tx);
        Joined::Live(rx, self.done.subscribe())
    }
}

fn live_stream(d: Digest, rx: mpsc::Receiver<Msg>) -> ByteStream {
    let s = futures_util::stream::unfold(Some(rx), move |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Msg::Chunk(b)) => Some((Ok(b), Some(rx))),
            Some(Msg::End) => None,
            Some(Msg::Fail(reason)) => Some((Err(ClusterError::Aborted { digest: d, reason }), None)),
            Some(Msg::Start { .. }) => Some((Err(ClusterError::Task("transfer restarted".into())), None)),
            None => Some((Err(ClusterError::Aborted { digest: d, reason: "transfer stopped".into() }), None)),
        }
    });
    Box::pin(s)
}

/// What the transfer has sent to its live callers.
enum Release {
    /// Nothing yet: a failing source can be replaced silently.
    NotStarted,
    /// Bytes are flowing to these callers.
    Live(Vec<mpsc::Sender<Msg>>),
    /// Callers were told the transfer failed; later sources only fill the cache.
    Aborted,
}

impl Release {
    async fn send(&mut self, t: &Transfer, msg: Msg, size: Option<u64>, source: &str) {
        if let Release::NotStarted = self {
            let subs = {
                let mut s = lock(&t.shared);
                s.started = true;
                std::mem::take(&mut s.subs)
            };
            *self = Release::Live(subs);
            self.broadcast(Msg::Start { size, source: source.to_owned() }).await;
        }
        self.broadcast(msg).await;
    }

    async fn broadcast(&mut self, msg: Msg) {
        if let Release::Live(subs) = self {
            let mut keep = Vec::with_capacity(subs.len());
            for s in subs.drain(..) {
                // A caller that went away, or stopped reading, does not
                // stop the transfer for the others.
                match tokio::time::timeout(CALLER_STALL, s.send(msg.clone())).await {
                    Ok(Ok(())) => keep.push(s),
                    Ok(Err(_)) => {}
                    Err(_) => tracing::warn!("dropping a caller that stopped reading"),
                }
            }
            *subs = keep;
        }
    }

    async fn fail(&mut self, reason: String) {
        if let Release::Live(_) = self {
            self.broadcast(Msg::Fail(reason)).await;
            *self = Release::Aborted;
        }
    }
}

/// One source of a blob.
#[derive(Debug, Clone)]
enum Source {
    Peer {
        addr: String,
        size: Option<u64>,
    },
    /// A node ranked before this one, asked to fetch for us.
    Owner {
        addr: String,
    },
    /// This node's own direct transfer, once every node before it failed.
    SelfDirect,
    Origin(Origin),
    Registry {
        up: Arc<Upstream>,
        hint: OciHint,
    },
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::Peer { addr, .. } => format!("peer {addr}"),
            Source::Owner { addr } => format!("owner {addr}"),
            Source::SelfDirect => "this node's own fetch".into(),
            Source::Origin(o) => o.name(),
            Source::Registry { up, .. } => up.name(),
        }
    }

    /// The peer behind the source, if it is one.
    fn peer(&self) -> Option<&str> {
        match self {
            Source::Peer { addr, .. } | Source::Owner { addr } => Some(addr),
            Source::SelfDirect | Source::Origin(_) | Source::Registry { .. } => None,
        }
    }
}

type HeadFut = futures_util::future::BoxFuture<'static, (String, Result<Option<u64>>)>;

/// The source order, decided here and nowhere else: the preferred peer (a
/// sync's source), then healthy peers that hold the blob in the order their
/// HEAD answers arrive; then, on a direct route, the origins in configured
/// order (each retried with backoff; registry origins only when the digest
/// came with its repository); on a route via the owner, the nodes ranked
/// before this one and finally this node's own direct transfer.
struct Sources {
    inner: Arc<Inner>,
    digest: Digest,
    prefer: Option<String>,
    skip: Option<String>,
    heads: Option<FuturesUnordered<HeadFut>>,
    owners: VecDeque<String>,
    self_direct: bool,
    /// Origins with the number of tries already made.
    origins: VecDeque<(Origin, u32)>,
    current_try: u32,
    oci: Option<OciHint>,
    tried: Vec<String>,
    only_absent: bool,
    /// Peers already asked for the blob.
    asked: Vec<String>,
    /// Whether the unhealthy peers are still to be asked.
    late_pending: bool,
}

impl Sources {
    fn new(inner: Arc<Inner>, digest: Digest, prefer: Option<String>, oci: Option<OciHint>, route: Route) -> Self {
        let (owners, self_direct, origins) = match route {
            Route::ViaOwner => (inner.owners_before_me(&digest).into(), true, VecDeque::new()),
            Route::Direct if inner.cfg.enable_cdn_fallback => {
                (VecDeque::new(), false, inner.cfg.origins.iter().map(|o| (o.clone(), 0)).collect())
            }
            Route::Direct => (VecDeque::new(), false, VecDeque::new()),
        };
        Sources {
            inner,
            digest,
            skip: prefer.clone(),
            prefer,
            heads: None,
            owners,
            self_direct,
            origins,
            current_try: 0,
            oci,
            tried: Vec::new(),
            only_absent: true,
            asked: Vec::new(),
            late_pending: true,
        }
    }

    /// After a failure of `o`: true (once the backoff has passed) when it
    /// gets another try; wrong bytes and "absent" are never retried.
    async fn retry_origin(&mut self, o: &Origin, e: &ClusterError) -> bool {
        if !e.origin_may_retry() || self.current_try >= o.retries() {
            return false;
        }
        let wait = crate::origin::backoff(self.current_try + 1);
        tracing::info!(origin = %o.name(), digest = %self.digest, ?wait, "retrying the origin");
        tokio::time::sleep(wait).await;
        self.origins.push_front((o.clone(), self.current_try + 1));
        true
    }

    /// After an owner failed. One that answered with an error (the blob is
    /// nowhere, or its sources failed) speaks for the rest of the ranking,
    /// which would only ask the same origins again: only this node's own
    /// try is left. One that is down or died mid-transfer gives way to the
    /// next in the ranking.
    fn owner_failed(&mut self, e: &ClusterError) {
        let answered = match e {
            ClusterError::PeerStatus { .. } => true,
            ClusterError::Shared(inner) => matches!(**inner, ClusterError::PeerStatus { .. }),
            _ => false,
        };
        if answered {
            self.owners.clear();
        }
    }

    /// HEADs to `addrs` (less the preferred peer, already tried), each
    /// answer awaited at most `timeout`.
    fn fan_out(&self, addrs: Vec<String>, timeout: Duration) -> FuturesUnordered<HeadFut> {
        addrs
            .into_iter()
            .filter(|a| Some(a) != self.skip.as_ref())
            .map(|addr| {
                let api = Arc::clone(&self.inner.api);
                let d = self.digest;
                let f: HeadFut = Box::pin(async move {
                    let r =
                        crate::peer::within(timeout, &addr, || format!("HEAD /v1/blobs/{d}"), api.head_blob(&addr, &d))
                            .await;
                    (addr, r)
                });
                f
            })
            .collect()
    }

    async fn next(&mut self) -> Option<Source> {
        if let Some(addr) = self.prefer.take() {
            return Some(Source::Peer { addr, size: None });
        }
        if self.heads.is_none() {
            let healthy = self.inner.peers.healthy();
            self.asked.extend(healthy.iter().cloned());
            self.heads = Some(self.fan_out(healthy, self.inner.cfg.peer_timeout));
        }
        while let Some(heads) = self.heads.as_mut() {
            let Some((addr, res)) = heads.next().await else {
                // Unhealthy peers last, briefly: one that failed a probe may
                // be up by now (a cluster booting together).
                if std::mem::take(&mut self.late_pending) {
                    let late: Vec<String> =
                        self.inner.peers.unhealthy().into_iter().filter(|a| !self.asked.contains(a)).collect();
                    if !late.is_empty() {
                        let timeout = self.inner.cfg.peer_timeout.min(crate::peer::UNHEALTHY_TIMEOUT);
                        self.heads = Some(self.fan_out(late, timeout));
                        continue;
                    }
                }
                break;
            };
            {
                match res {
                    Ok(Some(size)) => {
                        return Some(Source::Peer { addr, size: Some(size) });
                    }
                    Ok(None) => self.tried.push(format!("peer {addr}: absent")),
                    Err(e) => {
                        if e.peer_is_down() {
                            self.inner.peers.mark_down(&addr, &e.to_string());
                        }
                        self.failed(&e);
                    }
                }
            }
        }
        if let Some(addr) = self.owners.pop_front() {
            return Some(Source::Owner { addr });
        }
        if std::mem::take(&mut self.self_direct) {
            return Some(Source::SelfDirect);
        }
        while let Some((o, tries)) = self.origins.pop_front() {
            self.current_try = tries;
            match (o, &self.oci) {
                (Origin::Registry(up), Some(hint)) => return Some(Source::Registry { up, hint: hint.clone() }),
                (Origin::Registry(up), None) => {
                    self.tried.push(format!("{}: skipped, a bare digest names no repository", up.name()));
                }
                (o, _) => return Some(Source::Origin(o)),
            }
        }
        None
    }

    fn failed(&mut self, e: &ClusterError) {
        if !e.is_not_found() {
            self.only_absent = false;
        }
        self.tried.push(e.to_string());
    }

    fn exhausted(self) -> ClusterError {
        if self.only_absent {
            ClusterError::NotFound { digest: self.digest, tried: self.tried }
        } else {
            ClusterError::Unavailable { digest: self.digest, tried: self.tried }
        }
    }
}

async fn drive(inner: Arc<Inner>, t: Arc<Transfer>, prefer: Option<String>, oci: Option<OciHint>) {
    let res = run(&inner, &t, prefer, oci).await;
    if let Err(e) = &res {
        tracing::warn!(digest = %t.digest, error = %e, "fetch failed");
    }
    lock(&inner.inflight).remove(&(t.digest, t.route));
    t.done.send_replace(Some(res.map_err(Arc::new)));
    // Callers that never got a byte now read the outcome from `done`.
    lock(&t.shared).subs.clear();
}

async fn run(inner: &Arc<Inner>, t: &Transfer, prefer: Option<String>, oci: Option<OciHint>) -> Result<()> {
    let d = t.digest;
    let store = inner.store.clone();
    if blocking(move || store.exists(&d)).await? {
        return Ok(());
    }
    let pool = if t.route == Route::Direct { &inner.permits } else { &inner.via_permits };
    let mut permit = Some(pool.acquire().await.map_err(|e| ClusterError::Task(e.to_string()))?);
    let mut sources = Sources::new(Arc::clone(inner), d, prefer, oci, t.route);
    let mut release = Release::NotStarted;
    while let Some(src) = sources.next().await {
        let name = src.name();
        let res = if let Source::SelfDirect = src {
            // The direct transfer takes a permit of its own pool.
            permit.take();
            self_direct(inner, d).await
        } else {
            attempt(inner, t, &src, &mut release).await
        };
        match res {
            Ok(()) => {
                tracing::debug!(digest = %d, source = %name, "blob fetched and verified");
                return Ok(());
            }
            Err(e) if e.is_local() => {
                // This node's own disk failed: another source (or another
                // try) would fail the same way.
                tracing::warn!(digest = %d, source = %name, error = %e, "storing the blob failed; not trying other sources");
                release.fail(e.to_string()).await;
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(digest = %d, source = %name, error = %e, "source failed; trying the next");
                if let Some(addr) = src.peer()
                    && (e.peer_is_down() || e.is_bad_data())
                {
                    inner.peers.mark_down(addr, &e.to_string());
                }
                release.fail(e.to_string()).await;
                match &src {
                    Source::Origin(o) if sources.retry_origin(o, &e).await => {
                        sources.tried.push(format!("{e} (retrying)"));
                        continue;
                    }
                    Source::Owner { .. } => sources.owner_failed(&e),
                    _ => {}
                }
                sources.failed(&e);
            }
        }
    }
    Err(sources.exhausted())
}

/// This node's direct transfer of `d` (joined if running), awaited.
async fn self_direct(inner: &Arc<Inner>, d: Digest) -> Result<()> {
    let c = Cluster { inner: Arc::clone(inner) };
    let t = c.transfer(d, None, None, Route::Direct);
    let mut done = t.done.subscribe();
    drop(t);
    wait_done(&mut done).await
}

/// Opens a source, with the peer timeout on the answer's headers.
async fn open(inner: &Inner, src: &Source, d: &Digest) -> Result<RemoteBlob> {
    let timeout = match src {
        Source::Origin(o) => o.timeout().unwrap_or(inner.cfg.peer_timeout),
        _ => inner.cfg.peer_timeout,
    };
    let what = match src {
        Source::Peer { .. } => format!("GET /v1/blobs/{d}"),
        Source::Origin(o) => format!("GET {}", o.url(d)),
        Source::Registry { .. } => String::new(),
        Source::Owner { addr } => return crate::owner::open(inner, addr, d).await,
        Source::SelfDirect => return Err(ClusterError::Task("a direct transfer is awaited, not opened".into())),
    };
    let fut = async {
        match src {
            Source::Peer { addr, .. } => inner.api.get_blob(addr, d).await,
            Source::Origin(o) => o.get(&inner.http, d).await,
            Source::Registry { up, hint } => {
                up.open(&hint.repo, d, hint.kind).await.map_err(|e| upstream_error(up, d, e))
            }
            Source::Owner { .. } | Source::SelfDirect => Err(ClusterError::Task("not opened here".into())),
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(match src {
            Source::Peer { addr, .. } => ClusterError::PeerTimeout { peer: addr.clone(), what, after: timeout },
            Source::Origin(o) => {
                ClusterError::Origin { origin: o.name(), digest: *d, reason: format!("no answer within {timeout:?}") }
            }
            Source::Registry { up, .. } => {
                ClusterError::Origin { origin: up.name(), digest: *d, reason: format!("no answer within {timeout:?}") }
            }
            Source::Owner { addr } => ClusterError::PeerTimeout { peer: addr.clone(), what, after: timeout },
            Source::SelfDirect => ClusterError::Task("a direct transfer is awaited, not opened".into()),
        }),
    }
}

/// An upstream's failure as the pipeline sees it: absent, or failed.
fn upstream_error(up: &Upstream, d: &Digest, e: UpstreamError) -> ClusterError {
    if e.is_not_found() {
        ClusterError::NotFound { digest: *d, tried: vec![e.to_string()] }
    } else {
        ClusterError::Origin { origin: up.name(), digest: *d, reason: e.to_string() }
    }
}

pub(crate) enum WriteMsg {
    Chunk(Bytes),
    /// Verify, tell the sender (if any) that the digest matched, then persist.
    Commit(Option<oneshot::Sender<()>>),
}

/// One try of one source: stream it into a temp blob and to the callers.
async fn attempt(inner: &Inner, t: &Transfer, src: &Source, release: &mut Release) -> Result<()> {
    let d = t.digest;
    let name = src.name();
    let max = inner.cfg.max_blob_size;
    let too_large = |size: u64| ClusterError::TooLarge { source_name: name.clone(), digest: d, size, limit: max };
    if let Source::Peer { size: Some(head), .. } = src
        && *head > max
    {
        return Err(too_large(*head));
    }
    let mut remote = open(inner, src, &d).await?;
    if let (Source::Peer { size: Some(head), .. }, Some(get)) = (src, remote.size)
        && *head != get
    {
        return Err(ClusterError::Truncated {
            source_name: name,
            digest: d,
            reason: format!("HEAD said {head} bytes, GET says {get}"),
        });
    }
    if let Some(size) = remote.size {
        if size > max {
            return Err(too_large(size));
        }
        check_free_space(inner, d, size).await?;
    }
    let (tx, rx) = mpsc::channel::<WriteMsg>(8);
    let store = inner.store.clone();
    let writer = tokio::task::spawn_blocking(move || write_blob(store, d, rx));
    let idle = match src {
        Source::Origin(o) => o.timeout().unwrap_or(inner.cfg.peer_timeout),
        Source::Owner { .. } => crate::owner::idle(inner),
        _ => inner.cfg.peer_timeout,
    };
    let mut held: std::collections::VecDeque<Bytes> = Default::default();
    let mut held_bytes = 0u64;
    let mut received = 0u64;
    let mut rate = RateWatch::new(inner.cfg.min_transfer_rate, inner.cfg.rate_window);
    loop {
        let budget = rate.budget(idle);
        let asked = std::time::Instant::now();
        let next = tokio::time::timeout(budget, remote.body.next()).await;
        let got = match &next {
            Ok(Some(Ok(c))) => c.len() as u64,
            _ => 0,
        };
        if let Some((bytes, over)) = rate.record(got, asked.elapsed()) {
            return Err(ClusterError::TooSlow {
                source_name: name,
                digest: d,
                bytes,
                over,
                min: inner.cfg.min_transfer_rate,
            });
        }
        let next = match next {
            Ok(n) => n,
            Err(_) if budget < idle => continue,
            Err(_) => {
                return Err(ClusterError::Stalled { source_name: name, digest: d, after: idle });
            }
        };
        let chunk = match next {
            None => break,
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                return Err(match e {
                    ClusterError::Truncated { .. } | ClusterError::Stalled { .. } => e,
                    other => ClusterError::Truncated { source_name: name, digest: d, reason: other.to_string() },
                });
            }
        };
        if chunk.is_empty() {
            continue;
        }
        received = received.saturating_add(chunk.len() as u64);
        if received > max {
            return Err(too_large(received));
        }
        if remote.size.is_some_and(|s| received > s) {
            return Err(ClusterError::Truncated {
                source_name: name,
                digest: d,
                reason: "body longer than declared".into(),
            });
        }
        if tx.send(WriteMsg::Chunk(chunk.clone())).await.is_err() {
            // The writer stopped: a local failure, not the source's fault.
            drop(tx);
            let err = match writer.await.map_err(|e| ClusterError::Task(e.to_string()))? {
                Err(e) => ClusterError::LocalWrite { digest: d, source: e },
                Ok(_) => ClusterError::Task("temp blob writer stopped early".into()),
            };
            return Err(err);
        }
        held_bytes += chunk.len() as u64;
        held.push_back(chunk);
        while let Some(front) = held.front()
            && held_bytes - front.len() as u64 >= HOLD_BACK
        {
            held_bytes -= front.len() as u64;
            if let Some(c) = held.pop_front() {
                release.send(t, Msg::Chunk(c), remote.size, &name).await;
            }
        }
    }
    if let Some(s) = remote.size.filter(|s| *s != received) {
        return Err(ClusterError::Truncated {
            source_name: name,
            digest: d,
            reason: format!("got {received} of {s} bytes"),
        });
    }
    // The writer's own errors are reported by its join below.
    let (verified_tx, verified) = oneshot::channel();
    let _ = tx.send(WriteMsg::Commit(Some(verified_tx))).await;
    drop(tx);
    // The digest matched: the callers get the tail now, while the disk
    // catches up; callers that join later wait for the persisted blob.
    let released = verified.await.is_ok();
    if released {
        for c in held.drain(..) {
            release.send(t, Msg::Chunk(c), Some(received), &name).await;
        }
        release.send(t, Msg::End, Some(received), &name).await;
    }
    let outcome = writer.await.map_err(|e| ClusterError::Task(e.to_string()))?;
    match outcome {
        Ok(_) if released => Ok(()),
        Ok(_) => Err(ClusterError::Task("temp blob writer finished without verifying".into())),
        Err(StoreError::DigestMismatch { expected, actual }) => {
            Err(ClusterError::Corrupt { source_name: name, expected, actual })
        }
        Err(e) => Err(ClusterError::LocalWrite { digest: d, source: e }),
    }
}

/// Watches a source's transfer rate: after its first byte, each
/// `window` of time spent waiting on it must bring `min` bytes per second.
/// Time spent on the disk or the callers is not the source's and is not
/// counted.
struct RateWatch {
    min: u64,
    window: Duration,
    started: bool,
    waited: Duration,
    bytes: u64,
}

impl RateWatch {
    fn new(min: u64, window: Duration) -> Self {
        RateWatch {
            min,
            window: window.max(Duration::from_millis(1)),
            started: false,
            waited: Duration::ZERO,
            bytes: 0,
        }
    }

    /// How long the next wait on the source may last: the idle timeout,
    /// cut at the end of the current window.
    fn budget(&self, idle: Duration) -> Duration {
        if self.min == 0 || !self.started {
            return idle;
        }
        idle.min(self.window.saturating_sub(self.waited).max(Duration::from_millis(1)))
    }

    /// Records `bytes` received after `waited`. Returns the bytes and time
    /// of a finished window that fell short of the minimum rate.
    fn record(&mut self, bytes: u64, waited: Duration) -> Option<(u64, Duration)> {
        if self.min == 0 {
            return None;
        }
        if !self.started {
            // The first byte's wait is the idle timeout's business.
            self.started = bytes > 0;
            return None;
        }
        self.waited = self.waited.saturating_add(waited);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.waited < self.window {
            return None;
        }
        let need = u128::from(self.min).saturating_mul(self.waited.as_millis());
        let short = u128::from(self.bytes).saturating_mul(1000) < need;
        let seen = (self.bytes, self.waited);
        self.waited = Duration::ZERO;
        self.bytes = 0;
        short.then_some(seen)
    }
}

/// True when `need` bytes fit in `free` while keeping `reserve` free.
pub(crate) fn room_for(need: u64, free: u64, reserve: u64) -> bool {
    free.checked_sub(reserve).is_some_and(|room| need <= room)
}

/// Refuses a blob of `size` bytes that would leave the data dir with less
/// than `min_free_space` free.
async fn check_free_space(inner: &Inner, d: Digest, size: u64) -> Result<()> {
    let reserve = inner.cfg.min_free_space;
    let store = inner.store.clone();
    let free = match blocking(move || store.free_space()).await? {
        // A backend without a local disk has no free space to keep.
        None => return Ok(()),
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            // Not knowing is no reason to refuse: the write reports a full disk itself.
            tracing::warn!(error = %e, "could not read the data dir's free space");
            return Ok(());
        }
    };
    if room_for(size, free, reserve) {
        Ok(())
    } else {
        Err(ClusterError::DiskFull { digest: d, need: size, free, reserve })
    }
}

/// Writes chunks to a temp blob; commits (verifying `d`) only on `Commit`,
/// signalling between the digest check and the sync.
pub(crate) fn write_blob(
    store: Store,
    d: Digest,
    mut rx: mpsc::Receiver<WriteMsg>,
) -> Result<cairn_store::PutOutcome, StoreError> {
    let mut w = store.writer()?;
    while let Some(m) = rx.blocking_recv() {
        match m {
            WriteMsg::Chunk(c) => {
                w.write_owned(c).map_err(|source| store.write_error(source))?;
            }
            WriteMsg::Commit(verified) => {
                let v = w.verify(Some(&d))?;
                if let Some(tx) = verified {
                    let _ = tx.send(());
                }
                return v.persist();
            }
        }
    }
    // The source failed: dropping the writer removes the temp file.
    Err(StoreError::BlobNotFound(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_check_keeps_the_reserve_and_never_overflows() {
        assert!(room_for(100, 1_000, 900));
        assert!(!room_for(101, 1_000, 900));
        assert!(!room_for(1, 100, 200), "less free than the reserve fits nothing");
        assert!(!room_for(u64::MAX, u64::MAX, 1));
        assert!(room_for(0, 0, 0));
        let t = tempfile::tempdir().unwrap();
        let free = Store::open(t.path()).unwrap().free_space().unwrap().unwrap();
        assert!(free > 0 && !room_for(free.saturating_add(1), free, 0), "a blob over the free space is refused");
    }

    #[test]
    fn rate_watch_gives_the_first_byte_grace_and_judges_each_full_window() {
        let ms = Duration::from_millis;
        let mut w = RateWatch::new(1000, ms(1000));
        assert_eq!(w.budget(ms(5000)), ms(5000), "the first byte waits the idle timeout");
        assert_eq!(w.record(1, ms(4000)), None, "a slow first byte is not judged by the rate");
        assert_eq!(w.budget(ms(5000)), ms(1000), "later waits end with the window");
        assert_eq!(w.record(600, ms(600)), None);
        assert_eq!(w.budget(ms(5000)), ms(400));
        assert_eq!(w.record(500, ms(400)), None, "1100 bytes in 1 s is fast enough");
        assert_eq!(w.record(10, ms(1000)), Some((10, ms(1000))), "10 bytes in 1 s is too slow");
        let mut off = RateWatch::new(0, ms(1000));
        off.record(1, ms(1));
        assert_eq!(off.record(0, ms(60_000)), None, "0 turns the check off");
    }
}
