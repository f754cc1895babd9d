//! The tracker's wire forms: what an asker sends the owner, and the
//! owner's answer. Everything read is bounded before it is parsed and
//! validated against the geometry the reader expects. Whether a peer's
//! address is a member of the cluster is for the node to check (it knows
//! the membership); this module only bounds and parses.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Bitfield, Geometry, MAX_HASH_LIST_BYTES, PieceHashes, SwarmError, WirePieceHashes};

/// Peers in one tracker answer, at most.
pub const MAX_ANSWER_PEERS: usize = 64;

/// Longest node id or address accepted in an answer.
pub const MAX_NAME_LEN: usize = 255;

/// The largest tracker answer accepted: the hash list, plus each peer's
/// names and a bitfield of the most pieces.
pub const MAX_ANSWER_BYTES: usize =
    MAX_HASH_LIST_BYTES + MAX_ANSWER_PEERS * (2 * MAX_NAME_LEN + super::MAX_PIECES as usize / 4 + 64) + 256;

/// An asker's announcement (the body of its poll).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAnnounce {
    /// The blob's size, as the asker knows it.
    pub blob_size: u64,
    /// The piece size the asker uses (from the owner's list, or
    /// [`super::piece_size_for`] before it has one).
    pub piece_size: u64,
    /// Its bitfield, [`Bitfield::to_hex`].
    pub have: String,
    /// The pieces whose hash it knows already, [`Bitfield::to_hex`]: the
    /// answer leaves them out (every poll would otherwise carry the whole
    /// list, through the owner's uplink, the busiest of the swarm). Absent
    /// from older askers: they get the whole list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known: Option<String>,
    /// Peers it excluded for wrong pieces: the owner's tracker stops
    /// counting on them and naming them to others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
}

impl WireAnnounce {
    /// The announcement of `have` for a blob of geometry `g`.
    pub fn new(g: &Geometry, have: &Bitfield) -> Self {
        WireAnnounce {
            blob_size: g.blob_size(),
            piece_size: g.piece_size(),
            have: have.to_hex(),
            known: None,
            excluded: Vec::new(),
        }
    }

    /// A first contact: no geometry yet, it comes with the answer.
    pub fn hello() -> Self {
        WireAnnounce { blob_size: 0, piece_size: 0, have: String::new(), known: None, excluded: Vec::new() }
    }

    /// The same, telling the owner which hashes the asker knows.
    pub fn knowing(mut self, known: &Bitfield) -> Self {
        self.known = Some(known.to_hex());
        self
    }

    /// The same, reporting peers the asker excluded.
    pub fn excluding(mut self, excluded: Vec<String>) -> Self {
        self.excluded = excluded;
        self
    }

    /// The peers the asker reports, bounded: at most [`MAX_ANSWER_PEERS`]
    /// names of at most [`MAX_NAME_LEN`] bytes.
    pub fn reported(&self) -> Result<&[String], SwarmError> {
        if self.excluded.len() > MAX_ANSWER_PEERS {
            return Err(SwarmError::Length {
                what: "peers reported in an announcement (at most)",
                got: self.excluded.len() as u64,
                want: MAX_ANSWER_PEERS as u64,
            });
        }
        if let Some(n) = self.excluded.iter().find(|n| n.is_empty() || n.len() > MAX_NAME_LEN) {
            return Err(SwarmError::Length {
                what: "peer name reported in an announcement (bytes, at most)",
                got: n.len() as u64,
                want: MAX_NAME_LEN as u64,
            });
        }
        Ok(&self.excluded)
    }

    /// The hashes the asker says it knows; `None` when it did not say, or
    /// said something of another geometry (it then gets the whole list).
    pub fn known(&self, g: &Geometry) -> Option<Bitfield> {
        Bitfield::from_hex(g.count(), self.known.as_deref()?).ok()
    }

    /// The bitfield, validated against the owner's geometry.
    pub fn bitfield(&self, g: &Geometry) -> Result<Bitfield, SwarmError> {
        if self.blob_size != g.blob_size() || self.piece_size != g.piece_size() {
            return Err(SwarmError::Length {
                what: "announced geometry (piece size)",
                got: self.piece_size,
                want: g.piece_size(),
            });
        }
        Bitfield::from_hex(g.count(), &self.have)
    }
}

/// One peer in an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePeer {
    /// Its node id.
    pub node_id: String,
    /// Its address (`host:port`).
    pub addr: String,
    /// Its bitfield, [`Bitfield::to_hex`].
    pub have: String,
}

/// The owner's answer to a poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAnswer {
    /// When to poll next, in milliseconds.
    pub interval_ms: u64,
    /// The piece hashes the owner knows.
    pub hashes: WirePieceHashes,
    /// A sample of holders of pieces the asker lacks.
    pub peers: Vec<WirePeer>,
}

/// A peer of a validated answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerPeer {
    /// Its node id.
    pub node_id: String,
    /// Its address.
    pub addr: String,
    /// What it holds.
    pub have: Bitfield,
}

/// A validated answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// When to poll next, clamped to 100 ms..=2 s whatever the owner said.
    pub interval: Duration,
    /// The owner's piece hashes.
    pub hashes: PieceHashes,
    /// The peers.
    pub peers: Vec<AnswerPeer>,
}

impl Answer {
    /// The wire form of an answer.
    pub fn to_wire(&self) -> WireAnswer {
        WireAnswer {
            interval_ms: self.interval.as_millis().min(u128::from(u64::MAX)) as u64,
            hashes: self.hashes.to_wire(),
            peers: self
                .peers
                .iter()
                .map(|p| WirePeer { node_id: p.node_id.clone(), addr: p.addr.clone(), have: p.have.to_hex() })
                .collect(),
        }
    }

    /// Parses and validates an answer of at most [`MAX_ANSWER_BYTES`]
    /// bytes for a blob of geometry `expected`.
    pub fn parse(json: &[u8], expected: &Geometry) -> Result<Self, SwarmError> {
        if json.len() > MAX_ANSWER_BYTES {
            return Err(SwarmError::TooBig { size: json.len(), max: MAX_ANSWER_BYTES });
        }
        let w: WireAnswer = serde_json::from_slice(json)
            .map_err(|e| SwarmError::Malformed { what: "tracker answer", reason: e.to_string() })?;
        Self::from_wire(w, expected)
    }

    /// Validates a wire answer.
    pub fn from_wire(w: WireAnswer, expected: &Geometry) -> Result<Self, SwarmError> {
        if w.peers.len() > MAX_ANSWER_PEERS {
            return Err(SwarmError::Length {
                what: "tracker answer's peers (at most)",
                got: w.peers.len() as u64,
                want: MAX_ANSWER_PEERS as u64,
            });
        }
        let hashes = PieceHashes::from_wire(w.hashes, expected)?;
        let mut peers = Vec::with_capacity(w.peers.len());
        for p in w.peers {
            for name in [&p.node_id, &p.addr] {
                if name.is_empty() || name.len() > MAX_NAME_LEN {
                    return Err(SwarmError::Length {
                        what: "peer name in a tracker answer (bytes, at most)",
                        got: name.len() as u64,
                        want: MAX_NAME_LEN as u64,
                    });
                }
            }
            let have = Bitfield::from_hex(expected.count(), &p.have)?;
            peers.push(AnswerPeer { node_id: p.node_id, addr: p.addr, have });
        }
        let interval = Duration::from_millis(w.interval_ms.clamp(100, 2000));
        Ok(Answer { interval, hashes, peers })
    }
}

#[cfg(test)]
mod tests {
    use super::super::MIN_PIECE_SIZE;
    use super::*;

    const P: u64 = MIN_PIECE_SIZE;

    fn answer(g: Geometry) -> Answer {
        let mut hashes = PieceHashes::new(g);
        hashes.set(1, [7; 32]).unwrap();
        let mut have = Bitfield::new(g.count());
        have.set(1);
        let peers = vec![AnswerPeer { node_id: "n2".into(), addr: "10.0.0.2:7420".into(), have }];
        Answer { interval: Duration::from_millis(250), hashes, peers }
    }

    #[test]
    fn answer_round_trips() {
        let g = Geometry::new(5 * P + 1, P).unwrap();
        let a = answer(g);
        let json = serde_json::to_vec(&a.to_wire()).unwrap();
        assert_eq!(Answer::parse(&json, &g).unwrap(), a);
    }

    #[test]
    fn hostile_answers_are_refused() {
        let g = Geometry::new(5 * P, P).unwrap();
        let mut w = answer(g).to_wire();
        w.peers = vec![w.peers[0].clone(); MAX_ANSWER_PEERS + 1];
        assert!(Answer::from_wire(w, &g).is_err(), "too many peers");
        let mut w = answer(g).to_wire();
        w.peers[0].addr = "x".repeat(MAX_NAME_LEN + 1);
        assert!(Answer::from_wire(w, &g).is_err(), "too long a name");
        let mut w = answer(g).to_wire();
        w.peers[0].node_id.clear();
        assert!(Answer::from_wire(w, &g).is_err(), "an empty name");
        let mut w = answer(g).to_wire();
        w.peers[0].have = "ff".into();
        assert!(Answer::from_wire(w, &g).is_err(), "stray bits past the last piece");
        let other = Geometry::new(6 * P, P).unwrap();
        assert!(Answer::from_wire(answer(g).to_wire(), &other).is_err(), "another geometry");
        assert!(matches!(Answer::parse(&vec![b' '; MAX_ANSWER_BYTES + 1], &g), Err(SwarmError::TooBig { .. })));
        assert!(matches!(Answer::parse(b"[]", &g), Err(SwarmError::Malformed { .. })));
    }

    #[test]
    fn the_interval_is_clamped_whatever_the_owner_says() {
        let g = Geometry::new(5 * P, P).unwrap();
        let mut w = answer(g).to_wire();
        w.interval_ms = 0;
        assert_eq!(Answer::from_wire(w.clone(), &g).unwrap().interval, Duration::from_millis(100));
        w.interval_ms = u64::MAX;
        assert_eq!(Answer::from_wire(w, &g).unwrap().interval, Duration::from_secs(2));
    }

    #[test]
    fn announce_is_checked_against_the_owners_geometry() {
        let g = Geometry::new(5 * P, P).unwrap();
        let mut have = Bitfield::new(5);
        have.set(4);
        let a = WireAnnounce::new(&g, &have);
        assert_eq!(a.bitfield(&g).unwrap(), have);
        let other = Geometry::new(5 * P, 2 * P).unwrap();
        assert!(a.bitfield(&other).is_err());
        let bad = WireAnnounce { have: "zz".into(), ..a };
        assert!(bad.bitfield(&g).is_err());
    }

    #[test]
    fn an_announcement_reports_few_short_names_or_is_refused() {
        let g = Geometry::new(4 * MIN_PIECE_SIZE, MIN_PIECE_SIZE).unwrap();
        let a = WireAnnounce::new(&g, &Bitfield::new(4));
        assert!(a.reported().unwrap().is_empty());
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains("excluded") && !json.contains("known"), "older owners see what they know: {json}");
        assert_eq!(a.clone().excluding(vec!["n3".into()]).reported().unwrap(), ["n3"]);
        assert!(a.clone().excluding(vec![String::new()]).reported().is_err());
        assert!(a.clone().excluding(vec!["x".repeat(MAX_NAME_LEN + 1)]).reported().is_err());
        assert!(a.clone().excluding(vec!["n".into(); MAX_ANSWER_PEERS + 1]).reported().is_err());
        let known = Bitfield::from_hex(4, "a0").unwrap();
        assert_eq!(a.clone().knowing(&known).known(&g), Some(known));
        assert_eq!(WireAnnounce { known: Some("zzz".into()), ..a }.known(&g), None, "unreadable: the whole list");
    }
}
