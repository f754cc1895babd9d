//! The in-memory backend: the reference for what each trait method means,
//! kept short. Nothing survives the process; locks are in-process.

use std::any::Any;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{Backend, BlobBackend, BlobSink, Guard, MetaBackend, UploadBackend, UploadData};
use crate::blob::BlobReader;
use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::oci::cache::Stamp;

/// A store held in memory; clones share it.
#[derive(Debug, Clone, Default)]
pub struct MemBackend {
    s: Arc<Mutex<State>>,
    gc: Arc<GcLock>,
    root: Arc<PathBuf>,
}

#[derive(Debug, Default)]
struct State {
    blobs: BTreeMap<Digest, Entry>,
    quarantine: BTreeMap<Digest, Entry>,
    meta: BTreeMap<String, Entry>,
    uploads: BTreeMap<String, Upload>,
    // Sinks not yet committed or dropped.
    open_sinks: usize,
    // Bumped on every meta write, so a stamp names one version.
    version: u64,
}

impl State {
    fn put_meta(&mut self, key: &str, bytes: &[u8]) {
        self.version += 1;
        let e = Entry { bytes: Bytes::copy_from_slice(bytes), mtime: SystemTime::now(), version: self.version };
        self.meta.insert(key.to_owned(), e);
    }
}

#[derive(Debug, Clone)]
struct Entry {
    bytes: Bytes,
    mtime: SystemTime,
    version: u64,
}

#[derive(Debug)]
struct Upload {
    data: Vec<u8>,
    created: SystemTime,
    modified: SystemTime,
    locked: bool,
}

impl MemBackend {
    /// An empty store.
    pub fn new() -> MemBackend {
        MemBackend { root: Arc::new(PathBuf::from("<memory>")), ..Default::default() }
    }

    /// Sets a blob's modification time (what a filesystem's `touch -d`
    /// does), for tests of the GC grace.
    pub fn set_mtime(&self, d: &Digest, t: SystemTime) {
        if let Some(e) = self.state().blobs.get_mut(d) {
            e.mtime = t;
        }
    }

    /// Replaces a stored blob's bytes, as a failing disk would.
    #[cfg(test)]
    pub(crate) fn corrupt(&self, d: &Digest, bytes: &[u8]) {
        if let Some(e) = self.state().blobs.get_mut(d) {
            e.bytes = Bytes::copy_from_slice(bytes);
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update below leaves the maps consistent, even if a caller panicked.
        self.s.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn at(&self, what: &str) -> PathBuf {
        self.root.join(what)
    }
}

fn stamp(e: &Entry) -> Stamp {
    let t = e.mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
    let t = (i64::try_from(t.as_secs()).unwrap_or(i64::MAX), i64::from(t.subsec_nanos()));
    Stamp::new(0, e.version, e.bytes.len() as u64, t, t)
}

impl BlobBackend for MemBackend {
    fn stat(&self, d: &Digest) -> Result<u64> {
        self.state().blobs.get(d).map(|e| e.bytes.len() as u64).ok_or(StoreError::BlobNotFound(*d))
    }

    fn stat_mtime(&self, d: &Digest) -> Result<Option<(u64, SystemTime)>> {
        Ok(self.state().blobs.get(d).map(|e| (e.bytes.len() as u64, e.mtime)))
    }

    fn stat_mode(&self, d: &Digest) -> Option<(u64, u32)> {
        self.state().blobs.get(d).map(|e| (e.bytes.len() as u64, 0o100444))
    }

    fn read(&self, d: &Digest, offset: u64, len: Option<u64>) -> Result<BlobReader> {
        let bytes = self.state().blobs.get(d).map(|e| e.bytes.clone()).ok_or(StoreError::BlobNotFound(*d))?;
        let size = bytes.len() as u64;
        let remaining = crate::blob::check_range(d, offset, len, size)?;
        // In range, so both ends fit in usize.
        let (start, end) = (offset as usize, (offset + remaining) as usize);
        Ok(BlobReader::from_bytes(bytes.slice(start..end), self.at(&format!("objects/{d}")), size, offset))
    }

    fn create(&self) -> Result<Box<dyn BlobSink>> {
        self.state().open_sinks += 1;
        Ok(Box::new(MemSink { be: self.clone(), buf: Vec::new(), at: self.at("tmp") }))
    }

    fn delete_blob(&self, d: &Digest) -> Result<bool> {
        Ok(self.state().blobs.remove(d).is_some())
    }

    fn sync_deletes(&self) -> Result<()> {
        Ok(())
    }

    fn list_blobs(&self) -> Result<Box<dyn Iterator<Item = Result<Digest>> + Send>> {
        let all: Vec<Digest> = self.state().blobs.keys().copied().collect();
        Ok(Box::new(all.into_iter().map(Ok)))
    }

    fn touch(&self, d: &Digest) -> Result<()> {
        let mut s = self.state();
        let e = s.blobs.get_mut(d).ok_or(StoreError::BlobNotFound(*d))?;
        e.mtime = SystemTime::now();
        Ok(())
    }

    fn quarantine(&self, d: &Digest) -> Result<PathBuf> {
        let mut s = self.state();
        let e = s.blobs.remove(d).ok_or(StoreError::BlobNotFound(*d))?;
        s.quarantine.insert(*d, e);
        Ok(self.at(&format!("quarantine/{d}")))
    }

    fn temporaries(&self) -> Result<usize> {
        Ok(self.state().open_sinks)
    }
}

/// A blob being written: bytes in a vector until commit.
struct MemSink {
    be: MemBackend,
    buf: Vec<u8>,
    at: PathBuf,
}

impl BlobSink for MemSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(buf);
        Ok(())
    }

    fn commit(mut self: Box<Self>, d: &Digest) -> Result<bool> {
        let bytes = Bytes::from(std::mem::take(&mut self.buf));
        let mut s = self.be.state();
        let now = SystemTime::now();
        match s.blobs.get_mut(d) {
            // Never replaced: the first copy stays, only its mtime moves.
            Some(e) => {
                e.mtime = now;
                Ok(true)
            }
            None => {
                s.blobs.insert(*d, Entry { bytes, mtime: now, version: 0 });
                Ok(false)
            }
        }
    }

    fn location(&self) -> &Path {
        &self.at
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

impl Drop for MemSink {
    fn drop(&mut self) {
        let mut s = self.be.state();
        s.open_sinks = s.open_sinks.saturating_sub(1);
    }
}

impl MetaBackend for MemBackend {
    fn get(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let cap = usize::try_from(max.saturating_add(1)).unwrap_or(usize::MAX);
        Ok(self.state().meta.get(key).map(|e| e.bytes[..e.bytes.len().min(cap)].to_vec()))
    }

    fn get_stamped(&self, key: &str) -> Result<Option<(Vec<u8>, Stamp)>> {
        Ok(self.state().meta.get(key).map(|e| (e.bytes.to_vec(), stamp(e))))
    }

    fn stamp(&self, key: &str) -> Option<Stamp> {
        self.state().meta.get(key).map(stamp)
    }

    fn exists(&self, key: &str) -> bool {
        self.state().meta.contains_key(key)
    }

    fn is_dir(&self, key: &str) -> bool {
        let prefix = format!("{key}/");
        self.state().meta.range(prefix.clone()..).next().is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    fn modified(&self, key: &str) -> Option<SystemTime> {
        self.state().meta.get(key).map(|e| e.mtime)
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.state().put_meta(key, bytes);
        Ok(())
    }

    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        // Checked and written under one lock: two racing writers cannot both win.
        let mut s = self.state();
        if s.meta.contains_key(key) {
            return Ok(false);
        }
        s.put_meta(key, bytes);
        Ok(true)
    }

    fn put_if(&self, key: &str, bytes: &[u8], seen: Option<Stamp>) -> Result<bool> {
        // Compared and written under one lock, as `put_new`.
        let mut s = self.state();
        if s.meta.get(key).map(stamp) != seen {
            return Ok(false);
        }
        s.put_meta(key, bytes);
        Ok(true)
    }

    fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.state().meta.remove(key).is_some())
    }

    fn children(&self, key: &str) -> Result<Vec<String>> {
        let prefix = format!("{key}/");
        let s = self.state();
        let mut out: Vec<String> = s
            .meta
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| k[prefix.len()..].split('/').next().map(str::to_owned))
            .collect();
        out.dedup();
        Ok(out)
    }

    fn locate(&self, key: &str) -> PathBuf {
        self.at(key)
    }
}

impl UploadBackend for MemBackend {
    fn create_upload(&self, id: &str) -> Result<()> {
        let now = SystemTime::now();
        let u = Upload { data: Vec::new(), created: now, modified: now, locked: false };
        self.state().uploads.insert(id.to_owned(), u);
        Ok(())
    }

    fn open_upload(&self, id: &str) -> Result<Option<Box<dyn UploadData>>> {
        if !self.state().uploads.contains_key(id) {
            return Ok(None);
        }
        let at = self.at(&format!("registry/uploads/{id}/data"));
        Ok(Some(Box::new(MemUpload { be: self.clone(), id: id.to_owned(), locked: false, at })))
    }

    fn remove_upload(&self, id: &str) -> Result<()> {
        let mut s = self.state();
        s.uploads.remove(id);
        // Its metadata (`info.json`) goes with it.
        let prefix = format!("registry/uploads/{id}/");
        s.meta.retain(|k, _| !k.starts_with(&prefix));
        Ok(())
    }

    fn list_uploads(&self) -> Result<Vec<String>> {
        Ok(self.state().uploads.keys().cloned().collect())
    }

    fn upload_created(&self, id: &str) -> Option<SystemTime> {
        self.state().uploads.get(id).map(|u| u.created)
    }
}

/// A handle on one session's data.
struct MemUpload {
    be: MemBackend,
    id: String,
    locked: bool,
    at: PathBuf,
}

impl MemUpload {
    fn with<T>(&self, f: impl FnOnce(&mut Upload) -> T) -> io::Result<T> {
        let mut s = self.be.state();
        let u = s.uploads.get_mut(&self.id).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(f(u))
    }
}

impl UploadData for MemUpload {
    fn len(&self) -> io::Result<u64> {
        self.with(|u| u.data.len() as u64)
    }

    fn modified(&self) -> Option<SystemTime> {
        self.with(|u| u.modified).ok()
    }

    fn try_lock(&mut self) -> io::Result<bool> {
        let got = self.with(|u| !std::mem::replace(&mut u.locked, true))?;
        self.locked |= got;
        Ok(got)
    }

    fn read_prefix(&mut self, len: u64, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let n = usize::try_from(len).unwrap_or(usize::MAX);
        self.with(|u| f(&u.data[..n.min(u.data.len())]))
    }

    fn begin_append(&mut self, at: u64) -> io::Result<()> {
        self.truncate(at)
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.with(|u| {
            u.data.extend_from_slice(bytes);
            u.modified = SystemTime::now();
        })
    }

    fn end_append(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.with(|u| u.data.truncate(usize::try_from(len).unwrap_or(usize::MAX)))
    }

    fn commit(&mut self, d: &Digest) -> Result<bool> {
        let data = self.with(|u| std::mem::take(&mut u.data)).map_err(StoreError::io("read", &self.at))?;
        let mut s = self.be.state();
        let now = SystemTime::now();
        if let Some(e) = s.blobs.get_mut(d) {
            e.mtime = now;
            return Ok(true);
        }
        s.blobs.insert(*d, Entry { bytes: Bytes::from(data), mtime: now, version: 0 });
        Ok(false)
    }

    fn location(&self) -> &Path {
        &self.at
    }
}

impl Drop for MemUpload {
    fn drop(&mut self) {
        if self.locked {
            let _ = self.with(|u| u.locked = false);
        }
    }
}

/// A readers-writer lock whose guards are owned values (in-process only).
#[derive(Debug, Default)]
pub(crate) struct GcLock {
    // (shared holders, exclusive held)
    state: Mutex<(usize, bool)>,
    cv: Condvar,
}

struct GcGuard {
    lock: Arc<GcLock>,
    exclusive: bool,
}

impl GcLock {
    /// Waits for the lock, shared or exclusive.
    pub(crate) fn lock(this: &Arc<GcLock>, exclusive: bool) -> Guard {
        let mut st = this.state.lock().unwrap_or_else(|p| p.into_inner());
        while st.1 || (exclusive && st.0 > 0) {
            st = this.cv.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if exclusive {
            st.1 = true;
        } else {
            st.0 += 1;
        }
        Box::new(GcGuard { lock: Arc::clone(this), exclusive })
    }
}

impl Drop for GcGuard {
    fn drop(&mut self) {
        let mut st = self.lock.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.exclusive {
            st.1 = false;
        } else {
            st.0 -= 1;
        }
        self.lock.cv.notify_all();
    }
}

impl Backend for MemBackend {
    fn root(&self) -> &Path {
        &self.root
    }

    fn lock_gc(&self, exclusive: bool) -> Result<Guard> {
        Ok(GcLock::lock(&self.gc, exclusive))
    }

    fn probe(&self) -> Result<()> {
        Ok(())
    }
}
