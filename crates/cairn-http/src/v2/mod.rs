//! The OCI distribution API (`/v2`, distribution-spec v1.1) over the store.
//!
//! Repository names contain `/`, so one catch-all route hands the path to
//! [`route::parse`], and `dispatch` is the route table: (method, target)
//! -> handler. Handlers parse their input, make one call, and shape the
//! answer: reads of blobs and manifests go through [`V2State::reads`] (a
//! [`store::RegistryStore`]: the local registry, or the mirror over it, so
//! handlers do not know which), writes and listings call one [`Registry`]
//! function on a blocking thread. Every error goes through
//! [`errors::V2Error`], whose statuses `v2/errors.rs` alone decides.

pub mod blobs;
pub mod errors;
pub mod lists;
pub mod manifests;
pub mod route;
pub mod store;
pub mod uploads;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use cairn_store::Digest;
use cairn_store::oci::{OciError, Registry};

pub use crate::state::V2State;
pub use errors::V2Error;
use route::Target;

/// The /v2 router (no fallback: [`crate::app`] merges it and answers other
/// paths; a listener serving only /v2 uses [`registry_app`]).
pub fn router(state: V2State) -> Router {
    Router::new()
        .route("/v2", get(base).fallback(unsupported_method))
        .route("/v2/", get(base).fallback(unsupported_method))
        .route("/v2/_catalog", get(lists::catalog).fallback(unsupported_method))
        .route("/v2/{*path}", any(dispatch))
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::map_response(api_version))
        .with_state(state)
}

/// [`router`] for a listener that serves only /v2: every other path is an
/// OCI-style JSON 404.
pub fn registry_app(state: V2State) -> Router {
    let auth = Arc::clone(&state.auth);
    let metrics = Arc::clone(&state.metrics);
    router(state)
        .fallback(unknown_path)
        .layer(axum::middleware::from_fn_with_state(auth, crate::auth::check))
        .layer(axum::middleware::from_fn_with_state(metrics, crate::metrics::track))
}

/// A path that is no /v2 endpoint: 404 with the OCI error body.
pub async fn unknown_path(uri: Uri) -> Response {
    let path: String = uri.path().chars().take(200).collect();
    api_version(V2Error::no_endpoint(&path).into_response()).await
}

async fn unsupported_method(method: Method, uri: Uri) -> Response {
    let e = V2Error::new(&errors::UNSUPPORTED, format!("{method} is not supported on {}", uri.path()));
    api_version(e.into_response()).await
}

/// The route table for `/v2/<name>/...`.
async fn dispatch(State(st): State<V2State>, req: Request) -> Response {
    // Taken apart rather than extracted: extractors would copy the headers.
    let (parts, body) = req.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    // Present when the server runs with connect info; the per-client upload cap needs it.
    let client = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let rest = uri.path().strip_prefix("/v2/").unwrap_or_default();
    let (repo, target) = match route::parse(rest) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let q = || Query::<HashMap<String, String>>::try_from_uri(&uri).map(|q| q.0).unwrap_or_default();
    let head = method == Method::HEAD;
    let res = match (method.clone(), target) {
        (Method::GET | Method::HEAD, Target::Manifest(r)) => manifests::get(st, repo, r, &headers, head).await,
        (Method::PUT, Target::Manifest(r)) => manifests::put(st, repo, r, &headers, body).await,
        (Method::DELETE, Target::Manifest(r)) => manifests::delete(st, repo, r).await,
        (Method::GET | Method::HEAD, Target::Blob(d)) => blobs::get(st, repo, d, &headers, head).await,
        (Method::DELETE, Target::Blob(d)) => blobs::delete(st, repo, d).await,
        (Method::POST, Target::Uploads) => uploads::start(st, repo, q(), client, body).await,
        (Method::GET, Target::Upload(id)) => uploads::status(st, repo, id).await,
        (Method::PATCH, Target::Upload(id)) => uploads::patch(st, repo, id, &headers, body).await,
        (Method::PUT, Target::Upload(id)) => uploads::finish(st, repo, id, q(), &headers, body).await,
        (Method::DELETE, Target::Upload(id)) => uploads::cancel(st, repo, id).await,
        (Method::GET, Target::Tags) => lists::tags(st, repo, q()).await,
        (Method::GET, Target::Referrers(d)) => lists::referrers(st, repo, d, q()).await,
        (m, t) => Err(V2Error::new(&errors::UNSUPPORTED, format!("{m} is not supported on {t:?}"))),
    };
    res.unwrap_or_else(IntoResponse::into_response)
}

/// Sweeps expired upload sessions every [`Registry::sweep_interval`], so an
/// idle session's data goes without waiting for the next upload to start.
/// Runs until aborted.
pub fn spawn_upload_sweeper(registry: Registry) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(registry.sweep_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = registry.run(|r| r.sweep_uploads()).await {
                tracing::warn!(error = %e, "sweeping expired upload sessions failed");
            }
        }
    })
}

async fn base() -> Response {
    resp(StatusCode::OK, vec![(header::CONTENT_TYPE, "application/json".into())], Body::from("{}"))
}

async fn api_version(mut r: Response) -> Response {
    r.headers_mut().insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    r
}

/// Runs a registry call on a blocking thread ([`store::blocking`], as a /v2 error).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OciError> + Send + 'static,
) -> Result<T, V2Error> {
    Ok(store::blocking(f).await?)
}

/// A response with `headers` (values that are not valid header text are dropped).
pub(crate) fn resp(status: StatusCode, headers: Vec<(HeaderName, String)>, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    for (n, v) in headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().insert(n, v);
        }
    }
    r
}

/// A `/v2` digest: only the `sha256:<hex>` form.
pub(crate) fn oci_digest(s: &str) -> Result<Digest, V2Error> {
    if !s.contains(':') {
        return Err(V2Error::new(&errors::DIGEST_INVALID, format!("digest {s:?} must be written sha256:<64 hex>")));
    }
    Digest::parse(s).map_err(|e| OciError::from(e).into())
}

/// `Docker-Content-Digest`.
pub(crate) const DIGEST_HEADER: HeaderName = HeaderName::from_static("docker-content-digest");
/// `Docker-Upload-UUID`.
pub(crate) const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
/// `OCI-Subject`.
pub(crate) const SUBJECT_HEADER: HeaderName = HeaderName::from_static("oci-subject");
/// `OCI-Filters-Applied`.
pub(crate) const FILTERS_HEADER: HeaderName = HeaderName::from_static("oci-filters-applied");
