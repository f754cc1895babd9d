//! The server: shared state, the merged router, and serving with graceful
//! shutdown. New APIs (`/v2`, metrics) are merged in [`app`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use cairn_cluster::{Cluster, ClusterConfig};
use cairn_store::Store;
use cairn_store::oci::Registry;

use crate::client::Client;
use crate::v1::NodeInfo;

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
        let node_header = HeaderValue::from_str(&cfg.node_id)
            .map_err(|_| format!("node_id {:?} is not a valid HTTP header value", cfg.node_id))?;
        let info = NodeInfo {
            node_id: cfg.node_id.clone(),
            listen_addr: listen_addr.to_owned(),
            peers: cfg.peers.clone(),
            cas_base: store.root().display().to_string(),
        };
        let client = Client::new(cfg.peer_timeout);
        let cluster = Cluster::new(store, cfg, Arc::new(client));
        Ok(Arc::new(AppState { cluster, info, node_header, registry, auth: Arc::default() }))
    }

    /// The `/v2` state: the registry, with the cluster pipeline as its
    /// remote source, so a miss is fetched from peers and origins (the mirror).
    pub fn v2_state(&self) -> Option<crate::v2::V2State> {
        let registry = self.registry.clone()?;
        let remote = crate::mirror::ClusterRemote::new(self.cluster.clone());
        Some(crate::v2::V2State { registry, remote: Some(Arc::new(remote)), auth: Arc::clone(&self.auth) })
    }
}

/// Every API, merged (one `.merge` line per API), with one debug log line
/// per request. `/v2` is there when the node has a registry.
pub fn app(state: Arc<AppState>) -> Router {
    let mut app =
        Router::new().merge(crate::v1::router(Arc::clone(&state))).merge(crate::mirror::router(Arc::clone(&state)));
    if let Some(v2) = state.v2_state() {
        app = app.merge(crate::v2::router(v2));
    }
    app.fallback(no_endpoint)
        .layer(middleware::from_fn_with_state(Arc::clone(&state.auth), crate::auth::check))
        .layer(middleware::from_fn(log_request))
}

/// Any other path: a JSON 404 in the body format of the API the path is under.
async fn no_endpoint(uri: Uri) -> Response {
    let path = uri.path();
    if path == "/v2" || path.starts_with("/v2/") {
        crate::v2::unknown_path(uri).await
    } else {
        crate::ApiError::NoEndpoint(path.chars().take(200).collect()).into_response()
    }
}

async fn log_request(req: Request, next: Next) -> Response {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return next.run(req).await;
    }
    let start = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let resp = next.run(req).await;
    tracing::debug!(%method, %uri, status = resp.status().as_u16(), took = ?start.elapsed(), "request");
    resp
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and gives in-flight requests up to `grace` to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // Connect info: the auth check needs the client's address (loopback rule).
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(());
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        r = &mut server => r,
        _ = async { if rx.await.is_ok() { tokio::time::sleep(grace).await } else { std::future::pending::<()>().await } } => {
            tracing::warn!(?grace, "in-flight requests did not finish within the shutdown deadline; closing them");
            Ok(())
        }
    }
}
