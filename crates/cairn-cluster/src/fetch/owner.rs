//! One origin fetch per cluster.
//!
//! Every digest has an owner: the first node of its rendezvous ranking
//! over the healthy nodes whose id is known, this node included (see
//! [`crate::rendezvous`]). On a miss that no peer can serve, a node that
//! does not own the digest asks the owner (`GET /v1/fetch/{digest}` marked
//! as forwarded) instead of the origins. The owner fetches once, through
//! its own single-flight, and streams to every asker. A forwarded request
//! is served by a `Route::Direct` transfer, which never forwards again,
//! so two nodes that briefly disagree on the owner cannot wait on each
//! other. When the owner fails (down, or dies mid-transfer) the asker moves
//! down the ranking; when it reaches itself it fetches directly, so all
//! askers of a dead owner converge on the same next node.
//!
//! The asking itself is a source: `OwnerSource` (`fetch/source/owner.rs`).

use cairn_store::Digest;

use super::{Cluster, Inner};
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

impl Cluster {
    /// Node ids ranked for `d`, owner first, over this node and its healthy
    /// peers whose id is known: what this node would ask, in order.
    pub fn ranking(&self, d: &Digest) -> Vec<String> {
        self.inner.ranking(d).into_iter().map(|m| m.node_id).collect()
    }
}
