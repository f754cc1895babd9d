//! The swarm's peer routes (`swarm: true`, README "Swarm"):
//!
//! - `POST /v1/swarm/{digest}/announce?node=NODE_ID`, body a
//!   [`WireAnnounce`]: the owner's tracker records the asker's bitfield and
//!   answers a [`cairn_cluster::swarm::WireAnswer`]; `409` when this node
//!   is not the owner, `503` while it opens the origin, `404` when the blob
//!   is not swarmed (fetch it whole).
//! - `GET /v1/swarm/{digest}/piece/{index}?blob_size=N&piece_size=N`: a
//!   verified piece this node holds; `404` when it does not, `503` when
//!   its upload slots are all in use, `429` when the owner passes this
//!   fresh piece to another asker first. A piece comes with the server's
//!   bitfield in `X-Cairn-Swarm-Have` (hex), so askers learn who holds
//!   what from each other as well as from the owner's tracker. A piece not
//!   taken by its send deadline (`swarm_node::send_deadline`) ends the
//!   connection.
//!
//! With a cluster secret both need a membership proof, and the proven node
//! id is the asker's, whatever `node` says.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cairn_cluster::membership::PEER_HEADER;
use cairn_cluster::swarm::{Geometry, WireAnnounce};
use cairn_cluster::swarm_node::MAX_ANNOUNCE_BYTES;
use futures_util::stream;
use serde::Deserialize;

use super::DigestPath;
use crate::conn::SendDeadline;
use crate::error::ApiError;
use crate::state::AppState;

/// Longest node id taken from a request.
const MAX_NODE_ID: usize = 255;

/// `?node=NODE_ID`.
#[derive(Debug, Deserialize)]
pub(super) struct NodeQuery {
    node: Option<String>,
}

/// `?blob_size=N&piece_size=N`.
#[derive(Debug, Deserialize)]
pub(super) struct PieceQuery {
    blob_size: u64,
    piece_size: u64,
}

/// The asker: the proven node with a cluster secret, else `claimed`.
fn asker(
    s: &AppState,
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
    claimed: Option<&str>,
) -> Result<String, ApiError> {
    let id = match &s.cluster.config().cluster_secret {
        Some(secret) => {
            let refused = |msg: String| ApiError::Unauthorized {
                realm: crate::auth::DEFAULT_REALM.to_owned(),
                msg: format!("{msg}; only nodes of this cluster (with its cluster secret) take part in its swarm"),
            };
            let h = headers
                .get(PEER_HEADER)
                .ok_or_else(|| refused("a swarm request needs a membership proof (X-Cairn-Peer)".into()))?;
            let h = h.to_str().map_err(|_| refused("the X-Cairn-Peer header is not text".into()))?;
            let path = uri.path_and_query().map_or_else(|| uri.path(), |pq| pq.as_str());
            let proven = secret.check_request(h, method.as_str(), path).map_err(|e| refused(e.to_string()))?;
            if claimed.is_some_and(|c| c != proven) {
                return Err(ApiError::BadRequest(format!(
                    "node={:?} is not the node that proved membership ({proven:?})",
                    claimed.unwrap_or_default()
                )));
            }
            proven
        }
        None => claimed.map(str::to_owned).unwrap_or_default(),
    };
    if id.is_empty() || id.len() > MAX_NODE_ID || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::BadRequest(format!(
            "node {id:?} is not a node id (1 to {MAX_NODE_ID} characters, no spaces or control characters); use ?node=NODE_ID"
        )));
    }
    Ok(id)
}

/// `POST /v1/swarm/{digest}/announce`.
pub(super) async fn announce(
    State(s): State<Arc<AppState>>,
    DigestPath(d): DigestPath,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    q: Result<Query<NodeQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(format!("{}; use ?node=NODE_ID", e.body_text())))?;
    let node = asker(&s, &headers, &method, &uri, q.node.as_deref())?;
    let bytes = super::read_limited(
        body,
        MAX_ANNOUNCE_BYTES as u64,
        s.cluster.config().body_timeout,
        &format!("swarm announcement for {d}"),
    )
    .await?;
    let ann: WireAnnounce = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadRequest(format!("the swarm announcement for {d} is not valid JSON of its form: {e}"))
    })?;
    let answer = s.cluster.swarm_announce(d, &node, &ann).await?;
    let json =
        serde_json::to_vec(&answer).map_err(|e| ApiError::Cluster(cairn_cluster::ClusterError::Task(e.to_string())))?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response())
}

/// `GET /v1/swarm/{digest}/piece/{index}`.
pub(super) async fn piece(
    State(s): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    q: Result<Query<PieceQuery>, axum::extract::rejection::QueryRejection>,
    cut: Option<Extension<SendDeadline>>,
) -> Result<Response, ApiError> {
    let Path((d, index)) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let d = cairn_store::Digest::parse(&d).map_err(|source| ApiError::BadDigest { input: d, source })?;
    let index: u32 = index
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("piece index {index:?} is not a number from 0 to {}", u32::MAX)))?;
    let Query(q) = q.map_err(|e| ApiError::BadRequest(format!("{}; use ?blob_size=N&piece_size=N", e.body_text())))?;
    if s.cluster.config().cluster_secret.is_some() {
        asker(&s, &headers, &method, &uri, None)?;
    }
    let geo = Geometry::new(q.blob_size, q.piece_size).map_err(cairn_cluster::swarm_node::Refused::from)?;
    let served = s.cluster.swarm_piece(d, index, geo).await?;
    let (bytes, slot) = (served.bytes, served.slot);
    let len = bytes.len();
    let deadline = slot.deadline();
    // An asker that stops reading must not keep the slot: the connection
    // layer closes the connection at the deadline (while the socket is full
    // the body is not polled), and a body still polled after it ends with
    // an error, which makes hyper close it too.
    if let Some(Extension(cut)) = cut {
        cut.set(deadline);
    }
    let body = piece_body(bytes, slot, d, index);
    let body = s.cluster.egress(body);
    let mut resp = Body::from_stream(body).into_response();
    *resp.status_mut() = StatusCode::OK;
    let hs = resp.headers_mut();
    hs.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    hs.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    // Hex digits only: always a valid header value.
    if let Ok(v) = HeaderValue::from_str(&served.have.to_hex()) {
        hs.insert(cairn_cluster::peer::SWARM_HAVE_HEADER, v);
    }
    Ok(resp)
}

/// Bytes handed to hyper at once: its write buffer holds a few, so the
/// slot is held until most of the piece is in the socket.
const PIECE_CHUNK: usize = 256 << 10;

/// The piece in chunks, holding `slot` until the last one is taken, and an
/// error in place of the next chunk once the slot's deadline has passed.
fn piece_body(
    bytes: Bytes,
    slot: cairn_cluster::swarm_node::UploadSlot,
    d: cairn_store::Digest,
    index: u32,
) -> cairn_cluster::peer::ByteStream {
    let deadline = tokio::time::Instant::from_std(slot.deadline());
    let started = std::time::Instant::now();
    Box::pin(stream::unfold((bytes, Some(slot)), move |(mut rest, slot)| async move {
        // `slot` is dropped with the state when the stream ends.
        slot.as_ref()?;
        if rest.is_empty() {
            return None;
        }
        if tokio::time::Instant::now() >= deadline {
            let e = cairn_cluster::ClusterError::Stalled {
                source_name: format!("the asker of swarm piece {index}"),
                digest: d,
                after: started.elapsed(),
            };
            return Some((Err(e), (Bytes::new(), None)));
        }
        let c = rest.split_to(rest.len().min(PIECE_CHUNK));
        Some((Ok(c), (rest, slot)))
    }))
}
