//! The OCI distribution API (`/v2`, distribution-spec v1.1) over the store.
//!
//! Repository names contain `/`, so one catch-all route hands the path to
//! [`route::parse`], and [`dispatch`] is the route table: (method, target)
//! -> handler. Handlers parse their input, call one [`Registry`] function on
//! a blocking thread, and shape the answer; every error goes through
//! [`errors::V2Error`].

pub mod blobs;
pub mod errors;
pub mod lists;
pub mod manifests;
pub mod range;
pub mod remote;
pub mod route;
pub mod uploads;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use cairn_store::Digest;
use cairn_store::oci::{OciError, Registry};

pub use errors::V2Error;
pub use remote::{RemoteBody, RemoteError, RemoteSource};
use route::Target;

/// Shared state of the /v2 router.
#[derive(Clone)]
pub struct V2State {
    /// The registry on the local store.
    pub registry: Registry,
    /// Consulted on a blob or manifest-by-digest miss (the mirror); `None`: a miss is a 404.
    pub remote: Option<Arc<dyn RemoteSource>>,
    /// Longest a request body may send nothing (see [`crate::body`]).
    pub body_timeout: std::time::Duration,
}

impl V2State {
    /// State with no remote source.
    pub fn new(registry: Registry) -> Self {
        V2State { registry, remote: None, body_timeout: crate::body::DEFAULT_BODY_TIMEOUT }
    }
}

/// The /v2 router.
pub fn router(state: V2State) -> Router {
    Router::new()
        .route("/v2", get(base))
        .route("/v2/", get(base))
        .route("/v2/_catalog", get(lists::catalog))
        .route("/v2/{*path}", any(dispatch))
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::map_response(api_version))
        .with_state(state)
}

/// The route table for `/v2/<name>/...`.
async fn dispatch(State(st): State<V2State>, req: Request) -> Response {
    // Taken apart rather than extracted: extractors would copy the headers.
    let (parts, body) = req.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
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
        (Method::POST, Target::Uploads) => uploads::start(st, repo, q(), body).await,
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

async fn base() -> Response {
    resp(StatusCode::OK, vec![(header::CONTENT_TYPE, "application/json".into())], Body::from("{}"))
}

async fn api_version(mut r: Response) -> Response {
    r.headers_mut().insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    r
}

/// Runs a registry call on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OciError> + Send + 'static,
) -> Result<T, V2Error> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(V2Error::from),
        Err(e) => Err(V2Error::new(&errors::UNKNOWN, format!("registry worker failed: {e}"))),
    }
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
