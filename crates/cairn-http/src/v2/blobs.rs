//! Blob GET/HEAD (with ranges) and DELETE.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use cairn_cluster::fetch::SourceKind;
use cairn_store::Digest;
use cairn_store::oci::RepoName;

use crate::metrics::ServedFrom;
use crate::range::{ByteRange, content_range, parse as blob_range};
use crate::v2::errors::V2Error;
use crate::v2::{DIGEST_HEADER, V2State, blocking, oci_digest, resp};

/// `GET`/`HEAD /v2/<name>/blobs/<digest>`.
pub async fn get(st: V2State, repo: RepoName, digest: String, h: &HeaderMap, head: bool) -> Result<Response, V2Error> {
    let d = oci_digest(&digest)?;
    if !head && !h.contains_key(header::RANGE) {
        return whole(&st, &repo, &d).await;
    }
    let mut hs = blob_headers(&d);
    let size = st.reads.stat_blob(&repo, &d).await?;
    hs.push((header::ACCEPT_RANGES, "bytes".into()));
    let (status, start, len) = match blob_range(h.get(header::RANGE).and_then(|v| v.to_str().ok()), size) {
        ByteRange::Full => (StatusCode::OK, 0, size),
        ByteRange::Part { start, len } => {
            hs.push((header::CONTENT_RANGE, content_range(start, len, size)));
            (StatusCode::PARTIAL_CONTENT, start, len)
        }
        ByteRange::Unsatisfiable => return Err(V2Error::range_outside_blob(size)),
    };
    hs.push((header::CONTENT_LENGTH, len.to_string()));
    if head {
        return Ok(resp(status, hs, Body::empty()));
    }
    let b = st.reads.read_blob(&repo, &d, start, len).await?;
    Ok(served(resp(status, hs, Body::from_stream(b.stream)), b.source))
}

/// A whole-blob GET: streamed even while a mirror is still fetching it.
async fn whole(st: &V2State, repo: &RepoName, d: &Digest) -> Result<Response, V2Error> {
    let b = st.reads.open_blob(repo, d).await?;
    let mut hs = blob_headers(d);
    if b.stored {
        hs.push((header::ACCEPT_RANGES, "bytes".into()));
    }
    if let Some(n) = b.len {
        hs.push((header::CONTENT_LENGTH, n.to_string()));
    }
    Ok(served(resp(StatusCode::OK, hs, Body::from_stream(b.stream)), b.source))
}

/// `r`, marked with where its blob came from (for the metrics).
fn served(mut r: Response, from: SourceKind) -> Response {
    r.extensions_mut().insert(ServedFrom(from));
    r
}

/// The headers every blob answer carries.
fn blob_headers(d: &Digest) -> Vec<(header::HeaderName, String)> {
    vec![
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (DIGEST_HEADER, d.oci()),
        (header::ETAG, format!("\"{}\"", d.oci())),
    ]
}

/// `DELETE /v2/<name>/blobs/<digest>`: unlinks it from the repository.
pub async fn delete(st: V2State, repo: RepoName, digest: String) -> Result<Response, V2Error> {
    let d = oci_digest(&digest)?;
    let reg = st.registry.clone();
    blocking(move || reg.delete_blob(&repo, &d)).await?;
    Ok(resp(StatusCode::ACCEPTED, vec![(header::CONTENT_LENGTH, "0".into())], Body::empty()))
}
