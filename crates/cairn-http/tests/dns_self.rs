//! `discovery: dns` beside the health probe of a running node: an address
//! the name gives that turns out to reach the node itself (a NAT or
//! another interface, so it is not among the addresses the node knows as
//! its own) is found by the probe (same node id and instance), dropped,
//! and not added back by later resolutions.

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_cluster::discovery::{OwnAddrs, PeerEvent, Resolver, spawn_dns};
use cairn_store::Digest;
use cairn_testkit::{NodeSpec, TestNode};
use common::wait_until;

/// Always the same answer; counts the resolutions.
struct Fixed {
    answer: Vec<SocketAddr>,
    calls: Arc<AtomicUsize>,
}

impl Resolver for Fixed {
    async fn resolve(&self, _name: &str) -> io::Result<Vec<SocketAddr>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.answer.clone())
    }
}

#[tokio::test]
async fn a_dns_address_that_reaches_the_node_itself_is_dropped_by_the_probe_and_not_added_back() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let me: SocketAddr = l.local_addr().unwrap();
    let a = TestNode::start_on(
        l,
        NodeSpec { health_loop: true, health_interval: Duration::from_millis(50), ..Default::default() },
        tempfile::tempdir().unwrap(),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let events: Arc<Mutex<Vec<PeerEvent>>> = Arc::default();
    let resolver = Fixed { answer: vec![me], calls: Arc::clone(&calls) };
    // The node as it knows itself: somewhere else (behind a NAT, say).
    let own = OwnAddrs { bound: "192.0.2.1:7420".parse().unwrap(), advertise: None };
    let (cluster, seen) = (a.state.cluster.clone(), Arc::clone(&events));
    let dns = spawn_dns("self.test:1".into(), resolver, own, Duration::from_millis(20), Duration::from_secs(1), {
        move |ev| {
            seen.lock().unwrap().push(ev.clone());
            cluster.peers().apply(&ev);
        }
    });
    let added = || !events.lock().unwrap().is_empty();
    assert!(wait_until(Duration::from_secs(5), added).await, "the name's address is added");
    let peers = || a.state.cluster.peers().addresses();
    assert!(wait_until(Duration::from_secs(5), || peers().is_empty()).await, "the probe drops it: {:?}", peers());
    // Ten more resolutions of the same answer.
    let after = calls.load(Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(5), || calls.load(Ordering::SeqCst) >= after + 10).await);
    assert!(peers().is_empty(), "not added back: {:?}", peers());
    assert_eq!(events.lock().unwrap().len(), 1, "one Up, nothing since: {:?}", events.lock().unwrap());
    let before = a.counters.get("HEAD /v1/blobs");
    assert!(a.state.cluster.fetch(Digest::of(b"nowhere")).await.is_err());
    assert_eq!(a.counters.get("HEAD /v1/blobs"), before, "the node never asks itself");
    dns.abort();
}
