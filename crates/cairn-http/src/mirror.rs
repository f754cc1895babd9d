//! The cluster-wide `/v2` mirror's HTTP side: the registry's remote source
//! backed by the cluster pipeline. The answer peers give each other when
//! one of them lacks a tag is `/v1/oci/tag` ([`crate::v1::oci`]).

use std::io::Read;

use cairn_cluster::Cluster;
use cairn_cluster::upstream::{ObjectKind, OciHint};
use cairn_store::oci::manifest::{MAX_MANIFEST_SIZE, parse_manifest};
use cairn_store::oci::{RepoName, Tag};
use cairn_store::{Digest, Store};
use futures_util::future::BoxFuture;
use futures_util::stream::StreamExt;

use crate::v2::{RemoteBody, RemoteError, RemoteSource};

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
                    Ok(Some(RemoteBody { size: b.size, stream }))
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
            let bytes = tokio::task::spawn_blocking(move || read_manifest(&store, &d)).await??;
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
