//! Cairn's local content-addressed store.
//!
//! - [`digest`]: the SHA-256 [`Digest`] type and incremental [`Hasher`].
//! - [`backend`]: the storage seam. Everything kept goes through the
//!   [`backend::Backend`] traits (blobs, metadata, upload sessions); three
//!   implementations: [`backend::fs`] (the data directory, the original
//!   layout, drawn there), [`backend::mem`] (in memory, the reference) and
//!   [`backend::object`] (a bucket of an object store such as S3, keys
//!   drawn there). A new backend goes there and is opened with
//!   [`Store::with_backend`].
//! - [`store`]: opening a store ([`Store`]).
//! - [`blob`]: put (hash while writing, then the backend commits), get with
//!   ranges, list, remove, quarantine.
//! - [`name`]: checked manifest names and ref file names.
//! - [`refs`]: blob manifests in the original store's format.
//! - [`snapshot`] / [`checkout`]: a directory tree to a manifest and back.
//! - [`gc`]: delete unreferenced blobs ([`Store::gc_roots`] lists the roots).
//! - [`verify`]: re-hash blobs, quarantine the corrupt ones.
//! - [`cache`]: the bounded cache: recency fed by commits, reads and
//!   removals ([`Store::enable_cache`]), eviction ([`Store::evict`],
//!   [`Store::make_room`]) that keeps pinned and in-use blobs.
//! - [`oci`]: the OCI registry's metadata: repositories, tags, referrers,
//!   upload sessions, and the registry's GC roots.
//! - [`tier`]: the durable tier, a bucket behind the local store
//!   ([`Store::open_tiered`]): metadata there, puts written through.
//! - [`partial`]: a blob of known size written piece by piece in any
//!   order (a swarm transfer), readable while written, stored only once
//!   its whole digest matches ([`Store::partial`]).
//! - [`aio`]: for async callers, [`Store::run`] (the one hand-off to the
//!   blocking pool) and [`Store::read_stream`] (a range as a stream).
//!
//! The store knows nothing of HTTP or peers; apart from [`aio`], everything
//! here is blocking I/O, reached from async code through [`Store::run`].

pub mod aio;
pub mod backend;
pub mod blob;
pub mod cache;
pub mod checkout;
pub mod digest;
pub mod error;
pub mod gc;
pub mod held;
pub mod name;
mod nofollow;
pub mod oci;
pub mod partial;
pub mod refs;
pub mod snapshot;
pub mod store;
#[cfg(test)]
mod testing;
pub mod tier;
pub mod verify;

pub use aio::BlobStream;
pub use blob::{BlobIter, BlobReader, BlobWriter, PutOutcome, VerifiedBlob};
pub use checkout::{CheckoutOptions, CheckoutReport};
pub use digest::{Digest, DigestError, Hasher};
pub use error::{Result, StoreError};
pub use gc::{GcOptions, GcReport};
pub use name::{NameError, RefFile, RefName};
pub use partial::{MAX_PIECE_LEN, PartialBlob};
pub use refs::{Manifest, ManifestSummary};
pub use snapshot::SnapshotReport;
pub use store::{Access, Stats, Store, StoreOptions};
pub use verify::{Corrupt, VerifyReport};
