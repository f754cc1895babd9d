//! Local reads: a blob already in the store, as a body.

use cairn_store::{Digest, StoreError};

use super::{BlobBody, Cluster, blocking};
use crate::error::{ClusterError, Result};
use crate::peer::ByteStream;
use crate::stream::file_stream;

impl Cluster {
    /// Streams `len` bytes (or the rest) of a local blob from `offset`.
    /// Returns the whole blob's size and the stream.
    pub async fn local_blob(&self, d: Digest, offset: u64, len: Option<u64>) -> Result<(u64, u64, ByteStream)> {
        let store = self.inner.store.clone();
        let r = blocking(move || store.get_range(&d, offset, len)).await??;
        let size = r.blob_size();
        let (file, remaining) = r.into_parts();
        let path = self.inner.store.layout().object(&d);
        Ok((size, remaining, file_stream(file, remaining, path)))
    }

    /// The size of a local blob, `None` when absent.
    pub async fn local_size(&self, d: Digest) -> Result<Option<u64>> {
        let store = self.inner.store.clone();
        match blocking(move || store.size(&d)).await? {
            Ok(s) => Ok(Some(s)),
            // A planted symlink is no blob: never served, replaced by the next put.
            Err(StoreError::BlobNotFound(_) | StoreError::Symlink(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn try_local(&self, d: Digest) -> Result<Option<BlobBody>> {
        match self.local_blob(d, 0, None).await {
            Ok((size, _, stream)) => {
                Ok(Some(BlobBody { size: Some(size), source: "local".into(), kind: super::SourceKind::Local, stream }))
            }
            Err(ClusterError::Store(StoreError::BlobNotFound(_))) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
