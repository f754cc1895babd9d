//! `discovery: dns`: the resolution loop with scripted answers (a fake
//! resolver) feeding a real peer set, in paused time.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn_cluster::PeerSet;
use cairn_cluster::discovery::{MAX_DNS_PEERS, OwnAddrs, Resolver, spawn_dns};
use tokio::sync::mpsc;

type Answer = io::Result<Vec<SocketAddr>>;

/// Answers what the test sends, one answer per resolution, and tells the
/// test each time it is asked.
struct Scripted {
    answers: tokio::sync::Mutex<mpsc::UnboundedReceiver<Answer>>,
    asked: mpsc::UnboundedSender<String>,
}

impl Resolver for Scripted {
    async fn resolve(&self, name: &str) -> Answer {
        let _ = self.asked.send(name.to_owned());
        match self.answers.lock().await.recv().await {
            Some(a) => a,
            None => std::future::pending().await,
        }
    }
}

const NAME: &str = "cairn-peers.cairn.svc.cluster.local:7420";
const INTERVAL: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(5);

/// The loop, between two resolutions: it has asked and waits for an answer.
struct Harness {
    peers: Arc<PeerSet>,
    answers: mpsc::UnboundedSender<Answer>,
    asked: mpsc::UnboundedReceiver<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// A node at 10.0.0.1:7420 (bound there and advertised) with `static_peers`.
    async fn start(static_peers: &[&str]) -> Harness {
        let list: Vec<String> = static_peers.iter().map(|s| (*s).to_owned()).collect();
        let peers = Arc::new(PeerSet::new(&list, INTERVAL));
        peers.set_own_id("me");
        let (answers, rx) = mpsc::unbounded_channel();
        let (asked_tx, asked) = mpsc::unbounded_channel();
        let resolver = Scripted { answers: tokio::sync::Mutex::new(rx), asked: asked_tx };
        let own = OwnAddrs { bound: "10.0.0.1:7420".parse().unwrap(), advertise: "10.0.0.1:7420".parse().ok() };
        let p = Arc::clone(&peers);
        let task = spawn_dns(NAME.to_owned(), resolver, own, INTERVAL, TIMEOUT, move |ev| p.apply(&ev));
        let mut h = Harness { peers, answers, asked, task };
        h.next_ask().await;
        h
    }

    async fn next_ask(&mut self) {
        assert_eq!(self.asked.recv().await.as_deref(), Some(NAME), "the loop resolves dns_name");
    }

    /// Answers the waiting resolution; returns once the loop asks again,
    /// so the answer has been applied.
    async fn answer(&mut self, a: Answer) {
        self.answers.send(a).unwrap();
        self.next_ask().await;
    }

    /// Sends no answer: the resolution times out, then the loop asks again.
    async fn silence(&mut self) {
        self.next_ask().await;
    }

    fn addresses(&self) -> Vec<String> {
        let mut a = self.peers.addresses();
        a.sort();
        a
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

fn strs(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

#[tokio::test(start_paused = true)]
async fn dns_peers_join_when_they_appear_and_leave_when_gone_beside_the_static_peers() {
    let mut h = Harness::start(&["static:7420"]).await;
    h.answer(Ok(addrs(&["10.0.0.2:7420", "10.0.0.3:7420"]))).await;
    assert_eq!(h.addresses(), strs(&["static:7420", "10.0.0.2:7420", "10.0.0.3:7420"]));
    assert!(h.peers.due(std::time::Instant::now()).0.contains(&"10.0.0.3:7420".to_owned()), "probed at once");
    h.answer(Ok(addrs(&["10.0.0.3:7420", "10.0.0.4:7420"]))).await;
    assert_eq!(h.addresses(), strs(&["static:7420", "10.0.0.3:7420", "10.0.0.4:7420"]), "10.0.0.2 left, .4 came");
    h.answer(Ok(Vec::new())).await;
    assert_eq!(h.addresses(), strs(&["static:7420"]), "an empty answer leaves only the configured peers");
    // A configured peer that DNS also names stays when DNS drops it.
    let mut both = Harness::start(&["10.0.0.9:1"]).await;
    both.answer(Ok(addrs(&["10.0.0.9:1"]))).await;
    both.answer(Ok(Vec::new())).await;
    assert_eq!(both.addresses(), ["10.0.0.9:1"]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_or_timed_out_resolution_keeps_the_last_dns_peers() {
    let mut h = Harness::start(&[]).await;
    h.answer(Ok(addrs(&["10.0.0.2:7420", "10.0.0.3:7420"]))).await;
    let before = h.addresses();
    h.answer(Err(io::Error::other("failed to lookup address information: Name or service not known"))).await;
    assert_eq!(h.addresses(), before, "a failure changes nothing");
    let t0 = tokio::time::Instant::now();
    h.silence().await;
    assert!(t0.elapsed() >= TIMEOUT, "the loop waited for its timeout");
    assert_eq!(h.addresses(), before, "a timeout changes nothing");
    h.answer(Ok(addrs(&["10.0.0.3:7420"]))).await;
    assert_eq!(h.addresses(), ["10.0.0.3:7420"], "the next answer applies again");
}

#[tokio::test(start_paused = true)]
async fn a_dns_flood_of_thousands_of_records_makes_at_most_max_dns_peers_peers() {
    let mut h = Harness::start(&[]).await;
    let flood: Vec<SocketAddr> =
        (0..5000u32).map(|i| SocketAddr::from(([10, 1, (i >> 8) as u8, (i & 0xff) as u8], 7420))).collect();
    h.answer(Ok(flood.clone())).await;
    let first = h.addresses();
    assert_eq!(first.len(), MAX_DNS_PEERS);
    // The same records in another order keep the same peers: no churn.
    let mut shuffled = flood;
    shuffled.reverse();
    h.answer(Ok(shuffled)).await;
    assert_eq!(h.addresses(), first);
}

#[tokio::test(start_paused = true)]
async fn dns_never_adds_this_node_and_a_peer_the_probe_found_to_be_this_node_stays_out() {
    let mut h = Harness::start(&[]).await;
    // Its own bound/advertised address, and addresses no peer can have.
    h.answer(Ok(addrs(&["10.0.0.1:7420", "10.0.0.2:7420", "0.0.0.0:7420", "224.0.0.251:7420", "10.0.0.5:0"]))).await;
    assert_eq!(h.addresses(), ["10.0.0.2:7420"]);
    // 10.0.0.7 is this node under another address (NAT, a second
    // interface): the health probe finds out by node id and instance.
    h.answer(Ok(addrs(&["10.0.0.2:7420", "10.0.0.7:7420"]))).await;
    h.peers.mark_self("10.0.0.7:7420");
    assert_eq!(h.addresses(), ["10.0.0.2:7420"]);
    h.answer(Ok(addrs(&["10.0.0.2:7420", "10.0.0.7:7420"]))).await;
    assert_eq!(h.addresses(), ["10.0.0.2:7420"], "the next resolutions do not add it back");
}
