//! Manifest sync: pull a peer's manifest, validate it, fetch its missing
//! blobs concurrently (bounded), and save it only when all are present and
//! verified. Re-running resumes: blobs already here are not fetched again.

use std::sync::Arc;

use cairn_store::refs::MAX_MANIFEST_BYTES;
use cairn_store::{Digest, Manifest, RefFile, StoreError};
use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{ClusterError, Result};
use crate::fetch::{Cluster, blocking};

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
    /// Syncs `ref_file` from `peer` (which need not be a configured peer).
    pub async fn sync(
        &self,
        peer: &str,
        ref_file: &RefFile,
        progress: Arc<dyn Fn(SyncEvent) + Send + Sync>,
    ) -> Result<SyncReport> {
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
        let digests = manifest.digests();
        let store = self.store().clone();
        let ds = digests.clone();
        let (rf, b) = (ref_file.clone(), bytes.clone());
        let missing =
            blocking(move || store.check_ref_free(&rf, &b).map(|()| store.missing(&ds))).await?.map_err(bad)?;
        progress(SyncEvent::Planned { total: digests.len(), missing: missing.len() });

        let bound = self.config().max_concurrent_fetches.max(1);
        let results: Vec<Result<u64>> = stream::iter(missing)
            .map(|d| {
                let progress = Arc::clone(&progress);
                async move {
                    self.ensure_local(d, Some(peer)).await?;
                    let bytes = self.local_size(d).await?.unwrap_or(0);
                    progress(SyncEvent::Fetched { digest: d, bytes });
                    Ok(bytes)
                }
            })
            .buffer_unordered(bound)
            .collect()
            .await;
        let mut fetched = 0;
        let mut total_bytes = 0;
        let mut failures = Vec::new();
        for r in results {
            match r {
                Ok(b) => {
                    fetched += 1;
                    total_bytes += b;
                }
                Err(e) => failures.push(e),
            }
        }
        if let Some(first) = failures.first() {
            return Err(ClusterError::SyncIncomplete {
                peer: peer.to_owned(),
                ref_file: ref_file.clone(),
                fetched,
                failed: failures.len(),
                first: first.to_string(),
            });
        }
        let store = self.store().clone();
        let rf = ref_file.clone();
        blocking(move || store.save_manifest_bytes(&rf, &bytes)).await?.map_err(bad)?;
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
