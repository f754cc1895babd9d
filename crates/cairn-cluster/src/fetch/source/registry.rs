//! An upstream OCI registry, for a digest asked for with its repository.

use std::sync::Arc;
use std::time::Duration;

use cairn_store::Digest;

use super::{Source, no_answer};
use crate::error::ClusterError;
use crate::peer::{BoxFut, RemoteBlob};
use crate::upstream::{OciHint, Upstream, UpstreamError};

/// A registry origin and the repository the digest was asked for in.
pub(crate) struct RegistrySource {
    pub(crate) up: Arc<Upstream>,
    pub(crate) hint: OciHint,
    /// Bounds the answer's headers and every pause in the body.
    pub(crate) timeout: Duration,
}

impl Source for RegistrySource {
    fn name(&self) -> String {
        self.up.name()
    }

    fn kind(&self) -> crate::fetch::SourceKind {
        crate::fetch::SourceKind::Upstream
    }

    fn idle(&self) -> Duration {
        self.timeout
    }

    fn open<'a>(&'a self, d: &'a Digest) -> BoxFut<'a, RemoteBlob> {
        Box::pin(async move {
            let fut = self.up.open(&self.hint.repo, d, self.hint.kind);
            match tokio::time::timeout(self.timeout, fut).await {
                Ok(r) => r.map_err(|e| upstream_error(&self.up, d, e)),
                Err(_) => Err(no_answer(self.up.name(), *d, self.timeout)),
            }
        })
    }
}

/// An upstream's failure as the pipeline sees it: absent, or failed.
fn upstream_error(up: &Upstream, d: &Digest, e: UpstreamError) -> ClusterError {
    if e.is_not_found() {
        ClusterError::NotFound { digest: *d, tried: vec![e.to_string()] }
    } else {
        ClusterError::Origin { origin: up.name(), digest: *d, reason: e.to_string() }
    }
}
