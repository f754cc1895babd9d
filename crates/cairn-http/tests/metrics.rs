//! `GET /metrics` over real HTTP: exact counter deltas after a known
//! sequence of pulls (a pull-through from a peer, a local hit, a corrupt
//! peer then a good origin), single-flight joins, the auth rule of
//! `/v1/peers`, a scrape that never walks the store, and `promtool check
//! metrics` accepting the output.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use cairn_http::auth::{AuthConfig, Policy};
use cairn_store::Digest;
use cairn_testkit::{HostilePeer, Hostility, NodeSpec, OriginMode, Server, TestNode, TestOrigin, blob, read_all};

/// One scrape: each series (`name{labels}`, as printed) and its value.
struct Scrape(HashMap<String, f64>);

impl Scrape {
    fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }
}

async fn scrape_text(node: &TestNode) -> String {
    let r = reqwest::get(format!("{}/metrics", node.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    r.text().await.unwrap()
}

fn parse(text: &str) -> Scrape {
    let mut m = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        m.insert(series.to_owned(), value.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line:?}")));
    }
    Scrape(m)
}

async fn scrape(node: &TestNode) -> Scrape {
    parse(&scrape_text(node).await)
}

/// Polls the node's metrics until `series` reaches `want` (the served-blob
/// counter moves when the server sees its body end, just after the client).
async fn scrape_when(node: &TestNode, series: &str, want: f64) -> Scrape {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let s = scrape(node).await;
        if s.get(series) >= want || Instant::now() > end {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get_ok(url: &str) -> Vec<u8> {
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    read_all(r).await.unwrap()
}

fn node_spec(peers: Vec<String>, origins: Vec<String>) -> NodeSpec {
    NodeSpec { peers, origins, elect_owner: false, peer_timeout: Duration::from_millis(800), ..Default::default() }
}

#[tokio::test]
async fn counters_move_by_exactly_a_peer_pull_a_local_hit_and_a_corrupt_peer_then_an_origin() {
    let one = blob(81, 300_000);
    let two = blob(82, 100_000);
    let (d1, d2) = (Digest::of(&one), Digest::of(&two));
    let holder = TestNode::start(NodeSpec::default());
    holder.put(&one);
    let liar = HostilePeer::start(Hostility::WrongBytes, std::slice::from_ref(&two), &[]);
    let origin = TestOrigin::start(std::slice::from_ref(&two), OriginMode::Good);
    let c = TestNode::start(node_spec(vec![holder.addr(), liar.addr()], vec![origin.template()]));
    let before = scrape(&c).await;

    let url = |d: &Digest| format!("{}/v1/fetch/{d}", c.url());
    assert!(get_ok(&url(&d1)).await == one, "pull-through from the peer");
    assert!(get_ok(&url(&d1)).await == one, "local hit");
    assert!(get_ok(&url(&d2)).await == two, "the liar, then the origin");

    let after = scrape_when(&c, r#"cairn_served_blobs_total{api="v1",source="origin"}"#, 1.0).await;
    let (n1, n2) = (one.len() as f64, two.len() as f64);
    let want: &[(&str, f64)] = &[
        (r#"cairn_served_bytes_total{api="v1",source="peer"}"#, n1),
        (r#"cairn_served_bytes_total{api="v1",source="local"}"#, n1),
        (r#"cairn_served_bytes_total{api="v1",source="origin"}"#, n2),
        (r#"cairn_served_bytes_total{api="v1",source="owner"}"#, 0.0),
        (r#"cairn_served_blobs_total{api="v1",source="peer"}"#, 1.0),
        (r#"cairn_served_blobs_total{api="v1",source="local"}"#, 1.0),
        (r#"cairn_served_blobs_total{api="v1",source="origin"}"#, 1.0),
        (r#"cairn_cache_hits_total{api="v1"}"#, 1.0),
        (r#"cairn_cache_misses_total{api="v1"}"#, 2.0),
        (r#"cairn_cache_hits_total{api="v2"}"#, 0.0),
        (r#"cairn_fetch_attempts_total{source="peer",result="ok"}"#, 1.0),
        (r#"cairn_fetch_attempts_total{source="peer",result="corrupt"}"#, 1.0),
        (r#"cairn_fetch_attempts_total{source="origin",result="ok"}"#, 1.0),
        // The liar sends the right length of wrong bytes.
        (r#"cairn_fetch_received_bytes_total{source="peer"}"#, n1 + n2),
        (r#"cairn_fetch_received_bytes_total{source="origin"}"#, n2),
        (r#"cairn_origin_egress_bytes_total{source="origin"}"#, n2),
        (r#"cairn_origin_requests_total{source="origin"}"#, 1.0),
        (r#"cairn_origin_requests_total{source="upstream"}"#, 0.0),
        (r#"cairn_verification_failures_total{source="peer"}"#, 1.0),
        (r#"cairn_verification_failures_total{source="origin"}"#, 0.0),
        (r#"cairn_fetch_duration_seconds_count{source="peer"}"#, 1.0),
        (r#"cairn_fetch_duration_seconds_count{source="origin"}"#, 1.0),
        (r#"cairn_fetch_ttfb_seconds_count{source="peer"}"#, 2.0),
        (r#"cairn_fetch_ttfb_seconds_count{source="origin"}"#, 1.0),
        ("cairn_fetch_joins_total", 0.0),
        (r#"cairn_http_requests_total{api="v1",route="fetch",status="2xx"}"#, 3.0),
        ("cairn_gc_runs_total", 0.0),
    ];
    let mut wrong = Vec::new();
    for (series, delta) in want {
        let got = after.get(series) - before.get(series);
        if got != *delta {
            wrong.push(format!("{series}: moved by {got}, expected {delta}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(after.get("cairn_transfers_in_flight"), 0.0);
    assert_eq!(after.get(&format!(r#"cairn_peer_up{{peer="{}"}}"#, holder.addr())), 1.0);
    assert_eq!(after.get(&format!(r#"cairn_peer_up{{peer="{}"}}"#, liar.addr())), 0.0, "marked down");
    assert!(after.0.contains_key(&format!(r#"cairn_peer_last_contact_age_seconds{{peer="{}"}}"#, holder.addr())));
    assert!(after.get("cairn_disk_size_bytes") > 0.0);
    assert!(after.get("cairn_disk_free_bytes") > 0.0);
    // No digest and no peer other than the configured ones in any label.
    let text = scrape_text(&c).await;
    assert!(!text.contains(&d1.to_string()[7..]) && !text.contains(&d2.to_string()[7..]), "{text}");
}

#[tokio::test]
async fn v2_blob_reads_count_as_v2_by_their_source() {
    let data = blob(83, 200_000);
    let d = Digest::of(&data);
    let holder = TestNode::start(NodeSpec::default());
    holder.put(&data);
    let c = TestNode::start(NodeSpec { v2: true, ..node_spec(vec![holder.addr()], vec![]) });
    let before = scrape(&c).await;
    let url = format!("{}/v2/team/app/blobs/{}", c.url(), d.oci());
    assert!(get_ok(&url).await == data, "streamed from the peer");
    common::cached(&c.store, c.dir(), &d).await;
    assert!(get_ok(&url).await == data, "then local");
    let after = scrape_when(&c, r#"cairn_served_blobs_total{api="v2",source="local"}"#, 1.0).await;
    let n = data.len() as f64;
    for (series, delta) in [
        (r#"cairn_served_bytes_total{api="v2",source="peer"}"#, n),
        (r#"cairn_served_bytes_total{api="v2",source="local"}"#, n),
        (r#"cairn_served_blobs_total{api="v2",source="peer"}"#, 1.0),
        (r#"cairn_served_blobs_total{api="v2",source="local"}"#, 1.0),
        (r#"cairn_cache_hits_total{api="v2"}"#, 1.0),
        (r#"cairn_cache_misses_total{api="v2"}"#, 1.0),
        (r#"cairn_cache_misses_total{api="v1"}"#, 0.0),
        (r#"cairn_fetch_attempts_total{source="peer",result="ok"}"#, 1.0),
        (r#"cairn_http_requests_total{api="v2",route="blob",status="2xx"}"#, 2.0),
        ("cairn_fetch_joins_total", 0.0),
    ] {
        assert_eq!(after.get(series) - before.get(series), delta, "{series}");
    }
}

/// An origin that answers only once the test opens its gate.
struct GatedOrigin {
    blob: bytes::Bytes,
    asked: AtomicUsize,
    gate: tokio::sync::Semaphore,
}

async fn gated_blob(State(o): State<Arc<GatedOrigin>>, Path(_d): Path<String>) -> Vec<u8> {
    o.asked.fetch_add(1, Ordering::SeqCst);
    let _open = o.gate.acquire().await;
    o.blob.to_vec()
}

#[tokio::test]
async fn a_request_that_joins_a_running_transfer_counts_one_single_flight_join() {
    let data = blob(84, 50_000);
    let d = Digest::of(&data);
    let o = Arc::new(GatedOrigin {
        blob: data.clone().into(),
        asked: AtomicUsize::new(0),
        gate: tokio::sync::Semaphore::new(0),
    });
    let app = Router::new().route("/blobs/{d}", get(gated_blob)).with_state(Arc::clone(&o));
    let server = Server::spawn(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), app);
    let c = TestNode::start(node_spec(vec![], vec![format!("http://{}/blobs/{{digest}}", server.addr())]));
    let before = scrape(&c).await;
    let url = format!("{}/v1/fetch/{d}", c.url());
    let first = tokio::spawn(get_ok_owned(url.clone()));
    assert!(common::wait_until(Duration::from_secs(10), || o.asked.load(Ordering::SeqCst) == 1).await);
    let second = tokio::spawn(get_ok_owned(url));
    // The second request is counted as it joins, before any byte moves.
    let end = Instant::now() + Duration::from_secs(10);
    while scrape(&c).await.get("cairn_fetch_joins_total") - before.get("cairn_fetch_joins_total") < 1.0 {
        assert!(Instant::now() < end, "the second request never joined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    o.gate.add_permits(1);
    assert!(first.await.unwrap() == data);
    assert!(second.await.unwrap() == data);
    let after = scrape(&c).await;
    assert_eq!(o.asked.load(Ordering::SeqCst), 1, "one transfer for both");
    assert_eq!(after.get("cairn_fetch_joins_total") - before.get("cairn_fetch_joins_total"), 1.0);
    let attempts = r#"cairn_origin_requests_total{source="origin"}"#;
    assert_eq!(after.get(attempts) - before.get(attempts), 1.0);
}

async fn get_ok_owned(url: String) -> Vec<u8> {
    get_ok(&url).await
}

#[tokio::test]
async fn metrics_need_what_v1_peers_needs_under_an_auth_policy() {
    let node = TestNode::start(NodeSpec::default());
    let url = |p: &str| format!("{}{p}", node.url());
    assert_eq!(reqwest::get(url("/metrics")).await.unwrap().status(), 200, "pulls are open by default");
    let cfg: AuthConfig = serde_json::from_value(serde_json::json!({"anonymous": []})).unwrap();
    node.state.auth.set(Policy::from_config(&cfg).unwrap());
    let peers = reqwest::get(url("/v1/peers")).await.unwrap().status();
    let metrics = reqwest::get(url("/metrics")).await.unwrap().status();
    assert_eq!(peers, 401);
    assert_eq!(metrics, peers);
}

#[tokio::test]
async fn a_scrape_reads_disk_use_from_the_filesystem_without_walking_the_store() {
    let node = TestNode::start(NodeSpec::default());
    node.put(b"a blob");
    // A walk of the store would fail here; statvfs of the data dir does not.
    std::fs::remove_dir_all(node.dir().join("objects")).unwrap();
    let s = scrape(&node).await;
    let vfs = rustix::fs::statvfs(node.dir()).unwrap();
    assert_eq!(s.get("cairn_disk_size_bytes"), (vfs.f_blocks * vfs.f_frsize) as f64);
    assert!(s.get("cairn_disk_used_bytes") > 0.0);
    assert!(s.get("cairn_disk_free_bytes") > 0.0);
}

#[tokio::test]
async fn record_gc_counts_runs_deleted_blobs_and_bytes() {
    let node = TestNode::start(NodeSpec::default());
    let report = cairn_store::GcReport {
        blobs: vec![(Digest::of(b"x"), 10), (Digest::of(b"y"), 32)],
        bytes: 42,
        ..Default::default()
    };
    node.state.metrics.record_gc(&report);
    node.state.metrics.record_gc(&cairn_store::GcReport::default());
    let s = scrape(&node).await;
    assert_eq!(s.get("cairn_gc_runs_total"), 2.0);
    assert_eq!(s.get("cairn_gc_deleted_blobs_total"), 2.0);
    assert_eq!(s.get("cairn_gc_deleted_bytes_total"), 42.0);
}

#[tokio::test]
async fn promtool_check_metrics_accepts_the_output() {
    let data = blob(85, 10_000);
    let holder = TestNode::start(NodeSpec::default());
    let d = holder.put(&data);
    // With the bounded cache on, so its gauges and counters are checked too.
    let cache = Some(cairn_store::cache::Watermarks { max_bytes: 1 << 30, min_free: 0 });
    let c = TestNode::start(NodeSpec { v2: true, cache, ..node_spec(vec![holder.addr()], vec![]) });
    // Every family with samples: a fetch, a hit, a GC.
    get_ok(&format!("{}/v1/fetch/{d}", c.url())).await;
    get_ok(&format!("{}/v1/fetch/{d}", c.url())).await;
    c.state.metrics.record_gc(&cairn_store::GcReport::default());
    let text = scrape_text(&c).await;
    if let Err(e) = cairn_testkit::promtool_check(&text) {
        panic!("promtool: {e}\n{text}");
    }
}

#[tokio::test]
async fn the_readme_metrics_table_names_every_exported_metric() {
    let holder = TestNode::start(NodeSpec::default());
    let cache = Some(cairn_store::cache::Watermarks { max_bytes: 1 << 30, min_free: 0 });
    let c = TestNode::start(NodeSpec { v2: true, cache, ..node_spec(vec![holder.addr()], vec![]) });
    c.state.metrics.record_gc(&cairn_store::GcReport::default());
    let d = holder.put(b"for the table");
    get_ok(&format!("{}/v1/fetch/{d}", c.url())).await;
    let text = scrape_text(&c).await;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split("### Metrics").nth(1).expect("README has a ### Metrics section");
    let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    assert!(names.len() >= 20, "{names:?}");
    let missing: Vec<&&str> = names.iter().filter(|n| !section.contains(&format!("`{n}`"))).collect();
    assert!(missing.is_empty(), "README's Metrics section lacks {missing:?}");
}

#[tokio::test]
async fn requests_on_the_registry_only_listener_are_counted_in_the_nodes_metrics() {
    let node = TestNode::start(NodeSpec { v2: true, ..Default::default() });
    let app = cairn_http::v2::registry_app(node.state.v2_state().unwrap());
    let registry = Server::spawn(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), app);
    let series = r#"cairn_http_requests_total{api="v2",route="base",status="2xx"}"#;
    let before = scrape(&node).await.get(series);
    let r = reqwest::get(format!("http://{}/v2/", registry.addr())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(scrape(&node).await.get(series) - before, 1.0);
}
