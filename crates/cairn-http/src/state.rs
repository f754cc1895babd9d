//! The state handlers reach: [`AppState`] for the whole node (`/v1`, and
//! what `/v2` is built from) and [`V2State`] for the registry, with how
//! each is built.

use std::sync::Arc;

use axum::http::HeaderValue;
use cairn_cluster::{Cluster, ClusterConfig};
use cairn_store::Store;
use cairn_store::oci::Registry;

use crate::client::Client;
use crate::mirror::{ClusterRemote, Mirrored, RemoteSource};
use crate::server::StoreProbe;
use crate::v1::wire::NodeInfo;
use crate::v2::store::{LocalRegistry, RegistryStore};

/// What every handler can reach.
pub struct AppState {
    /// The cluster (and through it the store).
    pub cluster: Cluster,
    /// `/v1/info`'s answer.
    pub info: NodeInfo,
    /// `X-Volt-Node`, prepared once.
    pub node_header: HeaderValue,
    /// The OCI registry on the same store, when this node serves `/v2`.
    pub registry: Option<Registry>,
    /// Who may do what; loopback-only until [`crate::auth::Auth::set`] installs a policy.
    pub auth: Arc<crate::auth::Auth>,
    /// `/v1/health`'s check that the store still answers.
    pub store_probe: StoreProbe,
    /// The node's metrics (`GET /metrics`); also the cluster's recorder.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Copies of pushed blobs on other nodes (`replicas`); its loops run
    /// once [`AppState::spawn_replicator`] starts them.
    pub replicator: Arc<cairn_cluster::replicate::Replicator>,
}

impl AppState {
    /// A node over `store`: builds the peer client and the cluster.
    /// `listen_addr` is shown as configured (e.g. `:7420`).
    pub fn new(store: Store, cfg: ClusterConfig, listen_addr: &str) -> Result<Arc<Self>, String> {
        AppState::with_registry(store, cfg, listen_addr, None)
    }

    /// A node that also serves `registry` on `/v2` (see [`AppState::v2_state`]).
    pub fn with_registry(
        store: Store,
        cfg: ClusterConfig,
        listen_addr: &str,
        registry: Option<Registry>,
    ) -> Result<Arc<Self>, String> {
        let client = Client::for_peers(cfg.peer_timeout);
        AppState::with_peer_client(store, cfg, listen_addr, registry, client)
    }

    /// [`AppState::with_registry`] calling peers through `client` (e.g. one
    /// over TLS). With a cluster secret, the client proves membership on
    /// every request and the auth layer accepts peers that prove theirs.
    pub fn with_peer_client(
        store: Store,
        cfg: ClusterConfig,
        listen_addr: &str,
        registry: Option<Registry>,
        mut client: Client,
    ) -> Result<Arc<Self>, String> {
        let node_header = HeaderValue::from_str(&cfg.node_id)
            .map_err(|_| format!("node_id {:?} is not a valid HTTP header value", cfg.node_id))?;
        let info = NodeInfo {
            node_id: cfg.node_id.clone(),
            listen_addr: listen_addr.to_owned(),
            peers: cfg.peers.clone(),
            cas_base: store.root().display().to_string(),
        };
        let auth = Arc::new(crate::auth::Auth::default());
        if let Some(secret) = &cfg.cluster_secret {
            client = client.with_membership(&cfg.node_id, secret.clone());
            auth.set_cluster_secret(secret.clone());
        }
        let cluster = Cluster::new(store, cfg, Arc::new(client));
        let metrics = Arc::new(crate::metrics::Metrics::new());
        cluster.set_recorder(Arc::clone(&metrics) as Arc<dyn cairn_cluster::fetch::Recorder>);
        let store_probe = StoreProbe::default();
        let replicator = cairn_cluster::replicate::Replicator::new(cluster.clone());
        Ok(Arc::new(AppState { cluster, info, node_header, registry, store_probe, auth, metrics, replicator }))
    }

    /// Starts replication's background loops (placing pushes, pulling
    /// copies, repair); idle with `replicas: 1`. Abort the task to stop them.
    pub fn spawn_replicator(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(Arc::clone(&self.replicator).run())
    }

    /// The `/v2` state: the registry, with the cluster pipeline as its
    /// remote source, so a miss is fetched from peers and origins (the mirror).
    pub fn v2_state(&self) -> Option<V2State> {
        let registry = self.registry.clone()?;
        let remote = ClusterRemote::new(self.cluster.clone());
        let cfg = self.cluster.config();
        Some(V2State {
            body_timeout: cfg.body_timeout,
            max_blob_size: cfg.max_blob_size,
            auth: Arc::clone(&self.auth),
            metrics: Arc::clone(&self.metrics),
            ..V2State::new(registry).with_remote(Arc::new(remote))
        })
    }
}

/// Shared state of the /v2 router.
#[derive(Clone)]
pub struct V2State {
    /// The registry on the local store: uploads, pushes, deletes, listings.
    pub registry: Registry,
    /// Blob and manifest reads: the local registry, or the mirror over it.
    pub reads: Arc<dyn RegistryStore>,
    /// Longest a request body may send nothing (see [`crate::body`]).
    pub body_timeout: std::time::Duration,
    /// Largest blob an upload may make (`max_blob_size`).
    pub max_blob_size: u64,
    /// Who may do what, checked by [`crate::v2::registry_app`] (the merged app checks it itself).
    pub auth: Arc<crate::auth::Auth>,
    /// The node's metrics, counted by [`crate::v2::registry_app`] (the merged app counts itself).
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl V2State {
    /// State with no remote source: a miss is a 404.
    pub fn new(registry: Registry) -> Self {
        V2State {
            reads: Arc::new(LocalRegistry::new(registry.clone())),
            registry,
            body_timeout: crate::body::DEFAULT_BODY_TIMEOUT,
            max_blob_size: cairn_cluster::fetch::DEFAULT_MAX_BLOB_SIZE,
            auth: Arc::default(),
            metrics: Arc::default(),
        }
    }

    /// This state with its registry mirrored: a miss is asked of `remote`.
    pub fn with_remote(self, remote: Arc<dyn RemoteSource>) -> Self {
        let local = LocalRegistry::new(self.registry.clone());
        V2State { reads: Arc::new(Mirrored::new(local, remote)), ..self }
    }
}
