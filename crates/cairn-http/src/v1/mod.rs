//! The `/v1` node API (DESIGN.md section 3, plus Cairn's additions listed
//! in the README). Handlers extract typed input, call one cluster or store
//! function, and map the result; statuses come from [`crate::error`].

use std::io::Write;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Router, http::Method};
use cairn_cluster::fetch::SourceKind;
use cairn_cluster::{ClusterStats, ManifestEntry, PeerStatus, SyncReport};
use cairn_store::refs::{MAX_MANIFEST_BYTES, now_rfc3339};
use cairn_store::{Digest, RefFile, StoreError};

use crate::body::{Batches, PumpError, pump};
use crate::error::ApiError;
use crate::metrics::ServedFrom;
use crate::range;
use crate::state::AppState;

pub mod oci;
mod replicate;
mod swarm;
pub mod wire;

use wire::{
    FORWARDED_HEADER, Health, NODE_HEADER, NodeInfo, PutBlobAnswer, SKIPPED_PEERS_HEADER, SOURCE_HEADER, SyncQuery,
};

/// The `/v1` routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/blobs/{digest}", only(get(get_blob).head(head_blob).put(put_blob)))
        .route("/v1/manifests", only(get(list_manifests)))
        .route("/v1/manifests/{ref_file}", only(get(get_manifest).put(put_manifest)))
        .route("/v1/manifests/{ref_file}/sync", only(post(sync_manifest)))
        .route("/v1/health", only(get(health)))
        .route("/v1/info", only(get(info)))
        .route("/v1/peers", only(get(peers)))
        .route("/v1/cluster/manifests", only(get(cluster_manifests)))
        .route("/v1/cluster/stats", only(get(cluster_stats)))
        .route("/v1/fetch/{digest}", only(get(fetch)))
        .route("/v1/oci/tag", only(get(oci::tag)))
        .route("/v1/replicate/{digest}", only(post(replicate::replicate)))
        .route("/v1/swarm/{digest}/announce", only(post(swarm::announce)))
        .route("/v1/swarm/{digest}/piece/{index}", only(get(swarm::piece)))
        .with_state(state)
}

fn only(r: MethodRouter<Arc<AppState>>) -> MethodRouter<Arc<AppState>> {
    r.fallback(|m: Method| async move { ApiError::MethodNotAllowed(m.to_string()) })
}

/// A digest from the path, checked before anything else happens.
pub struct DigestPath(pub Digest);

impl<S: Send + Sync> FromRequestParts<S> for DigestPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(s) =
            Path::<String>::from_request_parts(parts, state).await.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        Digest::parse(&s).map(DigestPath).map_err(|source| ApiError::BadDigest { input: s, source })
    }
}

/// A ref file name from the path: one safe component, or a 400.
pub struct RefFilePath(pub RefFile);

impl<S: Send + Sync> FromRequestParts<S> for RefFilePath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(s) =
            Path::<String>::from_request_parts(parts, state).await.map_err(|e| ApiError::BadRequest(e.body_text()))?;
        RefFile::parse(&s).map(RefFilePath).map_err(|source| ApiError::BadName { input: s, source })
    }
}

async fn get_blob(
    State(s): State<Arc<AppState>>,
    DigestPath(d): DigestPath,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let size = s.cluster.local_size(d).await?.ok_or(StoreError::BlobNotFound(d))?;
    let range_header = h.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, len) = match range::parse(range_header, size) {
        range::ByteRange::Full => (StatusCode::OK, 0, size),
        range::ByteRange::Part { start, len } => (StatusCode::PARTIAL_CONTENT, start, len),
        range::ByteRange::Unsatisfiable => {
            let range = range_header.unwrap_or_default().to_owned();
            return Err(ApiError::RangeNotSatisfiable { digest: d, range, size });
        }
    };
    let (_, len, stream) = s.cluster.local_blob(d, start, Some(len)).await?;
    // This route is the peer protocol: its bytes count against egress_limit.
    let stream = s.cluster.egress(stream);
    let mut resp = blob_response(&s, Body::from_stream(stream), Some(len));
    resp.extensions_mut().insert(ServedFrom(SourceKind::Local));
    *resp.status_mut() = status;
    if status == StatusCode::PARTIAL_CONTENT {
        let cr = range::content_range(start, len, size);
        resp.headers_mut().insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&cr).map_err(|e| ApiError::BadRequest(e.to_string()))?,
        );
    }
    Ok(resp)
}

fn blob_response(s: &AppState, body: Body, len: Option<u64>) -> Response {
    let mut resp = body.into_response();
    let hs = resp.headers_mut();
    hs.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    hs.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    hs.insert(NODE_HEADER, s.node_header.clone());
    if let Some(len) = len {
        hs.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp
}

async fn head_blob(State(s): State<Arc<AppState>>, DigestPath(d): DigestPath) -> Result<Response, ApiError> {
    // One stat is cheaper than a hand-off to the blocking pool, and HEAD
    // rate is what peers' fan-out depends on.
    let size = s.cluster.store().size(&d)?;
    Ok(blob_response(&s, Body::empty(), Some(size)))
}

async fn put_blob(State(s): State<Arc<AppState>>, DigestPath(d): DigestPath, body: Body) -> Result<Response, ApiError> {
    let w = s.cluster.store().run(move |s| s.writer_expecting(&d)).await?;
    let cfg = s.cluster.config();
    let mut batches = Batches::new(body, cfg.body_timeout).limit(cfg.max_blob_size);
    let w =
        pump(&mut batches, w, |w, batch| batch.iter().try_for_each(|c| w.write_all(c))).await.map_err(|e| match e {
            PumpError::Body(source) => ApiError::Body { what: format!("upload of blob {d}"), source },
            PumpError::Sink(e) => ApiError::Store(s.cluster.store().write_error(e)),
            PumpError::Task(e) => ApiError::Cluster(cairn_cluster::ClusterError::Task(e)),
        })?;
    // A mismatch drops the temp file; nothing is stored. So does a blob
    // that does not fit under the cache's cap even after eviction.
    let out = s
        .cluster
        .store()
        .run(move |s| {
            let _room = s.reserve(&d, w.len())?;
            w.commit(Some(&d))
        })
        .await?;
    let status = if out.existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(PutBlobAnswer { digest: out.digest, size: out.size, existed: out.existed })).into_response())
}

async fn list_manifests(State(s): State<Arc<AppState>>) -> Result<Json<Vec<ManifestEntry>>, ApiError> {
    Ok(Json(s.cluster.local_manifests().await?))
}

async fn get_manifest(State(s): State<Arc<AppState>>, RefFilePath(rf): RefFilePath) -> Result<Response, ApiError> {
    let bytes = s.cluster.store().run(move |s| s.manifest_bytes(&rf)).await?;
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (header::HeaderName::from_static(NODE_HEADER), s.node_header.clone()),
    ];
    Ok((headers, bytes).into_response())
}

async fn put_manifest(
    State(s): State<Arc<AppState>>,
    RefFilePath(rf): RefFilePath,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes =
        read_limited(body, MAX_MANIFEST_BYTES, s.cluster.config().body_timeout, &format!("manifest {rf}")).await?;
    let entry = s.cluster.push_manifest(&rf, bytes).await?;
    Ok((StatusCode::CREATED, Json(entry)).into_response())
}

/// Reads a request body of at most `limit` bytes (413 beyond).
async fn read_limited(body: Body, limit: u64, idle: std::time::Duration, what: &str) -> Result<Vec<u8>, ApiError> {
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    match crate::body::read_limited(body, cap, idle).await {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(ApiError::TooLarge { what: what.to_owned(), limit }),
        Err(source) => Err(ApiError::Body { what: format!("reading {what}"), source }),
    }
}

async fn sync_manifest(
    State(s): State<Arc<AppState>>,
    RefFilePath(rf): RefFilePath,
    q: Result<Query<SyncQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SyncReport>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(format!("{}; use ?peer=HOST:PORT", e.body_text())))?;
    // Checked before any request: a sync is never a way to reach an
    // address this node was not configured to call.
    let peer = s.cluster.sync_peer(&q.peer)?;
    Ok(Json(s.cluster.sync(peer, &rf, Arc::new(|_| {})).await?))
}

async fn health(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let (status, code, reason) = match s.store_probe.check(s.cluster.store()).await {
        Ok(()) => ("ok", StatusCode::OK, None),
        Err(reason) => ("degraded", StatusCode::SERVICE_UNAVAILABLE, Some(reason)),
    };
    let h = Health {
        status: status.into(),
        node_id: s.info.node_id.clone(),
        time: now_rfc3339(),
        reason,
        instance: Some(s.cluster.instance().to_owned()),
        warnings: s.cluster.membership_warnings(),
    };
    let mut resp = (code, Json(h)).into_response();
    // The proof that this node holds the cluster secret, over the asker's nonce.
    let nonce = headers.get(cairn_cluster::membership::NONCE_HEADER).and_then(|v| v.to_str().ok());
    if let (Some(secret), Some(n)) = (&s.cluster.config().cluster_secret, nonce)
        && n.len() <= cairn_cluster::membership::MAX_NONCE
        && let Ok(v) = HeaderValue::from_str(&secret.nonce_proof(n, &s.info.node_id))
    {
        resp.headers_mut().insert(cairn_cluster::membership::NONCE_PROOF_HEADER, v);
    }
    resp
}

async fn info(
    State(s): State<Arc<AppState>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
) -> Json<NodeInfo> {
    let cas_base = crate::redact::cas_base_for(peer.map(|p| p.0.0), &s.info.cas_base);
    // Peers found by discovery are peers too.
    Json(NodeInfo { peers: s.cluster.peers().addresses(), cas_base, ..s.info.clone() })
}

async fn peers(State(s): State<Arc<AppState>>) -> Json<Vec<PeerStatus>> {
    Json(s.cluster.peers().snapshot())
}

async fn cluster_manifests(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let (all, skipped) = s.cluster.cluster_manifests_report().await?;
    let mut resp = Json(all).into_response();
    if !skipped.is_empty()
        && let Ok(v) = HeaderValue::from_str(&skipped.join(", "))
    {
        resp.headers_mut().insert(SKIPPED_PEERS_HEADER, v);
    }
    Ok(resp)
}

async fn cluster_stats(State(s): State<Arc<AppState>>) -> Result<Json<ClusterStats>, ApiError> {
    let stats = s.cluster.stats().await?;
    // With replicas: 1 the answer stays the seed's, field for field.
    let replication = (s.replicator.replicas() > 1).then(|| s.replicator.stats());
    Ok(Json(ClusterStats { replication, ..stats }))
}

async fn fetch(State(s): State<Arc<AppState>>, DigestPath(d): DigestPath, h: HeaderMap) -> Result<Response, ApiError> {
    let b = if h.contains_key(FORWARDED_HEADER) {
        let b = s.cluster.fetch_for_peer(d).await?;
        cairn_cluster::BlobBody { stream: s.cluster.egress(b.stream), ..b }
    } else {
        s.cluster.fetch(d).await?
    };
    let mut resp = blob_response(&s, Body::from_stream(b.stream), b.size);
    resp.extensions_mut().insert(ServedFrom(b.kind));
    if let Ok(v) = HeaderValue::from_str(&b.source) {
        resp.headers_mut().insert(SOURCE_HEADER, v);
    }
    Ok(resp)
}
