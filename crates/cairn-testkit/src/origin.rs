//! A test origin serving `/blobs/{digest}`, counting requests.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use cairn_store::Digest;

use crate::server::Server;

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

pub(crate) fn flip(b: &Bytes) -> Bytes {
    let mut v = b.to_vec();
    if let Some(x) = v.last_mut() {
        *x ^= 0xff;
    }
    Bytes::from(v)
}
