//! Bridges between async bodies and the blocking store: request bodies are
//! read by store code as `std::io::Read`; blobs stream out in large chunks
//! from a blocking reader thread. Neither side holds a whole blob.

use std::io::{self, Read};

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// Chunk size for streaming blobs out: large, to keep syscalls and wakeups few.
const OUT_CHUNK: usize = 1 << 20;

/// A blocking reader over a request body (use it inside `spawn_blocking`).
pub struct BodyReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

/// Starts pumping `body` into a [`BodyReader`].
pub fn body_reader(body: Body) -> BodyReader {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut s = body.into_data_stream();
        while let Some(chunk) = s.next().await {
            let failed = chunk.is_err();
            if tx.send(chunk.map_err(io::Error::other)).await.is_err() || failed {
                break;
            }
        }
    });
    BodyReader { rx, cur: Bytes::new() }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// Streams `len` bytes of `r` as a response body, read on a blocking thread.
pub fn stream_out(mut r: impl Read + Send + 'static, len: u64) -> Body {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut left = len;
        while left > 0 {
            let want = left.min(OUT_CHUNK as u64);
            let res = match cairn_store::blob::read_aligned(&mut r, want as usize) {
                Ok((_, range)) if range.is_empty() => {
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob shorter than its size"))
                }
                Ok((raw, range)) => {
                    left -= range.len() as u64;
                    Ok(Bytes::from(raw).slice(range))
                }
                Err(e) => Err(e),
            };
            let failed = res.is_err();
            // The client went away, or the read failed: stop (an error makes the body abort).
            if tx.blocking_send(res).is_err() || failed {
                break;
            }
        }
    });
    let s = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    Body::from_stream(s)
}

/// Reads a whole small body, failing once it passes `limit` bytes.
pub async fn read_limited(body: Body, limit: usize) -> Result<Option<Vec<u8>>, io::Error> {
    let mut s = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(io::Error::other)?;
        if out.len() + chunk.len() > limit {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}
