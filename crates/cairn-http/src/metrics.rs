//! `GET /metrics`: the node's counters in the Prometheus text format.
//!
//! Added around the logic, never inside it: the fetch pipeline reports to
//! [`Metrics`] through the cluster's [`Recorder`] trait; HTTP requests and
//! served blob bytes are counted by one middleware ([`track`]), which
//! reads where a blob came from off a response extension ([`ServedFrom`])
//! the blob handlers set; gauges (peers, disk, transfers, uploads) are
//! sampled when scraped, from state the node keeps anyway: a scrape
//! never walks the store. Labels take values from small fixed sets, and
//! peer addresses only of the node's configured or discovered peers.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use cairn_cluster::fetch::{AttemptReport, AttemptResult, Recorder, SourceKind};
use futures_util::Stream;
use futures_util::stream::StreamExt;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::state::AppState;

/// The path metrics are served on.
pub const PATH: &str = "/metrics";

/// Buckets of the fetch latency and time-to-first-byte histograms, seconds.
const SECONDS_BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

type Labels<const N: usize> = [(&'static str, &'static str); N];
type Histograms = Family<Labels<1>, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

/// The node's metrics, and the pipeline's [`Recorder`].
pub struct Metrics {
    registry: Registry,
    served_bytes: Family<Labels<2>, Counter>,
    served_blobs: Family<Labels<2>, Counter>,
    cache_hits: Family<Labels<1>, Counter>,
    cache_misses: Family<Labels<1>, Counter>,
    attempts: Family<Labels<2>, Counter>,
    received_bytes: Family<Labels<1>, Counter>,
    origin_egress_bytes: Family<Labels<1>, Counter>,
    origin_requests: Family<Labels<1>, Counter>,
    verification_failures: Family<Labels<1>, Counter>,
    fetch_duration: Histograms,
    fetch_ttfb: Histograms,
    joins: Counter,
    swarm_excluded: Counter,
    swarm_pieces: Family<Labels<1>, Counter>,
    swarm_bytes: Family<Labels<1>, Counter>,
    gc_runs: Counter,
    gc_deleted_blobs: Counter,
    gc_deleted_bytes: Counter,
    http_requests: Family<Labels<3>, Counter>,
    /// The last transfers, newest last, for the status page.
    recent: std::sync::Mutex<std::collections::VecDeque<crate::v1::wire::RecentTransfer>>,
    started: std::time::Instant,
}

/// Transfers the status page lists.
pub const RECENT_TRANSFERS: usize = 20;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The route families requests are counted by.
const APIS: [&str; 2] = ["v1", "v2"];

impl Metrics {
    /// Every metric registered, the fixed label sets at 0.
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            served_bytes: Family::default(),
            served_blobs: Family::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            attempts: Family::default(),
            received_bytes: Family::default(),
            origin_egress_bytes: Family::default(),
            origin_requests: Family::default(),
            verification_failures: Family::default(),
            fetch_duration: Family::new_with_constructor(seconds_histogram),
            fetch_ttfb: Family::new_with_constructor(seconds_histogram),
            joins: Counter::default(),
            swarm_excluded: Counter::default(),
            swarm_pieces: Family::default(),
            swarm_bytes: Family::default(),
            gc_runs: Counter::default(),
            gc_deleted_blobs: Counter::default(),
            gc_deleted_bytes: Counter::default(),
            http_requests: Family::default(),
            recent: std::sync::Mutex::new(std::collections::VecDeque::with_capacity(RECENT_TRANSFERS)),
            started: std::time::Instant::now(),
            registry: Registry::default(),
        };
        r.register(
            "cairn_served_bytes",
            "Blob body bytes sent to clients, by API (v1, v2) and where the blob came from",
            m.served_bytes.clone(),
        );
        r.register(
            "cairn_served_blobs",
            "Whole blobs sent to clients to their end (200 answers), by API and where the blob came from",
            m.served_blobs.clone(),
        );
        r.register("cairn_cache_hits", "Blob GETs answered from the local store, by API", m.cache_hits.clone());
        r.register(
            "cairn_cache_misses",
            "Blob GETs answered while fetching the blob from elsewhere, by API",
            m.cache_misses.clone(),
        );
        r.register(
            "cairn_fetch_attempts",
            "Sources tried by the fetch pipeline, by source kind and result (ok, corrupt, absent, failed)",
            m.attempts.clone(),
        );
        r.register(
            "cairn_fetch_received_bytes",
            "Body bytes received by the fetch pipeline, by source kind (failed tries included)",
            m.received_bytes.clone(),
        );
        r.register(
            "cairn_origin_egress_bytes",
            "Body bytes received from origins and upstream registries (the egress they bill)",
            m.origin_egress_bytes.clone(),
        );
        r.register(
            "cairn_origin_requests",
            "Blob requests made to origins and upstream registries",
            m.origin_requests.clone(),
        );
        r.register(
            "cairn_verification_failures",
            "Blobs whose bytes did not match their digest, by source kind",
            m.verification_failures.clone(),
        );
        r.register(
            "cairn_fetch_duration_seconds",
            "Time from asking a source to the blob verified and stored, successful tries, by source kind",
            m.fetch_duration.clone(),
        );
        r.register(
            "cairn_fetch_ttfb_seconds",
            "Time from asking a source to its first body byte, by source kind",
            m.fetch_ttfb.clone(),
        );
        r.register(
            "cairn_fetch_joins",
            "Blob requests that joined a transfer already running for another request (single-flight)",
            m.joins.clone(),
        );
        r.register(
            "cairn_swarm_excluded_peers",
            "Peers excluded from a swarm transfer for sending a wrong piece, or an owner for wrong piece hashes (swarm: true)",
            m.swarm_excluded.clone(),
        );
        r.register(
            "cairn_swarm_pieces",
            "Verified pieces of swarm transfers, by source (origin, peer)",
            m.swarm_pieces.clone(),
        );
        r.register("cairn_swarm_bytes", "Bytes of swarm transfers, by source (origin, peer)", m.swarm_bytes.clone());
        for s in ["origin", "peer"] {
            let _ = m.swarm_pieces.get_or_create(&[("source", s)]);
            let _ = m.swarm_bytes.get_or_create(&[("source", s)]);
        }
        r.register("cairn_gc_runs", "Garbage collections run", m.gc_runs.clone());
        r.register("cairn_gc_deleted_blobs", "Blobs deleted by garbage collection", m.gc_deleted_blobs.clone());
        r.register("cairn_gc_deleted_bytes", "Bytes deleted by garbage collection", m.gc_deleted_bytes.clone());
        r.register(
            "cairn_http_requests",
            "HTTP requests answered, by API, route and status class (2xx, 4xx, ...)",
            m.http_requests.clone(),
        );
        // Every fixed label set at 0: a dashboard sees the series before the first event.
        for api in APIS {
            let _ = m.cache_hits.get_or_create(&[("api", api)]);
            let _ = m.cache_misses.get_or_create(&[("api", api)]);
            for k in SourceKind::ALL {
                let _ = m.served_bytes.get_or_create(&[("api", api), ("source", k.as_str())]);
                let _ = m.served_blobs.get_or_create(&[("api", api), ("source", k.as_str())]);
            }
        }
        for k in SourceKind::ALL.into_iter().filter(|k| *k != SourceKind::Local) {
            let _ = m.verification_failures.get_or_create(&[("source", k.as_str())]);
            let _ = m.received_bytes.get_or_create(&[("source", k.as_str())]);
            for res in AttemptResult::ALL {
                let _ = m.attempts.get_or_create(&[("source", k.as_str()), ("result", res.as_str())]);
            }
            if k.is_origin() {
                let _ = m.origin_egress_bytes.get_or_create(&[("source", k.as_str())]);
                let _ = m.origin_requests.get_or_create(&[("source", k.as_str())]);
            }
        }
        Metrics { registry: r, ..m }
    }

    /// Accounts for one garbage collection (`cairn gc`, or a scheduled one).
    pub fn record_gc(&self, report: &cairn_store::GcReport) {
        self.gc_runs.inc();
        self.gc_deleted_blobs.inc_by(report.blobs.len() as u64);
        self.gc_deleted_bytes.inc_by(report.bytes);
    }

    /// The text of a scrape: the counters, then the gauges sampled now
    /// from `state`.
    pub fn render(&self, state: &AppState) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an encoding error would be a bug here.
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        if let Err(e) = prometheus_text::encode(&mut out, &sampled(state)) {
            tracing::warn!(error = %e, "encoding sampled metrics failed");
        }
        out
    }
}

impl Recorder for Metrics {
    fn attempt(&self, r: &AttemptReport) {
        self.remember(r);
        let source = r.kind.as_str();
        self.attempts.get_or_create(&[("source", source), ("result", r.result.as_str())]).inc();
        self.received_bytes.get_or_create(&[("source", source)]).inc_by(r.bytes);
        if r.kind.is_origin() {
            self.origin_requests.get_or_create(&[("source", source)]).inc();
            self.origin_egress_bytes.get_or_create(&[("source", source)]).inc_by(r.bytes);
        }
        if r.result == AttemptResult::Corrupt {
            self.verification_failures.get_or_create(&[("source", source)]).inc();
        }
        if r.result == AttemptResult::Ok {
            self.fetch_duration.get_or_create(&[("source", source)]).observe(r.elapsed.as_secs_f64());
        }
        if let Some(t) = r.ttfb {
            self.fetch_ttfb.get_or_create(&[("source", source)]).observe(t.as_secs_f64());
        }
    }

    fn joined(&self) {
        self.joins.inc();
    }

    fn swarm(&self, r: &cairn_cluster::swarm_node::SwarmReport) {
        for (s, (pieces, bytes)) in [("origin", r.origin), ("peer", r.peers)] {
            self.swarm_pieces.get_or_create(&[("source", s)]).inc_by(pieces);
            self.swarm_bytes.get_or_create(&[("source", s)]).inc_by(bytes);
        }
        self.swarm_excluded.inc_by(r.excluded.len() as u64);
    }
}

impl Metrics {
    fn remember(&self, r: &AttemptReport) {
        let secs = r.elapsed.as_secs_f64();
        let entry = crate::v1::wire::RecentTransfer {
            at_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            digest: r.digest.oci(),
            source: r.source.clone(),
            kind: r.kind.as_str().to_owned(),
            result: r.result.as_str().to_owned(),
            bytes: r.bytes,
            seconds: secs,
            bytes_per_second: if secs > 0.0 { (r.bytes as f64 / secs) as u64 } else { 0 },
        };
        // The data is a plain list, valid after a panic elsewhere.
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= RECENT_TRANSFERS {
            recent.pop_front();
        }
        recent.push_back(entry);
    }

    /// The last transfers, newest first.
    pub fn recent(&self) -> Vec<crate::v1::wire::RecentTransfer> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner()).iter().rev().cloned().collect()
    }

    /// Seconds since these metrics started (the node's uptime).
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Requests answered from the local store and from elsewhere, both APIs.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        let sum = |f: &Family<Labels<1>, Counter>| APIS.iter().map(|a| f.get_or_create(&[("api", *a)]).get()).sum();
        (sum(&self.cache_hits), sum(&self.cache_misses))
    }

    /// Bytes received from URL origins and upstream registries.
    pub fn origin_egress(&self) -> u64 {
        ["origin", "upstream"].iter().map(|s| self.origin_egress_bytes.get_or_create(&[("source", *s)]).get()).sum()
    }
}

/// The data dir's filesystem: size, used and free bytes (one `statvfs`).
pub fn disk(root: &std::path::Path) -> std::io::Result<(u64, u64, u64)> {
    let s = rustix::fs::statvfs(root)?;
    let frsize = s.f_frsize;
    let total = s.f_blocks.saturating_mul(frsize);
    let used = s.f_blocks.saturating_sub(s.f_bfree).saturating_mul(frsize);
    let free = s.f_bavail.saturating_mul(frsize);
    Ok((total, used, free))
}

fn gauge_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Registers one counter per `(name, help, value)`, set to the value
/// (state the node keeps, read at scrape time).
fn counters(r: &mut Registry, rows: &[(&'static str, &'static str, u64)]) {
    for &(name, help, v) in rows {
        let c: Counter = Counter::default();
        c.inc_by(v);
        r.register(name, help, c);
    }
}

/// Registers one gauge per `(name, help, value)`.
fn gauges(r: &mut Registry, rows: &[(&'static str, &'static str, u64)]) {
    for &(name, help, v) in rows {
        let g: Gauge = Gauge::default();
        g.set(gauge_i64(v));
        r.register(name, help, g);
    }
}

/// Gauges read at scrape time: cheap reads of state the node keeps, and
/// one `statvfs` of the data dir.
fn sampled(state: &AppState) -> Registry {
    let mut r = Registry::default();
    let in_flight: Gauge = Gauge::default();
    in_flight.set(gauge_i64(state.cluster.transfers_in_flight() as u64));
    r.register("cairn_transfers_in_flight", "Remote blob transfers running now", in_flight);
    let uploads: Gauge = Gauge::default();
    uploads.set(state.registry.as_ref().map_or(0, |reg| gauge_i64(reg.open_uploads() as u64)));
    r.register("cairn_uploads_in_progress", "Registry upload sessions open now", uploads);
    let up = Family::<[(&'static str, String); 1], Gauge>::default();
    let age = Family::<[(&'static str, String); 1], Gauge<f64, AtomicU64>>::default();
    for p in state.cluster.peers().snapshot() {
        let l = [("peer", p.address.clone())];
        up.get_or_create(&l).set(i64::from(p.healthy));
        if let Some(ms) = p.last_contact_ms {
            age.get_or_create(&l).set(ms as f64 / 1000.0);
        }
    }
    r.register("cairn_peer_up", "1 when the peer is healthy (the pipeline asks it), else 0", up);
    r.register(
        "cairn_peer_last_contact_age_seconds",
        "Seconds since the peer last answered any request (absent: never)",
        age,
    );
    let store = state.cluster.store();
    if let (Some(w), Some(used)) = (store.cache_watermarks(), store.cache_used()) {
        gauges(
            &mut r,
            &[
                ("cairn_cache_max_bytes", "cache.max_bytes: the most bytes of blobs kept", w.max_bytes),
                ("cairn_cache_used_bytes", "Bytes of blobs the bounded cache holds", used),
                (
                    "cairn_cache_pinned_over_cap",
                    "1 when pinned blobs (refs, registry tags, blobs being read) alone pass cache.max_bytes, else 0",
                    u64::from(store.cache_pinned_over_cap().unwrap_or(false)),
                ),
            ],
        );
        // Kept by the store, which evicts for the evictor and for fetches alike.
        let (blobs, bytes) = store.cache_evicted().unwrap_or((0, 0));
        counters(
            &mut r,
            &[
                ("cairn_evictions", "Blobs evicted by the bounded cache", blobs),
                ("cairn_evicted_bytes", "Bytes evicted by the bounded cache", bytes),
            ],
        );
    }
    if let Some(t) = store.tier() {
        let st = t.stats();
        counters(
            &mut r,
            &[
                (
                    "cairn_bucket_uploads",
                    "Blobs written to the durable tier's bucket (pushes and background copies)",
                    st.uploads,
                ),
                ("cairn_bucket_upload_bytes", "Bytes of blobs written to the bucket", st.upload_bytes),
                (
                    "cairn_bucket_upload_errors",
                    "Writes to the bucket that failed (the push failed with them)",
                    st.upload_errors,
                ),
                (
                    "cairn_bucket_background_queued",
                    "Fetched blobs queued for a background copy to the bucket",
                    st.background_queued,
                ),
                (
                    "cairn_bucket_background_dropped",
                    "Background copies dropped because the queue was full",
                    st.background_dropped,
                ),
                ("cairn_bucket_background_errors", "Background copies to the bucket that failed", st.background_errors),
            ],
        );
        let req = t.bucket().stats();
        counters(
            &mut r,
            &[
                ("cairn_bucket_requests", "HTTP requests sent to the bucket (each retry is one more)", req.attempts),
                ("cairn_bucket_throttled", "Bucket requests answered 503 or 429 (throttling; retried)", req.throttled),
                (
                    "cairn_bucket_server_errors",
                    "Bucket requests answered with another 5xx (retried)",
                    req.server_errors,
                ),
                (
                    "cairn_bucket_transport_errors",
                    "Bucket requests without an answer: refused, timed out or cut (retried)",
                    req.transport_errors,
                ),
                ("cairn_bucket_errors", "Bucket operations that failed after their retries", req.errors),
            ],
        );
    }
    // Kept by the replicator as it works: no store walk here.
    let rs = state.replicator.stats();
    gauges(
        &mut r,
        &[
            ("cairn_replicas", "replicas: copies kept of every blob pushed to the cluster", rs.replicas as u64),
            (
                "cairn_replication_held_blobs",
                "Blobs this node holds pinned as one of their copies (pushed here or a replica), at the last repair pass",
                rs.held as u64,
            ),
            (
                "cairn_replication_under_replicated_blobs",
                "Held blobs not confirmed on all their holders at the last check (copies queued, too few nodes, \
             a holder refusing or unreachable)",
                rs.under_replicated as u64,
            ),
            (
                "cairn_replication_in_flight",
                "Replication pulls queued or running on this node, plus replication requests being sent",
                rs.in_flight as u64,
            ),
        ],
    );
    counters(
        &mut r,
        &[
            ("cairn_replication_failed", "Replication pulls and requests that failed", rs.failed),
            ("cairn_replication_completed", "Replication pulls completed on this node", rs.completed),
        ],
    );
    match disk(state.cluster.store().root()) {
        Ok((total, used, free)) => {
            gauges(
                &mut r,
                &[
                    ("cairn_disk_size_bytes", "Size of the data dir's filesystem", total),
                    ("cairn_disk_used_bytes", "Bytes used on the data dir's filesystem", used),
                    ("cairn_disk_free_bytes", "Bytes free for this node on the data dir's filesystem", free),
                ],
            );
        }
        Err(e) => tracing::warn!(error = %e, "statvfs of the data dir failed; disk metrics left out of this scrape"),
    }
    r
}

/// Where the blob a response carries came from: set by the blob handlers
/// as a response extension, read by [`track`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedFrom(pub SourceKind);

/// `GET /metrics` (merged into [`crate::app`]).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new().route(PATH, get(scrape)).with_state(state)
}

/// The app of a listener that serves only `/metrics` (`metrics_addr`):
/// every other path is a 404, and the auth policy applies as on the
/// node's listener.
pub fn app(state: Arc<AppState>) -> Router {
    let auth = Arc::clone(&state.auth);
    router(state)
        .fallback(|uri: axum::http::Uri| async move {
            crate::ApiError::NoEndpoint(uri.path().chars().take(200).collect()).into_response()
        })
        .layer(axum::middleware::from_fn_with_state(auth, crate::auth::check))
}

async fn scrape(State(s): State<Arc<AppState>>) -> Response {
    let text = s.metrics.render(&s);
    let mut resp = text.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(prometheus_text::CONTENT_TYPE));
    resp
}

/// The middleware counting every request, and the blob bytes of answers
/// that carry [`ServedFrom`].
pub async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let (api, route) = classify(req.uri().path());
    let resp = next.run(req).await;
    let status = status_class(resp.status());
    m.http_requests.get_or_create(&[("api", api), ("route", route), ("status", status)]).inc();
    let Some(ServedFrom(kind)) = resp.extensions().get::<ServedFrom>().copied() else {
        return resp;
    };
    if !resp.status().is_success() {
        return resp;
    }
    if kind == SourceKind::Local {
        m.cache_hits.get_or_create(&[("api", api)]).inc();
    } else {
        m.cache_misses.get_or_create(&[("api", api)]).inc();
    }
    let labels = [("api", api), ("source", kind.as_str())];
    let bytes = m.served_bytes.get_or_create_owned(&labels);
    let whole = (resp.status() == StatusCode::OK).then(|| m.served_blobs.get_or_create_owned(&labels));
    let (parts, body) = resp.into_parts();
    let len = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let counted = Counted { inner: body.into_data_stream().boxed(), bytes, whole, len, sent: 0 };
    Response::from_parts(parts, Body::from_stream(counted))
}

/// A body that counts its bytes, and the blob once all of it is sent:
/// its declared length, or (without one) its clean end. The server stops
/// polling a body once its declared length is out, so the end may never
/// be seen.
struct Counted {
    inner: futures_util::stream::BoxStream<'static, Result<Bytes, axum::Error>>,
    bytes: Counter,
    whole: Option<Counter>,
    len: Option<u64>,
    sent: u64,
}

impl Counted {
    fn blob_done(&mut self) {
        if let Some(c) = self.whole.take() {
            c.inc();
        }
    }
}

impl Stream for Counted {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.inner.poll_next_unpin(cx);
        match &next {
            Poll::Ready(Some(Ok(b))) => {
                let n = b.len() as u64;
                self.bytes.inc_by(n);
                self.sent = self.sent.saturating_add(n);
                if self.len == Some(self.sent) {
                    self.blob_done();
                }
            }
            // A cut body is no blob served.
            Poll::Ready(Some(Err(_))) => self.whole = None,
            Poll::Ready(None) if self.len.is_none_or(|l| l == self.sent) => self.blob_done(),
            Poll::Ready(None) => self.whole = None,
            Poll::Pending => {}
        }
        next
    }
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The API and route of a request, from a fixed set of names: never a
/// digest, a repository or any other part of the path.
pub fn classify(path: &str) -> (&'static str, &'static str) {
    if path == PATH {
        return ("metrics", "metrics");
    }
    if path == "/v2" || path == "/v2/" {
        return ("v2", "base");
    }
    if let Some(rest) = path.strip_prefix("/v2/") {
        use crate::v2::route::{self, Target};
        if rest == "_catalog" {
            return ("v2", "catalog");
        }
        let route = match route::parse(rest) {
            Ok((_, Target::Manifest(_))) => "manifest",
            Ok((_, Target::Blob(_))) => "blob",
            Ok((_, Target::Uploads)) => "uploads",
            Ok((_, Target::Upload(_))) => "upload",
            Ok((_, Target::Tags)) => "tags",
            Ok((_, Target::Referrers(_))) => "referrers",
            Err(_) => "other",
        };
        return ("v2", route);
    }
    let Some(rest) = path.strip_prefix("/v1/") else {
        return ("other", "other");
    };
    let segs: Vec<&str> = rest.split('/').collect();
    let route = match segs.as_slice() {
        ["blobs", d] if !d.is_empty() => "blobs",
        ["manifests"] => "manifests",
        ["manifests", rf] if !rf.is_empty() => "manifest",
        ["manifests", rf, "sync"] if !rf.is_empty() => "sync",
        ["health"] => "health",
        ["info"] => "info",
        ["peers"] => "peers",
        ["cluster", "manifests"] => "cluster_manifests",
        ["cluster", "stats"] => "cluster_stats",
        ["fetch", d] if !d.is_empty() => "fetch",
        ["oci", "tag"] => "oci_tag",
        _ => "other",
    };
    ("v1", route)
}
