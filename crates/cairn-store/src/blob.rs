//! Blobs: immutable bytes named by their SHA-256.
//!
//! The store hashes a blob while its backend's sink keeps the bytes; the
//! sink's commit makes them durable and visible, never replacing an
//! existing object. A blob whose bytes do not match the expected digest is
//! never visible.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::backend::BlobSink;
use crate::backend::fs::FsStaged;
use crate::cache::policy::Provenance;
use crate::cache::state::InUse;
use crate::digest::{Digest, Hasher};
use crate::error::{Result, StoreError};
use crate::store::Store;

/// Size of the buffer used to copy streams into the store.
pub const COPY_BUF: usize = 1 << 20;

/// A zeroed buffer with a page-aligned region of `len` bytes: the buffer and
/// the region's range.
pub fn aligned_buf(len: usize) -> (Vec<u8>, std::ops::Range<usize>) {
    const PAGE: usize = 4096;
    let raw = vec![0u8; len + PAGE];
    let start = raw.as_ptr().align_offset(PAGE).min(PAGE);
    (raw, start..start + len)
}

/// Reads up to `want` bytes from `r` into a fresh page-aligned buffer
/// (the kernel copies into and out of aligned memory markedly faster).
/// Returns the buffer and the range holding the bytes read; an empty range
/// means end of input.
pub fn read_aligned(r: &mut impl Read, want: usize) -> io::Result<(Vec<u8>, std::ops::Range<usize>)> {
    let (mut raw, region) = aligned_buf(want);
    let start = region.start;
    let mut end = start;
    while end < start + want {
        match r.read(&mut raw[end..start + want]) {
            Ok(0) => break,
            Ok(n) => end += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((raw, start..end))
}

/// What a finished put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// True when the store already held it (only its mtime was refreshed).
    pub existed: bool,
}

/// A blob being written. Feed it bytes with [`Write`], then [`commit`].
/// Dropping it without committing removes the temp file.
///
/// [`commit`]: BlobWriter::commit
pub struct BlobWriter {
    store: Store,
    sink: Option<Box<dyn BlobSink>>,
    /// Where the bytes go, for error messages.
    tmp: PathBuf,
    hasher: Hasher,
    /// Set once [`BlobWriter::write_owned`] is used: the hasher moved there.
    hash_thread: Option<HashThread>,
    len: u64,
    /// Where the bytes come from, for the cache's eviction order.
    provenance: Provenance,
    /// The same bytes on their way to the durable tier (a put on a tiered
    /// store), committed before the local copy.
    durable: Option<Box<dyn BlobSink>>,
}

/// A chunk handed to the hash thread.
type Chunk = Box<dyn AsRef<[u8]> + Send>;

/// A second thread hashing a writer's chunks, in order, while the writer
/// copies them into the file.
struct HashThread {
    tx: mpsc::SyncSender<Chunk>,
    handle: JoinHandle<Hasher>,
}

impl HashThread {
    fn start(mut h: Hasher) -> io::Result<HashThread> {
        let (tx, rx) = mpsc::sync_channel::<Chunk>(16);
        let handle = std::thread::Builder::new().name("cairn-hash".into()).spawn(move || {
            for c in rx {
                h.update((*c).as_ref());
            }
            h
        })?;
        Ok(HashThread { tx, handle })
    }

    fn send(&self, c: Chunk) -> io::Result<()> {
        self.tx.send(c).map_err(|_| io::Error::other("hash thread stopped"))
    }
}

impl Store {
    /// Starts writing a new blob put on this node ([`Provenance::Local`]).
    pub fn writer(&self) -> Result<BlobWriter> {
        self.writer_for(Provenance::Local)
    }

    /// Starts writing a new blob that came from `provenance` (the fetch
    /// pipeline writes [`Provenance::Fetched`] copies, evicted first).
    pub fn writer_for(&self, provenance: Provenance) -> Result<BlobWriter> {
        self.writer_with(provenance, None)
    }

    /// Starts writing blob `d`, put on this node, its digest known before
    /// its bytes (a push by digest). The same as [`Store::writer`], except
    /// that on a tiered store the bucket's copy needs no final copy.
    pub fn writer_expecting(&self, d: &Digest) -> Result<BlobWriter> {
        self.writer_with(Provenance::Local, Some(d))
    }

    fn writer_with(&self, provenance: Provenance, expected: Option<&Digest>) -> Result<BlobWriter> {
        self.check_writable()?;
        let durable = match (self.tier(), provenance) {
            (Some(t), Provenance::Local) => Some(t.sink(expected)?),
            _ => None,
        };
        let sink = self.backend().create()?;
        let tmp = sink.location().to_owned();
        Ok(BlobWriter {
            store: self.clone(),
            sink: Some(sink),
            tmp,
            hasher: Hasher::new(),
            hash_thread: None,
            len: 0,
            provenance,
            durable,
        })
    }

    /// Stores everything `r` yields. With `expected`, a mismatch stores nothing.
    pub fn put_reader(&self, mut r: impl Read, expected: Option<&Digest>) -> Result<PutOutcome> {
        let mut w = match expected {
            Some(d) => self.writer_expecting(d)?,
            None => self.writer()?,
        };
        let mut buf = vec![0u8; COPY_BUF];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::Io { op: "read input", path: "<stream>".into(), source: e }),
            };
            w.write_all(&buf[..n]).map_err(StoreError::io("write", &w.tmp))?;
        }
        w.commit(expected)
    }

    /// Stores the file at `path`.
    pub fn put_file(&self, path: impl AsRef<std::path::Path>) -> Result<PutOutcome> {
        let path = path.as_ref();
        let f = File::open(path).map_err(StoreError::io("open", path))?;
        self.put_reader(f, None).map_err(|e| match e {
            StoreError::Io { op: "read input", source, .. } => StoreError::Io { op: "read", path: path.into(), source },
            e => e,
        })
    }

    /// True when the blob is present.
    pub fn exists(&self, d: &Digest) -> bool {
        self.backend().stat(d).is_ok()
    }

    /// The blob's size, or `BlobNotFound`; a symlink in its place is
    /// [`StoreError::Symlink`] (which counts as not found).
    pub fn size(&self, d: &Digest) -> Result<u64> {
        self.backend().stat(d)
    }

    /// Opens the whole blob for streaming.
    pub fn get(&self, d: &Digest) -> Result<BlobReader> {
        self.get_range(d, 0, None)
    }

    /// Opens `len` bytes (or the rest) of the blob from `offset`.
    pub fn get_range(&self, d: &Digest, offset: u64, len: Option<u64>) -> Result<BlobReader> {
        // Held before the open, so an eviction never deletes what is being opened.
        let hold = self.cache_read(d);
        let mut r = self.backend().read(d, offset, len)?;
        r.hold = hold;
        Ok(r)
    }

    /// Every stored blob digest, lazily.
    pub fn list(&self) -> Result<BlobIter> {
        Ok(BlobIter(self.backend().list_blobs()?))
    }

    /// Removes a blob (GC, registry delete). Absent blobs are not an error.
    pub fn remove_blob(&self, d: &Digest) -> Result<bool> {
        self.check_writable()?;
        let gone = self.backend().delete_blob(d)?;
        self.cache_removed(d);
        Ok(gone)
    }

    /// Moves a blob aside (`quarantine/`), so it is no longer served.
    pub fn quarantine(&self, d: &Digest) -> Result<PathBuf> {
        self.check_writable()?;
        let to = self.backend().quarantine(d)?;
        self.cache_removed(d);
        Ok(to)
    }

    /// Hashes the stored bytes of `d` and reports whether they match its name.
    pub fn verify_blob(&self, d: &Digest) -> Result<bool> {
        let mut r = self.get(d)?;
        let mut h = Hasher::new();
        let mut buf = vec![0u8; COPY_BUF];
        loop {
            let n = r.read(&mut buf).map_err(StoreError::io("read", r.path.clone()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h.finish() == *d)
    }

    /// Marks a blob as recently used (GC grace).
    pub(crate) fn touch(&self, d: &Digest) -> Result<()> {
        self.backend().touch(d)
    }
}

/// Checks that `len` bytes (or the rest) from `offset` lie inside a blob of
/// `size` bytes; returns how many bytes that is.
pub(crate) fn check_range(d: &Digest, offset: u64, len: Option<u64>, size: u64) -> Result<u64> {
    let end = match len {
        Some(l) => offset.checked_add(l),
        None => Some(size),
    };
    match end {
        Some(end) if offset <= size && end <= size => Ok(end - offset),
        _ => Err(StoreError::Range { digest: *d, offset, len, size }),
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Finishes the blob: checks the digest, syncs, and makes it visible.
    pub fn commit(self, expected: Option<&Digest>) -> Result<PutOutcome> {
        self.verify(expected)?.persist()
    }

    /// Finishes hashing and checks the digest, without syncing or linking:
    /// a caller streaming the bytes elsewhere may release them once they are
    /// known to be right, then [`VerifiedBlob::persist`]. A mismatch drops
    /// the temp file.
    pub fn verify(mut self, expected: Option<&Digest>) -> Result<VerifiedBlob> {
        let digest = self.finish_hash()?;
        if let Some(e) = expected
            && *e != digest
        {
            return Err(StoreError::DigestMismatch { expected: *e, actual: digest });
        }
        Ok(VerifiedBlob { w: self, digest })
    }

    /// Finishes hashing and closes the blob without making it visible: for
    /// batches (snapshot) that sync once and then publish all their blobs
    /// with [`Store::publish`]. Filesystem backend only (the caller checks).
    pub(crate) fn stage(mut self) -> Result<FsStaged> {
        let digest = self.finish_hash()?;
        self.commit_durable(&digest)?;
        let sink = self.take_sink("stage")?;
        let Some(fs) = self.store.backend().fs() else {
            return Err(StoreError::Io {
                op: "stage",
                path: self.tmp.clone(),
                source: io::Error::other("staging needs the filesystem backend"),
            });
        };
        fs.stage(sink, digest)
    }

    /// Writes a chunk the caller hands over: it is hashed on a second
    /// thread while this one copies it into the file, so a large transfer
    /// hashes and writes in parallel. May be mixed with [`Write`] calls.
    pub fn write_owned(&mut self, chunk: impl AsRef<[u8]> + Send + 'static) -> io::Result<()> {
        self.write_file(chunk.as_ref())?;
        let t = match &self.hash_thread {
            Some(t) => t,
            None => self.hash_thread.insert(HashThread::start(std::mem::take(&mut self.hasher))?),
        };
        t.send(Box::new(chunk))
    }

    /// Commits the durable tier's copy of the verified blob `d`, if any.
    fn commit_durable(&mut self, d: &Digest) -> Result<()> {
        if let (Some(sink), Some(t)) = (self.durable.take(), self.store.tier()) {
            t.commit(sink, d, self.len)?;
        }
        Ok(())
    }

    /// Copies all of `buf` into the temp file (not hashed here), and to
    /// the durable tier.
    fn write_file(&mut self, buf: &[u8]) -> io::Result<()> {
        let s = self.sink.as_mut().ok_or_else(|| io::Error::other("blob writer already finished"))?;
        s.write(buf)?;
        if let Some(d) = self.durable.as_mut() {
            d.write(buf)?;
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    fn take_sink(&mut self, op: &'static str) -> Result<Box<dyn BlobSink>> {
        self.sink.take().ok_or_else(|| StoreError::Io {
            op,
            path: self.tmp.clone(),
            source: io::Error::other("blob writer already finished"),
        })
    }

    fn finish_hash(&mut self) -> Result<Digest> {
        let hasher = match self.hash_thread.take() {
            None => std::mem::take(&mut self.hasher),
            Some(t) => {
                drop(t.tx);
                t.handle.join().map_err(|_| StoreError::Io {
                    op: "hash",
                    path: self.tmp.clone(),
                    source: io::Error::other("hash thread panicked"),
                })?
            }
        };
        Ok(hasher.finish())
    }
}

/// A written blob whose digest matched, not yet durable nor visible.
/// Dropping it removes the temp file.
pub struct VerifiedBlob {
    w: BlobWriter,
    digest: Digest,
}

impl VerifiedBlob {
    /// Makes the blob durable and visible (never replacing an existing object).
    pub fn persist(mut self) -> Result<PutOutcome> {
        let (digest, size) = (self.digest, self.w.len);
        // Durable in the bucket before it is visible here.
        self.w.commit_durable(&digest)?;
        let sink = self.w.take_sink("commit")?;
        let _gc = self.w.store.gc_shared()?;
        let existed = sink.commit(&digest)?;
        // Under the GC lock, so an eviction sees every commit it follows.
        self.w.store.cache_committed(digest, size, self.w.provenance);
        Ok(PutOutcome { digest, size, existed })
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_file(buf)?;
        match &self.hash_thread {
            None => self.hasher.update(buf),
            // Keeps the order of the chunks already handed to the thread.
            Some(t) => t.send(Box::new(buf.to_vec()))?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Store {
    /// Makes staged blobs visible with one sync for all (see
    /// [`crate::backend::fs::FsBackend::publish`]). Returns how many were
    /// new. The caller holds the shared GC lock until they are referenced.
    pub(crate) fn publish(&self, staged: &[&FsStaged]) -> Result<usize> {
        self.check_writable()?;
        let new = match self.backend().fs() {
            Some(fs) => fs.publish(staged)?,
            None => 0,
        };
        if self.cache_watermarks().is_some() {
            for s in staged {
                let d = s.digest();
                if let Ok(size) = self.size(&d) {
                    self.cache_committed(d, size, Provenance::Local);
                }
            }
        }
        Ok(new)
    }
}

/// Where a reader's bytes come from.
enum Source {
    /// A file, read directly (keeps std's kernel-copy fast paths).
    File(File),
    /// Bytes in memory: exactly the rest of the range, handed out without a copy.
    Shared(bytes::Bytes),
    /// Anything else a backend hands out.
    Other(Box<dyn Read + Send>),
}

/// A streaming reader over (part of) a stored blob.
pub struct BlobReader {
    src: Source,
    path: PathBuf,
    size: u64,
    offset: u64,
    remaining: u64,
    /// Keeps the blob from eviction while it is read.
    pub(crate) hold: Option<InUse>,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("offset", &self.offset)
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl BlobReader {
    /// A reader over an open file positioned at `offset`.
    pub(crate) fn from_file(f: File, path: PathBuf, size: u64, offset: u64, remaining: u64) -> Self {
        BlobReader { src: Source::File(f), path, size, offset, remaining, hold: None }
    }
    /// A reader over bytes in memory: `rest` is exactly the range's bytes.
    pub fn from_bytes(rest: bytes::Bytes, path: PathBuf, size: u64, offset: u64) -> Self {
        let remaining = rest.len() as u64;
        BlobReader { src: Source::Shared(rest), path, size, offset, remaining, hold: None }
    }
    /// The rest of the range when it is already in memory.
    pub(crate) fn take_shared(&mut self) -> Option<bytes::Bytes> {
        match &mut self.src {
            Source::Shared(b) => {
                self.remaining = 0;
                Some(std::mem::take(b))
            }
            _ => None,
        }
    }
    /// A reader over any byte source positioned at `offset`.
    pub fn from_reader(r: Box<dyn Read + Send>, path: PathBuf, size: u64, offset: u64, remaining: u64) -> Self {
        BlobReader { src: Source::Other(r), path, size, offset, remaining, hold: None }
    }
    /// The whole blob's size.
    pub fn blob_size(&self) -> u64 {
        self.size
    }
    /// Where this reader started.
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Bytes left to read.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }
    /// Where the blob is, for error messages.
    pub fn location(&self) -> &Path {
        &self.path
    }
    /// Copies the rest into `out` (a file: the kernel copies file to file
    /// without a round trip through user space when it can).
    pub fn copy_to_file(self, out: &mut File) -> io::Result<u64> {
        match self.src {
            // `Take<File>` keeps std's copy_file_range fast path.
            Source::File(f) => io::copy(&mut f.take(self.remaining), out),
            Source::Shared(b) => out.write_all(&b).map(|()| b.len() as u64),
            Source::Other(r) => io::copy(&mut r.take(self.remaining), out),
        }
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = match &mut self.src {
            Source::File(f) => f.read(&mut buf[..max])?,
            Source::Shared(b) => {
                let n = max.min(b.len());
                buf[..n].copy_from_slice(&b[..n]);
                bytes::Buf::advance(b, n);
                n
            }
            Source::Other(r) => r.read(&mut buf[..max])?,
        };
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Iterator over the stored digests.
pub struct BlobIter(Box<dyn Iterator<Item = Result<Digest>> + Send>);

impl Iterator for BlobIter {
    type Item = Result<Digest>;
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
}
