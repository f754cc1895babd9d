//! The one interface every source of a blob implements.
//!
//! A source is one place to try, built by the order ([`super::order`])
//! for one digest: it opens the blob and says what its failure means. The
//! attempt ([`super::attempt`]) does the rest for every source alike:
//! the size limits, the rate watch, verification, hold-back and fan-out.

use std::time::Duration;

use cairn_store::Digest;

use crate::error::ClusterError;
use crate::peer::{BoxFut, RemoteBlob};

pub(crate) mod bucket;
pub(crate) mod origin;
pub(crate) mod owner;
pub(crate) mod peer;
pub(crate) mod registry;

pub(crate) use bucket::BucketSource;
pub(crate) use origin::OriginSource;
pub(crate) use owner::OwnerSource;
pub(crate) use peer::PeerSource;
pub(crate) use registry::RegistrySource;

/// One place a blob can come from.
pub(crate) trait Source: Send + Sync {
    /// How logs and errors name it: `peer ADDR`, `owner ADDR`, an origin.
    fn name(&self) -> String;

    /// What kind of place it is (for observers: a fixed set).
    fn kind(&self) -> super::SourceKind;

    /// The peer behind it, if any: marked down when it fails by its own
    /// fault (down, or sent bad data).
    fn peer(&self) -> Option<&str> {
        None
    }

    /// The size it announced before being opened (a peer's HEAD), checked
    /// against the limit before opening and against the body's size after.
    fn announced_size(&self) -> Option<u64> {
        None
    }

    /// Longest pause allowed in its body.
    fn idle(&self) -> Duration;

    /// Opens the blob `d`: its declared size and its unverified bytes. The
    /// source bounds the wait for the answer itself, with its own timeout.
    fn open<'a>(&'a self, d: &'a Digest) -> BoxFut<'a, RemoteBlob>;

    /// What the order does after this source failed with `e` (not a local
    /// failure: those end the transfer).
    fn on_failure(&self, _e: &ClusterError) -> OnFailure {
        OnFailure::Next
    }
}

/// What the order does after a source failed.
pub(crate) enum OnFailure {
    /// Go on with the next source.
    Next,
    /// Try `again` (the same place, one try further) after `after`,
    /// before any other source.
    Retry { after: Duration, again: Box<dyn Source> },
    /// The rest of the owner ranking would say the same: only this node's
    /// own direct try is left of the owners.
    SkipOwners,
}

/// The error of a source that gave no answer within `after`.
pub(crate) fn no_answer(origin: String, digest: Digest, after: Duration) -> ClusterError {
    ClusterError::Origin { origin, digest, reason: format!("no answer within {after:?}") }
}
