//! The piece swarm (issue 15): pure, deterministic code, no runtime and no
//! I/O. Time is a value passed in ([`Duration`](std::time::Duration) since
//! any fixed start), so the node and the simulator (`bench/swarm-sim`,
//! which compiles these very files) drive the same code.
//!
//! - [`Geometry`]: a blob cut into fixed-size pieces, checked arithmetic.
//! - [`Bitfield`]: which pieces a node holds.
//! - [`PieceHashes`]: the piece-hash list the owner publishes, validated.
//! - [`Scheduler`]: one node's transfer: which piece to ask of whom next.
//! - [`Tracker`]: the owner's view of who holds what, and its peer samples;
//!   [`SeedBudget`]: the owner serves a fresh piece to one asker.
//! - [`Answer`], [`WireAnnounce`]: the tracker's wire forms, bounded and validated.
//! - [`PieceHasher`]: piece hashes of a blob streaming in (the owner's origin read).
//!
//! This module uses nothing of the crate around it, only `std`, `serde`,
//! `sha2` and `thiserror`: keep it so (the simulator includes it by path).

mod bitfield;
mod geometry;
mod hashes;
mod rng;
mod scheduler;
mod tracker;
mod wire;

pub use bitfield::Bitfield;
pub use geometry::{
    DEFAULT_PIECE_SIZE, DEFAULT_PIECE_SIZE_MAX, DEFAULT_PIECE_SIZE_MIN, Geometry, MAX_PIECE_SIZE, MAX_PIECES,
    MIN_PIECE_SIZE, MIN_SWARM_BLOB, MIN_SWARM_PIECES, TARGET_PIECES, piece_size_for,
};
pub use hashes::{MAX_HASH_LIST_BYTES, PieceHash, PieceHasher, PieceHashes, WirePieceHashes};
pub use rng::Rng;
pub use scheduler::{Failure, PieceSource, Received, Request, Scheduler, SchedulerConfig, Verdict};
pub use tracker::{DEFAULT_SAMPLE, SEED_COPIES, SEED_RETRY, SeedBudget, Tracker, UPLOAD_SLOTS, poll_interval};
pub use wire::{
    Answer, AnswerPeer, MAX_ANSWER_BYTES, MAX_ANSWER_PEERS, MAX_NAME_LEN, WireAnnounce, WireAnswer, WirePeer,
};

/// What is wrong with swarm input (from the network or a config).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwarmError {
    /// A piece size outside the accepted range.
    #[error("piece size {size} is outside {min}..={max} bytes; use a size in that range")]
    PieceSize {
        /// The size given.
        size: u64,
        /// The smallest accepted.
        min: u64,
        /// The largest accepted.
        max: u64,
    },
    /// A blob that would need more pieces than accepted.
    #[error("a blob of {blob_size} bytes in pieces of {piece_size} needs more than {max} pieces; use larger pieces")]
    TooManyPieces {
        /// The blob size given.
        blob_size: u64,
        /// The piece size given.
        piece_size: u64,
        /// The most pieces accepted.
        max: u32,
    },
    /// A bitfield or hash list whose length does not match the geometry.
    #[error("{what} has {got} entries, the blob has {want} pieces; the sender disagrees on the blob's geometry")]
    Length {
        /// What was being read.
        what: &'static str,
        /// Entries it has.
        got: u64,
        /// Entries the geometry needs.
        want: u64,
    },
    /// A malformed piece hash.
    #[error("piece hash {index} is not 64 hex digits: {reason}")]
    BadHash {
        /// The piece it is for.
        index: u32,
        /// What is wrong with it.
        reason: String,
    },
    /// A bitfield with bits set past its last piece.
    #[error("bitfield sets bits past piece {count}; the sender is broken or hostile")]
    StrayBits {
        /// The piece count.
        count: u32,
    },
    /// A hash list bigger than any valid one.
    #[error("piece-hash list of {size} bytes is over the {max} byte limit")]
    TooBig {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A body that is not the JSON expected.
    #[error("{what} is not valid: {reason}; the sender runs another version or is broken")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// The parser's complaint.
        reason: String,
    },
    /// A piece index outside the blob.
    #[error("piece {index} is outside a blob of {count} pieces")]
    NoSuchPiece {
        /// The index given.
        index: u32,
        /// The piece count.
        count: u32,
    },
}
