//! The data directory, and the only place that builds paths inside it.
//!
//! ```text
//! <data dir>/
//!   objects/<64 hex>            one blob per file, plain bytes, read-only (original layout)
//!   refs/<name>-<12 hex>.json   blob manifests (original layout)
//!   tmp/<random>.part           blobs being written; swept when the store opens unshared
//!   quarantine/<64 hex>         blobs that failed `verify`; never served
//!   registry/                   OCI registry metadata (tags, repositories, uploads)
//!   .cairn.lock                 shared by every writer, exclusive only for the temp sweep
//!   .cairn-gc.lock              shared by put/manifest save, exclusive during a GC sweep
//! ```

use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::name::RefFile;

/// Paths inside one data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// A layout rooted at `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }
    /// The data directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `objects/`.
    pub fn objects_dir(&self) -> PathBuf {
        self.root.join("objects")
    }
    /// `objects/<hex>`.
    pub fn object(&self, d: &Digest) -> PathBuf {
        self.objects_dir().join(d.to_string())
    }
    /// `refs/`.
    pub fn refs_dir(&self) -> PathBuf {
        self.root.join("refs")
    }
    /// `refs/<ref_file>`.
    pub fn ref_path(&self, r: &RefFile) -> PathBuf {
        self.refs_dir().join(r.as_str())
    }
    /// `tmp/`: same filesystem as `objects/`, so a rename or link is atomic.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// `quarantine/`.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join("quarantine")
    }
    /// `quarantine/<hex>`.
    pub fn quarantined(&self, d: &Digest) -> PathBuf {
        self.quarantine_dir().join(d.to_string())
    }
    /// `registry/`: OCI registry metadata.
    pub fn registry_dir(&self) -> PathBuf {
        self.root.join("registry")
    }
    /// The data-dir lock file.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join(".cairn.lock")
    }
    /// The GC lock file.
    pub fn gc_lock_file(&self) -> PathBuf {
        self.root.join(".cairn-gc.lock")
    }
    /// Directories created when the store opens.
    pub(crate) fn dirs(&self) -> [PathBuf; 4] {
        [self.objects_dir(), self.refs_dir(), self.tmp_dir(), self.quarantine_dir()]
    }
}
