//! The durable tier: a bucket of an object store behind the local store.
//!
//! With a tier ([`Store::open_tiered`]) the data directory is a cache in
//! front of the bucket:
//!
//! - Metadata (blob manifests under `refs/`, the registry's tags and links)
//!   lives only in the bucket ([`TieredBackend`]), so every node that
//!   shares the bucket sees every push.
//! - A blob put on this node ([`crate::cache::Provenance::Local`]) is
//!   written to the bucket while it is written to disk, and the bucket's
//!   copy is committed before the local one: when a put returns, the blob
//!   is durable in the bucket (`BlobWriter` tees it to the bucket's sink).
//! - A blob fetched from elsewhere is only cached locally; the fetch
//!   pipeline reads the bucket as a source, and copies what came from an
//!   origin to the bucket in the background ([`Tier::upload_in_background`]).
//!
//! Nothing the tier writes is visible in the bucket before its digest was
//! checked: large blobs are multipart uploads that complete only then.

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::time::SystemTime;

use crate::backend::fs::FsBackend;
use crate::backend::object::ObjectBackend;
use crate::backend::{Backend, BlobBackend, BlobSink, Guard, MetaBackend, UploadBackend, UploadData};
use crate::blob::BlobReader;
use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::oci::cache::Stamp;
use crate::store::{Inner, Store, StoreOptions};

/// Blobs waiting for a background upload; more are dropped (and counted):
/// the origin still has them, and the next fetch queues them again.
pub const BACKGROUND_QUEUE: usize = 4096;

/// How the tier behaves.
#[derive(Debug, Clone)]
pub struct TierOptions {
    /// Copy blobs fetched from origins to the bucket in the background.
    pub write_fetched: bool,
}

impl Default for TierOptions {
    fn default() -> Self {
        TierOptions { write_fetched: true }
    }
}

/// Counts for metrics and status; they only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierStats {
    /// Blobs written to the bucket (pushes and background copies).
    pub uploads: u64,
    /// Bytes of those blobs.
    pub upload_bytes: u64,
    /// Writes to the bucket that failed (a push then fails too).
    pub upload_errors: u64,
    /// Background copies queued.
    pub background_queued: u64,
    /// Background copies dropped because the queue was full.
    pub background_dropped: u64,
    /// Background copies that failed.
    pub background_errors: u64,
}

/// A producer of a blob's bytes: it hands each chunk, in order, to the
/// function it is given.
pub type Fill<'a> = dyn FnMut(&mut dyn FnMut(&[u8])) -> std::io::Result<()> + 'a;

/// The bucket behind a store, and its background writer.
#[derive(Debug)]
pub struct Tier {
    bucket: ObjectBackend,
    opts: TierOptions,
    queue: Mutex<Option<mpsc::SyncSender<Digest>>>,
    stats: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    uploads: AtomicU64,
    upload_bytes: AtomicU64,
    upload_errors: AtomicU64,
    background_queued: AtomicU64,
    background_dropped: AtomicU64,
    background_errors: AtomicU64,
}

impl Tier {
    /// The bucket.
    pub fn bucket(&self) -> &ObjectBackend {
        &self.bucket
    }

    /// How messages name the bucket: its URL with the prefix.
    pub fn bucket_name(&self) -> String {
        self.bucket.root().display().to_string()
    }

    /// The options it runs with.
    pub fn options(&self) -> &TierOptions {
        &self.opts
    }

    /// Its counters.
    pub fn stats(&self) -> TierStats {
        let c = &self.stats;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TierStats {
            uploads: g(&c.uploads),
            upload_bytes: g(&c.upload_bytes),
            upload_errors: g(&c.upload_errors),
            background_queued: g(&c.background_queued),
            background_dropped: g(&c.background_dropped),
            background_errors: g(&c.background_errors),
        }
    }

    /// The bucket-side sink of a blob put on this node: straight at its
    /// final name when the digest is known, else through `tmp/`.
    pub(crate) fn sink(&self, expected: Option<&Digest>) -> Result<Box<dyn BlobSink>> {
        let r = match expected {
            Some(d) => self.bucket.create_for(d),
            None => self.bucket.create(),
        };
        r.inspect_err(|_| self.failed())
    }

    /// Commits the bucket side of a verified blob of `size` bytes.
    pub(crate) fn commit(&self, sink: Box<dyn BlobSink>, d: &Digest, size: u64) -> Result<bool> {
        match sink.commit(d) {
            Ok(existed) => {
                if !existed {
                    self.stats.uploads.fetch_add(1, Ordering::Relaxed);
                    self.stats.upload_bytes.fetch_add(size, Ordering::Relaxed);
                }
                Ok(existed)
            }
            Err(e) => {
                self.failed();
                Err(e)
            }
        }
    }

    fn failed(&self) {
        self.stats.upload_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Copies `r`, the bytes of blob `d`, to the bucket (nothing when it is
    /// there already). The bytes are hashed on the way: a wrong copy is an
    /// error and never completes. True when the bucket had it.
    pub fn upload(&self, mut r: impl Read, d: &Digest) -> Result<bool> {
        self.upload_with(d, &mut |feed| {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => feed(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        })
    }

    /// [`Tier::upload`] of the bytes `fill` hands to the function it is
    /// given, in order.
    pub fn upload_with(&self, d: &Digest, fill: &mut Fill<'_>) -> Result<bool> {
        let mut sink = self.sink(Some(d))?;
        let mut h = crate::digest::Hasher::new();
        let mut size = 0u64;
        let mut write_err = None;
        let read = fill(&mut |c: &[u8]| {
            if write_err.is_some() {
                return;
            }
            h.update(c);
            size = size.saturating_add(c.len() as u64);
            if let Err(e) = sink.write(c) {
                write_err = Some(e);
            }
        });
        let failed = |op, source| {
            self.failed();
            StoreError::Io { op, path: sink.location().to_owned(), source }
        };
        if let Err(e) = read {
            return Err(failed("read for upload", e));
        }
        if let Some(e) = write_err {
            return Err(failed("upload", e));
        }
        let actual = h.finish();
        if actual != *d {
            self.failed();
            return Err(StoreError::DigestMismatch { expected: *d, actual });
        }
        self.commit(sink, d, size)
    }

    /// Queues a copy of the local blob `d` to the bucket; false when the
    /// queue is full (the copy is dropped) or the tier is not set to.
    pub fn upload_in_background(&self, d: Digest) -> bool {
        if !self.opts.write_fetched {
            return false;
        }
        let q = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(tx) = q.as_ref() else { return false };
        match tx.try_send(d) {
            Ok(()) => {
                self.stats.background_queued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.stats.background_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(digest = %d, "background upload queue full; the blob is not copied to the bucket now");
                false
            }
        }
    }
}

/// The background writer: one thread, which ends when the store goes.
fn spawn_background(store: Weak<Inner>) -> Result<mpsc::SyncSender<Digest>> {
    let (tx, rx) = mpsc::sync_channel::<Digest>(BACKGROUND_QUEUE);
    std::thread::Builder::new()
        .name("cairn-tier-upload".into())
        .spawn(move || {
            for d in rx {
                let Some(inner) = store.upgrade() else { return };
                let s = Store { inner };
                let Some(t) = s.tier() else { return };
                let res = match t.bucket.has_blob(&d) {
                    Ok(true) => Ok(()),
                    _ => s.get(&d).and_then(|r| t.upload(r, &d)).map(drop),
                };
                match res {
                    Ok(()) => tracing::debug!(digest = %d, "copied a fetched blob to the bucket"),
                    // Evicted before its turn: the origin still has it.
                    Err(StoreError::BlobNotFound(_)) => {}
                    Err(e) => {
                        t.stats.background_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(digest = %d, error = %e, "could not copy a fetched blob to the bucket");
                    }
                }
            }
        })
        .map_err(StoreError::io("start the background upload thread", Path::new("<tier>")))?;
    Ok(tx)
}

impl Store {
    /// Opens the data dir at `root` as a cache in front of `bucket` (see
    /// the module docs): metadata in the bucket, blobs put here written
    /// through to it.
    pub fn open_tiered(
        root: impl AsRef<Path>,
        opts: StoreOptions,
        bucket: ObjectBackend,
        tier: TierOptions,
    ) -> Result<Store> {
        let local = FsBackend::open(root.as_ref(), &opts)?;
        let backend = TieredBackend { local, bucket: bucket.clone() };
        let store = Store::with_backend(Box::new(backend), opts);
        let queue = spawn_background(Arc::downgrade(&store.inner))?;
        let t = Tier { bucket, opts: tier, queue: Mutex::new(Some(queue)), stats: Counters::default() };
        // A fresh store: the cell is empty.
        let _ = store.inner.tier.set(Arc::new(t));
        Ok(store)
    }

    /// The durable tier, when the store has one.
    pub fn tier(&self) -> Option<&Arc<Tier>> {
        self.inner.tier.get()
    }
}

/// Local blobs, upload sessions and the node's own markers; shared
/// metadata in the bucket.
#[derive(Debug)]
pub struct TieredBackend {
    local: FsBackend,
    bucket: ObjectBackend,
}

impl BlobBackend for TieredBackend {
    fn stat(&self, d: &Digest) -> Result<u64> {
        self.local.stat(d)
    }
    fn stat_mtime(&self, d: &Digest) -> Result<Option<(u64, SystemTime)>> {
        self.local.stat_mtime(d)
    }
    fn stat_mode(&self, d: &Digest) -> Option<(u64, u32)> {
        self.local.stat_mode(d)
    }
    fn read(&self, d: &Digest, offset: u64, len: Option<u64>) -> Result<BlobReader> {
        self.local.read(d, offset, len)
    }
    fn create(&self) -> Result<Box<dyn BlobSink>> {
        self.local.create()
    }
    fn delete_blob(&self, d: &Digest) -> Result<bool> {
        self.local.delete_blob(d)
    }
    fn sync_deletes(&self) -> Result<()> {
        self.local.sync_deletes()
    }
    fn list_blobs(&self) -> Result<Box<dyn Iterator<Item = Result<Digest>> + Send>> {
        self.local.list_blobs()
    }
    fn touch(&self, d: &Digest) -> Result<()> {
        // The bucket's copy is the one a GC on another node judges.
        let local = self.local.touch(d);
        match self.bucket.touch(d) {
            Ok(()) => Ok(()),
            Err(StoreError::BlobNotFound(_)) => local,
            Err(e) => Err(e),
        }
    }
    fn quarantine(&self, d: &Digest) -> Result<std::path::PathBuf> {
        self.local.quarantine(d)
    }
    fn temporaries(&self) -> Result<usize> {
        self.local.temporaries()
    }
}

impl TieredBackend {
    /// Where a metadata key lives: the node's own state (replication
    /// markers) on its disk, everything shared in the bucket.
    fn meta(&self, key: &str) -> &dyn MetaBackend {
        let local = crate::held::HELD_DIR;
        if key == local || key.strip_prefix(local).is_some_and(|r| r.starts_with('/')) {
            &self.local
        } else {
            &self.bucket
        }
    }
}

impl MetaBackend for TieredBackend {
    fn get(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>> {
        self.meta(key).get(key, max)
    }
    fn get_stamped(&self, key: &str) -> Result<Option<(Vec<u8>, Stamp)>> {
        self.meta(key).get_stamped(key)
    }
    fn stamp(&self, key: &str) -> Option<Stamp> {
        self.meta(key).stamp(key)
    }
    fn exists(&self, key: &str) -> bool {
        self.meta(key).exists(key)
    }
    fn is_dir(&self, key: &str) -> bool {
        self.meta(key).is_dir(key)
    }
    fn modified(&self, key: &str) -> Option<SystemTime> {
        self.meta(key).modified(key)
    }
    fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.meta(key).put(key, bytes)
    }
    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        self.meta(key).put_new(key, bytes)
    }
    fn put_if(&self, key: &str, bytes: &[u8], seen: Option<Stamp>) -> Result<bool> {
        self.meta(key).put_if(key, bytes, seen)
    }
    fn delete(&self, key: &str) -> Result<bool> {
        self.meta(key).delete(key)
    }
    fn children(&self, key: &str) -> Result<Vec<String>> {
        self.meta(key).children(key)
    }
    fn locate(&self, key: &str) -> std::path::PathBuf {
        self.meta(key).locate(key)
    }
}

impl UploadBackend for TieredBackend {
    fn create_upload(&self, id: &str) -> Result<()> {
        self.local.create_upload(id)
    }
    fn open_upload(&self, id: &str) -> Result<Option<Box<dyn UploadData>>> {
        self.local.open_upload(id)
    }
    fn remove_upload(&self, id: &str) -> Result<()> {
        self.local.remove_upload(id)
    }
    fn list_uploads(&self) -> Result<Vec<String>> {
        self.local.list_uploads()
    }
    fn upload_created(&self, id: &str) -> Option<SystemTime> {
        self.local.upload_created(id)
    }
}

impl Backend for TieredBackend {
    fn root(&self) -> &Path {
        self.local.root()
    }
    fn lock_gc(&self, exclusive: bool) -> Result<Guard> {
        self.local.lock_gc(exclusive)
    }
    fn probe(&self) -> Result<()> {
        self.local.probe()
    }
    fn fs(&self) -> Option<&FsBackend> {
        Some(&self.local)
    }
}
