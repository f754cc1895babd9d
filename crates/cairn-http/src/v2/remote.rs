//! The seam for the mirror: a source consulted when a blob or a manifest
//! by digest is not in the local store. Without one, a miss is a 404.

use cairn_store::Digest;
use cairn_store::oci::{RepoName, Tag};
use futures_util::future::BoxFuture;

/// Why a remote fetch failed (logged; the client sees the miss).
pub type RemoteError = Box<dyn std::error::Error + Send + Sync>;

/// Somewhere to fetch missing content from (peers, an upstream registry).
/// Implementations verify bytes against `digest` before storing them.
pub trait RemoteSource: Send + Sync + 'static {
    /// Brings blob `digest` of `repo` into the local store. `Ok(true)` when
    /// it is now stored; `Ok(false)` when no source has it.
    fn fetch_blob<'a>(&'a self, repo: &'a RepoName, digest: &'a Digest) -> BoxFuture<'a, Result<bool, RemoteError>>;

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
