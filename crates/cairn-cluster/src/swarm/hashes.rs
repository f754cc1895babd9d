//! The piece-hash list: the SHA-256 of each piece, published by the node
//! that fetched the blob from the origin (the owner), taken only from an
//! authenticated member. Pieces the publisher does not hold yet have no
//! hash. Every list read from the network is validated against the
//! geometry the reader expects, and bounded in size before it is parsed.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::bitfield::decode_byte;
use super::{Bitfield, Geometry, MAX_PIECES, SwarmError, Verdict};

/// The SHA-256 of one piece.
pub type PieceHash = [u8; 32];

/// The largest wire form of a list accepted for any geometry: 64 hex
/// digits, quotes and a comma a piece, plus the rest of the object.
pub const MAX_HASH_LIST_BYTES: usize = MAX_PIECES as usize * 67 + 256;

/// The known piece hashes of one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceHashes {
    geometry: Geometry,
    hashes: Vec<Option<PieceHash>>,
    known: Bitfield,
}

/// The wire form (JSON): `{"blob_size":…,"piece_size":…,"hashes":["hex"|null,…]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePieceHashes {
    /// The blob's size.
    pub blob_size: u64,
    /// The piece size.
    pub piece_size: u64,
    /// One entry a piece: its hash in lowercase hex, or null when unknown yet.
    pub hashes: Vec<Option<String>>,
}

impl PieceHashes {
    /// A list with no hash known yet.
    pub fn new(geometry: Geometry) -> Self {
        let n = geometry.count();
        PieceHashes { geometry, hashes: vec![None; n as usize], known: Bitfield::new(n) }
    }

    /// The geometry it is for.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The pieces whose hash is known.
    pub fn known(&self) -> &Bitfield {
        &self.known
    }

    /// This list without the hashes of `drop`'s pieces (what an asker
    /// already knows need not be sent again). A bitfield of another
    /// geometry drops nothing.
    pub fn without(&self, drop: &Bitfield) -> PieceHashes {
        let mut out = self.clone();
        if drop.count() == self.known.count() {
            for i in drop.iter() {
                if out.known.clear(i) {
                    out.hashes[i as usize] = None;
                }
            }
        }
        out
    }

    /// The hash of piece `index`, when known.
    pub fn get(&self, index: u32) -> Option<&PieceHash> {
        self.hashes.get(index as usize).and_then(Option::as_ref)
    }

    /// Records the hash of piece `index` (the publisher, as it hashes a
    /// piece from the origin).
    pub fn set(&mut self, index: u32, hash: PieceHash) -> Result<(), SwarmError> {
        self.geometry.check(index)?;
        self.hashes[index as usize] = Some(hash);
        self.known.set(index);
        Ok(())
    }

    /// Hashes `bytes` as piece `index` and records it.
    pub fn record(&mut self, index: u32, bytes: &[u8]) -> Result<(), SwarmError> {
        self.set(index, Sha256::digest(bytes).into())
    }

    /// Whether `bytes` are piece `index`: right length and hash. A piece
    /// whose hash is not known is never good.
    pub fn verify(&self, index: u32, bytes: &[u8]) -> Verdict {
        let (Some(want), Some(len)) = (self.get(index), self.geometry.len(index)) else {
            return Verdict::Bad;
        };
        if bytes.len() as u64 != len {
            return Verdict::Bad;
        }
        let got: PieceHash = Sha256::digest(bytes).into();
        if &got == want { Verdict::Good } else { Verdict::Bad }
    }

    /// Takes the hashes `newer` knows and this list does not. A piece
    /// whose hash `newer` changes is a contradiction: its index is
    /// returned and nothing is taken (the publisher is not to be trusted).
    pub fn adopt(&mut self, newer: &PieceHashes) -> Result<u32, u32> {
        if newer.geometry != self.geometry {
            return Err(0);
        }
        for i in newer.known.iter() {
            if let (Some(a), Some(b)) = (self.get(i), newer.get(i))
                && a != b
            {
                return Err(i);
            }
        }
        let mut added = 0;
        for i in newer.known.iter() {
            if !self.known.get(i)
                && let Some(h) = newer.get(i)
            {
                self.hashes[i as usize] = Some(*h);
                self.known.set(i);
                added += 1;
            }
        }
        Ok(added)
    }

    /// The wire form.
    pub fn to_wire(&self) -> WirePieceHashes {
        let hashes = self.hashes.iter().map(|h| h.as_ref().map(hex)).collect();
        WirePieceHashes { blob_size: self.geometry.blob_size(), piece_size: self.geometry.piece_size(), hashes }
    }

    /// The JSON wire form.
    pub fn to_json(&self) -> String {
        // A struct of numbers and strings always serializes.
        serde_json::to_string(&self.to_wire()).unwrap_or_default()
    }

    /// Validates a wire form against the geometry the reader expects (from
    /// the blob's known size and its own piece size).
    pub fn from_wire(w: WirePieceHashes, expected: &Geometry) -> Result<Self, SwarmError> {
        let g = Geometry::new(w.blob_size, w.piece_size)?;
        if g != *expected {
            return Err(SwarmError::Length {
                what: "piece-hash list's geometry (pieces)",
                got: u64::from(g.count()),
                want: u64::from(expected.count()),
            });
        }
        let want = u64::from(g.count());
        if w.hashes.len() as u64 != want {
            return Err(SwarmError::Length { what: "piece-hash list", got: w.hashes.len() as u64, want });
        }
        let mut out = PieceHashes::new(g);
        for (i, h) in w.hashes.iter().enumerate() {
            if let Some(h) = h {
                let index = i as u32;
                out.set(index, unhex(index, h)?)?;
            }
        }
        Ok(out)
    }

    /// Parses and validates a JSON wire form of at most
    /// [`MAX_HASH_LIST_BYTES`] bytes.
    pub fn parse(json: &[u8], expected: &Geometry) -> Result<Self, SwarmError> {
        if json.len() > MAX_HASH_LIST_BYTES {
            return Err(SwarmError::TooBig { size: json.len(), max: MAX_HASH_LIST_BYTES });
        }
        let w: WirePieceHashes = serde_json::from_slice(json)
            .map_err(|e| SwarmError::Malformed { what: "piece-hash list", reason: e.to_string() })?;
        Self::from_wire(w, expected)
    }
}

/// Hashes a blob's pieces as its bytes stream in order (the owner reading
/// the origin), in chunks of any size: each piece's hash comes out as soon
/// as its last byte is in.
#[derive(Debug, Clone)]
pub struct PieceHasher {
    geometry: Geometry,
    /// The piece being filled.
    next: u32,
    /// Bytes taken so far.
    taken: u64,
    hasher: Sha256,
}

impl PieceHasher {
    /// A hasher for a blob of geometry `geometry`, at its first byte.
    pub fn new(geometry: Geometry) -> Self {
        PieceHasher { geometry, next: 0, taken: 0, hasher: Sha256::new() }
    }

    /// Bytes taken so far.
    pub fn position(&self) -> u64 {
        self.taken
    }

    /// Takes the next `bytes`; returns the pieces they completed, with
    /// their hashes. Bytes past the blob's size are refused (nothing of
    /// this chunk is taken then).
    pub fn update(&mut self, mut bytes: &[u8]) -> Result<Vec<(u32, PieceHash)>, SwarmError> {
        let size = self.geometry.blob_size();
        let after = self.taken.checked_add(bytes.len() as u64).filter(|&a| a <= size);
        if after.is_none() {
            return Err(SwarmError::Length {
                what: "blob bytes",
                got: self.taken.saturating_add(bytes.len() as u64),
                want: size,
            });
        }
        let mut done = Vec::new();
        while !bytes.is_empty() {
            let Some(range) = self.geometry.range(self.next) else { break };
            // `taken` lies inside this piece, so the subtraction holds.
            let room = range.end - self.taken;
            let take = (bytes.len() as u64).min(room) as usize;
            self.hasher.update(&bytes[..take]);
            self.taken += take as u64;
            bytes = &bytes[take..];
            if self.taken == range.end {
                let h = std::mem::take(&mut self.hasher).finalize().into();
                done.push((self.next, h));
                self.next += 1;
            }
        }
        Ok(done)
    }

    /// Checks that the whole blob was taken.
    pub fn finish(&self) -> Result<(), SwarmError> {
        if self.taken == self.geometry.blob_size() {
            Ok(())
        } else {
            Err(SwarmError::Length { what: "blob bytes", got: self.taken, want: self.geometry.blob_size() })
        }
    }
}

fn hex(h: &PieceHash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(index: u32, s: &str) -> Result<PieceHash, SwarmError> {
    let bad = |reason: &str| SwarmError::BadHash { index, reason: reason.to_owned() };
    if s.len() != 64 {
        return Err(bad(&format!("{} characters", s.len())));
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks(2)) {
        *o = decode_byte(pair).ok_or_else(|| bad("not lowercase hex"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::MIN_PIECE_SIZE;
    use super::*;

    const P: u64 = MIN_PIECE_SIZE;

    fn blob(len: u64) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn full_list(data: &[u8], g: Geometry) -> PieceHashes {
        let mut h = PieceHashes::new(g);
        for i in 0..g.count() {
            let r = g.range(i).unwrap();
            h.record(i, &data[r.start as usize..r.end as usize]).unwrap();
        }
        h
    }

    #[test]
    fn verify_accepts_the_piece_and_refuses_a_changed_or_short_one() {
        let data = blob(3 * P + 5);
        let g = Geometry::new(data.len() as u64, P).unwrap();
        let h = full_list(&data, g);
        let last = g.range(3).unwrap();
        let piece = &data[last.start as usize..];
        assert_eq!(h.verify(3, piece), Verdict::Good);
        let mut wrong = piece.to_vec();
        wrong[0] ^= 1;
        assert_eq!(h.verify(3, &wrong), Verdict::Bad);
        assert_eq!(h.verify(3, &piece[..4]), Verdict::Bad);
        assert_eq!(h.verify(4, piece), Verdict::Bad, "no such piece");
        assert_eq!(PieceHashes::new(g).verify(3, piece), Verdict::Bad, "unknown hash");
    }

    #[test]
    fn wire_round_trip_with_unknown_pieces() {
        let data = blob(5 * P);
        let g = Geometry::new(data.len() as u64, P).unwrap();
        let mut h = PieceHashes::new(g);
        h.record(1, &data[P as usize..2 * P as usize]).unwrap();
        let json = h.to_json();
        let back = PieceHashes::parse(json.as_bytes(), &g).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.known().iter().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn hostile_hash_lists_are_refused() {
        let g = Geometry::new(4 * P, P).unwrap();
        let mut w = PieceHashes::new(g).to_wire();
        w.hashes.push(None);
        assert!(matches!(PieceHashes::from_wire(w, &g), Err(SwarmError::Length { .. })));
        let mut w = PieceHashes::new(g).to_wire();
        w.blob_size += 1;
        assert!(PieceHashes::from_wire(w, &g).is_err(), "another geometry");
        let mut w = PieceHashes::new(g).to_wire();
        w.hashes[0] = Some("ab".into());
        assert!(matches!(PieceHashes::from_wire(w, &g), Err(SwarmError::BadHash { index: 0, .. })));
        let mut w = PieceHashes::new(g).to_wire();
        w.hashes[2] = Some("G".repeat(64));
        assert!(matches!(PieceHashes::from_wire(w, &g), Err(SwarmError::BadHash { index: 2, .. })));
        let mut w = PieceHashes::new(g).to_wire();
        w.piece_size = 0;
        assert!(matches!(PieceHashes::from_wire(w, &g), Err(SwarmError::PieceSize { .. })));
        let w = WirePieceHashes { blob_size: u64::MAX, piece_size: P, hashes: vec![] };
        assert!(matches!(PieceHashes::from_wire(w, &g), Err(SwarmError::TooManyPieces { .. })));
        let huge = vec![b' '; MAX_HASH_LIST_BYTES + 1];
        assert!(matches!(PieceHashes::parse(&huge, &g), Err(SwarmError::TooBig { .. })));
        assert!(matches!(PieceHashes::parse(b"{\"blob_size\":-1}", &g), Err(SwarmError::Malformed { .. })));
    }

    #[test]
    fn piece_hasher_matches_whole_piece_hashes_whatever_the_chunking() {
        for size in [0, 1, P - 1, P, P + 1, 3 * P, 3 * P + 7] {
            let data = blob(size);
            let g = Geometry::new(size, P).unwrap();
            let want = full_list(&data, g);
            for chunk in [1usize, 7, P as usize - 1, P as usize, P as usize + 3, 5 * P as usize] {
                let mut h = PieceHasher::new(g);
                let mut got = PieceHashes::new(g);
                for c in data.chunks(chunk) {
                    for (i, hash) in h.update(c).unwrap() {
                        got.set(i, hash).unwrap();
                    }
                }
                h.finish().unwrap();
                assert_eq!(got, want, "size {size} chunk {chunk}");
            }
        }
    }

    #[test]
    fn piece_hasher_refuses_bytes_past_the_blob_and_a_short_blob() {
        let g = Geometry::new(2 * P, P).unwrap();
        let mut h = PieceHasher::new(g);
        assert_eq!(h.update(&blob(P)).unwrap().len(), 1);
        assert!(h.finish().is_err(), "half a blob is not the blob");
        assert!(h.update(&blob(P + 1)).is_err());
        assert_eq!(h.position(), P, "nothing of a refused chunk is taken");
        assert_eq!(h.update(&blob(P)).unwrap().len(), 1);
        h.finish().unwrap();
        assert!(h.update(&[0]).is_err());
    }

    #[test]
    fn adopt_takes_new_hashes_and_refuses_a_changed_one() {
        let data = blob(4 * P);
        let g = Geometry::new(data.len() as u64, P).unwrap();
        let full = full_list(&data, g);
        let mut mine = PieceHashes::new(g);
        mine.record(0, &data[..P as usize]).unwrap();
        assert_eq!(mine.adopt(&full), Ok(3));
        assert_eq!(mine, full);
        let mut liar = full.clone();
        liar.set(2, [9; 32]).unwrap();
        assert_eq!(mine.adopt(&liar), Err(2));
        assert_eq!(mine, full, "nothing taken from a contradiction");
    }
}
