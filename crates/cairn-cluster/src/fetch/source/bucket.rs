//! The durable tier's bucket (`storage:`): after the peers and the owner,
//! before the origins. Its bytes are verified like a peer's.

use std::sync::Arc;
use std::time::Duration;

use cairn_store::Digest;
use cairn_store::tier::Tier;
use futures_util::TryStreamExt;

use super::{Source, no_answer};
use crate::error::ClusterError;
use crate::peer::{BoxFut, RemoteBlob};

/// The bucket behind this node's store.
pub(crate) struct BucketSource {
    pub(crate) tier: Arc<Tier>,
    /// Longest wait for the answer, and longest pause in the body.
    pub(crate) timeout: Duration,
}

impl BucketSource {
    fn bucket(&self) -> String {
        self.tier.bucket_name()
    }
}

impl Source for BucketSource {
    fn name(&self) -> String {
        format!("bucket {}", self.bucket())
    }

    fn kind(&self) -> crate::fetch::SourceKind {
        crate::fetch::SourceKind::Bucket
    }

    fn idle(&self) -> Duration {
        self.timeout
    }

    fn open<'a>(&'a self, d: &'a Digest) -> BoxFut<'a, RemoteBlob> {
        Box::pin(async move {
            let bucket = self.bucket();
            let err = |reason: String, absent: bool| ClusterError::Bucket {
                bucket: bucket.clone(),
                digest: *d,
                reason,
                absent,
            };
            let opened = match tokio::time::timeout(self.timeout, self.tier.bucket().open_blob_stream(d)).await {
                Ok(r) => r,
                Err(_) => return Err(no_answer(self.name(), *d, self.timeout)),
            };
            match opened {
                Ok(Some((size, body))) => {
                    let name = self.name();
                    let d = *d;
                    let body = body.map_err(move |e| ClusterError::Truncated {
                        source_name: name.clone(),
                        digest: d,
                        reason: e.to_string(),
                    });
                    Ok(RemoteBlob { size: Some(size), body: Box::pin(body) })
                }
                Ok(None) => Err(err("absent".into(), true)),
                Err(e) => Err(err(e.to_string(), false)),
            }
        })
    }
}
