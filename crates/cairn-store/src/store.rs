//! Opening a data directory: creation, locking, crash clean-up.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Result, StoreError};
use crate::layout::Layout;

/// How a process uses the data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Reads only; takes no lock and creates nothing.
    ReadOnly,
    /// Reads and writes. Writers share the data dir (every write is an
    /// atomic rename or link), and the first one in sweeps crash leftovers.
    #[default]
    ReadWrite,
}

/// Options for [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Read-only or read-write.
    pub access: Access,
    /// fsync blobs and directories before they become visible. Only tests
    /// that measure something else should turn this off.
    pub fsync: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { access: Access::ReadWrite, fsync: true }
    }
}

/// A handle on one data directory; cheap to clone and share across threads.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) layout: Layout,
    pub(crate) opts: StoreOptions,
    // Held for the life of the handle: a shared flock tells other openers
    // that temp files may belong to a live writer.
    _lock: Option<File>,
    pub(crate) gc_lock_path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `root` for reading and writing.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(root, StoreOptions::default())
    }

    /// Opens the store at `root` with `opts`.
    ///
    /// Read-write: creates the directories, takes a shared lock, and when no
    /// other process has the dir open, removes temp files left by a crash.
    pub fn open_with(root: impl AsRef<Path>, opts: StoreOptions) -> Result<Store> {
        let layout = Layout::new(root.as_ref());
        let lock = match opts.access {
            Access::ReadOnly => {
                if !layout.root().is_dir() {
                    return Err(StoreError::Io {
                        op: "open data dir",
                        path: layout.root().to_owned(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "no such directory (nothing has been stored yet?)",
                        ),
                    });
                }
                None
            }
            Access::ReadWrite => {
                for d in layout.dirs() {
                    fs::create_dir_all(&d).map_err(StoreError::io("create directory", &d))?;
                }
                let path = layout.lock_file();
                let f = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(StoreError::io("open lock file", &path))?;
                // Exclusive means no live writer: any temp file is a crash leftover.
                if f.try_lock().is_ok() {
                    sweep_tmp(&layout)?;
                    f.unlock().map_err(StoreError::io("unlock", &path))?;
                }
                f.lock_shared().map_err(StoreError::io("lock", &path))?;
                Some(f)
            }
        };
        let gc_lock_path = layout.gc_lock_file();
        Ok(Store { inner: Arc::new(Inner { layout, opts, _lock: lock, gc_lock_path }) })
    }

    /// The paths of this store.
    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        self.inner.layout.root()
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        match self.inner.opts.access {
            Access::ReadWrite => Ok(()),
            Access::ReadOnly => Err(StoreError::ReadOnly(self.root().to_owned())),
        }
    }

    /// Shared GC lock: held while a put or manifest save makes data visible,
    /// so a GC sweep never deletes a blob between its check and its use.
    pub(crate) fn gc_shared(&self) -> Result<File> {
        self.gc_lock(false)
    }

    /// Exclusive GC lock, for the delete phase of a GC.
    pub(crate) fn gc_exclusive(&self) -> Result<File> {
        self.gc_lock(true)
    }

    fn gc_lock(&self, exclusive: bool) -> Result<File> {
        let p = &self.inner.gc_lock_path;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(p)
            .map_err(StoreError::io("open gc lock", p))?;
        if exclusive { f.lock() } else { f.lock_shared() }.map_err(StoreError::io("lock", p))?;
        Ok(f)
    }

    pub(crate) fn sync_dir(&self, dir: &Path) -> Result<()> {
        if self.inner.opts.fsync {
            File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::io("fsync directory", dir))?;
        }
        Ok(())
    }
}

/// Counts for `cairn status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Blobs in `objects/`.
    pub blobs: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Readable manifests in `refs/`.
    pub refs: u64,
}

impl Store {
    /// Blob count, total bytes and manifest count. Blobs removed while this
    /// runs (GC) are skipped, not reported as errors.
    pub fn stats(&self) -> Result<Stats> {
        let mut st = Stats::default();
        for d in self.list()? {
            match self.size(&d?) {
                Ok(n) => {
                    st.blobs += 1;
                    st.bytes += n;
                }
                Err(StoreError::BlobNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        st.refs = self.list_manifests()?.len() as u64;
        Ok(st)
    }
}

fn sweep_tmp(layout: &Layout) -> Result<()> {
    let dir = layout.tmp_dir();
    let entries = fs::read_dir(&dir).map_err(StoreError::io("read directory", &dir))?;
    let mut removed = 0usize;
    for e in entries {
        let e = e.map_err(StoreError::io("read directory", &dir))?;
        let p = e.path();
        let res = if e.file_type().is_ok_and(|t| t.is_dir()) { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        res.map_err(StoreError::io("remove leftover temp file", &p))?;
        removed += 1;
    }
    if removed > 0 {
        tracing::info!(removed, dir = %dir.display(), "removed temp files left by an earlier crash");
    }
    Ok(())
}
