//! A peer that claims blobs and misbehaves when asked for them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use cairn_store::Digest;

use crate::origin::flip;
use crate::server::Server;
use futures_util::StreamExt as _;

/// How a [`HostilePeer`] misbehaves when asked for a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hostility {
    /// Right length, wrong bytes.
    WrongBytes,
    /// Declares the full length, sends half, ends the response.
    Truncated,
    /// Never answers any request (health included).
    Hang,
    /// Sends the headers and half the blob, then nothing, forever.
    StallMidStream,
    /// Sends half the blob, then the connection breaks.
    DieMidStream,
    /// Answers `/v1/manifests` and `/v1/health` with malformed JSON.
    BadJson,
    /// Serves the blobs correctly (for manifests tests).
    Honest,
    /// Answers manifest and blob GETs with a 500 HTML page holding
    /// [`SECRET`], which must never reach this node's callers.
    ErrorPage,
    /// Declares the right length and sends one byte every 20 ms: never
    /// idle long enough to look stalled.
    Trickle,
    /// Declares 1 TiB on HEAD and GET and sends zeros as fast as it can.
    HugeLength,
    /// Serves blobs correctly, each GET after a 50 ms pause.
    Slow,
    /// Answers `/v1/manifests` with an endless JSON array (no length).
    HugeListing,
}

/// What a [`Hostility::HugeLength`] peer declares: 1 TiB.
pub const HUGE_LENGTH: u64 = 1 << 40;

/// The string an [`Hostility::ErrorPage`] peer puts in its error pages.
pub const SECRET: &str = "internal-secret-4f9a1c";

struct HostileState {
    mode: Hostility,
    blobs: HashMap<Digest, Bytes>,
    manifests: HashMap<String, Vec<u8>>,
    gets: AtomicUsize,
    listing_bytes: AtomicUsize,
}

/// A peer that claims to hold blobs and misbehaves when asked for them.
pub struct HostilePeer {
    server: Server,
    state: Arc<HostileState>,
}

impl HostilePeer {
    /// A hostile peer claiming `blobs` and serving `manifests` (ref file -> bytes).
    pub fn start(mode: Hostility, blobs: &[Vec<u8>], manifests: &[(&str, Vec<u8>)]) -> HostilePeer {
        let state = Arc::new(HostileState {
            mode,
            blobs: blobs.iter().map(|b| (Digest::of(b), Bytes::from(b.clone()))).collect(),
            manifests: manifests.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            gets: AtomicUsize::new(0),
            listing_bytes: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/v1/health", get(hostile_health))
            .route("/v1/manifests", get(hostile_list))
            .route("/v1/manifests/{rf}", get(hostile_manifest))
            .route("/v1/blobs/{digest}", get(hostile_get).head(hostile_head))
            .with_state(Arc::clone(&state));
        HostilePeer { server: Server::start(app), state }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        self.server.addr()
    }

    /// Blob GETs received.
    pub fn gets(&self) -> usize {
        self.state.gets.load(Ordering::SeqCst)
    }

    /// Bytes of manifest listings handed to the connection so far.
    pub fn listing_bytes(&self) -> usize {
        self.state.listing_bytes.load(Ordering::SeqCst)
    }
}

async fn hang_if(s: &HostileState) {
    if s.mode == Hostility::Hang {
        std::future::pending::<()>().await;
    }
}

async fn hostile_health(State(s): State<Arc<HostileState>>) -> Response {
    hang_if(&s).await;
    if s.mode == Hostility::BadJson {
        return (StatusCode::OK, "{\"status\": 7").into_response();
    }
    axum::Json(serde_json::json!({"status": "ok", "node_id": "hostile", "time": "2024-01-01T00:00:00Z"}))
        .into_response()
}

async fn hostile_list(State(s): State<Arc<HostileState>>) -> Response {
    hang_if(&s).await;
    if s.mode == Hostility::BadJson {
        return (StatusCode::OK, "[{\"name\": \"x\", \"ref_file\": 12}]").into_response();
    }
    if s.mode == Hostility::HugeListing {
        let entry = r#"{"name":"m","ref_file":"m-000000000000.json","blob_count":0,"node_id":"hostile"},"#;
        let chunk = Bytes::from(format!("[{}", entry.repeat(1000)));
        let more = Bytes::from(entry.repeat(1000));
        let first = futures_util::stream::once(async move { chunk });
        let body = first.chain(futures_util::stream::repeat(more)).map(move |c| {
            s.listing_bytes.fetch_add(c.len(), Ordering::SeqCst);
            Ok::<_, std::io::Error>(c)
        });
        return Body::from_stream(body).into_response();
    }
    let list: Vec<serde_json::Value> = s
        .manifests
        .keys()
        .map(|k| serde_json::json!({"name": "m", "ref_file": k, "blob_count": 0, "node_id": "hostile"}))
        .collect();
    axum::Json(list).into_response()
}

fn error_page() -> Response {
    let page = format!("<html><body><h1>500</h1><pre>token={SECRET}</pre></body></html>");
    (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/html")], page).into_response()
}

async fn hostile_manifest(State(s): State<Arc<HostileState>>, Path(rf): Path<String>) -> Response {
    hang_if(&s).await;
    if s.mode == Hostility::ErrorPage {
        return error_page();
    }
    match s.manifests.get(&rf) {
        Some(b) => (StatusCode::OK, b.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn hostile_head(State(s): State<Arc<HostileState>>, Path(d): Path<String>) -> Response {
    hang_if(&s).await;
    match Digest::parse(&d).ok().and_then(|d| s.blobs.get(&d)) {
        Some(b) => {
            let mut r = StatusCode::OK.into_response();
            let len = if s.mode == Hostility::HugeLength { HUGE_LENGTH } else { b.len() as u64 };
            r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            r
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn hostile_get(State(s): State<Arc<HostileState>>, Path(d): Path<String>) -> Response {
    s.gets.fetch_add(1, Ordering::SeqCst);
    hang_if(&s).await;
    let Some(b) = Digest::parse(&d).ok().and_then(|d| s.blobs.get(&d).cloned()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if s.mode == Hostility::ErrorPage {
        return error_page();
    }
    if s.mode == Hostility::Slow {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut len = b.len() as u64;
    let first = b.slice(..b.len() / 2);
    let body = match s.mode {
        Hostility::Trickle => {
            let bytes: Vec<u8> = b.to_vec();
            let s = futures_util::stream::iter(bytes).then(|x| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, std::io::Error>(Bytes::from(vec![x]))
            });
            Body::from_stream(s)
        }
        Hostility::HugeLength => {
            len = HUGE_LENGTH;
            let zeros = Bytes::from(vec![0u8; 64 << 10]);
            Body::from_stream(futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(zeros.clone())))
        }
        Hostility::WrongBytes => Body::from(flip(&b)),
        Hostility::Honest
        | Hostility::BadJson
        | Hostility::Hang
        | Hostility::ErrorPage
        | Hostility::Slow
        | Hostility::HugeListing => Body::from(b),
        Hostility::Truncated => Body::from(first),
        Hostility::StallMidStream => {
            let s = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) })
                .chain(futures_util::stream::pending());
            Body::from_stream(s)
        }
        Hostility::DieMidStream => {
            let s = futures_util::stream::iter(vec![
                Ok(first),
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "peer died")),
            ]);
            Body::from_stream(s)
        }
    };
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}
