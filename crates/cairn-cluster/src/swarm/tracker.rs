//! The owner's view of the swarm: who holds which pieces. Askers announce
//! their bitfield and get a sample of peers holding pieces they lack. Only
//! routing: no byte of the blob passes through it.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use super::{Bitfield, Rng, SwarmError};

/// Peers in one answer to an asker.
pub const DEFAULT_SAMPLE: usize = 16;

/// Pieces a node serves at once; past them it answers busy, and the asker
/// tries another holder (so a fresh piece leaves a node fast, to few, who
/// pass it on, instead of slowly to everyone).
pub const UPLOAD_SLOTS: usize = 3;

/// How often an asker polls the tracker, given the members it knows of:
/// 100 µs a member, between 100 ms and 2 s, so the owner answers at most
/// about 10,000 polls a second however big the cluster. (The tracker's
/// answer carries it, as BitTorrent's `interval`.) A starved asker polls
/// again after a quarter of it.
pub fn poll_interval(members: usize) -> Duration {
    let micros = (members as u64).saturating_mul(100).clamp(100_000, 2_000_000);
    Duration::from_micros(micros)
}

/// Askers the owner serves a fresh piece to itself; the others are
/// declined ([`super::Failure::Declined`]) and get it from that one (so the
/// owner's uplink sends each piece about once and keeps pace with the
/// origin, instead of sending the newest piece to every asker at once).
pub const SEED_COPIES: u32 = 1;

/// After this long without serving a piece, the owner serves it again
/// whatever it served before (the askers it went to may have died).
pub const SEED_RETRY: Duration = Duration::from_secs(1);

/// The owner's budget of uploads per piece: see [`SEED_COPIES`].
#[derive(Debug, Clone)]
pub struct SeedBudget {
    served: Vec<u32>,
    last: Vec<Duration>,
}

impl SeedBudget {
    /// A budget for a blob of `count` pieces.
    pub fn new(count: u32) -> Self {
        SeedBudget { served: vec![0; count as usize], last: vec![Duration::ZERO; count as usize] }
    }

    /// Whether the owner serves `piece` to an asker at `now`; counts it if so.
    /// Out-of-range pieces are never served.
    pub fn try_serve(&mut self, piece: u32, now: Duration) -> bool {
        let i = piece as usize;
        let (Some(served), Some(last)) = (self.served.get_mut(i), self.last.get_mut(i)) else { return false };
        if *served < SEED_COPIES || now.saturating_sub(*last) >= SEED_RETRY {
            *served = served.saturating_add(1);
            *last = now;
            true
        } else {
            false
        }
    }
}

/// Who holds what, for one blob.
#[derive(Debug, Clone)]
pub struct Tracker<P> {
    count: u32,
    /// Members by slot; a removed one leaves `None`.
    slots: Vec<Option<(P, Bitfield)>>,
    index: HashMap<P, usize>,
    /// Slots of members that announced at least one piece (may hold stale slots).
    holders: Vec<usize>,
    is_holder: Vec<bool>,
}

impl<P: Clone + Eq + Hash> Tracker<P> {
    /// A tracker for a blob of `count` pieces.
    pub fn new(count: u32) -> Self {
        Tracker { count, slots: Vec::new(), index: HashMap::new(), holders: Vec::new(), is_holder: Vec::new() }
    }

    /// Members known.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when nobody announced.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// What `peer` announced last.
    pub fn get(&self, peer: &P) -> Option<&Bitfield> {
        self.index.get(peer).and_then(|&s| self.slots[s].as_ref()).map(|(_, b)| b)
    }

    /// Records `peer`'s bitfield (replacing what it announced before).
    pub fn announce(&mut self, peer: P, have: Bitfield) -> Result<(), SwarmError> {
        if have.count() != self.count {
            let (got, want) = (u64::from(have.count()), u64::from(self.count));
            return Err(SwarmError::Length { what: "announced bitfield", got, want });
        }
        let holds = have.ones() > 0;
        let slot = match self.index.get(&peer) {
            Some(&s) => {
                self.slots[s] = Some((peer, have));
                s
            }
            None => {
                let s = self.slots.len();
                self.index.insert(peer.clone(), s);
                self.slots.push(Some((peer, have)));
                self.is_holder.push(false);
                s
            }
        };
        if holds && !self.is_holder[slot] {
            self.is_holder[slot] = true;
            self.holders.push(slot);
        }
        Ok(())
    }

    /// Forgets `peer` (gone, or excluded).
    pub fn remove(&mut self, peer: &P) {
        if let Some(s) = self.index.remove(peer) {
            self.slots[s] = None;
        }
    }

    /// Up to `k` members other than `asker` that hold a piece `asker_have`
    /// lacks, chosen at random (so askers spread over holders).
    pub fn sample(&self, asker: &P, asker_have: &Bitfield, k: usize, rng: &mut Rng) -> Vec<(P, Bitfield)> {
        let useful = |s: usize| match &self.slots[s] {
            Some((p, b)) if p != asker && b.has_any_missing_from(asker_have) => Some((p.clone(), b.clone())),
            _ => None,
        };
        let n = self.holders.len();
        let mut out = Vec::new();
        if n <= k.saturating_mul(4) {
            // Few holders: look at every one, from a random start.
            let start = rng.below(n as u64) as usize;
            let mut all: Vec<_> = (0..n).filter_map(|j| useful(self.holders[(start + j) % n])).collect();
            while all.len() > k {
                let drop = rng.below(all.len() as u64) as usize;
                all.swap_remove(drop);
            }
            return all;
        }
        let mut taken = Vec::new();
        for _ in 0..k.saturating_mul(4) {
            if out.len() >= k {
                break;
            }
            let s = self.holders[rng.below(n as u64) as usize];
            if taken.contains(&s) {
                continue;
            }
            taken.push(s);
            if let Some(x) = useful(s) {
                out.push(x);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(n: u32, set: &[u32]) -> Bitfield {
        let mut b = Bitfield::new(n);
        for &i in set {
            b.set(i);
        }
        b
    }

    #[test]
    fn samples_only_holders_of_what_the_asker_lacks_never_itself() {
        let mut t = Tracker::new(4);
        t.announce(1u32, bits(4, &[0, 1])).unwrap();
        t.announce(2, bits(4, &[2])).unwrap();
        t.announce(3, bits(4, &[])).unwrap();
        t.announce(4, bits(4, &[0])).unwrap();
        let mut rng = Rng::new(5);
        let mut got: Vec<u32> = t.sample(&1, &bits(4, &[0, 1]), 16, &mut rng).into_iter().map(|(p, _)| p).collect();
        got.sort();
        assert_eq!(got, vec![2]);
        assert!(t.sample(&9, &Bitfield::full(4), 16, &mut rng).is_empty());
        assert_eq!(t.sample(&9, &Bitfield::new(4), 2, &mut rng).len(), 2, "at most k");
    }

    #[test]
    fn removed_and_re_announced_members() {
        let mut t = Tracker::new(4);
        t.announce(1u32, bits(4, &[0])).unwrap();
        t.remove(&1);
        assert!(t.is_empty() && t.get(&1).is_none());
        let mut rng = Rng::new(1);
        assert!(t.sample(&2, &Bitfield::new(4), 16, &mut rng).is_empty());
        t.announce(1, bits(4, &[1])).unwrap();
        assert_eq!(t.get(&1), Some(&bits(4, &[1])));
        assert_eq!(t.sample(&2, &Bitfield::new(4), 16, &mut rng).len(), 1);
    }

    #[test]
    fn the_owner_serves_a_fresh_piece_to_a_few_then_again_after_a_pause() {
        let mut b = SeedBudget::new(3);
        let t = Duration::from_millis(10);
        assert!(b.try_serve(1, t));
        assert!(!b.try_serve(1, t), "a second asker gets it from the first");
        assert!(b.try_serve(2, t), "per piece");
        assert!(!b.try_serve(1, t + SEED_RETRY - Duration::from_millis(1)));
        assert!(b.try_serve(1, t + SEED_RETRY), "after a pause, in case its holders died");
        assert!(!b.try_serve(3, t) && !b.try_serve(u32::MAX, t));
    }

    #[test]
    fn poll_interval_bounds_the_owners_load() {
        assert_eq!(poll_interval(0), Duration::from_millis(100));
        assert_eq!(poll_interval(12), Duration::from_millis(100));
        assert_eq!(poll_interval(10_000), Duration::from_secs(1));
        assert_eq!(poll_interval(usize::MAX), Duration::from_secs(2));
    }

    #[test]
    fn a_bitfield_of_another_geometry_is_refused() {
        let mut t = Tracker::new(4);
        assert!(t.announce(1u32, Bitfield::new(5)).is_err());
        assert!(t.is_empty());
    }

    #[test]
    fn many_holders_are_sampled_not_scanned() {
        let mut t = Tracker::new(8);
        for p in 0..10_000u32 {
            t.announce(p, bits(8, &[p % 8])).unwrap();
        }
        let mut rng = Rng::new(3);
        let s = t.sample(&0, &bits(8, &[0]), 16, &mut rng);
        assert!(!s.is_empty() && s.len() <= 16);
        assert!(s.iter().all(|(p, b)| *p != 0 && !b.get(0)));
    }
}
