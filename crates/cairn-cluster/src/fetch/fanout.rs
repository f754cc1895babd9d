//! Caller fan-out: the callers that joined a transfer before its first
//! byte get the bytes as they are released; one that stops reading is
//! dropped without stopping the others.

use std::time::Duration;

use bytes::Bytes;
use cairn_store::Digest;
use tokio::sync::mpsc;

use super::flight::Transfer;
use super::lock;
use super::record::SourceKind;
use crate::error::ClusterError;
use crate::peer::ByteStream;

/// A live caller that accepts no chunk for this long is dropped.
pub(crate) const CALLER_STALL: Duration = Duration::from_secs(30);

/// Chunks buffered per live caller before the transfer waits for it.
pub(crate) const CALLER_QUEUE: usize = 16;

/// What a live caller receives.
#[derive(Clone)]
pub(crate) enum Msg {
    Start { size: Option<u64>, source: String, kind: SourceKind },
    Chunk(Bytes),
    End,
    Fail(String),
}

/// The live callers of a transfer, until its first byte.
#[derive(Default)]
pub(crate) struct Shared {
    /// Set by the first byte: later callers wait for the stored blob.
    pub(crate) started: bool,
    pub(crate) subs: Vec<mpsc::Sender<Msg>>,
}

/// The body a live caller reads from its channel.
pub(crate) fn live_stream(d: Digest, rx: mpsc::Receiver<Msg>) -> ByteStream {
    let s = futures_util::stream::unfold(Some(rx), move |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Msg::Chunk(b)) => Some((Ok(b), Some(rx))),
            Some(Msg::End) => None,
            Some(Msg::Fail(reason)) => Some((Err(ClusterError::Aborted { digest: d, reason }), None)),
            Some(Msg::Start { .. }) => Some((Err(ClusterError::Task("transfer restarted".into())), None)),
            None => Some((Err(ClusterError::Aborted { digest: d, reason: "transfer stopped".into() }), None)),
        }
    });
    Box::pin(s)
}

/// What the transfer has sent to its live callers.
pub(crate) enum Release {
    /// Nothing yet: a failing source can be replaced silently.
    NotStarted,
    /// Bytes are flowing to these callers.
    Live(Vec<mpsc::Sender<Msg>>),
    /// Callers were told the transfer failed; later sources only fill the cache.
    Aborted,
}

impl Release {
    pub(crate) async fn send(&mut self, t: &Transfer, msg: Msg, size: Option<u64>, source: (&str, SourceKind)) {
        if let Release::NotStarted = self {
            let subs = {
                let mut s = lock(&t.shared);
                s.started = true;
                std::mem::take(&mut s.subs)
            };
            *self = Release::Live(subs);
            self.broadcast(Msg::Start { size, source: source.0.to_owned(), kind: source.1 }).await;
        }
        self.broadcast(msg).await;
    }

    async fn broadcast(&mut self, msg: Msg) {
        if let Release::Live(subs) = self {
            let mut keep = Vec::with_capacity(subs.len());
            for s in subs.drain(..) {
                // A caller that went away, or stopped reading, does not
                // stop the transfer for the others.
                match tokio::time::timeout(CALLER_STALL, s.send(msg.clone())).await {
                    Ok(Ok(())) => keep.push(s),
                    Ok(Err(_)) => {}
                    Err(_) => tracing::warn!("dropping a caller that stopped reading"),
                }
            }
            *subs = keep;
        }
    }

    pub(crate) async fn fail(&mut self, reason: String) {
        if let Release::Live(_) = self {
            self.broadcast(Msg::Fail(reason)).await;
            *self = Release::Aborted;
        }
    }
}
