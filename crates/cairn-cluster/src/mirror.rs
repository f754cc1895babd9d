//! Tags for the `/v2` mirror. Tags are not self-verifying, so for a
//! mirrored upstream the upstream is the authority: a tag the local
//! registry lacks is resolved from a registry origin's cached answer
//! younger than its TTL (no request), then the registry origins (which fall
//! back to their own stale answer while the upstream is unavailable), and
//! only then, when no upstream had an answer, the peers ([`PeerTags`]
//! changes that order). The manifest it points to is then fetched by digest
//! through the pipeline, so it is verified.

use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::error::{ClusterError, Result};
use crate::fetch::Cluster;
use crate::origin::Origin;
use crate::upstream::{ResolvedTag, Upstream};

// Defined below the cluster layer (the peer client and the settings use
// them); re-exported here, where they belong to the reader.
pub use crate::fetch::PeerTags;
pub use crate::peer::TagTarget;

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

    /// Resolves a tag the local registry lacks: fresh cache, then the
    /// upstreams and the peers in the order `peer_tags` says. `Ok(None)` when
    /// every source asked says it does not exist; an error when none knows
    /// and at least one failed.
    pub async fn resolve_tag(&self, repo: &str, tag: &str) -> Result<Option<TagTarget>> {
        if let Some(t) = self.cached_tag(repo, tag) {
            return Ok(Some(t));
        }
        let registries = self.registries();
        // No upstream to defer to: the cluster's own tags are the only ones.
        let mode = if registries.is_empty() { PeerTags::First } else { self.inner.cfg.peer_tags };
        let mut tried = Vec::new();
        let mut failed = false;
        if mode == PeerTags::First
            && let Some(t) = self.peer_tag(repo, tag, &mut tried, &mut failed).await
        {
            return Ok(Some(t));
        }
        for up in &registries {
            match up.resolve_tag(repo, tag).await {
                Ok(t) => return Ok(Some(TagTarget::from_upstream(up, t))),
                Err(e) => {
                    failed |= !e.is_not_found();
                    tried.push(e.to_string());
                }
            }
        }
        // A stale fallback for an upstream that failed, never for one that
        // answered (a tag it lacks is not the peers' to define), and only
        // from peers that proved membership of the cluster.
        if mode == PeerTags::Fallback && failed {
            if !self.inner.peers.proof_required() {
                tried.push("peers: not asked (without cluster_secret_file peers are unauthenticated; set it, or peer_tags: first)".into());
            } else if let Some(t) = self.peer_tag(repo, tag, &mut tried, &mut failed).await {
                tracing::info!(repo, tag, source = %t.source, tried = ?tried, "no upstream answered for the tag; a member peer's answer is used");
                return Ok(Some(t));
            }
        }
        if mode == PeerTags::Never {
            tried.push("peers: not asked (peer_tags: never)".into());
        }
        if failed {
            Err(ClusterError::TagUnavailable { repo: repo.to_owned(), tag: tag.to_owned(), tried })
        } else {
            Ok(None)
        }
    }

    /// The peers whose word on a tag counts: with a cluster secret, only
    /// those that proved membership.
    fn tag_peers(&self) -> Vec<String> {
        self.inner.peers.tag_peers()
    }

    /// Asks every peer of [`Self::tag_peers`] at once; the first that knows
    /// the tag wins.
    async fn peer_tag(&self, repo: &str, tag: &str, tried: &mut Vec<String>, failed: &mut bool) -> Option<TagTarget> {
        let timeout = self.inner.cfg.peer_timeout;
        let mut asks: FuturesUnordered<_> = self
            .tag_peers()
            .into_iter()
            .map(|addr| async move {
                let what = || format!("GET /v1/oci/tag {repo}:{tag}");
                let r = crate::peer::within(timeout, &addr, what, self.inner.api.resolve_tag(&addr, repo, tag)).await;
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
