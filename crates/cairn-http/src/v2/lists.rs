//! Listings: tags (paginated), the catalog (paginated), referrers.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_store::oci::RepoName;
use cairn_store::oci::manifest::OCI_INDEX;
use serde_json::json;

use crate::v2::errors::V2Error;
use crate::v2::{FILTERS_HEADER, V2State, blocking, oci_digest, resp};

/// One page of a sorted list: the entries after `last`, at most `n`, and
/// whether more remain.
pub fn page(all: Vec<String>, n: Option<usize>, last: Option<&str>) -> (Vec<String>, bool) {
    let mut it = all.into_iter().filter(|x| last.is_none_or(|l| x.as_str() > l)).peekable();
    let out: Vec<String> = match n {
        Some(n) => it.by_ref().take(n).collect(),
        None => it.by_ref().collect(),
    };
    let more = n.is_some_and(|n| n > 0) && it.peek().is_some();
    (out, more)
}

/// Most entries in one page of tags or catalog, whatever `n` asks (or
/// without `n`); the `Link` header leads to the rest.
pub const MAX_PAGE: usize = 10_000;

/// `n` (at most [`MAX_PAGE`], which is also the default) and `last`.
fn pagination(q: &HashMap<String, String>) -> Result<(usize, Option<String>), V2Error> {
    let n = match q.get("n") {
        // A count too large for usize asks for everything too: the page is capped either way.
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => v.parse::<usize>().unwrap_or(MAX_PAGE),
        Some(v) => return Err(V2Error::bad_page_size(v)),
        None => MAX_PAGE,
    };
    Ok((n.min(MAX_PAGE), q.get("last").cloned()))
}

fn listing(path: &str, body: serde_json::Value, n: usize, next: Option<&String>) -> Response {
    let mut hs = vec![(header::CONTENT_TYPE, "application/json".to_owned())];
    if let Some(last) = next {
        hs.push((header::LINK, format!("<{path}?n={n}&last={}>; rel=\"next\"", query_escape(last))));
    }
    resp(StatusCode::OK, hs, Body::from(body.to_string()))
}

/// `s` safe inside a query value (names and tags hold only `[a-z0-9._/-]`, but be sure).
fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /v2/<name>/tags/list?n=&last=`.
pub async fn tags(st: V2State, repo: RepoName, q: HashMap<String, String>) -> Result<Response, V2Error> {
    let (n, last) = pagination(&q)?;
    let (reg, rp) = (st.registry.clone(), repo.clone());
    let all = blocking(move || reg.tags(&rp)).await?;
    let (tags, more) = page(all, Some(n), last.as_deref());
    let next = if more { tags.last() } else { None };
    Ok(listing(&format!("/v2/{repo}/tags/list"), json!({"name": repo.as_str(), "tags": tags}), n, next))
}

/// `GET /v2/_catalog?n=&last=`.
pub async fn catalog(State(st): State<V2State>, Query(q): Query<HashMap<String, String>>) -> Response {
    let res = async {
        let (n, last) = pagination(&q)?;
        let reg = st.registry.clone();
        let all = blocking(move || reg.catalog()).await?;
        let (repos, more) = page(all, Some(n), last.as_deref());
        let next = if more { repos.last() } else { None };
        Ok::<_, V2Error>(listing("/v2/_catalog", json!({ "repositories": repos }), n, next))
    };
    res.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v2/<name>/referrers/<digest>?artifactType=`: an image index of the referrers.
pub async fn referrers(
    st: V2State,
    repo: RepoName,
    d: String,
    q: HashMap<String, String>,
) -> Result<Response, V2Error> {
    let d = oci_digest(&d)?;
    let filter = q.get("artifactType").cloned();
    let (reg, f) = (st.registry.clone(), filter.clone());
    let body = blocking(move || reg.referrers_index(&repo, &d, f.as_deref())).await?;
    let mut hs = vec![(header::CONTENT_TYPE, OCI_INDEX.to_owned())];
    if filter.is_some() {
        hs.push((FILTERS_HEADER, "artifactType".into()));
    }
    Ok(resp(StatusCode::OK, hs, Body::from(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pages_start_after_last_and_say_whether_more_remain() {
        let all = v(&["v1", "v2", "v3", "v4"]);
        assert_eq!(page(all.clone(), Some(2), None), (v(&["v1", "v2"]), true));
        assert_eq!(page(all.clone(), Some(2), Some("v2")), (v(&["v3", "v4"]), false));
        assert_eq!(page(all.clone(), None, Some("v1")), (v(&["v2", "v3", "v4"]), false));
        assert_eq!(page(all.clone(), Some(0), None), (v(&[]), false));
        assert_eq!(page(all, Some(10), Some("v9")), (v(&[]), false));
    }
}
