//! The one place that decides HTTP status codes: lower-layer errors in,
//! status + JSON body `{"error": "..."}` out.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_cluster::ClusterError;
use cairn_store::{Digest, DigestError, NameError, StoreError};

/// An error answered by the API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// A malformed digest in the path.
    #[error("malformed digest {input:?}: {source}")]
    BadDigest {
        /// The path segment as received.
        input: String,
        /// Why it is not a digest.
        source: DigestError,
    },
    /// An unsafe or malformed ref file name in the path.
    #[error("unsafe or malformed ref file {input:?}: {source}")]
    BadName {
        /// The path segment as received (escaped when shown).
        input: String,
        /// Why it was refused.
        source: NameError,
    },
    /// Any other malformed request (query, path encoding, headers).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A request body over the limit.
    #[error("{what} is over the {limit} byte limit")]
    TooLarge {
        /// What was sent.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// A range outside the blob.
    #[error("range {range:?} is outside blob {digest} of {size} bytes")]
    RangeNotSatisfiable {
        /// The blob.
        digest: Digest,
        /// The Range header.
        range: String,
        /// The blob's size.
        size: u64,
    },
    /// A method the path does not support.
    #[error("method {0} is not allowed on this path")]
    MethodNotAllowed(String),
    /// A path that is no endpoint of this node.
    #[error("no endpoint at {0}; the node serves /v1/... (see the README's Node API) and /v2/...")]
    NoEndpoint(String),
    /// A tag this node neither holds nor has a fresh upstream answer for.
    #[error("this node has no tag {repo}:{tag} (nor a fresh cached upstream answer for it)")]
    UnknownTag {
        /// The repository.
        repo: String,
        /// The tag.
        tag: String,
    },
    /// No or wrong credentials (401 with a Basic challenge).
    #[error("{msg}")]
    Unauthorized {
        /// The realm of the challenge.
        realm: String,
        /// What was missing or wrong, and what to do.
        msg: String,
    },
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// A request body that went silent (408) or was cut (400).
    #[error("{what}: {source}")]
    Body {
        /// The request, e.g. `upload of blob <digest>`.
        what: String,
        /// What happened to the body.
        source: crate::body::BodyError,
    },
    /// A store error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A cluster error.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A replication request this node does not take.
    #[error(transparent)]
    Replicate(#[from] cairn_cluster::replicate::Refused),
    /// A swarm request refused (`/v1/swarm`).
    #[error(transparent)]
    Swarm(#[from] cairn_cluster::swarm_node::Refused),
}

fn refused_status(e: &cairn_cluster::replicate::Refused) -> StatusCode {
    use cairn_cluster::replicate::Refused;
    match e {
        Refused::Off | Refused::NotAHolder { .. } => StatusCode::CONFLICT,
        Refused::UnknownPeer(_) => StatusCode::FORBIDDEN,
        Refused::NotOnHolder { .. } => StatusCode::NOT_FOUND,
        Refused::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        Refused::Cluster(c) => cluster_status(c),
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn swarm_status(e: &cairn_cluster::swarm_node::Refused) -> StatusCode {
    use cairn_cluster::swarm_node::Refused;
    match e {
        Refused::NotOwner(_) => StatusCode::CONFLICT,
        Refused::Starting(_) | Refused::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        Refused::NotSwarming(_) | Refused::NoPiece { .. } => StatusCode::NOT_FOUND,
        Refused::Declined(_) => StatusCode::TOO_MANY_REQUESTS,
        Refused::Bad(_) => StatusCode::BAD_REQUEST,
        Refused::Cluster(c) => cluster_status(c),
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn store_status(e: &StoreError) -> StatusCode {
    match e {
        StoreError::MissingBlobs { .. } | StoreError::RefConflict(_) => StatusCode::CONFLICT,
        StoreError::Range { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        StoreError::ReadOnly(_) | StoreError::Locked(_) => StatusCode::SERVICE_UNAVAILABLE,
        StoreError::CacheFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
        e if e.is_not_found() => StatusCode::NOT_FOUND,
        e if e.is_bad_input() => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The status of a cluster error, for `/v1` and for `/v2`'s remote
/// failures alike (see [`crate::v2::errors::remote_status`]).
pub(crate) fn cluster_status(e: &ClusterError) -> StatusCode {
    match e {
        ClusterError::Store(s) => store_status(s),
        ClusterError::Shared(e) => cluster_status(e),
        ClusterError::NotFound { .. } => StatusCode::NOT_FOUND,
        ClusterError::UploadCut { .. } | ClusterError::PeerRefused { .. } | ClusterError::TooManyObjects { .. } => {
            StatusCode::BAD_REQUEST
        }
        ClusterError::Task(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ClusterError::PeerTimeout { .. } | ClusterError::Stalled { .. } => StatusCode::GATEWAY_TIMEOUT,
        ClusterError::PeerStatus { status: 404, .. } => StatusCode::NOT_FOUND,
        ClusterError::TooSlow { .. } => StatusCode::GATEWAY_TIMEOUT,
        e if e.is_disk_full() => StatusCode::INSUFFICIENT_STORAGE,
        ClusterError::LocalWrite { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        // The peer's manifest is fine; it clashes with a local ref file.
        ClusterError::PeerManifest { source: StoreError::RefConflict(_), .. } => StatusCode::CONFLICT,
        _ => StatusCode::BAD_GATEWAY,
    }
}

impl ApiError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadDigest { .. } | ApiError::BadName { .. } | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnknownTag { .. } | ApiError::NoEndpoint(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Body { source: crate::body::BodyError::Idle { .. }, .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Body { source: crate::body::BodyError::TooLarge { .. }, .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Body { .. } => StatusCode::BAD_REQUEST,
            ApiError::Store(e) => store_status(e),
            ApiError::Cluster(e) => cluster_status(e),
            ApiError::Replicate(e) => refused_status(e),
            ApiError::Swarm(e) => swarm_status(e),
        }
    }

    fn missing(&self) -> Option<&[Digest]> {
        match self {
            ApiError::Store(StoreError::MissingBlobs { missing, .. })
            | ApiError::Cluster(ClusterError::Store(StoreError::MissingBlobs { missing, .. })) => Some(missing),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let full = self.to_string();
        // Remote callers never see the node's paths; the log keeps them. A
        // 400 only echoes the caller's own input (e.g. a path in its manifest),
        // and so does an unknown endpoint (the request path).
        let echoes_caller = status == StatusCode::BAD_REQUEST || matches!(self, ApiError::NoEndpoint(_));
        let public = if echoes_caller { full.clone() } else { crate::redact::error_message(&full) };
        if status.is_server_error() {
            tracing::warn!(error = %full, "request failed");
        } else if public != full {
            tracing::info!(error = %full, "request refused");
        } else {
            tracing::debug!(error = %full, "request refused");
        }
        let mut body = serde_json::json!({ "error": public });
        if let Some(m) = self.missing() {
            body["missing"] = serde_json::json!(m);
        }
        let mut resp = (status, Json(body)).into_response();
        if let ApiError::RangeNotSatisfiable { size, .. } = self
            && let Ok(v) = format!("bytes */{size}").parse()
        {
            resp.headers_mut().insert(axum::http::header::CONTENT_RANGE, v);
        }
        if let ApiError::Unauthorized { realm, .. } = &self
            && let Ok(v) = format!("Basic realm=\"{realm}\"").parse()
        {
            resp.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::body::BodyError;
    use cairn_cluster::replicate::Refused;

    #[test]
    fn each_error_kind_maps_to_its_status() {
        let d = Digest::of(b"x");
        let cases: Vec<(ApiError, u16)> = vec![
            (ApiError::Store(StoreError::BlobNotFound(d)), 404),
            (ApiError::Store(StoreError::DigestMismatch { expected: d, actual: d }), 400),
            (ApiError::Store(StoreError::MissingBlobs { name: "n".into(), missing: vec![d] }), 409),
            (ApiError::TooLarge { what: "manifest".into(), limit: 1 }, 413),
            (ApiError::MethodNotAllowed("DELETE".into()), 405),
            (ApiError::Unauthorized { realm: "r".into(), msg: "m".into() }, 401),
            (ApiError::Forbidden("m".into()), 403),
            (ApiError::Cluster(ClusterError::NotFound { digest: d, tried: vec![] }), 404),
            (ApiError::Cluster(ClusterError::Unavailable { digest: d, tried: vec![] }), 502),
            (ApiError::Cluster(ClusterError::Store(StoreError::BlobNotFound(d))), 404),
            (ApiError::Store(StoreError::Task("panicked".into())), 500),
            (ApiError::Cluster(ClusterError::Store(StoreError::Task("cancelled".into()))), 500),
            (ApiError::UnknownTag { repo: "r".into(), tag: "t".into() }, 404),
            (
                ApiError::Body {
                    what: "w".into(),
                    source: BodyError::Idle { after: Duration::from_secs(1), received: 0 },
                },
                408,
            ),
            (ApiError::Body { what: "w".into(), source: BodyError::Cut { received: 0, reason: "r".into() } }, 400),
            (ApiError::Cluster(ClusterError::TagUnavailable { repo: "r".into(), tag: "t".into(), tried: vec![] }), 502),
            (ApiError::Replicate(Refused::Off), 409),
            (ApiError::Replicate(Refused::NotAHolder { digest: d, k: 2, holders: vec![] }), 409),
            (ApiError::Replicate(Refused::UnknownPeer("x".into())), 403),
            (ApiError::Replicate(Refused::NotOnHolder { node: "x".into(), digest: d }), 404),
            (ApiError::Replicate(Refused::Busy(1)), 503),
        ];
        for (e, code) in cases {
            assert_eq!(e.status().as_u16(), code, "{e}");
        }
    }
}
