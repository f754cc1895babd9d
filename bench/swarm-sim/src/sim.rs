//! The model around the scheduler.
//!
//! - **Events at piece granularity**: a request reaching its source (after
//!   the link's latency), a piece finishing, a tracker poll, a wake-up
//!   after a backoff, a node dying. Nothing happens between events.
//! - **Bandwidth**: each transfer runs at `min(uplink of the sender /
//!   its transfers, downlink of the receiver / its transfers)`, recomputed
//!   for the transfers of both ends whenever one starts or ends (a local
//!   fair share, not a global max-min solution: it leaves some capacity
//!   unused, so it errs slow).
//! - **Upload slots**: a node serves at most `upload_slots` pieces at once
//!   and answers busy beyond; the origin serves only the owner.
//! - **Tracker**: the owner (lowest live node index) runs the real
//!   [`Tracker`]; each node announces and gets a sample every
//!   `poll_interval`, sooner when starved. Piece hashes are published for
//!   every piece the owner holds; a node learns them with its poll or with
//!   a piece from the owner. A piece served by a peer carries the peer's
//!   current bitfield (as an answer header would), and a request carries
//!   the asker's, so have-state also spreads along the transfers.
//! - **Failures**: a dead node's transfers end at once on both sides
//!   (connection reset); requests to it fail with `Gone`. A dead owner is
//!   replaced by the next live node, which gets `set_origin(true)` and an
//!   empty tracker that fills as nodes poll it.
//! - **Liars** hold pieces like everyone but serve them wrong: the
//!   receiver's verdict is `Bad`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::swarm::{
    Bitfield, Failure, Geometry, PieceSource, Received, Request, Rng, Scheduler, SchedulerConfig, SeedBudget, Tracker,
    Verdict,
};

const ORIGIN: u32 = u32::MAX;
const NS: f64 = 1e9;
const MBIT: f64 = 1e6 / 8.0;
const GBIT: f64 = 1e9 / 8.0;

/// How node links are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// A mixed data-centre and edge fleet: uplinks 20% 100 Mbit/s, 50%
    /// 1 Gbit/s, 30% 10 Gbit/s; downlink the larger of the uplink and
    /// 1 Gbit/s; the origin sends at most 2 Gbit/s in all; 1 ms between
    /// nodes, 20 ms to the origin.
    Fleet,
    /// The namespace benchmark: every uplink and the origin at 200 Mbit/s
    /// (`tc tbf`), downlinks unlimited (10 Gbit/s veths), 0.1 ms between
    /// nodes, 20 ms to the origin's first byte.
    Ns200,
}

impl Links {
    fn draw(self, rng: &mut Rng) -> (f64, f64) {
        match self {
            Links::Fleet => {
                let u = rng.unit();
                let up = if u < 0.2 {
                    100.0 * MBIT
                } else if u < 0.7 {
                    GBIT
                } else {
                    10.0 * GBIT
                };
                (up, up.max(GBIT))
            }
            Links::Ns200 => (200.0 * MBIT, 10.0 * GBIT),
        }
    }

    /// The median node's links (the node of T1).
    fn median(self) -> (f64, f64) {
        match self {
            Links::Fleet => (GBIT, GBIT),
            Links::Ns200 => (200.0 * MBIT, 10.0 * GBIT),
        }
    }

    fn origin_up(self) -> f64 {
        match self {
            Links::Fleet => 2.0 * GBIT,
            Links::Ns200 => 200.0 * MBIT,
        }
    }

    fn peer_rtt(self) -> u64 {
        match self {
            Links::Fleet => 1_000_000,
            Links::Ns200 => 100_000,
        }
    }

    fn origin_rtt(self) -> u64 {
        20_000_000
    }

    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Links::Fleet => "fleet",
            Links::Ns200 => "ns200",
        }
    }
}

/// One simulated run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Nodes that want the blob.
    pub nodes: usize,
    /// The blob's size.
    pub blob: u64,
    /// The piece size.
    pub piece: u64,
    /// How links are drawn.
    pub links: Links,
    /// Fraction of the nodes (never the owner) that die mid-transfer.
    pub fail_fraction: f64,
    /// Kill the owner at half of T1.
    pub kill_owner: bool,
    /// Nodes that serve wrong pieces.
    pub liars: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// Pieces a node serves at once.
    pub upload_slots: usize,
    /// Seconds between tracker polls.
    pub poll_interval: f64,
    /// Peers in a tracker answer.
    pub sample: usize,
    /// The scheduler's settings (the seed is set per node).
    pub sched: SchedulerConfig,
    /// Model today's design instead: every asker fetches from the owner
    /// only, and the owner serves them all at once (no upload slots).
    pub owner_only: bool,
    /// The owner serves a fresh piece to `SEED_COPIES` askers only.
    pub seed_budget: bool,
}

impl Scenario {
    /// The design's defaults: `piece_size_for(blob)`, `UPLOAD_SLOTS`,
    /// `poll_interval(nodes)`, the scheduler's default settings except one
    /// origin request at a time (the owner reads the origin as one stream).
    pub fn new(nodes: usize, blob: u64, links: Links) -> Self {
        Scenario {
            nodes,
            blob,
            piece: crate::swarm::piece_size_for(blob),
            links,
            fail_fraction: 0.0,
            kill_owner: false,
            liars: 0,
            seed: 1,
            upload_slots: crate::swarm::UPLOAD_SLOTS,
            poll_interval: crate::swarm::poll_interval(nodes).as_secs_f64(),
            sample: crate::swarm::DEFAULT_SAMPLE,
            sched: SchedulerConfig { max_origin_requests: 1, ..SchedulerConfig::default() },
            owner_only: false,
            seed_budget: true,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Nodes at the start.
    pub nodes: usize,
    /// Nodes alive at the end.
    pub survivors: usize,
    /// Survivors holding every piece.
    pub completed: usize,
    /// Completion time of each survivor that completed, seconds, sorted.
    pub times: Vec<f64>,
    /// One node (median links) alone from the origin, seconds.
    pub t1: f64,
    /// Bytes that left the origin.
    pub origin_bytes: u64,
    /// Pieces a node got from a peer that did not hold them (must be 0).
    pub from_non_holder: u64,
    /// Requests for a piece made of a live peer that did not hold it (must be 0).
    pub asked_non_holder: u64,
    /// Wrong pieces a node accepted (must be 0).
    pub bad_accepted: u64,
    /// Wrong pieces caught (each excluded its sender at one receiver).
    pub bad_caught: u64,
    /// Requests answered busy.
    pub busy: u64,
    /// Requests the owner declined (its seed budget for the piece was spent).
    pub declined: u64,
    /// Events processed.
    pub events: u64,
    /// Wall-clock seconds the run took.
    pub wall: f64,
    /// True when the simulated-time limit stopped the run.
    pub timed_out: bool,
    /// The first owner's uplink and downlink, bytes per second.
    pub owner_links: (f64, f64),
}

impl Outcome {
    /// The `q` quantile of completion times (0 when none).
    pub fn quantile(&self, q: f64) -> f64 {
        if self.times.is_empty() {
            return 0.0;
        }
        let i = ((self.times.len() as f64 - 1.0) * q).round() as usize;
        self.times[i.min(self.times.len() - 1)]
    }

    /// Origin bytes over the blob's size.
    pub fn origin_ratio(&self, blob: u64) -> f64 {
        self.origin_bytes as f64 / blob.max(1) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Active,
    Over,
}

#[derive(Debug, Clone)]
struct Flow {
    from: u32,
    to: u32,
    piece: u32,
    len: u64,
    remaining: f64,
    /// Bytes per nanosecond.
    rate: f64,
    last: u64,
    version: u32,
    state: State,
}

struct Node {
    up: f64,
    down: f64,
    sched: Scheduler<u32>,
    alive: bool,
    liar: bool,
    done: Option<u64>,
    ups: Vec<u32>,
    downs: Vec<u32>,
    /// (source, piece, flow) of this node's requests.
    reqs: Vec<(u32, u32, u32)>,
    poll_at: u64,
    last_poll: u64,
    wake_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Fail(u32),
    FlowDone(u32, u32),
    FlowStart(u32),
    Poll(u32),
    Wake(u32),
}

struct World {
    sc: Scenario,
    geo: Geometry,
    now: u64,
    seq: u64,
    heap: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    nodes: Vec<Node>,
    flows: Vec<Flow>,
    free: Vec<u32>,
    origin_ups: Vec<u32>,
    origin_up: f64,
    owner: u32,
    budget: SeedBudget,
    /// Whether the owner's origin stream is open (its latency paid).
    origin_streaming: bool,
    tracker: Tracker<u32>,
    published: Bitfield,
    rng: Rng,
    out: Outcome,
}

fn secs(ns: u64) -> f64 {
    ns as f64 / NS
}

fn dur(ns: u64) -> Duration {
    Duration::from_nanos(ns)
}

/// Runs `sc`, and the one-node run that gives its T1; or says what is
/// wrong with the scenario.
pub fn run(sc: &Scenario) -> Result<Outcome, String> {
    if sc.nodes == 0 {
        return Err("a scenario needs at least one node".into());
    }
    if !(0.0..=1.0).contains(&sc.fail_fraction) {
        return Err(format!("the failing fraction {} is not between 0 and 1", sc.fail_fraction));
    }
    if !(sc.poll_interval > 0.0 && sc.poll_interval.is_finite()) || sc.upload_slots == 0 {
        return Err("the poll interval and the upload slots must be positive".into());
    }
    let geo = Geometry::new(sc.blob, sc.piece).map_err(|e| format!("blob of {} bytes: {e}", sc.blob))?;
    let mut alone = sc.clone();
    alone.nodes = 1;
    alone.fail_fraction = 0.0;
    alone.kill_owner = false;
    alone.liars = 0;
    let t1 = simulate(&alone, geo, Some(sc.links.median()), 0.0).times.first().copied().unwrap_or(0.0);
    let mut out = simulate(sc, geo, None, t1);
    out.t1 = t1;
    Ok(out)
}

fn simulate(sc: &Scenario, geo: Geometry, links: Option<(f64, f64)>, t1: f64) -> Outcome {
    let started = Instant::now();
    let mut rng = Rng::new(sc.seed);
    let n = geo.count();
    let nodes = (0..sc.nodes)
        .map(|i| {
            let (up, down) = links.unwrap_or_else(|| sc.links.draw(&mut rng));
            let cfg =
                SchedulerConfig { seed: sc.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15), ..sc.sched.clone() };
            Node {
                up,
                down,
                sched: Scheduler::new(geo, cfg),
                alive: true,
                liar: false,
                done: None,
                ups: Vec::new(),
                downs: Vec::new(),
                reqs: Vec::new(),
                poll_at: u64::MAX,
                last_poll: 0,
                wake_at: u64::MAX,
            }
        })
        .collect();
    let mut w = World {
        sc: sc.clone(),
        geo,
        now: 0,
        seq: 0,
        heap: BinaryHeap::new(),
        nodes,
        flows: Vec::new(),
        free: Vec::new(),
        origin_ups: Vec::new(),
        origin_up: sc.links.origin_up(),
        owner: 0,
        budget: SeedBudget::new(n),
        origin_streaming: false,
        tracker: Tracker::new(n),
        published: Bitfield::new(n),
        rng,
        out: Outcome { nodes: sc.nodes, ..Outcome::default() },
    };
    w.start(t1);
    let limit = ((t1.max(1.0) * 200.0) * NS) as u64;
    while let Some(Reverse((t, _, ev))) = w.heap.pop() {
        if t > limit {
            w.out.timed_out = true;
            break;
        }
        w.now = t;
        w.out.events += 1;
        match ev {
            Ev::FlowStart(f) => w.flow_start(f),
            Ev::FlowDone(f, v) => w.flow_done(f, v),
            Ev::Poll(x) => w.poll(x),
            Ev::Wake(x) => {
                if w.nodes[x as usize].wake_at == t {
                    w.nodes[x as usize].wake_at = u64::MAX;
                    w.step(x);
                }
            }
            Ev::Fail(x) => w.fail(x),
        }
    }
    let mut out = w.out;
    out.owner_links = (w.nodes[0].up, w.nodes[0].down);
    out.survivors = w.nodes.iter().filter(|n| n.alive).count();
    out.completed = w.nodes.iter().filter(|n| n.alive && n.sched.is_complete()).count();
    out.times = w.nodes.iter().filter(|n| n.alive).filter_map(|n| n.done).map(secs).collect();
    out.times.sort_by(f64::total_cmp);
    out.wall = started.elapsed().as_secs_f64();
    out
}

impl World {
    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, ev)));
    }

    fn start(&mut self, t1: f64) {
        let n = self.nodes.len();
        self.nodes[0].sched.set_origin(true);
        for x in 0..n {
            // All requests at (nearly) the same moment.
            let at = self.rng.below(10_000_000);
            self.nodes[x].poll_at = at;
            self.push(at, Ev::Poll(x as u32));
        }
        let mut others: Vec<u32> = (1..n as u32).collect();
        let fails = ((n as f64) * self.sc.fail_fraction).round() as usize;
        let liars = self.sc.liars.min(others.len());
        for k in 0..fails.saturating_add(liars).min(others.len()) {
            let j = k + self.rng.below((others.len() - k) as u64) as usize;
            others.swap(k, j);
        }
        for &x in &others[..liars] {
            self.nodes[x as usize].liar = true;
        }
        let window = t1.max(0.001) * NS;
        for &x in others.iter().skip(liars).take(fails) {
            let at = (window * (0.1 + 0.8 * self.rng.unit())) as u64;
            self.push(at, Ev::Fail(x));
        }
        if self.sc.kill_owner && n > 1 {
            self.push((window * 0.5) as u64, Ev::Fail(0));
        }
    }

    fn rate_of(&self, f: &Flow) -> f64 {
        let up = if f.from == ORIGIN {
            self.origin_up / self.origin_ups.len().max(1) as f64
        } else {
            let s = &self.nodes[f.from as usize];
            s.up / s.ups.len().max(1) as f64
        };
        let r = &self.nodes[f.to as usize];
        up.min(r.down / r.downs.len().max(1) as f64) / NS
    }

    fn update(&mut self, id: u32) {
        let new = self.rate_of(&self.flows[id as usize]);
        let now = self.now;
        let f = &mut self.flows[id as usize];
        if f.state != State::Active || (new - f.rate).abs() <= f64::EPSILON * new {
            return;
        }
        f.remaining = (f.remaining - f.rate * (now - f.last) as f64).max(0.0);
        f.last = now;
        f.rate = new;
        f.version = f.version.wrapping_add(1);
        let at = now + (f.remaining / new).ceil() as u64;
        let v = f.version;
        self.push(at, Ev::FlowDone(id, v));
    }

    /// Recomputes the transfers at both ends of `f`.
    fn rebalance(&mut self, from: u32, to: u32) {
        let mut ids: Vec<u32> =
            if from == ORIGIN { self.origin_ups.clone() } else { self.nodes[from as usize].ups.clone() };
        ids.extend_from_slice(&self.nodes[to as usize].downs);
        for id in ids {
            self.update(id);
        }
    }

    fn new_flow(&mut self, to: u32, r: &Request<u32>) -> u32 {
        let from = match r.from {
            PieceSource::Peer(p) => p,
            PieceSource::Origin => ORIGIN,
        };
        let len = r.range.end - r.range.start;
        let f = Flow {
            from,
            to,
            piece: r.piece,
            len,
            remaining: len as f64,
            rate: 0.0,
            last: self.now,
            version: 0,
            state: State::Pending,
        };
        let id = match self.free.pop() {
            Some(id) => {
                // Versions go on across reuse of a slot: a stale completion
                // of the slot's previous flow must not match the new one.
                let version = self.flows[id as usize].version.wrapping_add(1);
                self.flows[id as usize] = Flow { version, ..f };
                id
            }
            None => {
                self.flows.push(f);
                (self.flows.len() - 1) as u32
            }
        };
        self.nodes[to as usize].reqs.push((from, r.piece, id));
        id
    }

    /// Ends flow `id` (done or cancelled): out of both ends, bytes counted.
    fn end_flow(&mut self, id: u32) {
        let now = self.now;
        let f = &mut self.flows[id as usize];
        let was = f.state;
        f.state = State::Over;
        let (from, to, piece) = (f.from, f.to, f.piece);
        if was == State::Active {
            let sent = f.len as f64 - (f.remaining - f.rate * (now - f.last) as f64).max(0.0);
            if from == ORIGIN {
                self.out.origin_bytes += sent.round() as u64;
                self.origin_ups.retain(|&x| x != id);
            } else {
                self.nodes[from as usize].ups.retain(|&x| x != id);
            }
            self.nodes[to as usize].downs.retain(|&x| x != id);
        }
        self.nodes[to as usize].reqs.retain(|&(s, p, _)| !(s == from && p == piece));
        self.free.push(id);
        if was == State::Active {
            self.rebalance(from, to);
        }
    }

    fn cancel(&mut self, to: u32, rs: Vec<Request<u32>>) {
        for r in rs {
            let from = match r.from {
                PieceSource::Peer(p) => p,
                PieceSource::Origin => ORIGIN,
            };
            let found = self.nodes[to as usize].reqs.iter().find(|&&(s, p, _)| s == from && p == r.piece).map(|x| x.2);
            if let Some(id) = found {
                self.end_flow(id);
            }
        }
    }

    fn src(from: u32) -> PieceSource<u32> {
        if from == ORIGIN { PieceSource::Origin } else { PieceSource::Peer(from) }
    }

    fn flow_start(&mut self, id: u32) {
        let f = self.flows[id as usize].clone();
        if f.state != State::Pending {
            return;
        }
        let fail = if f.from == ORIGIN {
            None
        } else {
            let s = &self.nodes[f.from as usize];
            if !s.alive {
                Some(Failure::Gone)
            } else if !s.sched.have().get(f.piece) {
                self.out.asked_non_holder += 1;
                Some(Failure::Missing)
            } else if s.ups.len() >= self.sc.upload_slots && !self.sc.owner_only {
                self.out.busy += 1;
                Some(Failure::Busy)
            } else if f.from == self.owner
                && self.sc.seed_budget
                && !self.sc.owner_only
                && !self.budget.try_serve(
                    f.piece,
                    dur(self.now),
                    self.tracker.others_holding(&self.owner, f.piece),
                    s.ups.is_empty(),
                )
            {
                self.out.declined += 1;
                Some(Failure::Declined)
            } else {
                None
            }
        };
        if let Some(why) = fail {
            self.end_flow(id);
            let now = dur(self.now);
            let more = self.nodes[f.to as usize].sched.piece_failed(now, &Self::src(f.from), f.piece, why);
            self.cancel(f.to, more);
            self.step(f.to);
            return;
        }
        if f.from != ORIGIN && !self.sc.owner_only {
            // A request carries the asker's bitfield: the server learns of
            // it without the tracker (have-state spreads along transfers).
            let have = self.nodes[f.to as usize].sched.have().clone();
            let now = dur(self.now);
            let _ = self.nodes[f.from as usize].sched.peer_has(now, f.to, &have);
        }
        self.flows[id as usize].state = State::Active;
        self.flows[id as usize].last = self.now;
        if f.from == ORIGIN {
            self.origin_ups.push(id);
        } else {
            self.nodes[f.from as usize].ups.push(id);
        }
        self.nodes[f.to as usize].downs.push(id);
        self.rebalance(f.from, f.to);
    }

    fn flow_done(&mut self, id: u32, v: u32) {
        let f = self.flows[id as usize].clone();
        if f.state != State::Active || f.version != v {
            return;
        }
        self.end_flow(id);
        let (to, from, piece) = (f.to, f.from, f.piece);
        let lying = from != ORIGIN && self.nodes[from as usize].liar;
        if from != ORIGIN && !self.nodes[from as usize].sched.have().get(piece) {
            self.out.from_non_holder += 1;
        }
        let verdict = if lying { Verdict::Bad } else { Verdict::Good };
        let now = dur(self.now);
        match self.nodes[to as usize].sched.piece_received(now, &Self::src(from), piece, verdict) {
            Received::Stored { cancel } => {
                if lying {
                    self.out.bad_accepted += 1;
                }
                self.cancel(to, cancel);
                if to == self.owner {
                    self.published.set(piece);
                }
                if from != ORIGIN {
                    let have = self.nodes[from as usize].sched.have().clone();
                    let _ = self.nodes[to as usize].sched.peer_has(now, from, &have);
                    if from == self.owner {
                        let known = self.published.clone();
                        let _ = self.nodes[to as usize].sched.hashes_known(&known);
                    }
                }
                if self.nodes[to as usize].sched.is_complete() && self.nodes[to as usize].done.is_none() {
                    self.nodes[to as usize].done = Some(self.now);
                    let full = self.nodes[to as usize].sched.have().clone();
                    let _ = self.tracker.announce(to, full);
                }
            }
            Received::Excluded { cancel } => {
                self.out.bad_caught += 1;
                self.cancel(to, cancel);
            }
            Received::Ignored => {}
        }
        self.step(to);
    }

    fn poll(&mut self, x: u32) {
        let xi = x as usize;
        if self.nodes[xi].poll_at != self.now || !self.nodes[xi].alive {
            return;
        }
        self.nodes[xi].poll_at = u64::MAX;
        self.nodes[xi].last_poll = self.now;
        let have = self.nodes[xi].sched.have().clone();
        for bad in self.nodes[xi].sched.excluded().keys() {
            self.tracker.ban(bad);
        }
        let _ = self.tracker.announce(x, have.clone());
        if have.is_full() {
            return;
        }
        let now = dur(self.now);
        let sample = if self.sc.owner_only {
            let o = self.owner;
            if o == x { vec![] } else { vec![(o, self.nodes[o as usize].sched.have().clone())] }
        } else {
            let mut s = self.tracker.sample(&x, &have, self.sc.sample, &mut self.rng);
            if self.sc.seed_budget {
                // The owner offers only what it would serve, as the node's tracker does.
                let (o, t) = (self.owner, &self.tracker);
                let spare = self.nodes[o as usize].ups.is_empty();
                for (p, b) in &mut s {
                    if *p == o {
                        *b = self.budget.offer(b, now, |i| t.others_holding(&o, i), spare);
                    }
                }
            }
            s
        };
        for (p, b) in sample {
            let _ = self.nodes[xi].sched.peer_has(now, p, &b);
        }
        let known = self.published.clone();
        let _ = self.nodes[xi].sched.hashes_known(&known);
        self.schedule_poll(x, self.now + (self.sc.poll_interval * NS) as u64);
        self.step(x);
    }

    fn schedule_poll(&mut self, x: u32, at: u64) {
        if at < self.nodes[x as usize].poll_at {
            self.nodes[x as usize].poll_at = at;
            self.push(at, Ev::Poll(x));
        }
    }

    fn step(&mut self, x: u32) {
        let xi = x as usize;
        if !self.nodes[xi].alive || self.nodes[xi].sched.is_complete() {
            return;
        }
        let now = dur(self.now);
        let expired = self.nodes[xi].sched.expire(now);
        self.cancel(x, expired);
        let reqs = self.nodes[xi].sched.next_requests(now);
        for r in &reqs {
            let id = self.new_flow(x, r);
            // The owner reads the origin as one stream: its latency is paid once.
            let rtt = match r.from {
                PieceSource::Origin if self.origin_streaming => 0,
                PieceSource::Origin => {
                    self.origin_streaming = true;
                    self.sc.links.origin_rtt()
                }
                PieceSource::Peer(_) => self.sc.links.peer_rtt(),
            };
            self.push(self.now + rtt, Ev::FlowStart(id));
        }
        if self.nodes[xi].sched.starved() {
            let quarter = (self.sc.poll_interval * NS / 4.0) as u64;
            let soon = self.nodes[xi].last_poll.saturating_add(quarter).max(self.now);
            self.schedule_poll(x, soon);
        }
        let s = &self.nodes[xi].sched;
        let peers_in_flight = s.in_flight().iter().filter(|r| r.from != PieceSource::Origin).count();
        if peers_in_flight < self.sc.sched.max_requests {
            let at = self.now + self.sc.sched.busy_backoff.as_nanos() as u64;
            if at < self.nodes[xi].wake_at {
                self.nodes[xi].wake_at = at;
                self.push(at, Ev::Wake(x));
            }
        }
    }

    fn fail(&mut self, x: u32) {
        let xi = x as usize;
        if !self.nodes[xi].alive {
            return;
        }
        self.nodes[xi].alive = false;
        // Its uploads are cut: each receiver sees the peer gone.
        let ups = self.nodes[xi].ups.clone();
        for id in ups {
            let f = self.flows[id as usize].clone();
            if f.state != State::Active {
                continue;
            }
            self.end_flow(id);
            let now = dur(self.now);
            let more = self.nodes[f.to as usize].sched.piece_failed(now, &PieceSource::Peer(x), f.piece, Failure::Gone);
            self.cancel(f.to, more);
            self.step(f.to);
        }
        let mine: Vec<u32> = self.nodes[xi].reqs.iter().map(|r| r.2).collect();
        for id in mine {
            self.end_flow(id);
        }
        self.tracker.remove(&x);
        if x == self.owner {
            let next = self.nodes.iter().position(|n| n.alive);
            if let Some(next) = next {
                self.owner = next as u32;
                self.budget = SeedBudget::new(self.geo.count());
                self.origin_streaming = false;
                // The new tracker starts empty; nodes that hold the whole
                // blob announce to it at once, the rest with their next poll.
                self.tracker = Tracker::new(self.geo.count());
                for (i, n) in self.nodes.iter().enumerate() {
                    if n.alive && n.sched.is_complete() {
                        let _ = self.tracker.announce(i as u32, n.sched.have().clone());
                    }
                }
                self.nodes[next].sched.set_origin(true);
                self.step(next as u32);
            }
        }
    }
}
