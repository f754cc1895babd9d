//! Blob uploads: start (with mount or single-request push), chunk, status,
//! finish, cancel.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use cairn_store::oci::{Append, OciError, RepoName, UploadId};
use cairn_store::{BlobWriter, Digest};

use crate::body::{Batches, PumpError, pump};
use crate::range::chunk_range;
use crate::v2::errors::{BLOB_UPLOAD_INVALID, NAME_INVALID, UNKNOWN, V2Error};
use crate::v2::{DIGEST_HEADER, UPLOAD_UUID, V2State, blocking, oci_digest, resp};

fn session(repo: &RepoName, id: &UploadId, size: u64, status: StatusCode) -> Response {
    let hs = vec![
        (header::LOCATION, format!("/v2/{repo}/blobs/uploads/{id}")),
        (header::RANGE, format!("0-{}", size.saturating_sub(1))),
        (UPLOAD_UUID, id.to_string()),
        (header::CONTENT_LENGTH, "0".into()),
    ];
    resp(status, hs, Body::empty())
}

fn created(repo: &RepoName, d: &Digest) -> Response {
    let hs = vec![
        (header::LOCATION, format!("/v2/{repo}/blobs/{}", d.oci())),
        (DIGEST_HEADER, d.oci()),
        (header::CONTENT_LENGTH, "0".into()),
    ];
    resp(StatusCode::CREATED, hs, Body::empty())
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
}

/// The chunk's declared start and length, from `Content-Range` and `Content-Length`.
fn chunk(h: &HeaderMap) -> Result<(Option<u64>, Option<u64>), V2Error> {
    let cl = content_length(h);
    let Some(v) = h.get(header::CONTENT_RANGE) else { return Ok((None, cl)) };
    let text = v.to_str().unwrap_or_default();
    let Some((start, len)) = chunk_range(text) else { return Err(V2Error::malformed_chunk_range(text)) };
    if let Some(cl) = cl
        && cl != len
    {
        return Err(OciError::SizeInvalid {
            what: "Content-Length against Content-Range",
            declared: len,
            received: cl,
        }
        .into());
    }
    Ok((Some(start), Some(len)))
}

/// `POST /v2/<name>/blobs/uploads/`: `?mount=&from=` mounts, `?digest=` pushes in one request,
/// otherwise a session starts.
/// `client` is the caller's address, counted against the per-client session cap.
pub async fn start(
    st: V2State,
    repo: RepoName,
    q: HashMap<String, String>,
    client: Option<IpAddr>,
    body: Body,
) -> Result<Response, V2Error> {
    if let Some(m) = q.get("mount") {
        if let Some(d) = mount(&st, &repo, m, q.get("from")).await? {
            return Ok(created(&repo, &d));
        }
    } else if let Some(dg) = q.get("digest") {
        let d = oci_digest(dg)?;
        let w = body_to_blob(&st, body, &d).await?;
        let (reg, rp) = (st.registry.clone(), repo.clone());
        // A mismatch drops the temp file; nothing is stored.
        blocking(move || {
            let _room = reg.store().reserve(&d, w.len())?;
            w.commit(Some(&d))?;
            reg.link_pushed_blob(&rp, &d)
        })
        .await?;
        return Ok(created(&repo, &d));
    }
    let (reg, rp) = (st.registry.clone(), repo.clone());
    let id = blocking(move || reg.start_upload_for(&rp, client)).await?;
    Ok(session(&repo, &id, 0, StatusCode::ACCEPTED))
}

/// `?mount=<digest>&from=<repo>`: links the blob to `repo` when `from`
/// holds it and returns its digest; `None` when it cannot be mounted.
async fn mount(st: &V2State, repo: &RepoName, m: &str, from: Option<&String>) -> Result<Option<Digest>, V2Error> {
    let d = oci_digest(m)?;
    let from = from.map(|f| RepoName::parse(f).map_err(|e| V2Error::new(&NAME_INVALID, e.to_string()))).transpose()?;
    let (reg, rp) = (st.registry.clone(), repo.clone());
    Ok(blocking(move || reg.mount_blob(&rp, &d, from.as_ref())).await?.then_some(d))
}

/// `GET /v2/<name>/blobs/uploads/<id>`: how far the upload got.
pub async fn status(st: V2State, repo: RepoName, id: String) -> Result<Response, V2Error> {
    let id = UploadId::parse(&id)?;
    let (reg, rp, i) = (st.registry.clone(), repo.clone(), id.clone());
    let size = blocking(move || reg.upload_size(&rp, &i)).await?;
    Ok(session(&repo, &id, size, StatusCode::NO_CONTENT))
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: appends a chunk (in order).
pub async fn patch(st: V2State, repo: RepoName, id: String, h: &HeaderMap, body: Body) -> Result<Response, V2Error> {
    let id = UploadId::parse(&id)?;
    let at = format!("/v2/{repo}/blobs/uploads/{id}");
    let (start, len) = chunk(h).map_err(|e| e.at_session(at.clone()))?;
    let a = append_body(&st, &repo, &id, start, body).await.map_err(|e| e.at_session(at.clone()))?;
    let size = blocking(move || a.finish(len)).await.map_err(|e| e.at_session(at))?;
    Ok(session(&repo, &id, size, StatusCode::ACCEPTED))
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: optional last chunk, then verify and store.
pub async fn finish(
    st: V2State,
    repo: RepoName,
    id: String,
    q: HashMap<String, String>,
    h: &HeaderMap,
    body: Body,
) -> Result<Response, V2Error> {
    let id = UploadId::parse(&id)?;
    let d = oci_digest(q.get("digest").ok_or(OciError::DigestMissing)?)?;
    let (start, len) = chunk(h)?;
    // Always: a declared length is checked against the body, never trusted to skip it.
    let a = append_body(&st, &repo, &id, start, body).await?;
    let (reg, rp) = (st.registry.clone(), repo.clone());
    blocking(move || {
        let size = a.finish(len)?;
        // The session stays when the blob cannot fit: the client may retry.
        let _room = reg.store().reserve(&d, size)?;
        reg.finish_upload(&rp, &id, &d)
    })
    .await?;
    Ok(created(&repo, &d))
}

/// Reads `body` into a new temp blob, batch by batch (see [`crate::body`]);
/// any failure removes the temp file.
async fn body_to_blob(st: &V2State, body: Body, d: &Digest) -> Result<BlobWriter, V2Error> {
    let (store, want) = (st.registry.store().clone(), *d);
    let w = blocking(move || Ok(store.writer_expecting(&want)?)).await?;
    let mut batches = Batches::new(body, st.body_timeout).limit(st.max_blob_size);
    let what = format!("upload of blob {}", d.oci());
    pump(&mut batches, w, |w, batch| batch.iter().try_for_each(|c| w.write_all(c)))
        .await
        .map_err(|e| pump_error(e, &what, |source| OciError::from(st.registry.store().write_error(source)).into()))
}

/// Appends `body` to upload `id` as one chunk starting at `start`; a failure rolls it back.
async fn append_body(
    st: &V2State,
    repo: &RepoName,
    id: &UploadId,
    start: Option<u64>,
    body: Body,
) -> Result<Append, V2Error> {
    let (reg, rp, i) = (st.registry.clone(), repo.clone(), id.clone());
    let a = blocking(move || reg.begin_append(&rp, &i, start)).await?;
    // The whole session, not this chunk alone, must stay within the limit.
    let room = st.max_blob_size.saturating_sub(a.session_size());
    let mut batches = Batches::new(body, st.body_timeout).limit(room);
    let what = format!("chunk of upload {id}");
    pump(&mut batches, a, |a, batch| batch.iter().try_for_each(|c| a.write(c)))
        .await
        .map_err(|e| pump_error(e, &what, V2Error::from))
}

fn pump_error<E>(e: PumpError<E>, what: &str, sink: impl FnOnce(E) -> V2Error) -> V2Error {
    match e {
        PumpError::Body(b) => V2Error::body(&BLOB_UPLOAD_INVALID, what, b),
        PumpError::Sink(e) => sink(e),
        PumpError::Task(t) => V2Error::new(&UNKNOWN, format!("registry worker failed: {t}")),
    }
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`.
pub async fn cancel(st: V2State, repo: RepoName, id: String) -> Result<Response, V2Error> {
    let id = UploadId::parse(&id)?;
    let reg = st.registry.clone();
    blocking(move || reg.cancel_upload(&repo, &id)).await?;
    Ok(resp(StatusCode::NO_CONTENT, vec![], Body::empty()))
}
