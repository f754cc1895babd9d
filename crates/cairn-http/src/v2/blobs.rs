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
    if !head
        && !h.contains_key(header::RANGE)
        && let Some(r) = stream_miss(&st, &repo, d).await?
    {
        return Ok(r);
    }
    let size = size_or_fetch(&st, &repo, d).await?;
    let mut hs = vec![
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (DIGEST_HEADER, d.oci()),
        (header::ACCEPT_RANGES, "bytes".into()),
        (header::ETAG, format!("\"{}\"", d.oci())),
    ];
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
    let (file, len) = reader.into_parts();
    let path = st.registry.store().layout().object(&d);
    Ok(resp(status, hs, Body::from_stream(file_stream(file, len, path))))
}

/// A whole-blob GET of a blob the store lacks, with a remote source: the
/// bytes stream to the client while the pipeline fetches, verifies and
/// stores them (a bad source cuts the response). `None` when the blob is
/// local or there is no remote source.
async fn stream_miss(st: &V2State, repo: &RepoName, d: Digest) -> Result<Option<Response>, V2Error> {
    let Some(src) = st.remote.clone() else { return Ok(None) };
    let missing = match st.registry.blob_size(repo, &d).map_err(V2Error::from) {
        Err(e) if e.code() == &BLOB_UNKNOWN => e,
        _ => return Ok(None),
    };
    let body = match src.open_blob(repo, &d).await {
        Ok(Some(b)) => b,
        Ok(None) => return Err(missing),
        Err(err) => {
            tracing::warn!(repo = %repo, digest = %d.oci(), error = %err, "remote blob fetch failed");
            return Err(missing);
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
    let mut hs = vec![
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (DIGEST_HEADER, d.oci()),
        (header::ETAG, format!("\"{}\"", d.oci())),
    ];
    if let Some(n) = body.size {
        hs.push((header::CONTENT_LENGTH, n.to_string()));
    }
    Ok(Some(resp(StatusCode::OK, hs, Body::from_stream(body.stream))))
}

/// The blob's size, asking the remote source on a miss.
async fn size_or_fetch(st: &V2State, repo: &RepoName, d: Digest) -> Result<u64, V2Error> {
    // Two stats inline cost less than a hand-off to the blocking pool, and
    // HEAD rate is what clients checking layers depend on.
    match st.registry.blob_size(repo, &d).map_err(V2Error::from) {
        Err(e) if e.code() == &BLOB_UNKNOWN && st.remote.is_some() => {
            let fetched = match &st.remote {
                Some(src) => src.fetch_blob(repo, &d).await.unwrap_or_else(|err| {
                    tracing::warn!(repo = %repo, digest = %d.oci(), error = %err, "remote blob fetch failed");
                    false
                }),
                None => false,
            };
            if !fetched {
                return Err(e);
            }
            let (reg, r) = (st.registry.clone(), repo.clone());
            blocking(move || {
                reg.link_blob(&r, &d)?;
                reg.blob_size(&r, &d)
            })
            .await
        }
        other => other,
    }
}

/// `DELETE /v2/<name>/blobs/<digest>`: unlinks it from the repository.
pub async fn delete(st: V2State, repo: RepoName, digest: String) -> Result<Response, V2Error> {
    let d = oci_digest(&digest)?;
    let reg = st.registry.clone();
    blocking(move || reg.delete_blob(&repo, &d)).await?;
    Ok(resp(StatusCode::ACCEPTED, vec![(header::CONTENT_LENGTH, "0".into())], Body::empty()))
}
