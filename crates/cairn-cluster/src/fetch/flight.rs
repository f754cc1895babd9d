//! Single-flight: one transfer per digest and route, shared by every
//! caller of it, and its driver, which tries the sources in order.

use std::sync::{Arc, Mutex};

use cairn_store::Digest;
use tokio::sync::{mpsc, watch};

use super::attempt::attempt;
use super::fanout::{CALLER_QUEUE, Msg, Release, Shared};
use super::order::{Sources, Step};
use super::owner::Route;
use super::record::observe;
use super::source::{OnFailure, Source};
use super::{Cluster, Inner, blocking, lock};
use crate::error::{ClusterError, Result};
use crate::upstream::OciHint;

/// How a transfer ended, once it has: shared by every caller.
pub(crate) type Outcome = Option<Result<(), Arc<ClusterError>>>;

/// Waits for a transfer's outcome.
pub(crate) async fn wait_done(done: &mut watch::Receiver<Outcome>) -> Result<()> {
    let v = done.wait_for(Option::is_some).await.map_err(|_| ClusterError::Task("transfer vanished".into()))?;
    match v.as_ref() {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(ClusterError::Shared(Arc::clone(e))),
        None => Err(ClusterError::Task("transfer vanished".into())),
    }
}

/// One remote transfer of one digest, shared by every caller of it.
pub(crate) struct Transfer {
    pub(crate) digest: Digest,
    pub(crate) route: Route,
    /// Whether registry origins are among its sources.
    pub(crate) with_oci: bool,
    pub(crate) shared: Mutex<Shared>,
    pub(crate) done: watch::Sender<Outcome>,
    /// Callers that streamed it: all but the first joined it.
    pub(crate) followers: std::sync::atomic::AtomicUsize,
}

/// How a caller joined a transfer.
pub(crate) enum Joined {
    /// Before its first byte: the bytes come on the channel.
    Live(mpsc::Receiver<Msg>, watch::Receiver<Outcome>),
    /// After it: wait for the outcome, then read the stored blob.
    Wait(watch::Receiver<Outcome>),
}

impl Transfer {
    pub(crate) fn join(&self) -> Joined {
        let mut s = lock(&self.shared);
        // A finished transfer takes no new live callers: nothing would
        // ever send to them.
        if s.started || self.done.borrow().is_some() {
            return Joined::Wait(self.done.subscribe());
        }
        let (tx, rx) = mpsc::channel(CALLER_QUEUE);
        s.subs.push(tx);
        Joined::Live(rx, self.done.subscribe())
    }
}

impl Cluster {
    /// The transfer for `d`, joining a running one or starting it.
    pub(crate) fn transfer(
        &self,
        d: Digest,
        prefer: Option<String>,
        oci: Option<OciHint>,
        route: Route,
    ) -> Arc<Transfer> {
        let mut map = lock(&self.inner.inflight);
        if let Some(t) = map.get(&(d, route)) {
            return Arc::clone(t);
        }
        let (done, _) = watch::channel(None);
        let shared = Mutex::new(Shared::default());
        let followers = std::sync::atomic::AtomicUsize::new(0);
        let t = Arc::new(Transfer { digest: d, route, with_oci: oci.is_some(), shared, done, followers });
        map.insert((d, route), Arc::clone(&t));
        drop(map);
        let inner = Arc::clone(&self.inner);
        let t2 = Arc::clone(&t);
        tokio::spawn(async move { drive(inner, t2, prefer, oci).await });
        t
    }
}

async fn drive(inner: Arc<Inner>, t: Arc<Transfer>, prefer: Option<String>, oci: Option<OciHint>) {
    let res = run(&inner, &t, prefer, oci).await;
    if let Err(e) = &res {
        tracing::warn!(digest = %t.digest, error = %e, "fetch failed");
    }
    lock(&inner.inflight).remove(&(t.digest, t.route));
    t.done.send_replace(Some(res.map_err(Arc::new)));
    // Callers that never got a byte now read the outcome from `done`.
    lock(&t.shared).subs.clear();
}

async fn run(inner: &Arc<Inner>, t: &Transfer, prefer: Option<String>, oci: Option<OciHint>) -> Result<()> {
    let d = t.digest;
    let store = inner.store.clone();
    if blocking(move || store.exists(&d)).await? {
        return Ok(());
    }
    let pool = if t.route == Route::Direct { &inner.permits } else { &inner.via_permits };
    let mut permit = Some(pool.acquire().await.map_err(|e| ClusterError::Task(e.to_string()))?);
    let mut sources = Sources::new(Arc::clone(inner), d, prefer, oci, t.route);
    let mut release = Release::NotStarted;
    while let Some(step) = sources.next().await {
        let label = if matches!(step, Step::Swarm) { Step::SWARM } else { Step::AWAIT_DIRECT };
        let (src, res) = match step {
            Step::Try(src) if inner.cfg.swarm && src.kind() == super::SourceKind::Origin => {
                // The owner's origin read: swarmed when the blob is big enough.
                let (src, probe) = observe(src);
                let res = match crate::fetch::swarm_node::seed(inner, d, src.as_ref()).await {
                    Ok(None) => Ok(()),
                    Ok(Some(opened)) => {
                        let again = super::source::Opened::new(src.as_ref(), opened);
                        attempt(inner, t, &again, &mut release).await
                    }
                    Err(e) => Err(e),
                };
                inner.recorder().attempt(&probe.report(d, src.as_ref(), &res));
                (Some(src), res)
            }
            Step::Swarm => {
                // The owner `join` asks (it ranks the same way).
                let owner = inner.owners_before_me(&d).into_iter().next();
                let res = crate::fetch::swarm_node::join(inner, d).await;
                if let (Err(ClusterError::Corrupt { .. }), Some(liar)) = (&res, owner) {
                    // Its piece hashes lied: its whole blob is not asked for
                    // either (a caller would get its wrong bytes, then an error).
                    sources.drop_owner(&liar);
                }
                (None, res)
            }
            Step::Try(src) => {
                let (src, probe) = observe(src);
                let res = attempt(inner, t, src.as_ref(), &mut release).await;
                inner.recorder().attempt(&probe.report(d, src.as_ref(), &res));
                (Some(src), res)
            }
            Step::AwaitDirect => {
                // The direct transfer takes a permit of its own pool.
                permit.take();
                (None, self_direct(inner, d).await)
            }
        };
        let name = src.as_ref().map_or_else(|| label.to_owned(), |s| s.name());
        match res {
            Ok(()) => {
                tracing::debug!(digest = %d, source = %name, "blob fetched and verified");
                return Ok(());
            }
            Err(e) if e.is_local() => {
                // This node's own disk failed: another source (or another
                // try) would fail the same way.
                tracing::warn!(digest = %d, source = %name, error = %e, "storing the blob failed; not trying other sources");
                release.fail(e.to_string()).await;
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(digest = %d, source = %name, error = %e, "source failed; trying the next");
                failed(inner, &mut sources, src.as_deref(), &e, &mut release).await;
            }
        }
    }
    Err(sources.exhausted())
}

/// Accounts for a source's failure: its peer marked down when the fault
/// is the peer's, the live callers told, and the order told what next.
async fn failed(
    inner: &Inner,
    sources: &mut Sources,
    src: Option<&dyn Source>,
    e: &ClusterError,
    release: &mut Release,
) {
    if let Some(addr) = src.and_then(|s| s.peer())
        && (e.peer_is_down() || e.is_bad_data())
    {
        inner.peers.mark_down(addr, &e.to_string());
    }
    release.fail(e.to_string()).await;
    match src.map(|s| s.on_failure(e)) {
        Some(OnFailure::Retry { after, again }) => {
            tracing::info!(source = %again.name(), digest = %sources.digest(), wait = ?after, "retrying the source");
            tokio::time::sleep(after).await;
            sources.retry(again);
            sources.note(format!("{e} (retrying)"));
            return;
        }
        Some(OnFailure::SkipOwners) => sources.skip_owners(),
        Some(OnFailure::Next) | None => {}
    }
    sources.failed(e);
}

/// This node's direct transfer of `d` (joined if running), awaited.
async fn self_direct(inner: &Arc<Inner>, d: Digest) -> Result<()> {
    let c = Cluster { inner: Arc::clone(inner) };
    let t = c.transfer(d, None, None, Route::Direct);
    let mut done = t.done.subscribe();
    drop(t);
    wait_done(&mut done).await
}
