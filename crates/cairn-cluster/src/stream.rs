//! Streaming a local blob as a response body: the one path `/v1` and
//! `/v2` GETs share. The reading itself (aligned reusable buffers, one read
//! ahead, no thread held between reads) is the store's
//! ([`cairn_store::aio`]); this adapts its errors.

use cairn_store::{BlobReader, BlobStream};
use futures_util::TryStreamExt;

use crate::error::ClusterError;
use crate::peer::ByteStream;

/// Chunk size used to stream local blobs: large reads, few hand-offs.
pub const READ_CHUNK: usize = cairn_store::aio::READ_CHUNK;

/// Streams the bytes `blob` has left. A blob that ends early ends the
/// stream with an error naming it, so a client never takes a short body for
/// a whole one.
pub fn file_stream(blob: BlobReader) -> ByteStream {
    byte_stream(cairn_store::aio::blob_stream(blob))
}

/// A store stream (e.g. from [`cairn_store::Store::read_stream`]) as a body stream.
pub fn byte_stream(s: BlobStream) -> ByteStream {
    Box::pin(s.map_err(ClusterError::Store))
}
