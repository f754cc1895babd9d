//! What the `/v2` read handlers call: one interface for blobs and
//! manifests ([`RegistryStore`]), whether the repository is only local
//! ([`LocalRegistry`], over the store's registry) or mirrored
//! ([`crate::mirror::Mirrored`], which wraps a [`LocalRegistry`] and
//! fetches what it lacks). Writes (uploads, pushes, deletes) and listings
//! go to the local [`Registry`] in either case.

use bytes::Bytes;
use cairn_cluster::stream::file_stream;
use cairn_store::oci::index::StoredManifest;
use cairn_store::oci::{OciError, Reference, Registry, RepoName};
use cairn_store::{Digest, StoreError};
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, StreamExt};

/// Why a remote source failed (rather than found nothing), or why a blob
/// stream was cut: logged, and answered with the status
/// [`crate::v2::errors::remote_status`] gives it.
pub type RemoteError = Box<dyn std::error::Error + Send + Sync>;

/// A blob's bytes on their way to the client. An `Err` item means the body
/// is cut: the response must be aborted, never ended cleanly.
pub struct BlobStream {
    /// How many bytes the stream sends, when known before them.
    pub len: Option<u64>,
    /// True when the bytes come from the local store, so byte ranges of
    /// the blob can be served (false for a miss streamed while fetched).
    pub stored: bool,
    /// Where the bytes come from: `Local` when `stored`.
    pub source: cairn_cluster::fetch::SourceKind,
    /// The bytes.
    pub stream: BoxStream<'static, Result<Bytes, RemoteError>>,
}

/// Why a read failed. `v2/errors.rs` gives each its status.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The local registry's answer, e.g. unknown (also after every remote
    /// source said it does not have it), or a store failure.
    #[error(transparent)]
    Registry(#[from] OciError),
    /// A remote source failed, rather than found nothing, for `subject`.
    #[error("fetching {kind} {subject} failed: {source}")]
    Remote {
        /// `digest` or `tag`.
        kind: &'static str,
        /// The digest (`sha256:...`) or `repo:tag`.
        subject: String,
        /// What failed, naming the upstream or peer.
        source: RemoteError,
    },
    /// A registry call on the blocking pool panicked or was cancelled.
    #[error("registry worker failed: {0}")]
    Worker(String),
}

impl ReadError {
    /// True when the local registry does not have the blob.
    pub fn is_blob_unknown(&self) -> bool {
        matches!(self, ReadError::Registry(OciError::BlobUnknown { .. } | OciError::Store(StoreError::BlobNotFound(_))))
    }

    /// True when the local registry does not have the manifest.
    pub fn is_manifest_unknown(&self) -> bool {
        matches!(self, ReadError::Registry(OciError::ManifestUnknown { .. }))
    }
}

/// A read's answer, on its way.
pub type ReadFuture<'a, T> = BoxFuture<'a, Result<T, ReadError>>;

/// The blobs and manifests of a registry as the `/v2` read handlers see them.
pub trait RegistryStore: Send + Sync + 'static {
    /// The size of blob `d` of `repo`. A mirror brings a missing blob in first.
    fn stat_blob<'a>(&'a self, repo: &'a RepoName, d: &'a Digest) -> ReadFuture<'a, u64>;

    /// The whole blob `d` of `repo`. A mirror streams a missing blob to the
    /// caller while it fetches, verifies and stores it.
    fn open_blob<'a>(&'a self, repo: &'a RepoName, d: &'a Digest) -> ReadFuture<'a, BlobStream>;

    /// `len` bytes from `start` of blob `d` of `repo`, one that
    /// [`RegistryStore::stat_blob`] found (so it is stored).
    fn read_blob<'a>(&'a self, repo: &'a RepoName, d: &'a Digest, start: u64, len: u64) -> ReadFuture<'a, BlobStream>;

    /// The manifest `r` names in `repo`. A mirror resolves a tag it lacks
    /// remotely (without storing the tag) and fetches the manifest by digest.
    fn get_manifest<'a>(&'a self, repo: &'a RepoName, r: &'a Reference) -> ReadFuture<'a, StoredManifest>;
}

/// The repositories of the local registry, and nothing else.
#[derive(Clone)]
pub struct LocalRegistry {
    registry: Registry,
}

impl LocalRegistry {
    /// Reads of `registry`.
    pub fn new(registry: Registry) -> Self {
        LocalRegistry { registry }
    }

    /// The registry read.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Size of a blob, without a blocking-pool hop: two stats inline cost
    /// less, and HEAD rate is what clients checking layers depend on.
    fn size(&self, repo: &RepoName, d: &Digest) -> Result<u64, ReadError> {
        Ok(self.registry.blob_size(repo, d)?)
    }

    async fn read(&self, repo: &RepoName, d: Digest, start: u64, len: u64) -> Result<BlobStream, ReadError> {
        let (reg, repo) = (self.registry.clone(), repo.clone());
        let reader = blocking(move || reg.open_blob(&repo, &d, start, Some(len))).await?;
        let len = reader.remaining();
        let stream = file_stream(reader).map(|r| r.map_err(|e| Box::new(e) as RemoteError)).boxed();
        Ok(BlobStream { len: Some(len), stored: true, source: cairn_cluster::fetch::SourceKind::Local, stream })
    }

    /// Links blob `d`, now in the store, to `repo`, and returns its size.
    pub async fn link_blob(&self, repo: &RepoName, d: Digest) -> Result<u64, ReadError> {
        let (reg, repo) = (self.registry.clone(), repo.clone());
        blocking(move || {
            reg.link_blob(&repo, &d)?;
            reg.blob_size(&repo, &d)
        })
        .await
    }

    /// The manifest a tag of `repo` points at here, `None` when the tag is
    /// not here. The manifest itself may be missing (a durable tier's
    /// bucket holds the tag, another node pushed the bytes).
    pub async fn tag_target(&self, repo: &RepoName, tag: &cairn_store::oci::Tag) -> Result<Option<Digest>, ReadError> {
        let (reg, repo, tag) = (self.registry.clone(), repo.clone(), tag.clone());
        blocking(move || reg.tag_target(&repo, &tag)).await
    }

    /// Links manifest `d`, now in the store, to `repo`, and returns it.
    pub async fn link_manifest(
        &self,
        repo: &RepoName,
        d: Digest,
        media_type: String,
    ) -> Result<StoredManifest, ReadError> {
        let (reg, repo) = (self.registry.clone(), repo.clone());
        blocking(move || {
            reg.link_manifest(&repo, &d, &media_type)?;
            reg.get_manifest(&repo, &Reference::Digest(d))
        })
        .await
    }
}

impl RegistryStore for LocalRegistry {
    fn stat_blob<'a>(&'a self, repo: &'a RepoName, d: &'a Digest) -> ReadFuture<'a, u64> {
        Box::pin(async move { self.size(repo, d) })
    }

    fn open_blob<'a>(&'a self, repo: &'a RepoName, d: &'a Digest) -> ReadFuture<'a, BlobStream> {
        Box::pin(async move {
            // A miss answers without a blocking-pool hop.
            let size = self.size(repo, d)?;
            self.read(repo, *d, 0, size).await
        })
    }

    fn read_blob<'a>(&'a self, repo: &'a RepoName, d: &'a Digest, start: u64, len: u64) -> ReadFuture<'a, BlobStream> {
        Box::pin(self.read(repo, *d, start, len))
    }

    fn get_manifest<'a>(&'a self, repo: &'a RepoName, r: &'a Reference) -> ReadFuture<'a, StoredManifest> {
        Box::pin(async move {
            // A cache hit costs a few stats: cheaper inline than a blocking-pool hop.
            if let Some(m) = self.registry.cached_manifest(repo, r) {
                return Ok(m);
            }
            let (reg, repo, r) = (self.registry.clone(), repo.clone(), r.clone());
            blocking(move || reg.get_manifest(&repo, &r)).await
        })
    }
}

/// Runs a registry call on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, OciError> + Send + 'static,
) -> Result<T, ReadError> {
    match cairn_store::aio::blocking(f).await {
        Ok(r) => Ok(r?),
        Err(e) => Err(ReadError::Worker(e.to_string())),
    }
}
