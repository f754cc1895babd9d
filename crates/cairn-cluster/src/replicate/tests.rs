//! Holder selection, the repair pass and request refusals, over a fake
//! peer client (no HTTP).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_store::{Digest, Store};

use super::*;
use crate::ClusterConfig;
use crate::peer::{BoxFut, ManifestEntry, PeerApi, PeerHealth, RemoteBlob};

/// Peers answering replication requests from a table; every call recorded.
#[derive(Default)]
struct Fake {
    /// Per address: what a replication request gets (`None`: an error).
    answers: Mutex<HashMap<String, Option<ReplicaAnswer>>>,
    /// Per address: whether HEAD finds the blob.
    has: Mutex<HashMap<String, bool>>,
    /// `(address, digest, from, pusher)` of every replication request.
    calls: Mutex<Vec<(String, Digest, String, String)>>,
}

impl Fake {
    fn answer(&self, addr: &str, a: Option<ReplicaAnswer>) {
        self.answers.lock().unwrap().insert(addr.into(), a);
    }
    fn take_calls(&self) -> Vec<(String, Digest, String, String)> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

fn refused(peer: &str) -> ClusterError {
    ClusterError::PeerStatus { peer: peer.into(), what: "test".into(), status: 500, body: String::new() }
}

impl PeerApi for Fake {
    fn health<'a>(&'a self, peer: &'a str) -> BoxFut<'a, PeerHealth> {
        Box::pin(async move { Err(refused(peer)) })
    }
    fn head_blob<'a>(&'a self, peer: &'a str, _d: &'a Digest) -> BoxFut<'a, Option<u64>> {
        let has = self.has.lock().unwrap().get(peer).copied().unwrap_or(false);
        Box::pin(async move { Ok(has.then_some(1)) })
    }
    fn get_blob<'a>(&'a self, peer: &'a str, _d: &'a Digest) -> BoxFut<'a, RemoteBlob> {
        Box::pin(async move { Err(refused(peer)) })
    }
    fn list_manifests<'a>(&'a self, _peer: &'a str) -> BoxFut<'a, Vec<ManifestEntry>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn get_manifest<'a>(&'a self, peer: &'a str, _r: &'a cairn_store::RefFile) -> BoxFut<'a, Vec<u8>> {
        Box::pin(async move { Err(refused(peer)) })
    }
    fn replicate<'a>(
        &'a self,
        peer: &'a str,
        digest: &'a Digest,
        from: &'a str,
        pusher: &'a str,
    ) -> BoxFut<'a, ReplicaAnswer> {
        self.calls.lock().unwrap().push((peer.into(), *digest, from.into(), pusher.into()));
        let a = self.answers.lock().unwrap().get(peer).copied().unwrap_or(Some(ReplicaAnswer::Held));
        Box::pin(async move { a.ok_or_else(|| refused(peer)) })
    }
}

const PEERS: [(&str, &str); 3] = [("na", "a:1"), ("nb", "b:2"), ("nc", "c:3")];

/// Node "me" with the three peers up, `replicas: k`.
fn node(k: usize) -> (Arc<Replicator>, Arc<Fake>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ClusterConfig {
        node_id: "me".into(),
        peers: PEERS.iter().map(|p| p.1.to_owned()).collect(),
        peer_timeout: Duration::from_secs(1),
        enable_cdn_fallback: false,
        replicas: k,
        ..Default::default()
    };
    let fake = Arc::new(Fake::default());
    let api: Arc<dyn PeerApi> = fake.clone();
    let c = Cluster::new(Store::open(dir.path()).unwrap(), cfg, api);
    for (id, addr) in PEERS {
        c.peers().mark_up(addr, id, Duration::from_millis(1));
    }
    (Replicator::new(c), fake, dir)
}

fn members(ids: &[&str], me: &str) -> Vec<Member> {
    ids.iter().map(|id| if *id == me { Member::local(id) } else { Member::peer(id, &format!("{id}:1")) }).collect()
}

fn ids(ms: &[Member]) -> Vec<String> {
    ms.iter().map(|m| m.node_id.clone()).collect()
}

/// A digest whose ranking over `all` puts `first` where asked (searching).
fn digest_where(all: &[&str], pred: impl Fn(&[String]) -> bool) -> Digest {
    let ms = members(all, all[0]);
    (0u32..100_000)
        .map(|i| Digest::of(&i.to_le_bytes()))
        .find(|d| pred(&ids(&rank(d, &ms))))
        .expect("some digest ranks so")
}

#[test]
fn holders_are_the_pusher_then_the_first_others_of_the_ranking() {
    let all = ["me", "na", "nb", "nc"];
    let ms = members(&all, "me");
    // The pusher ranked third: it still holds one copy, the top one holds the other.
    let d = digest_where(&all, |r| r[2] == "nb");
    let r = ids(&rank(&d, &ms));
    assert_eq!(ids(&holders(&d, &ms, "nb", 2)), [r[2].clone(), r[0].clone()]);
    assert_eq!(ids(&holders(&d, &ms, "nb", 3)), [r[2].clone(), r[0].clone(), r[1].clone()]);
    // The pusher ranked first: the holders are the top k.
    let d = digest_where(&all, |r| r[0] == "na");
    assert_eq!(ids(&holders(&d, &ms, "na", 3)), ids(&rank(&d, &ms))[..3]);
    // k = 1: only the pusher.
    assert_eq!(ids(&holders(&d, &ms, "nc", 1)), ["nc"]);
    // More copies than nodes: every node, once.
    assert_eq!(holders(&d, &ms, "na", 9).len(), 4);
}

#[test]
fn once_the_pusher_leaves_the_holders_are_the_top_k_and_every_node_agrees() {
    let all = ["me", "na", "nb", "nc"];
    for i in 0..50u32 {
        let d = Digest::of(&i.to_le_bytes());
        let without: Vec<&str> = all.iter().copied().filter(|id| *id != "na").collect();
        let expected = ids(&rank(&d, &members(&without, "me"))[..2]);
        // Each remaining node, listing members in its own order, agrees.
        for me in &without {
            let mut ms = members(&without, me);
            ms.reverse();
            assert_eq!(ids(&holders(&d, &ms, "na", 2)), expected);
        }
    }
}

/// Holds `d` (stored) on the replicator's node as `role` of `pusher`.
fn stored_and_held(r: &Replicator, bytes: &[u8], role: Role, pusher: &str) -> Digest {
    let d = r.cluster.store().put_reader(bytes, None).unwrap().digest;
    r.cluster.store().hold(&d, role, pusher).unwrap();
    d
}

fn addr_of(id: &str) -> String {
    PEERS.iter().find(|p| p.0 == id).map(|p| p.1.to_owned()).unwrap()
}

#[tokio::test]
async fn repair_pass_asks_only_the_holders_and_is_free_when_nothing_changed() {
    let (r, fake, _dir) = node(3);
    let d = stored_and_held(&r, b"pushed here", Role::Pushed, "me");
    let hs = holders(&d, &r.members(), "me", 3);
    let expect: Vec<String> = hs.iter().filter(|m| !m.is_local()).map(|m| addr_of(&m.node_id)).collect();
    assert_eq!(r.repair_pass().await, 0, "both holders answered held");
    let mut asked: Vec<String> = fake.take_calls().into_iter().map(|c| c.0).collect();
    asked.sort();
    let mut want = expect.clone();
    want.sort();
    assert_eq!(asked, want, "exactly the other k-1 holders are asked");
    assert_eq!(r.stats().held, 1);
    assert_eq!(r.repair_pass().await, 0);
    assert!(fake.take_calls().is_empty(), "confirmed for the same holders: no request at all");
}

#[tokio::test]
async fn repair_pass_restores_copies_on_the_next_holder_when_a_holder_leaves() {
    let (r, fake, _dir) = node(2);
    // A replica of a push to "na", which ranks first; "me" ranks second or later.
    let all = ["me", "na", "nb", "nc"];
    let d = (0u32..100_000)
        .map(|i| r.cluster.store().put_reader(&i.to_le_bytes()[..], None).unwrap().digest)
        .find(|d| ids(&rank(d, &members(&all, "me")))[..2] == ["na".to_owned(), "me".to_owned()])
        .unwrap();
    r.cluster.store().hold(&d, Role::Replica, "na").unwrap();
    assert_eq!(r.repair_pass().await, 0);
    assert_eq!(fake.take_calls().iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ["a:1"]);
    // The pusher goes down: the holders become the top 2 of the rest.
    r.cluster.peers().mark_down("a:1", "refused");
    let now = holders(&d, &r.members(), "na", 2);
    assert!(now.iter().any(Member::is_local) && !ids(&now).contains(&"na".to_owned()));
    let next = now.iter().find(|m| !m.is_local()).unwrap();
    fake.answer(&addr_of(&next.node_id), Some(ReplicaAnswer::Queued));
    assert!(r.repair_due(std::time::Instant::now() + MIN_PASS_GAP), "a membership change starts a pass");
    assert_eq!(r.repair_pass().await, 1, "queued is not yet a copy");
    let calls = fake.take_calls();
    assert_eq!(calls.len(), 1);
    let (addr, cd, from, pusher) = &calls[0];
    assert_ne!(addr, "a:1");
    assert_eq!((cd, from.as_str(), pusher.as_str()), (&d, "me", "na"), "pull from me, pushed by na");
    assert_eq!(r.stats().under_replicated, 1);
    // The next pass finds it held: complete again.
    fake.answer(addr, Some(ReplicaAnswer::Held));
    assert_eq!(r.repair_pass().await, 0);
    assert_eq!(r.stats().under_replicated, 0);
}

#[tokio::test]
async fn a_node_no_longer_among_the_holders_drops_its_pin_once_they_all_confirm() {
    let (r, fake, _dir) = node(2);
    let all = ["me", "na", "nb", "nc"];
    // Pushed to "na"; "me" is not among na + the first other.
    let d = (0u32..100_000)
        .map(|i| r.cluster.store().put_reader(&i.to_le_bytes()[..], None).unwrap().digest)
        .find(|d| !holders(d, &members(&all, "me"), "na", 2).iter().any(Member::is_local))
        .unwrap();
    r.cluster.store().hold(&d, Role::Replica, "na").unwrap();
    let other = holders(&d, &r.members(), "na", 2)[1].node_id.clone();
    fake.answer(&addr_of(&other), None);
    r.repair_pass().await;
    assert!(r.cluster.store().held(&d).unwrap().is_some(), "kept while a holder has not confirmed");
    fake.answer(&addr_of(&other), Some(ReplicaAnswer::Held));
    r.repair_pass().await;
    assert_eq!(r.cluster.store().held(&d).unwrap(), None, "both holders confirmed: this copy is a cache");
    assert!(r.cluster.store().exists(&d));
    assert_eq!(r.stats().held, 0);
}

#[tokio::test]
async fn replication_requests_are_refused_when_replication_is_off() {
    let (r, _fake, _dir) = node(1);
    assert!(matches!(r.accept(Digest::of(b"x"), "na", "na").await, Err(Refused::Off)));
}

#[tokio::test]
async fn replication_requests_for_blobs_this_node_does_not_hold_in_its_ranking_are_refused() {
    let (r, _fake, _dir) = node(2);
    let all = ["me", "na", "nb", "nc"];
    let d = digest_where(&all, |rk| rk[0] != "me" && rk[1] != "me" && rk[0] != "nb");
    // Pushed to nb: holders are nb and the top one, neither is me.
    assert!(matches!(r.accept(d, "nb", "nb").await, Err(Refused::NotAHolder { .. })));
}

#[tokio::test]
async fn replication_requests_never_pull_from_a_node_that_is_not_a_member() {
    let (r, fake, _dir) = node(4);
    fake.has.lock().unwrap().insert("evil:6".into(), true);
    let d = Digest::of(b"anything");
    assert!(matches!(r.accept(d, "evil", "na").await, Err(Refused::UnknownPeer(_))));
    assert!(matches!(r.accept(d, "me", "na").await, Err(Refused::UnknownPeer(_))), "never from itself");
    assert_eq!(r.stats().in_flight, 0, "nothing queued");
}

#[tokio::test]
async fn replication_requests_for_digests_the_holder_lacks_are_refused() {
    let (r, _fake, _dir) = node(4);
    let d = Digest::of(b"unknown");
    assert!(matches!(r.accept(d, "na", "na").await, Err(Refused::NotOnHolder { .. })));
    assert_eq!(r.stats().in_flight, 0, "nothing queued");
}

#[tokio::test]
async fn replication_requests_are_refused_once_the_pull_queue_is_full() {
    let (r, fake, _dir) = node(4);
    fake.has.lock().unwrap().insert("a:1".into(), true);
    // The pull loop is not running: every accepted request stays queued.
    for i in 0..MAX_PENDING_PULLS as u32 {
        let a = r.accept(Digest::of(&i.to_le_bytes()), "na", "na").await.unwrap();
        assert_eq!(a, ReplicaAnswer::Queued);
    }
    // The same digest again is no new entry.
    assert_eq!(r.accept(Digest::of(&0u32.to_le_bytes()), "na", "na").await.unwrap(), ReplicaAnswer::Queued);
    let over = r.accept(Digest::of(b"one more"), "na", "na").await;
    assert!(matches!(over, Err(Refused::Busy(n)) if n == MAX_PENDING_PULLS), "{over:?}");
    assert_eq!(r.stats().in_flight, MAX_PENDING_PULLS);
}

#[tokio::test]
async fn a_blob_already_here_is_pinned_at_once_as_a_replica() {
    let (r, _fake, _dir) = node(4);
    let d = r.cluster.store().put_reader(&b"cached copy"[..], None).unwrap().digest;
    assert_eq!(r.accept(d, "na", "na").await.unwrap(), ReplicaAnswer::Held);
    assert_eq!(r.cluster.store().held(&d).unwrap(), Some(Held { role: Role::Replica, pusher: "na".into() }));
}

#[tokio::test]
async fn pushes_are_marked_held_and_placed_on_the_other_holders() {
    let (r, fake, _dir) = node(2);
    let task = tokio::spawn(Arc::clone(&r).run());
    let d = r.cluster.store().put_reader(&b"a push"[..], None).unwrap().digest;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let calls = fake.take_calls();
        if let Some(c) = calls.iter().find(|c| c.1 == d) {
            let hs = holders(&d, &r.members(), "me", 2);
            assert_eq!(c.0, addr_of(&hs[1].node_id), "the first other node of the ranking");
            assert_eq!((c.2.as_str(), c.3.as_str()), ("me", "me"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the push was never placed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(r.cluster.store().held(&d).unwrap(), Some(Held { role: Role::Pushed, pusher: "me".into() }));
    task.abort();
}

#[tokio::test]
async fn a_blob_pinned_on_request_counts_as_held_before_any_repair_pass() {
    let (r, _fake, _dir) = node(4);
    let d = r.cluster.store().put_reader(&b"cached copy"[..], None).unwrap().digest;
    assert_eq!(r.stats().held, 0);
    assert_eq!(r.accept(d, "na", "na").await.unwrap(), ReplicaAnswer::Held);
    assert_eq!(r.stats().held, 1, "counted at once");
    assert_eq!(r.accept(d, "na", "na").await.unwrap(), ReplicaAnswer::Held);
    assert_eq!(r.stats().held, 1, "asking again counts nothing");
}
