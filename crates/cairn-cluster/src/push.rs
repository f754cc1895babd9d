//! Uploads: a blob streamed in by a client, verified against its digest,
//! and a manifest pushed by a client, with its missing blobs fetched
//! through the pipeline before it is saved.

use bytes::Bytes;
use cairn_store::{Digest, StoreError};
use futures_util::stream::StreamExt;
use tokio::sync::mpsc;

use crate::error::{ClusterError, Result};
use crate::fetch::{Cluster, WriteMsg, blocking, write_blob};

impl Cluster {
    /// Stores an uploaded blob from a byte stream, verified against `d`;
    /// a mismatch or a cut stream stores nothing.
    pub async fn put_blob(
        &self,
        d: Digest,
        mut body: impl futures_util::Stream<Item = std::result::Result<Bytes, String>> + Unpin,
    ) -> Result<cairn_store::PutOutcome> {
        let (tx, rx) = mpsc::channel::<WriteMsg>(8);
        let store = self.store().clone();
        let writer = tokio::task::spawn_blocking(move || write_blob(store, d, rx));
        let mut received = 0u64;
        let mut cut = None;
        while let Some(c) = body.next().await {
            match c {
                Ok(c) => {
                    received += c.len() as u64;
                    if tx.send(WriteMsg::Chunk(c)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    cut = Some(e);
                    break;
                }
            }
        }
        if cut.is_none() {
            // The writer's own errors are reported by its join below.
            let _ = tx.send(WriteMsg::Commit(None)).await;
        }
        drop(tx);
        let res = writer.await.map_err(|e| ClusterError::Task(e.to_string()))?;
        if let Some(reason) = cut {
            return Err(ClusterError::UploadCut { digest: d, received, reason });
        }
        Ok(res?)
    }

    /// Saves a manifest pushed by a client under `ref_file`, after
    /// validating it. Missing blobs are fetched through the pipeline; those
    /// no source has make it fail with `MissingBlobs` (nothing is saved).
    pub async fn push_manifest(&self, ref_file: &cairn_store::RefFile, bytes: Vec<u8>) -> Result<crate::ManifestEntry> {
        // The ref file must be bound to these bytes and free, before any blob is fetched.
        let m = cairn_store::Manifest::from_json_for(ref_file, &bytes, &format!("manifest {ref_file}"))?;
        self.check_object_count(&m, || format!("manifest {ref_file}"))?;
        let name = m.ref_name()?;
        let store = self.store().clone();
        let ds = m.digests();
        let (rf, b) = (ref_file.clone(), bytes.clone());
        let missing = blocking(move || store.check_ref_free(&rf, &b).map(|()| store.missing(&ds))).await??;
        let bound = self.config().max_concurrent_fetches.max(1);
        let still: Vec<Digest> = futures_util::stream::iter(missing)
            .map(|d| async move { self.ensure_local(d, None).await.err().map(|_| d) })
            .buffer_unordered(bound)
            .filter_map(|x| async move { x })
            .collect()
            .await;
        if !still.is_empty() {
            let mut missing = still;
            missing.sort_unstable();
            return Err(StoreError::MissingBlobs { name: m.name, missing }.into());
        }
        let store = self.store().clone();
        let rf = ref_file.clone();
        let saved = blocking(move || store.save_manifest_bytes(&rf, &bytes)).await??;
        Ok(crate::ManifestEntry {
            name,
            ref_file: ref_file.clone(),
            blob_count: saved.objects.len(),
            node_id: self.config().node_id.clone(),
        })
    }
}
