//! The registry's error type: what went wrong, on which repository, digest
//! or upload. The HTTP layer maps each variant to an OCI error code once.

use crate::digest::{Digest, DigestError};
use crate::error::StoreError;
use crate::oci::repo::{RepoName, RepoNameError, TagError};

/// Everything a registry operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    /// A lower store error (I/O, blob not found, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A repository name that breaks the grammar.
    #[error(transparent)]
    Name(#[from] RepoNameError),
    /// A tag that breaks the grammar.
    #[error(transparent)]
    Tag(#[from] TagError),
    /// A malformed digest.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// The repository does not exist.
    #[error("repository {0} is not known to this registry")]
    NameUnknown(RepoName),
    /// The blob is not in this repository.
    #[error("blob {} is not in repository {repo}", digest.oci())]
    BlobUnknown {
        /// The repository.
        repo: RepoName,
        /// The blob.
        digest: Digest,
    },
    /// No manifest by this tag or digest in the repository.
    #[error("manifest {reference} is not in repository {repo}")]
    ManifestUnknown {
        /// The repository.
        repo: RepoName,
        /// The tag or `sha256:` digest asked for.
        reference: String,
    },
    /// A manifest that does not parse or fails validation.
    #[error("invalid manifest: {0}")]
    ManifestInvalid(String),
    /// A manifest body over the size limit.
    #[error("manifest is larger than the {limit} byte limit")]
    ManifestTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A manifest media type the registry does not store.
    #[error("manifest media type {0:?} is not supported; push an OCI or Docker schema 2 manifest")]
    ManifestUnsupported(String),
    /// Another push moved (or deleted) the tag between the start of this
    /// manifest push and its tag update: the tag was left as the other
    /// push made it, never silently overwritten.
    #[error(
        "tag {tag} of {repo} was changed to {} by another push while manifest {} was being pushed; \
         that manifest is stored but the tag was not moved to it: push again to tag it",
        now.map_or_else(|| "nothing (deleted)".to_owned(), |d| d.oci()), pushed.oci()
    )]
    TagMoved {
        /// The repository.
        repo: RepoName,
        /// The tag.
        tag: crate::oci::repo::Tag,
        /// What the tag points at now (`None`: deleted).
        now: Option<Digest>,
        /// The manifest this push stored.
        pushed: Digest,
    },
    /// A manifest references blobs or manifests that are not present.
    #[error("manifest references {} missing blob(s): {}", .0.len(), .0.iter().map(|d| d.oci()).collect::<Vec<_>>().join(", "))]
    ManifestBlobUnknown(Vec<Digest>),
    /// Uploaded bytes (or a pushed manifest) hash to another digest than claimed.
    #[error("digest mismatch: expected {}, got {}; nothing was stored", expected.oci(), actual.oci())]
    DigestMismatch {
        /// The digest the client named.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// A finishing request without the required `digest` parameter.
    #[error("missing digest parameter: finish an upload with ?digest=sha256:<hex>")]
    DigestMissing,
    /// No such upload session (never started, finished, cancelled or expired).
    #[error("upload {0} is not known (finished, cancelled or expired); start a new one")]
    UploadUnknown(String),
    /// An upload that cannot proceed.
    #[error("upload {id}: {reason}")]
    UploadInvalid {
        /// The upload session.
        id: String,
        /// Why.
        reason: String,
    },
    /// A chunk whose `Content-Range` does not start where the upload ends.
    #[error(
        "upload {id}: chunk starts at byte {start} but the upload holds {size} bytes; send the chunk starting at {size}"
    )]
    UploadRange {
        /// The upload session.
        id: String,
        /// Where the chunk claimed to start.
        start: u64,
        /// The bytes the upload holds.
        size: u64,
    },
    /// Starting one more upload session would pass a session cap.
    #[error(
        "too many open upload sessions {scope} (limit {limit}); finish or cancel open uploads \
         (DELETE /v2/<name>/blobs/uploads/<id>) or retry once idle ones expire"
    )]
    TooManyUploads {
        /// Whose sessions: `"for client 10.0.0.7"` or `"on this registry"`.
        scope: String,
        /// The cap that was reached.
        limit: usize,
    },
    /// Declared and received lengths differ.
    #[error("{what}: declared {declared} bytes, received {received}; nothing was stored from it")]
    SizeInvalid {
        /// Which request part.
        what: &'static str,
        /// The declared length.
        declared: u64,
        /// The received length.
        received: u64,
    },
    /// The request body stream failed (client went away, malformed framing).
    #[error("reading the request body failed after {received} bytes: {reason}; nothing was stored from it")]
    Body {
        /// Bytes read before the failure.
        received: u64,
        /// The cause.
        reason: String,
    },
}

/// Result with [`OciError`].
pub type OciResult<T> = std::result::Result<T, OciError>;
