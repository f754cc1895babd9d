//! Blob GET/HEAD (with ranges) and DELETE.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use cairn_cluster::stream::file_stream;
use cairn_store::Digest;
use cairn_store::oci::RepoName;

use crate::v1::range::{ByteRange, parse as blob_range};
use crate::v2::errors::{BLOB_UNKNOWN, V2Error};
use crate::v2::{DIGEST_HEADER, V2State, blocking, oci_digest, resp};

/// `GET`/`HEAD /v2/<name>/blobs/<digest>`.
pub async fn get(st: V2State, repo: RepoName, digest: String, h: &HeaderMap, head: bool) -> Result<Response, V2Error> {
    let d = oci_digest(&digest)?;
    // Two stats inline cost less than a hand-off to the blocking pool, and
    // HEAD rate is what clients checking layers depend on.
    let size = match st.registry.blob_size(&repo, &d).map_err(V2Error::from) {
        Ok(size) => size,
        Err(missing) if missing.code() == &BLOB_UNKNOWN && st.remote.is_some() => {
            if !head && !h.contains_key(header::RANGE) {
                return stream_miss(&st, &repo, d, missing).await;
            }
            fetch_whole(&st, &repo, d, missing).await?
        }
        Err(e) => return Err(e),
    };
    let mut hs = blob_headers(&d);
    hs.push((header::ACCEPT_RANGES, "bytes".into()));
    let (status, start, len) = match blob_range(h.get(header::RANGE).and_then(|v| v.to_str().ok()), size) {
        ByteRange::Full => (StatusCode::OK, 0, size),
        ByteRange::Part { start, len } => {
            hs.push((header::CONTENT_RANGE, format!("bytes {start}-{}/{size}", start + len - 1)));
            (StatusCode::PARTIAL_CONTENT, start, len)
        }
        ByteRange::Unsatisfiable => return Err(V2Error::range_outside_blob(size)),
    };
    hs.push((header::CONTENT_LENGTH, len.to_string()));
    if head {
        return Ok(resp(status, hs, Body::empty()));
    }
    let reg = st.registry.clone();
    let reader = blocking(move || reg.open_blob(&repo, &d, start, Some(len))).await?;
    Ok(resp(status, hs, Body::from_stream(file_stream(reader))))
}

/// The headers every blob answer carries.
fn blob_headers(d: &Digest) -> Vec<(header::HeaderName, String)> {
    vec![
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (DIGEST_HEADER, d.oci()),
        (header::ETAG, format!("\"{}\"", d.oci())),
    ]
}

/// A whole-blob GET of a blob the store lacks (`missing` is its error):
/// the bytes stream to the client while the remote source fetches,
/// verifies and stores them (a bad source cuts the response).
async fn stream_miss(st: &V2State, repo: &RepoName, d: Digest, missing: V2Error) -> Result<Response, V2Error> {
    let Some(src) = st.remote.clone() else { return Err(missing) };
    let body = match src.open_blob(repo, &d).await {
        Ok(Some(b)) => b,
        Ok(None) => return Err(missing),
        Err(err) => {
            tracing::warn!(repo = %repo, digest = %d.oci(), error = %err, "remote blob fetch failed");
            return Err(V2Error::remote_failed(&d, &err));
        }
    };
    // Joins the transfer streaming now, and links the blob to the
    // repository once it is stored, without delaying the response's end.
    let (reg, r) = (st.registry.clone(), repo.clone());
    tokio::spawn(async move {
        match src.fetch_blob(&r, &d).await {
            Ok(true) => {
                if let Err(e) = blocking(move || reg.link_blob(&r, &d)).await {
                    tracing::warn!(digest = %d.oci(), error = ?e, "linking a mirrored blob failed");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(digest = %d.oci(), error = %e, "a mirrored blob was not stored"),
        }
    });
    let mut hs = blob_headers(&d);
    if let Some(n) = body.size {
        hs.push((header::CONTENT_LENGTH, n.to_string()));
    }
    Ok(resp(StatusCode::OK, hs, Body::from_stream(body.stream)))
}

/// Brings a blob the store lacks (`missing` is its error) in through the
/// remote source, links it to the repository, and returns its size.
async fn fetch_whole(st: &V2State, repo: &RepoName, d: Digest, missing: V2Error) -> Result<u64, V2Error> {
    let fetched = match &st.remote {
        Some(src) => src.fetch_blob(repo, &d).await.map_err(|err| {
            tracing::warn!(repo = %repo, digest = %d.oci(), error = %err, "remote blob fetch failed");
            V2Error::remote_failed(&d, &err)
        })?,
        None => false,
    };
    if !fetched {
        return Err(missing);
    }
    let (reg, r) = (st.registry.clone(), repo.clone());
    blocking(move || {
        reg.link_blob(&r, &d)?;
        reg.blob_size(&r, &d)
    })
    .await
}

/// `DELETE /v2/<name>/blobs/<digest>`: unlinks it from the repository.
pub async fn delete(st: V2State, repo: RepoName, digest: String) -> Result<Response, V2Error> {
    let d = oci_digest(&digest)?;
    let reg = st.registry.clone();
    blocking(move || reg.delete_blob(&repo, &d)).await?;
    Ok(resp(StatusCode::ACCEPTED, vec![(header::CONTENT_LENGTH, "0".into())], Body::empty()))
}
