//! What the pipeline tells an observer (e.g. metrics), at a few fixed
//! points: each source tried ([`Recorder::attempt`]) and each caller that
//! joined a running transfer ([`Recorder::joined`]). The pipeline never
//! waits on an observer and does not know what it does; the default does
//! nothing. Sources are observed by a wrapper (`observe`), so no source
//! and no step of the attempt knows it is watched.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cairn_store::Digest;
use futures_util::stream::StreamExt;

use super::source::{OnFailure, Source};
use crate::error::{ClusterError, Result};
use crate::peer::{BoxFut, RemoteBlob};

/// Where a blob came from, as a small fixed set (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// This node's store.
    Local,
    /// A peer asked directly.
    Peer,
    /// The digest's elected owner, asked to fetch it for this node.
    Owner,
    /// A URL-template origin (a CDN).
    Origin,
    /// An upstream OCI registry.
    Upstream,
    /// The durable tier's bucket.
    Bucket,
}

impl SourceKind {
    /// Every kind, in a fixed order.
    pub const ALL: [SourceKind; 6] = [
        SourceKind::Local,
        SourceKind::Peer,
        SourceKind::Owner,
        SourceKind::Origin,
        SourceKind::Upstream,
        SourceKind::Bucket,
    ];

    /// Its lower-case name: `local`, `peer`, `owner`, `origin`, `upstream`, `bucket`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Local => "local",
            SourceKind::Peer => "peer",
            SourceKind::Owner => "owner",
            SourceKind::Origin => "origin",
            SourceKind::Upstream => "upstream",
            SourceKind::Bucket => "bucket",
        }
    }

    /// Whether bytes from it leave the cluster's own network (origins and
    /// upstream registries): the egress an operator pays for.
    pub fn is_origin(self) -> bool {
        matches!(self, SourceKind::Origin | SourceKind::Upstream)
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one try of one source ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptResult {
    /// The blob arrived, verified and stored.
    Ok,
    /// The bytes did not match the digest.
    Corrupt,
    /// The source does not have it.
    Absent,
    /// Any other failure (down, stalled, truncated, too large, local disk).
    Failed,
}

impl AttemptResult {
    /// Every result, in a fixed order.
    pub const ALL: [AttemptResult; 4] =
        [AttemptResult::Ok, AttemptResult::Corrupt, AttemptResult::Absent, AttemptResult::Failed];

    /// Its lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Ok => "ok",
            AttemptResult::Corrupt => "corrupt",
            AttemptResult::Absent => "absent",
            AttemptResult::Failed => "failed",
        }
    }

    fn of(res: &Result<()>) -> AttemptResult {
        match res {
            Ok(()) => AttemptResult::Ok,
            Err(ClusterError::Corrupt { .. }) => AttemptResult::Corrupt,
            Err(e) if e.is_not_found() => AttemptResult::Absent,
            Err(_) => AttemptResult::Failed,
        }
    }
}

/// One try of one source, as an observer sees it.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    /// The blob asked for.
    pub digest: cairn_store::Digest,
    /// The source, as logs name it (`peer ADDR`, an origin's URL).
    pub source: String,
    /// What kind of source it was.
    pub kind: SourceKind,
    /// How it ended.
    pub result: AttemptResult,
    /// Body bytes received from it (also of a failed try).
    pub bytes: u64,
    /// From asking to the first body byte; `None` when none came.
    pub ttfb: Option<Duration>,
    /// From asking to the end of the try (verified and stored, or failed).
    pub elapsed: Duration,
}

/// An observer of the pipeline. Calls are made on the pipeline's tasks:
/// they must be quick and must not block.
pub trait Recorder: Send + Sync + 'static {
    /// A source was tried (once per try, retries included).
    fn attempt(&self, _report: &AttemptReport) {}

    /// A caller streaming a blob joined a transfer another caller started
    /// (single-flight saved a transfer).
    fn joined(&self) {}

    /// A swarm transfer ended (`swarm: true`): where its pieces came
    /// from, and the peers it excluded for wrong pieces.
    fn swarm(&self, _report: &crate::fetch::swarm_node::SwarmReport) {}
}

/// The recorder of a cluster nobody observes.
pub struct NoRecorder;

impl Recorder for NoRecorder {}

/// What a watched source saw of its body.
pub(crate) struct Probe {
    start: Instant,
    first: OnceLock<Duration>,
    bytes: AtomicU64,
}

impl Probe {
    /// The report of the try that ended with `res`.
    pub(crate) fn report(&self, digest: cairn_store::Digest, src: &dyn Source, res: &Result<()>) -> AttemptReport {
        AttemptReport {
            digest,
            source: src.name(),
            kind: src.kind(),
            result: AttemptResult::of(res),
            bytes: self.bytes.load(Ordering::Relaxed),
            ttfb: self.first.get().copied(),
            elapsed: self.start.elapsed(),
        }
    }
}

/// `src`, with its body's bytes and first byte timed by the returned probe.
pub(crate) fn observe(src: Box<dyn Source>) -> (Box<dyn Source>, Arc<Probe>) {
    let probe = Arc::new(Probe { start: Instant::now(), first: OnceLock::new(), bytes: AtomicU64::new(0) });
    (Box::new(Observed { inner: src, probe: Arc::clone(&probe) }), probe)
}

struct Observed {
    inner: Box<dyn Source>,
    probe: Arc<Probe>,
}

impl Source for Observed {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn kind(&self) -> SourceKind {
        self.inner.kind()
    }

    fn peer(&self) -> Option<&str> {
        self.inner.peer()
    }

    fn announced_size(&self) -> Option<u64> {
        self.inner.announced_size()
    }

    fn idle(&self) -> Duration {
        self.inner.idle()
    }

    fn open<'a>(&'a self, d: &'a Digest) -> BoxFut<'a, RemoteBlob> {
        Box::pin(async move {
            let remote = self.inner.open(d).await?;
            let probe = Arc::clone(&self.probe);
            let body = remote.body.inspect(move |c| {
                if let Ok(c) = c
                    && !c.is_empty()
                {
                    probe.first.get_or_init(|| probe.start.elapsed());
                    probe.bytes.fetch_add(c.len() as u64, Ordering::Relaxed);
                }
            });
            Ok(RemoteBlob { size: remote.size, body: body.boxed() })
        })
    }

    fn on_failure(&self, e: &ClusterError) -> OnFailure {
        self.inner.on_failure(e)
    }
}
