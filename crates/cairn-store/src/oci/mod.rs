//! The OCI registry's metadata on top of the CAS.
//!
//! Blobs and manifests are ordinary objects (the OCI digest is the CAS
//! address). Everything else (which repository holds which manifest and
//! blob, tags, referrers, upload sessions) is plain files under
//! `registry/`, each written to `tmp/`, fsynced and renamed into place, so
//! several processes can share a data dir and a crash leaves either the old
//! or the new file. [`crate::layout`] draws the tree.
//!
//! - [`repo`]: repository names, tags and references (the spec's grammar).
//! - [`manifest`]: manifest media types and parsing.
//! - [`index`]: manifests, tags, blob links, catalog.
//! - [`referrers`]: the referrers API's data.
//! - [`upload`]: resumable upload sessions.
//! - [`roots`]: what the registry keeps alive in a GC.
//! - [`cache`]: tags and small manifests in memory, checked against disk.

pub mod cache;
pub mod error;
pub mod index;
pub mod manifest;
pub mod referrers;
pub mod repo;
pub mod roots;
pub mod upload;

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use error::{OciError, OciResult};
pub use index::PushedManifest;
pub use manifest::{Descriptor, ParsedManifest};
pub use repo::{Reference, RepoName, RepoNameError, Tag, TagError};
pub use upload::{Append, UploadId};

use crate::digest::Hasher;
use crate::error::{Result, StoreError};
use crate::store::Store;

/// Default lifetime of an idle upload session (no new bytes for this long).
pub const DEFAULT_UPLOAD_TTL: Duration = Duration::from_secs(3600);
/// Default cap on open upload sessions, all clients together.
pub const DEFAULT_MAX_UPLOAD_SESSIONS: usize = 1024;
/// Default cap on open upload sessions of one client address.
pub const DEFAULT_MAX_UPLOAD_SESSIONS_PER_CLIENT: usize = 64;

/// Registry settings.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// An upload with no new bytes for this long is forgotten and its data removed.
    pub upload_ttl: Duration,
    /// Open upload sessions allowed at once, all clients together.
    pub max_upload_sessions: usize,
    /// Open upload sessions allowed at once for one client address (an IPv6 client by its /64).
    pub max_upload_sessions_per_client: usize,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            upload_ttl: DEFAULT_UPLOAD_TTL,
            max_upload_sessions: DEFAULT_MAX_UPLOAD_SESSIONS,
            max_upload_sessions_per_client: DEFAULT_MAX_UPLOAD_SESSIONS_PER_CLIENT,
        }
    }
}

/// A handle on the registry of one store; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    store: Store,
    opts: RegistryOptions,
    // Hash state of uploads this process appended to, keyed by upload id,
    // with the length it covers; rebuilt from the data file when it is
    // absent or stale (restart, another process appended).
    hashers: Arc<Mutex<HashMap<String, (u64, Hasher)>>>,
    // When this handle last swept expired uploads (seconds since the epoch).
    last_sweep: Arc<AtomicU64>,
    // Tags and small manifests read before, for manifest GET.
    cache: Arc<cache::ManifestCache>,
    // Open upload sessions and who opened them, for the session caps.
    sessions: Arc<Mutex<upload::Sessions>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("store", &self.store).field("opts", &self.opts).finish_non_exhaustive()
    }
}

impl Registry {
    /// The registry of `store`. A writable store also drops expired uploads now.
    pub fn new(store: Store, opts: RegistryOptions) -> OciResult<Registry> {
        let r = Registry {
            store,
            opts,
            hashers: Arc::default(),
            last_sweep: Arc::default(),
            cache: Arc::default(),
            sessions: Arc::default(),
        };
        if r.store.check_writable().is_ok() {
            r.sweep_uploads()?;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs());
            r.last_sweep.store(now.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
            r.count_open_uploads()?;
        }
        Ok(r)
    }

    /// This handle with a fresh manifest cache that keeps files changed at
    /// least `settle` ago (default [`cache::SETTLED`]). Zero lets tests see
    /// the cache at work on files they just wrote; a server keeps the default.
    pub fn with_cache_settle(mut self, settle: Duration) -> Registry {
        self.cache = Arc::new(cache::ManifestCache::new(settle));
        self
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The settings.
    pub fn options(&self) -> &RegistryOptions {
        &self.opts
    }
}

impl Store {
    /// Writes `bytes` to `path` so readers see the old file or the new one,
    /// never a part: temp file in `tmp/`, fsync, rename, fsync the directory.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.check_writable()?;
        let dir = path.parent().ok_or_else(|| StoreError::Io {
            op: "write",
            path: path.to_owned(),
            source: io::Error::other("path has no parent directory"),
        })?;
        fs::create_dir_all(dir).map_err(StoreError::io("create directory", dir))?;
        let tmp = self.layout().tmp_dir().join(format!("{:016x}.meta", rand::random::<u64>()));
        let res = (|| {
            let mut f =
                OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(StoreError::io("create", &tmp))?;
            f.write_all(bytes).map_err(StoreError::io("write", &tmp))?;
            if self.inner.opts.fsync {
                f.sync_all().map_err(StoreError::io("fsync", &tmp))?;
            }
            fs::rename(&tmp, path).map_err(StoreError::io("rename into place", path))
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res?;
        self.sync_dir(dir)
    }
}

/// Removes a file; true when it existed.
pub(crate) fn remove_if_present(p: &Path) -> Result<bool> {
    match fs::remove_file(p) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::Io { op: "remove", path: p.to_owned(), source: e }),
    }
}

/// Names of the entries of `dir` (UTF-8 ones), sorted; an absent dir is
/// empty. Also lists `refs/` for manifests and GC.
pub(crate) fn dir_names(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::Io { op: "read directory", path: dir.to_owned(), source: e }),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(StoreError::io("read directory", dir))?;
        if let Some(n) = e.file_name().to_str() {
            out.push(n.to_owned());
        }
    }
    out.sort();
    Ok(out)
}
