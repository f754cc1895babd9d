//! The cluster-wide `/v2` mirror, on the HTTP side: [`Mirrored`] wraps
//! the local registry's reads ([`LocalRegistry`]) and, on a miss, asks a
//! [`RemoteSource`]: on a node, [`ClusterRemote`], the cluster pipeline
//! (peers, then origins; registry origins get the repository). Where a tag
//! the node lacks is looked up is the cluster's business
//! ([`cairn_cluster::mirror`]); the answer peers give each other is
//! `/v1/oci/tag` ([`crate::v1::oci`]).

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use cairn_cluster::fetch::SourceKind;
use cairn_cluster::upstream::{ObjectKind, OciHint};
use cairn_cluster::{Cluster, ClusterError};
use cairn_store::oci::index::StoredManifest;
use cairn_store::oci::manifest::{MAX_MANIFEST_SIZE, parse_manifest};
use cairn_store::oci::{Reference, RepoName, Tag};
use cairn_store::{Digest, Store};
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, StreamExt};

pub use crate::v2::store::RemoteError;
use crate::v2::store::{BlobStream, LocalRegistry, ReadError, ReadFuture, RegistryStore};

/// A blob streaming in from elsewhere while it is verified and stored. An
/// `Err` item means the body is cut: the response must be aborted, never
/// ended cleanly.
pub struct RemoteBody {
    /// Its length, when known before the bytes.
    pub size: Option<u64>,
    /// Where it comes from (for the metrics).
    pub source: SourceKind,
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

/// A mirrored registry: the local one, and a remote source for what it
/// lacks. What is fetched is stored and linked to the repository it was
/// asked for in, so the next read is local; tags resolved remotely are not
/// stored (they are asked again, the upstream being their authority).
pub struct Mirrored {
    local: LocalRegistry,
    remote: Arc<dyn RemoteSource>,
}

impl Mirrored {
    /// `local`, falling back to `remote` on a miss.
    pub fn new(local: LocalRegistry, remote: Arc<dyn RemoteSource>) -> Self {
        Mirrored { local, remote }
    }

    /// Brings blob `d` (its local miss is `missing`) in through the remote
    /// source, links it to `repo`, and returns its size.
    async fn fetch_blob(&self, repo: &RepoName, d: Digest, missing: ReadError) -> Result<u64, ReadError> {
        match self.remote.fetch_blob(repo, &d).await {
            Ok(true) => self.local.link_blob(repo, d).await,
            Ok(false) => Err(missing),
            Err(e) => Err(remote_failed(repo, "digest", d.oci(), e)),
        }
    }

    /// Streams blob `d` (its local miss is `missing`) to the caller while
    /// the remote source fetches, verifies and stores it (a bad source cuts
    /// the stream), then links it to `repo`.
    async fn stream_blob(&self, repo: &RepoName, d: Digest, missing: ReadError) -> Result<BlobStream, ReadError> {
        let body = match self.remote.open_blob(repo, &d).await {
            Ok(Some(b)) => b,
            Ok(None) => return Err(missing),
            Err(e) => return Err(remote_failed(repo, "digest", d.oci(), e)),
        };
        // Joins the transfer streaming now, and links the blob to the
        // repository once it is stored, without delaying the response's end.
        let (remote, local, repo) = (Arc::clone(&self.remote), self.local.clone(), repo.clone());
        tokio::spawn(async move {
            match remote.fetch_blob(&repo, &d).await {
                Ok(true) => {
                    if let Err(e) = local.link_blob(&repo, d).await {
                        tracing::warn!(digest = %d.oci(), error = %e, "linking a mirrored blob failed");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(digest = %d.oci(), error = %e, "a mirrored blob was not stored"),
            }
        });
        Ok(BlobStream { len: body.size, stored: false, source: body.source, stream: body.stream })
    }

    /// Manifest `r` of `repo` (its local miss is `missing`): a tag resolved
    /// remotely, then the manifest fetched by digest and linked to `repo`.
    async fn fetch_manifest(
        &self,
        repo: &RepoName,
        r: &Reference,
        missing: ReadError,
    ) -> Result<StoredManifest, ReadError> {
        let d = match r {
            Reference::Digest(d) => *d,
            // A tag known here whose manifest is not (the bucket's tag of a
            // push made on another node) is fetched by digest.
            Reference::Tag(t) => match self.local.tag_target(repo, t).await {
                Ok(Some(d)) => d,
                _ => match self.remote.resolve_tag(repo, t).await {
                    Ok(Some(d)) => d,
                    Ok(None) => return Err(missing),
                    Err(e) => return Err(remote_failed(repo, "tag", format!("{repo}:{}", t.as_str()), e)),
                },
            },
        };
        if let Reference::Tag(_) = r
            && let Ok(m) = self.local.get_manifest(repo, &Reference::Digest(d)).await
        {
            return Ok(m);
        }
        match self.remote.fetch_manifest(repo, &d).await {
            Ok(Some(media_type)) => self.local.link_manifest(repo, d, media_type).await,
            Ok(None) => Err(missing),
            Err(e) => Err(remote_failed(repo, "digest", d.oci(), e)),
        }
    }
}

/// A remote source that failed rather than found nothing: logged here,
/// answered with the status `v2/errors.rs` gives it.
fn remote_failed(repo: &RepoName, kind: &'static str, subject: String, source: RemoteError) -> ReadError {
    tracing::warn!(repo = %repo, kind, subject = %subject, error = %source, "remote fetch failed");
    ReadError::Remote { kind, subject, source }
}

impl RegistryStore for Mirrored {
    fn stat_blob<'a>(&'a self, repo: &'a RepoName, d: &'a Digest) -> ReadFuture<'a, u64> {
        Box::pin(async move {
            match self.local.stat_blob(repo, d).await {
                Err(e) if e.is_blob_unknown() => self.fetch_blob(repo, *d, e).await,
                r => r,
            }
        })
    }

    fn open_blob<'a>(&'a self, repo: &'a RepoName, d: &'a Digest) -> ReadFuture<'a, BlobStream> {
        Box::pin(async move {
            match self.local.open_blob(repo, d).await {
                Err(e) if e.is_blob_unknown() => self.stream_blob(repo, *d, e).await,
                r => r,
            }
        })
    }

    fn read_blob<'a>(&'a self, repo: &'a RepoName, d: &'a Digest, start: u64, len: u64) -> ReadFuture<'a, BlobStream> {
        self.local.read_blob(repo, d, start, len)
    }

    fn get_manifest<'a>(&'a self, repo: &'a RepoName, r: &'a Reference) -> ReadFuture<'a, StoredManifest> {
        Box::pin(async move {
            match self.local.get_manifest(repo, r).await {
                Err(e) if e.is_manifest_unknown() => self.fetch_manifest(repo, r, e).await,
                res => res,
            }
        })
    }
}

/// The `/v2` remote source of a node: a miss goes through the cluster
/// pipeline (peers, then origins; registry origins get the repository).
pub struct ClusterRemote {
    cluster: Cluster,
}

impl ClusterRemote {
    /// The remote source over `cluster`.
    pub fn new(cluster: Cluster) -> Self {
        ClusterRemote { cluster }
    }

    async fn fetch(&self, repo: &RepoName, d: Digest, kind: ObjectKind) -> Result<bool, RemoteError> {
        let hint = OciHint { repo: repo.as_str().to_owned(), kind };
        match self.cluster.ensure_local_oci(d, hint).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(Box::new(e)),
        }
    }
}

impl RemoteSource for ClusterRemote {
    fn fetch_blob<'a>(&'a self, repo: &'a RepoName, digest: &'a Digest) -> BoxFuture<'a, Result<bool, RemoteError>> {
        Box::pin(self.fetch(repo, *digest, ObjectKind::Blob))
    }

    fn open_blob<'a>(
        &'a self,
        repo: &'a RepoName,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<RemoteBody>, RemoteError>> {
        Box::pin(async move {
            let hint = OciHint { repo: repo.as_str().to_owned(), kind: ObjectKind::Blob };
            match self.cluster.fetch_oci(*digest, hint).await {
                Ok(b) => {
                    tracing::debug!(repo = %repo, digest = %digest.oci(), source = %b.source, "streaming a /v2 miss");
                    let stream = b.stream.map(|r| r.map_err(|e| Box::new(e) as RemoteError)).boxed();
                    Ok(Some(RemoteBody { size: b.size, source: b.kind, stream }))
                }
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(Box::new(e) as RemoteError),
            }
        })
    }

    fn fetch_manifest<'a>(
        &'a self,
        repo: &'a RepoName,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<String>, RemoteError>> {
        Box::pin(async move {
            if !self.fetch(repo, *digest, ObjectKind::Manifest).await? {
                return Ok(None);
            }
            // The bytes are verified by now; the media type is the manifest's own.
            let store = self.cluster.store().clone();
            let d = *digest;
            let bytes = cairn_store::aio::blocking(move || read_manifest(&store, &d))
                .await
                .map_err(|e| ClusterError::Task(format!("reading fetched manifest {}: {e}", d.oci())))??;
            Ok(Some(parse_manifest(&bytes, None)?.media_type))
        })
    }

    fn resolve_tag<'a>(
        &'a self,
        repo: &'a RepoName,
        tag: &'a Tag,
    ) -> BoxFuture<'a, Result<Option<Digest>, RemoteError>> {
        Box::pin(async move {
            let t = self.cluster.resolve_tag(repo.as_str(), tag.as_str()).await?;
            if let Some(t) = &t {
                tracing::debug!(repo = %repo, tag = tag.as_str(), digest = %t.digest.oci(), source = %t.source, "tag resolved remotely");
            }
            Ok(t.map(|t| t.digest))
        })
    }
}

fn read_manifest(store: &Store, d: &Digest) -> Result<Vec<u8>, RemoteError> {
    let r = store.get(d)?;
    let mut out = Vec::new();
    r.take(MAX_MANIFEST_SIZE as u64 + 1).read_to_end(&mut out)?;
    if out.len() > MAX_MANIFEST_SIZE {
        return Err(format!("manifest {} is over {MAX_MANIFEST_SIZE} bytes", d.oci()).into());
    }
    Ok(out)
}
