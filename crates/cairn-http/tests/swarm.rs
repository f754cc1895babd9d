//! `swarm: true` over real HTTP (README "Swarm"): nodes fetching one big
//! blob at once pull its pieces from each other, the origin sends it once,
//! and hostile input to the swarm routes is refused.

mod common;

use std::time::Duration;

use cairn_cluster::ClusterConfig;
use cairn_cluster::membership::{ClusterSecret, PEER_HEADER};
use cairn_cluster::swarm::{Bitfield, Geometry, WireAnnounce, WireAnswer, piece_size_for};
use cairn_store::Digest;
use cairn_testkit::paced::{PacedOrigin, PacedSpec};
use cairn_testkit::{NodeSpec, TestNode, blob, start_cluster};
use common::wait_until;

const WAIT: Duration = Duration::from_secs(20);
const SECRET: &[u8] = b"the-swarm-secret-0123456789abcdef";

fn swarm_on(c: &mut ClusterConfig) {
    c.swarm = true;
}

fn swarm_with_secret(c: &mut ClusterConfig) {
    c.swarm = true;
    c.cluster_secret = Some(ClusterSecret::new(SECRET).unwrap());
}

fn spec(origins: Vec<String>, tune: fn(&mut ClusterConfig)) -> NodeSpec {
    NodeSpec {
        origins,
        health_loop: true,
        health_interval: Duration::from_millis(200),
        peer_timeout: Duration::from_secs(2),
        tune: Some(tune),
        ..Default::default()
    }
}

async fn members_known(nodes: &[TestNode]) {
    let n = nodes.len() - 1;
    let ok = wait_until(WAIT, || nodes.iter().all(|x| x.state.cluster.peers().members().len() == n)).await;
    assert!(ok, "the nodes never learnt each other's ids");
}

async fn pull(url: String, d: Digest) -> (u16, Vec<u8>) {
    let r = reqwest::get(format!("{url}/v1/fetch/{d}")).await.unwrap();
    let s = r.status().as_u16();
    (s, r.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
}

/// The value of a label-free or `source`-labelled counter in `/metrics`.
async fn metric(node: &TestNode, line_start: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", node.url())).await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_nodes_fetching_at_once_swarm_and_the_origin_sends_the_blob_once() {
    let (nodes, data) = four_nodes_swarm(swarm_on, 1501).await;
    // A piece comes with what its sender holds: here, everything.
    let d = Digest::of(&data);
    let g = Geometry::new(data.len() as u64, piece_size_for(data.len() as u64)).unwrap();
    let q = format!("blob_size={}&piece_size={}", g.blob_size(), g.piece_size());
    let r = reqwest::get(format!("{}/v1/swarm/{d}/piece/1?{q}", nodes[1].url())).await.unwrap();
    assert_eq!(r.status(), 200);
    let have = r.headers().get("x-cairn-swarm-have").expect("a have header").to_str().unwrap().to_owned();
    assert!(Bitfield::from_hex(g.count(), &have).unwrap().is_full(), "{have}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_nodes_swarm_with_a_cluster_secret_too() {
    four_nodes_swarm(swarm_with_secret, 1511).await;
}

async fn four_nodes_swarm(tune: fn(&mut ClusterConfig), seed: u64) -> (Vec<TestNode>, Vec<u8>) {
    let data = blob(seed, 32 << 20);
    let d = Digest::of(&data);
    // Paced, so the askers join while the owner is still reading.
    let origin =
        PacedOrigin::start(std::slice::from_ref(&data), PacedSpec { rate: Some(64 << 20), ..Default::default() });
    let nodes = start_cluster(4, spec(vec![origin.template()], tune));
    members_known(&nodes).await;
    let pulls: Vec<_> = nodes.iter().map(|n| tokio::spawn(pull(n.url(), d))).collect();
    for (i, p) in pulls.into_iter().enumerate() {
        let (status, body) = p.await.unwrap();
        assert_eq!(status, 200, "node {i}");
        assert!(body == data, "node {i} served other bytes");
    }
    for n in &nodes {
        assert!(n.store.exists(&d), "{} does not hold the blob", n.addr());
        assert_eq!(n.store.size(&d).unwrap(), data.len() as u64);
    }
    assert_eq!(origin.requests(), 1, "one origin request for the cluster");
    assert_eq!(origin.bytes(), data.len() as u64, "the origin sent the blob once");
    let mut from_peers = 0;
    for n in &nodes {
        from_peers += metric(n, "cairn_swarm_pieces_total{source=\"peer\"}").await;
    }
    let pieces = u64::from(Geometry::new(data.len() as u64, piece_size_for(data.len() as u64)).unwrap().count());
    assert!(from_peers >= 3 * pieces, "the askers took their pieces from peers: {from_peers} of {}", 3 * pieces);
    (nodes, data)
}

fn owner_index(nodes: &[TestNode], d: &Digest) -> Option<usize> {
    let first = nodes[0].state.cluster.ranking(d).into_iter().next()?;
    nodes.iter().position(|n| n.state.cluster.config().node_id == first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_owner_killed_mid_swarm_hands_over_and_the_survivors_finish() {
    let data = blob(1502, 32 << 20);
    let d = Digest::of(&data);
    let size = data.len() as u64;
    let origin =
        PacedOrigin::start(std::slice::from_ref(&data), PacedSpec { rate: Some(24 << 20), ..Default::default() });
    let mut nodes = start_cluster(4, spec(vec![origin.template()], swarm_on));
    members_known(&nodes).await;
    let owner = owner_index(&nodes, &d).unwrap();
    let pulls: Vec<_> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != owner)
        .map(|(i, n)| (i, tokio::spawn(pull(n.url(), d))))
        .collect();
    assert!(wait_until(WAIT, || origin.bytes() >= size / 3).await, "the owner never read a third");
    nodes[owner].stop();
    for (i, p) in pulls {
        let (status, body) = p.await.unwrap();
        assert_eq!(status, 200, "node {i}");
        assert!(body == data, "node {i} served other bytes");
        assert!(nodes[i].store.exists(&d), "node {i} does not hold the blob");
    }
    // The dead owner's read runs on in this process (a real one would stop): 1x, plus
    // what the next owner took from the origin for pieces only the dead one had.
    let sent = origin.bytes();
    assert!(sent <= size * 205 / 100, "the origin sent {sent} bytes for a blob of {size}");
    // The next owner resumed in the swarm (pieces from the origin by range), not whole.
    let mut resumed = 0;
    for (_, n) in nodes.iter().enumerate().filter(|(i, _)| *i != owner) {
        resumed += metric(n, "cairn_swarm_pieces_total{source=\"origin\"}").await;
    }
    assert!(resumed >= 1, "no survivor took over the origin reads");
    assert!(resumed < u64::from(Geometry::new(size, piece_size_for(size)).unwrap().count()), "it started over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_asker_killed_mid_swarm_costs_the_others_only_time() {
    let data = blob(1506, 32 << 20);
    let d = Digest::of(&data);
    let size = data.len() as u64;
    let origin =
        PacedOrigin::start(std::slice::from_ref(&data), PacedSpec { rate: Some(24 << 20), ..Default::default() });
    let mut nodes = start_cluster(4, spec(vec![origin.template()], swarm_on));
    members_known(&nodes).await;
    let owner = owner_index(&nodes, &d).unwrap();
    let victim = (owner + 1) % nodes.len();
    let pulls: Vec<_> = nodes.iter().map(|n| tokio::spawn(pull(n.url(), d))).collect();
    assert!(wait_until(WAIT, || origin.bytes() >= size / 2).await, "the owner never read half");
    nodes[victim].stop();
    for (i, p) in pulls.into_iter().enumerate() {
        if i == victim {
            continue;
        }
        let (status, body) = p.await.unwrap();
        assert_eq!(status, 200, "node {i}");
        assert!(body == data, "node {i} served other bytes");
        assert!(nodes[i].store.exists(&d));
    }
    assert_eq!(origin.requests(), 1, "the owner's one read; nobody went to the origin again");
    assert_eq!(origin.bytes(), size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_sending_wrong_pieces_is_excluded_and_every_node_ends_with_the_right_blob() {
    let liar_id = "liar";
    let app = lying_member()
        .route("/v1/swarm/{d}/announce", axum::routing::post(|| async { axum::http::StatusCode::NOT_FOUND }));
    let liar = cairn_testkit::Server::start(app);
    let mut seed = 1503;
    let (data, d, nodes, origin, owner) = loop {
        let data = blob(seed, 32 << 20);
        let d = Digest::of(&data);
        let origin =
            PacedOrigin::start(std::slice::from_ref(&data), PacedSpec { rate: Some(48 << 20), ..Default::default() });
        let mut sp = spec(vec![origin.template()], swarm_on);
        sp.peers = vec![liar.addr()];
        let nodes = start_cluster(4, sp);
        let n = nodes.len();
        let ok = wait_until(WAIT, || nodes.iter().all(|x| x.state.cluster.peers().members().len() == n)).await;
        assert!(ok, "the nodes never learnt each other's ids");
        match owner_index(&nodes, &d) {
            Some(o) => break (data, d, nodes, origin, o),
            None => seed += 1,
        }
    };
    let geo = Geometry::new(data.len() as u64, piece_size_for(data.len() as u64)).unwrap();
    // The liar claims every piece, to the owner, all along.
    let owner_url = nodes[owner].url();
    let claim = serde_json::to_vec(&WireAnnounce::new(&geo, &Bitfield::full(geo.count()))).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = std::sync::Arc::clone(&stop);
    let claimer = tokio::spawn(async move {
        let c = reqwest::Client::new();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let _ =
                c.post(format!("{owner_url}/v1/swarm/{d}/announce?node={liar_id}")).body(claim.clone()).send().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let pulls: Vec<_> = nodes.iter().map(|n| tokio::spawn(pull(n.url(), d))).collect();
    for (i, p) in pulls.into_iter().enumerate() {
        let (status, body) = p.await.unwrap();
        assert_eq!(status, 200, "node {i}");
        assert!(body == data, "node {i} served other bytes");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    claimer.await.unwrap();
    for n in &nodes {
        assert!(n.store.exists(&d) && n.store.size(&d).unwrap() == data.len() as u64);
    }
    let mut excluded = 0;
    for n in &nodes {
        excluded += metric(n, "cairn_swarm_excluded_peers_total").await;
    }
    assert!(excluded >= 1, "no node excluded the liar");
    assert!(origin.bytes() <= 2 * data.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_asker_that_stops_reading_pieces_does_not_slow_the_others() {
    use std::io::Write;
    let data = blob(1504, 32 << 20);
    let d = Digest::of(&data);
    let size = data.len() as u64;
    let geo = Geometry::new(size, piece_size_for(size)).unwrap();
    let origin =
        PacedOrigin::start(std::slice::from_ref(&data), PacedSpec { rate: Some(64 << 20), ..Default::default() });
    let nodes = start_cluster(4, spec(vec![origin.template()], swarm_on));
    members_known(&nodes).await;
    let owner = owner_index(&nodes, &d).unwrap();
    let started = std::time::Instant::now();
    let pulls: Vec<_> = nodes.iter().map(|n| tokio::spawn(pull(n.url(), d))).collect();
    // A stalled asker: asks every node for pieces as they appear and never reads an answer.
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr()).collect();
    let stalled = std::thread::spawn(move || {
        let mut held = Vec::new();
        for round in 0..4u32 {
            for a in &addrs {
                for k in 0..3u32 {
                    let i = (round * 3 + k) % geo.count();
                    if let Ok(mut s) = std::net::TcpStream::connect(a) {
                        let req = format!(
                            "GET /v1/swarm/{d}/piece/{i}?blob_size={}&piece_size={} HTTP/1.1\r\nhost: x\r\n\r\n",
                            geo.blob_size(),
                            geo.piece_size()
                        );
                        let _ = s.write_all(req.as_bytes());
                        held.push(s);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        held
    });
    for (i, p) in pulls.into_iter().enumerate() {
        let (status, body) = p.await.unwrap();
        assert_eq!(status, 200, "node {i}");
        assert!(body == data, "node {i} served other bytes");
    }
    let took = started.elapsed();
    drop(stalled.join().unwrap());
    // The slots the stalled asker holds are given back at the piece's send deadline (1 s + the piece at 1 MiB/s).
    assert!(took < Duration::from_secs(8), "the stalled asker slowed the swarm: {took:?} (owner {owner})");
    assert_eq!(origin.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_swarm_off_a_big_blob_comes_whole_through_the_owner_as_before() {
    let data = blob(1505, 20 << 20);
    let d = Digest::of(&data);
    let origin = PacedOrigin::start(std::slice::from_ref(&data), PacedSpec::default());
    let nodes = start_cluster(3, spec(vec![origin.template()], |_| {}));
    members_known(&nodes).await;
    let pulls: Vec<_> = nodes.iter().map(|n| tokio::spawn(pull(n.url(), d))).collect();
    for (i, p) in pulls.into_iter().enumerate() {
        let (status, body) = p.await.unwrap();
        assert_eq!(status, 200, "node {i}");
        assert!(body == data, "node {i} served other bytes");
    }
    assert_eq!(origin.requests(), 1);
    let g = Geometry::new(data.len() as u64, piece_size_for(data.len() as u64)).unwrap();
    let owner = owner_index(&nodes, &d).unwrap();
    let c = reqwest::Client::new();
    let body = serde_json::to_string(&WireAnnounce::new(&g, &Bitfield::new(g.count()))).unwrap();
    let r = c.post(format!("{}/v1/swarm/{d}/announce?node=x", nodes[owner].url())).body(body).send().await.unwrap();
    assert_eq!(r.status(), 404, "no tracker with swarm: false");
    let q = format!("blob_size={}&piece_size={}", g.blob_size(), g.piece_size());
    let r = c.get(format!("{}/v1/swarm/{d}/piece/0?{q}", nodes[owner].url())).send().await.unwrap();
    assert_eq!(r.status(), 404, "no pieces served with swarm: false");
    for n in &nodes {
        assert_eq!(metric(n, "cairn_swarm_pieces_total{source=\"peer\"}").await, 0);
        assert_eq!(metric(n, "cairn_swarm_pieces_total{source=\"origin\"}").await, 0);
    }
}

#[tokio::test]
async fn swarm_routes_refuse_bad_input() {
    let nodes = start_cluster(2, spec(vec![], swarm_on));
    members_known(&nodes).await;
    let d = Digest::of(b"nothing");
    let c = reqwest::Client::new();
    let owner = nodes.iter().find(|n| n.state.cluster.ranking(&d)[0] == n.state.cluster.config().node_id).unwrap();
    let ann = |body: String| {
        c.post(format!("{}/v1/swarm/{d}/announce?node=other", owner.url()))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let st = |r: reqwest::Response| r.status().as_u16();
    // A malformed digest.
    let r = c.post(format!("{}/v1/swarm/sha256:zz/announce?node=a", owner.url())).body("{}").send().await.unwrap();
    assert_eq!(st(r), 400);
    // Not JSON, wrong shapes, an oversized body.
    assert_eq!(st(ann("nope".into()).await.unwrap()), 400);
    assert_eq!(st(ann("[]".into()).await.unwrap()), 400);
    // Oversized: 413, or the upload cut by the server before it was all sent.
    let big = format!("{{\"blob_size\":1,\"piece_size\":1,\"have\":\"{}\"}}", "0".repeat(1 << 20));
    // On a connection of its own: the server closes it.
    let alone = reqwest::Client::new()
        .post(format!("{}/v1/swarm/{d}/announce?node=other", owner.url()))
        .header("content-type", "application/json")
        .body(big)
        .send();
    match alone.await {
        Ok(r) => assert_eq!(st(r), 413),
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    // No node id.
    let r = c.post(format!("{}/v1/swarm/{d}/announce", owner.url())).body("{}").send().await.unwrap();
    assert_eq!(st(r), 400);
    // The other node is not the owner.
    let other = nodes.iter().find(|n| n.addr() != owner.addr()).unwrap();
    let body = serde_json::to_string(&WireAnnounce::hello()).unwrap();
    let r = c.post(format!("{}/v1/swarm/{d}/announce?node=x", other.url())).body(body).send().await.unwrap();
    assert_eq!(st(r), 409);
    // Pieces: out of range, bad geometry, not held, not a number.
    let size = 32u64 << 20;
    let ps = piece_size_for(size);
    let count = Geometry::new(size, ps).unwrap().count();
    let piece = |idx: String, q: String| c.get(format!("{}/v1/swarm/{d}/piece/{idx}?{q}", owner.url())).send();
    let q = format!("blob_size={size}&piece_size={ps}");
    assert_eq!(st(piece(count.to_string(), q.clone()).await.unwrap()), 400, "index past the last piece");
    assert_eq!(st(piece("-1".into(), q.clone()).await.unwrap()), 400);
    assert_eq!(st(piece("0".into(), format!("blob_size={size}&piece_size=3")).await.unwrap()), 400);
    assert_eq!(st(piece("0".into(), format!("blob_size={}&piece_size={ps}", u64::MAX)).await.unwrap()), 400);
    assert_eq!(st(piece("0".into(), "blob_size=1".into()).await.unwrap()), 400);
    assert_eq!(st(piece("0".into(), q).await.unwrap()), 404, "a piece nobody holds");
}

#[tokio::test]
async fn with_a_cluster_secret_only_members_use_the_swarm_routes() {
    let nodes = start_cluster(2, spec(vec![], swarm_with_secret));
    members_known(&nodes).await;
    let d = Digest::of(b"nothing");
    let owner = nodes.iter().find(|n| n.state.cluster.ranking(&d)[0] == n.state.cluster.config().node_id).unwrap();
    let c = reqwest::Client::new();
    let g = Geometry::new(32 << 20, piece_size_for(32 << 20)).unwrap();
    let body = serde_json::to_string(&WireAnnounce::new(&g, &Bitfield::new(g.count()))).unwrap();
    let path = format!("/v1/swarm/{d}/announce?node=intruder");
    let r = c.post(format!("{}{path}", owner.url())).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 401, "no proof");
    let wrong = ClusterSecret::new(b"another-secret-0123456789abcdefgh").unwrap();
    let proof = wrong.request_proof("intruder", "POST", &path);
    let r =
        c.post(format!("{}{path}", owner.url())).header(PEER_HEADER, proof).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 401, "a proof with another secret");
    let piece = format!("/v1/swarm/{d}/piece/0?blob_size={}&piece_size={}", g.blob_size(), g.piece_size());
    let r = c.get(format!("{}{piece}", owner.url())).send().await.unwrap();
    assert_eq!(r.status(), 401, "pieces too");
    // A member is answered (the owner starts fetching; there is no origin).
    let good = ClusterSecret::new(SECRET).unwrap();
    let proof = good.request_proof("member", "POST", &path.replace("intruder", "member"));
    let r = c
        .post(format!("{}{}", owner.url(), path.replace("intruder", "member")))
        .header(PEER_HEADER, proof)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 503 | 404), "a member is answered: {}", r.status());
    let _ = serde_json::from_slice::<WireAnswer>(b"{}").is_err();
}

/// The send rate the stalled-asker test gives pieces: a 16 MiB piece's
/// deadline is then 1 s + 1 s (pieces count as 8 MiB at most).
const TEST_SEND_RATE: u64 = 8 << 20;

fn swarm_fast_deadline(c: &mut ClusterConfig) {
    c.swarm = true;
    c.swarm_min_send_rate = TEST_SEND_RATE;
}

/// A raw connection asking for one piece, with a tiny receive buffer, that
/// never reads: the loopback's socket buffers hold a few MiB, not a 16 MiB piece.
async fn stalled_asker(addr: &str, d: &Digest, index: u32, geo: &Geometry) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(addr.parse().unwrap()).await.unwrap();
    let req = format!(
        "GET /v1/swarm/{d}/piece/{index}?blob_size={}&piece_size={} HTTP/1.1\r\nhost: x\r\n\r\n",
        geo.blob_size(),
        geo.piece_size()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// The TCP state (as in /proc/net/tcp: 1 established, 4 FIN-WAIT-1, ...)
/// of the server's side of the connection from local port `client` to
/// port `server`, `None` once it is gone.
fn server_side_state(server: u16, client: u16) -> Option<u8> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |a: &str| a.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (port(f[1]) == Some(server) && port(f[2]) == Some(client)).then(|| u8::from_str_radix(f[3], 16).unwrap())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_askers_of_big_pieces_are_cut_at_the_send_deadline_and_give_their_slots_back() {
    use cairn_cluster::swarm::UPLOAD_SLOTS;
    use cairn_cluster::swarm_node::send_deadline;
    // A complete local blob, asked as two 16 MiB pieces (the asker chooses the geometry).
    let data = blob(1507, 32 << 20);
    let d = Digest::of(&data);
    let geo = Geometry::new(data.len() as u64, 16 << 20).unwrap();
    let other = blob(1508, 16 << 20);
    let od = Digest::of(&other);
    let origin = PacedOrigin::start(std::slice::from_ref(&other), PacedSpec::default());
    let node = TestNode::start(spec(vec![origin.template()], swarm_fast_deadline));
    node.store.put_reader(&data[..], Some(&d)).unwrap();
    let deadline = send_deadline(node.state.cluster.config(), geo.piece_size());
    assert_eq!(deadline, Duration::from_secs(2));
    let slack = Duration::from_secs(3);
    let c = reqwest::Client::new();
    let piece_url = |i: u32| {
        format!("{}/v1/swarm/{d}/piece/{i}?blob_size={}&piece_size={}", node.url(), geo.blob_size(), geo.piece_size())
    };
    let mut stalled = Vec::new();
    for k in 0..UPLOAD_SLOTS {
        stalled.push(stalled_asker(&node.addr(), &d, k as u32 % geo.count(), &geo).await);
    }
    let cluster = &node.state.cluster;
    assert!(wait_until(WAIT, || cluster.swarm_uploads() == UPLOAD_SLOTS).await, "the stalled askers hold no slots");
    let held = std::time::Instant::now();
    let r = c.get(piece_url(0)).send().await.unwrap();
    assert_eq!(r.status(), 503, "a normal asker is told every slot is busy");
    // The node's own fetch meanwhile does not wait for them.
    let (status, body) = pull(node.url(), od).await;
    assert_eq!(status, 200);
    assert!(body == other, "the node's own fetch got other bytes");
    let own = held.elapsed();
    assert!(own < deadline + slack, "the node's own fetch took {own:?} while askers stalled");
    // A normal asker gets its piece once the deadline has cut the stalled ones.
    let got = loop {
        let r = c.get(piece_url(1)).send().await.unwrap();
        if r.status() == 200 {
            break r.bytes().await.unwrap();
        }
        assert_eq!(r.status(), 503);
        assert!(held.elapsed() < deadline + slack, "the slots were not given back by the deadline");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let waited = held.elapsed();
    assert!(waited < deadline + slack, "a normal asker waited {waited:?}");
    assert!(got[..] == data[16 << 20..], "piece 1 is other bytes");
    // Every slot is back: as many normal askers as slots are served at once.
    let all: Vec<_> = (0..UPLOAD_SLOTS)
        .map(|_| {
            let r = c.get(piece_url(0));
            tokio::spawn(async move { r.send().await.unwrap().status().as_u16() })
        })
        .collect();
    for a in all {
        assert_eq!(a.await.unwrap(), 200, "a slot was still held");
    }
    // The stalled connections were cut by the server (not closed by their
    // asker, which has read nothing): its side of each has left "established".
    let port: u16 = node.addr().rsplit(':').next().unwrap().parse().unwrap();
    for (k, s) in stalled.iter().enumerate() {
        let client = s.local_addr().unwrap().port();
        let left = (deadline + slack).saturating_sub(held.elapsed());
        let cut = wait_until(left, || server_side_state(port, client) != Some(1)).await;
        assert!(cut, "stalled asker {k}'s connection is still open {:?} after", held.elapsed());
    }
    // Reading now drains what the kernel held, then the end, short of the whole piece.
    for (k, mut s) in stalled.into_iter().enumerate() {
        use tokio::io::AsyncReadExt;
        let mut n = 0usize;
        let mut buf = vec![0u8; 1 << 20];
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(m) => n += m,
                }
            }
        })
        .await;
        assert!(end.is_ok(), "stalled asker {k}'s connection is still open after {n} bytes");
        assert!(n < (16 << 20), "stalled asker {k} got the whole piece ({n} bytes)");
    }
}

/// A piece's wrong bytes, of the right length.
fn wrong_piece(g: &Geometry, i: u32) -> Vec<u8> {
    vec![(i as u8) ^ 0x5a; g.len(i).unwrap() as usize]
}

/// A fake member "liar": healthy, and every piece asked of it wrong.
fn lying_member() -> axum::Router {
    use axum::extract::{Path, Query};
    use axum::routing::get;
    #[derive(serde::Deserialize)]
    struct Q {
        blob_size: u64,
        piece_size: u64,
    }
    axum::Router::new()
        .route(
            "/v1/health",
            get(|| async {
                axum::Json(serde_json::json!({"status": "ok", "node_id": "liar", "time": "2026-01-01T00:00:00Z"}))
            }),
        )
        .route(
            "/v1/swarm/{d}/piece/{i}",
            get(|Path((_, i)): Path<(String, u32)>, Query(q): Query<Q>| async move {
                wrong_piece(&Geometry::new(q.blob_size, q.piece_size).unwrap(), i)
            }),
        )
}

/// A fake owner: a member ("liar") that answers the swarm routes for a blob
/// of `size` with pieces of its own and their hashes, consistent with each
/// other but not with the blob's digest, and serves wrong bytes of that
/// size whole too (as a peer holding it, and as the owner).
fn lying_owner(size: u64) -> cairn_testkit::Server {
    use axum::routing::{get, post};
    use cairn_cluster::swarm::{Answer, AnswerPeer, PieceHashes};
    let geo = Geometry::new(size, piece_size_for(size)).unwrap();
    let mut hashes = PieceHashes::new(geo);
    for i in 0..geo.count() {
        hashes.record(i, &wrong_piece(&geo, i)).unwrap();
    }
    let answer = Answer {
        interval: Duration::from_millis(100),
        hashes,
        peers: vec![AnswerPeer {
            node_id: "liar".into(),
            addr: "127.0.0.1:1".into(),
            have: Bitfield::full(geo.count()),
        }],
    };
    let answer = serde_json::to_vec(&answer.to_wire()).unwrap();
    let app = lying_member().route("/v1/fetch/{d}", get(move || async move { vec![0x5au8; size as usize] })).route(
        "/v1/swarm/{d}/announce",
        post(move || {
            let a = answer.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], a) }
        }),
    );
    cairn_testkit::Server::start(app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lying_owner_is_caught_by_the_whole_blob_check_named_and_costs_one_origin_copy() {
    lying_owner_case(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_askers_of_a_lying_owner_get_the_right_blob_from_one_origin_copy() {
    lying_owner_case(2).await;
}

/// `n` real nodes fetch at once a blob whose owner is the liar.
async fn lying_owner_case(n: usize) {
    let size = 16u64 << 20;
    let liar = lying_owner(size);
    let mut seed = 1509;
    let (data, d, nodes, origin) = loop {
        let data = blob(seed, size as usize);
        let d = Digest::of(&data);
        let origin = PacedOrigin::start(std::slice::from_ref(&data), PacedSpec::default());
        let mut sp = spec(vec![origin.template()], swarm_on);
        sp.peers = vec![liar.addr()];
        let nodes = start_cluster(n, sp);
        let known = wait_until(WAIT, || nodes.iter().all(|x| x.state.cluster.peers().members().len() == n)).await;
        assert!(known, "the nodes never learnt each other's and the liar's ids");
        // The liar must be the digest's owner.
        match nodes[0].state.cluster.ranking(&d).first().map(String::as_str) {
            Some("liar") => break (data, d, nodes, origin),
            _ => seed += 1,
        }
    };
    // Nothing but the right bytes is ever an object, while the fetches run.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watches: Vec<_> = nodes
        .iter()
        .map(|node| {
            let (store, stop, data) = (node.store.clone(), std::sync::Arc::clone(&stop), data.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(mut r) = store.get(&d) {
                        let mut seen = Vec::new();
                        std::io::Read::read_to_end(&mut r, &mut seen).unwrap();
                        return seen == data;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                true
            })
        })
        .collect();
    let pulls: Vec<_> = nodes.iter().map(|node| tokio::spawn(pull(node.url(), d))).collect();
    for (i, p) in pulls.into_iter().enumerate() {
        let (status, body) = p.await.unwrap();
        assert_eq!(status, 200, "node {i}");
        assert!(body == data, "node {i} served other bytes");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in watches {
        assert!(w.join().unwrap(), "a wrong blob was visible as an object");
    }
    assert_eq!(origin.bytes(), size, "the origin sent one copy, no more");
    assert_eq!(origin.requests(), 1);
    let pieces = u64::from(Geometry::new(size, piece_size_for(size)).unwrap().count());
    let (mut from_peers, mut excluded) = (0, 0);
    for node in &nodes {
        assert_eq!(node.store.size(&d).unwrap(), size);
        from_peers += metric(node, "cairn_swarm_pieces_total{source=\"peer\"}").await;
        excluded += metric(node, "cairn_swarm_excluded_peers_total").await;
    }
    // The liar's pieces were taken (each matched its hash) and then thrown away.
    assert!(from_peers >= pieces, "the swarm never ran");
    assert!(excluded >= 1, "the lying owner is not counted as an excluded peer");
}
