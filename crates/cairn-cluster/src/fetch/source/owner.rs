//! The digest's owner, or the next node of its ranking, asked to fetch
//! for this node (see [`crate::fetch::owner`]).

use std::sync::Arc;
use std::time::Duration;

use cairn_store::Digest;

use super::{OnFailure, Source};
use crate::error::{ClusterError, Result};
use crate::fetch::ClusterConfig;
use crate::peer::{BoxFut, PeerApi, RemoteBlob};

/// A node ranked before this one for the digest.
pub(crate) struct OwnerSource {
    pub(crate) addr: String,
    pub(crate) api: Arc<dyn PeerApi>,
    pub(crate) peer_timeout: Duration,
    /// Longest pause in its body: see [`idle`].
    pub(crate) idle: Duration,
}

impl Source for OwnerSource {
    fn name(&self) -> String {
        format!("owner {}", self.addr)
    }

    fn peer(&self) -> Option<&str> {
        Some(&self.addr)
    }

    fn kind(&self) -> crate::fetch::SourceKind {
        crate::fetch::SourceKind::Owner
    }

    fn idle(&self) -> Duration {
        self.idle
    }

    fn open<'a>(&'a self, d: &'a Digest) -> BoxFut<'a, RemoteBlob> {
        Box::pin(open(self.api.as_ref(), self.peer_timeout, &self.addr, d))
    }

    /// An owner that answered with an error (the blob is nowhere, or its
    /// sources failed) speaks for the rest of the ranking, which would
    /// only ask the same origins again: only this node's own try is left.
    /// One that is down or died mid-transfer gives way to the next in the
    /// ranking.
    fn on_failure(&self, e: &ClusterError) -> OnFailure {
        let answered = match e {
            ClusterError::PeerStatus { .. } => true,
            ClusterError::Shared(inner) => matches!(**inner, ClusterError::PeerStatus { .. }),
            _ => false,
        };
        if answered { OnFailure::SkipOwners } else { OnFailure::Next }
    }
}

/// Starts a forwarded fetch on the owner at `addr`. The owner answers when
/// its first verified bytes are ready, which can take longer than the peer
/// timeout on a slow origin, so the wait goes on as long as the owner keeps
/// answering health probes; an owner that stops answering is given up.
async fn open(api: &dyn PeerApi, timeout: Duration, addr: &str, d: &Digest) -> Result<RemoteBlob> {
    let mut fut = api.fetch_via(addr, d);
    loop {
        if let Ok(r) = tokio::time::timeout(timeout, &mut fut).await {
            return r;
        }
        let alive = matches!(tokio::time::timeout(timeout, api.health(addr)).await, Ok(Ok(_)));
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
pub(crate) fn idle(cfg: &ClusterConfig) -> Duration {
    let slowest = cfg.origins.iter().filter_map(|o| o.timeout()).max().unwrap_or_default();
    slowest.max(cfg.peer_timeout).saturating_mul(2)
}
