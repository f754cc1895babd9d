//! One node's transfer of one blob: which piece to ask of whom next.
//!
//! The scheduler only decides; the caller sends the requests it returns,
//! reports how each ended, and cancels the ones it is told to. Time is a
//! value the caller passes (a `Duration` since any fixed start), so the
//! same code runs in the node and in the simulator.
//!
//! Policy: rarest piece first among the pieces whose hash is known (ties
//! broken at random, so askers spread), from the usable holder with the
//! best measured rate; at most `max_requests` pieces in flight to peers and
//! `max_per_peer` to one peer. The origin is asked only when this node is
//! the owner, and only for pieces no peer in view holds, lowest first (a
//! sequential read). When every missing piece is in flight, a piece may be
//! asked of a second peer (endgame); the first good copy wins and the
//! other is cancelled. A wrong piece excludes its peer for good; a busy,
//! failing or stalled peer is backed off; a peer that fails too often is
//! dropped from view.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::Range;
use std::time::Duration;

use super::{Bitfield, Geometry, Rng, SwarmError};

/// Where a piece is asked from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PieceSource<P> {
    /// A peer of the swarm.
    Peer(P),
    /// The origin (only the owner asks it).
    Origin,
}

/// A piece asked of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<P> {
    /// The piece.
    pub piece: u32,
    /// Whom it is asked of.
    pub from: PieceSource<P>,
    /// Its bytes in the blob.
    pub range: Range<u64>,
    /// When it was handed out.
    pub sent: Duration,
    /// When it is stalled: [`Scheduler::expire`] cancels it then.
    pub deadline: Duration,
}

/// Whether a piece's bytes matched its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// They did (for the origin: the owner hashed them itself).
    Good,
    /// They did not, or their length was wrong.
    Bad,
}

/// How a request failed without bringing bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The source is serving as many as it will: try others for a while.
    Busy,
    /// The peer says it does not have the piece (it reset, or our view of
    /// it was wrong).
    Missing,
    /// The peer holds the piece but declines to serve it now (the owner
    /// passing a fresh piece to a few askers only): ask others for it, with
    /// no penalty to the peer. Its next have-state brings the piece back.
    Declined,
    /// A transport error, a cut body, an error status.
    Error,
    /// The peer is gone (connection refused, marked down).
    Gone,
}

/// What a received piece led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received<P> {
    /// Verified and now held; cancel these requests for the same piece.
    Stored {
        /// Other copies of the piece still in flight (endgame).
        cancel: Vec<Request<P>>,
    },
    /// A wrong piece from a peer: the peer is excluded; cancel these
    /// requests still in flight to it.
    Excluded {
        /// Its other requests.
        cancel: Vec<Request<P>>,
    },
    /// Not asked for (any more), or already held: nothing changed.
    Ignored,
}

/// The scheduler's limits and timings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Pieces in flight from peers at once.
    pub max_requests: usize,
    /// Pieces in flight from one peer at once.
    pub max_per_peer: usize,
    /// Pieces in flight from the origin at once (owner only).
    pub max_origin_requests: usize,
    /// A request's deadline: this, plus its bytes at `min_rate`.
    pub request_timeout: Duration,
    /// The slowest rate a piece may come at before it counts as stalled
    /// (bytes per second; 0: only `request_timeout`).
    pub min_rate: u64,
    /// How long a busy peer is left alone.
    pub busy_backoff: Duration,
    /// How long a failing or stalled peer is left alone.
    pub error_backoff: Duration,
    /// Failures (errors, stalls) after which a peer is dropped from view.
    pub max_errors: u32,
    /// Copies of one piece in flight at once in the endgame (1: none).
    pub endgame_copies: u8,
    /// Peers kept in view; past it the longest-unheard idle one is dropped.
    pub max_peers: usize,
    /// Seed of the tie-breaks.
    pub seed: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_requests: 8,
            max_per_peer: 2,
            // A ranged GET waits a first byte (20 ms at the bench's origin)
            // before its piece (21 ms for 512 KiB at 200 Mbit/s): four keep a
            // new owner's origin link busy; two left it half idle.
            max_origin_requests: 4,
            request_timeout: Duration::from_secs(10),
            min_rate: 1 << 20,
            busy_backoff: Duration::from_millis(200),
            error_backoff: Duration::from_secs(2),
            max_errors: 3,
            endgame_copies: 2,
            max_peers: 64,
            seed: 0,
        }
    }
}

/// What the scheduler knows of one peer.
#[derive(Debug, Clone)]
struct Peer {
    have: Bitfield,
    /// Requests in flight to it.
    inflight: usize,
    /// Measured rate in bytes per second; 0 until a piece came.
    rate: u64,
    backoff_until: Duration,
    errors: u32,
    /// When its have-state was last heard.
    seen: Duration,
}

/// One node's transfer of one blob.
#[derive(Debug, Clone)]
pub struct Scheduler<P> {
    geo: Geometry,
    cfg: SchedulerConfig,
    have: Bitfield,
    /// Pieces whose hash is known: only these are asked of peers.
    verifiable: Bitfield,
    /// Whether this node may ask the origin (it is the owner).
    origin: bool,
    peers: BTreeMap<P, Peer>,
    excluded: BTreeMap<P, String>,
    /// Holders of each piece among the peers in view.
    avail: Vec<u32>,
    /// Copies of each piece in flight.
    copies: Vec<u8>,
    /// Pieces with at least one copy in flight.
    pending: Bitfield,
    requests: Vec<Request<P>>,
    rng: Rng,
    origin_bytes: u64,
    /// The origin failed: not asked before this.
    origin_backoff_until: Duration,
    peer_bytes: u64,
}

impl<P: Clone + Ord + Debug> Scheduler<P> {
    /// A transfer of a blob of geometry `geo`, holding nothing yet.
    pub fn new(geo: Geometry, cfg: SchedulerConfig) -> Self {
        let n = geo.count();
        let rng = Rng::new(cfg.seed);
        Scheduler {
            geo,
            cfg,
            have: Bitfield::new(n),
            verifiable: Bitfield::new(n),
            origin: false,
            peers: BTreeMap::new(),
            excluded: BTreeMap::new(),
            avail: vec![0; n as usize],
            copies: vec![0; n as usize],
            pending: Bitfield::new(n),
            requests: Vec::new(),
            rng,
            origin_bytes: 0,
            origin_backoff_until: Duration::ZERO,
            peer_bytes: 0,
        }
    }

    /// The blob's geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// The pieces held (verified).
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// True once every piece is held.
    pub fn is_complete(&self) -> bool {
        self.have.is_full()
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> &[Request<P>] {
        &self.requests
    }

    /// Peers excluded for sending a wrong piece, with why.
    pub fn excluded(&self) -> &BTreeMap<P, String> {
        &self.excluded
    }

    /// Peers in view.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Whether `peer` is in view.
    pub fn knows(&self, peer: &P) -> bool {
        self.peers.contains_key(peer)
    }

    /// Bytes received from the origin and from peers (good pieces only).
    pub fn bytes_received(&self) -> (u64, u64) {
        (self.origin_bytes, self.peer_bytes)
    }

    /// Whether this node may ask the origin.
    pub fn origin_allowed(&self) -> bool {
        self.origin
    }

    /// Lets (or stops) this node ask the origin: it is (or is no longer)
    /// the first live node of the ranking. Held pieces are kept.
    pub fn set_origin(&mut self, allowed: bool) {
        self.origin = allowed;
    }

    /// Marks pieces whose hash is now known (from the owner's list).
    pub fn hashes_known(&mut self, known: &Bitfield) -> Result<(), SwarmError> {
        self.same_count("hash bitfield", known)?;
        for i in known.iter() {
            self.verifiable.set(i);
        }
        Ok(())
    }

    /// Marks a piece this node already holds (verified elsewhere, e.g.
    /// found in a resumed temp file).
    pub fn mark_held(&mut self, piece: u32) -> Result<(), SwarmError> {
        self.geo.check(piece)?;
        self.have.set(piece);
        self.verifiable.set(piece);
        Ok(())
    }

    /// The earliest deadline in flight: when [`Scheduler::expire`] next has work.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.requests.iter().map(|r| r.deadline).min()
    }

    fn same_count(&self, what: &'static str, b: &Bitfield) -> Result<(), SwarmError> {
        if b.count() == self.geo.count() {
            Ok(())
        } else {
            Err(SwarmError::Length { what, got: u64::from(b.count()), want: u64::from(self.geo.count()) })
        }
    }

    /// Takes a peer's have-state (from the tracker, or with a piece it
    /// served). An excluded peer is ignored. Past `max_peers`, the peer
    /// heard from longest ago with nothing in flight leaves the view (or,
    /// if every one is busy, the new peer is not taken).
    pub fn peer_has(&mut self, now: Duration, peer: P, have: &Bitfield) -> Result<(), SwarmError> {
        self.same_count("peer bitfield", have)?;
        if self.excluded.contains_key(&peer) {
            return Ok(());
        }
        if !self.peers.contains_key(&peer) {
            if self.peers.len() >= self.cfg.max_peers.max(1) {
                let oldest = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.inflight == 0)
                    .min_by_key(|(_, p)| p.seen)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(old) => {
                        self.forget(&old);
                    }
                    None => return Ok(()),
                }
            }
            let empty = Bitfield::new(self.geo.count());
            let p = Peer { have: empty, inflight: 0, rate: 0, backoff_until: Duration::ZERO, errors: 0, seen: now };
            self.peers.insert(peer.clone(), p);
        }
        let Some(p) = self.peers.get_mut(&peer) else { return Ok(()) };
        for (w, (old, new)) in p.have.words().iter().zip(have.words()).enumerate() {
            let (mut gained, mut lost) = (new & !old, old & !new);
            while gained != 0 {
                self.avail[w * 64 + gained.trailing_zeros() as usize] += 1;
                gained &= gained - 1;
            }
            while lost != 0 {
                let a = &mut self.avail[w * 64 + lost.trailing_zeros() as usize];
                *a = a.saturating_sub(1);
                lost &= lost - 1;
            }
        }
        p.have = have.clone();
        p.seen = now;
        Ok(())
    }

    /// Drops `peer` from view; returns its requests, which the caller cancels.
    fn forget(&mut self, peer: &P) -> Vec<Request<P>> {
        if let Some(p) = self.peers.remove(peer) {
            for i in p.have.iter() {
                let a = &mut self.avail[i as usize];
                *a = a.saturating_sub(1);
            }
        }
        let from = PieceSource::Peer(peer.clone());
        let mut cancel = Vec::new();
        let mut i = 0;
        while i < self.requests.len() {
            if self.requests[i].from == from {
                let r = self.requests.swap_remove(i);
                self.uncount(&r);
                cancel.push(r);
            } else {
                i += 1;
            }
        }
        cancel
    }

    /// A peer that left (killed, marked down): forgotten, its requests
    /// returned for the caller to cancel; the pieces go back to the pool.
    /// An owner that left is such a peer too; the next in the ranking
    /// calls [`Scheduler::set_origin`] and keeps what it holds.
    pub fn peer_gone(&mut self, peer: &P) -> Vec<Request<P>> {
        self.forget(peer)
    }

    /// Excludes `peer` for the rest of the transfer (it lied); returns its
    /// requests, which the caller cancels.
    pub fn exclude(&mut self, peer: &P, reason: String) -> Vec<Request<P>> {
        self.excluded.insert(peer.clone(), reason);
        self.forget(peer)
    }

    /// The whole blob failed its digest (the owner lied about the
    /// hashes): every piece and hash is dropped and every request returned
    /// for cancelling. The caller excludes the owner and starts over under
    /// the next one.
    pub fn reset(&mut self) -> Vec<Request<P>> {
        let n = self.geo.count();
        self.have = Bitfield::new(n);
        self.verifiable = Bitfield::new(n);
        self.pending = Bitfield::new(n);
        self.copies = vec![0; n as usize];
        for p in self.peers.values_mut() {
            p.inflight = 0;
        }
        std::mem::take(&mut self.requests)
    }

    /// Removes the request's counts (it left `requests` already).
    fn uncount(&mut self, r: &Request<P>) {
        let c = &mut self.copies[r.piece as usize];
        *c = c.saturating_sub(1);
        if *c == 0 {
            self.pending.clear(r.piece);
        }
        if let PieceSource::Peer(id) = &r.from
            && let Some(p) = self.peers.get_mut(id)
        {
            p.inflight = p.inflight.saturating_sub(1);
        }
    }

    /// Takes the request for `piece` from `from` out of flight.
    fn take(&mut self, from: &PieceSource<P>, piece: u32) -> Option<Request<P>> {
        let at = self.requests.iter().position(|r| r.piece == piece && &r.from == from)?;
        let r = self.requests.swap_remove(at);
        self.uncount(&r);
        Some(r)
    }

    /// A piece arrived from `from`, and was judged `verdict` (by
    /// [`super::PieceHashes::verify`], or good when the owner hashed an
    /// origin piece itself). Good: held, its other copies cancelled. Bad
    /// from a peer: that peer is excluded. Unrequested: ignored.
    pub fn piece_received(
        &mut self,
        now: Duration,
        from: &PieceSource<P>,
        piece: u32,
        verdict: Verdict,
    ) -> Received<P> {
        let Some(r) = self.take(from, piece) else { return Received::Ignored };
        match (verdict, from) {
            (Verdict::Bad, PieceSource::Peer(id)) => {
                let reason = format!("sent a wrong piece {piece}");
                Received::Excluded { cancel: self.exclude(id, reason) }
            }
            (Verdict::Bad, PieceSource::Origin) => Received::Ignored,
            (Verdict::Good, _) => {
                if !self.have.set(piece) {
                    return Received::Ignored;
                }
                let len = r.range.end - r.range.start;
                match from {
                    PieceSource::Origin => self.origin_bytes = self.origin_bytes.saturating_add(len),
                    PieceSource::Peer(id) => {
                        self.peer_bytes = self.peer_bytes.saturating_add(len);
                        if let Some(p) = self.peers.get_mut(id) {
                            let took = now.saturating_sub(r.sent).as_nanos().max(1);
                            let sample = (u128::from(len) * 1_000_000_000 / took).min(u128::from(u64::MAX)) as u64;
                            p.rate = if p.rate == 0 { sample } else { p.rate / 4 * 3 + sample / 4 };
                            p.errors = 0;
                        }
                    }
                }
                let mut cancel = Vec::new();
                while let Some(at) = self.requests.iter().position(|q| q.piece == piece) {
                    let q = self.requests.swap_remove(at);
                    self.uncount(&q);
                    cancel.push(q);
                }
                Received::Stored { cancel }
            }
        }
    }

    /// A request failed without bytes. Returns further requests the caller
    /// cancels (when the peer is gone or dropped from view).
    pub fn piece_failed(&mut self, now: Duration, from: &PieceSource<P>, piece: u32, why: Failure) -> Vec<Request<P>> {
        if self.take(from, piece).is_none() {
            return Vec::new();
        }
        let PieceSource::Peer(id) = from else {
            // The origin's own retries are the caller's; here it is only
            // left alone for a while, not asked again at once.
            self.origin_backoff_until = now.saturating_add(self.cfg.error_backoff);
            return Vec::new();
        };
        match why {
            Failure::Gone => self.forget(id),
            Failure::Busy => {
                if let Some(p) = self.peers.get_mut(id) {
                    p.backoff_until = now.saturating_add(self.cfg.busy_backoff);
                }
                Vec::new()
            }
            Failure::Missing => {
                self.unsee(id, piece);
                self.penalise(now, id)
            }
            Failure::Declined => {
                self.unsee(id, piece);
                Vec::new()
            }
            Failure::Error => self.penalise(now, id),
        }
    }

    /// Forgets that `id` holds `piece` (until its next have-state).
    fn unsee(&mut self, id: &P, piece: u32) {
        if let Some(p) = self.peers.get_mut(id)
            && p.have.clear(piece)
        {
            let a = &mut self.avail[piece as usize];
            *a = a.saturating_sub(1);
        }
    }

    /// Backs a failing peer off, and drops it from view after too many failures.
    fn penalise(&mut self, now: Duration, id: &P) -> Vec<Request<P>> {
        let Some(p) = self.peers.get_mut(id) else { return Vec::new() };
        p.errors = p.errors.saturating_add(1);
        p.backoff_until = now.saturating_add(self.cfg.error_backoff);
        if p.errors >= self.cfg.max_errors { self.forget(id) } else { Vec::new() }
    }

    /// Requests past their deadline at `now`: taken out of flight (the
    /// caller cancels them), their peers penalised like a failure.
    pub fn expire(&mut self, now: Duration) -> Vec<Request<P>> {
        let mut out = Vec::new();
        while let Some(at) = self.requests.iter().position(|r| r.deadline <= now) {
            let r = self.requests.swap_remove(at);
            self.uncount(&r);
            if let PieceSource::Peer(id) = &r.from {
                let id = id.clone();
                out.push(r);
                out.extend(self.penalise(now, &id));
            } else {
                self.origin_backoff_until = now.saturating_add(self.cfg.error_backoff);
                out.push(r);
            }
        }
        out
    }

    /// Whether the caller should ask the tracker now: pieces are missing
    /// and nothing is in flight.
    pub fn starved(&self) -> bool {
        !self.is_complete() && self.requests.is_empty()
    }

    fn deadline(&self, now: Duration, len: u64) -> Duration {
        let at_rate = match self.cfg.min_rate {
            0 => Duration::ZERO,
            r => {
                Duration::from_nanos((u128::from(len) * 1_000_000_000 / u128::from(r)).min(u128::from(u64::MAX)) as u64)
            }
        };
        now.saturating_add(self.cfg.request_timeout).saturating_add(at_rate)
    }

    fn issue(&mut self, now: Duration, piece: u32, from: PieceSource<P>) -> Option<Request<P>> {
        let range = self.geo.range(piece)?;
        let deadline = self.deadline(now, range.end - range.start);
        if let PieceSource::Peer(id) = &from {
            self.peers.get_mut(id)?.inflight += 1;
        }
        self.copies[piece as usize] = self.copies[piece as usize].saturating_add(1);
        self.pending.set(piece);
        let r = Request { piece, from, range, sent: now, deadline };
        self.requests.push(r.clone());
        Some(r)
    }

    fn usable(&self, p: &Peer, now: Duration) -> bool {
        p.backoff_until <= now && p.inflight < self.cfg.max_per_peer
    }

    /// The requests to send now, up to the limits. Call it after every
    /// change (a piece in, a failure, new have-state, a timer).
    pub fn next_requests(&mut self, now: Duration) -> Vec<Request<P>> {
        let mut out = Vec::new();
        if self.is_complete() {
            return out;
        }
        if self.origin && self.origin_backoff_until <= now {
            self.origin_requests(now, &mut out);
        }
        while self.peer_requests() < self.cfg.max_requests {
            let Some((piece, peer)) = self.pick(now).or_else(|| self.pick_endgame(now)) else { break };
            match self.issue(now, piece, PieceSource::Peer(peer)) {
                Some(r) => out.push(r),
                None => break,
            }
        }
        out
    }

    fn peer_requests(&self) -> usize {
        self.requests.iter().filter(|r| r.from != PieceSource::Origin).count()
    }

    /// The owner's origin requests: lowest missing pieces that no peer in
    /// view holds (with a hash known) and nobody is bringing.
    fn origin_requests(&mut self, now: Duration, out: &mut Vec<Request<P>>) {
        let mut at_origin = self.requests.iter().filter(|r| r.from == PieceSource::Origin).count();
        let mut i = 0;
        while at_origin < self.cfg.max_origin_requests && i < self.geo.count() {
            // A piece peers hold but whose hash this node lacks (a new
            // owner that missed the dead one's last hashes) cannot come
            // from them: the owner hashes what the origin sends.
            let from_peers = self.avail[i as usize] > 0 && self.verifiable.get(i);
            if !self.have.get(i)
                && !self.pending.get(i)
                && !from_peers
                && let Some(r) = self.issue(now, i, PieceSource::Origin)
            {
                out.push(r);
                at_origin += 1;
            }
            i += 1;
        }
    }

    /// The rarest wanted piece some usable peer holds, and the peer to ask.
    fn pick(&mut self, now: Duration) -> Option<(u32, P)> {
        let words = self.have.words().len();
        let mut offered = vec![0u64; words];
        for p in self.peers.values().filter(|p| self.usable(p, now)) {
            for (o, w) in offered.iter_mut().zip(p.have.words()) {
                *o |= w;
            }
        }
        let (mut best, mut best_avail, mut ties) = (None, u32::MAX, 0u64);
        for (w, o) in offered.iter().enumerate() {
            let mut bits = o & !self.have.words()[w] & !self.pending.words()[w] & self.verifiable.words()[w];
            while bits != 0 {
                let i = w as u32 * 64 + bits.trailing_zeros();
                bits &= bits - 1;
                let a = self.avail[i as usize];
                if a < best_avail {
                    (best, best_avail, ties) = (Some(i), a, 1);
                } else if a == best_avail {
                    ties += 1;
                    if self.rng.below(ties) == 0 {
                        best = Some(i);
                    }
                }
            }
        }
        let piece = best?;
        let peer = self.best_holder(now, piece, None)?;
        Some((piece, peer))
    }

    /// In the endgame (every missing piece in flight), a second copy of a
    /// piece in flight from a usable peer not already bringing it.
    fn pick_endgame(&mut self, now: Duration) -> Option<(u32, P)> {
        let missing = self.geo.count() - self.have.ones();
        if self.cfg.endgame_copies < 2 || self.pending.ones() < missing {
            return None;
        }
        let pending: Vec<u32> =
            self.pending.iter().filter(|&i| self.copies[i as usize] < self.cfg.endgame_copies).collect();
        let start = self.rng.below(pending.len() as u64) as usize;
        for k in 0..pending.len() {
            let piece = pending[(start + k) % pending.len()];
            let busy: Vec<P> = self
                .requests
                .iter()
                .filter(|r| r.piece == piece)
                .filter_map(|r| match &r.from {
                    PieceSource::Peer(id) => Some(id.clone()),
                    PieceSource::Origin => None,
                })
                .collect();
            if let Some(peer) = self.best_holder(now, piece, Some(&busy)) {
                return Some((piece, peer));
            }
        }
        None
    }

    /// The usable holder of `piece` with the best rate per request in
    /// flight (an unmeasured peer counts as fast: it gets tried); ties at random.
    fn best_holder(&mut self, now: Duration, piece: u32, not: Option<&[P]>) -> Option<P> {
        let (mut best, mut best_score, mut ties) = (None, 0u64, 0u64);
        for (id, p) in &self.peers {
            if !self.usable(p, now) || !p.have.get(piece) || not.is_some_and(|n| n.contains(id)) {
                continue;
            }
            let rate = if p.rate == 0 { u64::MAX / 2 } else { p.rate };
            let score = rate / (p.inflight as u64 + 1);
            if best.is_none() || score > best_score {
                (best, best_score, ties) = (Some(id), score, 1);
            } else if score == best_score {
                ties += 1;
                if self.rng.below(ties) == 0 {
                    best = Some(id);
                }
            }
        }
        best.cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::super::MIN_PIECE_SIZE;
    use super::*;

    const P: u64 = MIN_PIECE_SIZE;
    const T0: Duration = Duration::ZERO;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sched(pieces: u64) -> Scheduler<u32> {
        let g = Geometry::new(pieces * P, P).unwrap();
        let mut s = Scheduler::new(g, SchedulerConfig { seed: 1, ..SchedulerConfig::default() });
        s.hashes_known(&Bitfield::full(g.count())).unwrap();
        s
    }

    fn full(s: &Scheduler<u32>) -> Bitfield {
        Bitfield::full(s.geometry().count())
    }

    fn bits(n: u32, set: &[u32]) -> Bitfield {
        let mut b = Bitfield::new(n);
        for &i in set {
            b.set(i);
        }
        b
    }

    /// Runs every request to completion at once, good; returns the sources used.
    fn drain(s: &mut Scheduler<u32>, now: Duration) -> Vec<PieceSource<u32>> {
        let mut used = Vec::new();
        for _ in 0..10_000 {
            let rs = s.next_requests(now);
            if rs.is_empty() {
                break;
            }
            for r in rs {
                used.push(r.from.clone());
                s.piece_received(now, &r.from, r.piece, Verdict::Good);
            }
        }
        used
    }

    #[test]
    fn asks_only_peers_that_hold_the_piece_and_completes() {
        let mut s = sched(10);
        s.peer_has(T0, 1, &bits(10, &[0, 1, 2, 3, 4])).unwrap();
        s.peer_has(T0, 2, &bits(10, &[5, 6, 7, 8, 9])).unwrap();
        for _ in 0..20 {
            let rs = s.next_requests(T0);
            if rs.is_empty() {
                break;
            }
            for r in rs {
                let PieceSource::Peer(p) = r.from else { panic!("no origin for a non-owner") };
                assert!(if p == 1 { r.piece < 5 } else { r.piece >= 5 }, "{p} lacks {}", r.piece);
                assert!(matches!(s.piece_received(T0, &r.from, r.piece, Verdict::Good), Received::Stored { .. }));
            }
        }
        assert!(s.is_complete());
        assert_eq!(s.bytes_received(), (0, 10 * P));
    }

    #[test]
    fn respects_the_request_limits() {
        let mut s = sched(40);
        for p in 0..3 {
            s.peer_has(T0, p, &full(&s)).unwrap();
        }
        let rs = s.next_requests(T0);
        assert_eq!(rs.len(), 6, "3 peers x max_per_peer 2 is under max_requests 8");
        for p in 3..10 {
            s.peer_has(T0, p, &full(&s)).unwrap();
        }
        assert_eq!(s.next_requests(T0).len(), 2, "then max_requests 8 in all");
        assert!(s.next_requests(T0).is_empty());
        let mut pieces: Vec<u32> = s.in_flight().iter().map(|r| r.piece).collect();
        pieces.sort();
        pieces.dedup();
        assert_eq!(pieces.len(), 8, "no piece asked twice before the endgame");
    }

    #[test]
    fn rarest_piece_first() {
        let mut s = sched(8);
        s.peer_has(T0, 1, &full(&s)).unwrap();
        s.peer_has(T0, 2, &bits(8, &[0, 1, 2, 3, 4, 5, 6])).unwrap();
        s.peer_has(T0, 3, &bits(8, &[0, 1, 2, 3, 4, 5, 6])).unwrap();
        let first = s.next_requests(T0)[0].clone();
        assert_eq!((first.piece, first.from), (7, PieceSource::Peer(1)), "piece 7 has one holder");
    }

    #[test]
    fn pieces_without_a_known_hash_are_not_asked_of_peers() {
        let g = Geometry::new(8 * P, P).unwrap();
        let mut s: Scheduler<u32> = Scheduler::new(g, SchedulerConfig::default());
        s.peer_has(T0, 1, &Bitfield::full(8)).unwrap();
        assert!(s.next_requests(T0).is_empty());
        s.hashes_known(&bits(8, &[3])).unwrap();
        let rs = s.next_requests(T0);
        assert_eq!(rs.iter().map(|r| r.piece).collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn a_lying_peer_is_excluded_at_its_first_wrong_piece() {
        let mut s = sched(6);
        s.peer_has(T0, 1, &full(&s)).unwrap();
        s.peer_has(T0, 2, &full(&s)).unwrap();
        let rs = s.next_requests(T0);
        let bad = rs.iter().find(|r| r.from == PieceSource::Peer(1)).unwrap().clone();
        let Received::Excluded { cancel } = s.piece_received(T0, &bad.from, bad.piece, Verdict::Bad) else {
            panic!("a wrong piece must exclude its peer")
        };
        assert!(cancel.iter().all(|r| r.from == PieceSource::Peer(1)) && cancel.len() == 1);
        assert!(s.excluded().contains_key(&1) && !s.knows(&1));
        s.peer_has(T0, 1, &full(&s)).unwrap();
        assert!(!s.knows(&1), "an excluded peer does not come back through the tracker");
        for r in s.in_flight().to_vec() {
            s.piece_received(T0, &r.from, r.piece, Verdict::Good);
        }
        let used = drain(&mut s, T0);
        assert!(used.iter().all(|f| *f != PieceSource::Peer(1)));
        assert!(s.is_complete(), "the pieces it was asked for came from the other peer");
    }

    #[test]
    fn a_stalled_peer_is_timed_out_by_the_time_passed_in() {
        let mut s = sched(6);
        s.peer_has(T0, 1, &full(&s)).unwrap();
        let rs = s.next_requests(T0);
        assert_eq!(rs.len(), 2);
        let deadline = rs[0].deadline;
        // 10 s + 16 KiB at 1 MiB/s.
        assert_eq!(deadline, Duration::from_secs(10) + Duration::from_micros(15_625));
        assert!(s.expire(deadline - ms(1)).is_empty(), "not before its deadline");
        let gone = s.expire(deadline);
        assert_eq!(gone.len(), 2);
        assert!(s.in_flight().is_empty());
        assert!(s.next_requests(deadline).is_empty(), "a stalled peer is backed off");
        s.peer_has(deadline, 2, &full(&s)).unwrap();
        let rs = s.next_requests(deadline);
        assert!(!rs.is_empty() && rs.iter().all(|r| r.from == PieceSource::Peer(2)), "others take over");
        let later = deadline + Duration::from_secs(2);
        assert!(
            s.next_requests(later).iter().any(|r| r.from == PieceSource::Peer(1)),
            "after the backoff it is tried again"
        );
    }

    #[test]
    fn a_peer_that_keeps_failing_leaves_the_view() {
        let mut s = sched(6);
        s.peer_has(T0, 1, &full(&s)).unwrap();
        let mut now = T0;
        for _ in 0..3 {
            let r = s.next_requests(now).remove(0);
            for other in s.next_requests(now) {
                s.piece_failed(now, &other.from, other.piece, Failure::Busy);
            }
            s.piece_failed(now, &r.from, r.piece, Failure::Error);
            now += Duration::from_secs(3);
        }
        assert!(!s.knows(&1));
        assert!(s.excluded().is_empty(), "failing is not lying");
    }

    #[test]
    fn a_busy_peer_is_left_alone_for_the_busy_backoff() {
        let mut s = sched(6);
        s.peer_has(T0, 1, &full(&s)).unwrap();
        for r in s.next_requests(T0) {
            assert!(s.piece_failed(T0, &r.from, r.piece, Failure::Busy).is_empty());
        }
        assert!(s.next_requests(ms(199)).is_empty());
        assert_eq!(s.next_requests(ms(200)).len(), 2);
    }

    #[test]
    fn a_missing_answer_corrects_the_view() {
        let mut s = sched(6);
        s.peer_has(T0, 1, &bits(6, &[2])).unwrap();
        let r = s.next_requests(T0).remove(0);
        assert_eq!(r.piece, 2);
        s.piece_failed(T0, &r.from, 2, Failure::Missing);
        assert!(s.next_requests(ms(10_000)).is_empty(), "piece 2 is no longer thought to be there");
    }

    #[test]
    fn a_declined_piece_is_asked_of_others_without_penalty() {
        let mut s = sched(6);
        s.peer_has(T0, 1, &bits(6, &[0, 1])).unwrap();
        let rs = s.next_requests(T0);
        let r = rs.iter().find(|r| r.piece == 0).unwrap().clone();
        assert!(s.piece_failed(T0, &r.from, 0, Failure::Declined).is_empty());
        let again = s.next_requests(T0);
        assert!(again.iter().all(|q| q.piece != 0), "not asked of the same peer again");
        assert!(s.knows(&1));
        s.peer_has(T0, 2, &bits(6, &[0])).unwrap();
        let rs = s.next_requests(T0);
        assert!(rs.iter().any(|q| q.piece == 0 && q.from == PieceSource::Peer(2)), "asked of another holder");
        s.peer_has(ms(1), 1, &bits(6, &[0, 1, 2])).unwrap();
        let rs = s.next_requests(ms(1));
        assert!(rs.iter().any(|q| q.piece == 2 && q.from == PieceSource::Peer(1)), "no backoff: {rs:?}");
    }

    #[test]
    fn a_gone_peer_returns_its_requests_and_others_take_over() {
        let mut s = sched(6);
        s.peer_has(T0, 1, &full(&s)).unwrap();
        s.peer_has(T0, 2, &full(&s)).unwrap();
        let rs = s.next_requests(T0);
        let r = rs.iter().find(|r| r.from == PieceSource::Peer(1)).unwrap().clone();
        let cancel = s.piece_failed(T0, &r.from, r.piece, Failure::Gone);
        assert_eq!(cancel.len(), 1, "its other request");
        assert!(!s.knows(&1));
        for q in s.in_flight().to_vec() {
            s.piece_received(T0, &q.from, q.piece, Verdict::Good);
        }
        let used = drain(&mut s, T0);
        assert!(used.iter().all(|f| *f == PieceSource::Peer(2)));
        assert!(s.is_complete());
    }

    #[test]
    fn the_owner_asks_the_origin_lowest_first_only_for_what_no_peer_holds() {
        let g = Geometry::new(6 * P, P).unwrap();
        let mut s =
            Scheduler::new(g, SchedulerConfig { seed: 1, max_origin_requests: 2, ..SchedulerConfig::default() });
        s.hashes_known(&Bitfield::full(6)).unwrap();
        s.set_origin(true);
        s.peer_has(T0, 1, &bits(6, &[0, 1])).unwrap();
        let rs = s.next_requests(T0);
        let origin: Vec<u32> = rs.iter().filter(|r| r.from == PieceSource::Origin).map(|r| r.piece).collect();
        assert_eq!(origin, vec![2, 3], "max_origin_requests 2, lowest not held by a peer");
        let peer: Vec<u32> = rs.iter().filter(|r| r.from != PieceSource::Origin).map(|r| r.piece).collect();
        assert_eq!(peer.len(), 2);
        assert!(peer.iter().all(|p| *p < 2));
        drain(&mut s, T0);
        for r in s.in_flight().to_vec() {
            s.piece_received(T0, &r.from, r.piece, Verdict::Good);
        }
        drain(&mut s, T0);
        assert!(s.is_complete());
        assert_eq!(s.bytes_received(), (4 * P, 2 * P));
    }

    #[test]
    fn owner_gone_the_next_resumes_from_what_the_cluster_holds() {
        // Node 9 owned the digest and is gone; this node is next. It keeps
        // pieces 0-1, peer 1 holds 2-3: the origin is asked for 4-5 only.
        let mut s = sched(6);
        s.mark_held(0).unwrap();
        s.mark_held(1).unwrap();
        s.peer_has(T0, 9, &bits(6, &[0, 1, 2, 3, 4])).unwrap();
        s.peer_has(T0, 1, &bits(6, &[2, 3])).unwrap();
        let rs = s.next_requests(T0);
        let to9: Vec<_> = rs.iter().filter(|r| r.from == PieceSource::Peer(9)).cloned().collect();
        assert!(!to9.is_empty());
        for r in &to9 {
            s.piece_failed(T0, &r.from, r.piece, Failure::Gone);
        }
        s.set_origin(true);
        let mut origin = Vec::new();
        for _ in 0..10 {
            for r in s.next_requests(T0) {
                if r.from == PieceSource::Origin {
                    origin.push(r.piece);
                }
                s.piece_received(T0, &r.from, r.piece, Verdict::Good);
            }
        }
        for r in s.in_flight().to_vec() {
            s.piece_received(T0, &r.from, r.piece, Verdict::Good);
        }
        origin.sort();
        assert!(s.is_complete());
        assert_eq!(origin, vec![4, 5]);
        assert_eq!(s.bytes_received().0, 2 * P);
    }

    #[test]
    fn a_new_owner_takes_from_the_origin_what_it_cannot_verify_from_peers() {
        let g = Geometry::new(4 * P, P).unwrap();
        let mut s: Scheduler<u32> = Scheduler::new(g, SchedulerConfig::default());
        // It had the dead owner's hashes for pieces 0-1 only; a peer holds 0-3.
        s.hashes_known(&bits(4, &[0, 1])).unwrap();
        s.peer_has(T0, 1, &Bitfield::full(4)).unwrap();
        s.set_origin(true);
        let mut origin = Vec::new();
        for _ in 0..4 {
            for r in s.next_requests(T0) {
                if r.from == PieceSource::Origin {
                    origin.push(r.piece);
                }
                s.piece_received(T0, &r.from, r.piece, Verdict::Good);
            }
        }
        origin.sort();
        assert_eq!(origin, vec![2, 3]);
        assert!(s.is_complete(), "no deadlock on pieces only peers hold");
    }

    #[test]
    fn a_failing_origin_is_backed_off_not_hammered() {
        let k = SchedulerConfig::default().max_origin_requests;
        let mut s = sched(2 * k as u64);
        s.set_origin(true);
        let rs = s.next_requests(T0);
        assert_eq!(rs.len(), k);
        assert!(s.piece_failed(T0, &PieceSource::Origin, rs[0].piece, Failure::Error).is_empty());
        assert!(s.next_requests(ms(10)).is_empty(), "not asked again at once");
        let again = s.next_requests(ms(2000));
        assert_eq!(again.len(), 1, "after error_backoff; the others are still in flight");
        assert_eq!(again[0].piece, rs[0].piece);
        let stalled = s.expire(ms(60_000));
        assert_eq!(stalled.len(), k);
        assert!(s.next_requests(ms(60_001)).is_empty(), "a stalled origin is backed off too");
        assert_eq!(s.next_requests(ms(62_000)).len(), k);
    }

    #[test]
    fn endgame_asks_a_second_peer_and_cancels_the_loser() {
        let mut s = sched(4);
        s.mark_held(0).unwrap();
        s.mark_held(1).unwrap();
        s.mark_held(2).unwrap();
        s.peer_has(T0, 1, &full(&s)).unwrap();
        s.peer_has(T0, 2, &full(&s)).unwrap();
        let rs = s.next_requests(T0);
        assert_eq!(rs.len(), 2, "piece 3 from both peers");
        assert!(rs.iter().all(|r| r.piece == 3));
        assert_ne!(rs[0].from, rs[1].from);
        let Received::Stored { cancel } = s.piece_received(ms(5), &rs[1].from, 3, Verdict::Good) else {
            panic!("stored")
        };
        assert_eq!(cancel, vec![rs[0].clone()]);
        assert!(s.is_complete() && s.in_flight().is_empty());
        assert_eq!(s.piece_received(ms(6), &rs[0].from, 3, Verdict::Good), Received::Ignored);
    }

    #[test]
    fn the_view_is_bounded_and_keeps_peers_with_requests() {
        let g = Geometry::new(8 * P, P).unwrap();
        let cfg = SchedulerConfig { max_peers: 2, ..SchedulerConfig::default() };
        let mut s: Scheduler<u32> = Scheduler::new(g, cfg);
        s.hashes_known(&Bitfield::full(8)).unwrap();
        s.peer_has(ms(1), 1, &Bitfield::full(8)).unwrap();
        s.peer_has(ms(2), 2, &Bitfield::full(8)).unwrap();
        let _ = s.next_requests(ms(2));
        s.peer_has(ms(3), 3, &Bitfield::full(8)).unwrap();
        assert!(!s.knows(&3), "both have requests in flight: the new one is not taken");
        for r in s.in_flight().to_vec() {
            if r.from == PieceSource::Peer(1) {
                s.piece_received(ms(3), &r.from, r.piece, Verdict::Good);
            }
        }
        s.peer_has(ms(4), 3, &Bitfield::full(8)).unwrap();
        assert!(s.knows(&3) && !s.knows(&1) && s.knows(&2));
        assert_eq!(s.peer_count(), 2);
    }

    #[test]
    fn hostile_have_state_and_indexes_change_nothing() {
        let mut s = sched(6);
        assert!(s.peer_has(T0, 1, &Bitfield::full(7)).is_err());
        assert!(s.hashes_known(&Bitfield::full(5)).is_err());
        assert!(s.mark_held(6).is_err());
        assert!(s.mark_held(u32::MAX).is_err());
        assert_eq!(s.piece_received(T0, &PieceSource::Peer(1), u32::MAX, Verdict::Good), Received::Ignored);
        assert!(s.piece_failed(T0, &PieceSource::Peer(1), 3, Failure::Gone).is_empty());
        assert_eq!(s.peer_count(), 0);
        assert_eq!(s.have().ones(), 0);
    }

    #[test]
    fn a_blob_of_no_pieces_is_complete_and_asks_nothing() {
        let g = Geometry::new(0, P).unwrap();
        let mut s: Scheduler<u32> = Scheduler::new(g, SchedulerConfig::default());
        s.set_origin(true);
        assert!(s.is_complete() && !s.starved());
        assert!(s.next_requests(T0).is_empty());
    }

    #[test]
    fn the_short_last_piece_is_asked_with_its_own_range() {
        let g = Geometry::new(2 * P + 7, P).unwrap();
        let mut s: Scheduler<u32> = Scheduler::new(g, SchedulerConfig::default());
        s.set_origin(true);
        s.mark_held(0).unwrap();
        s.mark_held(1).unwrap();
        let rs = s.next_requests(T0);
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].range, 2 * P..2 * P + 7);
    }

    #[test]
    fn reset_drops_every_piece_after_a_whole_blob_mismatch() {
        let mut s = sched(6);
        s.peer_has(T0, 1, &full(&s)).unwrap();
        drain(&mut s, T0);
        assert!(s.is_complete());
        s.exclude(&1, "its hashes made a blob with the wrong digest".into());
        assert!(s.reset().is_empty());
        assert_eq!(s.have().ones(), 0);
        s.set_origin(true);
        assert_eq!(s.next_requests(T0).len(), SchedulerConfig::default().max_origin_requests, "from the origin again");
    }

    #[test]
    fn measured_rates_prefer_the_faster_peer() {
        let mut s = sched(40);
        s.peer_has(T0, 1, &full(&s)).unwrap();
        s.peer_has(T0, 2, &full(&s)).unwrap();
        for r in s.next_requests(T0) {
            let took = if r.from == PieceSource::Peer(1) { ms(10) } else { ms(1000) };
            s.piece_received(took, &r.from, r.piece, Verdict::Good);
        }
        let now = ms(1000);
        let rs = s.next_requests(now);
        assert_eq!(rs[0].from, PieceSource::Peer(1));
    }
}
