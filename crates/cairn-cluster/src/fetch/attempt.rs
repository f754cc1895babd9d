//! One try of one source: open it, stream its body into a temp blob and
//! to the live callers, verify the digest, release the held-back tail.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_store::{Digest, Store, StoreError};
use futures_util::stream::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::fanout::{Msg, Release};
use super::flight::Transfer;
use super::limits::{PendingRoom, RateWatch, room_for_blob};
use super::source::Source;
use super::{HOLD_BACK, Inner};
use crate::error::{ClusterError, Result};
use crate::peer::RemoteBlob;

pub(crate) enum WriteMsg {
    Chunk(Bytes),
    /// Verify, tell the sender (if any) that the digest matched, then persist.
    Commit(Option<oneshot::Sender<()>>),
}

/// One try of one source: stream it into a temp blob and to the callers.
pub(crate) async fn attempt(inner: &Inner, t: &Transfer, src: &dyn Source, release: &mut Release) -> Result<()> {
    let d = t.digest;
    let name = src.name();
    let max = inner.cfg.max_blob_size;
    if let Some(head) = src.announced_size()
        && head > max
    {
        return Err(ClusterError::TooLarge { source_name: name, digest: d, size: head, limit: max });
    }
    let remote = src.open(&d).await?;
    if let (Some(head), Some(get)) = (src.announced_size(), remote.size)
        && head != get
    {
        return Err(ClusterError::Truncated {
            source_name: name,
            digest: d,
            reason: format!("HEAD said {head} bytes, GET says {get}"),
        });
    }
    let mut room = PendingRoom::Ready(cairn_store::cache::Reservation::default());
    if let Some(size) = remote.size {
        if size > max {
            return Err(ClusterError::TooLarge { source_name: name, digest: d, size, limit: max });
        }
        room = room_for_blob(inner, d, size).await?;
    }
    let (tx, rx) = mpsc::channel::<WriteMsg>(8);
    let store = inner.store.clone();
    // A spawned handle, not a lazy future: the writer must drain the channel while bytes arrive.
    let writer = tokio::task::spawn_blocking(move || write_blob(store, d, rx));
    let mut run = Receive {
        inner,
        t,
        name,
        kind: src.kind(),
        size: remote.size,
        idle: src.idle(),
        room,
        tx,
        held: VecDeque::new(),
        held_bytes: 0,
        received: 0,
    };
    let pumped = run.pump(remote, release).await;
    match pumped {
        Ok(()) => run.finish(writer, release).await,
        Err(Stop::Source(e)) => Err(e),
        Err(Stop::WriterGone) => {
            drop(run);
            Err(writer_stopped(d, writer).await)
        }
    }
}

/// Why the pump stopped early.
enum Stop {
    /// The source failed or broke a limit.
    Source(ClusterError),
    /// The temp blob writer stopped: a local failure, not the source's fault.
    WriterGone,
}

impl From<ClusterError> for Stop {
    fn from(e: ClusterError) -> Self {
        Stop::Source(e)
    }
}

/// The receiving side of one attempt.
struct Receive<'a> {
    inner: &'a Inner,
    t: &'a Transfer,
    name: String,
    kind: super::SourceKind,
    /// The size the source declared.
    size: Option<u64>,
    idle: Duration,
    /// Room under the cache's cap, awaited before the commit.
    room: PendingRoom,
    tx: mpsc::Sender<WriteMsg>,
    held: VecDeque<Bytes>,
    held_bytes: u64,
    received: u64,
}

impl Receive<'_> {
    /// Moves the body to the writer and the callers until it ends,
    /// holding back its last [`HOLD_BACK`] bytes.
    async fn pump(&mut self, mut remote: RemoteBlob, release: &mut Release) -> Result<(), Stop> {
        let mut rate = RateWatch::new(self.inner.cfg.min_transfer_rate, self.inner.cfg.rate_window);
        while let Some(chunk) = self.next_chunk(&mut remote, &mut rate).await? {
            self.check_length(chunk.len())?;
            if self.tx.send(WriteMsg::Chunk(chunk.clone())).await.is_err() {
                return Err(Stop::WriterGone);
            }
            self.held_bytes += chunk.len() as u64;
            self.held.push_back(chunk);
            while let Some(front) = self.held.front()
                && self.held_bytes - front.len() as u64 >= HOLD_BACK
            {
                self.held_bytes -= front.len() as u64;
                if let Some(c) = self.held.pop_front() {
                    release.send(self.t, Msg::Chunk(c), self.size, (&self.name, self.kind)).await;
                }
            }
        }
        if let Some(s) = self.size.filter(|s| *s != self.received) {
            return Err(self.truncated(format!("got {} of {s} bytes", self.received)).into());
        }
        Ok(())
    }

    /// The next non-empty chunk, `None` at the end of the body. Waits at
    /// most the idle timeout, and judges the source's rate.
    async fn next_chunk(&self, remote: &mut RemoteBlob, rate: &mut RateWatch) -> Result<Option<Bytes>> {
        let d = self.t.digest;
        loop {
            let budget = rate.budget(self.idle);
            let asked = Instant::now();
            let next = tokio::time::timeout(budget, remote.body.next()).await;
            let got = match &next {
                Ok(Some(Ok(c))) => c.len() as u64,
                _ => 0,
            };
            if let Some((bytes, over)) = rate.record(got, asked.elapsed()) {
                let min = self.inner.cfg.min_transfer_rate;
                return Err(ClusterError::TooSlow { source_name: self.name.clone(), digest: d, bytes, over, min });
            }
            let next = match next {
                Ok(n) => n,
                Err(_) if budget < self.idle => continue,
                Err(_) => {
                    return Err(ClusterError::Stalled { source_name: self.name.clone(), digest: d, after: self.idle });
                }
            };
            match next {
                None => return Ok(None),
                Some(Ok(c)) if c.is_empty() => continue,
                Some(Ok(c)) => return Ok(Some(c)),
                Some(Err(e @ (ClusterError::Truncated { .. } | ClusterError::Stalled { .. }))) => return Err(e),
                Some(Err(other)) => return Err(self.truncated(other.to_string())),
            }
        }
    }

    /// Counts a chunk of `len` bytes against the size limit and the
    /// declared size.
    fn check_length(&mut self, len: usize) -> Result<()> {
        self.received = self.received.saturating_add(len as u64);
        let max = self.inner.cfg.max_blob_size;
        if self.received > max {
            let (source_name, digest, size) = (self.name.clone(), self.t.digest, self.received);
            return Err(ClusterError::TooLarge { source_name, digest, size, limit: max });
        }
        if self.size.is_some_and(|s| self.received > s) {
            return Err(self.truncated("body longer than declared".into()));
        }
        Ok(())
    }

    fn truncated(&self, reason: String) -> ClusterError {
        ClusterError::Truncated { source_name: self.name.clone(), digest: self.t.digest, reason }
    }

    /// Has the writer verify and persist the blob; once the digest matched,
    /// the callers get the held-back tail while the disk catches up
    /// (callers that join later wait for the persisted blob).
    async fn finish(
        self,
        writer: JoinHandle<Result<cairn_store::PutOutcome, StoreError>>,
        release: &mut Release,
    ) -> Result<()> {
        let Receive { inner, t, name, kind, received, held, tx, room, .. } = self;
        // Held until the writer has committed (and counted) the blob.
        let _room = room.ready().await?;
        // The writer's own errors are reported by its join below.
        let (verified_tx, verified) = oneshot::channel();
        let _ = tx.send(WriteMsg::Commit(Some(verified_tx))).await;
        drop(tx);
        let released = verified.await.is_ok();
        if released {
            for c in held {
                release.send(t, Msg::Chunk(c), Some(received), (&name, kind)).await;
            }
            release.send(t, Msg::End, Some(received), (&name, kind)).await;
        }
        let outcome = writer.await.map_err(|e| ClusterError::Task(e.to_string()))?;
        match outcome {
            Ok(out) if released => {
                // An origin's blob goes to the bucket too, so the cluster
                // never asks the origin again even after every node evicted it.
                if matches!(kind, super::SourceKind::Origin | super::SourceKind::Upstream)
                    && !out.existed
                    && let Some(tier) = inner.store.tier()
                {
                    tier.upload_in_background(out.digest);
                }
                Ok(())
            }
            Ok(_) => Err(ClusterError::Task("temp blob writer finished without verifying".into())),
            Err(StoreError::DigestMismatch { expected, actual }) => {
                Err(ClusterError::Corrupt { source_name: name, expected, actual })
            }
            Err(e) => Err(ClusterError::LocalWrite { digest: t.digest, source: e }),
        }
    }
}

/// The error of a writer that stopped taking chunks.
async fn writer_stopped(d: Digest, writer: JoinHandle<Result<cairn_store::PutOutcome, StoreError>>) -> ClusterError {
    match writer.await {
        Err(e) => ClusterError::Task(e.to_string()),
        Ok(Err(e)) => ClusterError::LocalWrite { digest: d, source: e },
        Ok(Ok(_)) => ClusterError::Task("temp blob writer stopped early".into()),
    }
}

/// Writes chunks to a temp blob; commits (verifying `d`) only on `Commit`,
/// signalling between the digest check and the sync.
pub(crate) fn write_blob(
    store: Store,
    d: Digest,
    mut rx: mpsc::Receiver<WriteMsg>,
) -> Result<cairn_store::PutOutcome, StoreError> {
    let mut w = store.writer_for(cairn_store::cache::Provenance::Fetched)?;
    while let Some(m) = rx.blocking_recv() {
        match m {
            WriteMsg::Chunk(c) => {
                w.write_owned(c).map_err(|source| store.write_error(source))?;
            }
            WriteMsg::Commit(verified) => {
                let v = w.verify(Some(&d))?;
                if let Some(tx) = verified {
                    let _ = tx.send(());
                }
                return v.persist();
            }
        }
    }
    // The source failed: dropping the writer removes the temp file.
    Err(StoreError::BlobNotFound(d))
}
