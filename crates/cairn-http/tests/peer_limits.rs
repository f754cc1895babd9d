//! Bounds on what peers and sync callers can make a node do: only its own
//! peers are called, remote error pages are never relayed, slow or lying
//! sources are dropped, and the work of one request is bounded.

mod common;

use std::time::{Duration, Instant};

use cairn_store::{Digest, RefFile};
use cairn_testkit::{HostilePeer, Hostility, NodeSpec, OriginMode, SECRET, TestNode, TestOrigin, blob};

fn manifest_json(name: &str, ds: &[Digest]) -> Vec<u8> {
    let objects: serde_json::Map<String, serde_json::Value> =
        ds.iter().enumerate().map(|(i, d)| (format!("f{i}"), serde_json::json!(d.to_string()))).collect();
    serde_json::to_vec_pretty(
        &serde_json::json!({"name": name, "created_at": "2024-01-01T00:00:00Z", "objects": objects}),
    )
    .unwrap()
}

/// The ref file a manifest's bytes are stored under: `<name>-<12 hex of their SHA-256>.json`.
fn ref_for(name: &str, json: &[u8]) -> RefFile {
    RefFile::parse(&format!("{name}-{}.json", &Digest::of(json).to_string()[..12])).unwrap()
}

async fn sync_raw(node: &TestNode, rf: &str, peer_query: &str) -> (u16, String) {
    let url = format!("{}/v1/manifests/{rf}/sync?peer={peer_query}", node.url());
    let r = reqwest::Client::new().post(url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn sync_refuses_peers_that_are_not_configured_or_not_host_port_before_any_request() {
    let other = TestNode::start(NodeSpec::default());
    let d = other.put(&blob(1, 1000));
    let json = manifest_json("tree", &[d]);
    let rf = ref_for("tree", &json);
    other.store.save_manifest_bytes(&rf, &json).unwrap();
    let node = TestNode::start(NodeSpec::default());
    let a = other.addr();
    let port = a.rsplit_once(':').unwrap().1.to_owned();
    for q in [
        a.clone(),
        format!("http://{a}"),
        format!("http%3A%2F%2F{a}"),
        format!("a:b@{a}"),
        format!("a%3Ab%40{a}"),
        format!("{a}/v1/x"),
        format!("{a}%2Fv1%2Fx"),
        format!("localhost:{port}"),
        "%zz".to_owned(),
        String::new(),
    ] {
        let (status, body) = sync_raw(&node, rf.as_str(), &q).await;
        assert_eq!(status, 400, "peer={q}: {body}");
        assert!(body.contains("name one of this node's peers"), "peer={q}: {body}");
    }
    assert_eq!(other.counters.get("GET /v1/manifests"), 0, "no request left the node");
    assert!(!node.store.exists(&d));

    // The same address as a configured peer syncs.
    let node = TestNode::start(NodeSpec { peers: vec![a.clone()], ..Default::default() });
    let (status, body) = sync_raw(&node, rf.as_str(), &a).await;
    assert_eq!(status, 200, "{body}");
    assert!(node.store.exists(&d));
}

#[tokio::test]
async fn peer_error_pages_are_never_relayed_to_the_caller() {
    let data = blob(2, 1000);
    let peer = HostilePeer::start(Hostility::ErrorPage, std::slice::from_ref(&data), &[]);
    let node = TestNode::start(NodeSpec { peers: vec![peer.addr()], ..Default::default() });
    let json = manifest_json("tree", &[Digest::of(&data)]);
    let rf = ref_for("tree", &json);
    let (status, body) = sync_raw(&node, rf.as_str(), &peer.addr()).await;
    assert_eq!(status, 502, "{body}");
    assert!(!body.contains(SECRET), "{body}");
    assert!(body.contains("500") && body.contains(&peer.addr()), "says which peer failed and how: {body}");

    let r = reqwest::get(format!("{}/v1/fetch/{}", node.url(), Digest::of(&data))).await.unwrap();
    assert!(r.status().is_server_error());
    let body = r.text().await.unwrap();
    assert!(!body.contains(SECRET), "{body}");
}

fn limited(peers: Vec<String>, origins: Vec<String>, tune: fn(&mut cairn_cluster::ClusterConfig)) -> NodeSpec {
    NodeSpec { peers, origins, elect_owner: false, tune: Some(tune), ..Default::default() }
}

#[tokio::test]
async fn trickling_peers_are_dropped_for_the_next_source_and_do_not_hold_the_permit() {
    let a = blob(3, 200_000);
    let b = blob(4, 200_000);
    let t1 = HostilePeer::start(Hostility::Trickle, std::slice::from_ref(&a), &[]);
    let t2 = HostilePeer::start(Hostility::Trickle, std::slice::from_ref(&a), &[]);
    let origin = TestOrigin::start(&[a.clone(), b.clone()], OriginMode::Good);
    let mut spec = limited(vec![t1.addr(), t2.addr()], vec![origin.template()], |c| {
        c.min_transfer_rate = 64 << 10;
        c.rate_window = Duration::from_millis(300);
    });
    // One permit: the trickled transfer holds it until it gives up.
    spec.max_concurrent_fetches = 1;
    let node = TestNode::start(spec);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let started = Instant::now();
    let get = |d: Digest| {
        let (http, url) = (http.clone(), format!("{}/v1/fetch/{d}", node.url()));
        async move {
            let r = http.get(url).send().await.unwrap();
            let source = r.headers()["x-cairn-source"].to_str().unwrap().to_owned();
            (r.status().as_u16(), source, r.bytes().await.unwrap())
        }
    };
    let ra = get(Digest::of(&a));
    let rb = async {
        // B asks once A's transfer holds the permit.
        assert!(common::wait_until(Duration::from_secs(5), || t1.gets() + t2.gets() > 0).await);
        get(Digest::of(&b)).await
    };
    let ((sa, srca, ba), (sb, _, bb)) = tokio::join!(ra, rb);
    let took = started.elapsed();
    assert_eq!((sa, sb), (200, 200));
    assert!(ba == a && bb == b);
    assert!(srca.starts_with("origin"), "A came from {srca}");
    assert!(took < Duration::from_secs(4), "both fetches took {took:?}");
    assert!(t1.gets() + t2.gets() >= 1);
}

#[tokio::test]
async fn a_peer_declaring_one_tib_is_abandoned_before_any_write_and_the_next_source_serves() {
    let data = blob(5, 300_000);
    let huge = HostilePeer::start(Hostility::HugeLength, std::slice::from_ref(&data), &[]);
    let origin = TestOrigin::start(std::slice::from_ref(&data), OriginMode::Good);
    // Default limits: 1 TiB is over max_blob_size, seen on HEAD already.
    let node = TestNode::start(limited(vec![huge.addr()], vec![origin.template()], |_| {}));
    let r = reqwest::get(format!("{}/v1/fetch/{}", node.url(), Digest::of(&data))).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["x-cairn-source"].to_str().unwrap().starts_with("origin"));
    assert!(r.bytes().await.unwrap() == data);
    assert_eq!(huge.gets(), 0, "the declared size alone was enough to refuse it");
    assert!(common::cached(&node.store, node.dir(), &Digest::of(&data)).await);
}

#[tokio::test]
async fn a_blob_larger_than_the_free_disk_space_is_refused_as_disk_full_before_any_write() {
    let data = blob(6, 300_000);
    let huge = HostilePeer::start(Hostility::HugeLength, std::slice::from_ref(&data), &[]);
    // No size limit: only the free-space check stands in the way of 1 TiB.
    let node = TestNode::start(limited(vec![huge.addr()], vec![], |c| c.max_blob_size = u64::MAX));
    let r = reqwest::get(format!("{}/v1/fetch/{}", node.url(), Digest::of(&data))).await.unwrap();
    assert!(r.status().is_server_error());
    let body = r.text().await.unwrap();
    assert!(body.contains("the disk is full"), "{body}");
    assert_eq!(huge.gets(), 1);
    assert_eq!(common::tmp_entries(node.dir()), 0, "nothing was written");
    assert!(!node.store.exists(&Digest::of(&data)));
}

#[tokio::test]
async fn a_manifest_over_max_manifest_objects_is_refused_before_any_fetch() {
    let src = TestNode::start(NodeSpec::default());
    let ds: Vec<Digest> = (0..6).map(|i| src.put(&blob(100 + i, 100))).collect();
    let json = manifest_json("wide", &ds);
    let rf = ref_for("wide", &json);
    src.store.save_manifest_bytes(&rf, &json).unwrap();
    let spec = || limited(vec![src.addr()], vec![], |c| c.max_manifest_objects = 5);

    let node = TestNode::start(spec());
    let (status, body) = sync_raw(&node, rf.as_str(), &src.addr()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("max_manifest_objects"), "{body}");
    let r = reqwest::Client::new()
        .put(format!("{}/v1/manifests/{rf}", node.url()))
        .body(json.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("max_manifest_objects"));
    assert_eq!(src.counters.get("GET /v1/blobs") + src.counters.get("HEAD /v1/blobs"), 0, "nothing was fetched");
}

#[tokio::test]
async fn two_concurrent_syncs_share_the_node_wide_fetch_bound() {
    let src = TestNode::start(NodeSpec::default());
    let mut rfs = Vec::new();
    for m in 0..2u64 {
        let ds: Vec<Digest> = (0..40).map(|i| src.put(&blob(1000 * (m + 1) + i, 300_000))).collect();
        let json = manifest_json(&format!("m{m}"), &ds);
        let rf = ref_for(&format!("m{m}"), &json);
        src.store.save_manifest_bytes(&rf, &json).unwrap();
        rfs.push(rf);
    }
    let mut spec = limited(vec![src.addr()], vec![], |_| {});
    spec.max_concurrent_fetches = 3;
    let node = TestNode::start(spec);
    let addr = src.addr();
    let (a, b) = tokio::join!(sync_raw(&node, rfs[0].as_str(), &addr), sync_raw(&node, rfs[1].as_str(), &addr));
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    assert_eq!(src.counters.get("GET /v1/blobs"), 80);
    let most = src.counters.max_in_flight("GET /v1/blobs");
    assert!((1..=3).contains(&most), "{most} blob GETs at once");
}

#[tokio::test]
async fn a_sync_whose_caller_disconnects_stops_fetching() {
    use std::io::Write;
    let blobs: Vec<Vec<u8>> = (0..200).map(|i| blob(5000 + i, 1000)).collect();
    let ds: Vec<Digest> = blobs.iter().map(|b| Digest::of(b)).collect();
    let json = manifest_json("slow", &ds);
    let rf = ref_for("slow", &json);
    let peer = HostilePeer::start(Hostility::Slow, &blobs, &[(rf.as_str(), json.clone())]);
    let mut spec = limited(vec![peer.addr()], vec![], |_| {});
    spec.max_concurrent_fetches = 2;
    let node = TestNode::start(spec);

    let mut conn = std::net::TcpStream::connect(node.addr()).unwrap();
    let req =
        format!("POST /v1/manifests/{rf}/sync?peer={} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", peer.addr());
    conn.write_all(req.as_bytes()).unwrap();
    assert!(common::wait_until(Duration::from_secs(10), || peer.gets() >= 6).await);
    drop(conn);
    // Once the transfers already running end, no new ones start.
    let cluster = node.state.cluster.clone();
    assert!(common::wait_until(Duration::from_secs(5), || cluster.transfers_in_flight() == 0).await);
    let last = peer.gets();
    let more = common::wait_until(Duration::from_millis(500), || peer.gets() > last).await;
    assert!(!more, "blob GETs went on after the caller left");
    assert!(last < 20, "{last} of 200 blobs were asked for");
}

#[tokio::test]
async fn an_origin_refusing_a_blob_is_asked_once_not_retried() {
    let data = blob(7, 1000);
    let origin = TestOrigin::start(std::slice::from_ref(&data), OriginMode::Refuse);
    let node = TestNode::start(limited(vec![], vec![origin.template()], |_| {}));
    let r = reqwest::get(format!("{}/v1/fetch/{}", node.url(), Digest::of(&data))).await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("403"));
    assert_eq!(origin.hits(), 1);
}

/// A tmpfs of `size` mounted on a fresh temp dir (needs root; `None`
/// otherwise). Lazily unmounted and removed on drop, after the node on it.
struct TinyDisk {
    path: std::path::PathBuf,
}

impl TinyDisk {
    fn mount(size: &str) -> Option<(TinyDisk, tempfile::TempDir)> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(std::env::var_os("CAIRN_REQUIRE_TOOLS").is_none(), "mounting a tmpfs failed (needs root)");
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        Some((TinyDisk { path: dir.path().to_owned() }, dir))
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

#[tokio::test]
async fn a_full_local_disk_fails_the_fetch_once_without_retrying_the_origin() {
    let Some((_disk, dir)) = TinyDisk::mount("256k") else { return };
    // Under HOLD_BACK, so no byte reaches the caller before the failure.
    let data = blob(8, 900_000);
    let d = Digest::of(&data);
    // No Content-Length: the free-space check cannot see it coming, the write fails.
    let origin = TestOrigin::start(std::slice::from_ref(&data), OriginMode::NoLength);
    let mut spec = limited(vec![], vec![origin.template()], |c| c.min_free_space = 0);
    spec.origin_retries = Some(2);
    let node = TestNode::start_on(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), spec, dir);
    let r = reqwest::get(format!("{}/v1/fetch/{d}", node.url())).await.unwrap();
    assert_eq!(r.status(), 507);
    let body = r.text().await.unwrap();
    assert!(body.contains("could not store blob") && body.contains("not at fault"), "{body}");
    assert_eq!(origin.hits(), 1, "a local write failure is not the origin's: asked once");
    assert_eq!(common::tmp_entries(node.dir()), 0);
}

#[tokio::test]
async fn tampered_upstream_bytes_are_502_naming_the_upstream_not_unknown() {
    let data = blob(9, 50_000);
    let d = Digest::of(&data);
    let up = cairn_testkit::BrokenRegistry::start(cairn_testkit::Breakage::Tamper, std::slice::from_ref(&data));
    let registry =
        cairn_cluster::upstream::UpstreamConfig { url: format!("http://{}", up.addr()), ..Default::default() };
    let node = TestNode::start(NodeSpec { registries: vec![registry], v2: true, ..Default::default() });
    let url = format!("{}/v2/library/app/blobs/{}", node.url(), d.oci());
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let r = reqwest::Client::new().request(method.clone(), &url).send().await.unwrap();
        assert_eq!(r.status(), 502, "{method}");
        if method == reqwest::Method::GET {
            let body = r.text().await.unwrap();
            assert!(body.contains(&up.addr()) && body.contains("wrong bytes"), "{body}");
            assert!(!body.contains("BLOB_UNKNOWN"), "{body}");
        }
    }
    assert!(!node.store.exists(&d));
}

#[tokio::test]
async fn a_peer_with_an_endless_manifest_listing_is_skipped_after_the_size_cap() {
    let huge = HostilePeer::start(Hostility::HugeListing, &[], &[]);
    let honest = TestNode::start(NodeSpec::default());
    let json = manifest_json("small", &[]);
    let rf = ref_for("small", &json);
    honest.store.save_manifest_bytes(&rf, &json).unwrap();
    let node = TestNode::start(NodeSpec { peers: vec![huge.addr(), honest.addr()], ..Default::default() });
    let r = reqwest::get(format!("{}/v1/cluster/manifests", node.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cairn-skipped-peers"], huge.addr().as_str());
    let list: Vec<serde_json::Value> = r.json().await.unwrap();
    assert_eq!(list.len(), 1, "the honest peer's manifest");
    assert_eq!(list[0]["ref_file"], rf.as_str());
    // The node stopped reading at the cap; what the peer got out beyond it
    // sits in the loopback socket buffers (at most their kernel maxima).
    let sent = huge.listing_bytes() as u64;
    let cap = cairn_http::client::MAX_LISTING_BYTES;
    let buffers = tcp_buffer_max("tcp_wmem") + tcp_buffer_max("tcp_rmem") + (2 << 20);
    assert!(sent <= cap + buffers, "the peer got {sent} bytes out, over the {cap} byte cap and {buffers} of buffers");
}

/// The largest size the kernel lets a TCP socket buffer grow to (`tcp_wmem`, `tcp_rmem`).
fn tcp_buffer_max(name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        .unwrap_or(8 << 20)
}

#[tokio::test]
async fn a_manifest_of_blobs_no_source_has_costs_a_bounded_number_of_requests() {
    // The peer serves a manifest (written as a legacy file) of 2,000 blobs nobody has.
    let src = TestNode::start(NodeSpec::default());
    let ds: Vec<Digest> = (0..2_000u64).map(|i| Digest::of(&i.to_le_bytes())).collect();
    let json = manifest_json("ghost", &ds);
    let rf = ref_for("ghost", &json);
    std::fs::write(src.dir().join("refs").join(rf.as_str()), &json).unwrap();
    let node = TestNode::start(limited(vec![src.addr()], vec![], |_| {}));
    let asked = || src.counters.get("HEAD /v1/blobs") + src.counters.get("GET /v1/blobs");

    let (status, body) = sync_raw(&node, rf.as_str(), &src.addr()).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("not tried"), "{body}");
    let after_sync = asked();
    assert!(after_sync <= 100, "a sync of 2,000 unfetchable blobs asked the peer {after_sync} times");

    // A push reports every missing blob, but asks sources for a bounded number of them.
    let r = reqwest::Client::new().put(format!("{}/v1/manifests/{rf}", node.url())).body(json).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["missing"].as_array().map(Vec::len), Some(2_000));
    let by_push = asked() - after_sync;
    assert!(by_push <= 100, "a push of 2,000 unfetchable blobs asked the peer {by_push} times");
}
