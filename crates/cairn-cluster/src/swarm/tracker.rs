//! The owner's view of the swarm: who holds which pieces. Askers announce
//! their bitfield and get a sample of peers holding pieces they lack. Only
//! routing: no byte of the blob passes through it.

use std::collections::{HashMap, HashSet};
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

/// After this long without serving a piece that no other member has
/// announced yet, the owner serves it again (the asker it went to may have
/// died, or be slow).
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

    /// Whether the owner would serve `piece` at `now`, when `others`
    /// members besides it have announced the piece and its uploads have
    /// room to `spare`: not yet served; or served [`SEED_RETRY`] ago and
    /// held by nobody else (its taker may have died), or held by its first
    /// taker only while the owner is idle (a slow first taker must not
    /// pace everyone while the owner's uplink sits unused; a piece already
    /// spreading needs no more copies from the owner).
    pub fn would_serve(&self, piece: u32, now: Duration, others: u32, spare: bool) -> bool {
        let i = piece as usize;
        let (Some(served), Some(last)) = (self.served.get(i), self.last.get(i)) else { return false };
        *served < SEED_COPIES || (now.saturating_sub(*last) >= SEED_RETRY && (others == 0 || (spare && others == 1)))
    }

    /// Whether the owner serves `piece` to an asker at `now` (see
    /// [`SeedBudget::would_serve`]); counts it if so. Out-of-range pieces
    /// are never served.
    pub fn try_serve(&mut self, piece: u32, now: Duration, others: u32, spare: bool) -> bool {
        if !self.would_serve(piece, now, others, spare) {
            return false;
        }
        let i = piece as usize;
        if let (Some(served), Some(last)) = (self.served.get_mut(i), self.last.get_mut(i)) {
            *served = served.saturating_add(1);
            *last = now;
        }
        true
    }

    /// What the owner, holding `have`, tells askers it holds at `now`:
    /// the pieces it would serve (`others(i)`: members besides it holding
    /// piece `i`). A piece it passed on already is left to its new
    /// holders, so askers do not spend round trips on the owner's uplink,
    /// the busiest of the swarm, to be declined.
    pub fn offer(&self, have: &Bitfield, now: Duration, others: impl Fn(u32) -> u32, spare: bool) -> Bitfield {
        let mut out = Bitfield::new(have.count());
        for i in have.iter() {
            if self.would_serve(i, now, others(i), spare) {
                out.set(i);
            }
        }
        out
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
    /// Members holding each piece.
    avail: Vec<u32>,
    /// Members reported for wrong pieces: neither counted nor sampled again.
    banned: HashSet<P>,
}

impl<P: Clone + Eq + Hash> Tracker<P> {
    /// A tracker for a blob of `count` pieces.
    pub fn new(count: u32) -> Self {
        Tracker {
            count,
            slots: Vec::new(),
            index: HashMap::new(),
            holders: Vec::new(),
            is_holder: Vec::new(),
            avail: vec![0; count as usize],
            banned: HashSet::new(),
        }
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
        if self.banned.contains(&peer) {
            return Ok(());
        }
        let holds = have.ones() > 0;
        let slot = match self.index.get(&peer) {
            Some(&s) => {
                if let Some((_, old)) = &self.slots[s] {
                    let old = old.clone();
                    self.count_out(&old);
                }
                self.count_in(&have);
                self.slots[s] = Some((peer, have));
                s
            }
            None => {
                let s = self.slots.len();
                self.count_in(&have);
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
        if let Some(s) = self.index.remove(peer)
            && let Some((_, old)) = self.slots[s].take()
        {
            self.count_out(&old);
        }
    }

    /// Drops `peer` for the rest of this blob's transfer: an asker
    /// reported it for a wrong piece. Askers check every piece themselves,
    /// so a false report costs only speed (the owner serves that peer's
    /// pieces again, askers stop being sent to it), never correctness.
    /// True when it was not banned before.
    pub fn ban(&mut self, peer: &P) -> bool {
        self.remove(peer);
        self.banned.insert(peer.clone())
    }

    /// Members other than `me` that announced `piece`.
    pub fn others_holding(&self, me: &P, piece: u32) -> u32 {
        let all = self.avail.get(piece as usize).copied().unwrap_or(0);
        all.saturating_sub(u32::from(self.get(me).is_some_and(|b| b.get(piece))))
    }

    fn count_in(&mut self, have: &Bitfield) {
        for i in have.iter() {
            self.avail[i as usize] = self.avail[i as usize].saturating_add(1);
        }
    }

    fn count_out(&mut self, have: &Bitfield) {
        for i in have.iter() {
            self.avail[i as usize] = self.avail[i as usize].saturating_sub(1);
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
        assert!(b.try_serve(1, t, 0, false));
        assert!(!b.try_serve(1, t, 0, true), "a second asker gets it from the first");
        assert!(b.try_serve(2, t, 0, false), "per piece");
        assert!(!b.try_serve(1, t + SEED_RETRY - Duration::from_millis(1), 0, true));
        assert!(!b.try_serve(1, t + SEED_RETRY, 1, false), "another member holds it, the owner is busy: ask that one");
        assert!(b.try_serve(1, t + SEED_RETRY, 1, true), "an idle owner helps after a pause");
        assert!(b.try_serve(1, t + SEED_RETRY * 2, 0, false), "after a pause, in case its only holder died");
        assert!(!b.try_serve(3, t, 0, true) && !b.try_serve(u32::MAX, t, 0, true));
    }

    #[test]
    fn the_owner_offers_only_the_pieces_it_would_serve() {
        let mut b = SeedBudget::new(4);
        let t = Duration::from_millis(10);
        assert!(b.try_serve(0, t, 0, false) && b.try_serve(1, t, 0, false));
        let have = bits(4, &[0, 1, 2]);
        // Piece 0 passed on and announced by another; 1 passed on, not yet
        // announced; 2 fresh; 3 not held.
        let others = |i: u32| u32::from(i == 0);
        assert_eq!(b.offer(&have, t, others, true), bits(4, &[2]));
        assert_eq!(b.offer(&have, t + SEED_RETRY, others, false), bits(4, &[1, 2]), "1 again: nobody announced it");
        assert_eq!(b.offer(&have, t + SEED_RETRY, others, true), bits(4, &[0, 1, 2]), "an idle owner offers all");
        assert_eq!(b.offer(&have, t + SEED_RETRY, |i| 2 * u32::from(i == 0), true), bits(4, &[1, 2]), "0 spreads");
    }

    #[test]
    fn a_banned_member_is_neither_counted_nor_sampled_again() {
        let mut t = Tracker::new(2);
        t.announce(1u32, bits(2, &[0, 1])).unwrap();
        t.announce(2, bits(2, &[0])).unwrap();
        assert!(t.ban(&1) && !t.ban(&1));
        t.announce(1, bits(2, &[0, 1])).unwrap();
        assert_eq!((t.others_holding(&9, 0), t.others_holding(&9, 1)), (1, 0));
        let mut rng = Rng::new(2);
        let got: Vec<u32> = t.sample(&9, &Bitfield::new(2), 16, &mut rng).into_iter().map(|(p, _)| p).collect();
        assert_eq!(got, vec![2]);
    }

    #[test]
    fn the_tracker_counts_the_holders_of_each_piece() {
        let mut t = Tracker::new(3);
        t.announce(1u32, bits(3, &[0, 1])).unwrap();
        t.announce(2, bits(3, &[1])).unwrap();
        assert_eq!((t.others_holding(&9, 0), t.others_holding(&9, 1), t.others_holding(&9, 2)), (1, 2, 0));
        assert_eq!(t.others_holding(&1, 1), 1, "not counting the one asking");
        t.announce(2, bits(3, &[2])).unwrap();
        assert_eq!((t.others_holding(&9, 1), t.others_holding(&9, 2)), (1, 1), "a new announcement replaces the old");
        t.remove(&1);
        assert_eq!((t.others_holding(&9, 0), t.others_holding(&9, 1)), (0, 0));
        assert_eq!(t.others_holding(&9, 7), 0, "out of range");
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
