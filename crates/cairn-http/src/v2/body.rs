//! Request bodies for the blocking store: read by store code as
//! `std::io::Read`, never held whole. (Blobs stream out through
//! `cairn_cluster::stream`, the path `/v1` shares.)

use std::collections::VecDeque;
use std::io::{self, Read};

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// Body bytes handed to the blocking reader at once. Request bodies arrive
/// in chunks of tens of KiB; a hand-off per chunk cost a thread wake-up each
/// (about 15,000 per GiB pushed).
const BATCH_BYTES: usize = 1 << 20;

/// A blocking reader over a request body (use it inside `spawn_blocking`).
pub struct BodyReader {
    rx: mpsc::Receiver<io::Result<Vec<Bytes>>>,
    cur: VecDeque<Bytes>,
}

/// Starts pumping `body` into a [`BodyReader`], in batches of about [`BATCH_BYTES`].
pub fn body_reader(body: Body) -> BodyReader {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut s = body.into_data_stream();
        let (mut batch, mut size) = (Vec::new(), 0);
        loop {
            let (end, failure) = match s.next().await {
                Some(Ok(b)) => {
                    size += b.len();
                    // An empty chunk in the queue would read as the end of the body.
                    if !b.is_empty() {
                        batch.push(b);
                    }
                    (false, None)
                }
                Some(Err(e)) => (true, Some(io::Error::other(e))),
                None => (true, None),
            };
            if (size >= BATCH_BYTES || end) && !batch.is_empty() {
                size = 0;
                if tx.send(Ok(std::mem::take(&mut batch))).await.is_err() {
                    break;
                }
            }
            if let Some(e) = failure {
                let _ = tx.send(Err(e)).await;
            }
            if end {
                break;
            }
        }
    });
    BodyReader { rx, cur: VecDeque::new() }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(batch)) => self.cur = batch.into(),
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let mut n = 0;
        while let Some(front) = self.cur.front_mut()
            && n < buf.len()
        {
            let k = (buf.len() - n).min(front.len());
            buf[n..n + k].copy_from_slice(&front.split_to(k));
            n += k;
            if front.is_empty() {
                self.cur.pop_front();
            }
        }
        Ok(n)
    }
}

/// Reads a whole small body, failing once it passes `limit` bytes.
pub async fn read_limited(body: Body, limit: usize) -> Result<Option<Vec<u8>>, io::Error> {
    let mut s = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(io::Error::other)?;
        if out.len().checked_add(chunk.len()).is_none_or(|n| n > limit) {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked_body(chunks: Vec<Result<Vec<u8>, &'static str>>) -> Body {
        let s = futures_util::stream::iter(chunks.into_iter().map(|c| c.map(Bytes::from).map_err(io::Error::other)));
        Body::from_stream(s)
    }

    #[tokio::test]
    async fn body_reader_yields_every_byte_in_order_when_the_body_comes_in_many_small_chunks() {
        let data: Vec<u8> = (0..3 * BATCH_BYTES + 999).map(|i| (i * 17 % 251) as u8).collect();
        let mut chunks: Vec<_> = data.chunks(60_000).map(|c| Ok(c.to_vec())).collect();
        chunks.insert(3, Ok(Vec::new()));
        let mut r = body_reader(chunked_body(chunks));
        let out = tokio::task::spawn_blocking(move || {
            let (mut out, mut buf) = (Vec::new(), vec![0u8; 1 << 20]);
            loop {
                match r.read(&mut buf).unwrap() {
                    0 => return out,
                    n => out.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .unwrap();
        assert!(out == data, "got {} bytes, want {}", out.len(), data.len());
    }

    #[tokio::test]
    async fn body_reader_returns_the_bytes_before_a_body_error_then_the_error() {
        let body = chunked_body(vec![Ok(vec![1; 1000]), Ok(vec![2; 500]), Err("connection reset")]);
        let mut r = body_reader(body);
        let (got, err) = tokio::task::spawn_blocking(move || {
            let mut got = Vec::new();
            let err = std::io::copy(&mut r, &mut got).unwrap_err();
            (got, err)
        })
        .await
        .unwrap();
        assert_eq!(got.len(), 1500);
        assert!(err.to_string().contains("connection reset"), "{err}");
    }
}
