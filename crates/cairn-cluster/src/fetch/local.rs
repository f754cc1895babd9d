//! Local reads: a blob already in the store, as a body.

use cairn_store::{Digest, StoreError};

use super::{BlobBody, Cluster, blocking};
use crate::error::{ClusterError, Result};
use crate::peer::ByteStream;
use crate::stream::byte_stream;

impl Cluster {
    /// Streams `len` bytes (or the rest) of a local blob from `offset`.
    /// Returns the whole blob's size and the stream.
    pub async fn local_blob(&self, d: Digest, offset: u64, len: Option<u64>) -> Result<(u64, u64, ByteStream)> {
        let (size, remaining, s) = self.inner.store.read_stream(d, offset, len).await?;
        Ok((size, remaining, byte_stream(s)))
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
