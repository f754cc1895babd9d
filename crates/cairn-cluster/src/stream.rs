//! Streaming a local blob as a response body: the one path `/v1` and
//! `/v2` GETs share. The reading itself (aligned reusable buffers, one read
//! ahead, no thread held between reads) is the store's
//! ([`cairn_store::aio`]); this adapts its errors.

use cairn_store::BlobReader;
use futures_util::TryStreamExt;

use crate::error::ClusterError;
use crate::peer::ByteStream;

/// Streams the bytes `blob` has left. A blob that ends early ends the
/// stream with an error naming it, so a client never takes a short body for
/// a whole one.
pub fn file_stream(blob: BlobReader) -> ByteStream {
    Box::pin(cairn_store::aio::blob_stream(blob).map_err(ClusterError::Store))
}
