//! Request bodies, read on the async side only: a client that sends slowly
//! or not at all costs a task and a socket, never a blocking-pool thread.
//! Bytes go to the store in batches of about [`BATCH_BYTES`], each written
//! by a short blocking task once it has arrived ([`pump`]); a body that
//! sends nothing for the body timeout ends with [`BodyError::Idle`].

use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use futures_util::StreamExt;

/// Body bytes handed to one blocking write. Request bodies arrive in chunks
/// of tens of KiB; a hand-off per chunk cost a thread wake-up each.
pub const BATCH_BYTES: usize = 1 << 20;

/// Default of `body_timeout`: the longest a request body may send nothing.
pub const DEFAULT_BODY_TIMEOUT: Duration = cairn_cluster::fetch::DEFAULT_BODY_TIMEOUT;

/// Why a request body did not arrive whole.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyError {
    /// The client sent no body data for the body timeout.
    #[error(
        "no request body data for {}s after {received} bytes; the upload was dropped (resend it, or raise body_timeout if the link is that slow)",
        after.as_secs_f64()
    )]
    Idle {
        /// The timeout.
        after: Duration,
        /// Bytes received before the silence.
        received: u64,
    },
    /// The body passed the largest blob the node accepts (`max_blob_size`).
    #[error(
        "the request body passed {limit} bytes, the largest blob this node accepts (max_blob_size); nothing was stored"
    )]
    TooLarge {
        /// Bytes this request could still add.
        limit: u64,
        /// Bytes received when it was stopped.
        received: u64,
    },
    /// The connection failed or the body was malformed.
    #[error("the request body was cut after {received} bytes: {reason}")]
    Cut {
        /// Bytes received before the cut.
        received: u64,
        /// Why.
        reason: String,
    },
}

impl BodyError {
    /// Bytes received before the failure.
    pub fn received(&self) -> u64 {
        match self {
            BodyError::Idle { received, .. }
            | BodyError::Cut { received, .. }
            | BodyError::TooLarge { received, .. } => *received,
        }
    }
}

/// A request body as batches of at most about [`BATCH_BYTES`], each chunk
/// awaited for at most the idle timeout.
pub struct Batches {
    stream: BodyDataStream,
    idle: Duration,
    received: u64,
    limit: u64,
    /// The body's length as the client declared it (`Content-Length`).
    declared: Option<u64>,
    done: bool,
}

impl Batches {
    /// Reads `body`; a silence longer than `idle` fails it.
    pub fn new(body: Body, idle: Duration) -> Self {
        use axum::body::HttpBody;
        let declared = body.size_hint().exact();
        Batches { stream: body.into_data_stream(), idle, received: 0, limit: u64::MAX, declared, done: false }
    }

    /// Fails the body once it passes `limit` bytes, before they are written.
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next chunk of the body, `None` at its end.
    async fn chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        if self.done {
            return Ok(None);
        }
        let received = self.received;
        // A declared length over the limit fails before any byte is read.
        if self.declared.is_some_and(|n| n > self.limit) {
            self.done = true;
            return Err(BodyError::TooLarge { limit: self.limit, received });
        }
        match tokio::time::timeout(self.idle, self.stream.next()).await {
            Err(_) => Err(BodyError::Idle { after: self.idle, received }),
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Ok(Some(Err(e))) => Err(BodyError::Cut { received, reason: e.to_string() }),
            Ok(Some(Ok(b))) => {
                self.received = received.saturating_add(b.len() as u64);
                if self.received > self.limit {
                    self.done = true;
                    return Err(BodyError::TooLarge { limit: self.limit, received: self.received });
                }
                Ok(Some(b))
            }
        }
    }

    /// The next batch (never empty), `None` at the end of the body.
    pub async fn next(&mut self) -> Result<Option<Vec<Bytes>>, BodyError> {
        let mut batch = Vec::new();
        let mut size = 0usize;
        while size < BATCH_BYTES {
            match self.chunk().await? {
                Some(b) if b.is_empty() => {}
                Some(b) => {
                    size = size.saturating_add(b.len());
                    batch.push(b);
                }
                None => break,
            }
        }
        Ok(if batch.is_empty() { None } else { Some(batch) })
    }
}

/// Reads a whole small body; `None` once it passes `limit` bytes.
pub async fn read_limited(body: Body, limit: usize, idle: Duration) -> Result<Option<Vec<u8>>, BodyError> {
    let mut b = Batches::new(body, idle);
    let mut out = Vec::new();
    while let Some(chunk) = b.chunk().await? {
        if out.len().checked_add(chunk.len()).is_none_or(|n| n > limit) {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

/// What stopped a [`pump`].
#[derive(Debug)]
pub enum PumpError<E> {
    /// The body failed or went silent.
    Body(BodyError),
    /// The sink failed to write a batch.
    Sink(E),
    /// A blocking write task panicked or was cancelled.
    Task(String),
}

/// Holds a value whose drop may touch the disk (a temp file removed, an
/// upload truncated) and drops it on the blocking pool.
struct DropOnPool<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> Drop for DropOnPool<T> {
    fn drop(&mut self) {
        let Some(v) = self.0.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(move || drop(v))),
            Err(_) => drop(v),
        }
    }
}

/// A batch being written: the sink comes back with the write's result.
type Writing<T, E> = tokio::task::JoinHandle<(DropOnPool<T>, Result<(), E>)>;

/// Feeds every batch of `body` to `sink` with `write`, one short blocking
/// task per batch (while one batch is written the next is read), and
/// returns the sink at the end of the body. On any failure the sink is
/// dropped on the blocking pool, after its last write has finished.
pub async fn pump<T, E>(
    body: &mut Batches,
    sink: T,
    write: fn(&mut T, Vec<Bytes>) -> Result<(), E>,
) -> Result<T, PumpError<E>>
where
    T: Send + 'static,
    E: Send + 'static,
{
    let mut sink = DropOnPool(Some(sink));
    let mut writing: Option<Writing<T, E>> = None;
    loop {
        let next = body.next().await;
        if let Some(h) = writing.take() {
            let (back, res) = h.await.map_err(|e| PumpError::Task(e.to_string()))?;
            if let Err(e) = res {
                discard(back).await;
                return Err(PumpError::Sink(e));
            }
            sink = back;
        }
        let batch = match next {
            Ok(Some(batch)) => batch,
            Ok(None) => return sink.0.take().ok_or_else(|| PumpError::Task("upload sink lost".into())),
            Err(e) => {
                // Rolled back before the answer, so a client's retry finds the old state.
                discard(sink).await;
                return Err(PumpError::Body(e));
            }
        };
        let mut s = DropOnPool(sink.0.take());
        writing = Some(tokio::task::spawn_blocking(move || {
            let res = match s.0.as_mut() {
                Some(v) => write(v, batch),
                None => Ok(()),
            };
            (s, res)
        }));
    }
}

/// Drops `v` on the blocking pool and waits for it.
async fn discard<T: Send + 'static>(mut v: DropOnPool<T>) {
    let inner = v.0.take();
    let _ = tokio::task::spawn_blocking(move || drop(inner)).await;
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn chunked_body(chunks: Vec<Result<Vec<u8>, &'static str>>) -> Body {
        let s = futures_util::stream::iter(chunks.into_iter().map(|c| c.map(Bytes::from).map_err(io::Error::other)));
        Body::from_stream(s)
    }

    fn collect(v: &mut Vec<u8>, batch: Vec<Bytes>) -> Result<(), String> {
        assert!(batch.iter().map(Bytes::len).sum::<usize>() <= 2 * BATCH_BYTES);
        batch.iter().for_each(|b| v.extend_from_slice(b));
        Ok(())
    }

    #[tokio::test]
    async fn pump_hands_every_byte_over_in_order_when_the_body_comes_in_many_small_chunks() {
        let data: Vec<u8> = (0..3 * BATCH_BYTES + 999).map(|i| (i * 17 % 251) as u8).collect();
        let mut chunks: Vec<_> = data.chunks(60_000).map(|c| Ok(c.to_vec())).collect();
        chunks.insert(3, Ok(Vec::new()));
        let mut b = Batches::new(chunked_body(chunks), Duration::from_secs(5));
        let out = pump(&mut b, Vec::new(), collect).await.unwrap();
        assert!(out == data, "got {} bytes, want {}", out.len(), data.len());
        assert_eq!(b.received(), data.len() as u64);
    }

    #[tokio::test]
    async fn pump_reports_a_body_error_with_the_bytes_received_before_it() {
        let body = chunked_body(vec![Ok(vec![1; 1000]), Ok(vec![2; 500]), Err("connection reset")]);
        let mut b = Batches::new(body, Duration::from_secs(5));
        match pump(&mut b, Vec::new(), collect).await {
            Err(PumpError::Body(e @ BodyError::Cut { received: 1500, .. })) => {
                assert!(e.to_string().contains("connection reset"), "{e}")
            }
            other => panic!("{:?}", other.map(|v| v.len())),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_goes_silent_fails_after_the_idle_timeout() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, io::Error>>(1);
        tx.send(Ok(Bytes::from_static(b"x"))).await.unwrap();
        let body = Body::from_stream(tokio_stream_from(rx));
        let mut b = Batches::new(body, Duration::from_secs(30));
        let e = pump(&mut b, Vec::new(), collect).await.map(|v| v.len()).unwrap_err();
        match e {
            PumpError::Body(e @ BodyError::Idle { received: 1, .. }) => {
                assert!(e.to_string().contains("no request body data for 30s"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        drop(tx);
    }

    fn tokio_stream_from<T: Send + 'static>(
        rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Send + 'static {
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
    }

    #[tokio::test]
    async fn read_limited_refuses_a_body_over_the_limit() {
        let body = chunked_body(vec![Ok(vec![1; 10]), Ok(vec![2; 10])]);
        assert_eq!(read_limited(body, 15, Duration::from_secs(5)).await.unwrap(), None);
        let body = chunked_body(vec![Ok(vec![1; 10]), Ok(vec![2; 5])]);
        assert_eq!(read_limited(body, 15, Duration::from_secs(5)).await.unwrap().map(|v| v.len()), Some(15));
    }
}
