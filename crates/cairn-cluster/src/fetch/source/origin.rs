//! A URL origin (`Origin::Http`), retried with backoff.

use std::time::Duration;

use cairn_store::Digest;

use super::{OnFailure, Source, no_answer};
use crate::error::ClusterError;
use crate::origin::Origin;
use crate::peer::{BoxFut, RemoteBlob};

/// A URL origin on its `tries`-th retry (0 for the first try).
pub(crate) struct OriginSource {
    pub(crate) origin: Origin,
    pub(crate) tries: u32,
    pub(crate) http: reqwest::Client,
    /// Its timeout when it sets none.
    pub(crate) peer_timeout: Duration,
}

impl OriginSource {
    fn timeout(&self) -> Duration {
        self.origin.timeout().unwrap_or(self.peer_timeout)
    }
}

impl Source for OriginSource {
    fn name(&self) -> String {
        self.origin.name()
    }

    fn kind(&self) -> crate::fetch::SourceKind {
        match self.origin {
            crate::origin::Origin::Registry(_) => crate::fetch::SourceKind::Upstream,
            crate::origin::Origin::Http { .. } => crate::fetch::SourceKind::Origin,
        }
    }

    fn idle(&self) -> Duration {
        self.timeout()
    }

    fn open<'a>(&'a self, d: &'a Digest) -> BoxFut<'a, RemoteBlob> {
        Box::pin(async move {
            let timeout = self.timeout();
            match tokio::time::timeout(timeout, self.origin.get(&self.http, d)).await {
                Ok(r) => r,
                Err(_) => Err(no_answer(self.name(), *d, timeout)),
            }
        })
    }

    /// Another try once the backoff has passed; wrong bytes and "absent"
    /// are never retried.
    fn on_failure(&self, e: &ClusterError) -> OnFailure {
        if !e.origin_may_retry() || self.tries >= self.origin.retries() {
            return OnFailure::Next;
        }
        let again = OriginSource {
            origin: self.origin.clone(),
            tries: self.tries + 1,
            http: self.http.clone(),
            peer_timeout: self.peer_timeout,
        };
        OnFailure::Retry { after: crate::origin::backoff(self.tries + 1), again: Box::new(again) }
    }
}
