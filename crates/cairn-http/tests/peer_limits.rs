//! Bounds on what peers and sync callers can make a node do: only its own
//! peers are called, remote error pages are never relayed, slow or lying
//! sources are dropped, and the work of one request is bounded.

mod common;

use cairn_store::{Digest, RefFile};
use cairn_testkit::{HostilePeer, Hostility, NodeSpec, SECRET, TestNode, blob};

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
