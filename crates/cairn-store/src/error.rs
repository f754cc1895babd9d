//! The store's error type.

use std::io;
use std::path::PathBuf;

use crate::digest::{Digest, DigestError};
use crate::name::{NameError, RefFile};

/// Everything that can go wrong in the store. Each variant names its input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An I/O error on a path.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("open", "write", ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A blob is not in the store.
    #[error("blob {0} not found in the store")]
    BlobNotFound(Digest),
    /// Written bytes hash to another digest than the one expected.
    #[error("digest mismatch: expected {expected}, got {actual}; nothing was stored")]
    DigestMismatch {
        /// The digest the caller asked for.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// Fewer bytes than expected arrived.
    #[error("truncated blob {digest}: expected {expected} bytes, got {actual}; nothing was stored")]
    Truncated {
        /// The blob's digest.
        digest: Digest,
        /// Expected size.
        expected: u64,
        /// Received size.
        actual: u64,
    },
    /// A read range outside the blob.
    #[error("range {offset}+{len:?} is outside blob {digest} of {size} bytes")]
    Range {
        /// The blob.
        digest: Digest,
        /// Requested start.
        offset: u64,
        /// Requested length.
        len: Option<u64>,
        /// The blob's size.
        size: u64,
    },
    /// A malformed digest.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// An unsafe or malformed manifest name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// No manifest by this name or ref file.
    #[error("manifest {0:?} not found (see `cairn manifests`)")]
    ManifestNotFound(String),
    /// A manifest that does not parse or fails validation.
    #[error("invalid manifest {what}: {reason}")]
    InvalidManifest {
        /// Which manifest (ref file, peer, or path).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A ref file name not bound to its bytes: it must be
    /// `<inner name>-<first 12 hex of the SHA-256 of the bytes>.json`.
    #[error(
        "ref file {got} does not match its manifest: expected {expected} (the manifest's name, '-', the first 12 hex of the SHA-256 of its exact bytes, '.json'); send it under that name"
    )]
    RefFileMismatch {
        /// The ref file given.
        got: RefFile,
        /// The ref file the bytes call for.
        expected: String,
    },
    /// A ref file that already exists with other bytes; it is never replaced.
    #[error(
        "ref file {0} already exists with other bytes and is never replaced; save the new version under the ref file its bytes call for"
    )]
    RefConflict(RefFile),
    /// A symlink where the store expects a plain file (planted or corrupt).
    #[error(
        "{0} is a symlink, which the store never creates nor follows; remove it (`cairn verify` quarantines planted objects)"
    )]
    Symlink(PathBuf),
    /// A manifest lists objects the store does not hold.
    #[error("manifest {name:?} lists {} blob(s) the store does not hold: {}; store them first", missing.len(), list_digests(missing))]
    MissingBlobs {
        /// The manifest name.
        name: String,
        /// The absent digests.
        missing: Vec<Digest>,
    },
    /// Another process holds the data dir in a conflicting way.
    #[error("data dir {0} is locked by another cairn process; stop it or use another --data-dir")]
    Locked(PathBuf),
    /// The store was opened read-only.
    #[error(
        "store at {0} is open read-only, so this write was refused; write through a command or node that opens it for writing"
    )]
    ReadOnly(PathBuf),
    /// A blob that does not fit under the cache's cap even after evicting
    /// every blob that may go (the rest is pinned or being read).
    #[error(
        "the cache is full: blob {digest} needs {need} bytes and {used} of cache.max_bytes {max} are pinned (refs, registry tags) or being read; raise cache.max_bytes, or remove refs or tags, and retry"
    )]
    CacheFull {
        /// The blob.
        digest: Digest,
        /// Its size.
        need: u64,
        /// Bytes stored after the eviction.
        used: u64,
        /// `cache.max_bytes`.
        max: u64,
    },
    /// A checkout path that would escape the target directory.
    #[error("unsafe path {path:?} in manifest {name:?}: {reason}; nothing was written for it")]
    UnsafePath {
        /// The manifest.
        name: String,
        /// The object path as listed.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A file in a tree to snapshot that a manifest cannot hold.
    #[error("cannot snapshot {path}: {reason}")]
    SnapshotPath {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// A blocking store task panicked or was cancelled (see [`crate::Store::run`]):
    /// an internal error, never the caller's fault.
    #[error("a store task on the blocking pool failed: {0}; see the log, and retry")]
    Task(String),
    /// A checkout target that already exists and is not empty.
    #[error("checkout target {0} exists and is not empty; choose a new directory")]
    TargetNotEmpty(PathBuf),
    /// A partial blob (a swarm transfer, [`crate::Store::partial`]) refused
    /// an operation; `reason` says why and what to do.
    #[error("partial blob {digest}: {reason}")]
    Partial {
        /// The blob being transferred.
        digest: Digest,
        /// What was refused, and what to do.
        reason: String,
    },
    /// Not enough free space on the data dir's filesystem for a blob.
    #[error(
        "no room on disk for blob {digest}: it needs {need} bytes and the data dir has {free} free, {reserve} of which must stay free; free disk space or lower the cache's max_bytes, and retry"
    )]
    DiskFull {
        /// The blob.
        digest: Digest,
        /// Its size.
        need: u64,
        /// Bytes free on the filesystem.
        free: u64,
        /// Bytes kept free (`cache.min_free`).
        reserve: u64,
    },
}

fn list_digests(d: &[Digest]) -> String {
    let mut s: Vec<String> = d.iter().take(10).map(|d| d.to_string()).collect();
    if d.len() > 10 {
        s.push(format!("... and {} more", d.len() - 10));
    }
    s.join(", ")
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }

    /// Builds the error for a manifest that could not be found.
    pub fn manifest_not_found(r: &RefFile) -> Self {
        StoreError::ManifestNotFound(r.to_string())
    }

    /// True for "not found" errors (blob or manifest; a planted symlink
    /// stands for nothing the store holds).
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::BlobNotFound(_) | StoreError::ManifestNotFound(_) | StoreError::Symlink(_))
            || matches!(self, StoreError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// True for errors caused by bad input rather than the machine.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            StoreError::Digest(_)
                | StoreError::Name(_)
                | StoreError::DigestMismatch { .. }
                | StoreError::Truncated { .. }
                | StoreError::Range { .. }
                | StoreError::InvalidManifest { .. }
                | StoreError::RefFileMismatch { .. }
                | StoreError::UnsafePath { .. }
                | StoreError::TargetNotEmpty(_)
                | StoreError::SnapshotPath { .. }
        )
    }
}

/// Result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
