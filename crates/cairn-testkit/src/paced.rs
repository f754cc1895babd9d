//! An origin that behaves like a distant CDN: a delay before the first
//! byte, a bandwidth shared by all its downloads, and counters of requests
//! and bytes sent. Used in-process by the cluster tests and, as the
//! `cairn-bench-origin` binary, by `bench/fanout.sh`.
//!
//! `GET /blobs/{digest}` serves a blob (a `Range: bytes=A-B` is answered
//! `206` with those bytes); `GET /stats` answers
//! `{"requests": N, "bytes": N}` (blob requests, body bytes sent);
//! `POST /stats/reset` zeroes them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use cairn_cluster::ratelimit::TokenBucket;
use cairn_store::Digest;
use futures_util::StreamExt;

use crate::{OriginMode, Server};

/// Where the origin's blobs are.
#[derive(Clone, Debug)]
pub enum Blobs {
    /// In memory.
    Mem(HashMap<Digest, Bytes>),
    /// Files named by their bare hex digest in a directory.
    Dir(PathBuf),
}

/// How the origin behaves.
#[derive(Clone, Debug)]
pub struct PacedSpec {
    /// Delay before the first byte of every blob.
    pub first_byte: Duration,
    /// Bytes per second, shared by every download; `None` for no limit.
    pub rate: Option<u64>,
    /// Right or wrong bytes.
    pub mode: OriginMode,
    /// The first this many blob requests are answered 503.
    pub fail_first: u64,
}

impl Default for PacedSpec {
    fn default() -> Self {
        PacedSpec { first_byte: Duration::from_millis(20), rate: None, mode: OriginMode::Good, fail_first: 0 }
    }
}

/// Counters and settings, shared with the handlers.
pub struct PacedState {
    blobs: Blobs,
    spec: PacedSpec,
    bucket: Option<Arc<TokenBucket>>,
    requests: AtomicU64,
    bytes: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

impl PacedState {
    /// The state of an origin serving `blobs` as `spec` says.
    pub fn new(blobs: Blobs, spec: PacedSpec) -> Arc<Self> {
        // A small burst, so the rate holds from the first chunk on.
        let bucket = spec.rate.map(|r| Arc::new(TokenBucket::with_burst(r, CHUNK as u64)));
        Arc::new(PacedState {
            blobs,
            spec,
            bucket,
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
        })
    }

    /// Blob requests received.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Body bytes sent.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }

    /// The most blob bodies that were being sent at once.
    pub fn max_in_flight(&self) -> u64 {
        self.max_in_flight.load(Ordering::SeqCst)
    }
}

/// Counts a body in flight from its first byte until it ends or is dropped.
struct InFlight(Arc<PacedState>);

impl InFlight {
    fn new(s: &Arc<PacedState>) -> Self {
        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(Arc::clone(s))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

const CHUNK: usize = 256 << 10;

/// The origin's routes.
pub fn router(state: Arc<PacedState>) -> Router {
    Router::new()
        .route("/blobs/{digest}", get(blob))
        .route("/stats", get(stats))
        .route("/stats/reset", post(reset))
        .with_state(state)
}

async fn stats(State(s): State<Arc<PacedState>>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"requests": s.requests(), "bytes": s.bytes()}))
}

async fn reset(State(s): State<Arc<PacedState>>) -> StatusCode {
    s.requests.store(0, Ordering::SeqCst);
    s.bytes.store(0, Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

type Chunks = futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>;

/// `bytes=A-B` (both given, in order).
fn byte_range(h: &axum::http::HeaderMap) -> Option<(usize, usize)> {
    let v = h.get(header::RANGE)?.to_str().ok()?.strip_prefix("bytes=")?;
    let (a, b) = v.split_once('-')?;
    let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
    (a <= b).then_some((a, b))
}

async fn open(s: &PacedState, d: &Digest, range: Option<(usize, usize)>) -> Option<(u64, Chunks, bool)> {
    match &s.blobs {
        Blobs::Mem(m) => {
            let mut b = m.get(d)?.clone();
            let ranged = range.filter(|(_, z)| *z < b.len());
            if let Some((a, z)) = ranged {
                b = b.slice(a..=z);
            }
            let len = b.len() as u64;
            let chunks: Vec<std::io::Result<Bytes>> =
                (0..b.len()).step_by(CHUNK).map(|i| Ok(b.slice(i..(i + CHUNK).min(b.len())))).collect();
            Some((len, futures_util::stream::iter(chunks).boxed(), ranged.is_some()))
        }
        Blobs::Dir(dir) => {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            let mut f = tokio::fs::File::open(dir.join(d.to_string())).await.ok()?;
            let len = f.metadata().await.ok()?.len();
            match range.filter(|(_, z)| (*z as u64) < len) {
                Some((a, z)) => {
                    f.seek(std::io::SeekFrom::Start(a as u64)).await.ok()?;
                    let n = (z - a + 1) as u64;
                    Some((n, tokio_util::io::ReaderStream::with_capacity(f.take(n), CHUNK).boxed(), true))
                }
                None => Some((len, tokio_util::io::ReaderStream::with_capacity(f, CHUNK).boxed(), false)),
            }
        }
    }
}

async fn blob(State(s): State<Arc<PacedState>>, Path(d): Path<String>, h: axum::http::HeaderMap) -> Response {
    if s.requests.fetch_add(1, Ordering::SeqCst) < s.spec.fail_first {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let Ok(d) = Digest::parse(&d) else { return StatusCode::BAD_REQUEST.into_response() };
    let range = byte_range(&h);
    let Some((len, chunks, ranged)) = open(&s, &d, range).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    tokio::time::sleep(s.spec.first_byte).await;
    let wrong = s.spec.mode == OriginMode::WrongBytes;
    let mut sent = 0u64;
    let st = Arc::clone(&s);
    let gauge = InFlight::new(&s);
    let body = chunks.then(move |c| {
        let _held = &gauge;
        let st = Arc::clone(&st);
        let c = c.map(|c| {
            sent += c.len() as u64;
            // The last byte flipped: same length, wrong digest.
            if wrong && sent == len {
                let mut v = c.to_vec();
                if let Some(x) = v.last_mut() {
                    *x ^= 0xff;
                }
                Bytes::from(v)
            } else {
                c
            }
        });
        async move {
            if let (Ok(c), Some(b)) = (&c, &st.bucket) {
                b.take(c.len() as u64).await;
            }
            if let Ok(c) = &c {
                st.bytes.fetch_add(c.len() as u64, Ordering::SeqCst);
            }
            c
        }
    });
    let mut resp = Body::from_stream(body).into_response();
    resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if ranged {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    resp
}

/// A paced origin on `127.0.0.1:0`, in this process.
pub struct PacedOrigin {
    server: Server,
    state: Arc<PacedState>,
}

impl PacedOrigin {
    /// Serves `blobs` (kept in memory) as `spec` says.
    pub fn start(blobs: &[Vec<u8>], spec: PacedSpec) -> PacedOrigin {
        let map = blobs.iter().map(|b| (Digest::of(b), Bytes::from(b.clone()))).collect();
        let state = PacedState::new(Blobs::Mem(map), spec);
        PacedOrigin { server: Server::start(router(Arc::clone(&state))), state }
    }

    /// The URL template for a node's config.
    pub fn template(&self) -> String {
        format!("http://{}/blobs/{{digest}}", self.server.addr())
    }

    /// Blob requests received.
    pub fn requests(&self) -> u64 {
        self.state.requests()
    }

    /// Body bytes sent.
    pub fn bytes(&self) -> u64 {
        self.state.bytes()
    }

    /// The most blob bodies that were being sent at once.
    pub fn max_in_flight(&self) -> u64 {
        self.state.max_in_flight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn paced_origin_counts_requests_and_bytes_and_flips_the_last_byte_when_asked() {
        let data = crate::blob(1, 600_000);
        let d = Digest::of(&data);
        let good = PacedOrigin::start(std::slice::from_ref(&data), PacedSpec::default());
        let body = reqwest::get(good.template().replace("{digest}", &d.to_string())).await.unwrap();
        assert_eq!(body.status(), 200);
        assert!(body.bytes().await.unwrap() == data);
        assert_eq!((good.requests(), good.bytes()), (1, 600_000));
        let missing = reqwest::get(good.template().replace("{digest}", &Digest::of(b"no").to_string())).await;
        assert_eq!(missing.unwrap().status(), 404);
        assert_eq!(good.requests(), 2);

        let bad = PacedOrigin::start(
            std::slice::from_ref(&data),
            PacedSpec { mode: OriginMode::WrongBytes, ..Default::default() },
        );
        let got =
            reqwest::get(bad.template().replace("{digest}", &d.to_string())).await.unwrap().bytes().await.unwrap();
        assert_eq!(got.len(), data.len());
        assert_ne!(Digest::of(&got), d);
    }

    #[tokio::test]
    async fn paced_origin_answers_byte_ranges_from_memory_and_from_a_directory() {
        let data = crate::blob(3, 300_000);
        let d = Digest::of(&data);
        let mem = PacedOrigin::start(std::slice::from_ref(&data), PacedSpec::default());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(d.to_string()), &data).unwrap();
        let state = PacedState::new(Blobs::Dir(dir.path().to_owned()), PacedSpec::default());
        let on_disk = Server::start(router(Arc::clone(&state)));
        let c = reqwest::Client::new();
        for url in [mem.template().replace("{digest}", &d.to_string()), format!("http://{}/blobs/{d}", on_disk.addr())]
        {
            let r = c.get(&url).header(header::RANGE, "bytes=1000-199999").send().await.unwrap();
            assert_eq!(r.status(), 206, "{url}");
            assert!(r.bytes().await.unwrap() == data[1000..200_000], "{url}");
            // Past the end: the whole blob.
            let r = c.get(&url).header(header::RANGE, "bytes=0-300000").send().await.unwrap();
            assert_eq!(r.status(), 200, "{url}");
            assert_eq!(r.bytes().await.unwrap().len(), data.len());
        }
        assert_eq!(mem.bytes(), 199_000 + 300_000);
        assert_eq!(state.bytes(), 199_000 + 300_000);
    }

    #[tokio::test]
    async fn paced_origin_takes_at_least_size_over_rate() {
        let data = crate::blob(2, 1 << 20);
        let o = PacedOrigin::start(
            std::slice::from_ref(&data),
            PacedSpec { rate: Some(2 << 20), first_byte: Duration::from_millis(20), ..Default::default() },
        );
        let start = std::time::Instant::now();
        let url = o.template().replace("{digest}", &Digest::of(&data).to_string());
        let got = reqwest::get(url).await.unwrap().bytes().await.unwrap();
        assert_eq!(got.len(), data.len());
        // 1 MiB at 2 MiB/s, less one chunk of burst, plus the first-byte delay.
        assert!(start.elapsed() >= Duration::from_millis(380), "{:?}", start.elapsed());
    }
}
