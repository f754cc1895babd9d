//! Request bodies for the blocking store: read by store code as
//! `std::io::Read`, never held whole. (Blobs stream out through
//! `cairn_cluster::stream`, the path `/v1` shares.)

use std::io::{self, Read};

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use tokio::sync::mpsc;

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
