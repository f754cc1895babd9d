//! Runs one swarm transfer: the [`Scheduler`] driven by real time and
//! real futures, over a [`SwarmIo`] that fetches pieces, polls the tracker
//! and stores verified pieces. The node's side (`swarm: true`) is
//! [`crate::fetch::swarm_node`]: [`SwarmIo`] over HTTP and a partial blob;
//! the in-process tests use fakes.
//!
//! Every piece from a peer is checked against the owner's hash before it
//! is stored; a piece from the origin (only the owner asks it) is hashed
//! here and its hash published through [`SwarmIo::published`]. A peer that
//! sends a wrong piece is excluded and named in the log. Requests run
//! concurrently and independently: a slow source delays only its own
//! pieces, and a request past its deadline is dropped.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{AbortHandle, Abortable, Aborted, BoxFuture};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use crate::swarm::{
    Bitfield, Failure, Geometry, PieceHashes, PieceSource, Received, Request, Scheduler, SchedulerConfig, Verdict,
};

/// What the tracker answered.
#[derive(Debug, Clone)]
pub struct TrackerView<P> {
    /// The owner's piece hashes.
    pub hashes: PieceHashes,
    /// Holders of pieces this node lacks, with what they hold.
    pub peers: Vec<(P, Bitfield)>,
    /// When to poll again.
    pub interval: Duration,
}

/// A piece as a source sent it: unverified bytes, and what the source
/// said it holds with them.
#[derive(Debug, Clone)]
pub struct Served {
    /// The bytes.
    pub bytes: Bytes,
    /// The sender's bitfield at the time, when it sent one: have-state
    /// that reaches askers without waiting for their next poll of the
    /// owner, whose uplink is the busiest of the swarm.
    pub have: Option<Bitfield>,
}

impl From<Bytes> for Served {
    fn from(bytes: Bytes) -> Self {
        Served { bytes, have: None }
    }
}

/// The network and the disk of a swarm transfer.
pub trait SwarmIo<P>: Send + Sync + 'static {
    /// The bytes `range` (piece `piece`) from `from`.
    fn fetch(&self, from: PieceSource<P>, piece: u32, range: Range<u64>)
    -> BoxFuture<'static, Result<Served, Failure>>;
    /// Announces `have` to the owner, reporting the peers this transfer
    /// excluded for wrong pieces; the owner's answer, or `None` when it
    /// did not answer (the next poll may reach the next owner).
    fn poll(&self, have: Bitfield, excluded: Vec<P>) -> BoxFuture<'static, Option<TrackerView<P>>>;
    /// Stores verified piece bytes at `offset` of the temp blob.
    fn store(&self, piece: u32, offset: u64, bytes: Bytes) -> BoxFuture<'static, Result<(), String>>;
    /// Whether this node is now the owner (the first live node of the
    /// ranking): it then asks the origin.
    fn is_owner(&self) -> bool;
    /// Peers known to be gone (down, killed) since the last call.
    fn gone(&self) -> Vec<P> {
        Vec::new()
    }
    /// The hash of a piece this node (as owner) read from the origin, for
    /// its tracker to publish.
    fn published(&self, _piece: u32, _hashes: &PieceHashes) {}
}

/// How a transfer ended well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmOutcome<P> {
    /// Peers excluded for wrong pieces, with why.
    pub excluded: Vec<(P, String)>,
    /// Bytes taken from the origin and from peers.
    pub bytes: (u64, u64),
}

/// Why a transfer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwarmRunError {
    /// Storing a piece failed on this node: no source can fix that.
    #[error("storing piece {piece} failed: {reason}")]
    Store {
        /// The piece.
        piece: u32,
        /// What the store said.
        reason: String,
    },
    /// The owner published a hash that contradicts one it published before.
    #[error("the owner changed the hash of piece {0}; it is not to be trusted: fetch again under the next owner")]
    OwnerContradicts(u32),
    /// Nothing could be asked of anyone for this long.
    #[error("no source could serve a missing piece for {0:?}")]
    Starved(Duration),
}

/// How long a poll of the owner may take before it counts as unanswered.
pub const POLL_LIMIT: Duration = Duration::from_secs(5);

/// How long a transfer may go without any request in flight and without
/// progress before it gives up.
pub const STARVE_LIMIT: Duration = Duration::from_secs(60);

type Key<P> = (PieceSource<P>, u32);
type Flight<P> = BoxFuture<'static, (u64, Key<P>, Result<Result<Served, Failure>, Aborted>)>;

/// The requests running, each with the id of its future and the handle
/// that drops it (closing its connection) when it is cancelled.
struct Running<P> {
    live: HashMap<Key<P>, (u64, AbortHandle)>,
    next_id: u64,
}

impl<P: Clone + Eq + Hash + Send + 'static> Running<P> {
    fn start(&mut self, io: &Arc<dyn SwarmIo<P>>, r: Request<P>) -> Flight<P> {
        let (handle, reg) = AbortHandle::new_pair();
        let id = self.next_id;
        self.next_id += 1;
        let key = (r.from.clone(), r.piece);
        self.live.insert(key.clone(), (id, handle));
        let fut = Abortable::new(io.fetch(r.from, r.piece, r.range), reg);
        Box::pin(async move { (id, key, fut.await) })
    }

    fn cancel(&mut self, rs: Vec<Request<P>>) {
        for r in rs {
            if let Some((_, h)) = self.live.remove(&(r.from, r.piece)) {
                h.abort();
            }
        }
    }

    /// Whether a finished future is the live request for its key (not one
    /// cancelled, perhaps since asked again).
    fn finish(&mut self, id: u64, key: &Key<P>) -> bool {
        match self.live.get(key) {
            Some((live, _)) if *live == id => {
                self.live.remove(key);
                true
            }
            _ => false,
        }
    }
}

/// Runs the transfer of a blob of geometry `geo` to its end.
pub async fn run<P>(
    io: Arc<dyn SwarmIo<P>>,
    geo: Geometry,
    cfg: SchedulerConfig,
) -> Result<SwarmOutcome<P>, SwarmRunError>
where
    P: Clone + Ord + Hash + Debug + Send + Sync + 'static,
{
    let start = Instant::now();
    let mut sched: Scheduler<P> = Scheduler::new(geo, cfg);
    let mut hashes = PieceHashes::new(geo);
    let mut flights: FuturesUnordered<Flight<P>> = FuturesUnordered::new();
    let mut running = Running { live: HashMap::new(), next_id: 0 };
    let mut next_poll = start;
    let mut poll_every = Duration::from_millis(100);
    // At most one poll in flight, awaited beside the pieces: an owner
    // slow to answer (its uplink is the busiest) must not hold up the
    // pieces already coming from others.
    let mut polls: FuturesUnordered<BoxFuture<'static, Option<TrackerView<P>>>> = FuturesUnordered::new();
    let mut last_progress = start;
    let mut excluded = Vec::new();
    while !sched.is_complete() {
        let now = start.elapsed();
        for p in io.gone() {
            running.cancel(sched.peer_gone(&p));
        }
        running.cancel(sched.expire(now));
        if polls.is_empty() && Instant::now() >= next_poll {
            sched.set_origin(io.is_owner());
            let poll = io.poll(sched.have().clone(), sched.excluded().keys().cloned().collect());
            // An owner that never answers costs one poll, not the next ones.
            polls.push(Box::pin(async move { tokio::time::timeout(POLL_LIMIT, poll).await.ok().flatten() }));
        }
        for r in sched.next_requests(start.elapsed()) {
            flights.push(running.start(&io, r));
        }
        if sched.starved() {
            if last_progress.elapsed() >= STARVE_LIMIT {
                return Err(SwarmRunError::Starved(STARVE_LIMIT));
            }
            // Nothing to ask: poll again sooner.
            next_poll = next_poll.min(Instant::now() + poll_every / 4);
        }
        let mut wake = sched
            .next_deadline()
            .map(|d| start + d)
            .unwrap_or(next_poll)
            // Backoffs end without an event: look again soon.
            .min(Instant::now() + Duration::from_millis(100));
        if polls.is_empty() {
            wake = wake.min(next_poll);
        }
        tokio::select! {
            Some(view) = polls.next(), if !polls.is_empty() => {
                let now = start.elapsed();
                tracing::trace!(t = ?now, have = sched.have().ones(), peers = view.as_ref().map(|v| v.peers.len()), "swarm tracker polled");
                if let Some(view) = view {
                    hashes.adopt(&view.hashes).map_err(SwarmRunError::OwnerContradicts)?;
                    let _ = sched.hashes_known(hashes.known());
                    for (p, b) in &view.peers {
                        let _ = sched.peer_has(now, p.clone(), b);
                    }
                    poll_every = view.interval;
                }
                next_poll = Instant::now() + poll_every;
            }
            Some((id, key, got)) = flights.next(), if !flights.is_empty() => {
                let (Ok(got), true) = (got, running.finish(id, &key)) else { continue };
                let (from, piece) = key;
                let now = start.elapsed();
                tracing::trace!(t = ?now, piece, from = ?from, ok = got.is_ok(), failure = ?got.as_ref().err(), "swarm piece request ended");
                match got {
                    Err(why) => running.cancel(sched.piece_failed(now, &from, piece, why)),
                    Ok(Served { bytes, have }) => {
                        if let (PieceSource::Peer(p), Some(have)) = (&from, &have) {
                            let _ = sched.peer_has(now, p.clone(), have);
                        }
                        let verdict = match &from {
                            PieceSource::Origin => {
                                match geo.len(piece) {
                                    Some(len) if len == bytes.len() as u64 => {
                                        let _ = hashes.record(piece, &bytes);
                                        io.published(piece, &hashes);
                                        Verdict::Good
                                    }
                                    _ => Verdict::Bad,
                                }
                            }
                            PieceSource::Peer(_) => hashes.verify(piece, &bytes),
                        };
                        match sched.piece_received(now, &from, piece, verdict) {
                            Received::Stored { cancel: others } => {
                                running.cancel(others);
                                let offset = geo.range(piece).map_or(0, |r| r.start);
                                io.store(piece, offset, bytes).await.map_err(|reason| SwarmRunError::Store { piece, reason })?;
                                last_progress = Instant::now();
                            }
                            Received::Excluded { cancel: others } => {
                                if let PieceSource::Peer(p) = &from {
                                    tracing::warn!(peer = ?p, piece, "swarm peer sent a wrong piece; excluded for this transfer");
                                    excluded.push((p.clone(), format!("sent a wrong piece {piece}")));
                                }
                                running.cancel(others);
                            }
                            Received::Ignored => {}
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    Ok(SwarmOutcome { excluded, bytes: sched.bytes_received() })
}
