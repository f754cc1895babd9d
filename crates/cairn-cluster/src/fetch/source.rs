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

/// A source already opened (the swarm looked at its size first): its body
/// is handed to the attempt once, everything else is the source's.
pub(crate) struct Opened<'s> {
    src: &'s dyn Source,
    body: std::sync::Mutex<Option<RemoteBlob>>,
}

impl<'s> Opened<'s> {
    pub(crate) fn new(src: &'s dyn Source, body: RemoteBlob) -> Self {
        Opened { src, body: std::sync::Mutex::new(Some(body)) }
    }
}

impl Source for Opened<'_> {
    fn name(&self) -> String {
        self.src.name()
    }

    fn kind(&self) -> super::SourceKind {
        self.src.kind()
    }

    fn peer(&self) -> Option<&str> {
        self.src.peer()
    }

    fn announced_size(&self) -> Option<u64> {
        self.src.announced_size()
    }

    fn idle(&self) -> Duration {
        self.src.idle()
    }

    fn open<'a>(&'a self, d: &'a Digest) -> BoxFut<'a, RemoteBlob> {
        let body = super::lock(&self.body).take();
        Box::pin(async move {
            match body {
                Some(b) => Ok(b),
                None => self.src.open(d).await,
            }
        })
    }

    fn on_failure(&self, e: &ClusterError) -> OnFailure {
        self.src.on_failure(e)
    }
}
