//! The cluster over real HTTP: pull-through, every fault its own test,
//! single-flight, sync (interrupted and resumed), listings and health.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_http::Client;
use cairn_store::{Digest, RefFile};
use cairn_testkit::{
    HostilePeer, Hostility, NodeSpec, OriginMode, TestNode, TestOrigin, blob, dead_addr, read_all, ref_file_for,
    start_cluster,
};
use common::{cached, tmp_entries, wait_until};
use futures_util::StreamExt;

fn spec(peers: Vec<String>, origins: Vec<String>) -> NodeSpec {
    NodeSpec { peers, origins, peer_timeout: Duration::from_millis(800), ..Default::default() }
}

async fn fetch(node: &TestNode, d: &Digest) -> reqwest::Response {
    reqwest::get(format!("{}/v1/fetch/{d}", node.url())).await.unwrap()
}

#[tokio::test]
async fn blob_put_on_a_is_fetched_through_c_cached_and_served_by_c_after_a_stops() {
    let mut nodes = start_cluster(3, spec(vec![], vec![]));
    let data = blob(10, 3 << 20);
    let d = nodes[0].put(&data);
    let r = fetch(&nodes[2], &d).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cairn-source"], format!("peer {}", nodes[0].addr()));
    assert_eq!(r.content_length(), Some(data.len() as u64));
    assert!(read_all(r).await.unwrap() == data);
    assert!(cached(&nodes[2].store, nodes[2].dir(), &d).await, "C cached a verified copy");
    assert_eq!(nodes[1].counters.get("GET /v1/blobs"), 0, "B was asked by HEAD only");

    nodes[0].stop();
    let r = reqwest::get(format!("{}/v1/blobs/{d}", nodes[2].url())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == data);
    let r = fetch(&nodes[2], &d).await;
    assert_eq!(r.headers()["x-cairn-source"], "local");
}

#[tokio::test]
async fn blob_get_on_a_node_never_goes_to_its_peers() {
    let nodes = start_cluster(2, spec(vec![], vec![]));
    let d = nodes[0].put(b"only on a");
    let r = reqwest::get(format!("{}/v1/blobs/{d}", nodes[1].url())).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(nodes[0].counters.get("HEAD /v1/blobs") + nodes[0].counters.get("GET /v1/blobs"), 0);
}

#[tokio::test]
async fn peer_down_with_connection_refused_adds_under_a_second_and_is_marked() {
    let holder = TestNode::start(NodeSpec::default());
    let data = blob(11, 100_000);
    let d = holder.put(&data);
    let dead = dead_addr();
    let c = TestNode::start(NodeSpec {
        peers: vec![dead.clone(), holder.addr()],
        peer_timeout: Duration::from_secs(10),
        ..Default::default()
    });
    let start = Instant::now();
    let r = fetch(&c, &d).await;
    assert_eq!(r.status(), 200);
    assert!(read_all(r).await.unwrap() == data);
    assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());
    let peers = c.state.cluster.peers().snapshot();
    let p = peers.iter().find(|p| p.address == dead).unwrap();
    assert!(!p.healthy, "refused peer is marked unhealthy at once");
}

#[tokio::test]
async fn hanging_peer_is_abandoned_after_the_peer_timeout_and_the_origin_serves() {
    let data = blob(12, 50_000);
    let hang = HostilePeer::start(Hostility::Hang, std::slice::from_ref(&data), &[]);
    let origin = TestOrigin::start(std::slice::from_ref(&data), OriginMode::Good);
    let c = TestNode::start(NodeSpec {
        peers: vec![hang.addr()],
        origins: vec![origin.template()],
        peer_timeout: Duration::from_millis(500),
        ..Default::default()
    });
    let start = Instant::now();
    let r = fetch(&c, &Digest::of(&data)).await;
    assert_eq!(r.status(), 200);
    assert!(read_all(r).await.unwrap() == data);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(origin.hits(), 1);
    assert!(!c.state.cluster.peers().snapshot()[0].healthy);
}

#[tokio::test]
async fn peer_sending_wrong_bytes_is_rejected_marked_and_the_next_source_is_used() {
    let data = blob(13, 100_000);
    let d = Digest::of(&data);
    let liar = HostilePeer::start(Hostility::WrongBytes, std::slice::from_ref(&data), &[]);
    let origin = TestOrigin::start(std::slice::from_ref(&data), OriginMode::Good);
    let c = TestNode::start(spec(vec![liar.addr()], vec![origin.template()]));
    let r = fetch(&c, &d).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cairn-source"], origin_name(&origin));
    assert!(read_all(r).await.unwrap() == data);
    assert_eq!(liar.gets(), 1);
    assert_eq!(origin.hits(), 1);
    assert!(cached(&c.store, c.dir(), &d).await);
    assert!(!c.state.cluster.peers().snapshot()[0].healthy);
}

fn origin_name(o: &TestOrigin) -> String {
    format!("origin {}", o.template())
}

#[tokio::test]
async fn wrong_bytes_after_streaming_began_abort_the_caller_and_the_next_request_succeeds() {
    // Big enough that bytes reach the caller before the digest can be checked.
    let data = blob(14, 4 << 20);
    let d = Digest::of(&data);
    let liar = HostilePeer::start(Hostility::WrongBytes, std::slice::from_ref(&data), &[]);
    let origin = TestOrigin::start(std::slice::from_ref(&data), OriginMode::Good);
    let c = TestNode::start(spec(vec![liar.addr()], vec![origin.template()]));
    let r = fetch(&c, &d).await;
    assert_eq!(r.status(), 200);
    let got = read_all(r).await;
    assert!(got.is_err(), "a wrong body must never arrive complete");
    // The transfer falls back to the origin and caches the right bytes.
    let r = fetch(&c, &d).await;
    assert_eq!(r.status(), 200);
    assert!(read_all(r).await.unwrap() == data);
    assert!(cached(&c.store, c.dir(), &d).await);
    assert_eq!(liar.gets(), 1);
}

#[tokio::test]
async fn v2_blob_miss_streams_through_the_pipeline_and_wrong_bytes_cut_the_response() {
    let data = blob(31, 4 << 20);
    let d = Digest::of(&data);
    let liar = HostilePeer::start(Hostility::WrongBytes, std::slice::from_ref(&data), &[]);
    let origin = TestOrigin::start(std::slice::from_ref(&data), OriginMode::Good);
    let c = TestNode::start(NodeSpec { v2: true, ..spec(vec![liar.addr()], vec![origin.template()]) });
    let url = format!("{}/v2/team/app/blobs/{}", c.url(), d.oci());
    // Streamed, not fetched whole first: the wrong bytes reach the client
    // before the digest can be checked, so its body is cut.
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(read_all(r).await.is_err(), "a wrong body must never arrive complete");
    // The transfer went on with the origin; the blob is stored and linked.
    assert!(cached(&c.store, c.dir(), &d).await);
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], d.oci());
    assert_eq!(r.content_length(), Some(data.len() as u64));
    assert!(read_all(r).await.unwrap() == data);
    assert_eq!((liar.gets(), origin.hits()), (1, 1));
}

#[tokio::test]
async fn v2_blob_miss_is_streamed_from_a_peer_and_then_served_locally() {
    let holder = TestNode::start(NodeSpec::default());
    let data = blob(32, 3 << 20);
    let d = holder.put(&data);
    let c = TestNode::start(NodeSpec { v2: true, ..spec(vec![holder.addr()], vec![]) });
    let url = format!("{}/v2/team/app/blobs/{}", c.url(), d.oci());
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.content_length(), Some(data.len() as u64));
    assert!(read_all(r).await.unwrap() == data);
    assert!(cached(&c.store, c.dir(), &d).await);
    assert_eq!(holder.counters.get("GET /v1/blobs"), 1);
    let r = reqwest::Client::new().head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], data.len().to_string().as_str());
    assert_eq!(holder.counters.get("GET /v1/blobs"), 1, "the second request is served locally");
    let ranged = reqwest::Client::new().get(&url).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(ranged.status(), 206);
    assert!(read_all(ranged).await.unwrap() == data[10..20]);
}

#[tokio::test]
async fn peer_closing_mid_stream_aborts_the_caller_and_nothing_partial_is_stored() {
    // Half of 4 MiB is past the hold-back, so the caller is already receiving.
    let data = blob(15, 4 << 20);
    let d = Digest::of(&data);
    let dying = HostilePeer::start(Hostility::DieMidStream, std::slice::from_ref(&data), &[]);
    let c = TestNode::start(spec(vec![dying.addr()], vec![]));
    let r = fetch(&c, &d).await;
    assert_eq!(r.status(), 200);
    let got = read_all(r).await;
    assert!(got.is_err(), "the caller's body must be cut, not end cleanly");
    assert!(!c.store.exists(&d));
    assert!(wait_until(Duration::from_secs(5), || tmp_entries(c.dir()) == 0).await);
    assert!(!c.state.cluster.peers().snapshot()[0].healthy);
}

#[tokio::test]
async fn peer_closing_mid_stream_of_a_small_blob_is_replaced_by_the_next_source_unseen() {
    let data = blob(22, 600_000);
    let d = Digest::of(&data);
    let dying = HostilePeer::start(Hostility::DieMidStream, std::slice::from_ref(&data), &[]);
    let origin = TestOrigin::start(std::slice::from_ref(&data), OriginMode::Good);
    let c = TestNode::start(spec(vec![dying.addr()], vec![origin.template()]));
    let r = fetch(&c, &d).await;
    assert_eq!(r.status(), 200);
    assert!(read_all(r).await.unwrap() == data);
    assert_eq!((dying.gets(), origin.hits()), (1, 1));
}

#[tokio::test]
async fn truncated_body_from_a_peer_is_rejected_and_the_next_peer_serves() {
    let data = blob(16, 300_000);
    let d = Digest::of(&data);
    let short = HostilePeer::start(Hostility::Truncated, std::slice::from_ref(&data), &[]);
    let good = TestNode::start(NodeSpec::default());
    good.put(&data);
    let c = TestNode::start(spec(vec![short.addr()], vec![]));
    // The truncating peer is the only source: the caller gets an error, not a short body.
    let r = fetch(&c, &d).await;
    match r.status().as_u16() {
        200 => assert!(read_all(r).await.is_err()),
        s => assert_eq!(s, 502),
    }
    assert!(!c.store.exists(&d));

    let c2 = TestNode::start(spec(vec![short.addr(), good.addr()], vec![]));
    c2.state.cluster.peers().mark_up(&good.addr(), "good", Duration::from_millis(50));
    c2.state.cluster.peers().mark_up(&short.addr(), "short", Duration::from_millis(1));
    let r = fetch(&c2, &d).await;
    assert_eq!(r.status(), 200);
    assert!(read_all(r).await.unwrap() == data);
}

#[tokio::test]
async fn peer_stalling_mid_stream_is_cut_after_the_timeout() {
    let data = blob(17, 1 << 20);
    let d = Digest::of(&data);
    let stall = HostilePeer::start(Hostility::StallMidStream, std::slice::from_ref(&data), &[]);
    let origin = TestOrigin::start(std::slice::from_ref(&data), OriginMode::Good);
    let c = TestNode::start(NodeSpec {
        peers: vec![stall.addr()],
        origins: vec![origin.template()],
        peer_timeout: Duration::from_millis(400),
        ..Default::default()
    });
    let start = Instant::now();
    let r = fetch(&c, &d).await;
    // Half a MiB had arrived, all still held back: the caller sees only the origin's bytes.
    assert!(read_all(r).await.unwrap() == data);
    assert!(start.elapsed() >= Duration::from_millis(350) && start.elapsed() < Duration::from_secs(5));
    assert!(cached(&c.store, c.dir(), &d).await);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn origin_down_with_a_peer_holding_the_blob_is_served_from_the_peer() {
    let holder = TestNode::start(NodeSpec::default());
    let data = blob(18, 10_000);
    let d = holder.put(&data);
    let c = TestNode::start(spec(vec![holder.addr()], vec![format!("http://{}/{{digest}}", dead_addr())]));
    let r = fetch(&c, &d).await;
    assert_eq!(r.status(), 200);
    assert!(read_all(r).await.unwrap() == data);
}

#[tokio::test]
async fn origin_returning_wrong_bytes_is_rejected_and_nothing_is_stored() {
    let data = blob(19, 10_000);
    let d = Digest::of(&data);
    let origin = TestOrigin::start(std::slice::from_ref(&data), OriginMode::WrongBytes);
    let c = TestNode::start(spec(vec![], vec![origin.template()]));
    let r = fetch(&c, &d).await;
    assert_eq!(r.status(), 502);
    let v: serde_json::Value = r.json().await.unwrap();
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("wrong bytes") && e.contains(&d.to_string()), "{e}");
    assert!(!c.store.exists(&d));
    assert_eq!(tmp_entries(c.dir()), 0);
}

#[tokio::test]
async fn blob_absent_everywhere_is_404_naming_what_was_tried() {
    let peer = TestNode::start(NodeSpec::default());
    let origin = TestOrigin::start(&[], OriginMode::Good);
    let c = TestNode::start(spec(vec![peer.addr()], vec![origin.template()]));
    let d = Digest::of(b"nowhere");
    let r = fetch(&c, &d).await;
    assert_eq!(r.status(), 404);
    let v: serde_json::Value = r.json().await.unwrap();
    let e = v["error"].as_str().unwrap();
    assert!(e.contains(&peer.addr()) && e.contains("origin"), "{e}");
}

#[tokio::test]
async fn cdn_fallback_disabled_means_origins_are_never_asked() {
    let data = blob(20, 1000);
    let origin = TestOrigin::start(std::slice::from_ref(&data), OriginMode::Good);
    let c = TestNode::start(NodeSpec {
        origins: vec![origin.template()],
        enable_cdn_fallback: false,
        ..spec(vec![], vec![])
    });
    assert_eq!(fetch(&c, &Digest::of(&data)).await.status(), 404);
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn fifty_concurrent_fetches_of_one_missing_blob_reach_the_origin_once() {
    let data = Arc::new(blob(21, 32 << 20));
    let d = Digest::of(&data);
    let origin = TestOrigin::start(std::slice::from_ref(&*data), OriginMode::Good);
    let c = TestNode::start(spec(vec![], vec![origin.template()]));
    let url = format!("{}/v1/fetch/{d}", c.url());
    let client = reqwest::Client::new();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (client, url, data) = (client.clone(), url.clone(), Arc::clone(&data));
            tokio::spawn(async move {
                let r = client.get(url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let mut s = r.bytes_stream();
                let mut off = 0usize;
                while let Some(c) = s.next().await {
                    let c = c.unwrap();
                    assert!(c[..] == data[off..off + c.len()], "bytes differ at {off}");
                    off += c.len();
                }
                assert_eq!(off, data.len());
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(origin.hits(), 1);
    assert!(cached(&c.store, c.dir(), &d).await);
}

fn manifest_json(name: &str, digests: &[Digest]) -> Vec<u8> {
    let objects: serde_json::Map<String, serde_json::Value> =
        digests.iter().enumerate().map(|(i, d)| (format!("f/{i}"), d.to_string().into())).collect();
    serde_json::to_vec_pretty(
        &serde_json::json!({"name": name, "created_at": "2024-01-01T00:00:00Z", "objects": objects}),
    )
    .unwrap()
}

#[tokio::test]
async fn sync_of_200_blobs_interrupted_by_killing_the_source_resumes_with_only_the_rest() {
    let src = TestNode::start(NodeSpec::default());
    let digests: Vec<Digest> = (0..200).map(|i| src.put(&blob(1000 + i, 20_000 + i as usize))).collect();
    let json = manifest_json("tree", &digests);
    let rf = ref_file_for("tree", &json);
    src.store.save_manifest_bytes(&rf, &json).unwrap();
    let dst = TestNode::start(NodeSpec { max_concurrent_fetches: 4, ..spec(vec![], vec![]) });

    // Kill the source once it has served 50 blobs (the next GETs hang until then).
    let dst_store = dst.store.clone();
    let mut src = src;
    src.counters.hang_after("GET /v1/blobs", 50);
    let cluster = dst.state.cluster.clone();
    let (src_addr, rf2) = (src.addr(), rf.clone());
    let sync = tokio::spawn(async move { cluster.sync(&src_addr, &rf2, Arc::new(|_| {})).await });
    let count = || dst_store.list().unwrap().count();
    assert!(wait_until(Duration::from_secs(30), || src.counters.get("GET /v1/blobs") > 50).await);
    src.stop();
    let err = sync.await.unwrap().unwrap_err().to_string();
    assert!(err.contains("run the sync again"), "{err}");
    let have = count();
    assert!((45..=50).contains(&have), "{have} blobs arrived before the kill");
    assert!(!dst.dir().join("refs").join(rf.as_str()).exists(), "no manifest before all blobs");
    assert_eq!(tmp_entries(dst.dir()), 0);

    let src = src.restart();
    let report = dst.state.cluster.sync(&src.addr(), &rf, Arc::new(|_| {})).await.unwrap();
    assert_eq!(report.fetched, 200 - have);
    assert_eq!(src.counters.get("GET /v1/blobs"), 200 - have);
    assert_eq!(std::fs::read(dst.dir().join("refs").join(rf.as_str())).unwrap(), json);
    for d in &digests {
        assert!(dst.store.exists(d));
    }
}

#[tokio::test]
async fn sync_over_http_reports_what_it_fetched() {
    let nodes = start_cluster(2, NodeSpec::default());
    let ds: Vec<Digest> = (0..5).map(|i| nodes[0].put(&blob(i, 1000))).collect();
    let json = manifest_json("small", &ds);
    let rf = ref_file_for("small", &json);
    nodes[0].store.save_manifest_bytes(&rf, &json).unwrap();
    let client = Client::new(Duration::from_secs(5));
    let rep = client.sync(&nodes[1].addr(), &nodes[0].addr(), &rf).await.unwrap();
    assert_eq!((rep.fetched, rep.blob_count, rep.name.as_str()), (5, 5, "small"));
    let rep = client.sync(&nodes[1].addr(), &nodes[0].addr(), &rf).await.unwrap();
    assert_eq!(rep.fetched, 0, "a second sync has nothing left to fetch");
}

#[tokio::test]
async fn sync_refuses_unsafe_peer_manifests_naming_the_peer_and_field_and_writes_nothing() {
    let d = Digest::of(b"x");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "evil-000000000001.json",
            serde_json::to_vec(&serde_json::json!({"name": "../../etc", "objects": {}})).unwrap(),
            "name",
        ),
        (
            "abs-000000000001.json",
            serde_json::to_vec(&serde_json::json!({"name": "abs", "objects": {"/etc/passwd": d.to_string()}})).unwrap(),
            "objects",
        ),
        (
            "dots-000000000001.json",
            serde_json::to_vec(&serde_json::json!({"name": "dots", "objects": {"a/../../b": d.to_string()}})).unwrap(),
            "..",
        ),
        (
            "short-000000000001.json",
            serde_json::to_vec(&serde_json::json!({"name": "short", "objects": {"a": "abc"}})).unwrap(),
            "3 hex",
        ),
        ("junk-000000000001.json", b"<html>not json</html>".to_vec(), "invalid"),
    ];
    let peer = HostilePeer::start(
        Hostility::Honest,
        &[b"x".to_vec()],
        &cases.iter().map(|(k, v, _)| (*k, v.clone())).collect::<Vec<_>>(),
    );
    let c = TestNode::start(NodeSpec::default());
    for (rf, _, field) in &cases {
        let err = c
            .state
            .cluster
            .sync(&peer.addr(), &RefFile::parse(rf).unwrap(), Arc::new(|_| {}))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&peer.addr()) && err.contains(field), "{rf}: {err}");
    }
    assert_eq!(peer.gets(), 0, "no blob is fetched for a refused manifest");
    assert_eq!(std::fs::read_dir(c.dir().join("refs")).unwrap().count(), 0);
}

#[tokio::test]
async fn sync_refuses_a_peer_manifest_not_bound_to_its_ref_file_before_fetching_blobs() {
    let data = b"x".to_vec();
    let json = manifest_json("app", &[Digest::of(&data)]);
    let right = cairn_testkit::ref_file_for("app", &json);
    let hex = &right.as_str()[4..16];
    let shadow = format!("base-{hex}.json");
    let peer = HostilePeer::start(
        Hostility::Honest,
        std::slice::from_ref(&data),
        &[("app-000000000000.json", json.clone()), (shadow.as_str(), json.clone())],
    );
    let c = TestNode::start(NodeSpec { peers: vec![peer.addr()], ..Default::default() });
    for rf in ["app-000000000000.json", shadow.as_str()] {
        let err = c
            .state
            .cluster
            .sync(&peer.addr(), &RefFile::parse(rf).unwrap(), Arc::new(|_| {}))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(rf) && err.contains(right.as_str()), "{rf}: {err}");
    }
    assert_eq!(peer.gets(), 0, "no blob is fetched for a refused manifest");
    assert_eq!(std::fs::read_dir(c.dir().join("refs")).unwrap().count(), 0);
}

#[tokio::test]
async fn sync_never_replaces_a_local_ref_file_holding_other_bytes() {
    let data = b"x".to_vec();
    let json = manifest_json("app", &[Digest::of(&data)]);
    let rf = ref_file_for("app", &json);
    let peer = HostilePeer::start(Hostility::Honest, std::slice::from_ref(&data), &[(rf.as_str(), json.clone())]);
    let c = TestNode::start(NodeSpec { peers: vec![peer.addr()], ..Default::default() });
    // A file the original wrote under that name, with other bytes.
    let local = c.dir().join("refs").join(rf.as_str());
    std::fs::write(&local, b"{\"name\":\"app\",\"objects\":{}}").unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/v1/manifests/{rf}/sync?peer={}", c.url(), peer.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("never replaced"));
    assert_eq!(peer.gets(), 0, "refused before any blob is fetched");
    assert_eq!(std::fs::read(&local).unwrap(), b"{\"name\":\"app\",\"objects\":{}}");
}

#[tokio::test]
async fn peer_answering_malformed_json_is_an_error_naming_the_peer() {
    let bad = HostilePeer::start(Hostility::BadJson, &[], &[]);
    let client = Client::new(Duration::from_secs(2));
    let e = client.manifests(&bad.addr()).await.unwrap_err().to_string();
    assert!(e.contains(&bad.addr()) && e.contains("malformed"), "{e}");
    let e = client.health(&bad.addr()).await.unwrap_err().to_string();
    assert!(e.contains(&bad.addr()), "{e}");
    // The node's cluster listing skips it instead of failing.
    let good = TestNode::start(NodeSpec::default());
    let c = TestNode::start(spec(vec![bad.addr(), good.addr()], vec![]));
    let r = reqwest::get(format!("{}/v1/cluster/manifests", c.url())).await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn cluster_manifests_and_stats_cover_every_node() {
    let nodes = start_cluster(3, NodeSpec::default());
    let d0 = nodes[0].put(b"a");
    let shared = manifest_json("shared", &[d0]);
    let rf = ref_file_for("shared", &shared);
    for n in &nodes[..2] {
        n.put(b"a");
        n.store.save_manifest_bytes(&rf, &shared).unwrap();
    }
    let only_json = manifest_json("only", &[d0]);
    let only = ref_file_for("only", &only_json);
    nodes[2].put(b"a");
    nodes[2].store.save_manifest_bytes(&only, &only_json).unwrap();

    let list: serde_json::Value =
        reqwest::get(format!("{}/v1/cluster/manifests", nodes[0].url())).await.unwrap().json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
    let stats: serde_json::Value =
        reqwest::get(format!("{}/v1/cluster/stats", nodes[0].url())).await.unwrap().json().await.unwrap();
    assert_eq!(
        stats,
        serde_json::json!({"total_nodes": 3, "healthy_nodes": 3, "total_manifests": 3, "unique_manifests": 2})
    );
}

#[tokio::test]
async fn peers_endpoint_has_the_seed_fields_with_latency_in_nanoseconds() {
    let nodes = start_cluster(2, NodeSpec::default());
    nodes[0].state.cluster.probe_all().await;
    let v: serde_json::Value =
        reqwest::get(format!("{}/v1/peers", nodes[0].url())).await.unwrap().json().await.unwrap();
    let p = &v.as_array().unwrap()[0];
    let mut keys: Vec<&String> = p.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["address", "duplicate_node_id", "healthy", "last_contact_ms", "latency", "node_id", "proven"]);
    assert_eq!(p["address"], nodes[1].addr());
    assert_eq!(p["node_id"], format!("node-{}", nodes[1].addr().rsplit(':').next().unwrap()));
    assert_eq!(p["healthy"], true);
    assert!(p["latency"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn health_loop_marks_a_dead_peer_down_and_heals_it_after_one_good_probe() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let c = TestNode::start(NodeSpec {
        peers: vec![addr.clone()],
        health_loop: true,
        health_interval: Duration::from_secs(30),
        ..Default::default()
    });
    let healthy = || c.state.cluster.peers().snapshot()[0].healthy;
    assert!(wait_until(Duration::from_secs(3), || !healthy()).await, "dead peer marked down");
    // Bring the peer up on that address: the re-probe comes within seconds, not the 30 s interval.
    let l = std::net::TcpListener::bind(&addr).unwrap();
    let _peer = TestNode::start_on(l, NodeSpec::default(), tempfile::tempdir().unwrap());
    let start = Instant::now();
    assert!(wait_until(Duration::from_secs(6), healthy).await, "peer healthy again");
    assert!(start.elapsed() < Duration::from_secs(6));
}

#[tokio::test]
async fn seed_format_manifest_from_a_peer_is_read_and_saved_verbatim_by_sync() {
    let data = b"seed object".to_vec();
    let d = Digest::of(&data);
    let json = format!(
        "{{\"Name\":\"legacy\",\"CreatedAt\":\"2023-03-04T05:06:07Z\",\"Objects\":{{\"etc/os-release\":\"{d}\"}}}}"
    );
    let rf = ref_file_for("legacy", json.as_bytes());
    let rf = rf.as_str();
    let seed = HostilePeer::start(Hostility::Honest, std::slice::from_ref(&data), &[(rf, json.clone().into_bytes())]);
    let c = TestNode::start(NodeSpec::default());
    let rep = c.state.cluster.sync(&seed.addr(), &RefFile::parse(rf).unwrap(), Arc::new(|_| {})).await.unwrap();
    assert_eq!((rep.name.as_str(), rep.fetched), ("legacy", 1));
    assert_eq!(std::fs::read_to_string(c.dir().join("refs").join(rf)).unwrap(), json);
    assert!(c.store.verify_blob(&d).unwrap());
    let list: serde_json::Value =
        reqwest::get(format!("{}/v1/manifests", c.url())).await.unwrap().json().await.unwrap();
    assert_eq!(list[0]["name"], "legacy");
    assert_eq!(list[0]["blob_count"], 1);
}

#[tokio::test]
async fn client_reads_a_seed_shaped_node_list_and_health() {
    let seed = HostilePeer::start(Hostility::Honest, &[], &[("m-000000000001.json", b"{}".to_vec())]);
    let client = Client::new(Duration::from_secs(2));
    let h = client.health(&seed.addr()).await.unwrap();
    assert_eq!((h.status.as_str(), h.node_id.as_str()), ("ok", "hostile"));
    let list = client.manifests(&seed.addr()).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].ref_file.as_str(), "m-000000000001.json");
    assert_eq!(list[0].node_id, "hostile");
}

#[tokio::test]
async fn unhealthy_peer_is_still_asked_after_the_healthy_ones_before_giving_up() {
    let holder = TestNode::start(NodeSpec::default());
    let empty = TestNode::start(NodeSpec::default());
    let d = holder.put(b"held");
    let c = TestNode::start(spec(vec![holder.addr(), empty.addr()], vec![]));
    c.state.cluster.peers().mark_down(&holder.addr(), "test: marked down");
    let r = fetch(&c, &d).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cairn-source"], format!("peer {}", holder.addr()).as_str());
    assert_eq!(r.bytes().await.unwrap(), &b"held"[..]);
    assert_eq!(empty.counters.get("HEAD /v1/blobs"), 1, "the healthy peer was asked too");
}
