//! The cluster's error type.

use std::time::Duration;

use cairn_store::{Digest, RefFile, StoreError};

/// Everything that can go wrong talking to peers and origins. Variants name
/// the peer (or origin) and the digest or ref file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A local store error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The peer refused the connection or could not be reached.
    #[error("peer {peer} is unreachable: {reason}; check that it runs and the address is right")]
    PeerUnreachable {
        /// The peer address.
        peer: String,
        /// What the connection attempt reported.
        reason: String,
    },
    /// The peer did not answer in time.
    #[error("peer {peer} did not answer {what} within {after:?}; it is marked unhealthy")]
    PeerTimeout {
        /// The peer address.
        peer: String,
        /// The request that timed out.
        what: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The peer answered with an unexpected HTTP status.
    #[error("peer {peer} answered {what} with HTTP {status}: {body}")]
    PeerStatus {
        /// The peer address.
        peer: String,
        /// The request.
        what: String,
        /// The status code.
        status: u16,
        /// The start of the body (usually a JSON error).
        body: String,
    },
    /// The peer's answer is not the expected shape.
    #[error("peer {peer} sent a malformed answer to {what}: {reason}")]
    PeerBadAnswer {
        /// The peer address.
        peer: String,
        /// The request.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A manifest received from a peer failed validation.
    #[error("manifest {ref_file} from peer {peer} is invalid: {source}")]
    PeerManifest {
        /// The peer address.
        peer: String,
        /// The ref file asked for.
        ref_file: RefFile,
        /// Why it was refused.
        source: StoreError,
    },
    /// Bytes from a source did not hash to the digest asked for.
    #[error("{source_name} sent wrong bytes for blob {expected} (they hash to {actual}); nothing was stored")]
    Corrupt {
        /// The peer or origin.
        source_name: String,
        /// The digest asked for.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
    /// A source sent a body of the wrong length, or closed mid-stream.
    #[error("{source_name} sent a truncated or oversized body for blob {digest}: {reason}; nothing was stored")]
    Truncated {
        /// The peer or origin.
        source_name: String,
        /// The blob.
        digest: Digest,
        /// What was seen.
        reason: String,
    },
    /// A client's upload ended before its body was complete.
    #[error("upload of blob {digest} was cut after {received} bytes: {reason}; nothing was stored")]
    UploadCut {
        /// The blob.
        digest: Digest,
        /// Bytes received before the cut.
        received: u64,
        /// What the connection reported.
        reason: String,
    },
    /// A source stopped sending in the middle of a body.
    #[error("{source_name} stalled for {after:?} while sending blob {digest}")]
    Stalled {
        /// The peer or origin.
        source_name: String,
        /// The blob.
        digest: Digest,
        /// The idle timeout that expired.
        after: Duration,
    },
    /// An origin failed (unreachable, bad status, transport error).
    #[error("origin {origin} failed for blob {digest}: {reason}")]
    Origin {
        /// The origin URL.
        origin: String,
        /// The blob.
        digest: Digest,
        /// What happened.
        reason: String,
    },
    /// No source holds the blob.
    #[error("blob {digest} is not on this node, its peers or its origins (tried: {})", tried_list(tried))]
    NotFound {
        /// The blob.
        digest: Digest,
        /// One line per source tried.
        tried: Vec<String>,
    },
    /// Every source failed, and at least one with an error rather than "absent".
    #[error("blob {digest} could not be fetched from any source (tried: {})", tried_list(tried))]
    Unavailable {
        /// The blob.
        digest: Digest,
        /// One line per source tried, with its error.
        tried: Vec<String>,
    },
    /// A stream being sent to the caller was cut because its source failed.
    #[error("transfer of blob {digest} was aborted: {reason}")]
    Aborted {
        /// The blob.
        digest: Digest,
        /// Why.
        reason: String,
    },
    /// A sync left blobs missing; the manifest was not saved.
    #[error(
        "sync of {ref_file} from peer {peer} fetched {fetched} blob(s) but {failed} failed (first: {first}) and {not_tried} were not tried after that many failures; the manifest was not saved, run the sync again to resume"
    )]
    SyncIncomplete {
        /// The peer.
        peer: String,
        /// The manifest.
        ref_file: RefFile,
        /// Blobs fetched in this run.
        fetched: usize,
        /// Blobs that failed.
        failed: usize,
        /// Blobs not tried because enough had failed already.
        not_tried: usize,
        /// The first failure.
        first: String,
    },
    /// No source could say what a tag points to, and at least one failed.
    #[error(
        "tag {repo}:{tag} could not be resolved (tried: {}); retry when the upstream is reachable",
        tried_list(tried)
    )]
    TagUnavailable {
        /// The repository.
        repo: String,
        /// The tag.
        tag: String,
        /// One line per source tried, with its error.
        tried: Vec<String>,
    },
    /// A sync named a peer this node may not call: not `host:port`, or
    /// not one of its configured or discovered peers.
    #[error(
        "peer {peer:?} is refused: {reason}; name one of this node's peers as HOST:PORT (GET /v1/peers lists them)"
    )]
    PeerRefused {
        /// The peer as given (shortened).
        peer: String,
        /// Why it was refused.
        reason: String,
    },
    /// A source declared or sent more than `max_blob_size`.
    #[error(
        "{source_name} offers blob {digest} as {size} bytes, over max_blob_size ({limit} bytes); it was abandoned before more was written (raise max_blob_size if blobs this large are expected)"
    )]
    TooLarge {
        /// The peer or origin.
        source_name: String,
        /// The blob.
        digest: Digest,
        /// Bytes declared, or received so far.
        size: u64,
        /// `max_blob_size`.
        limit: u64,
    },
    /// A source sent below `min_transfer_rate`.
    #[error(
        "{source_name} sent blob {digest} too slowly ({bytes} bytes in {over:?}, under min_transfer_rate of {min} bytes/s); it was abandoned"
    )]
    TooSlow {
        /// The peer or origin.
        source_name: String,
        /// The blob.
        digest: Digest,
        /// Bytes received in the window.
        bytes: u64,
        /// Time spent waiting on the source in the window.
        over: Duration,
        /// `min_transfer_rate`.
        min: u64,
    },
    /// A blob's declared size would leave the data dir with less than `min_free_space`.
    #[error(
        "the disk is full: blob {digest} needs {need} bytes and the data dir has {free} bytes free, {reserve} of which are kept free (min_free_space); free space in the data dir and retry"
    )]
    DiskFull {
        /// The blob.
        digest: Digest,
        /// Its declared size.
        need: u64,
        /// Free bytes in the data dir.
        free: u64,
        /// `min_free_space`.
        reserve: u64,
    },
    /// A fetched blob does not fit under the cache's cap even after evicting
    /// every blob that may go (the rest is pinned or being read).
    #[error(
        "the cache is full: blob {digest} needs {need} bytes and {used} of cache.max_bytes {max} are pinned (refs, registry tags) or being read; raise cache.max_bytes, or remove refs or tags and retry"
    )]
    CacheFull {
        /// The blob.
        digest: Digest,
        /// Its declared size.
        need: u64,
        /// Bytes stored after the eviction.
        used: u64,
        /// `cache.max_bytes`.
        max: u64,
    },
    /// This node could not store a blob a source was sending (a full disk,
    /// an I/O error): not the source's fault, so no other source is tried.
    #[error(
        "could not store blob {digest} on this node: {source}; the source was not at fault and no other was tried: fix the data dir (free space, permissions) and retry"
    )]
    LocalWrite {
        /// The blob.
        digest: Digest,
        /// The store's error.
        source: StoreError,
    },
    /// An origin refused a blob with a 4xx other than 404 (not retried).
    #[error("origin {origin} refused blob {digest} with HTTP {status}; check its URL template and access rights")]
    OriginRefused {
        /// The origin.
        origin: String,
        /// The blob.
        digest: Digest,
        /// The status.
        status: u16,
    },
    /// A manifest lists more objects than `max_manifest_objects`.
    #[error(
        "{what} lists {count} objects, over max_manifest_objects ({limit}); nothing was fetched: split it into smaller manifests or raise the limit"
    )]
    TooManyObjects {
        /// The manifest and where it came from.
        what: String,
        /// Objects it lists.
        count: usize,
        /// `max_manifest_objects`.
        limit: usize,
    },
    /// The durable tier's bucket lacks the blob or failed to send it.
    #[error("bucket {bucket}: {reason} (blob {digest})")]
    Bucket {
        /// The bucket, as its URL.
        bucket: String,
        /// The blob.
        digest: Digest,
        /// What happened.
        reason: String,
        /// True when the bucket answered that it lacks the blob.
        absent: bool,
    },
    /// The failure of a transfer shared by several callers.
    #[error(transparent)]
    Shared(std::sync::Arc<ClusterError>),
    /// A background task died.
    #[error("internal task failed: {0}")]
    Task(String),
}

fn tried_list(tried: &[String]) -> String {
    if tried.is_empty() { "no sources configured".to_owned() } else { tried.join("; ") }
}

impl ClusterError {
    /// True when the error says the peer is down (passive health marking).
    pub fn peer_is_down(&self) -> bool {
        match self {
            ClusterError::PeerUnreachable { .. } | ClusterError::PeerTimeout { .. } => true,
            ClusterError::Shared(e) => e.peer_is_down(),
            _ => false,
        }
    }

    /// True when a source sent bad data (it is marked and skipped).
    pub fn is_bad_data(&self) -> bool {
        matches!(
            self,
            ClusterError::Corrupt { .. }
                | ClusterError::Truncated { .. }
                | ClusterError::Stalled { .. }
                | ClusterError::TooSlow { .. }
                | ClusterError::TooLarge { .. }
        )
    }

    /// True when this node itself failed (its disk), not the source: no
    /// other source or retry can help.
    pub fn is_local(&self) -> bool {
        match self {
            ClusterError::LocalWrite { .. } | ClusterError::CacheFull { .. } => true,
            ClusterError::Shared(e) => e.is_local(),
            _ => false,
        }
    }

    /// True when an origin failing this way may be tried again: transport
    /// errors and 5xx only; never "absent", a refusal, wrong or oversized
    /// bytes, a slow body, a full disk.
    pub fn origin_may_retry(&self) -> bool {
        match self {
            ClusterError::Origin { .. } | ClusterError::Truncated { .. } | ClusterError::Stalled { .. } => true,
            ClusterError::Shared(e) => e.origin_may_retry(),
            _ => false,
        }
    }

    /// True when the disk is full (declared size over the free space, or
    /// a write that ran out of space).
    pub fn is_disk_full(&self) -> bool {
        match self {
            ClusterError::DiskFull { .. } | ClusterError::CacheFull { .. } => true,
            ClusterError::LocalWrite { source: StoreError::Io { source, .. }, .. } => {
                source.kind() == std::io::ErrorKind::StorageFull
            }
            ClusterError::Shared(e) => e.is_disk_full(),
            _ => false,
        }
    }

    /// True when this is a plain "not found".
    pub fn is_not_found(&self) -> bool {
        match self {
            ClusterError::NotFound { .. } => true,
            ClusterError::Bucket { absent, .. } => *absent,
            ClusterError::PeerStatus { status, .. } => *status == 404,
            ClusterError::Store(e) => e.is_not_found(),
            ClusterError::Shared(e) => e.is_not_found(),
            _ => false,
        }
    }
}

/// Result with [`ClusterError`].
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;
