//! Cluster membership with a shared secret: nodes that share it prove it to
//! each other (and their tags count), a node with another secret or none is
//! unproven (never asked for tags, anonymous rights only), and forged,
//! expired or re-targeted proofs are refused.

use std::time::Duration;

use cairn_cluster::ClusterConfig;
use cairn_cluster::membership::{ClusterSecret, PEER_HEADER};
use cairn_http::auth::{AuthConfig, Policy};
use cairn_store::Digest;
use cairn_testkit::registry::{OCI_MANIFEST, push_image};
use cairn_testkit::{NodeSpec, TestNode, blob};

const S: &[u8] = b"the-cluster-secret-0123456789";
const OTHER: &[u8] = b"another-cluster-secret-98765";

fn secret() -> ClusterSecret {
    ClusterSecret::new(S).unwrap()
}

fn with_secret(c: &mut ClusterConfig) {
    c.cluster_secret = Some(ClusterSecret::new(S).unwrap());
}

fn with_other_secret(c: &mut ClusterConfig) {
    c.cluster_secret = Some(ClusterSecret::new(OTHER).unwrap());
}

fn node(peers: Vec<String>, tune: Option<fn(&mut ClusterConfig)>) -> TestNode {
    TestNode::start(NodeSpec { v2: true, peers, tune, peer_timeout: Duration::from_secs(2), ..Default::default() })
}

/// Nobody anonymous may do anything, pulls included.
fn closed(node: &TestNode) {
    let cfg: AuthConfig = serde_json::from_value(serde_json::json!({"anonymous": []})).unwrap();
    node.state.auth.set(Policy::from_config(&cfg).unwrap());
}

async fn tag(node: &TestNode, path: &str) -> (u16, Option<String>) {
    let r = reqwest::Client::new()
        .get(format!("{}/v2/{path}", node.url()))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    let digest = r.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (r.status().as_u16(), digest)
}

fn proven(node: &TestNode, addr: &str) -> Option<bool> {
    node.state.cluster.peers().snapshot().into_iter().find(|p| p.address == addr).unwrap().proven
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_the_secret_prove_membership_and_a_peers_tag_fills_a_miss_through_closed_auth() {
    let a = node(vec![], Some(with_secret));
    let img = push_image(&a.url(), None, "team/app", "v1", &[blob(60, 2000)]).await;
    closed(&a);
    let b = node(vec![a.addr()], Some(with_secret));
    b.state.cluster.probe_all().await;
    assert_eq!(proven(&b, &a.addr()), Some(true));
    let (status, digest) = tag(&b, "team/app/manifests/v1").await;
    assert_eq!((status, digest), (200, Some(img.manifest.oci())), "A's tag (and bytes) reached B as a peer's pull");
    assert!(a.counters.get("GET /v1/oci") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_secret_is_unproven_never_asked_for_tags_and_gets_only_anonymous_rights() {
    let a = node(vec![], Some(with_secret));
    let img = push_image(&a.url(), None, "team/app", "v1", &[blob(61, 2000)]).await;
    closed(&a);
    let e = node(vec![a.addr()], Some(with_other_secret));
    e.state.cluster.probe_all().await;
    assert_eq!(proven(&e, &a.addr()), Some(false), "A's health proof is not of E's cluster");
    let (status, _) = tag(&e, "team/app/manifests/v1").await;
    assert_eq!(status, 404);
    assert_eq!(a.counters.get("GET /v1/oci"), 0, "an unproven peer is never asked for tags");

    // E's own requests to A: its proof is of another secret, refused.
    let d = img.layers[0];
    let as_e =
        cairn_http::Client::for_peers(Duration::from_secs(2)).with_membership("e", ClusterSecret::new(OTHER).unwrap());
    let err = as_e.head_blob(&a.addr(), &d).await.unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");
    let anonymous = cairn_http::Client::for_peers(Duration::from_secs(2));
    let err = anonymous.head_blob(&a.addr(), &d).await.unwrap_err().to_string();
    assert!(err.contains("401"), "no secret: anonymous rights, and anonymous may not pull here: {err}");
    let member = cairn_http::Client::for_peers(Duration::from_secs(2)).with_membership("m", secret());
    assert_eq!(member.head_blob(&a.addr(), &d).await.unwrap(), Some(2000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_secret_is_unproven_and_its_tags_never_count() {
    let n = node(vec![], None);
    let img = push_image(&n.url(), None, "team/app", "v1", &[blob(62, 2000)]).await;
    let a = node(vec![n.addr()], Some(with_secret));
    a.state.cluster.probe_all().await;
    assert_eq!(proven(&a, &n.addr()), Some(false));
    assert!(!a.state.cluster.peers().snapshot()[0].healthy, "an unproven peer is not asked at all");
    assert_eq!(tag(&a, "team/app/manifests/v1").await.0, 404);
    assert_eq!(n.counters.get("GET /v1/oci"), 0);
    // Nor for blobs, though their digests would be checked.
    assert!(a.state.cluster.fetch(img.layers[0]).await.is_err());
    assert_eq!(n.counters.get("HEAD /v1/blobs") + n.counters.get("GET /v1/blobs"), 0);
}

#[tokio::test]
async fn forged_expired_or_retargeted_peer_proofs_are_refused_with_401() {
    let a = node(vec![], Some(with_secret));
    let d = a.put(b"held by a");
    closed(&a);
    let path = format!("/v1/blobs/{d}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let head = |proof: String| {
        let url = format!("{}{path}", a.url());
        async move { reqwest::Client::new().head(url).header(PEER_HEADER, proof).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(head(secret().request_proof("m", "HEAD", &path)).await, 200, "a valid proof pulls");
    let forged = ClusterSecret::new(OTHER).unwrap().request_proof("m", "HEAD", &path);
    assert_eq!(head(forged).await, 401, "another secret");
    assert_eq!(head(secret().request_proof_at("m", now - 600, "HEAD", &path)).await, 401, "expired");
    let other = format!("/v1/blobs/{}", Digest::of(b"other"));
    assert_eq!(head(secret().request_proof("m", "HEAD", &other)).await, 401, "replayed from another path");
    assert_eq!(head(secret().request_proof("m", "GET", &path)).await, 401, "another method");
    assert_eq!(head("m;1;00".into()).await, 401, "garbage");
    // A valid proof gives pull rights only: no push.
    let put = reqwest::Client::new()
        .put(format!("{}/v1/blobs/{}", a.url(), Digest::of(b"x")))
        .header(PEER_HEADER, secret().request_proof("m", "PUT", &format!("/v1/blobs/{}", Digest::of(b"x"))))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 401, "a peer may pull, nothing else");
}
