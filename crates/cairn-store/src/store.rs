//! Opening a data directory: creation, locking, crash clean-up.

use std::path::Path;
use std::sync::Arc;

use crate::backend::fs::FsBackend;
use crate::backend::mem::MemBackend;
use crate::backend::{Backend, Guard};
use crate::error::{Result, StoreError};

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

/// A handle on one store; cheap to clone and share across threads.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    backend: Box<dyn Backend>,
    pub(crate) opts: StoreOptions,
    /// The bounded cache's state, once [`Store::enable_cache`] turned it on.
    pub(crate) cache: std::sync::OnceLock<Arc<crate::cache::state::CacheState>>,
    /// The durable tier, set by [`Store::open_tiered`].
    pub(crate) tier: std::sync::OnceLock<Arc<crate::tier::Tier>>,
    /// Told about every blob a client pushes (the replicator).
    pub(crate) local_commit: crate::held::HookSlot,
    /// Swarm transfers in progress ([`Store::partial`]).
    pub(crate) partials: crate::partial::Registry,
}

impl Store {
    /// Opens (creating if needed) the store at `root` for reading and writing.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(root, StoreOptions::default())
    }

    /// Opens the data dir at `root` with `opts` (the filesystem backend).
    ///
    /// Read-write: creates the directories, takes a shared lock, and when no
    /// other process has the dir open, removes temp files left by a crash.
    pub fn open_with(root: impl AsRef<Path>, opts: StoreOptions) -> Result<Store> {
        let fs = FsBackend::open(root.as_ref(), &opts)?;
        Ok(Store::with_backend(Box::new(fs), opts))
    }

    /// A new, empty store held in memory (the reference backend).
    pub fn in_memory() -> Store {
        Store::with_backend(Box::new(MemBackend::new()), StoreOptions::default())
    }

    /// A store over any [`Backend`].
    pub fn with_backend(backend: Box<dyn Backend>, opts: StoreOptions) -> Store {
        Store {
            inner: Arc::new(Inner {
                backend,
                opts,
                cache: std::sync::OnceLock::new(),
                tier: std::sync::OnceLock::new(),
                local_commit: Default::default(),
                partials: Default::default(),
            }),
        }
    }

    /// The backend.
    pub(crate) fn backend(&self) -> &dyn Backend {
        &*self.inner.backend
    }

    /// Where the store is (the data directory, or `<memory>`).
    pub fn root(&self) -> &Path {
        self.inner.backend.root()
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        match self.inner.opts.access {
            Access::ReadWrite => Ok(()),
            Access::ReadOnly => Err(StoreError::ReadOnly(self.root().to_owned())),
        }
    }

    /// Shared GC lock: held while a put or manifest save makes data visible,
    /// so a GC sweep never deletes a blob between its check and its use.
    pub(crate) fn gc_shared(&self) -> Result<Guard> {
        self.inner.backend.lock_gc(false)
    }

    /// Exclusive GC lock, for the delete phase of a GC.
    pub(crate) fn gc_exclusive(&self) -> Result<Guard> {
        self.inner.backend.lock_gc(true)
    }

    /// A cheap check that the store answers (a stat of the objects directory).
    pub fn probe(&self) -> Result<()> {
        self.inner.backend.probe()
    }

    /// Bytes free for new blobs, when the backend knows (a local filesystem).
    pub fn free_space(&self) -> Option<std::io::Result<u64>> {
        self.inner.backend.fs().map(FsBackend::free_space)
    }

    /// Uncommitted blob writes and other temporaries the store holds now
    /// (0 when no write is in progress and none leaked).
    pub fn temporaries(&self) -> Result<usize> {
        self.inner.backend.temporaries()
    }

    /// The error for a failed write of a temp blob (e.g. by a
    /// [`crate::BlobWriter`] fed from a network body).
    pub fn write_error(&self, source: std::io::Error) -> StoreError {
        StoreError::Io { op: "write temp blob", path: self.root().join("tmp"), source }
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
