//! Manifest GET/HEAD (with `Accept` handling), PUT and DELETE.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use cairn_store::Digest;
use cairn_store::oci::index::StoredManifest;
use cairn_store::oci::manifest::{MANIFEST_TYPES, MAX_MANIFEST_SIZE, bare_media_type};
use cairn_store::oci::{OciError, Reference, RepoName, Tag};

use crate::body::read_limited;
use crate::v2::errors::{MANIFEST_INVALID, MANIFEST_UNKNOWN, V2Error};
use crate::v2::{DIGEST_HEADER, SUBJECT_HEADER, V2State, blocking, oci_digest, resp};

fn reference(s: &str) -> Result<Reference, V2Error> {
    if s.contains(':') {
        return Ok(Reference::Digest(oci_digest(s)?));
    }
    Ok(Reference::Tag(Tag::parse(s).map_err(OciError::from)?))
}

/// Refuses a manifest whose type the client said it cannot take: when
/// `Accept` names manifest types (and no wildcard), the stored one must be among them.
fn check_accept(h: &HeaderMap, media_type: &str) -> Result<(), V2Error> {
    let accepted: Vec<String> = h
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(bare_media_type)
        .collect();
    let names_manifests = accepted.iter().any(|a| MANIFEST_TYPES.contains(&a.as_str()));
    let ok = !names_manifests || accepted.iter().any(|a| a == media_type || a == "*/*" || a == "application/*");
    if ok { Ok(()) } else { Err(V2Error::not_acceptable(media_type)) }
}

/// `GET`/`HEAD /v2/<name>/manifests/<reference>`.
pub async fn get(st: V2State, repo: RepoName, r: String, h: &HeaderMap, head: bool) -> Result<Response, V2Error> {
    let r = reference(&r)?;
    let m = manifest_or_fetch(&st, repo, r).await?;
    check_accept(h, &m.media_type)?;
    let hs = vec![
        (header::CONTENT_TYPE, m.media_type.clone()),
        (DIGEST_HEADER, m.digest.oci()),
        (header::CONTENT_LENGTH, m.bytes.len().to_string()),
        (header::ETAG, format!("\"{}\"", m.digest.oci())),
    ];
    Ok(resp(StatusCode::OK, hs, if head { Body::empty() } else { Body::from(m.bytes) }))
}

/// The local manifest, else (with a remote source) a tag resolved remotely
/// and the manifest fetched by digest, linked to `repo` but not tagged.
async fn manifest_or_fetch(st: &V2State, repo: RepoName, r: Reference) -> Result<StoredManifest, V2Error> {
    // A cache hit costs a few stats: cheaper inline than a blocking-pool hop.
    let local = match st.registry.cached_manifest(&repo, &r) {
        Some(m) => Ok(m),
        None => {
            let (reg, rp, rr) = (st.registry.clone(), repo.clone(), r.clone());
            blocking(move || reg.get_manifest(&rp, &rr)).await
        }
    };
    let (e, src) = match (local, &st.remote) {
        (Err(e), Some(src)) if e.code() == &MANIFEST_UNKNOWN => (e, src),
        (res, _) => return res,
    };
    let d = match &r {
        Reference::Digest(d) => *d,
        Reference::Tag(t) => match src.resolve_tag(&repo, t).await {
            Ok(Some(d)) => d,
            Ok(None) => return Err(e),
            Err(err) => {
                tracing::warn!(repo = %repo, tag = %t.as_str(), error = %err, "remote tag resolution failed");
                return Err(e);
            }
        },
    };
    if let Reference::Tag(_) = r {
        let (reg, rp) = (st.registry.clone(), repo.clone());
        if let Ok(m) = blocking(move || reg.get_manifest(&rp, &Reference::Digest(d))).await {
            return Ok(m);
        }
    }
    fetch_manifest(st, src.as_ref(), repo, d).await?.ok_or(e)
}

/// Fetches manifest `d` through the remote source and links it to `repo`.
async fn fetch_manifest(
    st: &V2State,
    src: &dyn crate::v2::RemoteSource,
    repo: RepoName,
    d: Digest,
) -> Result<Option<StoredManifest>, V2Error> {
    let media_type = src.fetch_manifest(&repo, &d).await.map_err(|err| {
        tracing::warn!(repo = %repo, digest = %d.oci(), error = %err, "remote manifest fetch failed");
        V2Error::remote_failed(&d, &err)
    })?;
    let Some(mt) = media_type else { return Ok(None) };
    let reg = st.registry.clone();
    let m = blocking(move || {
        reg.link_manifest(&repo, &d, &mt)?;
        reg.get_manifest(&repo, &Reference::Digest(d))
    })
    .await?;
    Ok(Some(m))
}

/// `PUT /v2/<name>/manifests/<reference>`.
pub async fn put(st: V2State, repo: RepoName, r: String, h: &HeaderMap, body: Body) -> Result<Response, V2Error> {
    let r = reference(&r)?;
    let declared = h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let too_large = || V2Error::from(OciError::ManifestTooLarge { limit: MAX_MANIFEST_SIZE });
    if declared.is_some_and(|n| n > MAX_MANIFEST_SIZE as u64) {
        return Err(too_large());
    }
    let bytes = read_limited(body, MAX_MANIFEST_SIZE, st.body_timeout)
        .await
        .map_err(|e| V2Error::body(&MANIFEST_INVALID, "reading the manifest body failed", e))?
        .ok_or_else(too_large)?;
    let ct = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (reg, rp) = (st.registry.clone(), repo.clone());
    let pushed = blocking(move || reg.put_manifest(&rp, &r, &bytes, ct.as_deref())).await?;
    let mut hs = vec![
        (header::LOCATION, format!("/v2/{repo}/manifests/{}", pushed.digest.oci())),
        (DIGEST_HEADER, pushed.digest.oci()),
        (header::CONTENT_LENGTH, "0".into()),
    ];
    if let Some(s) = pushed.subject {
        hs.push((SUBJECT_HEADER, s.oci()));
    }
    Ok(resp(StatusCode::CREATED, hs, Body::empty()))
}

/// `DELETE /v2/<name>/manifests/<reference>`: a digest deletes the manifest, a tag only the tag.
pub async fn delete(st: V2State, repo: RepoName, r: String) -> Result<Response, V2Error> {
    let r = reference(&r)?;
    let reg = st.registry.clone();
    blocking(move || reg.delete_manifest(&repo, &r)).await?;
    Ok(resp(StatusCode::ACCEPTED, vec![(header::CONTENT_LENGTH, "0".into())], Body::empty()))
}
