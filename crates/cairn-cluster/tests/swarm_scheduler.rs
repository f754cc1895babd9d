//! The swarm scheduler under random sequences of events: whatever peers
//! announce, send, fail or stall, its requests stay within its limits and
//! never ask a piece of a source that does not hold it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cairn_cluster::swarm::{
    Bitfield, Failure, Geometry, MIN_PIECE_SIZE, PieceSource, Received, Request, Scheduler, SchedulerConfig, Verdict,
};
use proptest::prelude::*;

const PIECES: u32 = 10;

#[derive(Debug, Clone)]
enum Op {
    Has(u8, u16),
    Gone(u8),
    Receive(usize, bool),
    Fail(usize, u8),
    Wait(u16),
    Origin(bool),
    Hashes(u16),
    Exclude(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..5, any::<u16>()).prop_map(|(p, b)| Op::Has(p, b)),
        (0u8..5).prop_map(Op::Gone),
        (any::<usize>(), proptest::bool::weighted(0.9)).prop_map(|(i, g)| Op::Receive(i, g)),
        (any::<usize>(), 0u8..5).prop_map(|(i, k)| Op::Fail(i, k)),
        (0u16..30_000).prop_map(Op::Wait),
        any::<bool>().prop_map(Op::Origin),
        any::<u16>().prop_map(Op::Hashes),
        (0u8..5).prop_map(Op::Exclude),
    ]
}

fn bits(mask: u16) -> Bitfield {
    let mut b = Bitfield::new(PIECES);
    for i in 0..PIECES {
        if mask & (1 << i) != 0 {
            b.set(i);
        }
    }
    b
}

/// What the test knows independently of the scheduler.
struct Model {
    /// What each live peer holds (only grows while it lives).
    holds: BTreeMap<u32, Bitfield>,
    excluded: BTreeSet<u32>,
    received_good: BTreeSet<u32>,
    origin: bool,
}

fn check(s: &Scheduler<u32>, m: &Model, cfg: &SchedulerConfig, new: &[Request<u32>], g: &Geometry) {
    let inflight = s.in_flight();
    let peer_reqs = inflight.iter().filter(|r| r.from != PieceSource::Origin).count();
    let origin_reqs = inflight.len() - peer_reqs;
    assert!(peer_reqs <= cfg.max_requests, "{peer_reqs} peer requests");
    assert!(origin_reqs <= cfg.max_origin_requests, "{origin_reqs} origin requests");
    let mut per_peer: BTreeMap<u32, usize> = BTreeMap::new();
    let mut per_piece: BTreeMap<u32, u8> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for r in inflight {
        assert!(seen.insert((r.from.clone(), r.piece)), "the same piece twice from one source: {r:?}");
        *per_piece.entry(r.piece).or_default() += 1;
        assert_eq!(Some(r.range.clone()), g.range(r.piece));
        if let PieceSource::Peer(p) = &r.from {
            *per_peer.entry(*p).or_default() += 1;
            assert!(!m.excluded.contains(p), "a request to excluded peer {p}");
        }
    }
    assert!(per_peer.values().all(|&n| n <= cfg.max_per_peer), "{per_peer:?}");
    assert!(per_piece.values().all(|&n| n <= cfg.endgame_copies), "{per_piece:?}");
    for r in new {
        assert!(!s.have().get(r.piece), "asked for held piece {}", r.piece);
        match &r.from {
            PieceSource::Peer(p) => {
                let holds = m.holds.get(p).is_some_and(|b| b.get(r.piece));
                assert!(holds, "asked peer {p} for piece {} it does not hold", r.piece);
            }
            PieceSource::Origin => assert!(m.origin, "asked the origin while not the owner"),
        }
    }
    for i in s.have().iter() {
        assert!(m.received_good.contains(&i), "holds piece {i} that never came good");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn scheduler_requests_stay_within_limits_and_ask_only_holders(ops in proptest::collection::vec(op(), 1..80)) {
        let g = Geometry::new(u64::from(PIECES) * MIN_PIECE_SIZE - 5, MIN_PIECE_SIZE).unwrap();
        let cfg = SchedulerConfig { seed: 3, ..SchedulerConfig::default() };
        let mut s: Scheduler<u32> = Scheduler::new(g, cfg.clone());
        let mut m = Model { holds: BTreeMap::new(), excluded: BTreeSet::new(), received_good: BTreeSet::new(), origin: false };
        let mut now = Duration::ZERO;
        for op in ops {
            match op {
                Op::Has(p, mask) => {
                    let p = u32::from(p);
                    // A live peer's pieces only grow.
                    let b = m.holds.entry(p).or_insert_with(|| Bitfield::new(PIECES));
                    for i in bits(mask).iter() {
                        b.set(i);
                    }
                    let b = b.clone();
                    s.peer_has(now, p, &b).unwrap();
                }
                Op::Gone(p) => {
                    let p = u32::from(p);
                    for r in s.peer_gone(&p) {
                        assert_eq!(r.from, PieceSource::Peer(p));
                    }
                    m.holds.remove(&p);
                }
                Op::Receive(i, good) => {
                    let f = s.in_flight();
                    if f.is_empty() { continue; }
                    let r = f[i % f.len()].clone();
                    let v = if good { Verdict::Good } else { Verdict::Bad };
                    if good { m.received_good.insert(r.piece); }
                    match s.piece_received(now, &r.from, r.piece, v) {
                        Received::Stored { cancel } => {
                            prop_assert!(good);
                            prop_assert!(cancel.iter().all(|c| c.piece == r.piece));
                        }
                        Received::Excluded { cancel } => {
                            prop_assert!(!good);
                            let PieceSource::Peer(p) = r.from else { panic!("origin excluded") };
                            prop_assert!(cancel.iter().all(|c| c.from == PieceSource::Peer(p)));
                            m.excluded.insert(p);
                        }
                        Received::Ignored => {}
                    }
                }
                Op::Fail(i, k) => {
                    let f = s.in_flight();
                    if f.is_empty() { continue; }
                    let r = f[i % f.len()].clone();
                    let why = [Failure::Busy, Failure::Missing, Failure::Error, Failure::Gone, Failure::Declined][usize::from(k)];
                    let _ = s.piece_failed(now, &r.from, r.piece, why);
                    // The test's view stays a superset of the scheduler's.
                    if matches!(why, Failure::Missing | Failure::Declined)
                        && let PieceSource::Peer(p) = r.from
                        && let Some(b) = m.holds.get_mut(&p)
                    {
                        b.clear(r.piece);
                    }
                }
                Op::Wait(ms) => {
                    now += Duration::from_millis(u64::from(ms));
                    // Expired requests, plus the other requests of a peer
                    // that too many expiries made the scheduler drop (for
                    // the caller to cancel).
                    for r in s.expire(now) {
                        let dropped = matches!(&r.from, PieceSource::Peer(p) if !s.knows(p) || s.excluded().contains_key(p));
                        prop_assert!(r.deadline <= now || dropped, "{r:?} returned by expire at {now:?}");
                    }
                }
                Op::Origin(on) => {
                    s.set_origin(on);
                    m.origin = on;
                    if !on {
                        // Origin requests already sent may finish; new ones may not start.
                    }
                }
                Op::Hashes(mask) => s.hashes_known(&bits(mask)).unwrap(),
                Op::Exclude(p) => {
                    let p = u32::from(p);
                    let _ = s.exclude(&p, "test".into());
                    m.excluded.insert(p);
                }
            }
            let new = s.next_requests(now);
            check(&s, &m, &cfg, &new, &g);
        }
    }

    #[test]
    fn with_one_honest_full_peer_every_transfer_completes(ops in proptest::collection::vec(op(), 0..40)) {
        // Whatever happened before, an honest peer holding everything and
        // answering every request brings the transfer to its end.
        let g = Geometry::new(u64::from(PIECES) * MIN_PIECE_SIZE, MIN_PIECE_SIZE).unwrap();
        let mut s: Scheduler<u32> = Scheduler::new(g, SchedulerConfig::default());
        s.hashes_known(&Bitfield::full(PIECES)).unwrap();
        let mut now = Duration::ZERO;
        for op in ops {
            if let Op::Has(p, mask) = op {
                s.peer_has(now, u32::from(p), &bits(mask)).unwrap();
            }
            if let Op::Wait(ms) = op {
                now += Duration::from_millis(u64::from(ms));
            }
            let _ = s.next_requests(now);
        }
        for r in s.in_flight().to_vec() {
            let _ = s.piece_failed(now, &r.from, r.piece, Failure::Gone);
        }
        for p in 0..5 {
            let _ = s.peer_gone(&p);
        }
        s.peer_has(now, 99, &Bitfield::full(PIECES)).unwrap();
        for _ in 0..100 {
            if s.is_complete() { break; }
            now += Duration::from_secs(3);
            for r in s.next_requests(now) {
                let _ = s.piece_received(now, &r.from, r.piece, Verdict::Good);
            }
        }
        prop_assert!(s.is_complete());
    }
}
