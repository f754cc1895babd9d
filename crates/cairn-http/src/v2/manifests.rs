//! Manifest GET/HEAD (with `Accept` handling), PUT and DELETE.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
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

/// The reference of a `GET`/`HEAD`: one that is neither a tag nor a digest
/// names no manifest, so it is the spec's 404 `MANIFEST_UNKNOWN` (as the
/// reference registry answers), not a 400.
fn read_reference(s: &str) -> Result<Reference, V2Error> {
    reference(s).map_err(|_| {
        let shown: String = s.chars().take(140).collect();
        V2Error::new(
            &MANIFEST_UNKNOWN,
            format!(
                "no manifest is named {shown:?}: a reference is a tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}) \
                 or a digest (sha256:<64 lowercase hex>)"
            ),
        )
    })
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
    let r = read_reference(&r)?;
    let m = st.reads.get_manifest(&repo, &r).await?;
    check_accept(h, &m.media_type)?;
    let hs = vec![
        (header::CONTENT_TYPE, m.media_type.clone()),
        (DIGEST_HEADER, m.digest.oci()),
        (header::CONTENT_LENGTH, m.bytes.len().to_string()),
        (header::ETAG, format!("\"{}\"", m.digest.oci())),
    ];
    Ok(resp(StatusCode::OK, hs, if head { Body::empty() } else { Body::from(m.bytes) }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_store::Digest;
    use proptest::prelude::*;

    proptest! {
        /// The `<reference>` of a manifest URL: any text, and near-valid
        /// tags and digests. No panic; GET/HEAD refuse exactly what PUT
        /// refuses, as 404 instead of 400; what is accepted reads back the same.
        #[test]
        fn any_reference_parses_without_panic_and_accepted_ones_round_trip(
            r in prop_oneof![
                "\\PC{0,140}",
                "[A-Za-z0-9_.-]{0,130}",
                "(sha256|sha512|SHA256)?:?[0-9a-fA-F]{62,66}",
                any::<[u8; 32]>().prop_map(|b| Digest::from_bytes(b).oci()),
            ],
        ) {
            match (reference(&r), read_reference(&r)) {
                (Ok(a), Ok(b)) => {
                    prop_assert_eq!(&a, &b);
                    prop_assert_eq!(reference(&a.to_string()).unwrap(), a);
                }
                (Err(put), Err(get)) => {
                    prop_assert_eq!(put.status(), StatusCode::BAD_REQUEST);
                    prop_assert_eq!((get.status(), get.code().code), (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"));
                }
                (a, b) => prop_assert!(false, "{:?}: PUT {:?} but GET {:?}", r, a.is_ok(), b.is_ok()),
            }
        }

        /// Any `Accept` header: no panic; one that names the manifest's
        /// own type (with parameters, any case, among others) accepts it.
        #[test]
        fn any_accept_header_is_read_without_panic_and_naming_the_type_accepts_it(
            others in proptest::collection::vec("\\PC{0,30}", 0..4),
            mt in proptest::sample::select(MANIFEST_TYPES.to_vec()),
            params in "(;[ ]?[a-z]{1,3}=[0-9.]{1,3}){0,2}",
            upper in any::<bool>(),
        ) {
            let mut h = HeaderMap::new();
            for o in &others {
                if let Ok(v) = o.parse() {
                    h.append(header::ACCEPT, v);
                }
            }
            let _ = check_accept(&h, mt);
            let named = if upper { mt.to_ascii_uppercase() } else { mt.to_owned() };
            h.append(header::ACCEPT, format!("{named}{params}").parse().unwrap());
            prop_assert!(check_accept(&h, mt).is_ok());
        }
    }
}
