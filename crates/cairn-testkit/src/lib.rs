//! Test helpers for Cairn's network layers (dev-only).
//!
//! Every server here runs on its own Tokio runtime, bound to `127.0.0.1:0`
//! before it is spawned, so it is ready when the constructor returns.
//! Stopping a server shuts its runtime down: listeners and every open
//! connection die at once, like a killed process.
//!
//! - [`TestNode`] / [`start_cluster`]: real Cairn nodes, each with its own
//!   temp data dir, wired as peers.
//! - [`TestOrigin`]: an HTTP origin that counts its requests.
//! - [`HostilePeer`]: a peer that lies (wrong bytes, truncation, stalls, death
//!   mid-stream, malformed JSON, unsafe manifests).
//! - [`registry`]: a real upstream registry, a token server, an image
//!   pusher, and the skopeo helpers.
//! - [`netns`]: network namespaces for mDNS tests.
//! - [`containerd`]: a real containerd and `ctr`, every path in a temp dir.
//! - [`tls`]: a test CA and the certificates it signs, as PEM files.
//! - [`paced`]: an origin with a first-byte delay and shared bandwidth.
//! - [`NodeProcess`], [`free_port`]: a `cairn serve` process killed on drop.
//! - [`blob`], [`read_all`], [`dead_addr`]: seeded bytes, whole bodies, a
//!   refused address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use cairn_cluster::{ClusterConfig, Origin};
use cairn_http::AppState;
use cairn_store::{Digest, Store, StoreOptions};

pub mod registry;

pub mod containerd;

/// Deterministic pseudo-random bytes (xorshift), so big blobs are generated, not committed.
pub fn blob(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The ref file a manifest named `name` with these exact bytes must be
/// saved under: `<name>-<first 12 hex of their SHA-256>.json`.
pub fn ref_file_for(name: &str, bytes: &[u8]) -> cairn_store::RefFile {
    let name = cairn_store::RefName::parse(name).unwrap_or_else(|e| panic!("test manifest name {name:?}: {e}"));
    cairn_store::RefFile::for_manifest(&name, bytes).unwrap_or_else(|e| panic!("test ref file for {name}: {e}"))
}

/// Reads a response body to the end; `Err` when the server cut it.
pub async fn read_all(r: reqwest::Response) -> Result<Vec<u8>, String> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut s = r.bytes_stream();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// A port that was free a moment ago, for a process that must be told
/// its address up front (in-process servers bind port 0 instead).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A node process (`cairn serve`) and the address it listens on; killed and
/// reaped when dropped, so a failing test leaves no process behind.
pub struct NodeProcess {
    /// The process.
    pub child: std::process::Child,
    /// Its `host:port`.
    pub addr: String,
}

impl NodeProcess {
    /// Starts `BIN serve --config CFG` (the test's `env!("CARGO_BIN_EXE_cairn")`)
    /// with its output discarded and `$CAIRN_CONFIG` unset; `addr` is the
    /// config's `listen_addr`. Waiting for readiness is the caller's part.
    pub fn serve(bin: &str, cfg: &std::path::Path, addr: &str) -> NodeProcess {
        let child = std::process::Command::new(bin)
            .args(["serve", "--config"])
            .arg(cfg)
            .env_remove("CAIRN_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start cairn serve");
        NodeProcess { child, addr: addr.to_owned() }
    }
}

impl NodeProcess {
    /// Like [`NodeProcess::serve`], with `RUST_LOG=info` and stderr kept
    /// (piped), for tests that read the node's log.
    pub fn serve_logged(bin: &str, cfg: &std::path::Path, addr: &str) -> NodeProcess {
        let child = std::process::Command::new(bin)
            .args(["serve", "--config"])
            .arg(cfg)
            .env("RUST_LOG", "info")
            .env_remove("CAIRN_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start cairn serve");
        NodeProcess { child, addr: addr.to_owned() }
    }

    /// Polls `ready` until it holds; panics with the node's log if the
    /// process exits first or is not ready within 20 s.
    pub fn wait_ready(&mut self, ready: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !ready() {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("cairn serve exited with {st}: {}", self.stop_and_log());
            }
            if std::time::Instant::now() >= deadline {
                let addr = self.addr.clone();
                panic!("node on {addr} not ready within 20 s: {}", self.stop_and_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the node and returns what it logged (with [`NodeProcess::serve_logged`]).
    pub fn stop_and_log(&mut self) -> String {
        use std::io::Read;
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        err
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when a node on `addr` answers `GET /v1/health` with 200 and status
/// `ok` (one short connection; for polling a starting process).
pub fn health_ok(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200") && out.contains("\"status\":\"ok\"")
}

/// An address nothing listens on (connections are refused).
pub fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a.to_string()
}

/// A server on its own runtime.
pub struct Server {
    addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl Server {
    /// Serves `app` on an already bound listener.
    pub fn spawn(listener: std::net::TcpListener, app: Router) -> Server {
        Server::spawn_tls(listener, app, None)
    }

    /// Binds `127.0.0.1:0` and serves `app` over HTTPS with `tls`.
    pub fn start_tls(app: Router, tls: Arc<cairn_http::tls::ServerTls>) -> Server {
        Server::spawn_tls(std::net::TcpListener::bind("127.0.0.1:0").expect("bind"), app, Some(tls))
    }

    fn spawn_tls(listener: std::net::TcpListener, app: Router, tls: Option<Arc<cairn_http::tls::ServerTls>>) -> Server {
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        {
            let _g = rt.enter();
            let l = tokio::net::TcpListener::from_std(listener).expect("listener");
            // The node's own connection layer, so handlers see client addresses as in production.
            let limits = cairn_http::ServeLimits::default();
            rt.spawn(cairn_http::serve_tls_with(l, app, std::future::pending(), Duration::ZERO, limits, tls));
        }
        Server { addr, rt: Some(rt) }
    }

    /// Binds `127.0.0.1:0` and serves `app`.
    pub fn start(app: Router) -> Server {
        Server::spawn(std::net::TcpListener::bind("127.0.0.1:0").expect("bind"), app)
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Kills the server and every open connection.
    pub fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    /// Runs `f` inside this server's runtime (to spawn tasks on it).
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        let _g = self.rt.as_ref().expect("server running").enter();
        f()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Request counts by `METHOD /v1/<first segment>`, e.g. `GET /v1/blobs`;
/// the same key with ` done` counts handlers that have returned.
#[derive(Default, Debug)]
pub struct Counters {
    map: std::sync::Mutex<HashMap<String, usize>>,
    /// Per key: requests being handled now, and the most at once.
    in_flight: std::sync::Mutex<HashMap<String, (usize, usize)>>,
    hang_after: std::sync::Mutex<Option<(String, usize)>>,
}

impl Counters {
    /// How many requests matched `key` (`"GET /v1/blobs"`).
    pub fn get(&self, key: &str) -> usize {
        self.map.lock().expect("counters").get(key).copied().unwrap_or(0)
    }
    /// The most requests matching `key` that were being handled at once.
    pub fn max_in_flight(&self, key: &str) -> usize {
        self.in_flight.lock().expect("counters").get(key).map_or(0, |e| e.1)
    }

    fn enter(&self, method: &Method, path: &str, delta: isize) {
        let prefix: String = path.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
        let mut map = self.in_flight.lock().expect("counters");
        let e = map.entry(format!("{method} {prefix}")).or_default();
        e.0 = e.0.saturating_add_signed(delta);
        e.1 = e.1.max(e.0);
    }

    /// Requests matching `key` beyond the first `n` hang until the node is
    /// stopped: a deterministic point at which to kill it mid-work.
    pub fn hang_after(&self, key: &str, n: usize) {
        *self.hang_after.lock().expect("counters") = Some((key.to_owned(), n));
    }

    fn hit(&self, method: &Method, path: &str, suffix: &str) -> bool {
        let prefix: String = path.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
        let key = format!("{method} {prefix}{suffix}");
        let mut map = self.map.lock().expect("counters");
        let n = map.entry(key.clone()).or_default();
        *n += 1;
        let count = *n;
        drop(map);
        matches!(&*self.hang_after.lock().expect("counters"), Some((k, limit)) if *k == key && count > *limit)
    }
}

async fn count(State(c): State<Arc<Counters>>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    if c.hit(&method, &path, "") {
        std::future::pending::<()>().await;
    }
    c.enter(&method, &path, 1);
    // In flight until the body is sent (or dropped), not just its head.
    let guard = InFlight(Arc::clone(&c), method.clone(), path.clone());
    let resp = next.run(req).await;
    c.hit(&method, &path, " done");
    // A body of known size is sent at once (and keeps its framing).
    if axum::body::HttpBody::size_hint(resp.body()).exact().is_some() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let body = body.into_data_stream().map(move |x| {
        let _held = &guard;
        x
    });
    Response::from_parts(parts, Body::from_stream(body))
}

struct InFlight(Arc<Counters>, Method, String);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.enter(&self.1, &self.2, -1);
    }
}

/// Options of a [`TestNode`].
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// Node id; a default is derived from the port.
    pub node_id: Option<String>,
    /// Peer addresses.
    pub peers: Vec<String>,
    /// Origin URL templates.
    pub origins: Vec<String>,
    /// Upstream registry origins, tried after the URL-template ones.
    pub registries: Vec<cairn_cluster::upstream::UpstreamConfig>,
    /// Peer timeout.
    pub peer_timeout: Duration,
    /// Health interval.
    pub health_interval: Duration,
    /// Run the health loop.
    pub health_loop: bool,
    /// Remote transfers at once.
    pub max_concurrent_fetches: usize,
    /// Use origins.
    pub enable_cdn_fallback: bool,
    /// Bytes per second sent to peers.
    pub egress_limit: Option<u64>,
    /// One origin fetch per cluster (owner election).
    pub elect_owner: bool,
    /// Every origin's own timeout.
    pub origin_timeout: Option<Duration>,
    /// Every origin's extra tries.
    pub origin_retries: Option<u32>,
    /// Also serve the OCI registry `/v2` (with the mirror) on the same listener.
    pub v2: bool,
    /// The registry's settings (upload TTL and session caps) when `v2` is on.
    pub registry: cairn_store::oci::RegistryOptions,
    /// Cluster settings beyond the above (limits), applied last.
    pub tune: Option<fn(&mut ClusterConfig)>,
    /// Longest a request body may send nothing.
    pub body_timeout: Duration,
    /// When peers are asked for a tag while registry origins are configured.
    pub peer_tags: cairn_cluster::mirror::PeerTags,
}

impl Default for NodeSpec {
    fn default() -> Self {
        NodeSpec {
            node_id: None,
            peers: Vec::new(),
            origins: Vec::new(),
            registries: Vec::new(),
            peer_timeout: Duration::from_secs(2),
            health_interval: Duration::from_secs(30),
            health_loop: false,
            max_concurrent_fetches: 8,
            enable_cdn_fallback: true,
            egress_limit: None,
            elect_owner: true,
            origin_timeout: None,
            origin_retries: None,
            v2: false,
            registry: cairn_store::oci::RegistryOptions::default(),
            tune: None,
            body_timeout: Duration::from_secs(30),
            peer_tags: cairn_cluster::mirror::PeerTags::default(),
        }
    }
}

/// A real Cairn node in this process, with its own temp data dir.
pub struct TestNode {
    server: Server,
    dir: tempfile::TempDir,
    /// The node's store (the same data dir, for direct checks).
    pub store: Store,
    /// Requests the node received.
    pub counters: Arc<Counters>,
    /// The node's state (cluster, peers).
    pub state: Arc<AppState>,
    spec: NodeSpec,
}

impl TestNode {
    /// Starts a node on a fresh port.
    pub fn start(spec: NodeSpec) -> TestNode {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        TestNode::start_on(l, spec, tempfile::tempdir().expect("tempdir"))
    }

    /// Starts a node on a bound listener and data dir.
    pub fn start_on(listener: std::net::TcpListener, spec: NodeSpec, dir: tempfile::TempDir) -> TestNode {
        let addr = listener.local_addr().expect("addr");
        let store = Store::open_with(dir.path(), StoreOptions { fsync: false, ..Default::default() }).expect("store");
        let mut cfg = ClusterConfig {
            node_id: spec.node_id.clone().unwrap_or_else(|| format!("node-{}", addr.port())),
            peers: spec.peers.clone(),
            peer_timeout: spec.peer_timeout,
            health_interval: spec.health_interval,
            enable_cdn_fallback: spec.enable_cdn_fallback,
            origins: spec
                .origins
                .iter()
                .map(|o| {
                    let mut o = Origin::http(o).expect("origin");
                    if let Some(t) = spec.origin_timeout {
                        o = o.with_timeout(t);
                    }
                    if let Some(n) = spec.origin_retries {
                        o = o.with_retries(n);
                    }
                    o
                })
                .chain(spec.registries.iter().map(|r| Origin::registry(r.clone()).expect("registry origin")))
                .collect(),
            max_concurrent_fetches: spec.max_concurrent_fetches,
            egress_limit: spec.egress_limit,
            elect_owner: spec.elect_owner,
            body_timeout: spec.body_timeout,
            peer_tags: spec.peer_tags,
            ..ClusterConfig::default()
        };
        if let Some(tune) = spec.tune {
            tune(&mut cfg);
        }
        let registry =
            spec.v2.then(|| cairn_store::oci::Registry::new(store.clone(), spec.registry.clone()).expect("registry"));
        let state = AppState::with_registry(store.clone(), cfg, &format!(":{}", addr.port()), registry).expect("state");
        let counters = Arc::new(Counters::default());
        let app =
            cairn_http::app(Arc::clone(&state)).layer(middleware::from_fn_with_state(Arc::clone(&counters), count));
        let server = Server::spawn(listener, app);
        if spec.health_loop {
            server.enter(|| state.cluster.spawn_health_loop());
        }
        // As `cairn serve`: expired upload sessions go on a timer (stops with the runtime).
        if let Some(reg) = state.registry.clone() {
            server.enter(|| cairn_http::v2::spawn_upload_sweeper(reg));
        }
        TestNode { server, dir, store, counters, state, spec }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        self.server.addr()
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The data dir.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Kills the node and its connections (its data dir stays).
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Starts the node again on a new port over the same data dir.
    pub fn restart(self) -> TestNode {
        let TestNode { mut server, dir, spec, .. } = self;
        server.stop();
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        TestNode::start_on(l, spec, dir)
    }

    /// Stores bytes directly in the node's store.
    pub fn put(&self, bytes: &[u8]) -> Digest {
        self.store.put_reader(bytes, None).expect("put").digest
    }
}

/// Starts `n` nodes, each listing all the others as peers.
pub fn start_cluster(n: usize, spec: NodeSpec) -> Vec<TestNode> {
    let ls: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    let addrs: Vec<String> = ls.iter().map(|l| l.local_addr().expect("addr").to_string()).collect();
    ls.into_iter()
        .enumerate()
        .map(|(i, l)| {
            let mut s = spec.clone();
            s.peers = addrs.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, a)| a.clone()).collect();
            s.peers.extend(spec.peers.iter().cloned());
            TestNode::start_on(l, s, tempfile::tempdir().expect("tempdir"))
        })
        .collect()
}

/// How a [`TestOrigin`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OriginMode {
    /// The right bytes.
    Good,
    /// Same length, one byte flipped.
    WrongBytes,
    /// `403 Forbidden` for every blob.
    Refuse,
    /// The right bytes, chunked, with no `Content-Length`.
    NoLength,
}

struct OriginState {
    blobs: HashMap<Digest, Bytes>,
    mode: OriginMode,
    hits: AtomicUsize,
}

/// An HTTP origin serving `/blobs/{digest}` and counting requests.
pub struct TestOrigin {
    server: Server,
    state: Arc<OriginState>,
    scheme: &'static str,
}

impl TestOrigin {
    /// An origin holding `blobs`.
    pub fn start(blobs: &[Vec<u8>], mode: OriginMode) -> TestOrigin {
        let state = Arc::new(OriginState {
            blobs: blobs.iter().map(|b| (Digest::of(b), Bytes::from(b.clone()))).collect(),
            mode,
            hits: AtomicUsize::new(0),
        });
        let app = Router::new().route("/blobs/{digest}", get(origin_get)).with_state(Arc::clone(&state));
        TestOrigin { server: Server::start(app), state, scheme: "http" }
    }

    /// An origin holding `blobs`, over HTTPS with `tls`.
    pub fn start_https(blobs: &[Vec<u8>], tls: Arc<cairn_http::tls::ServerTls>) -> TestOrigin {
        let state = Arc::new(OriginState {
            blobs: blobs.iter().map(|b| (Digest::of(b), Bytes::from(b.clone()))).collect(),
            mode: OriginMode::Good,
            hits: AtomicUsize::new(0),
        });
        let app = Router::new().route("/blobs/{digest}", get(origin_get)).with_state(Arc::clone(&state));
        TestOrigin { server: Server::start_tls(app, tls), state, scheme: "https" }
    }

    /// The URL template for a node's config.
    pub fn template(&self) -> String {
        format!("{}://{}/blobs/{{digest}}", self.scheme, self.server.addr())
    }

    /// Requests received.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

async fn origin_get(State(s): State<Arc<OriginState>>, Path(d): Path<String>) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    if s.mode == OriginMode::Refuse {
        return StatusCode::FORBIDDEN.into_response();
    }
    let Some(b) = Digest::parse(&d).ok().and_then(|d| s.blobs.get(&d).cloned()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let b = match s.mode {
        OriginMode::Good | OriginMode::Refuse | OriginMode::NoLength => b,
        OriginMode::WrongBytes => flip(&b),
    };
    // Chunked like a real large download.
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        b.chunks(256 << 10).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let mut resp = Body::from_stream(futures_util::stream::iter(chunks)).into_response();
    if s.mode != OriginMode::NoLength {
        resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(b.len()));
    }
    resp
}

fn flip(b: &Bytes) -> Bytes {
    let mut v = b.to_vec();
    if let Some(x) = v.last_mut() {
        *x ^= 0xff;
    }
    Bytes::from(v)
}

/// How a [`HostilePeer`] misbehaves when asked for a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hostility {
    /// Right length, wrong bytes.
    WrongBytes,
    /// Declares the full length, sends half, ends the response.
    Truncated,
    /// Never answers any request (health included).
    Hang,
    /// Sends the headers and half the blob, then nothing, forever.
    StallMidStream,
    /// Sends half the blob, then the connection breaks.
    DieMidStream,
    /// Answers `/v1/manifests` and `/v1/health` with malformed JSON.
    BadJson,
    /// Serves the blobs correctly (for manifests tests).
    Honest,
    /// Answers manifest and blob GETs with a 500 HTML page holding
    /// [`SECRET`], which must never reach this node's callers.
    ErrorPage,
    /// Declares the right length and sends one byte every 20 ms: never
    /// idle long enough to look stalled.
    Trickle,
    /// Declares 1 TiB on HEAD and GET and sends zeros as fast as it can.
    HugeLength,
    /// Serves blobs correctly, each GET after a 50 ms pause.
    Slow,
    /// Answers `/v1/manifests` with an endless JSON array (no length).
    HugeListing,
}

/// What a [`Hostility::HugeLength`] peer declares: 1 TiB.
pub const HUGE_LENGTH: u64 = 1 << 40;

/// The string an [`Hostility::ErrorPage`] peer puts in its error pages.
pub const SECRET: &str = "internal-secret-4f9a1c";

struct HostileState {
    mode: Hostility,
    blobs: HashMap<Digest, Bytes>,
    manifests: HashMap<String, Vec<u8>>,
    gets: AtomicUsize,
    listing_bytes: AtomicUsize,
}

/// A peer that claims to hold blobs and misbehaves when asked for them.
pub struct HostilePeer {
    server: Server,
    state: Arc<HostileState>,
}

impl HostilePeer {
    /// A hostile peer claiming `blobs` and serving `manifests` (ref file -> bytes).
    pub fn start(mode: Hostility, blobs: &[Vec<u8>], manifests: &[(&str, Vec<u8>)]) -> HostilePeer {
        let state = Arc::new(HostileState {
            mode,
            blobs: blobs.iter().map(|b| (Digest::of(b), Bytes::from(b.clone()))).collect(),
            manifests: manifests.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            gets: AtomicUsize::new(0),
            listing_bytes: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/v1/health", get(hostile_health))
            .route("/v1/manifests", get(hostile_list))
            .route("/v1/manifests/{rf}", get(hostile_manifest))
            .route("/v1/blobs/{digest}", get(hostile_get).head(hostile_head))
            .with_state(Arc::clone(&state));
        HostilePeer { server: Server::start(app), state }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        self.server.addr()
    }

    /// Blob GETs received.
    pub fn gets(&self) -> usize {
        self.state.gets.load(Ordering::SeqCst)
    }

    /// Bytes of manifest listings handed to the connection so far.
    pub fn listing_bytes(&self) -> usize {
        self.state.listing_bytes.load(Ordering::SeqCst)
    }
}

async fn hang_if(s: &HostileState) {
    if s.mode == Hostility::Hang {
        std::future::pending::<()>().await;
    }
}

async fn hostile_health(State(s): State<Arc<HostileState>>) -> Response {
    hang_if(&s).await;
    if s.mode == Hostility::BadJson {
        return (StatusCode::OK, "{\"status\": 7").into_response();
    }
    axum::Json(serde_json::json!({"status": "ok", "node_id": "hostile", "time": "2024-01-01T00:00:00Z"}))
        .into_response()
}

async fn hostile_list(State(s): State<Arc<HostileState>>) -> Response {
    hang_if(&s).await;
    if s.mode == Hostility::BadJson {
        return (StatusCode::OK, "[{\"name\": \"x\", \"ref_file\": 12}]").into_response();
    }
    if s.mode == Hostility::HugeListing {
        let entry = r#"{"name":"m","ref_file":"m-000000000000.json","blob_count":0,"node_id":"hostile"},"#;
        let chunk = Bytes::from(format!("[{}", entry.repeat(1000)));
        let more = Bytes::from(entry.repeat(1000));
        let first = futures_util::stream::once(async move { chunk });
        let body = first.chain(futures_util::stream::repeat(more)).map(move |c| {
            s.listing_bytes.fetch_add(c.len(), Ordering::SeqCst);
            Ok::<_, std::io::Error>(c)
        });
        return Body::from_stream(body).into_response();
    }
    let list: Vec<serde_json::Value> = s
        .manifests
        .keys()
        .map(|k| serde_json::json!({"name": "m", "ref_file": k, "blob_count": 0, "node_id": "hostile"}))
        .collect();
    axum::Json(list).into_response()
}

fn error_page() -> Response {
    let page = format!("<html><body><h1>500</h1><pre>token={SECRET}</pre></body></html>");
    (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/html")], page).into_response()
}

async fn hostile_manifest(State(s): State<Arc<HostileState>>, Path(rf): Path<String>) -> Response {
    hang_if(&s).await;
    if s.mode == Hostility::ErrorPage {
        return error_page();
    }
    match s.manifests.get(&rf) {
        Some(b) => (StatusCode::OK, b.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn hostile_head(State(s): State<Arc<HostileState>>, Path(d): Path<String>) -> Response {
    hang_if(&s).await;
    match Digest::parse(&d).ok().and_then(|d| s.blobs.get(&d)) {
        Some(b) => {
            let mut r = StatusCode::OK.into_response();
            let len = if s.mode == Hostility::HugeLength { HUGE_LENGTH } else { b.len() as u64 };
            r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            r
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn hostile_get(State(s): State<Arc<HostileState>>, Path(d): Path<String>) -> Response {
    s.gets.fetch_add(1, Ordering::SeqCst);
    hang_if(&s).await;
    let Some(b) = Digest::parse(&d).ok().and_then(|d| s.blobs.get(&d).cloned()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if s.mode == Hostility::ErrorPage {
        return error_page();
    }
    if s.mode == Hostility::Slow {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut len = b.len() as u64;
    let first = b.slice(..b.len() / 2);
    let body = match s.mode {
        Hostility::Trickle => {
            let bytes: Vec<u8> = b.to_vec();
            let s = futures_util::stream::iter(bytes).then(|x| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, std::io::Error>(Bytes::from(vec![x]))
            });
            Body::from_stream(s)
        }
        Hostility::HugeLength => {
            len = HUGE_LENGTH;
            let zeros = Bytes::from(vec![0u8; 64 << 10]);
            Body::from_stream(futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(zeros.clone())))
        }
        Hostility::WrongBytes => Body::from(flip(&b)),
        Hostility::Honest
        | Hostility::BadJson
        | Hostility::Hang
        | Hostility::ErrorPage
        | Hostility::Slow
        | Hostility::HugeListing => Body::from(b),
        Hostility::Truncated => Body::from(first),
        Hostility::StallMidStream => {
            let s = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) })
                .chain(futures_util::stream::pending());
            Body::from_stream(s)
        }
        Hostility::DieMidStream => {
            let s = futures_util::stream::iter(vec![
                Ok(first),
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "peer died")),
            ]);
            Body::from_stream(s)
        }
    };
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

use futures_util::StreamExt as _;
pub mod netns;
pub mod paced;
pub mod tls;
