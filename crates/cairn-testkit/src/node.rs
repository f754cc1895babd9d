//! Real Cairn nodes in this process, wired as peers.

use std::sync::Arc;
use std::time::Duration;

use axum::middleware;
use cairn_cluster::{ClusterConfig, Origin};
use cairn_http::AppState;
use cairn_store::{Digest, Store, StoreOptions};

use crate::server::count;
use crate::server::{Counters, Server};

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
    /// The bounded cache's limits, with the evictor running as in `cairn serve`.
    pub cache: Option<cairn_store::cache::Watermarks>,
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
            cache: None,
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
        if let Some(w) = spec.cache {
            store.enable_cache(w).expect("enable cache");
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
        if state.replicator.replicas() > 1 {
            server.enter(|| state.spawn_replicator());
        }
        if spec.cache.is_some() {
            let st = Arc::clone(&state);
            server.enter(|| cairn_http::evictor::spawn_evictor(st, cairn_http::evictor::EVICT_INTERVAL, |_| {}));
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
