//! The cluster at scale, in process: owner election, one origin fetch per
//! cluster, failover when the owner dies mid-transfer, origins (order,
//! wrong bytes, retries, timeouts), errors naming every source, egress limit.

mod common;

use std::time::{Duration, Instant};

use cairn_store::Digest;
use cairn_testkit::paced::{PacedOrigin, PacedSpec};
use cairn_testkit::{NodeSpec, OriginMode, TestNode, blob, read_all, start_cluster};
use common::wait_until;
use futures_util::StreamExt;

fn spec(origins: Vec<String>) -> NodeSpec {
    NodeSpec { origins, peer_timeout: Duration::from_secs(2), max_concurrent_fetches: 16, ..Default::default() }
}

/// Every node probes its peers once, so each knows the others' ids.
async fn probe(nodes: &[TestNode]) {
    for n in nodes {
        n.state.cluster.probe_all().await;
    }
}

async fn fetch(url: String) -> Result<Vec<u8>, String> {
    let r = reqwest::get(url).await.map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("HTTP {}: {}", r.status(), r.text().await.unwrap_or_default()));
    }
    read_all(r).await
}

fn index_of(nodes: &[TestNode], node_id: &str) -> usize {
    nodes.iter().position(|n| n.state.cluster.config().node_id == node_id).expect("a node with that id")
}

#[tokio::test]
async fn all_nodes_agree_on_the_owner_and_the_next_in_line_takes_over_when_it_leaves() {
    let mut nodes = start_cluster(5, spec(vec![]));
    probe(&nodes).await;
    let digests: Vec<Digest> = (0..20u32).map(|k| Digest::of(&k.to_le_bytes())).collect();
    let d = digests[0];
    for d in &digests {
        let first = nodes[0].state.cluster.ranking(d);
        assert_eq!(first.len(), 5);
        for n in &nodes[1..] {
            assert_eq!(n.state.cluster.ranking(d), first, "same healthy set, same ranking");
        }
    }
    let before = nodes[0].state.cluster.ranking(&d);
    let gone = index_of(&nodes, &before[0]);
    nodes[gone].stop();
    let alive: Vec<usize> = (0..5).filter(|i| *i != gone).collect();
    for &i in &alive {
        nodes[i].state.cluster.probe_all().await;
    }
    for &i in &alive {
        assert_eq!(nodes[i].state.cluster.ranking(&d), before[1..], "the owner left: the second in line owns it");
    }
}

#[tokio::test]
async fn eight_nodes_with_twenty_concurrent_fetches_each_send_one_request_to_the_origin() {
    let data = blob(60, 3 << 20);
    let d = Digest::of(&data);
    let origin = PacedOrigin::start(std::slice::from_ref(&data), PacedSpec::default());
    let nodes = start_cluster(8, spec(vec![origin.template()]));
    probe(&nodes).await;
    let urls: Vec<String> =
        nodes.iter().flat_map(|n| (0..20).map(move |_| format!("{}/v1/fetch/{d}", n.url()))).collect();
    let results = futures_util::future::join_all(urls.into_iter().map(fetch)).await;
    for r in &results {
        assert!(r.as_ref().is_ok_and(|b| *b == data), "a caller got a wrong or failed body: {:?}", r.as_ref().err());
    }
    assert_eq!(origin.requests(), 1, "one origin request for the whole cluster");
    assert_eq!(origin.bytes(), data.len() as u64);
    for n in &nodes {
        assert!(common::cached(&n.store, n.dir(), &d).await, "every node holds a verified copy");
    }
}

#[tokio::test]
async fn a_forwarded_fetch_is_served_by_the_node_itself_and_never_forwarded_again() {
    let data = blob(61, 300_000);
    let d = Digest::of(&data);
    let origin = PacedOrigin::start(std::slice::from_ref(&data), PacedSpec::default());
    let nodes = start_cluster(3, spec(vec![origin.template()]));
    probe(&nodes).await;
    let ranking = nodes[0].state.cluster.ranking(&d);
    let not_owner = index_of(&nodes, &ranking[1]);
    let r = reqwest::Client::new()
        .get(format!("{}/v1/fetch/{d}", nodes[not_owner].url()))
        .header("x-cairn-forwarded", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cairn-source"], format!("origin {}", origin.template()));
    assert!(read_all(r).await.unwrap() == data);
    let owner = index_of(&nodes, &ranking[0]);
    assert_eq!(nodes[owner].counters.get("GET /v1/fetch"), 0, "the owner was not asked");
    assert_eq!(origin.requests(), 1);
}

#[tokio::test]
async fn askers_recover_through_the_next_owner_when_the_owner_dies_mid_transfer() {
    let data = blob(62, 6 << 20);
    let d = Digest::of(&data);
    // About 1.5 s at this rate: the owner is killed well inside it.
    let origin =
        PacedOrigin::start(std::slice::from_ref(&data), PacedSpec { rate: Some(4 << 20), ..Default::default() });
    let mut nodes = start_cluster(4, spec(vec![origin.template()]));
    probe(&nodes).await;
    let ranking = nodes[0].state.cluster.ranking(&d);
    let owner = index_of(&nodes, &ranking[0]);
    let askers: Vec<usize> = (0..4).filter(|i| *i != owner).collect();
    let calls: Vec<_> =
        askers.iter().map(|&i| tokio::spawn(fetch(format!("{}/v1/fetch/{d}", nodes[i].url())))).collect();
    assert!(wait_until(Duration::from_secs(10), || origin.bytes() >= 2 << 20).await, "the owner started fetching");
    nodes[owner].stop();
    for c in calls {
        // A caller whose bytes came from the dead owner sees its body cut,
        // never a complete wrong one.
        if let Ok(body) = c.await.unwrap() {
            assert!(body == data, "a complete body is the right one");
        }
    }
    for &i in &askers {
        let n = &nodes[i];
        assert!(
            wait_until(Duration::from_secs(20), || n.store.verify_blob(&d).unwrap_or(false)).await,
            "node {i} recovered a verified copy without the owner"
        );
        assert_eq!(common::tmp_entries(n.dir()), 0, "no temp file left on node {i}");
    }
    assert!(origin.requests() <= 2, "the dead owner's fetch and the next owner's: {}", origin.requests());
    for &i in &askers {
        let again = fetch(format!("{}/v1/fetch/{d}", nodes[i].url())).await.unwrap();
        assert!(again == data);
    }
}

#[tokio::test]
async fn an_origin_sending_wrong_bytes_is_not_cached_or_retried_and_the_next_origin_is_used() {
    // Under HOLD_BACK, so the switch of origin is invisible to the caller.
    let data = blob(63, 512 << 10);
    let d = Digest::of(&data);
    let bad = PacedOrigin::start(
        std::slice::from_ref(&data),
        PacedSpec { mode: OriginMode::WrongBytes, ..Default::default() },
    );
    let good = PacedOrigin::start(std::slice::from_ref(&data), PacedSpec::default());
    let node = TestNode::start(spec(vec![bad.template(), good.template()]));
    let r = reqwest::get(format!("{}/v1/fetch/{d}", node.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cairn-source"], format!("origin {}", good.template()));
    assert!(read_all(r).await.unwrap() == data);
    assert_eq!((bad.requests(), good.requests()), (1, 1), "wrong bytes are not retried");
    assert!(common::cached(&node.store, node.dir(), &d).await);
}

#[tokio::test]
async fn an_origin_answering_503_is_retried_with_backoff_until_it_serves() {
    let data = blob(64, 100_000);
    let d = Digest::of(&data);
    let flaky = PacedOrigin::start(std::slice::from_ref(&data), PacedSpec { fail_first: 2, ..Default::default() });
    let node = TestNode::start(spec(vec![flaky.template()]));
    let start = Instant::now();
    let body = fetch(format!("{}/v1/fetch/{d}", node.url())).await.unwrap();
    assert!(body == data);
    assert_eq!(flaky.requests(), 3, "two 503s, then the blob");
    // Backoff: at least 200 ms then 400 ms between the tries.
    assert!(start.elapsed() >= Duration::from_millis(600), "{:?}", start.elapsed());
}

#[tokio::test]
async fn an_origin_slower_than_its_timeout_is_left_for_the_next_one() {
    let data = blob(65, 100_000);
    let d = Digest::of(&data);
    let slow = PacedOrigin::start(
        std::slice::from_ref(&data),
        PacedSpec { first_byte: Duration::from_secs(30), ..Default::default() },
    );
    let good = PacedOrigin::start(std::slice::from_ref(&data), PacedSpec::default());
    let node = TestNode::start(NodeSpec {
        origin_timeout: Some(Duration::from_millis(300)),
        origin_retries: Some(0),
        ..spec(vec![slow.template(), good.template()])
    });
    let start = Instant::now();
    let r = reqwest::get(format!("{}/v1/fetch/{d}", node.url())).await.unwrap();
    assert_eq!(r.headers()["x-cairn-source"], format!("origin {}", good.template()));
    assert!(read_all(r).await.unwrap() == data);
    assert_eq!(slow.requests(), 1);
    assert!(start.elapsed() < Duration::from_secs(20), "the slow origin's 30 s were not waited out");
}

#[tokio::test]
async fn when_nobody_has_the_blob_the_error_names_every_source_tried() {
    let o1 = PacedOrigin::start(&[], PacedSpec::default());
    let o2 = PacedOrigin::start(&[], PacedSpec::default());
    let nodes = start_cluster(3, spec(vec![o1.template(), o2.template()]));
    probe(&nodes).await;
    let d = Digest::of(b"nobody has this");
    let ranking = nodes[0].state.cluster.ranking(&d);
    let asker = index_of(&nodes, &ranking[2]);
    let r = reqwest::get(format!("{}/v1/fetch/{d}", nodes[asker].url())).await.unwrap();
    assert_eq!(r.status(), 404);
    let body = r.text().await.unwrap();
    for (i, n) in nodes.iter().enumerate() {
        if i != asker {
            assert!(body.contains(&n.addr()), "names peer {}: {body}", n.addr());
        }
    }
    assert!(body.contains(&o1.template()) && body.contains(&o2.template()), "names both origins: {body}");
}

#[tokio::test]
async fn the_egress_limit_caps_bytes_sent_to_peers_over_any_window() {
    let data = blob(66, 6 << 20);
    let rate: u64 = 2 << 20;
    let node = TestNode::start(NodeSpec { egress_limit: Some(rate), ..Default::default() });
    let d = node.put(&data);
    let start = Instant::now();
    let r = reqwest::get(format!("{}/v1/blobs/{d}", node.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    let mut s = r.bytes_stream();
    let mut got = 0u64;
    // The bucket's burst is a tenth of a second; one read chunk may be in flight.
    let slack = rate / 10 + (1 << 20);
    while let Some(c) = s.next().await {
        got += c.unwrap().len() as u64;
        let allowed = (rate as f64 * start.elapsed().as_secs_f64() * 1.05) as u64 + slack;
        assert!(got <= allowed, "{got} bytes after {:?} exceeds the limit", start.elapsed());
    }
    assert_eq!(got, data.len() as u64);
    // 6 MiB at 2 MiB/s less the burst and a chunk: well over two seconds.
    assert!(start.elapsed() >= Duration::from_secs(2), "{:?}", start.elapsed());
}

#[tokio::test]
async fn max_concurrent_fetches_bounds_the_transfers_a_node_runs_at_once() {
    let blobs: Vec<Vec<u8>> = (0..6).map(|k| blob(70 + k, 400_000)).collect();
    let origin = PacedOrigin::start(&blobs, PacedSpec { rate: Some(4 << 20), ..Default::default() });
    let node = TestNode::start(NodeSpec { max_concurrent_fetches: 2, ..spec(vec![origin.template()]) });
    let urls = blobs.iter().map(|b| format!("{}/v1/fetch/{}", node.url(), Digest::of(b)));
    let got = futures_util::future::join_all(urls.map(fetch)).await;
    for (r, b) in got.iter().zip(&blobs) {
        assert!(r.as_ref().is_ok_and(|g| g == b));
    }
    assert_eq!(origin.requests(), 6);
    assert_eq!(origin.max_in_flight(), 2, "never more than max_concurrent_fetches origin downloads at once");
}

#[tokio::test]
async fn a_manifest_pushed_to_every_node_at_once_fetches_each_blob_once_even_with_one_permit_each() {
    // One permit per pool: transfers waiting on an owner must not hold
    // the permits the owner's own direct fetches need.
    let blobs: Vec<Vec<u8>> = (0..12).map(|k| blob(80 + k, 200_000)).collect();
    let origin = PacedOrigin::start(&blobs, PacedSpec::default());
    let nodes = start_cluster(3, NodeSpec { max_concurrent_fetches: 1, ..spec(vec![origin.template()]) });
    probe(&nodes).await;
    let objects: serde_json::Map<String, serde_json::Value> =
        blobs.iter().enumerate().map(|(k, b)| (format!("f{k}"), Digest::of(b).to_string().into())).collect();
    let json = serde_json::to_vec_pretty(
        &serde_json::json!({"name": "fleet", "created_at": "2026-01-01T00:00:00Z", "objects": objects}),
    )
    .unwrap();
    let rf = format!("fleet-{}.json", &Digest::of(&json).to_string()[..12]);
    let client = reqwest::Client::new();
    let pushes = nodes.iter().map(|n| {
        client.put(format!("{}/v1/manifests/{rf}", n.url())).body(json.clone()).timeout(Duration::from_secs(60)).send()
    });
    for r in futures_util::future::join_all(pushes).await {
        let r = r.expect("push answered in time");
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    }
    assert_eq!(origin.requests(), 12, "each blob once for the whole cluster");
    for n in &nodes {
        for b in &blobs {
            assert!(n.store.verify_blob(&Digest::of(b)).unwrap());
        }
    }
}

#[tokio::test]
async fn with_the_origin_down_a_blob_only_a_non_owner_holds_is_still_served() {
    let data = blob(90, 2 << 20);
    let d = Digest::of(&data);
    let dead_origin = format!("http://{}/blobs/{{digest}}", cairn_testkit::dead_addr());
    let nodes = start_cluster(3, spec(vec![dead_origin]));
    probe(&nodes).await;
    let ranking = nodes[0].state.cluster.ranking(&d);
    // The holder is not the owner, and the asker is the third node.
    let holder = index_of(&nodes, &ranking[1]);
    let asker = index_of(&nodes, &ranking[2]);
    nodes[holder].put(&data);
    let r = reqwest::get(format!("{}/v1/fetch/{d}", nodes[asker].url())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cairn-source"], format!("peer {}", nodes[holder].addr()));
    assert!(read_all(r).await.unwrap() == data);
    let owner = index_of(&nodes, &ranking[0]);
    assert_eq!(nodes[owner].counters.get("GET /v1/fetch"), 0, "a peer holding it is asked before the owner");
}

#[tokio::test]
async fn when_the_owner_reports_its_origins_failed_the_asker_tries_once_itself_not_every_node_in_line() {
    let data = blob(91, 100_000);
    let d = Digest::of(&data);
    let failing = PacedOrigin::start(std::slice::from_ref(&data), PacedSpec { fail_first: 1000, ..Default::default() });
    let nodes = start_cluster(4, NodeSpec { origin_retries: Some(0), ..spec(vec![failing.template()]) });
    probe(&nodes).await;
    let ranking = nodes[0].state.cluster.ranking(&d);
    let last = index_of(&nodes, &ranking[3]);
    let r = reqwest::get(format!("{}/v1/fetch/{d}", nodes[last].url())).await.unwrap();
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(body.contains("503") && body.contains(&failing.template()), "{body}");
    assert_eq!(failing.requests(), 2, "the owner's try and the asker's own, not one per node in the ranking");
}

#[tokio::test]
async fn an_asker_waits_past_the_peer_timeout_for_a_busy_owner_that_still_answers_probes() {
    let data = blob(92, 4 << 20);
    let d = Digest::of(&data);
    // About 2 s from the origin, four times the peer timeout.
    let origin =
        PacedOrigin::start(std::slice::from_ref(&data), PacedSpec { rate: Some(2 << 20), ..Default::default() });
    // The origin's own timeout is generous: a pause in its paced body on a
    // loaded machine must not count as a stall; only the peer timeout is short.
    let nodes = start_cluster(
        2,
        NodeSpec {
            peer_timeout: Duration::from_millis(500),
            origin_timeout: Some(Duration::from_secs(10)),
            ..spec(vec![origin.template()])
        },
    );
    probe(&nodes).await;
    let ranking = nodes[0].state.cluster.ranking(&d);
    let (owner, asker) = (index_of(&nodes, &ranking[0]), index_of(&nodes, &ranking[1]));
    let own = tokio::spawn(fetch(format!("{}/v1/fetch/{d}", nodes[owner].url())));
    // Once bytes flow, a new caller of the owner waits for the end of its transfer.
    assert!(wait_until(Duration::from_secs(10), || origin.bytes() >= 2 << 20).await);
    let got = fetch(format!("{}/v1/fetch/{d}", nodes[asker].url())).await.unwrap();
    assert!(got == data);
    assert!(own.await.unwrap().unwrap() == data);
    assert_eq!(origin.requests(), 1, "the asker did not give up on its owner and go to the origin");
    assert!(
        nodes[asker].state.cluster.peers().healthy().contains(&nodes[owner].addr()),
        "the owner is not marked down"
    );
}

#[tokio::test]
async fn a_node_without_cdn_fallback_never_asks_an_owner_to_use_the_origins() {
    let blobs: Vec<Vec<u8>> = (0..16).map(|k| blob(93 + k, 10_000)).collect();
    let origin = PacedOrigin::start(&blobs, PacedSpec::default());
    let nodes = start_cluster(3, spec(vec![origin.template()]));
    let no_cdn = TestNode::start(NodeSpec {
        enable_cdn_fallback: false,
        peers: nodes.iter().map(TestNode::addr).collect(),
        ..spec(vec![origin.template()])
    });
    no_cdn.state.cluster.probe_all().await;
    // A blob another node owns, so there is an owner to (not) ask.
    let me = no_cdn.state.cluster.config().node_id.clone();
    let d = blobs.iter().map(|b| Digest::of(b)).find(|d| no_cdn.state.cluster.ranking(d)[0] != me).unwrap();
    let r = reqwest::get(format!("{}/v1/fetch/{d}", no_cdn.url())).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(origin.requests(), 0);
    assert!(nodes.iter().all(|n| n.counters.get("GET /v1/fetch") == 0), "no owner was asked");
}
