//! The seam for the mirror: a source consulted when a blob or a manifest
//! by digest is not in the local store. Without one, a miss is a 404.

use bytes::Bytes;
use cairn_store::Digest;
use cairn_store::oci::{RepoName, Tag};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

/// Why a remote fetch failed (logged; the client sees the miss).
pub type RemoteError = Box<dyn std::error::Error + Send + Sync>;

/// A blob streaming in from elsewhere while it is verified and stored. An
/// `Err` item means the body is cut: the response must be aborted, never
/// ended cleanly.
pub struct RemoteBody {
    /// Its length, when known before the bytes.
    pub size: Option<u64>,
    /// The bytes.
    pub stream: BoxStream<'static, Result<Bytes, RemoteError>>,
}

/// Somewhere to fetch missing content from (peers, an upstream registry).
/// Implementations verify bytes against `digest` before storing them.
pub trait RemoteSource: Send + Sync + 'static {
    /// Brings blob `digest` of `repo` into the local store. `Ok(true)` when
    /// it is now stored; `Ok(false)` when no source has it.
    fn fetch_blob<'a>(&'a self, repo: &'a RepoName, digest: &'a Digest) -> BoxFuture<'a, Result<bool, RemoteError>>;

    /// Streams blob `digest` of `repo` to the caller while it is fetched,
    /// verified and stored; `Ok(None)` when no source has it. The blob is
    /// stored (and [`RemoteSource::fetch_blob`] returns at once) soon after
    /// the stream ends.
    fn open_blob<'a>(
        &'a self,
        repo: &'a RepoName,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<RemoteBody>, RemoteError>>;

    /// Brings manifest `digest` of `repo` into the local store; returns its
    /// media type when it is now stored, `None` when no source has it.
    fn fetch_manifest<'a>(
        &'a self,
        repo: &'a RepoName,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<String>, RemoteError>>;

    /// The manifest digest `repo:tag` points to elsewhere (peers, an
    /// upstream), for a tag the local registry lacks; `None` when no source
    /// knows it. The tag is not stored locally, so it is asked again later.
    fn resolve_tag<'a>(
        &'a self,
        _repo: &'a RepoName,
        _tag: &'a Tag,
    ) -> BoxFuture<'a, Result<Option<Digest>, RemoteError>> {
        Box::pin(async { Ok(None) })
    }
}
