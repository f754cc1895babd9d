//! The store's bounded cache: the recency order fed by the store's commit
//! path, reads and removals, the blobs being read now, and eviction.
//!
//! Eviction deletes the way GC does: under the exclusive GC lock (commits
//! hold it shared while they make a blob visible and record it here), with
//! the roots read under that lock, so a blob a concurrent save started to
//! reference is kept.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::cache::policy::{Provenance, Recency, Watermarks};
use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::store::Store;

/// The cache's live state, shared by every clone of a [`Store`].
#[derive(Debug)]
pub(crate) struct CacheState {
    recency: Mutex<Recency>,
    /// Readers open on each blob.
    in_use: Mutex<HashMap<Digest, usize>>,
    watermarks: Watermarks,
    /// Woken when a commit passes the cap.
    wake: Arc<tokio::sync::Notify>,
    /// Whether pinned data alone passed the cap at the last eviction.
    pinned_over: AtomicBool,
    /// Blobs and bytes evicted since the cache was enabled.
    evicted_blobs: AtomicU64,
    evicted_bytes: AtomicU64,
    /// Bytes of blobs being written that [`Store::make_room`] made room
    /// for, so concurrent writes do not each count the same room.
    reserved: AtomicU64,
    /// One [`Store::make_room`] at a time: its check and its reservation
    /// are one step.
    rooms: Mutex<()>,
}

/// Room held under the cap for a blob being written; released when
/// dropped (after the commit, which counts the blob itself).
#[derive(Debug, Default)]
pub struct Reservation {
    held: Option<(Arc<CacheState>, u64)>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some((c, n)) = self.held.take() {
            c.reserved.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

/// Held by a reader: the blob is not evicted while it lives.
#[derive(Debug)]
pub struct InUse {
    state: Arc<CacheState>,
    d: Digest,
}

impl Drop for InUse {
    fn drop(&mut self) {
        let mut m = lock(&self.state.in_use);
        if let Some(n) = m.get_mut(&self.d) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.d);
            }
        }
    }
}

/// What an eviction deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvictReport {
    /// The blobs deleted, with their sizes, in eviction order.
    pub blobs: Vec<(Digest, u64)>,
    /// Their total size.
    pub bytes: u64,
    /// True when what is left (pinned or being read) still passes the cap.
    pub pinned_over_cap: bool,
}

/// Whether a new blob fits the cache (see [`Store::make_room`]).
#[derive(Debug)]
pub enum Room {
    /// It fits (after the eviction reported, which may be empty); the
    /// room is held until the reservation is dropped.
    Fits(EvictReport, Reservation),
    /// It does not fit even after evicting every blob that may go.
    Full {
        /// Bytes of blobs stored after the eviction.
        used: u64,
        /// `cache.max_bytes`.
        max: u64,
        /// What the eviction tried deleted.
        evicted: EvictReport,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters and an index: still consistent after a panic elsewhere.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CacheState {
    fn used(&self) -> u64 {
        lock(&self.recency).bytes()
    }
}

impl Store {
    /// Turns on the bounded cache with `w` (resolved limits): lists the
    /// store to seed the recency order (oldest modification first; blobs
    /// found at start count as fetched copies, since where they came from is
    /// not kept on disk), then every commit, read and removal updates it.
    /// A second call keeps the first one's state.
    pub fn enable_cache(&self, w: Watermarks) -> Result<()> {
        if self.inner.cache.get().is_some() {
            return Ok(());
        }
        let mut found = Vec::new();
        for d in self.list()? {
            let d = d?;
            if let Some((size, mtime)) = self.backend().stat_mtime(&d)? {
                found.push((mtime, d, size));
            }
        }
        found.sort();
        let mut r = Recency::new();
        for (_, d, size) in found {
            r.insert(d, size, Provenance::Fetched);
        }
        let state = CacheState {
            recency: Mutex::new(r),
            in_use: Mutex::default(),
            watermarks: w,
            wake: Arc::default(),
            pinned_over: AtomicBool::new(false),
            evicted_blobs: AtomicU64::new(0),
            evicted_bytes: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
            rooms: Mutex::new(()),
        };
        let _ = self.inner.cache.set(Arc::new(state));
        Ok(())
    }

    fn cache(&self) -> Option<&Arc<CacheState>> {
        self.inner.cache.get()
    }

    /// The cache's limits, when it is on.
    pub fn cache_watermarks(&self) -> Option<Watermarks> {
        self.cache().map(|c| c.watermarks)
    }

    /// Bytes of blobs the cache counts, when it is on.
    pub fn cache_used(&self) -> Option<u64> {
        self.cache().map(|c| c.used())
    }

    /// Blobs and bytes evicted since the cache was enabled (by
    /// [`Store::evict`] and [`Store::make_room`] alike).
    pub fn cache_evicted(&self) -> Option<(u64, u64)> {
        self.cache().map(|c| (c.evicted_blobs.load(Ordering::Relaxed), c.evicted_bytes.load(Ordering::Relaxed)))
    }

    /// True when, at the last eviction, pinned blobs alone passed the cap.
    pub fn cache_pinned_over_cap(&self) -> Option<bool> {
        self.cache().map(|c| c.pinned_over.load(Ordering::Relaxed))
    }

    /// Makes room for a blob `d` of `size` bytes about to be committed
    /// ([`Store::make_room`]); [`StoreError::CacheFull`] when it cannot
    /// fit. A blob already stored takes no room.
    pub fn reserve(&self, d: &Digest, size: u64) -> Result<Reservation> {
        if self.cache().is_none() || self.exists(d) {
            return Ok(Reservation::default());
        }
        match self.make_room(size)? {
            Room::Fits(_, held) => Ok(held),
            Room::Full { used, max, .. } => Err(StoreError::CacheFull { digest: *d, need: size, used, max }),
        }
    }

    /// Notified when a commit takes the store past `max_bytes`; an evictor
    /// waits on it (and on a timer, for `min_free`).
    pub fn cache_wakeup(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.cache().map(|c| Arc::clone(&c.wake))
    }

    /// Records a blob made visible; the caller holds the shared GC lock.
    pub(crate) fn cache_committed(&self, d: Digest, size: u64, p: Provenance) {
        let Some(c) = self.cache() else { return };
        let used = {
            let mut r = lock(&c.recency);
            r.insert(d, size, p);
            r.bytes()
        };
        if used > c.watermarks.max_bytes {
            c.wake.notify_one();
        }
    }

    /// Records a read of `d`: moves it to the back of the order and returns
    /// the guard that keeps it from eviction while it is read.
    pub(crate) fn cache_read(&self, d: &Digest) -> Option<InUse> {
        let c = self.cache()?;
        *lock(&c.in_use).entry(*d).or_insert(0) += 1;
        lock(&c.recency).touch(d);
        Some(InUse { state: Arc::clone(c), d: *d })
    }

    /// Records a blob gone (deleted, quarantined).
    pub(crate) fn cache_removed(&self, d: &Digest) {
        if let Some(c) = self.cache() {
            lock(&c.recency).remove(d);
        }
    }

    /// Evicts least recently used blobs when the store passes `w`: down to
    /// the low watermark of each limit passed (see [`Watermarks::to_free`]),
    /// fetched copies first. Never deletes a blob referenced by a manifest
    /// in refs/, by the registry (tags, their closures, referrers), or
    /// being read. Blocking; a no-op when the cache is off.
    pub fn evict(&self, w: Watermarks) -> Result<EvictReport> {
        self.check_writable()?;
        let Some(c) = self.cache() else { return Ok(EvictReport::default()) };
        let free = match self.free_space() {
            Some(Ok(f)) => f,
            // No local disk, or unknown: only the cap counts.
            _ => u64::MAX,
        };
        let need = w.to_free(c.used(), free);
        self.evict_bytes(c, need, w.max_bytes, &mut |_| {})
    }

    /// Makes room for a new blob of `size` bytes under the cap: evicts when
    /// the store plus the blob would pass it, or when writing it would leave
    /// less than `min_free` free on the filesystem. [`Room::Full`] when the
    /// blob cannot fit under the cap even with every evictable blob gone
    /// (nothing is evicted for a blob larger than the cap itself); the free
    /// space itself is the fetch pipeline's `min_free_space` check.
    pub fn make_room(&self, size: u64) -> Result<Room> {
        self.make_room_then(size, |_| {})
    }

    /// [`Store::make_room`], calling `decided` with whether the blob will
    /// fit as soon as that is known: after the victims are picked and before
    /// they are deleted (unlinking a GiB takes a few hundred ms on ext4), so
    /// a caller can go on with its transfer while the deletes run.
    pub fn make_room_then(&self, size: u64, decided: impl FnOnce(bool)) -> Result<Room> {
        let mut decided = Some(decided);
        // The first answer given is kept: a blob said to fit is taken even if
        // a read saved one of the victims (the cap is passed by one blob at most).
        let mut promised: Option<bool> = None;
        let mut tell = |fits: bool| {
            if let Some(f) = decided.take() {
                promised = Some(fits);
                f(fits);
            }
        };
        let Some(c) = self.cache() else {
            tell(true);
            return Ok(Room::Fits(EvictReport::default(), Reservation::default()));
        };
        let _one = lock(&c.rooms);
        let max = c.watermarks.max_bytes;
        let taken = |c: &CacheState| c.used().saturating_add(c.reserved.load(Ordering::Relaxed));
        if size > max {
            tell(false);
            return Ok(Room::Full { used: c.used(), max, evicted: EvictReport::default() });
        }
        let mut evicted = EvictReport::default();
        let after = taken(c).saturating_add(size);
        // Down to the low watermark of each limit, with the new blob counted.
        let need_cap = if after > max { w_low_gap(after, max) } else { 0 };
        let free = match self.free_space() {
            Some(Ok(f)) => f,
            _ => u64::MAX,
        };
        let free_after = free.saturating_sub(c.reserved.load(Ordering::Relaxed)).saturating_sub(size);
        let need_free = Watermarks { max_bytes: u64::MAX, min_free: c.watermarks.min_free }.to_free(0, free_after);
        let need = need_cap.max(need_free);
        if need > 0 {
            let before = taken(c);
            evicted = self.evict_bytes(c, need, max, &mut |planned| {
                tell(before.saturating_sub(planned).saturating_add(size) <= max);
            })?;
        }
        let fits_now = taken(c).saturating_add(size) <= max;
        tell(fits_now);
        let fits = promised.unwrap_or(fits_now);
        if !fits {
            return Ok(Room::Full { used: c.used(), max, evicted });
        }
        c.reserved.fetch_add(size, Ordering::Relaxed);
        Ok(Room::Fits(evicted, Reservation { held: Some((Arc::clone(c), size)) }))
    }

    /// Evicts at least `need` bytes if it can; `planned` hears how many
    /// bytes the picked victims hold, before any is deleted.
    fn evict_bytes(
        &self,
        c: &Arc<CacheState>,
        need: u64,
        max: u64,
        planned: &mut dyn FnMut(u64),
    ) -> Result<EvictReport> {
        let mut report = EvictReport::default();
        if need > 0 {
            let _lock = self.gc_exclusive()?;
            // Read under the lock: saves that finished before it are seen.
            // With a durable tier every push and ref is in the bucket: the
            // disk is only a cache, and nothing but reads in progress is pinned.
            let mut pinned = HashSet::new();
            if self.tier().is_none() {
                pinned.extend(self.gc_roots()?);
                pinned.extend(self.registry_pins()?);
            }
            let victims = {
                let r = lock(&c.recency);
                let used = lock(&c.in_use);
                r.victims(need, |d| pinned.contains(d) || used.contains_key(d))
            };
            planned(victims.iter().map(|v| v.1).sum());
            for (d, size) in victims {
                // A read that started since the pick keeps its blob.
                if lock(&c.in_use).contains_key(&d) {
                    continue;
                }
                if self.remove_blob(&d)? {
                    report.bytes = report.bytes.saturating_add(size);
                    report.blobs.push((d, size));
                }
            }
            if !report.blobs.is_empty() {
                self.backend().sync_deletes()?;
            }
            c.evicted_blobs.fetch_add(report.blobs.len() as u64, Ordering::Relaxed);
            c.evicted_bytes.fetch_add(report.bytes, Ordering::Relaxed);
        }
        let used = c.used();
        report.pinned_over_cap = used > max;
        if c.pinned_over.swap(report.pinned_over_cap, Ordering::Relaxed) != report.pinned_over_cap {
            if report.pinned_over_cap {
                tracing::warn!(
                    used,
                    max_bytes = max,
                    "pinned blobs (refs, registry tags, blobs being read) alone pass cache.max_bytes; they are \
                     kept: raise cache.max_bytes or remove refs and tags"
                );
            } else {
                tracing::info!(used, max_bytes = max, "the cache is back under cache.max_bytes");
            }
        }
        Ok(report)
    }
}

/// Bytes to free so that `after` bytes get down to the low watermark of `max`.
fn w_low_gap(after: u64, max: u64) -> u64 {
    let w = Watermarks { max_bytes: max, min_free: 0 };
    w.to_free(after, u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::name::RefName;
    use crate::refs::Manifest;
    use crate::testing::{Env, both_backends};

    both_backends!(
        eviction_takes_the_least_recently_used_and_a_read_moves_a_blob_back,
        eviction_takes_fetched_copies_before_local_puts,
        eviction_never_deletes_pinned_blobs_and_reports_when_they_pass_the_cap,
        eviction_never_deletes_a_blob_being_read,
        make_room_evicts_for_a_new_blob_and_refuses_one_that_cannot_fit,
        enable_cache_seeds_the_order_oldest_first_and_removals_keep_the_count,
        a_read_stream_keeps_its_blob_from_eviction_until_dropped,
        room_held_for_a_write_counts_against_the_cap_until_released,
    );

    const CAP: Watermarks = Watermarks { max_bytes: 100, min_free: 0 };

    /// A blob of 30 bytes numbered `n`, written as the fetch pipeline does.
    fn fetched(s: &Store, n: u8) -> Digest {
        let mut w = s.writer_for(Provenance::Fetched).unwrap();
        w.write_all(&[n; 30]).unwrap();
        w.commit(None).unwrap().digest
    }

    fn local(s: &Store, n: u8) -> Digest {
        s.put_reader(&[n; 30][..], None).unwrap().digest
    }

    fn read(s: &Store, d: &Digest) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut s.get(d).unwrap(), &mut out).unwrap();
    }

    fn eviction_takes_the_least_recently_used_and_a_read_moves_a_blob_back(env: &Env) {
        let s = env.store();
        s.enable_cache(CAP).unwrap();
        let d: Vec<Digest> = (0..4).map(|n| fetched(&s, n)).collect();
        assert_eq!(s.cache_used(), Some(120));
        read(&s, &d[0]);
        let r = s.evict(CAP).unwrap();
        assert_eq!(r.blobs, vec![(d[1], 30)], "120 bytes down to 90: the oldest unread one goes");
        assert!(!r.pinned_over_cap);
        assert!(s.exists(&d[0]) && !s.exists(&d[1]) && s.exists(&d[2]) && s.exists(&d[3]));
        assert_eq!(s.cache_used(), Some(90));
        assert_eq!(s.evict(CAP).unwrap(), EvictReport::default(), "under the cap: nothing goes");
    }

    fn eviction_takes_fetched_copies_before_local_puts(env: &Env) {
        let s = env.store();
        s.enable_cache(CAP).unwrap();
        let l = local(&s, 0);
        let f: Vec<Digest> = (1..4).map(|n| fetched(&s, n)).collect();
        s.enable_cache(CAP).unwrap();
        let r = s.evict(CAP).unwrap();
        assert_eq!(r.blobs, vec![(f[0], 30)], "the local put is older but stays");
        assert!(s.exists(&l));
    }

    fn eviction_never_deletes_pinned_blobs_and_reports_when_they_pass_the_cap(env: &Env) {
        let s = env.store();
        s.enable_cache(CAP).unwrap();
        let d: Vec<Digest> = (0..4).map(|n| fetched(&s, n)).collect();
        let mut m = Manifest::new(&RefName::parse("pinned").unwrap());
        for (i, x) in d.iter().enumerate() {
            m.objects.insert(format!("f{i}"), *x);
        }
        s.save_manifest(&m).unwrap();
        let r = s.evict(CAP).unwrap();
        assert!(r.blobs.is_empty(), "{:?}", r.blobs);
        assert!(r.pinned_over_cap, "120 pinned bytes over a 100-byte cap must be reported");
        assert!(d.iter().all(|x| s.exists(x)));
        // An unpinned newcomer goes, the pinned ones stay.
        let extra = fetched(&s, 9);
        let r = s.evict(CAP).unwrap();
        assert_eq!((r.blobs, r.pinned_over_cap), (vec![(extra, 30)], true));
    }

    fn eviction_never_deletes_a_blob_being_read(env: &Env) {
        let s = env.store();
        s.enable_cache(CAP).unwrap();
        let d: Vec<Digest> = (0..4).map(|n| fetched(&s, n)).collect();
        let reader = s.get(&d[0]).unwrap();
        // The open reader moved d[0] to the back; make it the oldest again.
        read(&s, &d[1]);
        read(&s, &d[2]);
        read(&s, &d[3]);
        let r = s.evict(CAP).unwrap();
        assert_eq!(r.blobs, vec![(d[1], 30)], "d[0] is the oldest but being read");
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut { reader }, &mut out).unwrap();
        assert_eq!(out, [0u8; 30]);
        // Once the reader is gone it may go.
        fetched(&s, 9);
        assert_eq!(s.evict(CAP).unwrap().blobs, vec![(d[0], 30)]);
    }

    fn make_room_evicts_for_a_new_blob_and_refuses_one_that_cannot_fit(env: &Env) {
        let s = env.store();
        s.enable_cache(CAP).unwrap();
        let d: Vec<Digest> = (0..3).map(|n| fetched(&s, n)).collect();
        match s.make_room(10).unwrap() {
            Room::Fits(r, _) => assert!(r.blobs.is_empty(), "90 + 10 is at the cap"),
            other => panic!("{other:?}"),
        }
        match s.make_room(30).unwrap() {
            Room::Fits(r, _) => assert_eq!(r.blobs, vec![(d[0], 30)], "120 with the new blob, down to 90"),
            other => panic!("{other:?}"),
        }
        match s.make_room(101).unwrap() {
            Room::Full { max: 100, evicted, .. } => assert!(evicted.blobs.is_empty(), "nothing evicted in vain"),
            other => panic!("{other:?}"),
        }
        assert!(s.exists(&d[2]));
        let mut m = Manifest::new(&RefName::parse("pinned").unwrap());
        m.objects.insert("a".into(), d[2]);
        s.save_manifest(&m).unwrap();
        local(&s, 7);
        match s.make_room(80).unwrap() {
            Room::Full { used: 30, max: 100, evicted } => assert_eq!(evicted.blobs.len(), 2, "all but the pinned one"),
            other => panic!("{other:?}"),
        }
    }

    fn enable_cache_seeds_the_order_oldest_first_and_removals_keep_the_count(env: &Env) {
        let s = env.store();
        let d: Vec<Digest> = (0..4).map(|n| local(&s, n)).collect();
        env.age(&d[2], 300);
        env.age(&d[0], 200);
        env.age(&d[1], 100);
        env.age(&d[3], 100);
        let s = env.store();
        s.enable_cache(CAP).unwrap();
        assert_eq!(s.cache_used(), Some(120));
        assert_eq!(s.evict(CAP).unwrap().blobs, vec![(d[2], 30)], "the oldest on disk goes first");
        s.remove_blob(&d[0]).unwrap();
        assert_eq!(s.cache_used(), Some(60));
        env.age(&d[1], 7200);
        let gc = s.gc(crate::GcOptions::default()).unwrap();
        assert_eq!(gc.blobs, vec![(d[1], 30)]);
        assert_eq!(s.cache_used(), Some(30), "GC's deletes leave the order too");
    }

    fn a_read_stream_keeps_its_blob_from_eviction_until_dropped(env: &Env) {
        let s = env.store();
        s.enable_cache(CAP).unwrap();
        let d: Vec<Digest> = (0..4).map(|n| fetched(&s, n)).collect();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (_, _, stream) = rt.block_on(s.read_stream(d[0], 0, None)).unwrap();
        for x in &d[1..] {
            read(&s, x);
        }
        assert_eq!(s.evict(CAP).unwrap().blobs, vec![(d[1], 30)], "the streamed blob stays");
        drop(stream);
        fetched(&s, 9);
        assert_eq!(s.evict(CAP).unwrap().blobs, vec![(d[0], 30)], "and may go once the stream is dropped");
    }

    fn room_held_for_a_write_counts_against_the_cap_until_released(env: &Env) {
        let s = env.store();
        s.enable_cache(CAP).unwrap();
        let d: Vec<Digest> = (0..3).map(|n| fetched(&s, n)).collect();
        let Room::Fits(r, held) = s.make_room(10).unwrap() else { panic!("90 + 10 fits") };
        assert!(r.blobs.is_empty());
        // A second writer at once: the first one's 10 bytes count.
        match s.make_room(10).unwrap() {
            Room::Fits(r, _) => assert_eq!(r.blobs, vec![(d[0], 30)], "110 with both writes, down to 90"),
            other => panic!("{other:?}"),
        }
        drop(held);
        match s.make_room(10).unwrap() {
            Room::Fits(r, _) => assert!(r.blobs.is_empty(), "60 + 10 once both reservations are gone"),
            other => panic!("{other:?}"),
        }
    }
}
