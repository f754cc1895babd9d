//! A fake peer client: peers that answer from memory, each with its own
//! way of misbehaving. No HTTP.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cairn_store::{Digest, RefFile};
use tokio::sync::watch;

use crate::error::ClusterError;
use crate::peer::{BoxFut, ByteStream, ManifestEntry, PeerApi, PeerHealth, RemoteBlob};

/// How a fake peer sends the blob.
#[derive(Clone)]
pub(super) enum Body {
    /// The right bytes.
    Good,
    /// As many bytes, but wrong ones.
    Corrupt,
    /// Half the bytes, then the end.
    Short,
    /// Half the bytes, then a transport error.
    Dead,
    /// Half the bytes, then nothing, ever.
    Stall,
    /// `chunk` bytes every `every`.
    Slow { chunk: usize, every: Duration },
    /// `n` bytes of zeros (more than any blob in these tests).
    Flood(usize),
}

/// One fake peer.
#[derive(Clone)]
pub(super) struct Peer {
    /// The HEAD answer: `None` for absent.
    pub(super) head: Option<u64>,
    /// The GET's declared size (`Content-Length`).
    pub(super) declares: Option<u64>,
    pub(super) body: Body,
    /// The HEAD answer waits until this peer's GET was called.
    pub(super) head_after: Option<String>,
    /// The body waits until the test opens [`Peers::gate`].
    pub(super) gated: bool,
}

impl Peer {
    /// A peer that holds `blob` and sends it as `body`, honest about its size.
    pub(super) fn with(blob: &[u8], body: Body) -> Peer {
        let n = blob.len() as u64;
        Peer { head: Some(n), declares: Some(n), body, head_after: None, gated: false }
    }
}

/// The fake client over a set of fake peers.
pub(super) struct Peers {
    pub(super) blob: Bytes,
    peers: HashMap<String, Peer>,
    gets: HashMap<String, (AtomicUsize, watch::Sender<usize>)>,
    gate: watch::Sender<bool>,
    /// Bytes handed out by every body together.
    pub(super) sent: Arc<AtomicUsize>,
}

impl Peers {
    pub(super) fn new(blob: &[u8], peers: Vec<(&str, Peer)>) -> Arc<Peers> {
        let gets = peers.iter().map(|(a, _)| (a.to_string(), (AtomicUsize::new(0), watch::channel(0).0))).collect();
        Arc::new(Peers {
            blob: Bytes::copy_from_slice(blob),
            peers: peers.into_iter().map(|(a, p)| (a.to_owned(), p)).collect(),
            gets,
            gate: watch::channel(false).0,
            sent: Arc::default(),
        })
    }

    /// GETs `addr` has answered.
    pub(super) fn gets(&self, addr: &str) -> usize {
        self.gets.get(addr).map_or(0, |(n, _)| n.load(Ordering::SeqCst))
    }

    /// Lets gated bodies flow.
    pub(super) fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    fn body(&self, p: &Peer) -> ByteStream {
        let blob = self.blob.clone();
        let half = blob.slice(..blob.len() / 2);
        let chunks: Vec<Bytes> = match &p.body {
            Body::Good => vec![blob],
            Body::Corrupt => vec![Bytes::from(blob.iter().map(|b| b ^ 0xff).collect::<Vec<u8>>())],
            Body::Short | Body::Dead | Body::Stall => vec![half],
            Body::Slow { chunk, .. } => blob.chunks((*chunk).max(1)).map(Bytes::copy_from_slice).collect(),
            Body::Flood(n) => vec![Bytes::from(vec![0u8; *n])],
        };
        let every = match &p.body {
            Body::Slow { every, .. } => Some(*every),
            _ => None,
        };
        let end = p.body.clone();
        let mut gate = p.gated.then(|| self.gate.subscribe());
        let sent = Arc::clone(&self.sent);
        let s = async_stream(
            chunks,
            move |i| {
                let mut gate = gate.take();
                async move {
                    if let Some(g) = gate.as_mut() {
                        let _ = g.wait_for(|open| *open).await;
                    }
                    if let (Some(every), true) = (every, i > 0) {
                        tokio::time::sleep(every).await;
                    }
                }
            },
            sent,
            end,
        );
        Box::pin(s)
    }
}

/// The chunks, each after `before(i)`, then the end `body` calls for.
fn async_stream<F, Fut>(
    chunks: Vec<Bytes>,
    mut before: F,
    sent: Arc<AtomicUsize>,
    end: Body,
) -> impl futures_util::Stream<Item = crate::Result<Bytes>> + Send
where
    F: FnMut(usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    futures_util::stream::unfold((chunks.into_iter().enumerate(), false), move |(mut it, ended)| {
        let next = it.next();
        let wait = next.as_ref().map(|(i, _)| before(*i));
        let sent = Arc::clone(&sent);
        let end = end.clone();
        async move {
            if ended {
                return None;
            }
            match (next, wait) {
                (Some((_, c)), Some(w)) => {
                    w.await;
                    sent.fetch_add(c.len(), Ordering::SeqCst);
                    Some((Ok(c), (it, false)))
                }
                _ => match end {
                    Body::Dead => Some((Err(dead()), (it, true))),
                    Body::Stall => std::future::pending().await,
                    _ => None,
                },
            }
        }
    })
}

fn dead() -> ClusterError {
    ClusterError::PeerUnreachable { peer: "fake".into(), reason: "connection reset".into() }
}

impl PeerApi for Peers {
    fn health<'a>(&'a self, peer: &'a str) -> BoxFut<'a, PeerHealth> {
        Box::pin(async move {
            Ok(PeerHealth {
                status: "ok".into(),
                node_id: format!("node-{peer}"),
                time: String::new(),
                instance: None,
                proven: None,
            })
        })
    }

    fn head_blob<'a>(&'a self, peer: &'a str, digest: &'a Digest) -> BoxFut<'a, Option<u64>> {
        Box::pin(async move {
            let p = self.peers.get(peer).filter(|_| *digest == Digest::of(&self.blob));
            let Some(p) = p else { return Ok(None) };
            if let Some((_, tx)) = p.head_after.as_ref().and_then(|a| self.gets.get(a)) {
                let _ = tx.subscribe().wait_for(|n| *n > 0).await;
            }
            Ok(p.head)
        })
    }

    fn get_blob<'a>(&'a self, peer: &'a str, digest: &'a Digest) -> BoxFut<'a, RemoteBlob> {
        Box::pin(async move {
            let p = self.peers.get(peer).filter(|_| *digest == Digest::of(&self.blob));
            let Some(p) = p else {
                return Err(ClusterError::PeerStatus {
                    peer: peer.into(),
                    what: format!("GET /v1/blobs/{digest}"),
                    status: 404,
                    body: String::new(),
                });
            };
            if let Some((n, tx)) = self.gets.get(peer) {
                let now = n.fetch_add(1, Ordering::SeqCst) + 1;
                tx.send_replace(now);
            }
            Ok(RemoteBlob { size: p.declares, body: self.body(p) })
        })
    }

    fn list_manifests<'a>(&'a self, _peer: &'a str) -> BoxFut<'a, Vec<ManifestEntry>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn get_manifest<'a>(&'a self, peer: &'a str, ref_file: &'a RefFile) -> BoxFut<'a, Vec<u8>> {
        Box::pin(async move {
            Err(ClusterError::PeerStatus {
                peer: peer.into(),
                what: format!("GET /v1/manifests/{ref_file}"),
                status: 404,
                body: String::new(),
            })
        })
    }
}
