//! Which blobs to evict: least recently used first, fetched copies before
//! blobs put on this node, pinned and in-use blobs never. A pure data
//! structure: it keeps no bytes and touches no disk, so reads update it
//! without a write each.

use std::collections::{BTreeSet, HashMap};

use crate::digest::Digest;

/// How a blob came to be stored; fetched copies are evicted first, since
/// another node or the origin still has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Provenance {
    /// Pulled from a peer, an owner, an origin or an upstream registry.
    Fetched,
    /// Put on this node by a client.
    Local,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    size: u64,
    used: u64,
    provenance: Provenance,
}

/// Every stored blob with its size and when it was last used.
#[derive(Debug, Default)]
pub struct Recency {
    entries: HashMap<Digest, Entry>,
    /// (provenance, last use, digest): iteration order is eviction order.
    order: BTreeSet<(Provenance, u64, Digest)>,
    bytes: u64,
    clock: u64,
}

impl Recency {
    /// An empty index.
    pub fn new() -> Recency {
        Recency::default()
    }

    /// Bytes of every blob known.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Blobs known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no blob is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records a stored blob as just used (a write, or one found at start,
    /// oldest first). A blob already known keeps the provenance that makes
    /// it last to go (a local put of a fetched blob makes it local).
    pub fn insert(&mut self, d: Digest, size: u64, provenance: Provenance) {
        let provenance = match self.remove(&d) {
            Some(old) => old.max(provenance),
            None => provenance,
        };
        self.clock = self.clock.saturating_add(1);
        let e = Entry { size, used: self.clock, provenance };
        self.order.insert((e.provenance, e.used, d));
        self.entries.insert(d, e);
        self.bytes = self.bytes.saturating_add(size);
    }

    /// Marks a blob as just read; unknown blobs are ignored.
    pub fn touch(&mut self, d: &Digest) {
        let Some(e) = self.entries.get_mut(d) else { return };
        self.order.remove(&(e.provenance, e.used, *d));
        self.clock = self.clock.saturating_add(1);
        e.used = self.clock;
        self.order.insert((e.provenance, e.used, *d));
    }

    /// Forgets a blob (deleted by eviction, GC or a client); returns its
    /// provenance when it was known.
    pub fn remove(&mut self, d: &Digest) -> Option<Provenance> {
        let e = self.entries.remove(d)?;
        self.order.remove(&(e.provenance, e.used, *d));
        self.bytes = self.bytes.saturating_sub(e.size);
        Some(e.provenance)
    }

    /// The blobs to delete, in order, so that at least `need` bytes go:
    /// fetched before local, least recently used first, skipping those
    /// `keep` says must stay (pinned, being read or written). Fewer bytes
    /// than `need` when the rest is all kept.
    pub fn victims(&self, need: u64, keep: impl Fn(&Digest) -> bool) -> Vec<(Digest, u64)> {
        let mut out = Vec::new();
        let mut freed = 0u64;
        for (_, _, d) in &self.order {
            if freed >= need {
                break;
            }
            if keep(d) {
                continue;
            }
            if let Some(e) = self.entries.get(d) {
                freed = freed.saturating_add(e.size);
                out.push((*d, e.size));
            }
        }
        out
    }
}

/// The cache's limits, resolved to bytes for the data dir's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    /// Most bytes of blobs kept (`cache.max_bytes`); `u64::MAX` for no cap.
    pub max_bytes: u64,
    /// Least free bytes left on the filesystem (`cache.min_free`).
    pub min_free: u64,
}

/// Eviction starts past a limit and goes this far below it (in 1/100ths),
/// so a node at its cap does not evict on every write.
pub const LOW_WATERMARK_PERCENT: u64 = 90;

impl Watermarks {
    /// Bytes to evict when the store holds `used` bytes of blobs and the
    /// filesystem has `free` bytes free: zero while both limits hold, else
    /// enough to get under the low watermark of each limit passed.
    pub fn to_free(&self, used: u64, free: u64) -> u64 {
        let mut need = 0;
        if used > self.max_bytes {
            need = used - low(self.max_bytes);
        }
        if free < self.min_free {
            // Freeing up to min_free plus the gap to the low watermark.
            let target = self.min_free.saturating_add(self.min_free - low(self.min_free));
            need = need.max(target.saturating_sub(free));
        }
        need
    }
}

fn low(x: u64) -> u64 {
    // x * 90 / 100 without overflow for any u64.
    x / 100 * LOW_WATERMARK_PERCENT + x % 100 * LOW_WATERMARK_PERCENT / 100
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn victims_are_least_recently_used_first_and_a_read_moves_a_blob_back() {
        let mut r = Recency::new();
        for n in 0..4 {
            r.insert(d(n), 10, Provenance::Fetched);
        }
        r.touch(&d(0));
        let v: Vec<Digest> = r.victims(25, |_| false).into_iter().map(|(x, _)| x).collect();
        assert_eq!(v, [d(1), d(2), d(3)], "0 was read last, so it goes last");
        assert_eq!(r.bytes(), 40);
    }

    #[test]
    fn fetched_copies_go_before_local_puts_however_old() {
        let mut r = Recency::new();
        r.insert(d(0), 10, Provenance::Local);
        r.insert(d(1), 10, Provenance::Fetched);
        let v: Vec<Digest> = r.victims(15, |_| false).into_iter().map(|(x, _)| x).collect();
        assert_eq!(v, [d(1), d(0)]);
        // A local put of a fetched blob makes it local.
        r.insert(d(1), 10, Provenance::Local);
        assert_eq!(r.victims(1, |_| false)[0].0, d(0), "both local now: the older goes first");
    }

    #[test]
    fn kept_blobs_are_never_victims_even_when_nothing_else_frees_enough() {
        let mut r = Recency::new();
        r.insert(d(0), 100, Provenance::Fetched);
        r.insert(d(1), 1, Provenance::Fetched);
        let v = r.victims(50, |x| *x == d(0));
        assert_eq!(v, [(d(1), 1)], "only the unpinned blob, though it frees too little");
    }

    #[test]
    fn removing_and_reinserting_keeps_the_byte_count_exact() {
        let mut r = Recency::new();
        r.insert(d(0), 7, Provenance::Fetched);
        r.insert(d(0), 9, Provenance::Fetched);
        assert_eq!((r.len(), r.bytes()), (1, 9));
        assert_eq!(r.remove(&d(0)), Some(Provenance::Fetched));
        assert_eq!(r.remove(&d(0)), None);
        assert_eq!((r.len(), r.bytes()), (0, 0));
        r.touch(&d(5));
        assert!(r.is_empty(), "touching an unknown blob adds nothing");
    }

    #[test]
    fn watermarks_evict_past_a_limit_down_to_ninety_percent_of_it() {
        let w = Watermarks { max_bytes: 1000, min_free: 100 };
        assert_eq!(w.to_free(1000, 500), 0, "at the cap, not past it");
        assert_eq!(w.to_free(1001, 500), 101, "down to 900");
        assert_eq!(w.to_free(500, 99), 11, "free goes back up to 110");
        assert_eq!(w.to_free(1100, 50), 200, "the larger of the two needs");
        let none = Watermarks { max_bytes: u64::MAX, min_free: 0 };
        assert_eq!(none.to_free(u64::MAX, 0), 0);
    }

    proptest! {
        #[test]
        fn any_sequence_keeps_bytes_equal_to_the_sum_and_victims_respect_keep(
            ops in proptest::collection::vec((0u8..8, 0u64..1000, 0u8..4), 0..200),
            need in 0u64..5000,
        ) {
            let mut r = Recency::new();
            let mut sizes: HashMap<Digest, u64> = HashMap::new();
            for (n, size, op) in ops {
                match op {
                    0 => { r.insert(d(n), size, Provenance::Fetched); sizes.insert(d(n), size); }
                    1 => { r.insert(d(n), size, Provenance::Local); sizes.insert(d(n), size); }
                    2 => r.touch(&d(n)),
                    _ => { r.remove(&d(n)); sizes.remove(&d(n)); }
                }
            }
            prop_assert_eq!(r.bytes(), sizes.values().sum::<u64>());
            prop_assert_eq!(r.len(), sizes.len());
            let v = r.victims(need, |x| *x == d(0));
            prop_assert!(v.iter().all(|(x, _)| *x != d(0)));
            let freed: u64 = v.iter().map(|(_, s)| s).sum();
            let available: u64 = sizes.iter().filter(|(x, _)| **x != d(0)).map(|(_, s)| s).sum();
            prop_assert!(freed >= need.min(available));
        }

        #[test]
        fn to_free_never_overflows_and_is_zero_within_both_limits(
            max in any::<u64>(), min_free in any::<u64>(), used in any::<u64>(), free in any::<u64>(),
        ) {
            let w = Watermarks { max_bytes: max, min_free };
            let need = w.to_free(used, free);
            if used <= max && free >= min_free {
                prop_assert_eq!(need, 0);
            }
            if used > max {
                prop_assert!(used.saturating_sub(need) <= max);
            }
        }
    }
}
