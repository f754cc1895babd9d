//! Blobs on disk: `objects/<hex>`, written through `tmp/`.

use std::any::Any;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use super::{FsBackend, dir_names, open_nofollow};
use crate::backend::{BlobBackend, BlobSink};
use crate::blob::BlobReader;
use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::nofollow;

/// Start background writeback after this many unsynced bytes, so the final
/// fsync of a large blob does not wait for all of it at once.
const FLUSH_EVERY: u64 = 64 << 20;

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
/// goes on. Shared by blob sinks and upload sessions.
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

/// A blob being written to `tmp/<random>.part`; removed when dropped.
struct FsSink {
    be: FsBackend,
    file: Option<File>,
    tmp: PathBuf,
    writeback: WriteBack,
}

impl FsSink {
    fn stop_flusher(&mut self) -> Result<()> {
        self.writeback.finish().map_err(StoreError::io("fsync", &self.tmp))
    }

    fn take_file(&mut self, op: &'static str) -> Result<File> {
        self.file.take().ok_or_else(|| StoreError::Io {
            op,
            path: self.tmp.clone(),
            source: io::Error::other("blob writer already finished"),
        })
    }
}

impl BlobSink for FsSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        let f = self.file.as_mut().ok_or_else(|| io::Error::other("blob writer already finished"))?;
        f.write_all(buf)?;
        self.writeback.wrote(f, buf.len() as u64)
    }

    fn commit(mut self: Box<Self>, d: &Digest) -> Result<bool> {
        let file = self.take_file("commit")?;
        self.stop_flusher()?;
        self.be.commit_temp(file, &self.tmp, d)
    }

    fn location(&self) -> &Path {
        &self.tmp
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

impl Drop for FsSink {
    fn drop(&mut self) {
        let _ = self.stop_flusher();
        self.file.take();
        // The temp name is removed whether or not the blob was committed.
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A blob hashed into `tmp/` but not yet visible ([`FsBackend::stage`]);
/// removed when dropped.
#[derive(Debug)]
pub struct FsStaged {
    tmp: PathBuf,
    digest: Digest,
}

impl FsStaged {
    /// The blob's digest.
    pub fn digest(&self) -> Digest {
        self.digest
    }
}

impl Drop for FsStaged {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

impl FsBackend {
    /// Creates a new empty temp file `tmp/<random>.<ext>` open for reading
    /// and writing (swept like every temp file after a crash). The caller
    /// removes it when done.
    pub(crate) fn create_temp(&self, ext: &str) -> Result<(File, PathBuf)> {
        let tmp = self.layout().tmp_dir().join(format!("{:016x}.{ext}", rand::random::<u64>()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(StoreError::io("create temp file", &tmp))?;
        Ok((file, tmp))
    }

    /// Makes the complete temp file `tmp` (open as `file`, already verified
    /// to hold `d`) the object `d`: an existing object is only touched,
    /// else the file is synced, made read-only and linked (never replacing).
    /// Returns true when `d` existed. The temp name stays; the caller
    /// removes it. The caller holds the shared GC lock.
    pub(crate) fn commit_temp(&self, file: File, tmp: &Path, d: &Digest) -> Result<bool> {
        if nofollow::is_file(&self.layout().object(d)) {
            drop(file);
            self.touch(d)?;
            return Ok(true);
        }
        self.seal(&file, tmp)?;
        drop(file);
        let existed = self.link_object(tmp, d)?;
        if !existed {
            self.sync_objects()?;
        }
        Ok(existed)
    }

    /// Closes a sink of this backend holding the blob `d` without making it
    /// visible, for batches that sync once and then [`FsBackend::publish`].
    pub fn stage(&self, sink: Box<dyn BlobSink>, d: Digest) -> Result<FsStaged> {
        let Ok(mut s) = sink.into_any().downcast::<FsSink>() else {
            return Err(StoreError::Io {
                op: "stage",
                path: self.layout().tmp_dir(),
                source: io::Error::other("not a blob writer of this data dir"),
            });
        };
        s.stop_flusher()?;
        let file = s.take_file("stage")?;
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o444))
            .map_err(StoreError::io("chmod", &s.tmp))?;
        // The staged value now owns the temp name; the sink's drop must not remove it.
        let tmp = std::mem::take(&mut s.tmp);
        Ok(FsStaged { tmp, digest: d })
    }

    /// Makes staged blobs visible: one `syncfs` makes all their bytes
    /// durable, then each is linked into `objects/`. Returns how many were
    /// new. The caller holds the shared GC lock until they are referenced.
    pub fn publish(&self, staged: &[&FsStaged]) -> Result<usize> {
        let tmp_dir = self.layout().tmp_dir();
        if self.s.fsync && !staged.is_empty() {
            let d = File::open(&tmp_dir).map_err(StoreError::io("open", &tmp_dir))?;
            rustix::fs::syncfs(&d).map_err(|e| StoreError::Io {
                op: "syncfs",
                path: tmp_dir.clone(),
                source: e.into(),
            })?;
        }
        let mut new = 0;
        for s in staged {
            if !self.link_object(&s.tmp, &s.digest)? {
                new += 1;
            }
        }
        if new > 0 {
            self.sync_objects()?;
        }
        Ok(new)
    }
}

impl BlobBackend for FsBackend {
    fn stat(&self, d: &Digest) -> Result<u64> {
        let p = self.layout().object(d);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => Ok(m.len()),
            Ok(m) if m.is_symlink() => Err(StoreError::Symlink(p)),
            Ok(_) => Err(StoreError::BlobNotFound(*d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::BlobNotFound(*d)),
            Err(e) => Err(StoreError::Io { op: "stat", path: p, source: e }),
        }
    }

    fn stat_mtime(&self, d: &Digest) -> Result<Option<(u64, SystemTime)>> {
        let p = self.layout().object(d);
        match fs::symlink_metadata(&p) {
            Ok(m) => Ok(Some((m.len(), m.modified().map_err(StoreError::io("read mtime", &p))?))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io { op: "stat", path: p, source: e }),
        }
    }

    fn stat_mode(&self, d: &Digest) -> Option<(u64, u32)> {
        use std::os::unix::fs::PermissionsExt;
        match fs::symlink_metadata(self.layout().object(d)) {
            Ok(md) if md.is_file() => Some((md.len(), md.permissions().mode())),
            _ => None,
        }
    }

    fn read(&self, d: &Digest, offset: u64, len: Option<u64>) -> Result<BlobReader> {
        let p = self.layout().object(d);
        let Some(mut f) = open_nofollow(&p, "open")? else { return Err(StoreError::BlobNotFound(*d)) };
        let meta = f.metadata().map_err(StoreError::io("stat", &p))?;
        if !meta.is_file() {
            return Err(StoreError::BlobNotFound(*d));
        }
        let size = meta.len();
        let remaining = crate::blob::check_range(d, offset, len, size)?;
        if offset > 0 {
            f.seek(SeekFrom::Start(offset)).map_err(StoreError::io("seek", &p))?;
        }
        Ok(BlobReader::from_file(f, p, size, offset, remaining))
    }

    fn create(&self) -> Result<Box<dyn BlobSink>> {
        let name = format!("{:016x}.part", rand::random::<u64>());
        let tmp = self.layout().tmp_dir().join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(StoreError::io("create temp file", &tmp))?;
        Ok(Box::new(FsSink { be: self.clone(), file: Some(file), tmp, writeback: WriteBack::new(self.s.fsync, 0) }))
    }

    fn delete_blob(&self, d: &Digest) -> Result<bool> {
        let p = self.layout().object(d);
        match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::Io { op: "remove", path: p, source: e }),
        }
    }

    fn sync_deletes(&self) -> Result<()> {
        self.sync_objects()
    }

    fn list_blobs(&self) -> Result<Box<dyn Iterator<Item = Result<Digest>> + Send>> {
        let dir = self.layout().objects_dir();
        let rd = fs::read_dir(&dir).map_err(StoreError::io("read directory", &dir))?;
        Ok(Box::new(BlobIter { rd, dir }))
    }

    fn touch(&self, d: &Digest) -> Result<()> {
        let p = self.layout().object(d);
        let f = nofollow::open(&p).map_err(nofollow::error("open", &p))?;
        f.set_modified(SystemTime::now()).map_err(StoreError::io("set mtime", &p))
    }

    fn quarantine(&self, d: &Digest) -> Result<PathBuf> {
        let from = self.layout().object(d);
        let to = self.layout().quarantined(d);
        fs::rename(&from, &to).map_err(StoreError::io("quarantine", &from))?;
        Ok(to)
    }

    fn temporaries(&self) -> Result<usize> {
        Ok(dir_names(&self.layout().tmp_dir())?.len())
    }
}

/// Iterator over the digests in `objects/`; other names are skipped.
struct BlobIter {
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
