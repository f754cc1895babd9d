//! A blob cut into fixed-size pieces. Every size may come from the network,
//! so every number here is checked: no piece count, offset or length can
//! overflow or point outside the blob.

use std::ops::Range;

use super::SwarmError;

/// The piece size the swarm uses unless configured otherwise: 8 MiB (see
/// the README's "Swarm" for why).
pub const DEFAULT_PIECE_SIZE: u64 = 8 << 20;

/// The smallest piece size accepted (tests use small pieces).
pub const MIN_PIECE_SIZE: u64 = 16 << 10;

/// The largest piece size accepted: a piece is held in memory while it is
/// hashed, so it stays small.
pub const MAX_PIECE_SIZE: u64 = 64 << 20;

/// The most pieces a blob may have: bounds bitfields (8 KiB) and hash
/// lists (2 MiB) whatever a peer claims. 512 GiB at the default piece size.
pub const MAX_PIECES: u32 = 1 << 16;

/// Blobs of fewer pieces than this are not swarmed: fetched whole from one
/// source as before (nothing to overlap).
pub const MIN_SWARM_PIECES: u32 = 4;

/// The most piece size ever chosen: 8 MiB (see the README's "Swarm").
pub const DEFAULT_PIECE_SIZE_MAX: u64 = DEFAULT_PIECE_SIZE;

/// The least piece size ever chosen: 512 KiB, 21 ms at 200 Mbit/s, still
/// some 20 round trips of a data centre, hidden by two requests per peer.
pub const DEFAULT_PIECE_SIZE_MIN: u64 = 512 << 10;

/// Pieces a blob is cut into at least, when the size bounds allow: enough
/// for nodes to overlap (a piece crosses a hop in one piece time).
pub const TARGET_PIECES: u64 = 128;

/// Blobs smaller than this are not swarmed (fetched whole from one source).
pub const MIN_SWARM_BLOB: u64 = 16 << 20;

/// The piece size for a blob of `blob_size`: the power of two that cuts it
/// into about [`TARGET_PIECES`], within 512 KiB..=8 MiB (so 64 MiB →
/// 512 KiB, 256 MiB → 2 MiB, 1 GiB and more → 8 MiB). The owner chooses it
/// and publishes it with the hashes.
pub fn piece_size_for(blob_size: u64) -> u64 {
    let want = blob_size.div_ceil(TARGET_PIECES).max(1);
    want.checked_next_power_of_two()
        .unwrap_or(DEFAULT_PIECE_SIZE_MAX)
        .clamp(DEFAULT_PIECE_SIZE_MIN, DEFAULT_PIECE_SIZE_MAX)
}

/// A blob's size and piece size, and the pieces that follow from them.
/// The last piece is shorter when the size is not a multiple of the piece
/// size; an empty blob has no pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    blob_size: u64,
    piece_size: u64,
    count: u32,
}

impl Geometry {
    /// The geometry of a blob of `blob_size` bytes in pieces of `piece_size`,
    /// or why they are not acceptable.
    pub fn new(blob_size: u64, piece_size: u64) -> Result<Self, SwarmError> {
        if !(MIN_PIECE_SIZE..=MAX_PIECE_SIZE).contains(&piece_size) {
            return Err(SwarmError::PieceSize { size: piece_size, min: MIN_PIECE_SIZE, max: MAX_PIECE_SIZE });
        }
        // div_ceil cannot overflow, unlike (size + piece - 1) / piece.
        let count = blob_size.div_ceil(piece_size);
        let too_many = SwarmError::TooManyPieces { blob_size, piece_size, max: MAX_PIECES };
        let count = u32::try_from(count).map_err(|_| too_many.clone())?;
        if count > MAX_PIECES {
            return Err(too_many);
        }
        Ok(Geometry { blob_size, piece_size, count })
    }

    /// The blob's size in bytes.
    pub fn blob_size(&self) -> u64 {
        self.blob_size
    }

    /// The size of every piece but maybe the last.
    pub fn piece_size(&self) -> u64 {
        self.piece_size
    }

    /// How many pieces.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether the blob is worth swarming: at least [`MIN_SWARM_BLOB`]
    /// bytes and [`MIN_SWARM_PIECES`] pieces.
    pub fn worth_swarming(&self) -> bool {
        self.count >= MIN_SWARM_PIECES && self.blob_size >= MIN_SWARM_BLOB
    }

    /// The byte range of piece `index`, or `None` outside the blob.
    pub fn range(&self, index: u32) -> Option<Range<u64>> {
        if index >= self.count {
            return None;
        }
        let start = u64::from(index).checked_mul(self.piece_size)?;
        let end = start.checked_add(self.piece_size)?.min(self.blob_size);
        Some(start..end)
    }

    /// The length of piece `index`, or `None` outside the blob.
    pub fn len(&self, index: u32) -> Option<u64> {
        self.range(index).map(|r| r.end - r.start)
    }

    /// True for a blob of no bytes (and so no pieces).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The piece holding byte `offset`, or `None` past the end.
    pub fn piece_at(&self, offset: u64) -> Option<u32> {
        if offset >= self.blob_size {
            return None;
        }
        u32::try_from(offset / self.piece_size).ok()
    }

    /// Checks that `index` is a piece of this blob.
    pub fn check(&self, index: u32) -> Result<(), SwarmError> {
        if index < self.count { Ok(()) } else { Err(SwarmError::NoSuchPiece { index, count: self.count }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = MIN_PIECE_SIZE;

    #[test]
    fn piece_boundaries_exact_multiple_one_over_and_short_last() {
        let g = Geometry::new(4 * P, P).unwrap();
        assert_eq!(g.count(), 4);
        assert_eq!(g.range(3), Some(3 * P..4 * P));
        assert_eq!(g.range(4), None);
        let g = Geometry::new(4 * P + 1, P).unwrap();
        assert_eq!(g.count(), 5);
        assert_eq!(g.range(4), Some(4 * P..4 * P + 1));
        assert_eq!(g.len(4), Some(1));
        let g = Geometry::new(4 * P - 1, P).unwrap();
        assert_eq!(g.count(), 4);
        assert_eq!(g.len(3), Some(P - 1));
        assert_eq!(g.piece_at(4 * P - 2), Some(3));
        assert_eq!(g.piece_at(4 * P - 1), None);
    }

    #[test]
    fn a_blob_smaller_than_one_piece_is_one_short_piece() {
        let g = Geometry::new(1, P).unwrap();
        assert_eq!((g.count(), g.range(0)), (1, Some(0..1)));
        assert!(!g.worth_swarming());
    }

    #[test]
    fn an_empty_blob_has_no_pieces() {
        let g = Geometry::new(0, P).unwrap();
        assert_eq!(g.count(), 0);
        assert!(g.is_empty());
        assert_eq!(g.range(0), None);
        assert_eq!(g.piece_at(0), None);
        assert!(g.check(0).is_err());
    }

    #[test]
    fn worth_swarming_from_min_swarm_pieces_and_bytes() {
        let big = MIN_SWARM_BLOB;
        let n = u64::from(MIN_SWARM_PIECES);
        assert!(Geometry::new(big, P).unwrap().worth_swarming());
        assert!(!Geometry::new(big - 1, P).unwrap().worth_swarming(), "small blobs keep today's path");
        let piece = big / n;
        assert!(Geometry::new(big, piece).unwrap().worth_swarming());
        assert!(!Geometry::new(big, piece * 2).unwrap().worth_swarming(), "two pieces: nothing to overlap");
        assert!(Geometry::new((n - 1) * (big / 2) + 1, big / 2).unwrap().worth_swarming());
    }

    #[test]
    fn piece_size_for_cuts_about_128_pieces_within_512_kib_to_8_mib() {
        assert_eq!(piece_size_for(0), 512 << 10);
        assert_eq!(piece_size_for(64 << 20), 512 << 10);
        assert_eq!(piece_size_for((64 << 20) + 1), 1 << 20);
        assert_eq!(piece_size_for(256 << 20), 2 << 20);
        assert_eq!(piece_size_for(512 << 20), 4 << 20);
        assert_eq!(piece_size_for(1 << 30), 8 << 20);
        assert_eq!(piece_size_for(3 << 30), 8 << 20);
        assert_eq!(piece_size_for(u64::MAX), 8 << 20, "no overflow");
        for size in [1u64, 1 << 20, 100 << 20, 64 << 30] {
            assert!(Geometry::new(size, piece_size_for(size)).is_ok(), "{size}");
        }
    }

    #[test]
    fn hostile_sizes_are_refused_not_overflowed() {
        assert!(matches!(Geometry::new(100, 0), Err(SwarmError::PieceSize { .. })));
        assert!(matches!(Geometry::new(100, MAX_PIECE_SIZE + 1), Err(SwarmError::PieceSize { .. })));
        assert!(matches!(Geometry::new(u64::MAX, P), Err(SwarmError::TooManyPieces { .. })));
        assert!(matches!(Geometry::new(u64::MAX, MAX_PIECE_SIZE), Err(SwarmError::TooManyPieces { .. })));
        let most = u64::from(MAX_PIECES) * P;
        assert_eq!(Geometry::new(most, P).unwrap().count(), MAX_PIECES);
        assert!(Geometry::new(most + 1, P).is_err());
    }

    #[test]
    fn the_last_of_the_most_pieces_ends_at_the_blob_end() {
        let size = u64::from(MAX_PIECES) * MAX_PIECE_SIZE - 3;
        let g = Geometry::new(size, MAX_PIECE_SIZE).unwrap();
        let last = g.range(g.count() - 1).unwrap();
        assert_eq!(last.end, size);
        assert_eq!(g.range(u32::MAX), None);
        assert_eq!(g.piece_at(u64::MAX), None);
    }
}
