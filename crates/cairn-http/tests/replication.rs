//! `replicas: k` over real HTTP: pushes copied to the next holders of the
//! ranking, repair when a holder leaves, with cluster authentication on and
//! off; and the replication request refusing what a hostile caller sends.

mod common;

use std::time::Duration;

use cairn_cluster::ClusterConfig;
use cairn_cluster::membership::{ClusterSecret, PEER_HEADER};
use cairn_store::Digest;
use cairn_store::held::Role;
use cairn_testkit::{NodeSpec, TestNode, blob, start_cluster};
use common::wait_until;

const SECRET: &[u8] = b"the-replication-secret-0123456789";
const WAIT: Duration = Duration::from_secs(15);

fn two_copies(c: &mut ClusterConfig) {
    c.replicas = 2;
}

fn two_copies_with_secret(c: &mut ClusterConfig) {
    c.replicas = 2;
    c.cluster_secret = Some(ClusterSecret::new(SECRET).unwrap());
}

fn spec(tune: fn(&mut ClusterConfig)) -> NodeSpec {
    NodeSpec {
        health_loop: true,
        health_interval: Duration::from_millis(200),
        peer_timeout: Duration::from_millis(800),
        enable_cdn_fallback: false,
        tune: Some(tune),
        ..Default::default()
    }
}

/// Waits until every node knows every other's node id (owner ranking ready).
async fn members_known(nodes: &[&TestNode], n: usize) {
    let ok = wait_until(WAIT, || nodes.iter().all(|x| x.state.cluster.peers().members().len() == n)).await;
    assert!(ok, "the nodes never learnt each other's ids");
}

async fn push(node: &TestNode, data: &[u8]) -> Digest {
    let d = Digest::of(data);
    let r =
        reqwest::Client::new().put(format!("{}/v1/blobs/{d}", node.url())).body(data.to_vec()).send().await.unwrap();
    assert_eq!(r.status(), 201, "push to {}", node.addr());
    d
}

fn holds(node: &TestNode, d: &Digest) -> bool {
    node.store.exists(d) && node.store.held(d).ok().flatten().is_some()
}

async fn pull(node: &TestNode, d: &Digest) -> (u16, Vec<u8>) {
    let r = reqwest::get(format!("{}/v1/fetch/{d}", node.url())).await.unwrap();
    let s = r.status().as_u16();
    (s, r.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
}

/// The end-to-end scenario of the issue, with or without a cluster secret.
async fn three_nodes_keep_two_copies_through_a_holder_leaving(tune: fn(&mut ClusterConfig)) {
    let mut nodes = start_cluster(3, spec(tune));
    {
        let all: Vec<&TestNode> = nodes.iter().collect();
        members_known(&all, 2).await;
    }
    let blobs: Vec<Vec<u8>> = (0..4).map(|i| blob(100 + i, 50_000 + i as usize)).collect();
    let mut ds = Vec::new();
    for b in &blobs {
        ds.push(push(&nodes[0], b).await);
    }
    // The holders are A (the pusher) and the first other node of each ranking.
    let a_id = nodes[0].state.cluster.config().node_id.clone();
    for d in &ds {
        let ranking = nodes[0].state.cluster.ranking(d);
        let second = ranking.iter().find(|id| **id != a_id).unwrap().clone();
        let (holder, other) = if nodes[1].state.cluster.config().node_id == second { (1, 2) } else { (2, 1) };
        let ok = wait_until(WAIT, || holds(&nodes[holder], d)).await;
        assert!(ok, "blob {d} was never replicated to node {holder}");
        assert_eq!(nodes[holder].store.held(d).unwrap().unwrap().role, Role::Replica);
        assert_eq!(nodes[holder].store.held(d).unwrap().unwrap().pusher, a_id);
        assert!(!nodes[other].store.exists(d), "only k = 2 copies");
        assert_eq!(nodes[0].store.held(d).unwrap().unwrap().role, Role::Pushed);
    }
    let ok = wait_until(WAIT, || nodes[0].state.replicator.stats().under_replicated == 0).await;
    assert!(ok, "A still counts under-replicated blobs: {:?}", nodes[0].state.replicator.stats());

    // A stops: every blob is still pulled from C (no origin is configured).
    nodes[0].stop();
    for (d, b) in ds.iter().zip(&blobs) {
        let (status, body) = pull(&nodes[2], d).await;
        assert_eq!(status, 200, "blob {d} from C with A down");
        assert!(body == *b);
    }
    // Repair: B and C are now the two holders of every blob.
    let ok = wait_until(WAIT, || ds.iter().all(|d| holds(&nodes[1], d) && holds(&nodes[2], d))).await;
    assert!(ok, "B and C did not both come to hold every blob");
    let ok = wait_until(WAIT, || nodes[1..].iter().all(|n| n.state.replicator.stats().under_replicated == 0)).await;
    assert!(ok, "still under-replicated after repair");

    // A comes back (on a new port, its data dir kept) and B stops: still available.
    let a = nodes.remove(0).restart();
    nodes[0].stop();
    for (d, b) in ds.iter().zip(&blobs) {
        let (status, body) = pull(&nodes[1], d).await;
        assert_eq!(status, 200, "blob {d} from C with B down");
        assert!(body == *b);
        let (status, body) = pull(&a, d).await;
        assert_eq!(status, 200, "blob {d} from the restarted A");
        assert!(body == *b);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_with_two_replicas_keep_a_push_available_when_a_holder_stops() {
    three_nodes_keep_two_copies_through_a_holder_leaving(two_copies).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_works_with_cluster_authentication_on() {
    three_nodes_keep_two_copies_through_a_holder_leaving(two_copies_with_secret).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_replica_a_push_stays_on_its_node_only() {
    let nodes = start_cluster(2, spec(|_| {}));
    members_known(&[&nodes[0], &nodes[1]], 1).await;
    let d = push(&nodes[0], b"only here").await;
    assert_eq!(nodes[0].store.held(&d).unwrap(), None, "replicas: 1 writes no marker");
    let stats: serde_json::Value =
        reqwest::get(format!("{}/v1/cluster/stats", nodes[0].url())).await.unwrap().json().await.unwrap();
    assert!(stats.get("replication").is_none(), "the seed's answer, unchanged: {stats}");
    let r = reqwest::Client::new()
        .post(format!("{}/v1/replicate/{d}?from=x&pusher=x", nodes[1].url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "replication is off");
    assert!(!nodes[1].store.exists(&d));
}

/// Two nodes with `tune`, ids known; `d` pushed to the first.
async fn pair(tune: fn(&mut ClusterConfig)) -> (Vec<TestNode>, Digest) {
    let nodes = start_cluster(2, spec(tune));
    members_known(&[&nodes[0], &nodes[1]], 1).await;
    let d = Digest::of(b"pushed to the first node");
    let r = reqwest::Client::new()
        .put(format!("{}/v1/blobs/{d}", nodes[0].url()))
        .body(&b"pushed to the first node"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    (nodes, d)
}

async fn ask(node: &TestNode, path_and_query: &str, proof: Option<String>) -> (u16, String) {
    let mut req = reqwest::Client::new().post(format!("{}{path_and_query}", node.url()));
    if let Some(p) = proof {
        req = req.header(PEER_HEADER, p);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_requests_with_malformed_digests_or_node_ids_are_refused_before_anything_happens() {
    let (nodes, d) = pair(two_copies).await;
    let a = nodes[0].state.cluster.config().node_id.clone();
    // B may be pulling its own copy already: count from here.
    assert!(wait_until(WAIT, || holds(&nodes[1], &d)).await);
    let heads = nodes[0].counters.get("HEAD /v1/blobs");
    for bad in [
        "/v1/replicate/not-a-digest?from=x&pusher=x".to_owned(),
        "/v1/replicate/sha256:123?from=x&pusher=x".to_owned(),
        format!("/v1/replicate/{d}"),
        format!("/v1/replicate/{d}?from={a}"),
        format!("/v1/replicate/{d}?from=a%20b&pusher={a}"),
        format!("/v1/replicate/{d}?from={a}&pusher="),
    ] {
        let (status, body) = ask(&nodes[1], &bad, None).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    assert_eq!(nodes[0].counters.get("HEAD /v1/blobs"), heads, "no request reached the holder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_requests_from_non_members_never_make_a_node_fetch() {
    let (nodes, d) = pair(two_copies).await;
    let a = nodes[0].state.cluster.config().node_id.clone();
    let (status, body) = ask(&nodes[1], &format!("/v1/replicate/{d}?from=intruder&pusher={a}"), None).await;
    assert_eq!(status, 403, "{body}");
    assert!(wait_until(WAIT, || holds(&nodes[1], &d)).await, "the real push is replicated");
    let gets = nodes[0].counters.get("GET /v1/blobs");
    // An unknown digest on a real member: the member is asked once (HEAD), nothing queued.
    let unknown = Digest::of(b"nobody has this");
    let (status, body) = ask(&nodes[1], &format!("/v1/replicate/{unknown}?from={a}&pusher={a}"), None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(nodes[1].state.replicator.stats().in_flight, 0);
    assert!(!nodes[1].store.exists(&unknown));
    assert_eq!(nodes[0].counters.get("GET /v1/blobs"), gets, "nothing was pulled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_requests_without_a_valid_membership_proof_are_refused_when_cluster_auth_is_on() {
    let (nodes, d) = pair(two_copies_with_secret).await;
    let a = nodes[0].state.cluster.config().node_id.clone();
    let path = format!("/v1/replicate/{d}?from={a}&pusher={a}");
    let (status, body) = ask(&nodes[1], &path, None).await;
    assert_eq!(status, 401, "no proof: {body}");
    let other = ClusterSecret::new(b"some-other-cluster-secret-000").unwrap();
    let (status, body) = ask(&nodes[1], &path, Some(other.request_proof(&a, "POST", &path))).await;
    assert_eq!(status, 401, "another cluster's proof: {body}");
    let ours = ClusterSecret::new(SECRET).unwrap();
    let (status, body) = ask(&nodes[1], &path, Some(ours.request_proof(&a, "POST", "/v1/replicate/other"))).await;
    assert_eq!(status, 401, "a proof for another request: {body}");
    // The proven id is the one pulled from: a member may not name another.
    let b = nodes[1].state.cluster.config().node_id.clone();
    let (status, body) = ask(&nodes[1], &path, Some(ours.request_proof(&b, "POST", &path))).await;
    assert_eq!(status, 400, "from differs from the proven node: {body}");
    // The holder's own proof works (it may already have asked: held or queued).
    let (status, body) = ask(&nodes[1], &path, Some(ours.request_proof(&a, "POST", &path))).await;
    assert!(status == 200 || status == 202, "{status} {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_stats_and_metrics_show_replication() {
    let (nodes, d) = pair(two_copies).await;
    assert!(wait_until(WAIT, || holds(&nodes[1], &d)).await, "never replicated");
    assert!(wait_until(WAIT, || nodes[0].state.replicator.stats().under_replicated == 0).await);
    let stats = cairn_http::Client::new(Duration::from_secs(5)).cluster_stats(&nodes[0].addr()).await.unwrap();
    let r = stats.replication.expect("replication stats");
    assert_eq!((r.replicas, r.under_replicated), (2, 0));
    let text = reqwest::get(format!("{}/metrics", nodes[0].url())).await.unwrap().text().await.unwrap();
    for m in [
        "cairn_replicas 2",
        "cairn_replication_under_replicated_blobs 0",
        "cairn_replication_in_flight",
        "cairn_replication_failed_total",
    ] {
        assert!(text.contains(m), "{m} missing from\n{text}");
    }
    // With one node gone there is no second holder: the blob is under-replicated.
    let mut nodes = nodes;
    nodes[1].stop();
    let ok = wait_until(WAIT, || nodes[0].state.replicator.stats().under_replicated == 1).await;
    assert!(ok, "{:?}", nodes[0].state.replicator.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_push_is_replicated_like_a_v1_push() {
    let nodes = start_cluster(2, NodeSpec { v2: true, ..spec(two_copies) });
    members_known(&[&nodes[0], &nodes[1]], 1).await;
    let layer = blob(7, 70_000);
    let d = Digest::of(&layer);
    let r = reqwest::Client::new()
        .post(format!("{}/v2/team/app/blobs/uploads/?digest={}", nodes[0].url(), d.oci()))
        .body(layer.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "monolithic upload");
    assert!(wait_until(WAIT, || holds(&nodes[1], &d)).await, "the registry push was never replicated");
    assert_eq!(nodes[0].store.held(&d).unwrap().unwrap().role, Role::Pushed);
}
