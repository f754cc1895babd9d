//! The source order, decided here and nowhere else.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use cairn_store::Digest;
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::owner::Route;
use super::source::{BucketSource, OriginSource, OwnerSource, PeerSource, RegistrySource, Source};
use super::{Inner, source};
use crate::error::{ClusterError, Result};
use crate::origin::Origin;
use crate::upstream::OciHint;

type HeadFut = futures_util::future::BoxFuture<'static, (String, Result<Option<u64>>)>;

/// What the driver does next.
pub(crate) enum Step {
    /// Try this source.
    Try(Box<dyn Source>),
    /// Await this node's own direct transfer, once every node ranked
    /// before it failed.
    AwaitDirect,
    /// Join the owner's swarm (`swarm: true`, a route via the owner).
    Swarm,
}

impl Step {
    /// How logs name [`Step::AwaitDirect`].
    pub(crate) const AWAIT_DIRECT: &str = "this node's own fetch";
    /// How logs name [`Step::Swarm`].
    pub(crate) const SWARM: &str = "the owner's swarm";
}

/// The source order: the preferred peer (a sync's source), then healthy
/// peers that hold the blob in the order their HEAD answers arrive, then
/// the unhealthy ones, briefly; then, on a direct route, the origins in
/// configured order (each retried with backoff; registry origins only when
/// the digest came with its repository); on a route via the owner, the
/// nodes ranked before this one and finally this node's own direct transfer.
/// With a durable tier, its bucket comes right before the origins.
pub(crate) struct Sources {
    inner: Arc<Inner>,
    digest: Digest,
    prefer: Option<String>,
    skip: Option<String>,
    heads: Option<FuturesUnordered<HeadFut>>,
    owners: VecDeque<String>,
    self_direct: bool,
    /// Origins still to try, then any retry pushed in front of them.
    origins: VecDeque<Origin>,
    retries: VecDeque<Box<dyn Source>>,
    oci: Option<OciHint>,
    tried: Vec<String>,
    only_absent: bool,
    /// Peers already asked for the blob.
    asked: Vec<String>,
    /// Whether the unhealthy peers are still to be asked.
    late_pending: bool,
    /// The durable tier's bucket, still to be tried (direct route only).
    bucket: Option<Arc<cairn_store::tier::Tier>>,
    /// Whether the owner's swarm is still to be joined (before the owners).
    swarm: bool,
}

impl Sources {
    pub(crate) fn new(
        inner: Arc<Inner>,
        digest: Digest,
        prefer: Option<String>,
        oci: Option<OciHint>,
        route: Route,
    ) -> Self {
        let swarm = route == Route::ViaOwner && inner.cfg.swarm;
        let bucket = match route {
            Route::Direct => inner.store.tier().cloned(),
            Route::ViaOwner => None,
        };
        let (owners, self_direct, origins) = match route {
            Route::ViaOwner => (inner.owners_before_me(&digest).into(), true, VecDeque::new()),
            Route::Direct if inner.cfg.enable_cdn_fallback => {
                (VecDeque::new(), false, inner.cfg.origins.iter().cloned().collect())
            }
            Route::Direct => (VecDeque::new(), false, VecDeque::new()),
        };
        Sources {
            inner,
            digest,
            skip: prefer.clone(),
            prefer,
            heads: None,
            owners,
            self_direct,
            origins,
            retries: VecDeque::new(),
            oci,
            tried: Vec::new(),
            only_absent: true,
            asked: Vec::new(),
            late_pending: true,
            swarm,
            bucket,
        }
    }

    /// The digest being fetched.
    pub(crate) fn digest(&self) -> Digest {
        self.digest
    }

    /// Puts a retry of a failed source before every source left.
    pub(crate) fn retry(&mut self, again: Box<dyn Source>) {
        self.retries.push_front(again);
    }

    /// After an owner answered with an error: the rest of the ranking is skipped.
    pub(crate) fn skip_owners(&mut self) {
        self.owners.clear();
    }

    /// Leaves out the owner at `addr` (caught lying about this blob).
    pub(crate) fn drop_owner(&mut self, addr: &str) {
        self.owners.retain(|a| a != addr);
    }

    /// Records a line of the "tried" list without judging it.
    pub(crate) fn note(&mut self, line: String) {
        self.tried.push(line);
    }

    /// HEADs to `addrs` (less the preferred peer, already tried), each
    /// answer awaited at most `timeout`.
    fn fan_out(&self, addrs: Vec<String>, timeout: Duration) -> FuturesUnordered<HeadFut> {
        addrs
            .into_iter()
            .filter(|a| Some(a) != self.skip.as_ref())
            .map(|addr| {
                let api = Arc::clone(&self.inner.api);
                let d = self.digest;
                let f: HeadFut = Box::pin(async move {
                    let r =
                        crate::peer::within(timeout, &addr, || format!("HEAD /v1/blobs/{d}"), api.head_blob(&addr, &d))
                            .await;
                    (addr, r)
                });
                f
            })
            .collect()
    }

    /// The next step, `None` when every source has been tried.
    pub(crate) async fn next(&mut self) -> Option<Step> {
        if let Some(again) = self.retries.pop_front() {
            return Some(Step::Try(again));
        }
        if let Some(addr) = self.prefer.take() {
            return Some(Step::Try(Box::new(self.peer(addr, None))));
        }
        if let Some(p) = self.next_peer().await {
            return Some(Step::Try(Box::new(p)));
        }
        if std::mem::take(&mut self.swarm) && !self.owners.is_empty() {
            return Some(Step::Swarm);
        }
        if let Some(addr) = self.owners.pop_front() {
            let inner = &self.inner;
            let idle = source::owner::idle(&inner.cfg);
            let api = Arc::clone(&inner.api);
            return Some(Step::Try(Box::new(OwnerSource { addr, api, peer_timeout: inner.cfg.peer_timeout, idle })));
        }
        if std::mem::take(&mut self.self_direct) {
            return Some(Step::AwaitDirect);
        }
        if let Some(tier) = self.bucket.take() {
            return Some(Step::Try(Box::new(BucketSource { tier, timeout: self.inner.cfg.peer_timeout })));
        }
        self.next_origin().map(Step::Try)
    }

    fn peer(&self, addr: String, size: Option<u64>) -> PeerSource {
        PeerSource { addr, size, api: Arc::clone(&self.inner.api), timeout: self.inner.cfg.peer_timeout }
    }

    /// The next peer whose HEAD says it holds the blob: healthy peers
    /// first, then the unhealthy ones.
    async fn next_peer(&mut self) -> Option<PeerSource> {
        if self.heads.is_none() {
            let healthy = self.inner.peers.healthy();
            self.asked.extend(healthy.iter().cloned());
            self.heads = Some(self.fan_out(healthy, self.inner.cfg.peer_timeout));
        }
        while let Some(heads) = self.heads.as_mut() {
            let Some((addr, res)) = heads.next().await else {
                // Unhealthy peers last, briefly: one that failed a probe may
                // be up by now (a cluster booting together).
                if std::mem::take(&mut self.late_pending) {
                    let late: Vec<String> =
                        self.inner.peers.unhealthy().into_iter().filter(|a| !self.asked.contains(a)).collect();
                    if !late.is_empty() {
                        let timeout = self.inner.cfg.peer_timeout.min(crate::peer::UNHEALTHY_TIMEOUT);
                        self.heads = Some(self.fan_out(late, timeout));
                        continue;
                    }
                }
                break;
            };
            match res {
                Ok(Some(size)) => return Some(self.peer(addr, Some(size))),
                Ok(None) => self.tried.push(format!("peer {addr}: absent")),
                Err(e) => {
                    if e.peer_is_down() {
                        self.inner.peers.mark_down(&addr, &e.to_string());
                    }
                    self.failed(&e);
                }
            }
        }
        None
    }

    /// The next origin this transfer may use.
    fn next_origin(&mut self) -> Option<Box<dyn Source>> {
        let cfg = &self.inner.cfg;
        while let Some(o) = self.origins.pop_front() {
            match (o, &self.oci) {
                (Origin::Registry(up), Some(hint)) => {
                    let hint = hint.clone();
                    return Some(Box::new(RegistrySource { up, hint, timeout: cfg.peer_timeout }));
                }
                (Origin::Registry(up), None) => {
                    self.tried.push(format!("{}: skipped, a bare digest names no repository", up.name()));
                }
                (origin, _) => {
                    let http = self.inner.http.clone();
                    return Some(Box::new(OriginSource { origin, tries: 0, http, peer_timeout: cfg.peer_timeout }));
                }
            }
        }
        None
    }

    /// Records a failed source (or HEAD).
    pub(crate) fn failed(&mut self, e: &ClusterError) {
        if !e.is_not_found() {
            self.only_absent = false;
        }
        self.tried.push(e.to_string());
    }

    /// The error once every source failed: absent when all said absent.
    pub(crate) fn exhausted(self) -> ClusterError {
        if self.only_absent {
            ClusterError::NotFound { digest: self.digest, tried: self.tried }
        } else {
            ClusterError::Unavailable { digest: self.digest, tried: self.tried }
        }
    }
}
