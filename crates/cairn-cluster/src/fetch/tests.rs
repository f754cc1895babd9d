//! The pipeline's own tests: fake peers and sources, no HTTP. Each test
//! names what it guards; the bad source is always tried first (the good
//! one's HEAD waits for the bad one's GET), so a pipeline that took bad
//! bytes or never gave up on a bad source fails them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_store::{Digest, Store};
use futures_util::StreamExt;

use super::order::{Sources, Step};
use super::owner::Route;
use super::source::{OnFailure, OriginSource, OwnerSource, Source};
use super::{BlobBody, Cluster, ClusterConfig, lock};
use crate::error::ClusterError;
use crate::origin::Origin;

mod fakes;
use fakes::{Body, Peer, Peers};

/// A blob under `HOLD_BACK`: no byte of it reaches a caller unverified.
fn blob() -> Vec<u8> {
    (0..3000u32).map(|i| (i % 251) as u8).collect()
}

fn digest() -> Digest {
    Digest::of(&blob())
}

fn cluster(api: &Arc<Peers>, peers: &[&str], tweak: impl FnOnce(&mut ClusterConfig)) -> (Cluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ClusterConfig {
        node_id: "me".into(),
        peers: peers.iter().map(|p| p.to_string()).collect(),
        peer_timeout: Duration::from_secs(1),
        enable_cdn_fallback: false,
        elect_owner: false,
        ..Default::default()
    };
    tweak(&mut cfg);
    let api: Arc<dyn crate::PeerApi> = api.clone();
    (Cluster::new(Store::open(dir.path()).unwrap(), cfg, api), dir)
}

async fn read(b: BlobBody) -> crate::Result<Vec<u8>> {
    let mut s = b.stream;
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

/// Waits until no transfer runs (the blob, if any, is persisted by then).
async fn settled(c: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.transfers_in_flight() > 0 {
        assert!(Instant::now() < deadline, "a transfer never ended");
        tokio::task::yield_now().await;
    }
}

/// Fetches through a cluster of peer `a:1` behaving as `bad` and an honest
/// peer `b:1` asked only after `a:1`'s GET. Returns who served the bytes.
async fn fall_back_from(bad: Peer, tweak: impl FnOnce(&mut ClusterConfig)) -> (String, Arc<Peers>) {
    let good = Peer { head_after: Some("a:1".into()), ..Peer::with(&blob(), Body::Good) };
    let f = Peers::new(&blob(), vec![("a:1", bad), ("b:1", good)]);
    let (c, _dir) = cluster(&f, &["a:1", "b:1"], tweak);
    let b = c.fetch(digest()).await.unwrap();
    let source = b.source.clone();
    assert_eq!(read(b).await.unwrap(), blob(), "the caller got the blob");
    settled(&c).await;
    assert_eq!(c.local_size(digest()).await.unwrap(), Some(3000), "the verified blob is stored");
    assert_eq!(f.gets("a:1"), 1, "the bad peer was tried");
    (source, f)
}

/// Fetches from `a:1` alone (preferred, so no HEAD first). Returns the error.
async fn only_source_fails(bad: Peer, tweak: impl FnOnce(&mut ClusterConfig)) -> (String, Arc<Peers>) {
    let f = Peers::new(&blob(), vec![("a:1", bad)]);
    let (c, _dir) = cluster(&f, &["a:1"], tweak);
    let e = c.ensure_local(digest(), Some("a:1")).await.unwrap_err();
    settled(&c).await;
    assert_eq!(c.local_size(digest()).await.unwrap(), None, "nothing was stored");
    (e.to_string(), f)
}

#[tokio::test]
async fn a_good_peer_serves_the_blob_and_it_is_stored_verified() {
    let f = Peers::new(&blob(), vec![("a:1", Peer::with(&blob(), Body::Good))]);
    let (c, _dir) = cluster(&f, &["a:1"], |_| {});
    let b = c.fetch(digest()).await.unwrap();
    assert_eq!((b.size, b.source.as_str()), (Some(3000), "peer a:1"));
    assert_eq!(read(b).await.unwrap(), blob());
    settled(&c).await;
    let local = c.fetch(digest()).await.unwrap();
    assert_eq!(local.source, "local", "the second fetch is local");
    assert_eq!(read(local).await.unwrap(), blob());
    assert_eq!(f.gets("a:1"), 1);
}

#[tokio::test]
async fn corrupt_bytes_are_never_released_or_stored_and_the_next_source_serves() {
    let (source, _) = fall_back_from(Peer::with(&blob(), Body::Corrupt), |_| {}).await;
    assert_eq!(source, "peer b:1");
    let (e, _) = only_source_fails(Peer::with(&blob(), Body::Corrupt), |_| {}).await;
    assert!(e.contains("sent wrong bytes"), "{e}");
}

#[tokio::test]
async fn corrupt_bytes_mark_the_peer_down() {
    let f = Peers::new(&blob(), vec![("a:1", Peer::with(&blob(), Body::Corrupt))]);
    let (c, _dir) = cluster(&f, &["a:1"], |_| {});
    assert!(c.fetch(digest()).await.is_err());
    assert!(!c.peers().healthy().contains(&"a:1".to_owned()), "a peer sending wrong bytes is marked down");
}

#[tokio::test]
async fn a_truncated_body_is_abandoned_for_the_next_source() {
    let (source, _) = fall_back_from(Peer::with(&blob(), Body::Short), |_| {}).await;
    assert_eq!(source, "peer b:1");
    let (e, _) = only_source_fails(Peer::with(&blob(), Body::Short), |_| {}).await;
    assert!(e.contains("got 1500 of 3000 bytes"), "{e}");
}

#[tokio::test]
async fn a_source_dead_mid_stream_is_abandoned_for_the_next() {
    let (source, _) = fall_back_from(Peer::with(&blob(), Body::Dead), |_| {}).await;
    assert_eq!(source, "peer b:1");
    let (e, _) = only_source_fails(Peer::with(&blob(), Body::Dead), |_| {}).await;
    assert!(e.contains("truncated or oversized body") && e.contains("connection reset"), "{e}");
}

#[tokio::test]
async fn a_stalled_source_is_abandoned_after_the_idle_timeout() {
    let fast = |c: &mut ClusterConfig| c.peer_timeout = Duration::from_millis(300);
    let (source, _) = fall_back_from(Peer::with(&blob(), Body::Stall), fast).await;
    assert_eq!(source, "peer b:1");
    let (e, _) = only_source_fails(Peer::with(&blob(), Body::Stall), fast).await;
    assert!(e.contains("stalled for 300ms"), "{e}");
}

#[tokio::test]
async fn a_source_below_min_transfer_rate_is_abandoned_for_the_next() {
    // 1.5 KB/s: the whole blob would take 2 s; the check gives up after 200 ms.
    let slow = || Peer::with(&blob(), Body::Slow { chunk: 30, every: Duration::from_millis(20) });
    let rate = |c: &mut ClusterConfig| {
        c.min_transfer_rate = 10_000;
        c.rate_window = Duration::from_millis(200);
    };
    let started = Instant::now();
    let (source, _) = fall_back_from(slow(), rate).await;
    assert_eq!(source, "peer b:1");
    assert!(started.elapsed() < Duration::from_millis(1500), "the slow source was not waited out");
    let (e, _) = only_source_fails(slow(), rate).await;
    assert!(e.contains("too slowly"), "{e}");
}

#[tokio::test]
async fn a_source_claiming_more_bytes_than_it_sends_is_abandoned() {
    let liar = || Peer { head: Some(4000), declares: Some(4000), ..Peer::with(&blob(), Body::Good) };
    let (source, _) = fall_back_from(liar(), |_| {}).await;
    assert_eq!(source, "peer b:1");
    let (e, _) = only_source_fails(liar(), |_| {}).await;
    assert!(e.contains("got 3000 of 4000 bytes"), "{e}");
}

#[tokio::test]
async fn a_source_sending_more_than_it_declared_is_cut_off() {
    let liar = || Peer { head: Some(1000), declares: Some(1000), ..Peer::with(&blob(), Body::Good) };
    let (source, _) = fall_back_from(liar(), |_| {}).await;
    assert_eq!(source, "peer b:1");
    let (e, _) = only_source_fails(liar(), |_| {}).await;
    assert!(e.contains("body longer than declared"), "{e}");
}

#[tokio::test]
async fn a_get_size_that_disagrees_with_the_head_is_refused() {
    let liar = Peer { declares: Some(3001), ..Peer::with(&blob(), Body::Good) };
    let (source, f) = fall_back_from(liar, |_| {}).await;
    assert_eq!(source, "peer b:1");
    assert_eq!(f.sent.load(std::sync::atomic::Ordering::SeqCst), 3000, "only the honest peer's body was read");
}

#[tokio::test]
async fn a_huge_head_size_is_refused_before_the_blob_is_asked_for() {
    let huge = Peer { head: Some(u64::MAX), ..Peer::with(&blob(), Body::Good) };
    let f = Peers::new(&blob(), vec![("a:1", huge)]);
    let (c, _dir) = cluster(&f, &["a:1"], |_| {});
    let e = c.fetch(digest()).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("over max_blob_size"), "{e}");
    assert_eq!(f.gets("a:1"), 0, "a size over max_blob_size is refused at the HEAD");
}

#[tokio::test]
async fn a_huge_declared_size_is_refused_before_any_byte_is_read() {
    let huge = Peer { declares: Some(u64::MAX), ..Peer::with(&blob(), Body::Good) };
    let (e, f) = only_source_fails(huge, |_| {}).await;
    assert!(e.contains("over max_blob_size"), "{e}");
    assert_eq!(f.sent.load(std::sync::atomic::Ordering::SeqCst), 0, "no byte of the body was read");
}

#[tokio::test]
async fn an_undeclared_body_over_max_blob_size_is_cut_off() {
    let flood = Peer { declares: None, ..Peer::with(&blob(), Body::Flood(10_000)) };
    let (e, _) = only_source_fails(flood, |c| c.max_blob_size = 5000).await;
    assert!(e.contains("as 10000 bytes, over max_blob_size (5000 bytes)"), "{e}");
}

#[tokio::test]
async fn concurrent_callers_share_one_source_fetch() {
    const CALLERS: usize = 8;
    let f = Peers::new(&blob(), vec![("a:1", Peer { gated: true, ..Peer::with(&blob(), Body::Good) })]);
    let (c, _dir) = cluster(&f, &["a:1"], |_| {});
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { read(c.fetch(digest()).await?).await })
        })
        .collect();
    // Every caller joins the one transfer before its first byte.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let joined = lock(&c.inner.inflight).values().map(|t| lock(&t.shared).subs.len()).sum::<usize>();
        if joined == CALLERS {
            break;
        }
        assert!(Instant::now() < deadline, "{joined} of {CALLERS} callers joined a transfer");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f.open_gate();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), blob());
    }
    assert_eq!(f.gets("a:1"), 1, "one GET for every caller");
}

/// The names of the sources `Sources` gives, in order, without trying any.
async fn order(c: &Cluster, prefer: Option<&str>) -> Vec<String> {
    let mut s = Sources::new(Arc::clone(&c.inner), digest(), prefer.map(str::to_owned), None, Route::Direct);
    let mut names = Vec::new();
    while let Some(step) = s.next().await {
        names.push(match step {
            Step::Try(src) => src.name(),
            Step::AwaitDirect => Step::AWAIT_DIRECT.to_owned(),
            Step::Swarm => Step::SWARM.to_owned(),
        });
    }
    names
}

#[tokio::test]
async fn peers_holding_the_blob_come_before_origins_and_unhealthy_peers_after_healthy_ones() {
    let origin = Origin::http("http://127.0.0.1:9/{digest}").unwrap();
    let absent = Peer { head: None, ..Peer::with(&blob(), Body::Good) };
    let f = Peers::new(
        &blob(),
        vec![("a:1", Peer::with(&blob(), Body::Good)), ("b:1", Peer::with(&blob(), Body::Good)), ("c:1", absent)],
    );
    let with_origin = |cfg: &mut ClusterConfig| {
        cfg.enable_cdn_fallback = true;
        cfg.origins = vec![origin.clone()];
    };
    let (c, _dir) = cluster(&f, &["a:1", "b:1", "c:1"], with_origin);
    c.peers().mark_down("a:1", "a test");
    assert_eq!(order(&c, None).await, ["peer b:1", "peer a:1", origin.name().as_str()]);
    assert_eq!(
        order(&c, Some("c:1")).await,
        ["peer c:1", "peer b:1", "peer a:1", origin.name().as_str()],
        "the preferred peer first, and not asked again"
    );
}

#[tokio::test]
async fn origins_are_not_used_when_cdn_fallback_is_off() {
    let f = Peers::new(&blob(), vec![("a:1", Peer::with(&blob(), Body::Good))]);
    let origin = Origin::http("http://127.0.0.1:9/{digest}").unwrap();
    let (c, _dir) = cluster(&f, &["a:1"], |cfg| cfg.origins = vec![origin]);
    assert_eq!(order(&c, None).await, ["peer a:1"]);
}

#[test]
fn an_origin_is_retried_up_to_its_count_and_never_for_wrong_bytes() {
    let o = Origin::http("http://127.0.0.1:9/{digest}").unwrap().with_retries(1);
    let src = OriginSource { origin: o, tries: 0, http: reqwest::Client::new(), peer_timeout: Duration::from_secs(1) };
    let d = digest();
    let outage = ClusterError::Origin { origin: src.name(), digest: d, reason: "HTTP 503".into() };
    let again = match src.on_failure(&outage) {
        OnFailure::Retry { after, again } => {
            assert!(after >= crate::origin::RETRY_BASE, "{after:?}: the backoff waits");
            again
        }
        _ => panic!("an outage is retried"),
    };
    assert!(matches!(again.on_failure(&outage), OnFailure::Next), "one retry, as configured");
    let corrupt = ClusterError::Corrupt { source_name: src.name(), expected: d, actual: Digest::of(b"x") };
    assert!(matches!(src.on_failure(&corrupt), OnFailure::Next), "wrong bytes are never retried");
}

#[test]
fn an_owner_that_answered_with_an_error_speaks_for_the_rest_of_the_ranking() {
    let api: Arc<dyn crate::PeerApi> = Peers::new(&blob(), Vec::new());
    let o = OwnerSource { addr: "o:1".into(), api, peer_timeout: Duration::from_secs(1), idle: Duration::from_secs(1) };
    let answered =
        ClusterError::PeerStatus { peer: "o:1".into(), what: "GET".into(), status: 502, body: String::new() };
    assert!(matches!(o.on_failure(&answered), OnFailure::SkipOwners));
    let shared = ClusterError::Shared(Arc::new(answered));
    assert!(matches!(o.on_failure(&shared), OnFailure::SkipOwners));
    let down = ClusterError::PeerUnreachable { peer: "o:1".into(), reason: "refused".into() };
    assert!(matches!(o.on_failure(&down), OnFailure::Next), "a dead owner gives way to the next in the ranking");
}

/// A recorder keeping every report.
#[derive(Default)]
struct Reports {
    tries: std::sync::Mutex<Vec<super::AttemptReport>>,
    joins: std::sync::atomic::AtomicUsize,
}

impl super::Recorder for Reports {
    fn attempt(&self, r: &super::AttemptReport) {
        lock(&self.tries).push(r.clone());
    }

    fn joined(&self) {
        self.joins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_recorder_sees_each_try_with_its_kind_result_and_bytes_and_nothing_for_a_local_read() {
    use super::{AttemptResult, SourceKind};
    let good = Peer { head_after: Some("a:1".into()), ..Peer::with(&blob(), Body::Good) };
    let f = Peers::new(&blob(), vec![("a:1", Peer::with(&blob(), Body::Corrupt)), ("b:1", good)]);
    let (c, _dir) = cluster(&f, &["a:1", "b:1"], |_| {});
    let rec = Arc::new(Reports::default());
    assert!(c.set_recorder(rec.clone()));
    assert!(!c.set_recorder(Arc::new(super::NoRecorder)), "the first recorder stays");
    let b = c.fetch(digest()).await.unwrap();
    assert_eq!(b.kind, SourceKind::Peer);
    assert_eq!(read(b).await.unwrap(), blob());
    settled(&c).await;
    let local = c.fetch(digest()).await.unwrap();
    assert_eq!(local.kind, SourceKind::Local);
    read(local).await.unwrap();
    let tries = lock(&rec.tries).clone();
    let seen: Vec<_> = tries.iter().map(|r| (r.kind, r.result, r.bytes)).collect();
    assert_eq!(
        seen,
        vec![(SourceKind::Peer, AttemptResult::Corrupt, 3000), (SourceKind::Peer, AttemptResult::Ok, 3000)],
        "one report per try, none for the local read"
    );
    assert!(tries.iter().all(|r| r.ttfb.is_some_and(|t| t <= r.elapsed)));
    assert_eq!(rec.joins.load(std::sync::atomic::Ordering::SeqCst), 0);
}
