//! Partial blobs: a blob of known size whose pieces arrive in any order
//! (a swarm transfer pulls them from several peers at once), readable
//! while it is written so this node can pass verified pieces on, and
//! stored as a normal blob only once its whole SHA-256 matches.
//!
//! The bytes live in one temp file `tmp/<random>.partial` of the blob's
//! size, written and read with positional I/O, so pieces never wait on
//! each other. The temp file is swept on open after a crash like every
//! other temp file. A partial blob never appears in `objects/` before
//! [`PartialBlob::finish`] has hashed the whole file; which ranges hold
//! verified bytes is the caller's business (the swarm's piece hashes).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use crate::backend::fs::WriteBack;
use crate::blob::{COPY_BUF, PutOutcome};
use crate::cache::policy::Provenance;
use crate::cache::state::Reservation;
use crate::digest::{Digest, Hasher};
use crate::error::{Result, StoreError};
use crate::store::Store;

/// The longest range [`PartialBlob::read_at`] returns at once: a piece is
/// at most this long, and a read allocates what it asks for.
pub const MAX_PIECE_LEN: u64 = 64 << 20;

/// The partial blobs of one store, by digest; a dead entry is replaced.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    map: Mutex<HashMap<Digest, (u64, Weak<PartialBlob>)>>,
    next_id: AtomicU64,
}

impl Registry {
    fn get(&self, d: &Digest) -> Option<Arc<PartialBlob>> {
        lock(&self.map).get(d).and_then(|(_, w)| w.upgrade())
    }

    /// Removes `d`'s entry if it is still the partial blob `id`.
    fn unregister(&self, d: &Digest, id: u64) {
        let mut m = lock(&self.map);
        if m.get(d).is_some_and(|(i, _)| *i == id) {
            m.remove(d);
        }
    }
}

/// Where a partial blob is in its life.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Taking pieces.
    Open,
    /// [`PartialBlob::finish`] is hashing and committing it: no more writes.
    Sealing,
    /// Stored.
    Done(PutOutcome),
    /// Gone: abandoned, or its bytes did not match (the temp file is removed).
    Gone(&'static str),
}

/// A blob being written piece by piece ([`Store::partial`]); shared as
/// `Arc<PartialBlob>` by the tasks writing pieces and the ones serving
/// them. Dropping the last `Arc` without [`PartialBlob::finish`] removes
/// the temp file, like [`PartialBlob::abandon`].
pub struct PartialBlob {
    store: Store,
    digest: Digest,
    size: u64,
    /// Tells this blob from a later one of the same digest in the registry.
    id: u64,
    tmp: PathBuf,
    file: File,
    /// Writes and reads hold it shared (so `finish` waits for writes in
    /// flight); phase changes hold it exclusive, briefly.
    phase: RwLock<Phase>,
    /// Held through `finish` and `abandon`, which must not interleave.
    finishing: Mutex<()>,
    /// Room under the cache's cap, held until the blob is committed.
    room: Mutex<Option<Reservation>>,
    /// Background flushes while pieces arrive, so `finish` does not wait
    /// for the whole blob's fsync at once.
    writeback: Mutex<WriteBack>,
}

impl std::fmt::Debug for PartialBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartialBlob")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("tmp", &self.tmp)
            .field("phase", &*self.read_phase())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain state, still consistent after a panic elsewhere.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// Starts the partial blob `d` of `size` bytes (a temp file of that
    /// size under the data dir's `tmp/`, registered so
    /// [`Store::partial_of`] finds it), or returns the one already in
    /// progress for `d` (then `size` must match, else an error). Needs the
    /// filesystem backend. Makes room under the bounded cache (evicting if
    /// needed, [`StoreError::CacheFull`] when it cannot fit) and refuses a
    /// blob that would leave less than `cache.min_free` free on the disk
    /// ([`StoreError::DiskFull`]); the file's space is allocated up front,
    /// so a piece never fails on a full disk later.
    pub fn partial(&self, d: &Digest, size: u64) -> Result<Arc<PartialBlob>> {
        self.check_writable()?;
        let Some(fs) = self.backend().fs() else {
            return Err(StoreError::Partial {
                digest: *d,
                reason: format!(
                    "the swarm needs a local data dir, and the store at {} is not one; fetch the blob whole from one source instead",
                    self.root().display()
                ),
            });
        };
        if let Some(p) = self.partial_of(d) {
            return p.same_size(size);
        }
        let room = self.reserve(d, size)?;
        let reserve = self.cache_watermarks().map_or(0, |w| w.min_free);
        match fs.free_space() {
            Ok(free) => {
                if free.checked_sub(reserve).is_none_or(|room| size > room) {
                    return Err(StoreError::DiskFull { digest: *d, need: size, free, reserve });
                }
            }
            // Not knowing is no reason to refuse: the allocation below reports a full disk.
            Err(e) => tracing::warn!(error = %e, "could not read the data dir's free space"),
        }
        let (file, tmp) = fs.create_temp("partial")?;
        if let Err(e) = allocate(&file, size) {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::Io { op: "allocate partial blob", path: tmp, source: e });
        }
        let reg = &self.inner.partials;
        let p = Arc::new(PartialBlob {
            store: self.clone(),
            digest: *d,
            size,
            id: reg.next_id.fetch_add(1, Ordering::Relaxed),
            tmp,
            file,
            phase: RwLock::new(Phase::Open),
            finishing: Mutex::new(()),
            room: Mutex::new(Some(room)),
            writeback: Mutex::new(WriteBack::new(self.inner.opts.fsync, 0)),
        });
        let mut map = lock(&reg.map);
        if let Some(other) = map.get(d).and_then(|(_, w)| w.upgrade()) {
            // Another caller started it meanwhile; ours is dropped (and its
            // file removed) once the registry is unlocked.
            drop(map);
            return other.same_size(size);
        }
        map.insert(*d, (p.id, Arc::downgrade(&p)));
        drop(map);
        tracing::debug!(digest = %d, size, path = %p.tmp.display(), "started a partial blob");
        Ok(p)
    }

    /// The partial blob in progress for `d`, if any (for serving its
    /// pieces to peers).
    pub fn partial_of(&self, d: &Digest) -> Option<Arc<PartialBlob>> {
        self.inner.partials.get(d)
    }
}

/// Gives the file its size, with its blocks allocated where the filesystem
/// can (then a later write never meets a full disk).
fn allocate(file: &File, size: u64) -> io::Result<()> {
    if size == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => file.set_len(size),
        Err(e) => Err(e.into()),
    }
}

impl PartialBlob {
    /// The blob's digest (of the whole blob).
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Writes `bytes` at `offset` (one `pwrite`, repeated until complete).
    /// The range must lie inside the blob ([`StoreError::Range`] otherwise:
    /// the file never grows nor takes a short write); refused once
    /// [`PartialBlob::finish`] started or after [`PartialBlob::abandon`].
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        let len = u64::try_from(bytes.len()).map_err(|_| self.range(offset, u64::MAX))?;
        self.check_range(offset, len)?;
        let ph = self.read_phase();
        match *ph {
            Phase::Open => {}
            Phase::Sealing | Phase::Done(_) => {
                return Err(self.refused("is being finished or is finished: it takes no more writes"));
            }
            Phase::Gone(why) => return Err(self.gone(why)),
        }
        self.file.write_all_at(bytes, offset).map_err(StoreError::io("write piece", &self.tmp))?;
        lock(&self.writeback).wrote(&self.file, len).map_err(StoreError::io("fsync", &self.tmp))
    }

    /// Reads `len` bytes at `offset` (`pread`), inside the blob and at most
    /// [`MAX_PIECE_LEN`]. The caller knows which ranges hold verified bytes.
    /// Works until the blob is abandoned or fails its digest check (also
    /// while and after it is finished).
    pub fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len > MAX_PIECE_LEN {
            return Err(self.refused(&format!(
                "a read of {len} bytes at {offset} is longer than a piece can be ({MAX_PIECE_LEN} bytes); read it in pieces"
            )));
        }
        self.check_range(offset, len)?;
        let n = usize::try_from(len).map_err(|_| self.range(offset, len))?;
        let ph = self.read_phase();
        if let Phase::Gone(why) = *ph {
            return Err(self.gone(why));
        }
        let mut buf = vec![0u8; n];
        self.file.read_exact_at(&mut buf, offset).map_err(StoreError::io("read piece", &self.tmp))?;
        Ok(buf)
    }

    /// Hashes the whole file; when it is [`PartialBlob::digest`], makes it
    /// durable and the stored blob (never replacing an existing one; under
    /// the shared GC lock; counted by the cache as a fetched copy),
    /// unregisters it and returns what the put did. On a mismatch:
    /// [`StoreError::DigestMismatch`], the temp file is removed and the
    /// blob unregistered (the caller fetches it again). A second call after
    /// success returns the same outcome; after a failure or an abandon, an
    /// error. An I/O error leaves the blob open, to retry or abandon.
    pub fn finish(&self) -> Result<PutOutcome> {
        let _one = lock(&self.finishing);
        {
            let mut ph = self.write_phase();
            match *ph {
                // Sealing here means an earlier finish failed on I/O: try again.
                Phase::Open | Phase::Sealing => *ph = Phase::Sealing,
                Phase::Done(o) => return Ok(o),
                Phase::Gone(why) => return Err(self.gone(why)),
            }
        }
        // No write is in flight now, and none starts: the hash covers the final bytes.
        match self.seal() {
            Ok(o) => {
                *self.write_phase() = Phase::Done(o);
                self.release();
                tracing::debug!(digest = %self.digest, size = self.size, existed = o.existed, "partial blob stored");
                Ok(o)
            }
            Err(e @ StoreError::DigestMismatch { .. }) => {
                *self.write_phase() = Phase::Gone("failed its digest check");
                self.release();
                tracing::warn!(digest = %self.digest, error = %e, "partial blob does not match its digest; dropped");
                Err(e)
            }
            Err(e) => {
                *self.write_phase() = Phase::Open;
                Err(e)
            }
        }
    }

    /// Gives up: removes the temp file and unregisters (also what happens
    /// when the last `Arc` is dropped without [`PartialBlob::finish`]).
    /// Waits for a `finish` in progress; a no-op after a successful one.
    pub fn abandon(&self) {
        let _one = lock(&self.finishing);
        {
            let mut ph = self.write_phase();
            match *ph {
                Phase::Done(_) | Phase::Gone(_) => return,
                Phase::Open | Phase::Sealing => *ph = Phase::Gone("abandoned"),
            }
        }
        self.release();
        tracing::debug!(digest = %self.digest, "partial blob abandoned");
    }

    /// Hashes the file and commits it when it matches.
    fn seal(&self) -> Result<PutOutcome> {
        // A failed background flush shows here, not in a later fsync.
        lock(&self.writeback).finish().map_err(StoreError::io("fsync", &self.tmp))?;
        let actual = self.hash()?;
        if actual != self.digest {
            return Err(StoreError::DigestMismatch { expected: self.digest, actual });
        }
        let Some(fs) = self.store.backend().fs() else {
            return Err(self.refused("the store lost its local data dir"));
        };
        let file = self.file.try_clone().map_err(StoreError::io("reopen", &self.tmp))?;
        let _gc = self.store.gc_shared()?;
        let existed = fs.commit_temp(file, &self.tmp, &self.digest)?;
        // Under the GC lock, so an eviction sees every commit it follows.
        self.store.cache_committed(self.digest, self.size, Provenance::Fetched);
        Ok(PutOutcome { digest: self.digest, size: self.size, existed })
    }

    /// The SHA-256 of the whole file, read a buffer at a time.
    fn hash(&self) -> Result<Digest> {
        let mut h = Hasher::new();
        let mut buf = vec![0u8; COPY_BUF];
        let mut off = 0u64;
        while off < self.size {
            let n = usize::try_from((self.size - off).min(COPY_BUF as u64)).unwrap_or(COPY_BUF);
            let chunk = &mut buf[..n];
            self.file.read_exact_at(chunk, off).map_err(StoreError::io("read partial blob", &self.tmp))?;
            h.update(chunk);
            off += n as u64;
        }
        Ok(h.finish())
    }

    /// Removes the temp name, unregisters, and lets the cache's room go.
    fn release(&self) {
        if let Err(e) = fs::remove_file(&self.tmp)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.tmp.display(), error = %e, "could not remove a partial blob's temp file");
        }
        self.store.inner.partials.unregister(&self.digest, self.id);
        lock(&self.room).take();
    }

    fn same_size(self: Arc<Self>, size: u64) -> Result<Arc<PartialBlob>> {
        if self.size == size {
            Ok(self)
        } else {
            Err(self.refused(&format!(
                "already in progress with {} bytes, not {size}; the blob's size is part of its identity, so one of the sources is wrong",
                self.size
            )))
        }
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(self.range(offset, len)),
        }
    }

    fn range(&self, offset: u64, len: u64) -> StoreError {
        StoreError::Range { digest: self.digest, offset, len: Some(len), size: self.size }
    }

    fn refused(&self, reason: &str) -> StoreError {
        StoreError::Partial { digest: self.digest, reason: reason.to_owned() }
    }

    fn gone(&self, why: &str) -> StoreError {
        self.refused(&format!("was {why} and its bytes are gone; start it again with Store::partial"))
    }

    fn read_phase(&self) -> RwLockReadGuard<'_, Phase> {
        self.phase.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_phase(&self) -> RwLockWriteGuard<'_, Phase> {
        self.phase.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for PartialBlob {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.tmp);
        self.store.inner.partials.unregister(&self.digest, self.id);
    }
}
