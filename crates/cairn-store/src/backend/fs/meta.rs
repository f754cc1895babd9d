//! Metadata files (`refs/`, `registry/`) and upload sessions on disk.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{FsBackend, WriteBack, dir_names, open_nofollow};
use crate::backend::{MetaBackend, UploadBackend, UploadData};
use crate::blob::COPY_BUF;
use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::nofollow;
use crate::oci::cache::Stamp;

impl MetaBackend for FsBackend {
    fn get(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let p = self.layout().key(key);
        let Some(f) = open_nofollow(&p, "open")? else { return Ok(None) };
        let mut buf = Vec::new();
        f.take(max.saturating_add(1)).read_to_end(&mut buf).map_err(StoreError::io("read", &p))?;
        Ok(Some(buf))
    }

    fn get_stamped(&self, key: &str) -> Result<Option<(Vec<u8>, Stamp)>> {
        let p = self.layout().key(key);
        let mut f = match nofollow::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            // The registry never makes symlinks: a planted one stands for nothing.
            Err(e) if nofollow::is_symlink_error(&e) => {
                tracing::warn!(path = %p.display(), "ignoring a symlink in the registry metadata");
                return Ok(None);
            }
            Err(e) => return Err(StoreError::Io { op: "read", path: p, source: e }),
        };
        // Stamped with fstat on the very descriptor read, not a second lookup.
        let stamp = Stamp::from_meta(&f.metadata().map_err(StoreError::io("read", &p))?);
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).map_err(StoreError::io("read", &p))?;
        Ok(Some((buf, stamp)))
    }

    fn stamp(&self, key: &str) -> Option<Stamp> {
        fs::symlink_metadata(self.layout().key(key)).ok().map(|m| Stamp::from_meta(&m))
    }

    fn exists(&self, key: &str) -> bool {
        nofollow::is_file(&self.layout().key(key))
    }

    fn is_dir(&self, key: &str) -> bool {
        self.layout().key(key).is_dir()
    }

    fn modified(&self, key: &str) -> Option<SystemTime> {
        fs::symlink_metadata(self.layout().key(key)).and_then(|m| m.modified()).ok()
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.write_atomic(&self.layout().key(key), bytes)
    }

    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        let dest = self.layout().key(key);
        let dir = dest.parent().map(Path::to_owned).unwrap_or_else(|| self.layout().root.clone());
        fs::create_dir_all(&dir).map_err(StoreError::io("create directory", &dir))?;
        let tmp = self.write_temp("ref", bytes)?;
        // A link never replaces an existing file (nor a planted symlink),
        // so two concurrent writers cannot overwrite each other.
        let res = match fs::hard_link(&tmp, &dest) {
            Ok(()) => self.sync_dir(&dir).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(StoreError::Io { op: "link into refs", path: dest, source: e }),
        };
        let _ = fs::remove_file(&tmp);
        res
    }

    fn put_if(&self, key: &str, bytes: &[u8], seen: Option<Stamp>) -> Result<bool> {
        let dest = self.layout().key(key);
        // Compare and rename under an exclusive flock: atomic between the
        // threads and processes of Cairn on this host. Not against a writer
        // that skips the lock (a hand-run `mv`), nor across hosts sharing
        // the directory over a network filesystem that ignores flock.
        let _held = self.lock_meta()?;
        let now = match fs::symlink_metadata(&dest) {
            // As `get_stamped`: a planted symlink stands for nothing (and
            // the rename replaces the link itself).
            Ok(m) if m.file_type().is_symlink() => None,
            Ok(m) => Some(Stamp::from_meta(&m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(StoreError::Io { op: "stat", path: dest, source: e }),
        };
        if now != seen {
            return Ok(false);
        }
        self.write_atomic(&dest, bytes).map(|()| true)
    }

    fn delete(&self, key: &str) -> Result<bool> {
        let p = self.layout().key(key);
        match fs::remove_file(&p) {
            Ok(()) => {
                if let Some(dir) = p.parent() {
                    self.sync_dir(dir)?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::Io { op: "remove", path: p, source: e }),
        }
    }

    fn children(&self, key: &str) -> Result<Vec<String>> {
        dir_names(&self.layout().key(key))
    }

    fn locate(&self, key: &str) -> PathBuf {
        self.layout().key(key)
    }
}

impl UploadBackend for FsBackend {
    fn create_upload(&self, id: &str) -> Result<()> {
        let dir = self.layout().upload_dir(id);
        fs::create_dir_all(&dir).map_err(StoreError::io("create directory", &dir))?;
        let data = self.layout().upload_data(id);
        File::create(&data).map_err(StoreError::io("create", &data))?;
        Ok(())
    }

    fn open_upload(&self, id: &str) -> Result<Option<Box<dyn UploadData>>> {
        let path = self.layout().upload_data(id);
        let file = match nofollow::read_options().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::Io { op: "open", path, source: e }),
        };
        Ok(Some(Box::new(FsUpload { be: self.clone(), file, path, writeback: None })))
    }

    fn remove_upload(&self, id: &str) -> Result<()> {
        let dir = self.layout().upload_dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Io { op: "remove", path: dir, source: e }),
        }
    }

    fn list_uploads(&self) -> Result<Vec<String>> {
        dir_names(&self.layout().root.join("registry").join("uploads"))
    }

    fn upload_created(&self, id: &str) -> Option<SystemTime> {
        fs::metadata(self.layout().upload_dir(id)).and_then(|m| m.modified()).ok()
    }
}

/// `registry/uploads/<id>/data`, open for reading and appending.
struct FsUpload {
    be: FsBackend,
    file: File,
    path: PathBuf,
    writeback: Option<WriteBack>,
}

impl UploadData for FsUpload {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn modified(&self) -> Option<SystemTime> {
        self.file.metadata().and_then(|m| m.modified()).ok()
    }

    fn try_lock(&mut self) -> io::Result<bool> {
        match self.file.try_lock() {
            Ok(()) => Ok(true),
            Err(fs::TryLockError::WouldBlock) => Ok(false),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn read_prefix(&mut self, len: u64, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        let mut r = (&self.file).take(len);
        let mut buf = vec![0u8; COPY_BUF];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            f(&buf[..n]);
        }
    }

    fn begin_append(&mut self, at: u64) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(at))?;
        // Without write-back, finishing a large upload waited for one fsync of all of it.
        self.writeback = Some(WriteBack::new(self.be.s.fsync, at));
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        match &mut self.writeback {
            Some(wb) => wb.wrote(&self.file, bytes.len() as u64),
            None => Ok(()),
        }
    }

    fn end_append(&mut self) -> io::Result<()> {
        match self.writeback.take() {
            Some(mut wb) => wb.finish(),
            None => Ok(()),
        }
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn commit(&mut self, d: &Digest) -> Result<bool> {
        self.be.seal(&self.file, &self.path)?;
        let existed = self.be.link_object(&self.path, d)?;
        if !existed {
            self.be.sync_objects()?;
        }
        Ok(existed)
    }

    fn location(&self) -> &Path {
        &self.path
    }
}
