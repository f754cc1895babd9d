//! The swarm in the node (issue 15, README "Swarm"), with `swarm: true`.
//!
//! - The owner (the node fetching from the origin) reads the origin as one
//!   stream into a [`PartialBlob`], hashing each piece as it completes
//!   (`seed`), and tracks who holds what for its askers (`Trackers`).
//! - Every other node announces to the owner and pulls pieces from every
//!   holder (`join`), through [`crate::swarm_run::run`] over `NodeIo`.
//! - Every node serves the verified pieces it holds ([`Cluster::swarm_piece`]),
//!   at most [`UPLOAD_SLOTS`] at once.
//!
//! The whole-blob digest is still checked by [`PartialBlob::finish`] before
//! the blob becomes an object.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_store::{Digest, PartialBlob, StoreError};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ClusterError, Result};
use crate::fetch::source::Source;
use crate::fetch::{Cluster, Inner, lock};
use crate::origin::Origin;
use crate::peer::RemoteBlob;
use crate::swarm::{
    Answer, AnswerPeer, Bitfield, DEFAULT_PIECE_SIZE_MAX, DEFAULT_SAMPLE, Failure, Geometry, MIN_SWARM_BLOB,
    PieceHasher, PieceHashes, PieceSource, Rng, SchedulerConfig, SeedBudget, SwarmError, Tracker, UPLOAD_SLOTS,
    WireAnnounce, WireAnswer, piece_size_for, poll_interval,
};
use crate::swarm_run::{Served, SwarmIo, TrackerView};

/// Bytes of the owner's origin read gathered before one disk write.
const SEED_WRITE_BATCH: usize = 256 * 1024;

/// Trackers an owner keeps at once; past it, new digests are answered busy.
pub const MAX_TRACKERS: usize = 1024;

/// A tracker nobody announced to for this long is dropped.
pub const TRACKER_IDLE: Duration = Duration::from_secs(60);

/// Longest body of an announcement: the bitfield of the most pieces in hex, and room.
pub const MAX_ANNOUNCE_BYTES: usize = crate::swarm::MAX_PIECES as usize / 4 + 64 * 1024;

/// Why a swarm request is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// This node is not the digest's owner in its view.
    #[error("this node is not the owner of {0} in its view of the cluster; announce to the first node of the ranking")]
    NotOwner(Digest),
    /// The owner is opening the origin; the tracker exists soon.
    #[error("the owner is starting the transfer of {0}; announce again shortly")]
    Starting(Digest),
    /// The blob is fetched whole (small, or its size unknown), or held whole.
    #[error("{0} is not being swarmed; fetch it whole")]
    NotSwarming(Digest),
    /// Too many trackers or piece uploads at once.
    #[error("busy: {0}; try another holder or again shortly")]
    Busy(&'static str),
    /// This node does not hold the piece (verified).
    #[error("this node does not hold piece {index} of {digest}")]
    NoPiece {
        /// The blob.
        digest: Digest,
        /// The piece.
        index: u32,
    },
    /// The owner serves this fresh piece to another asker; get it from them.
    #[error("piece {0} is being passed to another asker first; ask its other holders")]
    Declined(u32),
    /// Malformed or inconsistent input.
    #[error("{0}")]
    Bad(#[from] SwarmError),
    /// A failure of this node.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// One blob this node is receiving piece by piece.
pub(crate) struct LocalSwarm {
    geo: Geometry,
    partial: Arc<PartialBlob>,
    have: Mutex<Bitfield>,
    hashes: Mutex<PieceHashes>,
    /// Whether this node reads the origin for it (serves fresh pieces
    /// sparingly): the owner from the start, a node that took over from a
    /// dead owner from its first origin piece.
    seeding: AtomicBool,
}

/// What an owner knows of one digest.
enum Track {
    /// The owner's own transfer is opening its source.
    Starting(Instant),
    /// Fetched whole: askers go the whole-blob way.
    Whole(Instant),
    /// Swarmed.
    Live(Box<Tracking>),
}

struct Tracking {
    geo: Geometry,
    tracker: Tracker<String>,
    hashes: PieceHashes,
    seed: SeedBudget,
    rng: Rng,
    born: Instant,
    used: Instant,
}

impl Track {
    fn used(&self) -> Instant {
        match self {
            Track::Starting(t) | Track::Whole(t) => *t,
            Track::Live(t) => t.used,
        }
    }
}

/// The node's swarm state: its trackers, its transfers, its upload slots.
pub(crate) struct SwarmState {
    trackers: Mutex<HashMap<Digest, Track>>,
    local: Mutex<HashMap<Digest, Arc<LocalSwarm>>>,
    upload: Arc<Semaphore>,
    /// Peers excluded for wrong pieces, since start.
    excluded: AtomicU64,
}

impl Default for SwarmState {
    fn default() -> Self {
        SwarmState {
            trackers: Mutex::new(HashMap::new()),
            local: Mutex::new(HashMap::new()),
            upload: Arc::new(Semaphore::new(UPLOAD_SLOTS)),
            excluded: AtomicU64::new(0),
        }
    }
}

/// What one swarm transfer did, for observers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwarmReport {
    /// The blob.
    pub digest: Option<Digest>,
    /// Pieces and bytes from the origin.
    pub origin: (u64, u64),
    /// Pieces and bytes from peers.
    pub peers: (u64, u64),
    /// Peers excluded for wrong pieces, with why.
    pub excluded: Vec<(String, String)>,
}

/// A piece this node serves, with its bitfield at the time (sent to the
/// asker with the bytes) and the upload slot it holds.
pub struct ServedPiece {
    /// The piece's bytes.
    pub bytes: Bytes,
    /// What this node holds of the blob.
    pub have: Bitfield,
    /// The slot, held while the bytes are sent.
    pub slot: UploadSlot,
}

/// An upload slot, given back when the piece is sent or its deadline passes.
pub struct UploadSlot(Arc<Mutex<Option<OwnedSemaphorePermit>>>, Instant);

impl UploadSlot {
    /// When the piece must be sent by: past it, the server cuts the
    /// asker's connection (the slot itself is freed then whatever happens).
    pub fn deadline(&self) -> Instant {
        self.1
    }
}

/// Time an asker always gets for a piece on top of its bytes: a few
/// round trips and the first window of a new TCP connection.
pub const SEND_GRACE: Duration = Duration::from_secs(1);

/// How long sending a piece of `len` bytes may take: [`SEND_GRACE`] plus
/// `len` at `swarm_min_send_rate` (1 MiB/s by default: the rate below which
/// the asker's own scheduler counts the piece as stalled and asks
/// elsewhere, so a slower send helps nobody), or at this node's share of
/// `egress_limit` per upload slot when that is slower, so the node's own
/// limit never makes an honest asker miss it. Short, because the three
/// slots of the owner are the only way out for fresh pieces: an 8 MiB piece
/// may hold one for 9 s, not the 18 s of the asker's request timeout.
/// Pieces over [`DEFAULT_PIECE_SIZE_MAX`] get no more time: no node picks
/// them ([`piece_size_for`]), so only a hostile asker asks for them, and it
/// must not buy a minute per slot with 64 MiB pieces.
pub fn send_deadline(cfg: &crate::ClusterConfig, len: u64) -> Duration {
    let share = cfg.egress_limit.map_or(u64::MAX, |e| e / UPLOAD_SLOTS as u64);
    let rate = cfg.swarm_min_send_rate.min(share).max(1);
    let len = len.min(DEFAULT_PIECE_SIZE_MAX);
    let secs = len / rate;
    let nanos = (len % rate).saturating_mul(1_000_000_000) / rate;
    SEND_GRACE.saturating_add(Duration::new(secs, u32::try_from(nanos).unwrap_or(0)))
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        lock(&self.0).take();
    }
}

impl Inner {
    fn local_swarm(&self, d: &Digest) -> Option<Arc<LocalSwarm>> {
        lock(&self.swarm.local).get(d).cloned()
    }

    fn is_owner_of(&self, d: &Digest) -> bool {
        self.ranking(d).first().is_some_and(|m| m.is_local())
    }

    /// Marks `d` swarmed with `geo` on this node's tracker.
    fn track_live(&self, d: Digest, geo: Geometry, hashes: &PieceHashes) {
        let now = Instant::now();
        let mut map = lock(&self.swarm.trackers);
        if let Some(Track::Live(t)) = map.get(&d)
            && t.geo == geo
        {
            return;
        }
        let mut h = PieceHashes::new(geo);
        let _ = h.adopt(hashes);
        let t = Tracking {
            geo,
            tracker: Tracker::new(geo.count()),
            hashes: h,
            seed: SeedBudget::new(geo.count()),
            rng: Rng::new(rand::random()),
            born: now,
            used: now,
        };
        map.insert(d, Track::Live(Box::new(t)));
    }

    /// A transfer of this node holds every piece: its tracker (if it
    /// tracks `d`) takes the last hashes now, since the transfer's own
    /// state goes when it ends.
    fn track_complete(&self, d: Digest, l: &LocalSwarm) {
        let mut map = lock(&self.swarm.trackers);
        if let Some(Track::Live(t)) = map.get_mut(&d)
            && t.geo == l.geo
        {
            let _ = t.hashes.adopt(&lock(&l.hashes));
            let _ = t.tracker.announce(self.cfg.node_id.clone(), lock(&l.have).clone());
        }
    }

    fn track_mark(&self, d: Digest, t: Track) {
        let mut map = lock(&self.swarm.trackers);
        let replace = !matches!(map.get(&d), Some(Track::Live(_))) || matches!(t, Track::Whole(_));
        if replace {
            map.insert(d, t);
        }
    }

    /// The tracker's answer to `node_id` holding `have` of `d`, recording
    /// it; `have` `None` only asks for the geometry.
    fn answer(&self, d: Digest, node_id: &str, ann: &WireAnnounce, held_whole: bool) -> Result<Answer, Refused> {
        let local = self.local_swarm(&d);
        let members = self.peers.members();
        let now = Instant::now();
        let mut map = lock(&self.swarm.trackers);
        map.retain(|_, t| now.duration_since(t.used()) < TRACKER_IDLE);
        if !matches!(map.get(&d), Some(Track::Live(_)))
            && let Some(l) = &local
        {
            // A new owner mid-swarm: it tracks from the pieces and hashes it has.
            drop(map);
            self.track_live(d, l.geo, &lock(&l.hashes));
            map = lock(&self.swarm.trackers);
        }
        let t = match map.get_mut(&d) {
            Some(Track::Live(t)) => t,
            Some(Track::Starting(_)) => return Err(Refused::Starting(d)),
            Some(Track::Whole(_)) => return Err(Refused::NotSwarming(d)),
            None if held_whole => return Err(Refused::NotSwarming(d)),
            None => {
                if map.len() >= MAX_TRACKERS {
                    return Err(Refused::Busy("too many blobs tracked at once"));
                }
                map.insert(d, Track::Starting(now));
                return Err(Refused::Starting(d));
            }
        };
        t.used = now;
        let geo = t.geo;
        // Only members are tracked (and so banned): the tracker's size is
        // bounded by the cluster's, whatever ids askers claim or report.
        let is_member = |id: &str| members.iter().any(|(m, _)| m == id);
        for bad in ann.reported()? {
            if *bad != self.cfg.node_id && t.tracker.get(bad).is_some() && t.tracker.ban(bad) {
                tracing::warn!(digest = %d, peer = %bad, reporter = %node_id, "swarm peer reported for a wrong piece; the tracker no longer names it");
            }
        }
        // The owner's own pieces and hashes first.
        let own = match &local {
            Some(l) => {
                let _ = t.hashes.adopt(&lock(&l.hashes));
                Some(lock(&l.have).clone())
            }
            None if held_whole => Some(Bitfield::full(geo.count())),
            None => None,
        };
        if let Some(own) = own {
            t.tracker.announce(self.cfg.node_id.clone(), own)?;
        }
        let asker = if ann.blob_size == geo.blob_size() && ann.piece_size == geo.piece_size() {
            let have = ann.bitfield(&geo)?;
            if node_id != self.cfg.node_id && is_member(node_id) {
                t.tracker.announce(node_id.to_owned(), have.clone())?;
            }
            have
        } else if ann.have.bytes().all(|c| c == b'0') && ann.have.len() <= MAX_ANNOUNCE_BYTES {
            // A first contact: it learns the geometry from the answer.
            Bitfield::new(geo.count())
        } else {
            return Err(ann
                .bitfield(&geo)
                .err()
                .unwrap_or(SwarmError::Malformed {
                    what: "announcement",
                    reason: "a bitfield of another geometry".into(),
                })
                .into());
        };
        let addr_of: HashMap<&str, &str> = members.iter().map(|(i, a)| (i.as_str(), a.as_str())).collect();
        let sample = t.tracker.sample(&node_id.to_owned(), &asker, DEFAULT_SAMPLE, &mut t.rng);
        let me = &self.cfg.node_id;
        let seeding = local.as_ref().is_some_and(|l| l.seeding.load(Ordering::Relaxed));
        let spare = self.swarm.upload.available_permits() >= UPLOAD_SLOTS;
        let peers = sample
            .into_iter()
            .filter_map(|(id, have)| {
                if &id != me {
                    let addr = (*addr_of.get(id.as_str())?).to_owned();
                    return Some(AnswerPeer { node_id: id, addr, have });
                }
                // While it reads the origin, the owner offers only what it would serve.
                let have = if seeding {
                    t.seed.offer(&have, t.born.elapsed(), |i| t.tracker.others_holding(me, i), spare)
                } else {
                    have
                };
                Some(AnswerPeer { node_id: id.clone(), addr: id, have })
            })
            .collect();
        let _ = t.born;
        let hashes = match ann.known(&geo) {
            Some(known) => t.hashes.without(&known),
            None => t.hashes.clone(),
        };
        Ok(Answer { interval: poll_interval(members.len() + 1), hashes, peers })
    }
}

impl Cluster {
    /// The owner's answer to an announcement of `node_id` (a member, checked
    /// by the caller) for `d`. Starts this node's own transfer of `d` when
    /// it has none.
    pub async fn swarm_announce(&self, d: Digest, node_id: &str, ann: &WireAnnounce) -> Result<WireAnswer, Refused> {
        if !self.inner.cfg.swarm {
            return Err(Refused::NotSwarming(d));
        }
        if !self.inner.is_owner_of(&d) {
            return Err(Refused::NotOwner(d));
        }
        let held = self.local_size(d).await?.is_some();
        let r = self.inner.answer(d, node_id, ann, held);
        if let Err(Refused::Starting(_)) = &r {
            let running = lock(&self.inner.inflight).keys().any(|(x, _)| *x == d);
            if !running {
                let c = self.clone();
                tokio::spawn(async move {
                    let res = c.ensure_local(d, None).await;
                    // A transfer that did not swarm leaves "starting": askers go whole.
                    let mut map = lock(&c.inner.swarm.trackers);
                    if matches!(map.get(&d), Some(Track::Starting(_))) {
                        map.insert(d, Track::Whole(Instant::now()));
                    }
                    if let Err(e) = res {
                        tracing::warn!(digest = %d, error = %e, "owner's fetch for swarm askers failed");
                    }
                });
            }
        }
        r.map(|a| a.to_wire())
    }

    /// Piece `index` of `d` in pieces of `geo`, for a peer: from the
    /// complete local blob, or from this node's partial blob when it holds
    /// the piece verified. Takes one of the [`UPLOAD_SLOTS`] (the caller
    /// keeps the slot while sending and must stop sending at
    /// [`UploadSlot::deadline`]; the slot is given back then whatever
    /// happens).
    pub async fn swarm_piece(&self, d: Digest, index: u32, geo: Geometry) -> Result<ServedPiece, Refused> {
        if !self.inner.cfg.swarm {
            return Err(Refused::NotSwarming(d));
        }
        geo.check(index)?;
        let range = geo.range(index).ok_or(SwarmError::NoSuchPiece { index, count: geo.count() })?;
        let len = range.end - range.start;
        let permit =
            Arc::clone(&self.inner.swarm.upload).try_acquire_owned().map_err(|_| Refused::Busy("upload slots"))?;
        let slot = Arc::new(Mutex::new(Some(permit)));
        let within = send_deadline(&self.inner.cfg, len);
        let weak = Arc::downgrade(&slot);
        // The server cuts the connection at the deadline too; this frees the
        // slot even when the body is held somewhere that never drops it.
        tokio::spawn(async move {
            tokio::time::sleep(within).await;
            if let Some(s) = weak.upgrade() {
                lock(&s).take();
            }
        });
        let slot = UploadSlot(slot, Instant::now() + within);
        if let Some(l) = self.inner.local_swarm(&d)
            && l.geo == geo
        {
            if !lock(&l.have).get(index) {
                return Err(Refused::NoPiece { digest: d, index });
            }
            let mut have = lock(&l.have).clone();
            if l.seeding.load(Ordering::Relaxed) && self.inner.is_owner_of(&d) {
                let me = &self.inner.cfg.node_id;
                let mut map = lock(&self.inner.swarm.trackers);
                if let Some(Track::Live(t)) = map.get_mut(&d) {
                    let now = t.born.elapsed();
                    // This request's slot is taken: spare means no other upload runs.
                    let spare = self.inner.swarm.upload.available_permits() + 1 >= UPLOAD_SLOTS;
                    if !t.seed.try_serve(index, now, t.tracker.others_holding(me, index), spare) {
                        return Err(Refused::Declined(index));
                    }
                    // Askers learn of the owner only what it would serve them.
                    have = t.seed.offer(&have, now, |i| t.tracker.others_holding(me, i), spare);
                }
            }
            let p = Arc::clone(&l.partial);
            let start = range.start;
            let read = self.inner.store.run(move |_| p.read_at(start, len)).await;
            if let Ok(b) = read {
                return Ok(ServedPiece { bytes: Bytes::from(b), have, slot });
            }
        }
        match self.local_size(d).await? {
            Some(size) if size == geo.blob_size() => {}
            _ => return Err(Refused::NoPiece { digest: d, index }),
        }
        let (_, _, mut s) = self.local_blob(d, range.start, Some(len)).await?;
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(ServedPiece { bytes: Bytes::from(out), have: Bitfield::full(geo.count()), slot })
    }

    /// Upload slots in use now (of [`UPLOAD_SLOTS`]).
    pub fn swarm_uploads(&self) -> usize {
        UPLOAD_SLOTS.saturating_sub(self.inner.swarm.upload.available_permits())
    }

    /// Peers excluded from swarm transfers for wrong pieces, since start.
    pub fn swarm_excluded(&self) -> u64 {
        self.inner.swarm.excluded.load(Ordering::Relaxed)
    }
}

/// The owner's origin read: when `src` (an origin) declares a size worth
/// swarming, streams it into a partial blob, publishing each piece's hash
/// as it completes, and stores it. Otherwise gives the opened body back
/// for the whole-blob path.
pub(crate) async fn seed(inner: &Arc<Inner>, d: Digest, src: &dyn Source) -> Result<Option<RemoteBlob>> {
    let remote = src.open(&d).await?;
    if inner.local_swarm(&d).is_some() {
        // This node is in the swarm already (as an asker): its partial
        // blob is that transfer's; this read goes the whole-blob way.
        return Ok(Some(remote));
    }
    let Some(geo) = remote.size.and_then(|s| swarm_geometry(inner, s)) else {
        inner.track_mark(d, Track::Whole(Instant::now()));
        return Ok(Some(remote));
    };
    let name = src.name();
    let store = inner.store.clone();
    let size = geo.blob_size();
    let partial = inner.store.run(move |s| s.partial(&d, size)).await.map_err(|e| local(d, e))?;
    let _ = store;
    let l = Arc::new(LocalSwarm {
        geo,
        partial: Arc::clone(&partial),
        have: Mutex::new(Bitfield::new(geo.count())),
        hashes: Mutex::new(PieceHashes::new(geo)),
        seeding: AtomicBool::new(true),
    });
    lock(&inner.swarm.local).insert(d, Arc::clone(&l));
    inner.track_live(d, geo, &PieceHashes::new(geo));
    let res = seed_stream(inner, d, &l, remote, &name, src.idle()).await;
    let res = match res {
        Ok(()) => {
            inner.track_complete(d, &l);
            finish(inner, &partial, &name, true).await
        }
        Err(e) => {
            partial.abandon();
            Err(e)
        }
    };
    lock(&inner.swarm.local).remove(&d);
    inner.recorder().swarm(&SwarmReport {
        digest: Some(d),
        origin: (u64::from(geo.count()), size),
        ..Default::default()
    });
    res.map(|()| None)
}

async fn seed_stream(
    inner: &Arc<Inner>,
    d: Digest,
    l: &Arc<LocalSwarm>,
    mut remote: RemoteBlob,
    name: &str,
    idle: Duration,
) -> Result<()> {
    let mut hasher = PieceHasher::new(l.geo);
    let mut at = 0u64;
    // Bytes read but not yet written, from `written`: an origin behind a
    // shaped link sends a few KiB at a time, and a blocking-pool write per
    // chunk cost more CPU (thread wake-ups) than everything else together.
    let mut pending = bytes::BytesMut::new();
    let mut written = 0u64;
    let mut done = Vec::new();
    loop {
        let next = match tokio::time::timeout(idle, remote.body.next()).await {
            Ok(n) => n,
            Err(_) => return Err(ClusterError::Stalled { source_name: name.to_owned(), digest: d, after: idle }),
        };
        let chunk = match next {
            None => None,
            Some(c) => Some(c?),
        };
        if let Some(chunk) = &chunk {
            at = at.checked_add(chunk.len() as u64).filter(|e| *e <= l.geo.blob_size()).ok_or_else(|| {
                ClusterError::Truncated {
                    source_name: name.to_owned(),
                    digest: d,
                    reason: "body longer than declared".into(),
                }
            })?;
            done.extend(hasher.update(chunk).map_err(|e| ClusterError::Truncated {
                source_name: name.to_owned(),
                digest: d,
                reason: e.to_string(),
            })?);
            pending.extend_from_slice(chunk);
            crate::net::gather_after(chunk.len()).await;
        }
        // A finished piece is written at once, so it is served without delay.
        if !pending.is_empty() && (chunk.is_none() || !done.is_empty() || pending.len() >= SEED_WRITE_BATCH) {
            let p = Arc::clone(&l.partial);
            let b = pending.split().freeze();
            let n = b.len() as u64;
            inner.store.run(move |_| p.write_at(written, &b)).await.map_err(|e| local(d, e))?;
            written += n;
            for (i, h) in done.drain(..) {
                let _ = lock(&l.hashes).set(i, h);
                lock(&l.have).set(i);
            }
        }
        if chunk.is_none() {
            break;
        }
    }
    if at != l.geo.blob_size() {
        return Err(ClusterError::Truncated {
            source_name: name.to_owned(),
            digest: d,
            reason: format!("got {at} of {} bytes", l.geo.blob_size()),
        });
    }
    Ok(())
}

/// The geometry of a blob of `size` when it is worth swarming here.
fn swarm_geometry(inner: &Inner, size: u64) -> Option<Geometry> {
    if size < MIN_SWARM_BLOB || size > inner.cfg.max_blob_size {
        return None;
    }
    Geometry::new(size, piece_size_for(size)).ok().filter(Geometry::worth_swarming)
}

fn local(d: Digest, e: StoreError) -> ClusterError {
    ClusterError::LocalWrite { digest: d, source: e }
}

/// Verifies and stores the blob. `read_origin`: this node read (some of)
/// it from the origin, and so queues its copy to the durable tier, as the
/// whole-blob path does for an origin's blob. Whichever node read the
/// origin queues it: the owner (`seed`), or a node that took over from a
/// dead owner and read pieces by range. An asker served by peers only
/// does not: the owner's copy is queued already, and N askers would race
/// N uploads of the same blob (each a HEAD at least) for nothing.
async fn finish(inner: &Arc<Inner>, partial: &Arc<PartialBlob>, name: &str, read_origin: bool) -> Result<()> {
    let p = Arc::clone(partial);
    let d = partial.digest();
    match inner.store.run(move |_| p.finish()).await {
        Ok(out) => {
            if read_origin
                && !out.existed
                && let Some(tier) = inner.store.tier()
            {
                tier.upload_in_background(out.digest);
            }
            Ok(())
        }
        Err(StoreError::DigestMismatch { expected, actual }) => {
            Err(ClusterError::Corrupt { source_name: name.to_owned(), expected, actual })
        }
        Err(e) => Err(local(d, e)),
    }
}

/// A node that does not own `d` joins the owner's swarm: learns the
/// geometry from the owner's tracker, then pulls every piece from the
/// holders it names (and, should it become the owner, from the origin).
/// An error sends the transfer on to the whole-blob sources.
pub(crate) async fn join(inner: &Arc<Inner>, d: Digest) -> Result<()> {
    let unavailable = |why: String| ClusterError::Unavailable { digest: d, tried: vec![format!("swarm: {why}")] };
    let owner = inner.owners_before_me(&d).into_iter().next().ok_or_else(|| unavailable("no owner".into()))?;
    let hello = serde_json::to_vec(&WireAnnounce::hello()).map_err(|e| ClusterError::Task(e.to_string()))?;
    let give_up = Instant::now() + crate::fetch::source::owner::idle(&inner.cfg);
    let geo = loop {
        match inner.api.swarm_announce(&owner, &d, &inner.cfg.node_id, hello.clone()).await {
            Ok(body) => {
                let w: WireAnswer = serde_json::from_slice(&body)
                    .map_err(|e| unavailable(format!("owner {owner} sent a malformed answer: {e}")))?;
                let g = Geometry::new(w.hashes.blob_size, w.hashes.piece_size)
                    .map_err(|e| unavailable(format!("owner {owner}: {e}")))?;
                break swarm_geometry(inner, g.blob_size())
                    .filter(|x| *x == g)
                    .ok_or_else(|| unavailable(format!("owner {owner} swarms a geometry this node does not")))?;
            }
            Err(ClusterError::PeerStatus { status: 503, .. }) if Instant::now() < give_up => {
                // The owner is opening the origin: ask again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(unavailable(e.to_string())),
        }
    };
    match run_local(inner, d, geo).await {
        Err(ClusterError::Corrupt { expected, actual, .. }) => Err(lying_owner(inner, &owner, expected, actual)),
        res => res,
    }
}

/// Every piece matched the owner's hash and the blob does not match its
/// digest: the owner published a wrong hash list (only it publishes them).
/// It is named in the log, counted as excluded, and the transfer goes on to
/// the whole-blob sources, where the origin's copy is checked again.
fn lying_owner(inner: &Inner, addr: &str, expected: Digest, actual: Digest) -> ClusterError {
    let id = inner.peers.members().into_iter().find(|(_, a)| a == addr).map_or_else(|| addr.to_owned(), |(i, _)| i);
    let why = "published piece hashes of another blob (every piece matched, the whole blob did not)".to_owned();
    tracing::warn!(digest = %expected, owner = %id, addr = %addr, reason = %why, "swarm owner excluded");
    inner.swarm.excluded.fetch_add(1, Ordering::Relaxed);
    inner.recorder().swarm(&SwarmReport {
        digest: Some(expected),
        excluded: vec![(id.clone(), why)],
        ..Default::default()
    });
    ClusterError::Corrupt { source_name: format!("the swarm of owner {id} ({addr})"), expected, actual }
}

async fn run_local(inner: &Arc<Inner>, d: Digest, geo: Geometry) -> Result<()> {
    let size = geo.blob_size();
    let partial = inner.store.run(move |s| s.partial(&d, size)).await.map_err(|e| local(d, e))?;
    let l = Arc::new(LocalSwarm {
        geo,
        partial: Arc::clone(&partial),
        have: Mutex::new(Bitfield::new(geo.count())),
        hashes: Mutex::new(PieceHashes::new(geo)),
        seeding: AtomicBool::new(false),
    });
    lock(&inner.swarm.local).insert(d, Arc::clone(&l));
    let io = Arc::new(NodeIo {
        inner: Arc::clone(inner),
        d,
        l: Arc::clone(&l),
        seen: Arc::new(Mutex::new(HashSet::new())),
        counts: Arc::new(Mutex::new(((0, 0), (0, 0)))),
    });
    let cfg = SchedulerConfig { seed: rand::random(), ..SchedulerConfig::default() };
    let out = crate::swarm_run::run(Arc::clone(&io) as Arc<dyn SwarmIo<String>>, geo, cfg).await;
    let res = match out {
        Ok(o) => {
            for (p, why) in &o.excluded {
                tracing::warn!(digest = %d, peer = %p, reason = %why, "swarm peer excluded");
            }
            inner.swarm.excluded.fetch_add(o.excluded.len() as u64, Ordering::Relaxed);
            inner.track_complete(d, &l);
            let (origin, peers) = *lock(&io.counts);
            inner.recorder().swarm(&SwarmReport { digest: Some(d), origin, peers, excluded: o.excluded });
            finish(inner, &partial, "the swarm", origin.0 > 0).await
        }
        Err(e) => {
            partial.abandon();
            let store = inner.store.clone();
            if matches!(crate::fetch::blocking(move || store.exists(&d)).await, Ok(true)) {
                // Another transfer of this node (one it started as owner in a
                // view where the owner was down) stored the blob meanwhile,
                // which closed this one's partial blob: the blob is here.
                tracing::debug!(digest = %d, error = %e, "swarm transfer ended by a whole-blob transfer of the same blob");
                Ok(())
            } else {
                Err(ClusterError::Unavailable { digest: d, tried: vec![format!("swarm: {e}")] })
            }
        }
    };
    lock(&inner.swarm.local).remove(&d);
    res
}

/// The network and disk of one swarm transfer of this node.
struct NodeIo {
    inner: Arc<Inner>,
    d: Digest,
    l: Arc<LocalSwarm>,
    /// Peers heard of, to tell which are gone.
    seen: Arc<Mutex<HashSet<String>>>,
    /// Pieces and bytes fetched from the origin and from peers.
    counts: Arc<Mutex<Counts>>,
}

type Counts = ((u64, u64), (u64, u64));

fn failure(e: &ClusterError) -> Failure {
    match e {
        ClusterError::PeerStatus { status: 503, .. } => Failure::Busy,
        ClusterError::PeerStatus { status: 404, .. } => Failure::Missing,
        ClusterError::PeerStatus { status: 429, .. } => Failure::Declined,
        e if e.peer_is_down() => Failure::Gone,
        _ => Failure::Error,
    }
}

impl NodeIo {
    fn addr_of(&self, id: &str) -> Option<String> {
        self.inner.peers.members().into_iter().find(|(i, _)| i == id).map(|(_, a)| a)
    }

    fn count_fn(&self, origin: bool) -> impl Fn(u64) + Send + 'static {
        let counts = Arc::clone(&self.counts);
        move |n| {
            let mut c = lock(&counts);
            let slot = if origin { &mut c.0 } else { &mut c.1 };
            slot.0 = slot.0.saturating_add(1);
            slot.1 = slot.1.saturating_add(n);
        }
    }

    /// Turns a tracker answer into the driver's view, adopting its hashes
    /// and remembering its peers.
    fn viewer(&self) -> impl Fn(Answer) -> TrackerView<String> + Send + 'static {
        let (l, seen, me) = (Arc::clone(&self.l), Arc::clone(&self.seen), self.inner.cfg.node_id.clone());
        move |a: Answer| {
            let _ = lock(&l.hashes).adopt(&a.hashes);
            let mut seen = lock(&seen);
            let peers = a
                .peers
                .into_iter()
                .filter(|p| p.node_id != me)
                .map(|p| {
                    seen.insert(p.node_id.clone());
                    (p.node_id, p.have)
                })
                .collect();
            TrackerView { hashes: a.hashes, peers, interval: a.interval }
        }
    }
}

impl SwarmIo<String> for NodeIo {
    fn fetch(
        &self,
        from: PieceSource<String>,
        piece: u32,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'static, Result<Served, Failure>> {
        let inner = Arc::clone(&self.inner);
        let (d, geo) = (self.d, self.l.geo);
        match from {
            PieceSource::Origin => {
                // A new owner's fresh pieces go to one asker each, as the first owner's did.
                self.l.seeding.store(true, Ordering::Relaxed);
                let io_counts = self.count_fn(true);
                Box::pin(async move {
                    let b = origin_range(&inner, d, range).await?;
                    io_counts(b.len() as u64);
                    Ok(Served::from(b))
                })
            }
            PieceSource::Peer(id) => {
                let addr = self.addr_of(&id);
                let io_counts = self.count_fn(false);
                Box::pin(async move {
                    let addr = addr.ok_or(Failure::Gone)?;
                    let got = inner
                        .api
                        .swarm_piece(&addr, &d, piece, geo.blob_size(), geo.piece_size())
                        .await
                        .map_err(|e| failure(&e))?;
                    io_counts(got.bytes.len() as u64);
                    // A bitfield that does not parse is only not learnt from.
                    let have = got.have.and_then(|h| Bitfield::from_hex(geo.count(), &h).ok());
                    Ok(Served { bytes: got.bytes, have })
                })
            }
        }
    }

    fn poll(&self, have: Bitfield, excluded: Vec<String>) -> BoxFuture<'static, Option<TrackerView<String>>> {
        let ann = WireAnnounce::new(&self.l.geo, &have).knowing(lock(&self.l.hashes).known()).excluding(excluded);
        if self.inner.is_owner_of(&self.d) {
            let a = self.inner.answer(self.d, &self.inner.cfg.node_id.clone(), &ann, false);
            let v = a.ok().map(self.viewer());
            return Box::pin(async move { v });
        }
        let inner = Arc::clone(&self.inner);
        let d = self.d;
        let geo = self.l.geo;
        let owner = inner.owners_before_me(&d).into_iter().next();
        let this = self.viewer();
        Box::pin(async move {
            let owner = owner?;
            let body = serde_json::to_vec(&ann).ok()?;
            let raw = inner.api.swarm_announce(&owner, &d, &inner.cfg.node_id, body).await.ok()?;
            match Answer::parse(&raw, &geo) {
                Ok(a) => Some(this(a)),
                Err(e) => {
                    tracing::warn!(owner = %owner, digest = %d, error = %e, "owner's tracker answer refused");
                    None
                }
            }
        })
    }

    fn store(&self, piece: u32, offset: u64, bytes: Bytes) -> BoxFuture<'static, Result<(), String>> {
        let l = Arc::clone(&self.l);
        let store = self.inner.store.clone();
        Box::pin(async move {
            let p = Arc::clone(&l.partial);
            store.run(move |_| p.write_at(offset, &bytes)).await.map_err(|e: StoreError| e.to_string())?;
            lock(&l.have).set(piece);
            Ok(())
        })
    }

    fn is_owner(&self) -> bool {
        self.inner.is_owner_of(&self.d)
    }

    fn gone(&self) -> Vec<String> {
        let live: HashSet<String> = self.inner.peers.members().into_iter().map(|(i, _)| i).collect();
        let mut seen = lock(&self.seen);
        let gone: Vec<String> = seen.iter().filter(|p| !live.contains(*p)).cloned().collect();
        for g in &gone {
            seen.remove(g);
        }
        gone
    }

    fn published(&self, _piece: u32, hashes: &PieceHashes) {
        let _ = lock(&self.l.hashes).adopt(hashes);
    }
}

/// Bytes `range` of `d` from the first URL origin, by a ranged GET (an
/// origin that ignores the range sends the whole body: the bytes before
/// the range are skipped, and the connection closed after it).
async fn origin_range(inner: &Inner, d: Digest, range: std::ops::Range<u64>) -> Result<Bytes, Failure> {
    let Some(origin) = inner.cfg.origins.iter().find(|o| matches!(o, Origin::Http { .. })) else {
        return Err(Failure::Gone);
    };
    let len = range.end.checked_sub(range.start).ok_or(Failure::Error)?;
    let want = usize::try_from(len).map_err(|_| Failure::Error)?;
    let timeout = origin.timeout().unwrap_or(inner.cfg.peer_timeout);
    let req = inner
        .http
        .get(origin.url(&d))
        .header(reqwest::header::RANGE, format!("bytes={}-{}", range.start, range.end.saturating_sub(1)));
    let resp = tokio::time::timeout(timeout, req.send()).await.map_err(|_| Failure::Error)?.map_err(|e| {
        tracing::debug!(digest = %d, error = %crate::net::error_chain(&e), "origin piece request failed");
        Failure::Error
    })?;
    let mut skip = match resp.status().as_u16() {
        206 => 0,
        200 => range.start,
        _ => return Err(Failure::Error),
    };
    let mut body = resp.bytes_stream();
    let mut out = Vec::with_capacity(want);
    while out.len() < want {
        let c = match tokio::time::timeout(timeout, body.next()).await {
            Ok(Some(Ok(c))) => c,
            _ => return Err(Failure::Error),
        };
        let mut c = &c[..];
        if skip > 0 {
            let n = usize::try_from(skip.min(c.len() as u64)).unwrap_or(c.len());
            c = &c[n..];
            skip -= n as u64;
        }
        let take = c.len().min(want - out.len());
        out.extend_from_slice(&c[..take]);
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterConfig;
    use crate::peer::{BoxFut, ManifestEntry, PeerApi, PeerHealth};
    use cairn_store::{RefFile, Store};

    struct NoPeers;

    fn none<T>(peer: &str) -> Result<T> {
        Err(ClusterError::PeerUnreachable { peer: peer.to_owned(), reason: "no peers in this test".into() })
    }

    impl PeerApi for NoPeers {
        fn health<'a>(&'a self, peer: &'a str) -> BoxFut<'a, PeerHealth> {
            Box::pin(async move { none(peer) })
        }
        fn head_blob<'a>(&'a self, peer: &'a str, _: &'a Digest) -> BoxFut<'a, Option<u64>> {
            Box::pin(async move { none(peer) })
        }
        fn get_blob<'a>(&'a self, peer: &'a str, _: &'a Digest) -> BoxFut<'a, RemoteBlob> {
            Box::pin(async move { none(peer) })
        }
        fn list_manifests<'a>(&'a self, peer: &'a str) -> BoxFut<'a, Vec<ManifestEntry>> {
            Box::pin(async move { none(peer) })
        }
        fn get_manifest<'a>(&'a self, peer: &'a str, _: &'a RefFile) -> BoxFut<'a, Vec<u8>> {
            Box::pin(async move { none(peer) })
        }
    }

    /// An origin in memory.
    struct Mem(Bytes);

    impl Source for Mem {
        fn name(&self) -> String {
            "memory origin".into()
        }
        fn kind(&self) -> crate::fetch::SourceKind {
            crate::fetch::SourceKind::Origin
        }
        fn idle(&self) -> Duration {
            Duration::from_secs(5)
        }
        fn open<'a>(&'a self, _: &'a Digest) -> BoxFut<'a, RemoteBlob> {
            let b = self.0.clone();
            Box::pin(async move {
                let chunks: Vec<Result<Bytes>> = b.chunks(100_000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
                Ok(RemoteBlob { size: Some(b.len() as u64), body: Box::pin(futures_util::stream::iter(chunks)) })
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_that_took_over_the_origin_read_passes_each_fresh_piece_to_one_asker() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(16u32 << 20)).map(|i| (i % 239) as u8).collect();
        let d = Digest::of(&data);
        // Slow enough to ask for pieces while the read goes on.
        let spec = cairn_testkit::paced::PacedSpec { rate: Some(8 << 20), ..Default::default() };
        let origin = cairn_testkit::paced::PacedOrigin::start(std::slice::from_ref(&data), spec);
        let cfg = ClusterConfig {
            node_id: "me".into(),
            swarm: true,
            origins: vec![Origin::http(&origin.template()).unwrap()],
            ..Default::default()
        };
        let c = Cluster::new(Store::open(dir.path()).unwrap(), cfg, Arc::new(NoPeers));
        // As a node that became the owner mid-swarm: it reads the rest by range.
        let geo = swarm_geometry(&c.inner, data.len() as u64).unwrap();
        let inner = Arc::clone(&c.inner);
        let run = tokio::spawn(async move { run_local(&inner, d, geo).await });
        let deadline = Instant::now() + Duration::from_secs(10);
        let held = loop {
            let l = c.inner.local_swarm(&d);
            if let Some(i) = l.as_ref().and_then(|l| lock(&l.have).iter().next()) {
                break i;
            }
            assert!(Instant::now() < deadline, "no piece arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // An asker announces: the node tracks, then serves a fresh piece once.
        c.inner.answer(d, "asker", &WireAnnounce::hello(), false).unwrap();
        assert!(c.swarm_piece(d, held, geo).await.is_ok());
        assert!(
            matches!(c.swarm_piece(d, held, geo).await, Err(Refused::Declined(_))),
            "a second asker gets it from the first, not from this node's uplink again"
        );
        run.await.unwrap().unwrap();
        assert!(c.store().exists(&d));
    }

    #[tokio::test]
    async fn the_owners_tracker_publishes_every_piece_hash_once_its_origin_read_ended() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ClusterConfig { node_id: "me".into(), swarm: true, ..Default::default() };
        let c = Cluster::new(Store::open(dir.path()).unwrap(), cfg, Arc::new(NoPeers));
        let data: Vec<u8> = (0..(16u32 << 20)).map(|i| (i % 251) as u8).collect();
        let d = Digest::of(&data);
        let geo = swarm_geometry(&c.inner, data.len() as u64).unwrap();
        // No asker polls during the read: the tracker learns the hashes at its end.
        assert!(seed(&c.inner, d, &Mem(Bytes::from(data.clone()))).await.unwrap().is_none());
        assert!(c.store().exists(&d));
        let hello = WireAnnounce::hello();
        let a = c.inner.answer(d, "asker", &hello, true).unwrap();
        assert_eq!(a.hashes.known().ones(), geo.count(), "every piece hash is published");
        assert_eq!(a.peers.len(), 1, "the owner itself holds every piece");
        assert!(a.peers[0].have.is_full());
        // A stranger (not a member) is answered but neither tracked nor
        // named to others, whatever it claims: the tracker stays as big as
        // the cluster.
        let claim = WireAnnounce::new(&geo, &Bitfield::full(geo.count()));
        assert!(c.inner.answer(d, "stranger", &claim, true).is_ok());
        let tracked = match lock(&c.inner.swarm.trackers).get(&d) {
            Some(Track::Live(t)) => t.tracker.len(),
            _ => 0,
        };
        assert_eq!(tracked, 1, "only the owner itself is tracked");
        // An asker that knows some hashes gets only the others.
        let mut known = Bitfield::new(geo.count());
        (0..geo.count() - 2).for_each(|i| {
            known.set(i);
        });
        let ann = WireAnnounce::new(&geo, &Bitfield::new(geo.count())).knowing(&known);
        let b = c.inner.answer(d, "asker", &ann, true).unwrap();
        assert_eq!(b.hashes.known().iter().collect::<Vec<_>>(), [geo.count() - 2, geo.count() - 1]);
        let mut mine = PieceHashes::new(geo);
        mine.adopt(&a.hashes.without(&b.hashes.known().clone())).unwrap();
        assert_eq!(mine.adopt(&b.hashes), Ok(2), "the rest of the list, consistent with the first part");
        // And a piece is served from the stored blob, checked against its hash.
        let got = c.swarm_piece(d, geo.count() - 1, geo).await.unwrap();
        assert_eq!(a.hashes.verify(geo.count() - 1, &got.bytes), crate::swarm::Verdict::Good);
        assert!(got.have.is_full(), "a node holding the blob whole says so with each piece");
    }

    #[test]
    fn a_pieces_send_deadline_is_one_second_plus_its_bytes_at_the_slowest_rate_and_capped_at_the_biggest_piece() {
        let cfg = ClusterConfig::default();
        assert_eq!(send_deadline(&cfg, 8 << 20), Duration::from_secs(9));
        assert_eq!(send_deadline(&cfg, 512 << 10), Duration::from_millis(1500));
        assert_eq!(send_deadline(&cfg, 0), SEND_GRACE);
        // A hostile asker's 64 MiB piece gets no more time than an 8 MiB one.
        assert_eq!(send_deadline(&cfg, 64 << 20), Duration::from_secs(9));
        // The node's own egress limit, shared by the slots, slows the rate.
        let slow = ClusterConfig { egress_limit: Some(3 << 19), ..Default::default() };
        assert_eq!(send_deadline(&slow, 8 << 20), Duration::from_secs(17));
        let zero = ClusterConfig { swarm_min_send_rate: 0, egress_limit: Some(0), ..Default::default() };
        assert!(send_deadline(&zero, 8 << 20) > Duration::from_secs(1 << 20), "no division by zero");
    }

    /// A store in front of a moto bucket, `None` when moto is not installed.
    fn tiered(test: &str) -> Option<(cairn_testkit::s3::MotoServer, tempfile::TempDir, Store)> {
        use cairn_store::backend::object::{ObjectBackend, S3Options};
        let m = cairn_testkit::s3::MotoServer::start(test)?;
        let mut o = S3Options::new(&m.bucket, &m.region);
        o.endpoint = Some(m.endpoint.clone());
        o.credentials = Some((m.access_key.clone(), m.secret_key.clone()));
        let bucket = ObjectBackend::s3(&o).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let opts = cairn_store::StoreOptions::default();
        let s = Store::open_tiered(dir.path(), opts, bucket, cairn_store::tier::TierOptions::default()).unwrap();
        Some((m, dir, s))
    }

    /// Waits (at most 30 s) for the background upload of `d` to land in the bucket.
    async fn in_bucket(c: &Cluster, d: &Digest) -> bool {
        let tier = Arc::clone(c.store().tier().unwrap());
        let d = *d;
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            let t = Arc::clone(&tier);
            if tokio::task::spawn_blocking(move || t.bucket().has_blob(&d)).await.unwrap().unwrap_or(false) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_owners_swarmed_origin_read_is_queued_to_the_durable_tier() {
        let Some((_m, _dir, store)) = tiered("the_owners_swarmed_origin_read_is_queued_to_the_durable_tier") else {
            return;
        };
        let cfg = ClusterConfig { node_id: "me".into(), swarm: true, ..Default::default() };
        let c = Cluster::new(store, cfg, Arc::new(NoPeers));
        let data: Vec<u8> = (0..(16u32 << 20)).map(|i| (i % 253) as u8).collect();
        let d = Digest::of(&data);
        assert!(seed(&c.inner, d, &Mem(Bytes::from(data))).await.unwrap().is_none(), "the read was swarmed");
        assert_eq!(c.store().tier().unwrap().stats().background_queued, 1, "queued once");
        assert!(in_bucket(&c, &d).await, "the blob never reached the bucket");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_swarm_transfer_that_read_pieces_from_the_origin_queues_the_blob_to_the_durable_tier() {
        let name = "a_swarm_transfer_that_read_pieces_from_the_origin_queues_the_blob_to_the_durable_tier";
        let Some((_m, _dir, store)) = tiered(name) else { return };
        let data: Vec<u8> = (0..(16u32 << 20)).map(|i| (i % 241) as u8).collect();
        let d = Digest::of(&data);
        let origin = cairn_testkit::paced::PacedOrigin::start(std::slice::from_ref(&data), Default::default());
        let cfg = ClusterConfig {
            node_id: "me".into(),
            swarm: true,
            origins: vec![Origin::http(&origin.template()).unwrap()],
            ..Default::default()
        };
        let c = Cluster::new(store, cfg, Arc::new(NoPeers));
        // As a node that became the owner mid-swarm: every piece by range from the origin.
        let geo = swarm_geometry(&c.inner, data.len() as u64).unwrap();
        run_local(&c.inner, d, geo).await.unwrap();
        assert!(c.store().exists(&d));
        assert!(origin.requests() > 1, "pieces came by range");
        assert_eq!(c.store().tier().unwrap().stats().background_queued, 1, "queued once");
        assert!(in_bucket(&c, &d).await, "the blob never reached the bucket");
    }
}
