//! The health probe loop: every peer is probed each `health_interval`;
//! unhealthy ones sooner, with backoff (see [`PeerSet`]).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::error::ClusterError;
use crate::peer::{PeerApi, PeerSet, within};

/// Longest the loop sleeps, so a peer marked down passively is re-probed on time.
const MAX_NAP: Duration = Duration::from_millis(500);

/// What probing needs of the cluster. The cluster owns the only strong
/// reference, so the loop ends when the cluster is dropped.
pub(crate) struct Prober {
    pub(crate) peers: Arc<PeerSet>,
    pub(crate) api: Arc<dyn PeerApi>,
    pub(crate) peer_timeout: Duration,
    pub(crate) node_id: String,
    /// A random id of this process, sent in health answers.
    pub(crate) instance: String,
    /// Whether peers must prove membership (a cluster secret is set).
    pub(crate) proof: bool,
}

/// Probes one peer and records the result.
pub(crate) async fn probe(inner: &Prober, addr: &str) {
    let start = Instant::now();
    let res = within(inner.peer_timeout, addr, || "GET /v1/health".into(), inner.api.health(addr)).await;
    if let Ok(h) = &res
        && h.node_id == inner.node_id
    {
        if h.instance.as_deref() == Some(inner.instance.as_str()) {
            inner.peers.mark_self(addr);
            return;
        }
        tracing::warn!(
            peer = addr,
            node_id = %h.node_id,
            "DUPLICATE NODE ID: a peer answers with this node's node_id; owner election needs unique ids \
             (give each node its own node_id)"
        );
    }
    // A peer refusing this node's proof is of another cluster too.
    if let Err(ClusterError::PeerStatus { status: 401 | 403, .. }) = &res
        && inner.proof
    {
        inner.peers.mark_unproven(addr);
        return;
    }
    if let Ok(h) = &res
        && inner.proof
    {
        if h.proven != Some(true) {
            inner.peers.mark_unproven(addr);
            return;
        }
        inner.peers.mark_proven(addr);
    }
    record(&inner.peers, addr, res.map(|h| h.node_id), start.elapsed());
}

fn record(peers: &PeerSet, addr: &str, res: Result<String, ClusterError>, took: Duration) {
    match res {
        Ok(node_id) => peers.mark_up(addr, &node_id, took),
        Err(e) => peers.probe_failed(addr, &e),
    }
}

/// Runs until the cluster is dropped.
pub(crate) async fn run(weak: Weak<Prober>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let now = Instant::now();
        let (due, next) = inner.peers.due(now);
        for a in &due {
            inner.peers.probing(a, now + inner.peer_timeout + MAX_NAP);
        }
        let inner2 = Arc::clone(&inner);
        join_all(due.iter().map(|a| probe(&inner2, a))).await;
        drop(inner2);
        drop(inner);
        let nap = next.map_or(MAX_NAP, |n| n.saturating_duration_since(Instant::now()).min(MAX_NAP));
        tokio::time::sleep(nap.max(Duration::from_millis(10))).await;
    }
}
