//! A peer that holds the blob: `GET /v1/blobs/{digest}`.

use std::sync::Arc;
use std::time::Duration;

use cairn_store::Digest;

use super::Source;
use crate::peer::{BoxFut, PeerApi, RemoteBlob, within};

/// A peer, with the size its HEAD answered (none for a preferred peer,
/// which is not asked first).
pub(crate) struct PeerSource {
    pub(crate) addr: String,
    pub(crate) size: Option<u64>,
    pub(crate) api: Arc<dyn PeerApi>,
    /// Bounds the answer's headers and every pause in the body.
    pub(crate) timeout: Duration,
}

impl Source for PeerSource {
    fn name(&self) -> String {
        format!("peer {}", self.addr)
    }

    fn peer(&self) -> Option<&str> {
        Some(&self.addr)
    }

    fn announced_size(&self) -> Option<u64> {
        self.size
    }

    fn kind(&self) -> crate::fetch::SourceKind {
        crate::fetch::SourceKind::Peer
    }

    fn idle(&self) -> Duration {
        self.timeout
    }

    fn open<'a>(&'a self, d: &'a Digest) -> BoxFut<'a, RemoteBlob> {
        Box::pin(within(
            self.timeout,
            &self.addr,
            move || format!("GET /v1/blobs/{d}"),
            self.api.get_blob(&self.addr, d),
        ))
    }
}
