//! Manifest sync: pull a peer's manifest, validate it, fetch its missing
//! blobs concurrently (bounded), and save it only when all are present and
//! verified. Re-running resumes: blobs already here are not fetched again.

use std::sync::Arc;

use cairn_store::refs::MAX_MANIFEST_BYTES;
use cairn_store::{Digest, Manifest, RefFile, StoreError};
use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{ClusterError, Result};
use crate::fetch::Cluster;

/// Progress of a sync, for a progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    /// The manifest was validated: `total` blobs, `missing` to fetch.
    Planned {
        /// Distinct blobs listed.
        total: usize,
        /// Blobs not yet local.
        missing: usize,
    },
    /// One blob is now local.
    Fetched {
        /// The blob.
        digest: Digest,
        /// Its size.
        bytes: u64,
    },
}

/// What a sync did (`POST /v1/manifests/{ref_file}/sync` answers this).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// The manifest saved.
    pub ref_file: RefFile,
    /// Its name.
    pub name: String,
    /// Distinct blobs it lists.
    pub blob_count: usize,
    /// Blobs fetched by this run.
    pub fetched: usize,
    /// Bytes fetched by this run.
    pub bytes: u64,
    /// The peer it came from.
    pub peer: String,
}

impl Cluster {
    /// Syncs `ref_file` from `peer`, which must be `host:port` (the CLI's
    /// operator may name any; remote callers go through [`Cluster::sync_peer`]).
    pub async fn sync(
        &self,
        peer: &str,
        ref_file: &RefFile,
        progress: Arc<dyn Fn(SyncEvent) + Send + Sync>,
    ) -> Result<SyncReport> {
        let peer = parse_peer_addr(peer)?;
        let timeout = self.config().peer_timeout;
        let what = || format!("GET /v1/manifests/{ref_file}");
        let bytes = crate::peer::within(timeout, peer, what, self.api().get_manifest(peer, ref_file)).await?;
        let bad = |source: StoreError| ClusterError::PeerManifest {
            peer: peer.to_owned(),
            ref_file: ref_file.clone(),
            source,
        };
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(bad(StoreError::InvalidManifest {
                what: ref_file.to_string(),
                reason: format!("{} bytes is over the {MAX_MANIFEST_BYTES} byte limit", bytes.len()),
            }));
        }
        let manifest =
            Manifest::from_json_for(ref_file, &bytes, &format!("{ref_file} from peer {peer}")).map_err(bad)?;
        self.check_object_count(&manifest, || format!("manifest {ref_file} from peer {peer}"))?;
        let digests = manifest.digests();
        let ds = digests.clone();
        let (rf, b) = (ref_file.clone(), bytes.clone());
        // A failed task is the store's (500); only the check's own answer is the peer's.
        let missing = self
            .store()
            .run(move |s| Ok::<_, StoreError>(s.check_ref_free(&rf, &b).map(|()| s.missing(&ds))))
            .await?
            .map_err(bad)?;
        progress(SyncEvent::Planned { total: digests.len(), missing: missing.len() });

        let bound = self.config().max_concurrent_fetches.max(1);
        let gate = FailFast::new(bound);
        let results: Vec<Option<Result<u64>>> = stream::iter(missing)
            .map(|d| {
                let (progress, gate) = (Arc::clone(&progress), &gate);
                async move {
                    let r = gate
                        .run(async {
                            self.ensure_local(d, Some(peer)).await?;
                            self.local_size(d).await
                        })
                        .await?;
                    Some(r.map(|size| {
                        let bytes = size.unwrap_or(0);
                        progress(SyncEvent::Fetched { digest: d, bytes });
                        bytes
                    }))
                }
            })
            .buffer_unordered(bound)
            .collect()
            .await;
        let mut fetched = 0;
        let mut total_bytes = 0u64;
        let mut failures = Vec::new();
        let mut not_tried = 0;
        for r in results {
            match r {
                Some(Ok(b)) => {
                    fetched += 1;
                    total_bytes = total_bytes.saturating_add(b);
                }
                Some(Err(e)) => failures.push(e),
                None => not_tried += 1,
            }
        }
        if let Some(first) = failures.first() {
            return Err(ClusterError::SyncIncomplete {
                peer: peer.to_owned(),
                ref_file: ref_file.clone(),
                fetched,
                failed: failures.len(),
                not_tried,
                first: first.to_string(),
            });
        }
        let rf = ref_file.clone();
        self.store().run(move |s| Ok::<_, StoreError>(s.save_manifest_bytes(&rf, &bytes))).await?.map_err(bad)?;
        Ok(SyncReport {
            ref_file: ref_file.clone(),
            name: manifest.name,
            blob_count: digests.len(),
            fetched,
            bytes: total_bytes,
            peer: peer.to_owned(),
        })
    }
}

/// Stops a sync or manifest push from starting new fetches once enough
/// have failed: a manifest that lists blobs no source has (hostile or just
/// stale) costs a bounded number of remote requests, not one per object.
/// What was fetched stays, so running it again resumes.
pub(crate) struct FailFast {
    failed: std::sync::atomic::AtomicUsize,
    limit: usize,
}

impl FailFast {
    /// Gives up after `2 × concurrency` failures (at least 16).
    pub(crate) fn new(concurrency: usize) -> Self {
        FailFast { failed: Default::default(), limit: concurrency.saturating_mul(2).max(16) }
    }

    /// Runs `f` unless the limit was reached (`None`: not tried); counts its failure.
    pub(crate) async fn run<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> Option<Result<T>> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.failed.load(Relaxed) >= self.limit {
            return None;
        }
        let r = f.await;
        if r.is_err() {
            self.failed.fetch_add(1, Relaxed);
        }
        Some(r)
    }
}

impl Cluster {
    /// Refuses a manifest listing more than `max_manifest_objects` objects:
    /// the bound on the fetches one sync or push can start.
    pub fn check_object_count(&self, m: &Manifest, what: impl FnOnce() -> String) -> Result<()> {
        let limit = self.config().max_manifest_objects;
        let count = m.objects.len();
        if count > limit {
            return Err(ClusterError::TooManyObjects { what: what(), count, limit });
        }
        Ok(())
    }

    /// The peer a remote caller named for a sync, checked before any
    /// request: `host:port` of one of this node's configured or discovered
    /// peers, so a sync cannot be pointed at any other address.
    pub fn sync_peer<'a>(&self, raw: &'a str) -> Result<&'a str> {
        let addr = parse_peer_addr(raw)?;
        if !self.peers().addresses().iter().any(|a| a == addr) {
            return Err(refused(raw, "it is not one of this node's configured or discovered peers"));
        }
        Ok(addr)
    }
}

/// Longest peer address accepted (a DNS name of 253 bytes, a port).
const MAX_PEER_ADDR: usize = 260;

fn refused(raw: &str, reason: &str) -> ClusterError {
    let peer: String = raw.chars().take(80).collect();
    ClusterError::PeerRefused { peer, reason: reason.to_owned() }
}

/// `raw` when it is a bare `host:port`: a DNS name or IPv4 address, or an
/// IPv6 address in brackets, and a port 1-65535. Schemes, paths, queries,
/// fragments, user info and percent-escapes are refused.
pub fn parse_peer_addr(raw: &str) -> Result<&str> {
    if raw.is_empty() || raw.len() > MAX_PEER_ADDR {
        return Err(refused(raw, "a peer address is HOST:PORT, 1 to 260 bytes"));
    }
    let Some((host, port)) = raw.rsplit_once(':') else {
        return Err(refused(raw, "it has no :PORT"));
    };
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refused(raw, "the port is not a number"));
    }
    if !matches!(port.parse::<u32>(), Ok(1..=65535)) {
        return Err(refused(raw, "the port is not in 1-65535"));
    }
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    if !host_ok {
        return Err(refused(
            raw,
            "the host is not a DNS name, an IPv4 address or a bracketed IPv6 address (no scheme, user info, path or query)",
        ));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_must_be_bare_host_and_port() {
        for ok in ["127.0.0.1:7420", "node-a:7420", "node-a.cluster.local:1", "[::1]:7420"] {
            assert_eq!(parse_peer_addr(ok).ok(), Some(ok), "{ok}");
        }
        for bad in [
            "",
            "%zz",
            "node-a",
            "node-a:",
            "node-a:0",
            "node-a:65536",
            "node-a:http",
            "http://node-a:7420",
            "a:b@node-a:7420",
            "node-a:7420/path",
            "node-a:7420?x=1",
            "node-a:7420#f",
            "node%2fa:7420",
            ":7420",
            "-a:7420",
            "a..b:7420",
            "[zz]:7420",
            "::1:7420",
        ] {
            let e = parse_peer_addr(bad).expect_err(bad);
            assert!(matches!(e, ClusterError::PeerRefused { .. }), "{bad}: {e}");
        }
    }
}
