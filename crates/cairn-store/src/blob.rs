//! Blobs: immutable bytes named by their SHA-256.
//!
//! A blob is written to `tmp/` while it is hashed, fsynced, then hard-linked
//! into `objects/` (a link never replaces an existing object, so a
//! concurrent writer of the same blob cannot disturb a reader or a hard link
//! taken elsewhere) and the temp name removed. A blob whose bytes do not
//! match the expected digest never appears in `objects/`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use crate::digest::{Digest, Hasher};
use crate::error::{Result, StoreError};
use crate::nofollow;
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

/// Start background writeback after this many unsynced bytes, so the final
/// fsync of a large blob does not wait for all of it at once.
const FLUSH_EVERY: u64 = 64 << 20;

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
    file: Option<File>,
    tmp: PathBuf,
    hasher: Hasher,
    /// Set once [`BlobWriter::write_owned`] is used: the hasher moved there.
    hash_thread: Option<HashThread>,
    len: u64,
    writeback: WriteBack,
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

struct Flusher {
    tx: mpsc::SyncSender<()>,
    handle: JoinHandle<io::Result<()>>,
}

impl Flusher {
    fn start(file: &File) -> io::Result<Flusher> {
        let f = file.try_clone()?;
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        let handle = std::thread::Builder::new().name("cairn-flush".into()).spawn(move || {
            for () in rx {
                f.sync_data()?;
            }
            Ok(())
        })?;
        Ok(Flusher { tx, handle })
    }
}

/// Background write-back of a file being filled, so its final fsync does
/// not wait for all of it at once: each time the file grows past another
/// [`FLUSH_EVERY`] bytes, a flusher thread runs `sync_data` while writing
/// goes on. Shared by [`BlobWriter`] and registry uploads.
pub(crate) struct WriteBack {
    enabled: bool,
    unflushed: u64,
    flusher: Option<Flusher>,
}

impl WriteBack {
    /// Write-back for a file already `len` bytes long (when `enabled`, i.e.
    /// the store fsyncs at all). Flushes fall on multiples of
    /// [`FLUSH_EVERY`] of the file, however the writes are split.
    pub(crate) fn new(enabled: bool, len: u64) -> Self {
        WriteBack { enabled, unflushed: len % FLUSH_EVERY, flusher: None }
    }

    /// Counts `n` bytes just written to `file`; starts a flush past the threshold.
    pub(crate) fn wrote(&mut self, file: &File, n: u64) -> io::Result<()> {
        self.unflushed += n;
        if self.unflushed >= FLUSH_EVERY && self.enabled {
            self.unflushed %= FLUSH_EVERY;
            if self.flusher.is_none() {
                self.flusher = Some(Flusher::start(file)?);
            }
            if let Some(fl) = &self.flusher {
                // A flush already queued covers these bytes too.
                let _ = fl.tx.try_send(());
            }
        }
        Ok(())
    }

    /// Waits for the flusher: a failed background flush is reported here,
    /// since a later fsync through another descriptor may not see it.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        let Some(f) = self.flusher.take() else { return Ok(()) };
        drop(f.tx);
        f.handle.join().map_err(|_| io::Error::other("flush thread panicked"))?
    }
}

impl Store {
    /// Starts writing a new blob.
    pub fn writer(&self) -> Result<BlobWriter> {
        self.check_writable()?;
        let dir = self.layout().tmp_dir();
        let name = format!("{:016x}.part", rand::random::<u64>());
        let tmp = dir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(StoreError::io("create temp file", &tmp))?;
        Ok(BlobWriter {
            store: self.clone(),
            file: Some(file),
            tmp,
            hasher: Hasher::new(),
            hash_thread: None,
            len: 0,
            writeback: WriteBack::new(self.inner.opts.fsync, 0),
        })
    }

    /// Stores everything `r` yields. With `expected`, a mismatch stores nothing.
    pub fn put_reader(&self, mut r: impl Read, expected: Option<&Digest>) -> Result<PutOutcome> {
        let mut w = self.writer()?;
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
        nofollow::is_file(&self.layout().object(d))
    }

    /// The blob's size, or `BlobNotFound`; a symlink in its place is
    /// [`StoreError::Symlink`] (which counts as not found).
    pub fn size(&self, d: &Digest) -> Result<u64> {
        let p = self.layout().object(d);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => Ok(m.len()),
            Ok(m) if m.is_symlink() => Err(StoreError::Symlink(p)),
            Ok(_) => Err(StoreError::BlobNotFound(*d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::BlobNotFound(*d)),
            Err(e) => Err(StoreError::Io { op: "stat", path: p, source: e }),
        }
    }

    /// Opens the whole blob for streaming.
    pub fn get(&self, d: &Digest) -> Result<BlobReader> {
        self.get_range(d, 0, None)
    }

    /// Opens `len` bytes (or the rest) of the blob from `offset`.
    pub fn get_range(&self, d: &Digest, offset: u64, len: Option<u64>) -> Result<BlobReader> {
        let p = self.layout().object(d);
        let mut f = match nofollow::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::BlobNotFound(*d)),
            Err(e) => return Err(nofollow::error("open", &p)(e)),
        };
        if !f.metadata().map_err(StoreError::io("stat", &p))?.is_file() {
            return Err(StoreError::BlobNotFound(*d));
        }
        let size = f.metadata().map_err(StoreError::io("stat", &p))?.len();
        let end = match len {
            Some(l) => offset.checked_add(l),
            None => Some(size),
        };
        match end {
            Some(end) if offset <= size && end <= size => {}
            _ => return Err(StoreError::Range { digest: *d, offset, len, size }),
        }
        let remaining = end.unwrap_or(size) - offset;
        if offset > 0 {
            f.seek(SeekFrom::Start(offset)).map_err(StoreError::io("seek", &p))?;
        }
        Ok(BlobReader { file: f, size, offset, remaining })
    }

    /// Every blob digest in `objects/`, lazily; files with other names are skipped.
    pub fn list(&self) -> Result<BlobIter> {
        let dir = self.layout().objects_dir();
        let rd = fs::read_dir(&dir).map_err(StoreError::io("read directory", &dir))?;
        Ok(BlobIter { rd, dir })
    }

    /// Removes a blob (GC, registry delete). Absent blobs are not an error.
    pub fn remove_blob(&self, d: &Digest) -> Result<bool> {
        self.check_writable()?;
        let p = self.layout().object(d);
        match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::Io { op: "remove", path: p, source: e }),
        }
    }

    /// Moves a blob out of `objects/` into `quarantine/`, so it is no longer served.
    pub fn quarantine(&self, d: &Digest) -> Result<PathBuf> {
        self.check_writable()?;
        let from = self.layout().object(d);
        let to = self.layout().quarantined(d);
        fs::rename(&from, &to).map_err(StoreError::io("quarantine", &from))?;
        Ok(to)
    }

    /// Hashes the stored bytes of `d` and reports whether they match its name.
    pub fn verify_blob(&self, d: &Digest) -> Result<bool> {
        let mut r = self.get(d)?;
        let mut h = Hasher::new();
        let mut buf = vec![0u8; COPY_BUF];
        loop {
            let n = r.read(&mut buf).map_err(StoreError::io("read", self.layout().object(d)))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h.finish() == *d)
    }

    /// Marks a blob as recently used (GC grace).
    pub(crate) fn touch(&self, d: &Digest) -> Result<()> {
        let p = self.layout().object(d);
        let f = nofollow::open(&p).map_err(nofollow::error("open", &p))?;
        f.set_modified(SystemTime::now()).map_err(StoreError::io("set mtime", &p))
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

    /// Finishes hashing and closes the temp file without making the blob
    /// visible: for batches (snapshot) that sync once and then publish all
    /// their blobs with [`Store::publish`].
    pub(crate) fn stage(mut self) -> Result<Staged> {
        let digest = self.finish_hash()?;
        self.stop_flusher()?;
        let file = self.file.take().ok_or_else(|| StoreError::Io {
            op: "stage",
            path: self.tmp.clone(),
            source: io::Error::other("blob writer already finished"),
        })?;
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o444))
            .map_err(StoreError::io("chmod", &self.tmp))?;
        // The staged value now owns the temp name; this writer's drop must not remove it.
        let tmp = std::mem::take(&mut self.tmp);
        Ok(Staged { tmp, digest })
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

    /// Copies all of `buf` into the temp file (not hashed here).
    fn write_file(&mut self, buf: &[u8]) -> io::Result<()> {
        let f = self.file.as_mut().ok_or_else(|| io::Error::other("blob writer already finished"))?;
        f.write_all(buf)?;
        self.len += buf.len() as u64;
        self.writeback.wrote(f, buf.len() as u64)
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

    fn stop_flusher(&mut self) -> Result<()> {
        self.writeback.finish().map_err(StoreError::io("fsync", &self.tmp))
    }
}

/// A written blob whose digest matched, not yet durable nor visible.
/// Dropping it removes the temp file.
pub struct VerifiedBlob {
    w: BlobWriter,
    digest: Digest,
}

impl VerifiedBlob {
    /// Syncs the blob and links it into `objects/` (never replacing an
    /// existing object).
    pub fn persist(mut self) -> Result<PutOutcome> {
        let (digest, size) = (self.digest, self.w.len);
        let w = &mut self.w;
        let file = w.file.take().ok_or_else(|| StoreError::Io {
            op: "commit",
            path: w.tmp.clone(),
            source: io::Error::other("blob writer already finished"),
        })?;
        let store = w.store.clone();
        let dest = store.layout().object(&digest);
        let _gc = store.gc_shared()?;
        if nofollow::is_file(&dest) {
            drop(file);
            w.stop_flusher()?;
            store.touch(&digest)?;
            return Ok(PutOutcome { digest, size, existed: true });
        }
        w.stop_flusher()?;
        if store.inner.opts.fsync {
            file.sync_all().map_err(StoreError::io("fsync", &w.tmp))?;
        }
        let mut perms = file.metadata().map_err(StoreError::io("stat", &w.tmp))?.permissions();
        perms.set_readonly(true);
        file.set_permissions(perms).map_err(StoreError::io("chmod", &w.tmp))?;
        drop(file);
        let existed = match fs::hard_link(&w.tmp, &dest) {
            Ok(()) => false,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match store.touch(&digest) {
                Ok(()) => true,
                // A planted symlink holds the name: the verified bytes replace it
                // (rename replaces the link itself, never its target).
                Err(StoreError::Symlink(_)) => {
                    fs::rename(&w.tmp, &dest).map_err(StoreError::io("replace symlink in objects", &dest))?;
                    false
                }
                Err(e) => return Err(e),
            },
            Err(e) => return Err(StoreError::Io { op: "link into objects", path: dest, source: e }),
        };
        if !existed {
            store.sync_dir(&store.layout().objects_dir())?;
        }
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

impl Drop for BlobWriter {
    fn drop(&mut self) {
        let _ = self.stop_flusher();
        self.file.take();
        // The temp name is removed whether or not the blob was committed.
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A blob hashed into `tmp/` but not yet visible; removed when dropped.
#[derive(Debug)]
pub(crate) struct Staged {
    tmp: PathBuf,
    pub(crate) digest: Digest,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

impl Store {
    /// Makes staged blobs visible: one `syncfs` makes all their bytes durable,
    /// then each is linked into `objects/` (or, when already there, the
    /// existing object's mtime is refreshed). Returns how many were new.
    /// The caller holds the shared GC lock until the blobs are referenced.
    pub(crate) fn publish(&self, staged: &[&Staged]) -> Result<usize> {
        self.check_writable()?;
        let tmp_dir = self.layout().tmp_dir();
        if self.inner.opts.fsync && !staged.is_empty() {
            let d = File::open(&tmp_dir).map_err(StoreError::io("open", &tmp_dir))?;
            rustix::fs::syncfs(&d).map_err(|e| StoreError::Io {
                op: "syncfs",
                path: tmp_dir.clone(),
                source: e.into(),
            })?;
        }
        let mut new = 0;
        for s in staged {
            let dest = self.layout().object(&s.digest);
            match fs::hard_link(&s.tmp, &dest) {
                Ok(()) => new += 1,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self.touch(&s.digest)?,
                Err(e) => return Err(StoreError::Io { op: "link into objects", path: dest, source: e }),
            }
        }
        if new > 0 {
            self.sync_dir(&self.layout().objects_dir())?;
        }
        Ok(new)
    }
}

/// A streaming reader over (part of) a stored blob.
#[derive(Debug)]
pub struct BlobReader {
    file: File,
    size: u64,
    offset: u64,
    remaining: u64,
}

impl BlobReader {
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
    /// The open file, positioned at the current offset, and the bytes left
    /// (for callers that stream it themselves, e.g. an async server).
    pub fn into_parts(self) -> (File, u64) {
        (self.file, self.remaining)
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..max])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Iterator over the digests in `objects/`.
pub struct BlobIter {
    rd: fs::ReadDir,
    dir: PathBuf,
}

impl Iterator for BlobIter {
    type Item = Result<Digest>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let e = match self.rd.next()? {
                Ok(e) => e,
                Err(e) => return Some(Err(StoreError::Io { op: "read directory", path: self.dir.clone(), source: e })),
            };
            if let Some(d) = e.file_name().to_str().and_then(|n| Digest::parse(n).ok()) {
                return Some(Ok(d));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_back_starts_when_the_file_crosses_each_threshold_however_writes_are_split() {
        let f = tempfile::tempfile().unwrap();
        let mut wb = WriteBack::new(true, FLUSH_EVERY - 10);
        wb.wrote(&f, 9).unwrap();
        assert!(wb.flusher.is_none(), "below the threshold");
        wb.wrote(&f, 2).unwrap();
        assert!(wb.flusher.is_some(), "crossed it");
        assert_eq!(wb.unflushed, 1);
        wb.finish().unwrap();
        assert!(wb.flusher.is_none());
    }

    #[test]
    fn write_back_never_starts_when_the_store_does_not_fsync() {
        let f = tempfile::tempfile().unwrap();
        let mut wb = WriteBack::new(false, 0);
        wb.wrote(&f, 3 * FLUSH_EVERY).unwrap();
        assert!(wb.flusher.is_none());
        wb.finish().unwrap();
    }
}
