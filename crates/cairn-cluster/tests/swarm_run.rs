//! One swarm transfer in process, over fake peers, tracker and disk
//! (`swarm_run::run`): lying and stalled peers, an owner killed, piece
//! boundaries. Time is paused: deadlines pass without waiting.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_cluster::swarm::{Bitfield, Failure, Geometry, MIN_PIECE_SIZE, PieceHashes, PieceSource, SchedulerConfig};
use cairn_cluster::swarm_run::{Served, SwarmIo, SwarmRunError, TrackerView, run};
use futures_util::future::BoxFuture;

const P: u64 = MIN_PIECE_SIZE;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Honest,
    Liar,
    Stall,
    /// Serves one piece, then dies; this node becomes the owner.
    OwnerDyingAfterOne,
    /// Serves one piece, then dies (not the owner).
    DyingAfterOne,
}

struct Fake {
    data: Vec<u8>,
    geo: Geometry,
    hashes: PieceHashes,
    peers: Mutex<BTreeMap<u32, (Bitfield, Mode)>>,
    stored: Mutex<Vec<u8>>,
    origin_bytes: AtomicU64,
    served: Mutex<BTreeMap<u32, u32>>,
    owner: AtomicBool,
    gone: Mutex<Vec<u32>>,
    /// What the tracker says peers hold, when not the truth.
    claims: Mutex<Option<BTreeMap<u32, Bitfield>>>,
    /// Honest peers send their bitfield with each piece.
    send_have: AtomicBool,
    /// Every piece takes this long to arrive.
    delay: Mutex<Duration>,
    /// Polls answered; later ones never are.
    answer_polls: AtomicU64,
    polls: AtomicU64,
}

impl Fake {
    fn new(size: u64, peers: &[(u32, Range<u32>, Mode)], owner: bool) -> Arc<Self> {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 253) as u8).collect();
        let geo = Geometry::new(size, P).unwrap();
        let mut hashes = PieceHashes::new(geo);
        for i in 0..geo.count() {
            let r = geo.range(i).unwrap();
            hashes.record(i, &data[r.start as usize..r.end as usize]).unwrap();
        }
        let peers = peers
            .iter()
            .map(|(p, pieces, mode)| {
                let mut b = Bitfield::new(geo.count());
                for i in pieces.clone() {
                    b.set(i);
                }
                (*p, (b, *mode))
            })
            .collect();
        Arc::new(Fake {
            stored: Mutex::new(vec![0xEE; size as usize]),
            data,
            geo,
            hashes,
            peers: Mutex::new(peers),
            origin_bytes: AtomicU64::new(0),
            served: Mutex::new(BTreeMap::new()),
            owner: AtomicBool::new(owner),
            gone: Mutex::new(Vec::new()),
            claims: Mutex::new(None),
            send_have: AtomicBool::new(false),
            delay: Mutex::new(Duration::ZERO),
            answer_polls: AtomicU64::new(u64::MAX),
            polls: AtomicU64::new(0),
        })
    }
}

impl SwarmIo<u32> for Fake {
    fn fetch(
        &self,
        from: PieceSource<u32>,
        piece: u32,
        range: Range<u64>,
    ) -> BoxFuture<'static, Result<Served, Failure>> {
        let bytes = Bytes::copy_from_slice(&self.data[range.start as usize..range.end as usize]);
        let p = match from {
            PieceSource::Origin => {
                assert!(self.owner.load(Ordering::SeqCst), "only the owner asks the origin");
                self.origin_bytes.fetch_add(bytes.len() as u64, Ordering::SeqCst);
                return Box::pin(async move { Ok(Served::from(bytes)) });
            }
            PieceSource::Peer(p) => p,
        };
        let mut peers = self.peers.lock().unwrap();
        let Some((have, mode)) = peers.get(&p).cloned() else { return Box::pin(async { Err(Failure::Gone) }) };
        assert!(have.get(piece), "peer {p} asked for piece {piece} it does not hold");
        *self.served.lock().unwrap().entry(p).or_default() += 1;
        let delay = *self.delay.lock().unwrap();
        match mode {
            Mode::Honest => {
                let have = self.send_have.load(Ordering::SeqCst).then_some(have);
                Box::pin(async move {
                    tokio::time::sleep(delay).await;
                    Ok(Served { bytes, have })
                })
            }
            Mode::Liar => {
                let mut wrong = bytes.to_vec();
                wrong[0] ^= 0xFF;
                Box::pin(async move { Ok(Served::from(Bytes::from(wrong))) })
            }
            Mode::Stall => Box::pin(futures_util::future::pending()),
            Mode::OwnerDyingAfterOne | Mode::DyingAfterOne => {
                peers.remove(&p);
                self.gone.lock().unwrap().push(p);
                if mode == Mode::OwnerDyingAfterOne {
                    self.owner.store(true, Ordering::SeqCst);
                }
                Box::pin(async move { Ok(Served::from(bytes)) })
            }
        }
    }

    fn poll(&self, _have: Bitfield, _excluded: Vec<u32>) -> BoxFuture<'static, Option<TrackerView<u32>>> {
        if self.polls.fetch_add(1, Ordering::SeqCst) >= self.answer_polls.load(Ordering::SeqCst) {
            return Box::pin(futures_util::future::pending());
        }
        let peers = match &*self.claims.lock().unwrap() {
            Some(c) => c.iter().map(|(p, b)| (*p, b.clone())).collect(),
            None => self.peers.lock().unwrap().iter().map(|(p, (b, _))| (*p, b.clone())).collect(),
        };
        let view = TrackerView { hashes: self.hashes.clone(), peers, interval: Duration::from_millis(100) };
        Box::pin(async move { Some(view) })
    }

    fn store(&self, _piece: u32, offset: u64, bytes: Bytes) -> BoxFuture<'static, Result<(), String>> {
        let mut s = self.stored.lock().unwrap();
        s[offset as usize..offset as usize + bytes.len()].copy_from_slice(&bytes);
        Box::pin(async { Ok(()) })
    }

    fn is_owner(&self) -> bool {
        self.owner.load(Ordering::SeqCst)
    }

    fn gone(&self) -> Vec<u32> {
        std::mem::take(&mut *self.gone.lock().unwrap())
    }
}

async fn go(f: &Arc<Fake>) -> Result<cairn_cluster::swarm_run::SwarmOutcome<u32>, SwarmRunError> {
    let io: Arc<dyn SwarmIo<u32>> = f.clone();
    run(io, f.geo, SchedulerConfig { seed: 5, ..SchedulerConfig::default() }).await
}

#[tokio::test(start_paused = true)]
async fn swarm_run_takes_pieces_from_several_peers_and_stores_the_blob_exactly() {
    let f = Fake::new(6 * P + 7, &[(1, 0..4, Mode::Honest), (2, 3..7, Mode::Honest)], false);
    let out = go(&f).await.unwrap();
    assert!(*f.stored.lock().unwrap() == f.data, "the stored blob is the blob, short last piece included");
    assert_eq!(f.origin_bytes.load(Ordering::SeqCst), 0, "a non-owner never asks the origin");
    assert_eq!(out.bytes, (0, 6 * P + 7));
    let served = f.served.lock().unwrap();
    assert!(served.get(&1).is_some_and(|n| *n > 0) && served.get(&2).is_some_and(|n| *n > 0), "{served:?}");
}

#[tokio::test(start_paused = true)]
async fn swarm_run_learns_what_a_peer_holds_from_the_pieces_it_sends() {
    // The tracker says peer 1 holds piece 0 only (its view is a poll
    // behind); the piece comes with peer 1's bitfield: all of them.
    let f = Fake::new(8 * P, &[(1, 0..8, Mode::Honest)], false);
    *f.claims.lock().unwrap() = Some(BTreeMap::from([(1, Bitfield::from_hex(8, "80").unwrap())]));
    f.send_have.store(true, Ordering::SeqCst);
    let out = tokio::time::timeout(Duration::from_secs(30), go(&f)).await.expect("no need to wait for the tracker");
    assert_eq!(out.unwrap().bytes, (0, 8 * P));
    assert!(*f.stored.lock().unwrap() == f.data);
}

#[tokio::test(start_paused = true)]
async fn swarm_run_an_owner_that_stops_answering_polls_does_not_hold_up_pieces() {
    // One answer, then polls that hang; the pieces take a while, so
    // later polls fall due while they come.
    let f = Fake::new(16 * P, &[(1, 0..16, Mode::Honest), (2, 0..16, Mode::Honest)], false);
    f.answer_polls.store(1, Ordering::SeqCst);
    *f.delay.lock().unwrap() = Duration::from_millis(50);
    let started = tokio::time::Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(30), go(&f)).await.expect("a hung poll stops nothing");
    assert_eq!(out.unwrap().bytes, (0, 16 * P));
    assert!(f.polls.load(Ordering::SeqCst) >= 2, "a later poll fell due during the transfer");
    // 16 pieces, 4 at a time, 50 ms each: not a poll limit's wait.
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn swarm_run_excludes_a_lying_peer_and_still_stores_the_right_blob() {
    let f = Fake::new(8 * P, &[(1, 0..8, Mode::Liar), (2, 0..8, Mode::Honest)], false);
    let out = go(&f).await.unwrap();
    assert!(*f.stored.lock().unwrap() == f.data, "no wrong byte stored");
    assert_eq!(out.excluded.len(), 1);
    assert_eq!(out.excluded[0].0, 1);
    assert!(out.excluded[0].1.contains("wrong piece"));
    assert!(f.served.lock().unwrap()[&1] <= 2, "caught at its first wrong piece (two were in flight)");
}

#[tokio::test(start_paused = true)]
async fn swarm_run_gives_up_on_a_stalled_peer_and_finishes_from_others() {
    let f = Fake::new(6 * P, &[(1, 0..6, Mode::Stall), (2, 0..6, Mode::Honest)], false);
    let started = tokio::time::Instant::now();
    go(&f).await.unwrap();
    assert!(*f.stored.lock().unwrap() == f.data);
    assert!(f.served.lock().unwrap().get(&1).is_some_and(|n| *n > 0), "the stalled peer was asked");
    // Only the stalled peer's pieces waited for their deadline (10 s and a bit).
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn swarm_run_owner_killed_the_next_resumes_and_asks_the_origin_only_for_the_rest() {
    // Peer 9 owns the digest and holds pieces 0-3; peer 1 holds 4-5. Peer 9
    // dies after serving one piece; this node is next in the ranking.
    let f = Fake::new(8 * P, &[(9, 0..4, Mode::OwnerDyingAfterOne), (1, 4..6, Mode::Honest)], false);
    let out = go(&f).await.unwrap();
    assert!(*f.stored.lock().unwrap() == f.data);
    assert_eq!(f.served.lock().unwrap().get(&9), Some(&1));
    // Pieces 4-5 came from peer 1; the origin sent the rest of what nobody
    // alive held: pieces 6-7 and 0-3 but the one peer 9 served (or that
    // one too, when the news of its death came before its last piece).
    let origin = f.origin_bytes.load(Ordering::SeqCst);
    assert_eq!(out.bytes.0, origin);
    assert_eq!(out.bytes.0 + out.bytes.1, 8 * P);
    assert!(out.bytes.1 >= 2 * P);
    assert!((5 * P..=6 * P).contains(&origin), "not the whole blob again: {origin}");
}

#[tokio::test(start_paused = true)]
async fn swarm_run_a_peer_killed_midway_costs_only_its_requests() {
    let f = Fake::new(8 * P, &[(1, 0..8, Mode::DyingAfterOne), (2, 0..8, Mode::Honest)], false);
    let out = go(&f).await.unwrap();
    assert!(*f.stored.lock().unwrap() == f.data);
    assert_eq!(f.origin_bytes.load(Ordering::SeqCst), 0, "a dead non-owner costs no origin bytes");
    assert_eq!(out.bytes, (0, 8 * P));
    assert!(out.excluded.is_empty(), "dying is not lying");
}

#[tokio::test(start_paused = true)]
async fn swarm_run_as_owner_reads_every_piece_from_the_origin_at_its_boundaries() {
    for size in [4 * P, 4 * P + 1, 4 * P - 1, 1] {
        let f = Fake::new(size, &[], true);
        let out = go(&f).await.unwrap();
        assert!(*f.stored.lock().unwrap() == f.data, "size {size}");
        assert_eq!(f.origin_bytes.load(Ordering::SeqCst), size, "exactly one copy, size {size}");
        assert_eq!(out.bytes, (size, 0));
    }
    let f = Fake::new(0, &[], true);
    assert_eq!(go(&f).await.unwrap().bytes, (0, 0), "an empty blob is done at once");
}

#[tokio::test(start_paused = true)]
async fn swarm_run_with_no_source_gives_up_instead_of_hanging() {
    let f = Fake::new(4 * P, &[], false);
    assert_eq!(go(&f).await.unwrap_err(), SwarmRunError::Starved(cairn_cluster::swarm_run::STARVE_LIMIT));
}
