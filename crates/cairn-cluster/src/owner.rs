//! One origin fetch per cluster.
//!
//! Every digest has an owner: the first node of its rendezvous ranking
//! over the healthy nodes whose id is known, this node included (see
//! [`crate::rendezvous`]). On a miss that no peer can serve, a node that
//! does not own the digest asks the owner (`GET /v1/fetch/{digest}` marked
//! as forwarded) instead of the origins. The owner fetches once, through
//! its own single-flight, and streams to every asker. A forwarded request
//! is served by a [`Route::Direct`] transfer, which never forwards again,
//! so two nodes that briefly disagree on the owner cannot wait on each
//! other. When the owner fails (down, or dies mid-transfer) the asker moves
//! down the ranking; when it reaches itself it fetches directly, so all
//! askers of a dead owner converge on the same next node.

use std::time::Duration;

use cairn_store::Digest;

use crate::error::{ClusterError, Result};
use crate::fetch::Inner;
use crate::peer::RemoteBlob;
use crate::rendezvous::{Member, rank};

/// How a transfer gets a blob no peer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Route {
    /// This node goes to the origins itself: it owns the digest, or a peer
    /// that elected it asked.
    Direct,
    /// The nodes ranked before this one are asked first, in order.
    ViaOwner,
}

impl Inner {
    /// This node and its healthy peers, ranked for `d`.
    pub(crate) fn ranking(&self, d: &Digest) -> Vec<Member> {
        let mut ms = vec![Member::local(&self.cfg.node_id)];
        ms.extend(self.peers.members().iter().map(|(id, addr)| Member::peer(id, addr)));
        rank(d, &ms)
    }

    /// The route of a request from a client (not a forwarded one). A node
    /// that may not use origins never has an owner use them for it.
    pub(crate) fn route(&self, d: &Digest) -> Route {
        let forward = self.cfg.elect_owner && self.cfg.enable_cdn_fallback;
        if forward && self.ranking(d).first().is_some_and(|m| !m.is_local()) { Route::ViaOwner } else { Route::Direct }
    }

    /// Addresses of the nodes ranked before this one for `d`: the owner first.
    pub(crate) fn owners_before_me(&self, d: &Digest) -> Vec<String> {
        self.ranking(d).into_iter().map_while(|m| m.address).collect()
    }
}

/// Starts a forwarded fetch on the owner at `addr`. The owner answers when
/// its first verified bytes are ready, which can take longer than the peer
/// timeout on a slow origin, so the wait goes on as long as the owner keeps
/// answering health probes; an owner that stops answering is given up.
pub(crate) async fn open(inner: &Inner, addr: &str, d: &Digest) -> Result<RemoteBlob> {
    let timeout = inner.cfg.peer_timeout;
    let mut fut = inner.api.fetch_via(addr, d);
    loop {
        if let Ok(r) = tokio::time::timeout(timeout, &mut fut).await {
            return r;
        }
        let alive = matches!(tokio::time::timeout(timeout, inner.api.health(addr)).await, Ok(Ok(_)));
        if !alive {
            return Err(ClusterError::PeerTimeout {
                peer: addr.to_owned(),
                what: format!("GET /v1/fetch/{d} (as the owner) and GET /v1/health"),
                after: timeout,
            });
        }
        tracing::debug!(owner = addr, digest = %d, "owner still fetching; waiting");
    }
}

/// Idle time allowed in a body from an owner: its own source may pause
/// for up to its timeout before the owner gives up on it.
pub(crate) fn idle(inner: &Inner) -> Duration {
    let slowest = inner.cfg.origins.iter().filter_map(|o| o.timeout()).max().unwrap_or_default();
    slowest.max(inner.cfg.peer_timeout).saturating_mul(2)
}

impl crate::fetch::Cluster {
    /// Node ids ranked for `d`, owner first, over this node and its healthy
    /// peers whose id is known: what this node would ask, in order.
    pub fn ranking(&self, d: &Digest) -> Vec<String> {
        self.inner.ranking(d).into_iter().map(|m| m.node_id).collect()
    }
}
