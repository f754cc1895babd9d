//! `POST /v1/replicate/{digest}?from=NODE&pusher=NODE`: a holder of a
//! pushed blob asks this node to hold a copy too (`replicas`, see
//! [`cairn_cluster::replicate`]). Answered 200 `{"status":"held"}` when this
//! node holds it pinned now, 202 `{"status":"queued"}` when it queued the
//! pull from `from`.
//!
//! Classified as a pull (it only ever causes a verified pull from a member
//! that has the blob), so it works under the default access rules. With a
//! cluster secret the request must carry a valid membership proof: the
//! proven node id is the node pulled from, whatever the query says.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use cairn_cluster::membership::PEER_HEADER;
use cairn_cluster::peer::ReplicaAnswer;

use super::DigestPath;
use super::wire::{ReplicateAnswer, ReplicateQuery};
use crate::error::ApiError;
use crate::state::AppState;

/// Longest node id taken from a request.
const MAX_NODE_ID: usize = 255;

fn node_id<'a>(what: &str, s: &'a str) -> Result<&'a str, ApiError> {
    if s.is_empty() || s.len() > MAX_NODE_ID || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::BadRequest(format!(
            "{what} {s:?} is not a node id (1 to {MAX_NODE_ID} characters, no spaces or control characters)"
        )));
    }
    Ok(s)
}

/// The handler.
pub(super) async fn replicate(
    State(s): State<Arc<AppState>>,
    DigestPath(d): DigestPath,
    uri: Uri,
    headers: HeaderMap,
    q: Result<Query<ReplicateQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::BadRequest(format!("{}; use ?from=NODE_ID&pusher=NODE_ID", e.body_text())))?;
    let pusher = node_id("pusher", &q.pusher)?;
    let from = match &s.cluster.config().cluster_secret {
        Some(secret) => {
            let refused = |msg: String| ApiError::Unauthorized {
                realm: crate::auth::DEFAULT_REALM.to_owned(),
                msg: format!("{msg}; only nodes of this cluster (with its cluster secret) may ask for replicas"),
            };
            let h = headers
                .get(PEER_HEADER)
                .ok_or_else(|| refused("a replication request needs a membership proof (X-Cairn-Peer)".into()))?;
            let h = h.to_str().map_err(|_| refused("the X-Cairn-Peer header is not text".into()))?;
            let path = uri.path_and_query().map_or_else(|| uri.path(), |pq| pq.as_str());
            let proven = secret.check_request(h, "POST", path).map_err(|e| refused(e.to_string()))?;
            if q.from.as_deref().is_some_and(|f| f != proven) {
                return Err(ApiError::BadRequest(format!(
                    "from={:?} is not the node that proved membership ({proven:?})",
                    q.from.unwrap_or_default()
                )));
            }
            proven
        }
        None => q.from.clone().ok_or_else(|| ApiError::BadRequest("missing from=NODE_ID".into()))?,
    };
    let from = node_id("from", &from)?;
    let a = s.replicator.accept(d, from, pusher).await?;
    let status = match a {
        ReplicaAnswer::Held => StatusCode::OK,
        ReplicaAnswer::Queued => StatusCode::ACCEPTED,
    };
    Ok((status, Json(ReplicateAnswer { status: a })).into_response())
}
