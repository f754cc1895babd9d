//! Uploads: a manifest pushed by a client, with its missing blobs fetched
//! through the pipeline before it is saved. (Blob uploads are written by
//! the HTTP layer straight into the store, in batches read asynchronously.)

use cairn_store::{Digest, StoreError};
use futures_util::stream::StreamExt;

use crate::error::Result;
use crate::fetch::Cluster;

impl Cluster {
    /// Saves a manifest pushed by a client under `ref_file`, after
    /// validating it. Missing blobs are fetched through the pipeline; those
    /// no source has make it fail with `MissingBlobs` (nothing is saved).
    pub async fn push_manifest(&self, ref_file: &cairn_store::RefFile, bytes: Vec<u8>) -> Result<crate::ManifestEntry> {
        // The ref file must be bound to these bytes and free, before any blob is fetched.
        let m = cairn_store::Manifest::from_json_for(ref_file, &bytes, &format!("manifest {ref_file}"))?;
        self.check_object_count(&m, || format!("manifest {ref_file}"))?;
        let name = m.ref_name()?;
        let ds = m.digests();
        let (rf, b) = (ref_file.clone(), bytes.clone());
        let missing = self.store().run(move |s| s.check_ref_free(&rf, &b).map(|()| s.missing(&ds))).await?;
        let bound = self.config().max_concurrent_fetches.max(1);
        let gate = crate::sync::FailFast::new(bound);
        // Past the fail-fast limit the rest is reported missing without asking any source.
        let still: Vec<Digest> = futures_util::stream::iter(missing)
            .map(|d| {
                let gate = &gate;
                async move { gate.run(self.ensure_local(d, None)).await.is_none_or(|r| r.is_err()).then_some(d) }
            })
            .buffer_unordered(bound)
            .filter_map(|x| async move { x })
            .collect()
            .await;
        if !still.is_empty() {
            let mut missing = still;
            missing.sort_unstable();
            return Err(StoreError::MissingBlobs { name: m.name, missing }.into());
        }
        let rf = ref_file.clone();
        let saved = self.store().run(move |s| s.save_manifest_bytes(&rf, &bytes)).await?;
        Ok(crate::ManifestEntry {
            name,
            ref_file: ref_file.clone(),
            blob_count: saved.objects.len(),
            node_id: self.config().node_id.clone(),
        })
    }
}
