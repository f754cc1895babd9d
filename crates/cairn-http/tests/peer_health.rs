//! Peer health as running nodes see it: a peer that comes up late is used
//! at once, a stopped one is shown down after its first refused request,
//! and every peer shows the age of its last answer.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cairn_store::{Digest, RefFile};
use cairn_testkit::{NodeSpec, TestNode, blob, start_cluster};
use common::wait_until;

/// A long interval: only the backoff and the pipeline can bring a peer back.
const HOUR: Duration = Duration::from_secs(3600);

fn reserve() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

fn peer_of(node: &TestNode, addr: &str) -> cairn_cluster::PeerStatus {
    node.state.cluster.peers().snapshot().into_iter().find(|p| p.address == addr).unwrap()
}

#[tokio::test]
async fn a_peer_that_starts_after_the_node_serves_its_blobs_at_once_not_after_a_health_interval() {
    let (l, addr) = reserve();
    drop(l);
    let a = TestNode::start(NodeSpec {
        peers: vec![addr.clone()],
        health_loop: true,
        health_interval: HOUR,
        enable_cdn_fallback: false,
        ..Default::default()
    });
    assert!(wait_until(Duration::from_secs(5), || !peer_of(&a, &addr).healthy).await, "first probe failed");
    // The peer boots a moment later, on the address the node was given.
    let l = std::net::TcpListener::bind(&addr).unwrap();
    let b = TestNode::start_on(l, NodeSpec::default(), tempfile::tempdir().unwrap());
    let data = blob(1, 64 << 10);
    let d = b.put(&data);
    let body = a.state.cluster.fetch(d).await.unwrap_or_else(|e| panic!("fetch through a: {e}"));
    assert_eq!(body.source, format!("peer {addr}"));
}

#[tokio::test]
async fn a_miss_names_the_unhealthy_peers_it_tried() {
    let (l, addr) = reserve();
    drop(l);
    let a = TestNode::start(NodeSpec {
        peers: vec![addr.clone()],
        health_loop: true,
        health_interval: HOUR,
        enable_cdn_fallback: false,
        ..Default::default()
    });
    assert!(wait_until(Duration::from_secs(5), || !peer_of(&a, &addr).healthy).await, "first probe failed");
    let err = match a.state.cluster.fetch(Digest::of(b"nowhere")).await {
        Ok(_) => panic!("a blob nobody has was found"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&addr), "the error names the unhealthy peer: {err}");
    assert!(!err.contains("no sources configured"), "{err}");
}

#[tokio::test]
async fn a_stopped_peer_is_shown_down_after_the_first_refused_request() {
    let mut nodes = start_cluster(2, NodeSpec { health_interval: HOUR, ..Default::default() });
    let b_addr = nodes[1].addr();
    nodes[0].state.cluster.probe_all().await;
    assert!(peer_of(&nodes[0], &b_addr).healthy);
    nodes[1].stop();
    // A sync is no health probe: its refused connection alone marks the peer down.
    let rf = RefFile::parse("gone-000000000000.json").unwrap();
    let res = nodes[0].state.cluster.sync(&b_addr, &rf, Arc::new(|_| {})).await;
    assert!(res.is_err());
    let v: serde_json::Value =
        reqwest::get(format!("{}/v1/peers", nodes[0].url())).await.unwrap().json().await.unwrap();
    assert_eq!(v[0]["address"], b_addr);
    assert_eq!(v[0]["healthy"], false, "{v}");
}

#[tokio::test]
async fn peers_endpoint_shows_the_age_of_each_peers_last_answer() {
    let nodes = start_cluster(2, NodeSpec { health_interval: HOUR, ..Default::default() });
    let peers = || async {
        let v: serde_json::Value =
            reqwest::get(format!("{}/v1/peers", nodes[0].url())).await.unwrap().json().await.unwrap();
        v[0].clone()
    };
    assert_eq!(peers().await["last_contact_ms"], serde_json::Value::Null, "never answered yet");
    nodes[0].state.cluster.probe_all().await;
    let p = peers().await;
    assert!(p["last_contact_ms"].as_u64().is_some_and(|ms| ms < 10_000), "{p}");
    assert_eq!(p["healthy"], true);
}

async fn json(url: String) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn a_peer_with_this_nodes_node_id_is_reported_in_peers_and_health() {
    let b = TestNode::start(NodeSpec { node_id: Some("same".into()), ..Default::default() });
    let a = TestNode::start(NodeSpec { node_id: Some("same".into()), peers: vec![b.addr()], ..Default::default() });
    assert!(json(format!("{}/v1/health", a.url())).await.get("warnings").is_none(), "no warning before any answer");
    a.state.cluster.probe_all().await;
    let peers = json(format!("{}/v1/peers", a.url())).await;
    assert_eq!(peers[0]["duplicate_node_id"], true, "{peers}");
    let h = json(format!("{}/v1/health", a.url())).await;
    assert_eq!(h["status"], "ok", "the node still serves: {h}");
    assert!(h["warnings"][0].as_str().unwrap().contains("duplicate node_id \"same\""), "{h}");
}

#[tokio::test]
async fn two_peers_with_one_node_id_are_both_flagged() {
    let b = TestNode::start(NodeSpec { node_id: Some("twin".into()), ..Default::default() });
    let c = TestNode::start(NodeSpec { node_id: Some("twin".into()), ..Default::default() });
    let a = TestNode::start(NodeSpec { peers: vec![b.addr(), c.addr()], ..Default::default() });
    a.state.cluster.probe_all().await;
    let snap = a.state.cluster.peers().snapshot();
    assert!(snap.iter().all(|p| p.duplicate_node_id), "{snap:?}");
    let h = json(format!("{}/v1/health", a.url())).await;
    assert!(h["warnings"][0].as_str().unwrap().contains("\"twin\""), "{h}");
}

#[tokio::test]
async fn a_peer_address_that_reaches_the_node_itself_is_never_asked_and_is_no_duplicate() {
    let (l, addr) = reserve();
    let a = TestNode::start_on(
        l,
        NodeSpec { peers: vec![addr.clone()], ..Default::default() },
        tempfile::tempdir().unwrap(),
    );
    a.state.cluster.probe_all().await;
    let p = peer_of(&a, &addr);
    assert!(!p.healthy && !p.duplicate_node_id, "{p:?}");
    assert!(json(format!("{}/v1/health", a.url())).await.get("warnings").is_none());
    let before = a.counters.get("HEAD /v1/blobs");
    assert!(a.state.cluster.fetch(Digest::of(b"nowhere")).await.is_err());
    assert_eq!(a.counters.get("HEAD /v1/blobs"), before, "the node never asks itself");
}
