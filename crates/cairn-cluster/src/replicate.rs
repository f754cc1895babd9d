//! Replication of pushed blobs without an object store (`replicas: k`).
//!
//! # Who holds the k copies
//!
//! For a blob `d` pushed to node P, with R the rendezvous ranking of `d`
//! over the healthy nodes whose id is known (the owner ranking of
//! [`crate::rendezvous`], this node included), the holders are
//! [`holders`]: P itself, then the first k−1 nodes of R other than P. So
//! when P ranks first they are simply the top k; P counts as one copy
//! wherever it ranks. Once P is no longer a healthy member (down, or gone
//! from membership) the holders are the top k of R. Every node computes the
//! same set from the same membership view and the pusher's id, which every
//! copy's marker records ([`cairn_store::held`]).
//!
//! # When
//!
//! Never before the push is answered: a push is acknowledged once the
//! pushing node has it durably, exactly as with `replicas: 1`. The store's
//! commit hook notes every blob a client pushes; a background task marks it
//! held (pinned) and asks each other holder to take a copy
//! (`POST /v1/replicate/{digest}`). A holder asked pulls the blob through
//! the normal verified fetch pipeline, preferring the node that asked, and
//! pins it (a replica marker): the bounded cache never evicts it and GC
//! keeps it.
//!
//! # Repair
//!
//! Each node runs a pass over the blobs it holds (pushed or replica) when
//! the set of healthy members changes, every [`FULL_CHECK_INTERVAL`], and
//! every `health_interval` while a blob it holds is not yet confirmed on
//! all its holders. For each blob whose holder set changed since it was
//! last confirmed, it asks each other holder again; a holder that has it
//! answers `held` (and pins it if it only had a cached copy), one that lacks
//! it queues a pull. A node that is no longer among the holders, once every
//! holder confirmed, drops its own marker (the copy becomes an ordinary
//! cached one). Asks run [`ASKS_AT_ONCE`] at a time; pulls
//! [`PULLS_AT_ONCE`] at a time, from a queue of at most
//! [`MAX_PENDING_PULLS`].
//!
//! # What a request may cause
//!
//! A node takes a replication request only when replication is on, when it
//! is itself one of the blob's holders in its own view, when the node named
//! to pull from is a healthy member (no arbitrary address is ever
//! contacted) and holds the blob (one HEAD), and while its queue has room.
//! With a cluster secret the asker must prove membership (checked by the
//! HTTP layer); the node it pulls from is then the proven one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use cairn_store::Digest;
use cairn_store::held::{Held, Role};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::ClusterError;
use crate::fetch::{Cluster, blocking, lock};
use crate::peer::ReplicaAnswer;
use crate::rendezvous::{Member, rank};

/// Replication pulls queued on a node at most; more requests are refused (503).
pub const MAX_PENDING_PULLS: usize = 1024;
/// Replication pulls running at once on a node.
pub const PULLS_AT_ONCE: usize = 2;
/// Replication requests a node sends at once (placement and repair).
pub const ASKS_AT_ONCE: usize = 4;
/// Pushed blobs waiting to be placed at most; past it a push is not
/// replicated (logged and counted as failed).
pub const MAX_PENDING_PUSHES: usize = 1 << 20;
/// How often every held blob is checked again even when nothing changed.
pub const FULL_CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest gap between two repair passes.
const MIN_PASS_GAP: Duration = Duration::from_millis(100);

/// The nodes that hold the copies of a blob pushed to `pusher` (see the
/// module docs): the pusher first when it is among `members`, then the
/// ranking's first others, `k` in all (fewer when there are fewer members).
pub fn holders(d: &Digest, members: &[Member], pusher: &str, k: usize) -> Vec<Member> {
    let ranked = rank(d, members);
    match ranked.iter().position(|m| m.node_id == pusher) {
        Some(i) => {
            let mut out = vec![ranked[i].clone()];
            out.extend(ranked.iter().filter(|m| m.node_id != pusher).take(k.saturating_sub(1)).cloned());
            out
        }
        None => ranked.into_iter().take(k).collect(),
    }
}

/// Why a replication request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// This node runs with `replicas: 1`.
    #[error("replication is off on this node (replicas: 1); give every node of the cluster the same `replicas`")]
    Off,
    /// This node is not among the blob's holders as it sees the cluster.
    #[error(
        "this node is not one of the {k} holders of blob {digest} in its view of the cluster (holders: {holders:?}); \
         the asking node asks again once membership settles"
    )]
    NotAHolder {
        /// The blob.
        digest: Digest,
        /// `replicas`.
        k: usize,
        /// The holders' node ids as this node ranks them.
        holders: Vec<String>,
    },
    /// The node to pull from is not a healthy member here.
    #[error(
        "node {0:?} is not a healthy member of the cluster as this node sees it; replicas are only pulled from members"
    )]
    UnknownPeer(String),
    /// The node to pull from does not have the blob.
    #[error("node {node:?} does not hold blob {digest}; there is nothing to replicate")]
    NotOnHolder {
        /// The node asked about.
        node: String,
        /// The blob.
        digest: Digest,
    },
    /// The queue is full.
    #[error("{0} replication pulls are already queued on this node; ask again later")]
    Busy(usize),
    /// The local store or the peer failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// What `/metrics` and `cairn cluster stats` show of replication on one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationStats {
    /// `replicas` of this node.
    pub replicas: usize,
    /// Blobs this node holds as pushed or replica.
    pub held: usize,
    /// Of those, blobs not confirmed on all their holders at the last check
    /// (copies queued but not yet pulled, too few healthy nodes, a holder
    /// refusing or unreachable).
    pub under_replicated: usize,
    /// Replication pulls queued or running here, plus requests being sent.
    pub in_flight: usize,
    /// Replication pulls and requests that failed since start.
    pub failed: u64,
    /// Replication pulls completed here since start.
    pub completed: u64,
}

struct Pull {
    d: Digest,
    from: String,
    pusher: String,
}

#[derive(Default)]
struct State {
    pushed: VecDeque<Digest>,
    pushed_set: HashSet<Digest>,
    pulls: VecDeque<Pull>,
    /// Queued or running pulls.
    pull_set: HashSet<Digest>,
    /// Holder ids each blob was last confirmed on.
    confirmed: HashMap<Digest, Vec<String>>,
    /// Held blobs not confirmed on every holder.
    under: HashSet<Digest>,
    /// Blobs this node holds (markers), kept in step with every mark and
    /// release, and refreshed from the store by each repair pass.
    held: HashSet<Digest>,
    last_members: Vec<String>,
    last_full: Option<Instant>,
    last_pass: Option<Instant>,
}

/// The node's replicator: places its pushes, pulls the copies it is asked
/// for, and repairs (see the module docs).
pub struct Replicator {
    cluster: Cluster,
    k: usize,
    state: Mutex<State>,
    /// New pushes: the placing task.
    wake_place: tokio::sync::Notify,
    /// New pulls: the pulling task.
    wake_pull: tokio::sync::Notify,
    in_flight: AtomicUsize,
    failed: AtomicU64,
    completed: AtomicU64,
}

/// One held blob checked on its holders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    /// Every holder confirmed it.
    Complete,
    /// Some holder did not (yet).
    Incomplete,
    /// This node is not a holder any more and dropped its marker.
    Released,
}

impl Replicator {
    /// The replicator of `cluster` (its `replicas` setting). With
    /// `replicas` above 1 it listens to the store's pushes from now on.
    pub fn new(cluster: Cluster) -> Arc<Replicator> {
        let k = cluster.config().replicas.max(1);
        let r = Arc::new(Replicator {
            cluster,
            k,
            state: Mutex::new(State::default()),
            wake_place: tokio::sync::Notify::new(),
            wake_pull: tokio::sync::Notify::new(),
            in_flight: AtomicUsize::new(0),
            failed: AtomicU64::new(0),
            completed: AtomicU64::new(0),
        });
        if k > 1 {
            let weak: Weak<Replicator> = Arc::downgrade(&r);
            r.cluster.store().on_local_commit(Arc::new(move |d| {
                if let Some(r) = weak.upgrade() {
                    r.note_push(d);
                }
            }));
        }
        r
    }

    /// `replicas`.
    pub fn replicas(&self) -> usize {
        self.k
    }

    /// The counts of [`ReplicationStats`] now.
    pub fn stats(&self) -> ReplicationStats {
        let st = lock(&self.state);
        ReplicationStats {
            replicas: self.k,
            held: st.held.len(),
            under_replicated: st.under.len(),
            in_flight: self.in_flight.load(Ordering::Relaxed).saturating_add(st.pulls.len()),
            failed: self.failed.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
        }
    }

    fn note_push(&self, d: Digest) {
        let mut st = lock(&self.state);
        if st.pushed_set.len() >= MAX_PENDING_PUSHES {
            drop(st);
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(digest = %d, "too many pushed blobs wait for replication; this one is not replicated");
            return;
        }
        if st.pushed_set.insert(d) {
            st.pushed.push_back(d);
        }
        drop(st);
        self.wake_place.notify_one();
    }

    /// This node and its healthy peers whose id is known.
    fn members(&self) -> Vec<Member> {
        let mut ms = vec![Member::local(&self.cluster.config().node_id)];
        ms.extend(self.cluster.peers().members().iter().map(|(id, addr)| Member::peer(id, addr)));
        ms
    }

    fn own_id(&self) -> &str {
        &self.cluster.config().node_id
    }

    /// Takes a request to hold a copy of `d`, pushed to `pusher`, pulling it
    /// from the member `from` (see "What a request may cause").
    pub async fn accept(&self, d: Digest, from: &str, pusher: &str) -> Result<ReplicaAnswer, Refused> {
        if self.k <= 1 {
            return Err(Refused::Off);
        }
        let ms = self.members();
        let hs = holders(&d, &ms, pusher, self.k);
        if !hs.iter().any(Member::is_local) {
            return Err(Refused::NotAHolder {
                digest: d,
                k: self.k,
                holders: hs.into_iter().map(|m| m.node_id).collect(),
            });
        }
        let Some(addr) = ms.iter().find(|m| m.node_id == from).and_then(|m| m.address.clone()) else {
            return Err(Refused::UnknownPeer(from.to_owned()));
        };
        if self.cluster.local_size(d).await?.is_some() {
            self.mark(d, Role::Replica, pusher).await?;
            return Ok(ReplicaAnswer::Held);
        }
        {
            let st = lock(&self.state);
            if st.pull_set.contains(&d) {
                return Ok(ReplicaAnswer::Queued);
            }
            if st.pulls.len() >= MAX_PENDING_PULLS {
                return Err(Refused::Busy(st.pulls.len()));
            }
        }
        if self.cluster.api().head_blob(&addr, &d).await?.is_none() {
            return Err(Refused::NotOnHolder { node: from.to_owned(), digest: d });
        }
        {
            let mut st = lock(&self.state);
            if st.pulls.len() >= MAX_PENDING_PULLS {
                return Err(Refused::Busy(st.pulls.len()));
            }
            if st.pull_set.insert(d) {
                st.pulls.push_back(Pull { d, from: addr, pusher: pusher.to_owned() });
            }
        }
        self.wake_pull.notify_one();
        Ok(ReplicaAnswer::Queued)
    }

    /// Pins `d` here; a blob newly held counts in the stats at once (not
    /// only at the next repair pass).
    async fn mark(&self, d: Digest, role: Role, pusher: &str) -> Result<(), ClusterError> {
        let store = self.cluster.store().clone();
        let pusher = pusher.to_owned();
        blocking(move || store.hold(&d, role, &pusher)).await??;
        lock(&self.state).held.insert(d);
        Ok(())
    }

    /// Runs the placing/repair and the pulling loops; never returns (abort
    /// the task to stop). Does nothing with `replicas: 1`.
    pub async fn run(self: Arc<Self>) {
        if self.k <= 1 {
            return std::future::pending().await;
        }
        tokio::join!(Arc::clone(&self).pull_loop(), Arc::clone(&self).place_loop(), self.repair_loop());
    }

    async fn pull_loop(self: Arc<Self>) {
        loop {
            let batch: Vec<Pull> = {
                let mut st = lock(&self.state);
                let n = st.pulls.len().min(PULLS_AT_ONCE);
                st.pulls.drain(..n).collect()
            };
            if batch.is_empty() {
                self.wake_pull.notified().await;
                continue;
            }
            self.in_flight.fetch_add(batch.len(), Ordering::Relaxed);
            futures_util::future::join_all(batch.iter().map(|p| self.pull(p))).await;
            self.in_flight.fetch_sub(batch.len(), Ordering::Relaxed);
            let mut st = lock(&self.state);
            for p in &batch {
                st.pull_set.remove(&p.d);
            }
        }
    }

    /// One replication pull: pinned first (so no eviction can take the copy
    /// between its commit and its marker), unpinned again if it fails.
    async fn pull(&self, p: &Pull) {
        let res = async {
            self.mark(p.d, Role::Replica, &p.pusher).await?;
            self.cluster.ensure_local(p.d, Some(&p.from)).await
        }
        .await;
        match res {
            Ok(_) => {
                self.completed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(digest = %p.d, from = %p.from, "replica pulled");
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(digest = %p.d, from = %p.from, error = %e, "replication pull failed; the holder asks again");
                let store = self.cluster.store().clone();
                let d = p.d;
                let released = blocking(move || !store.exists(&d) && store.release(&d).unwrap_or(false)).await;
                if released.unwrap_or(false) {
                    lock(&self.state).held.remove(&d);
                }
            }
        }
    }

    async fn place_loop(self: Arc<Self>) {
        loop {
            let pushes: Vec<Digest> = {
                let mut st = lock(&self.state);
                let n = st.pushed.len().min(256);
                let v: Vec<Digest> = st.pushed.drain(..n).collect();
                for d in &v {
                    st.pushed_set.remove(d);
                }
                v
            };
            if pushes.is_empty() {
                self.wake_place.notified().await;
            } else {
                self.place(pushes).await;
            }
        }
    }

    /// Repair passes when due (see [`Replicator::repair_due`]); apart from
    /// placing, so a long pass never delays fresh pushes.
    async fn repair_loop(self: Arc<Self>) {
        loop {
            if self.repair_due(Instant::now()) {
                self.repair_pass().await;
            }
            tokio::time::sleep(self.retry_gap().min(Duration::from_secs(1))).await;
        }
    }

    /// Marks fresh pushes held and asks their other holders.
    async fn place(&self, pushes: Vec<Digest>) {
        let own = self.own_id().to_owned();
        let store = self.cluster.store().clone();
        let marked = {
            let own = own.clone();
            blocking(move || {
                let mark = |d: &Digest| match store.hold(d, Role::Pushed, &own) {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(digest = %d, error = %e, "marking a pushed blob held failed; it is not replicated");
                        false
                    }
                };
                pushes.into_iter().filter(|d| store.exists(d) && mark(d)).collect::<Vec<Digest>>()
            })
            .await
        };
        let marked: Vec<Digest> = match marked {
            Ok(v) => {
                lock(&self.state).held.extend(v.iter().copied());
                v
            }
            Err(e) => {
                tracing::warn!(error = %e, "marking pushed blobs held failed; the repair pass retries");
                return;
            }
        };
        let ms = Arc::new(self.members());
        let held = Held { role: Role::Pushed, pusher: own };
        let checks = self.check_all(marked.into_iter().map(|d| (d, held.clone())).collect(), ms).await;
        tracing::debug!(blobs = checks.len(), "pushed blobs placed on their holders");
    }

    fn retry_gap(&self) -> Duration {
        self.cluster.config().health_interval.clamp(MIN_PASS_GAP, FULL_CHECK_INTERVAL)
    }

    /// A pass is due when membership changed, when something is unconfirmed
    /// and the retry gap passed, or when the full-check interval passed.
    fn repair_due(&self, now: Instant) -> bool {
        let mut ids: Vec<String> = self.members().into_iter().map(|m| m.node_id).collect();
        ids.sort();
        let st = lock(&self.state);
        let since = |t: Option<Instant>| t.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        if since(st.last_pass) < MIN_PASS_GAP {
            return false;
        }
        ids != st.last_members
            || since(st.last_full) >= FULL_CHECK_INTERVAL
            || (!st.under.is_empty() && since(st.last_pass) >= self.retry_gap())
    }

    /// One repair pass over every blob this node holds. Returns how many
    /// are still not confirmed on all their holders.
    pub async fn repair_pass(&self) -> usize {
        let now = Instant::now();
        let ms = self.members();
        let mut ids: Vec<String> = ms.iter().map(|m| m.node_id.clone()).collect();
        ids.sort();
        let full = {
            let mut st = lock(&self.state);
            let full = st.last_full.is_none_or(|t| now.saturating_duration_since(t) >= FULL_CHECK_INTERVAL);
            st.last_pass = Some(now);
            st.last_members = ids;
            if full {
                st.last_full = Some(now);
                st.confirmed.clear();
            }
            full
        };
        let store = self.cluster.store().clone();
        type Listed = (Vec<(Digest, Held)>, Vec<Digest>);
        let listed = blocking(move || -> cairn_store::Result<Listed> {
            let (mut out, mut gone) = (Vec::new(), Vec::new());
            for (d, h) in store.held_blobs()? {
                if store.exists(&d) {
                    out.push((d, h));
                } else {
                    // Deleted or quarantined: this node no longer holds it.
                    store.release(&d)?;
                    gone.push(d);
                }
            }
            Ok((out, gone))
        })
        .await;
        let (listed, gone) = match listed {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "listing held blobs failed; the repair pass is retried");
                return lock(&self.state).under.len();
            }
            Err(e) => {
                tracing::warn!(error = %e, "listing held blobs failed; the repair pass is retried");
                return lock(&self.state).under.len();
            }
        };
        let pending: HashSet<Digest> = lock(&self.state).pull_set.clone();
        let todo: Vec<(Digest, Held)> = listed.into_iter().filter(|(d, _)| !pending.contains(d)).collect();
        {
            // Marks made while the store was listed are in the set already.
            let mut st = lock(&self.state);
            st.held.extend(todo.iter().map(|(d, _)| *d));
            for d in &gone {
                st.held.remove(d);
            }
        }
        let results = self.check_all(todo, Arc::new(ms)).await;
        let mut st = lock(&self.state);
        let mut released = 0usize;
        for (d, c) in &results {
            if *c == Checked::Released {
                st.held.remove(d);
                released += 1;
            }
        }
        let State { held, confirmed, under, .. } = &mut *st;
        confirmed.retain(|d, _| held.contains(d));
        under.retain(|d| held.contains(d));
        if full || released > 0 || !gone.is_empty() {
            tracing::debug!(held = held.len(), released, under = under.len(), "replication repair pass");
        }
        under.len()
    }

    /// [`Replicator::check`] of each blob, [`ASKS_AT_ONCE`] at a time.
    async fn check_all(&self, blobs: Vec<(Digest, Held)>, ms: Arc<Vec<Member>>) -> Vec<(Digest, Checked)> {
        futures_util::stream::iter(blobs)
            .map(|(d, h)| {
                let ms = Arc::clone(&ms);
                async move {
                    let c = self.check(d, h, ms).await;
                    (d, c)
                }
            })
            .buffer_unordered(ASKS_AT_ONCE)
            .collect()
            .await
    }

    /// Asks the other holders of `d` to hold it (skipped when they were
    /// confirmed for this same holder set already).
    async fn check(&self, d: Digest, held: Held, ms: Arc<Vec<Member>>) -> Checked {
        let hs = holders(&d, &ms, &held.pusher, self.k);
        let ids: Vec<String> = hs.iter().map(|m| m.node_id.clone()).collect();
        if lock(&self.state).confirmed.get(&d) == Some(&ids) {
            return Checked::Complete;
        }
        let own = self.own_id().to_owned();
        let mut confirmed = 0usize;
        let others: Vec<&Member> = hs.iter().filter(|m| !m.is_local()).collect();
        for m in &others {
            let Some(addr) = &m.address else { continue };
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            let res = self.cluster.api().replicate(addr, &d, &own, &held.pusher).await;
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            match res {
                Ok(ReplicaAnswer::Held) => confirmed += 1,
                Ok(ReplicaAnswer::Queued) => {}
                Err(e) => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(digest = %d, peer = %addr, error = %e, "replication request refused or failed; retried");
                }
            }
        }
        let local_holder = hs.iter().any(Member::is_local);
        let all_confirmed = confirmed == others.len();
        if !local_holder && all_confirmed && hs.len() >= self.k && held.role == Role::Replica {
            let store = self.cluster.store().clone();
            if let Ok(Ok(_)) = blocking(move || store.release(&d)).await {
                let mut st = lock(&self.state);
                st.under.remove(&d);
                st.confirmed.remove(&d);
                return Checked::Released;
            }
        }
        // This node's own copy counts once, holder or not.
        let copies = confirmed.saturating_add(1);
        let complete = all_confirmed && copies >= self.k;
        let mut st = lock(&self.state);
        if complete {
            st.under.remove(&d);
            st.confirmed.insert(d, ids);
            Checked::Complete
        } else {
            st.under.insert(d);
            st.confirmed.remove(&d);
            Checked::Incomplete
        }
    }
}

#[cfg(test)]
mod tests;
