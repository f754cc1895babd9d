//! Tags for the `/v2` mirror. A tag the local registry lacks is resolved,
//! in this order: a registry origin's cached answer younger than its TTL
//! (no request), the healthy peers (in parallel; their own tags and fresh
//! cached answers), then the registry origins (which fall back to a stale
//! cached answer when the upstream is unavailable). The manifest it points
//! to is then fetched by digest through the pipeline, so it is verified.

use std::sync::Arc;

use cairn_store::Digest;
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::error::{ClusterError, Result};
use crate::fetch::Cluster;
use crate::origin::Origin;
use crate::upstream::{ResolvedTag, Upstream};

/// What a tag points to, and who said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagTarget {
    /// The manifest digest.
    pub digest: Digest,
    /// Its media type, when the source knew it.
    pub media_type: Option<String>,
    /// Who answered: `peer ADDR`, `registry URL`, `registry URL (cached)`.
    pub source: String,
}

impl TagTarget {
    fn from_upstream(up: &Upstream, t: ResolvedTag) -> Self {
        let how = match t.freshness {
            crate::upstream::Freshness::Upstream => "",
            crate::upstream::Freshness::Cached => " (cached)",
            crate::upstream::Freshness::Stale => " (stale, upstream unavailable)",
        };
        TagTarget { digest: t.digest, media_type: t.media_type, source: format!("{}{how}", up.name()) }
    }
}

impl Cluster {
    /// The registry origins, in configured order (none when origins are off).
    pub fn registries(&self) -> Vec<Arc<Upstream>> {
        if !self.inner.cfg.enable_cdn_fallback {
            return Vec::new();
        }
        self.inner
            .cfg
            .origins
            .iter()
            .filter_map(|o| match o {
                Origin::Registry(up) => Some(Arc::clone(up)),
                _ => None,
            })
            .collect()
    }

    /// A registry origin's cached answer for `repo:tag` younger than its
    /// TTL, without any request (what this node tells its peers).
    pub fn cached_tag(&self, repo: &str, tag: &str) -> Option<TagTarget> {
        self.registries().iter().find_map(|up| up.fresh_tag(repo, tag).map(|t| TagTarget::from_upstream(up, t)))
    }

    /// Resolves a tag the local registry lacks: fresh cache, peers, then
    /// upstreams. `Ok(None)` when every source says it does not exist; an
    /// error when none knows and at least one failed.
    pub async fn resolve_tag(&self, repo: &str, tag: &str) -> Result<Option<TagTarget>> {
        if let Some(t) = self.cached_tag(repo, tag) {
            return Ok(Some(t));
        }
        let mut tried = Vec::new();
        let mut failed = false;
        if let Some(t) = self.peer_tag(repo, tag, &mut tried, &mut failed).await {
            return Ok(Some(t));
        }
        for up in self.registries() {
            match up.resolve_tag(repo, tag).await {
                Ok(t) => return Ok(Some(TagTarget::from_upstream(&up, t))),
                Err(e) => {
                    failed |= !e.is_not_found();
                    tried.push(e.to_string());
                }
            }
        }
        if failed {
            Err(ClusterError::TagUnavailable { repo: repo.to_owned(), tag: tag.to_owned(), tried })
        } else {
            Ok(None)
        }
    }

    /// Asks every healthy peer at once; the first that knows the tag wins.
    async fn peer_tag(&self, repo: &str, tag: &str, tried: &mut Vec<String>, failed: &mut bool) -> Option<TagTarget> {
        let timeout = self.inner.cfg.peer_timeout;
        let mut asks: FuturesUnordered<_> = self
            .inner
            .peers
            .healthy()
            .into_iter()
            .map(|addr| async move {
                let r = match tokio::time::timeout(timeout, self.inner.api.resolve_tag(&addr, repo, tag)).await {
                    Ok(r) => r,
                    Err(_) => Err(ClusterError::PeerTimeout {
                        peer: addr.clone(),
                        what: format!("GET /v1/oci/tag {repo}:{tag}"),
                        after: timeout,
                    }),
                };
                (addr, r)
            })
            .collect();
        while let Some((addr, r)) = asks.next().await {
            match r {
                Ok(Some(t)) => return Some(t),
                Ok(None) => tried.push(format!("peer {addr}: no such tag")),
                Err(e) => {
                    if e.peer_is_down() {
                        self.inner.peers.mark_down(&addr, &e.to_string());
                    }
                    *failed |= !e.is_not_found();
                    tried.push(e.to_string());
                }
            }
        }
        None
    }
}
