//! The OCI registry's metadata on top of the CAS.
//!
//! Blobs and manifests are ordinary objects (the OCI digest is the CAS
//! address). Everything else (which repository holds which manifest and
//! blob, tags, referrers, upload sessions) is metadata documents under
//! `registry/` keys ([`crate::backend::keys`]), each written atomically, so
//! several processes can share a data dir and a crash leaves either the old
//! or the new document. [`crate::backend::fs`] draws the tree on disk.
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
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use error::{OciError, OciResult};
pub use index::PushedManifest;
pub use manifest::{Descriptor, ParsedManifest};
pub use repo::{Reference, RepoName, RepoNameError, Tag, TagError};
pub use upload::{Append, UploadId};

use crate::digest::Hasher;
use crate::error::Result;
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
    /// Writes a metadata document atomically (see [`crate::backend::MetaBackend::put`]).
    pub(crate) fn write_atomic(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.check_writable()?;
        self.backend().put(key, bytes)
    }

    /// Writes a metadata document only over the version `seen` (see
    /// [`crate::backend::MetaBackend::put_if`]); false when it changed.
    pub(crate) fn write_if(&self, key: &str, bytes: &[u8], seen: Option<crate::oci::cache::Stamp>) -> Result<bool> {
        self.check_writable()?;
        self.backend().put_if(key, bytes, seen)
    }

    /// A metadata document as text; `None` when absent. The registry never
    /// makes symlinks: a planted one stands for nothing.
    pub(crate) fn read_meta(&self, key: &str) -> Result<Option<String>> {
        let bytes = match self.backend().get(key, u64::MAX - 1) {
            Ok(b) => b,
            Err(crate::StoreError::Symlink(p)) => {
                tracing::warn!(path = %p.display(), "ignoring a symlink in the registry metadata");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        bytes.map(|b| self.meta_text(key, b)).transpose()
    }

    /// Metadata bytes as text.
    pub(crate) fn meta_text(&self, key: &str, b: Vec<u8>) -> Result<String> {
        String::from_utf8(b).map_err(|e| crate::StoreError::Io {
            op: "read",
            path: self.backend().locate(key),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }

    /// All the bytes of a blob (small ones: manifests).
    pub(crate) fn read_blob(&self, d: &crate::Digest) -> Result<Vec<u8>> {
        let mut r = self.get(d)?;
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut out).map_err(crate::StoreError::io("read", r.location().to_owned()))?;
        Ok(out)
    }

    /// Removes a metadata document; true when it existed.
    pub(crate) fn remove_meta(&self, key: &str) -> Result<bool> {
        self.backend().delete(key)
    }
}
