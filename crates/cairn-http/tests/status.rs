//! `GET /v1/status` and the status page `GET /` over real HTTP. (The page
//! rendered by a real browser is tested in crates/cairn/tests/status_page.rs.)

use std::time::Duration;

use cairn_http::v1::wire::NodeStatus;
use cairn_store::Digest;
use cairn_testkit::{HostilePeer, Hostility, NodeSpec, OriginMode, TestNode, TestOrigin, blob, read_all};

async fn status(node: &TestNode) -> NodeStatus {
    let r = reqwest::get(format!("{}/v1/status", node.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn fetch(node: &TestNode, d: &Digest) -> Vec<u8> {
    let r = reqwest::get(format!("{}/v1/fetch/{d}", node.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    read_all(r).await.unwrap()
}

#[tokio::test]
async fn status_lists_each_transfer_with_its_source_and_counts_hits_misses_and_origin_egress() {
    let (one, two) = (blob(91, 200_000), blob(92, 50_000));
    let (d1, d2) = (Digest::of(&one), Digest::of(&two));
    let holder = TestNode::start(NodeSpec::default());
    holder.put(&one);
    let liar = HostilePeer::start(Hostility::WrongBytes, std::slice::from_ref(&two), &[]);
    let origin = TestOrigin::start(std::slice::from_ref(&two), OriginMode::Good);
    let node = TestNode::start(NodeSpec {
        peers: vec![holder.addr(), liar.addr()],
        origins: vec![origin.template()],
        elect_owner: false,
        peer_timeout: Duration::from_millis(800),
        ..Default::default()
    });
    let before = status(&node).await;
    assert!(before.recent_transfers.is_empty() && before.node_id == node.state.info.node_id);
    assert!(fetch(&node, &d1).await == one, "from the peer");
    assert!(fetch(&node, &d1).await == one, "a local hit");
    assert!(fetch(&node, &d2).await == two, "the liar, then the origin");

    let after = status(&node).await;
    assert_eq!((after.hits - before.hits, after.misses - before.misses), (1, 2));
    assert_eq!(after.origin_egress_bytes - before.origin_egress_bytes, two.len() as u64);
    let t: Vec<(String, String, String, u64)> = after
        .recent_transfers
        .iter()
        .map(|t| (t.digest.clone(), t.source.clone(), t.result.clone(), t.bytes))
        .collect();
    let want = vec![
        (d2.oci(), format!("origin {}", origin.template()), "ok".to_owned(), two.len() as u64),
        (d2.oci(), format!("peer {}", liar.addr()), "corrupt".to_owned(), two.len() as u64),
        (d1.oci(), format!("peer {}", holder.addr()), "ok".to_owned(), one.len() as u64),
    ];
    assert_eq!(t, want, "newest first");
    assert!(after.recent_transfers.iter().all(|t| t.seconds >= 0.0 && t.at_unix_ms > 0));
    assert!(after.disk_size_bytes.is_some_and(|s| s > 0) && after.cache_max_bytes.is_none());
    assert_eq!(after.transfers_in_flight, 0);
}

#[tokio::test]
async fn the_status_list_keeps_only_the_last_transfers() {
    let holder = TestNode::start(NodeSpec::default());
    let blobs: Vec<Vec<u8>> =
        (0..cairn_http::metrics::RECENT_TRANSFERS as u64 + 5).map(|i| blob(1000 + i, 64)).collect();
    for b in &blobs {
        holder.put(b);
    }
    let node = TestNode::start(NodeSpec { peers: vec![holder.addr()], ..Default::default() });
    for b in &blobs {
        assert!(fetch(&node, &Digest::of(b)).await == *b);
    }
    let s = status(&node).await;
    assert_eq!(s.recent_transfers.len(), cairn_http::metrics::RECENT_TRANSFERS);
    assert_eq!(s.recent_transfers[0].digest, Digest::of(blobs.last().unwrap()).oci(), "the newest first");
}

#[tokio::test]
async fn the_status_page_is_one_self_contained_html_file() {
    let node = TestNode::start(NodeSpec::default());
    let r = reqwest::get(format!("{}/", node.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    let page = r.text().await.unwrap();
    // No external assets: it works offline and loads nothing from elsewhere.
    for outside in ["http://", "https://", "src=\"//", "<link"] {
        assert!(!page.contains(outside), "the page refers to {outside}");
    }
    for endpoint in ["/v1/health", "/v1/peers", "/v1/status"] {
        assert!(page.contains(endpoint), "the page reads {endpoint}");
    }
}
