//! The /v2 API from a raw HTTP client: every flow and error code of the
//! distribution spec that applies, against a server on 127.0.0.1:0.

mod v2common;

use std::sync::Arc;

use cairn_http::mirror::{RemoteBody, RemoteError, RemoteSource};
use cairn_store::Digest;
use cairn_store::oci::RepoName;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

fn hdr(r: &Response, name: &str) -> String {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

async fn error_code(r: Response) -> (StatusCode, String) {
    let s = r.status();
    let v: Value = r.json().await.unwrap();
    (s, v["errors"][0]["code"].as_str().unwrap().to_owned())
}

async fn push_blob(c: &Client, base: &str, repo: &str, bytes: &[u8]) -> Digest {
    let d = Digest::of(bytes);
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={}", d.oci()))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    d
}

fn image(config: &Digest, layers: &[(&Digest, usize)], media_type: &str, extra: Value) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.oci(), "size": 2},
        "layers": layers.iter().map(|(d, n)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.oci(), "size": n})).collect::<Vec<_>>(),
    });
    if let (Some(o), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    serde_json::to_vec(&m).unwrap()
}

async fn put_manifest(c: &Client, base: &str, repo: &str, reference: &str, ct: &str, body: &[u8]) -> Response {
    c.put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("content-type", ct)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// An image `repo:tag` with one layer; returns (manifest digest, manifest bytes, layer digest).
async fn push_image(c: &Client, base: &str, repo: &str, tag: &str, layer: &[u8]) -> (Digest, Vec<u8>, Digest) {
    let cfg = push_blob(c, base, repo, b"{}").await;
    let l = push_blob(c, base, repo, layer).await;
    let m = image(&cfg, &[(&l, layer.len())], OCI_MANIFEST, json!({}));
    let r = put_manifest(c, base, repo, tag, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    (Digest::of(&m), m, l)
}

#[tokio::test]
async fn base_endpoint_answers_200_with_api_version_header() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let r = reqwest::get(format!("{}/v2/", s.base)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(hdr(&r, "docker-distribution-api-version"), "registry/2.0");
}

#[tokio::test]
async fn monolithic_push_then_get_head_and_ranges_return_the_bytes() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let c = Client::new();
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let dg = Digest::of(&bytes);
    let r = c.post(format!("{}/v2/a/b/blobs/uploads/", s.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = hdr(&r, "location");
    assert!(loc.starts_with("/v2/a/b/blobs/uploads/"), "{loc}");
    assert!(!hdr(&r, "docker-upload-uuid").is_empty());
    let r = c.put(format!("{}{loc}?digest={}", s.base, dg.oci())).body(bytes.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(hdr(&r, "location"), format!("/v2/a/b/blobs/{}", dg.oci()));
    assert_eq!(hdr(&r, "docker-content-digest"), dg.oci());

    let url = format!("{}/v2/a/b/blobs/{}", s.base, dg.oci());
    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(hdr(&r, "content-length"), "100000");
    assert_eq!(hdr(&r, "docker-content-digest"), dg.oci());
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..]);
    let r = c.get(&url).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(hdr(&r, "content-range"), "bytes 10-19/100000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[10..20]);
    let r = c.get(&url).header("range", "bytes=100000-").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(hdr(&r, "content-range"), "bytes */100000");
    // The blob is the CAS object /v1 and refs see.
    assert!(s.registry.store().exists(&dg));
}

#[tokio::test]
async fn blobs_of_several_read_chunks_stream_whole_and_by_ranges_across_chunk_boundaries() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let c = Client::new();
    let chunk = cairn_cluster::fetch::READ_CHUNK;
    let bytes: Vec<u8> = (0..3 * chunk + 4321).map(|i| (i * 7 % 253) as u8).collect();
    let dg = push_blob(&c, &s.base, "big/layer", &bytes).await;
    let url = format!("{}/v2/big/layer/blobs/{}", s.base, dg.oci());
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(hdr(&r, "content-length"), bytes.len().to_string());
    let got = r.bytes().await.unwrap();
    assert!(got.as_ref() == &bytes[..], "whole blob differs");
    let (a, b) = (chunk - 3, 2 * chunk + 5);
    let r = c.get(&url).header("range", format!("bytes={a}-{b}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    let got = r.bytes().await.unwrap();
    assert!(got.as_ref() == &bytes[a..=b], "range {a}-{b} differs");
}

#[tokio::test]
async fn single_post_with_wrong_digest_is_digest_invalid_and_stores_nothing() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let c = Client::new();
    let claimed = Digest::of(b"something else");
    let r =
        c.post(format!("{}/v2/x/blobs/uploads/?digest={}", s.base, claimed.oci())).body("bytes").send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into()));
    assert_eq!(s.registry.store().list().unwrap().count(), 0);
}

#[tokio::test]
async fn chunked_upload_checks_order_reports_status_and_completes() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let c = Client::new();
    let r = c.post(format!("{}/v2/chunky/blobs/uploads/", s.base)).send().await.unwrap();
    let url = format!("{}{}", s.base, hdr(&r, "location"));
    let r = c.patch(&url).header("content-range", "0-4").body("hello").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(hdr(&r, "range"), "0-4");
    // Out of order: starts past the end.
    let r = c.patch(&url).header("content-range", "10-14").body("xxxxx").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(hdr(&r, "range"), "0-4");
    assert!(url.ends_with(&hdr(&r, "location")), "416 carries the session URL");
    // Overlapping: starts inside what was received.
    let r = c.patch(&url).header("content-range", "2-6").body("xxxxx").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let r = c.patch(&url).header("content-range", "nonsense").body("x").send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID".into()));
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(hdr(&r, "range"), "0-4");
    assert!(url.ends_with(&hdr(&r, "location")));
    let r = c.patch(&url).header("content-range", "5-10").body(" world").send().await.unwrap();
    assert_eq!(hdr(&r, "range"), "0-10");
    let want = Digest::of(b"hello world!");
    let r =
        c.put(format!("{url}?digest={}", want.oci())).header("content-range", "11-11").body("!").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c.get(format!("{}/v2/chunky/blobs/{}", s.base, want.oci())).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello world!");
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN".into()));
}

#[tokio::test]
async fn chunk_length_disagreeing_with_content_range_is_size_invalid() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let c = Client::new();
    let r = c.post(format!("{}/v2/x/blobs/uploads/", s.base)).send().await.unwrap();
    let url = format!("{}{}", s.base, hdr(&r, "location"));
    let r = c.patch(&url).header("content-range", "0-9").body("12345").send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "SIZE_INVALID".into()));
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(hdr(&r, "range"), "0-0", "nothing was appended");
}

#[tokio::test]
async fn finishing_with_a_digest_of_other_bytes_stores_nothing() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let c = Client::new();
    let r = c.post(format!("{}/v2/x/blobs/uploads/", s.base)).send().await.unwrap();
    let url = format!("{}{}", s.base, hdr(&r, "location"));
    c.patch(&url).body("partial").send().await.unwrap();
    // The client claims the digest of the full content but sent only part of it.
    let full = Digest::of(b"partial and the rest");
    let r = c.put(format!("{url}?digest={}", full.oci())).send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into()));
    assert_eq!(s.registry.store().list().unwrap().count(), 0);
    let r = c.put(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn body_cut_short_before_content_length_stores_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let dg = Digest::of(&[7u8; 100]);
    let mut sock = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let req =
        format!("POST /v2/x/blobs/uploads/?digest={} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", dg.oci());
    sock.write_all(req.as_bytes()).await.unwrap();
    sock.write_all(&[7u8; 10]).await.unwrap();
    sock.shutdown().await.unwrap();
    let mut answer = String::new();
    let _ = sock.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("BLOB_UPLOAD_INVALID"), "{answer}");
    assert_eq!(s.registry.store().list().unwrap().count(), 0);
    assert!(!s.registry.store().exists(&dg));
}

#[tokio::test]
async fn upload_session_survives_a_server_restart() {
    let d = tempfile::tempdir().unwrap();
    let c = Client::new();
    let loc = {
        let s = v2common::start(d.path()).await;
        let r = c.post(format!("{}/v2/r/blobs/uploads/", s.base)).send().await.unwrap();
        let loc = hdr(&r, "location");
        let r = c.patch(format!("{}{loc}", s.base)).header("content-range", "0-5").body("before").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        loc
    };
    let s = v2common::start(d.path()).await;
    let r = c.get(format!("{}{loc}", s.base)).send().await.unwrap();
    assert_eq!(hdr(&r, "range"), "0-5");
    let r = c.patch(format!("{}{loc}", s.base)).header("content-range", "6-11").body(" after").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let want = Digest::of(b"before after");
    let r = c.put(format!("{}{loc}?digest={}", s.base, want.oci())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(s.registry.store().exists(&want));
}

#[tokio::test]
async fn cancelled_upload_is_unknown_afterwards() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let c = Client::new();
    let r = c.post(format!("{}/v2/x/blobs/uploads/", s.base)).send().await.unwrap();
    let url = format!("{}{}", s.base, hdr(&r, "location"));
    assert_eq!(c.delete(&url).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    let r = c.patch(&url).body("x").send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN".into()));
}

/// The spec (and its conformance suite, which asks for
/// `.INVALID_MANIFEST_NAME`): a manifest that is not there is a 404,
/// whatever the reference looks like. Pushing to such a reference is a 400.
#[tokio::test]
async fn get_or_head_of_a_reference_that_is_no_tag_and_no_digest_is_manifest_unknown_but_put_is_invalid() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let c = Client::new();
    let b = &s.base;
    let long = "x".repeat(129);
    let bad = [".INVALID_MANIFEST_NAME", "-dash", "sha256:zz", "sha512:ab", "a%3Ab", "%E2%9C%93", long.as_str()];
    for r in bad {
        let url = format!("{b}/v2/x/manifests/{r}");
        let got = error_code(c.get(&url).send().await.unwrap()).await;
        assert_eq!(got, (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".to_owned()), "GET {r}");
        let head = c.head(&url).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::NOT_FOUND, "HEAD {r}");
        let put = c.put(&url).header("content-type", OCI_MANIFEST).body("{}").send().await.unwrap();
        assert_eq!(put.status(), StatusCode::BAD_REQUEST, "PUT {r}");
    }
}

/// Method, URL, optional (content type, body), expected status and code.
type Case = (Method, String, Option<(&'static str, Vec<u8>)>, StatusCode, &'static str);

#[tokio::test]
async fn error_codes_from_bad_requests() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let c = Client::new();
    let b = &s.base;
    let absent = Digest::of(b"absent").oci();
    let cases: Vec<Case> = vec![
        (Method::GET, format!("{b}/v2/x/blobs/{absent}"), None, StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
        (Method::GET, format!("{b}/v2/x/blobs/sha256:zz"), None, StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        (Method::GET, format!("{b}/v2/x/blobs/{}", &absent[7..]), None, StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        (Method::GET, format!("{b}/v2/x/manifests/sha512:ab"), None, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        (Method::GET, format!("{b}/v2/x/manifests/nope"), None, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        (Method::GET, format!("{b}/v2/x/manifests/{absent}"), None, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        (Method::GET, format!("{b}/v2/Upper/tags/list"), None, StatusCode::BAD_REQUEST, "NAME_INVALID"),
        (Method::GET, format!("{b}/v2/a..b/manifests/v1"), None, StatusCode::BAD_REQUEST, "NAME_INVALID"),
        (Method::GET, format!("{b}/v2/never/pushed/tags/list"), None, StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
        (
            Method::GET,
            format!("{b}/v2/x/blobs/uploads/0123456789abcdef0123456789abcdef"),
            None,
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            Method::PATCH,
            format!("{b}/v2/x/blobs/uploads/not-an-id"),
            None,
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (Method::POST, format!("{b}/v2/x/manifests/v1"), None, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
        (Method::GET, format!("{b}/v2/x/tags/list?n=many"), None, StatusCode::BAD_REQUEST, "UNSUPPORTED"),
        (
            Method::PUT,
            format!("{b}/v2/x/manifests/v1"),
            Some((OCI_MANIFEST, b"{not json".to_vec())),
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
        ),
        (
            Method::PUT,
            format!("{b}/v2/x/manifests/-bad-tag"),
            Some((OCI_MANIFEST, b"{}".to_vec())),
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
        ),
        (
            Method::PUT,
            format!("{b}/v2/x/manifests/v1"),
            Some(("application/vnd.docker.distribution.manifest.v1+prettyjws", b"{}".to_vec())),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED",
        ),
        (
            Method::PUT,
            format!("{b}/v2/x/manifests/v1"),
            Some((OCI_MANIFEST, vec![b' '; 4 * 1024 * 1024 + 1])),
            StatusCode::PAYLOAD_TOO_LARGE,
            "MANIFEST_INVALID",
        ),
    ];
    for (m, url, body, status, code) in cases {
        let mut rq = c.request(m.clone(), &url);
        if let Some((ct, bytes)) = body {
            rq = rq.header("content-type", ct).body(bytes);
        }
        let r = rq.send().await.unwrap();
        assert_eq!(error_code(r).await, (status, code.to_owned()), "{m} {url}");
    }
}

#[tokio::test]
async fn manifest_referencing_missing_blobs_lists_each_as_manifest_blob_unknown() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let c = Client::new();
    let cfg = push_blob(&c, &s.base, "x", b"{}").await;
    let (m1, m2) = (Digest::of(b"m1"), Digest::of(b"m2"));
    let m = image(&cfg, &[(&m1, 2), (&m2, 2)], OCI_MANIFEST, json!({}));
    let r = put_manifest(&c, &s.base, "x", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    let errs = v["errors"].as_array().unwrap();
    assert_eq!(errs.len(), 2);
    assert_eq!(errs[0]["code"], "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(errs[1]["detail"]["digest"], m2.oci());
    // An index whose child manifest was never pushed.
    let idx = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": Digest::of(&m).oci(), "size": m.len()}]}))
    .unwrap();
    let r = put_manifest(&c, &s.base, "x", "idx", OCI_INDEX, &idx).await;
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".into()));
}

#[tokio::test]
async fn manifests_of_every_type_are_served_with_their_content_type_and_accept_is_honoured() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let c = Client::new();
    let cfg = push_blob(&c, &s.base, "m", b"{}").await;
    let l = push_blob(&c, &s.base, "m", b"layer").await;
    let oci = image(&cfg, &[(&l, 5)], OCI_MANIFEST, json!({}));
    let docker = image(&cfg, &[(&l, 5)], DOCKER_MANIFEST, json!({}));
    for (tag, ct, body) in [("oci", OCI_MANIFEST, &oci), ("docker", DOCKER_MANIFEST, &docker)] {
        let r = put_manifest(&c, &s.base, "m", tag, ct, body).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(hdr(&r, "docker-content-digest"), Digest::of(body).oci());
    }
    let child = |m: &Vec<u8>, t: &str| json!({"mediaType": t, "digest": Digest::of(m).oci(), "size": m.len()});
    let oci_idx = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child(&oci, OCI_MANIFEST)]}),
    )
    .unwrap();
    let docker_list = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [child(&docker, DOCKER_MANIFEST)]}),
    )
    .unwrap();
    // By digest this time.
    for (ct, body) in [(OCI_INDEX, &oci_idx), (DOCKER_LIST, &docker_list)] {
        let r = put_manifest(&c, &s.base, "m", &Digest::of(body).oci(), ct, body).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{ct}");
    }
    for (reference, ct, body) in [
        ("oci".to_owned(), OCI_MANIFEST, &oci),
        ("docker".to_owned(), DOCKER_MANIFEST, &docker),
        (Digest::of(&oci_idx).oci(), OCI_INDEX, &oci_idx),
        (Digest::of(&docker_list).oci(), DOCKER_LIST, &docker_list),
    ] {
        let url = format!("{}/v2/m/manifests/{reference}", s.base);
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(hdr(&r, "content-type"), ct);
        assert_eq!(hdr(&r, "docker-content-digest"), Digest::of(body).oci());
        assert_eq!(r.bytes().await.unwrap().as_ref(), &body[..]);
        let r = c.head(&url).header("accept", format!("{ct}, {OCI_INDEX}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(hdr(&r, "content-length"), body.len().to_string());
    }
    let r = c.get(format!("{}/v2/m/manifests/docker", s.base)).header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into()));
    let r = c.get(format!("{}/v2/m/manifests/docker", s.base)).header("accept", "*/*").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn tags_and_catalog_paginate_with_link_headers() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let c = Client::new();
    for t in ["v4", "v1", "v3", "v2"] {
        push_image(&c, &s.base, "pag/x", t, b"l").await;
    }
    push_image(&c, &s.base, "pag/y", "v1", b"l").await;
    let r = c.get(format!("{}/v2/pag/x/tags/list?n=2", s.base)).send().await.unwrap();
    assert_eq!(hdr(&r, "link"), "</v2/pag/x/tags/list?n=2&last=v2>; rel=\"next\"");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"name": "pag/x", "tags": ["v1", "v2"]}));
    let r = c.get(format!("{}/v2/pag/x/tags/list?n=2&last=v2", s.base)).send().await.unwrap();
    assert_eq!(hdr(&r, "link"), "");
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["v3", "v4"]));
    let r = c.get(format!("{}/v2/pag/x/tags/list", s.base)).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["v1", "v2", "v3", "v4"]));
    let r = c.get(format!("{}/v2/_catalog?n=1", s.base)).send().await.unwrap();
    assert_eq!(hdr(&r, "link"), "</v2/_catalog?n=1&last=pag/x>; rel=\"next\"");
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"repositories": ["pag/x"]}));
    let r = c.get(format!("{}/v2/_catalog?n=1&last=pag/x", s.base)).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"repositories": ["pag/y"]}));
}

#[tokio::test]
async fn referrers_are_listed_filtered_and_announced_by_oci_subject() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let c = Client::new();
    let (subject, subject_bytes, _) = push_image(&c, &s.base, "ref", "v1", b"l").await;
    let cfg = push_blob(&c, &s.base, "ref", b"{}").await;
    let mut pushed = Vec::new();
    for t in ["application/vnd.example.sig", "application/vnd.example.sbom"] {
        let extra = json!({"artifactType": t, "annotations": {"k": t},
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject.oci(), "size": subject_bytes.len()}});
        let m = image(&cfg, &[], OCI_MANIFEST, extra);
        let r = put_manifest(&c, &s.base, "ref", &Digest::of(&m).oci(), OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(hdr(&r, "oci-subject"), subject.oci());
        pushed.push(Digest::of(&m));
    }
    let url = format!("{}/v2/ref/referrers/{}", s.base, subject.oci());
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(hdr(&r, "content-type"), OCI_INDEX);
    assert_eq!(hdr(&r, "oci-filters-applied"), "");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["mediaType"], OCI_INDEX);
    assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
    let r = c.get(format!("{url}?artifactType=application/vnd.example.sbom")).send().await.unwrap();
    assert_eq!(hdr(&r, "oci-filters-applied"), "artifactType");
    let v: Value = r.json().await.unwrap();
    let ms = v["manifests"].as_array().unwrap();
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0]["digest"], pushed[1].oci());
    assert_eq!(ms[0]["artifactType"], "application/vnd.example.sbom");
    assert_eq!(ms[0]["annotations"]["k"], "application/vnd.example.sbom");
    // A subject nobody refers to: an empty index, not an error.
    let r = c.get(format!("{}/v2/ref/referrers/{}", s.base, Digest::of(b"x").oci())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["manifests"], json!([]));
}

#[tokio::test]
async fn deletes_of_manifests_tags_and_blobs() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let c = Client::new();
    let (m, bytes, layer) = push_image(&c, &s.base, "del", "v1", b"layer").await;
    put_manifest(&c, &s.base, "del", "v2", OCI_MANIFEST, &bytes).await;
    let base = format!("{}/v2/del", s.base);
    assert_eq!(c.delete(format!("{base}/manifests/v2")).send().await.unwrap().status(), StatusCode::ACCEPTED);
    let r = c.get(format!("{base}/tags/list")).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["v1"]));
    assert_eq!(c.delete(format!("{base}/manifests/{}", m.oci())).send().await.unwrap().status(), StatusCode::ACCEPTED);
    let r = c.get(format!("{base}/manifests/v1")).send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into()));
    let r = c.delete(format!("{base}/manifests/{}", m.oci())).send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into()));
    assert_eq!(c.delete(format!("{base}/blobs/{}", layer.oci())).send().await.unwrap().status(), StatusCode::ACCEPTED);
    let r = c.get(format!("{base}/blobs/{}", layer.oci())).send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "BLOB_UNKNOWN".into()));
    let r = c.delete(format!("{base}/blobs/{}", layer.oci())).send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "BLOB_UNKNOWN".into()));
}

#[tokio::test]
async fn cross_repository_mount_links_existing_blobs_and_else_starts_an_upload() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let c = Client::new();
    let dg = push_blob(&c, &s.base, "src", b"shared layer").await;
    let r = c.post(format!("{}/v2/dst/blobs/uploads/?mount={}&from=src", s.base, dg.oci())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(hdr(&r, "location"), format!("/v2/dst/blobs/{}", dg.oci()));
    let r = c.get(format!("{}/v2/dst/blobs/{}", s.base, dg.oci())).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"shared layer");
    let other = Digest::of(b"not there");
    let r = c.post(format!("{}/v2/dst/blobs/uploads/?mount={}&from=src", s.base, other.oci())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(hdr(&r, "location").starts_with("/v2/dst/blobs/uploads/"));
    // A blob that exists in the store but not in `from` is not mountable from it.
    push_blob(&c, &s.base, "third", b"private").await;
    let r = c
        .post(format!("{}/v2/dst/blobs/uploads/?mount={}&from=src", s.base, Digest::of(b"private").oci()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

struct FakeRemote {
    store: cairn_store::Store,
    blob: Vec<u8>,
}

impl RemoteSource for FakeRemote {
    fn fetch_blob<'a>(&'a self, _repo: &'a RepoName, digest: &'a Digest) -> BoxFuture<'a, Result<bool, RemoteError>> {
        Box::pin(async move {
            if *digest != Digest::of(&self.blob) {
                return Ok(false);
            }
            self.store.put_reader(&self.blob[..], Some(digest))?;
            Ok(true)
        })
    }
    fn open_blob<'a>(
        &'a self,
        _repo: &'a RepoName,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<RemoteBody>, RemoteError>> {
        Box::pin(async move {
            if *digest != Digest::of(&self.blob) {
                return Ok(None);
            }
            let bytes = bytes::Bytes::from(self.blob.clone());
            let stream = futures_util::stream::iter([Ok(bytes)]).boxed();
            Ok(Some(RemoteBody {
                size: Some(self.blob.len() as u64),
                source: cairn_cluster::fetch::SourceKind::Upstream,
                stream,
            }))
        })
    }
    fn fetch_manifest<'a>(
        &'a self,
        _r: &'a RepoName,
        _d: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<String>, RemoteError>> {
        Box::pin(async { Err("upstream unreachable".into()) })
    }
}

#[tokio::test]
async fn a_blob_miss_asks_the_remote_source_and_serves_what_it_fetched() {
    let d = tempfile::tempdir().unwrap();
    let store = cairn_store::Store::open(d.path()).unwrap();
    let remote = Arc::new(FakeRemote { store, blob: b"from afar".to_vec() });
    let s = v2common::start_with(d.path(), Some(remote)).await;
    let c = Client::new();
    let r = c.get(format!("{}/v2/mirror/x/blobs/{}", s.base, Digest::of(b"from afar").oci())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"from afar");
    let r = c.get(format!("{}/v2/mirror/x/blobs/{}", s.base, Digest::of(b"nowhere").oci())).send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "BLOB_UNKNOWN".into()));
    // A failing remote is a bad gateway naming the failure: not a 500, and
    // not "unknown" (the object may well exist upstream).
    let r = c.get(format!("{}/v2/mirror/x/manifests/{}", s.base, Digest::of(b"m").oci())).send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::BAD_GATEWAY, "UNKNOWN".into()));
}

#[tokio::test]
async fn tag_repointed_by_another_process_is_served_at_its_new_manifest() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let c = Client::new();
    let (old, old_bytes, _) = push_image(&c, &s.base, "a/b", "v1", b"old layer").await;
    let url = format!("{}/v2/a/b/manifests/v1", s.base);
    for _ in 0..2 {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(hdr(&r, "docker-content-digest"), old.oci());
        assert_eq!(r.bytes().await.unwrap().as_ref(), &old_bytes[..]);
    }
    // Another process on the same data dir (e.g. `cairn registry`) re-points the tag.
    let other = cairn_store::oci::Registry::new(
        cairn_store::Store::open(d.path()).unwrap(),
        cairn_store::oci::RegistryOptions::default(),
    )
    .unwrap();
    let layer = other.store().put_reader(&b"new layer"[..], None).unwrap().digest;
    let cfg = Digest::of(b"{}");
    let new_bytes = image(&cfg, &[(&layer, 9)], OCI_MANIFEST, json!({}));
    let repo = RepoName::parse("a/b").unwrap();
    let tag = cairn_store::oci::Reference::Tag(cairn_store::oci::Tag::parse("v1").unwrap());
    let new = other.put_manifest(&repo, &tag, &new_bytes, Some(OCI_MANIFEST)).unwrap().digest;
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(hdr(&r, "docker-content-digest"), new.oci());
    assert_eq!(r.bytes().await.unwrap().as_ref(), &new_bytes[..]);
    other.delete_manifest(&repo, &tag).unwrap();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into()));
}

#[tokio::test]
async fn registry_errors_do_not_reveal_the_data_dir() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    // A file where the upload sessions' directory should be.
    let uploads = d.path().join("registry/uploads");
    let _ = std::fs::remove_dir_all(&uploads);
    std::fs::create_dir_all(uploads.parent().unwrap()).unwrap();
    std::fs::write(&uploads, b"not a dir").unwrap();
    let r = Client::new().post(format!("{}/v2/a/b/blobs/uploads/", s.base)).send().await.unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    let body = r.text().await.unwrap();
    assert!(body.contains("<path on the node>"), "{body}");
    assert!(!body.contains(&d.path().display().to_string()) && !body.contains("/tmp/"), "{body}");
}

/// A remote source whose every call times out the way a peer does.
struct TimedOutRemote;

fn peer_timeout() -> RemoteError {
    Box::new(cairn_cluster::ClusterError::PeerTimeout {
        peer: "10.0.0.9:7420".into(),
        what: "GET /v1/oci/tag".into(),
        after: std::time::Duration::from_secs(5),
    })
}

impl RemoteSource for TimedOutRemote {
    fn fetch_blob<'a>(&'a self, _r: &'a RepoName, _d: &'a Digest) -> BoxFuture<'a, Result<bool, RemoteError>> {
        Box::pin(async { Err(peer_timeout()) })
    }
    fn open_blob<'a>(
        &'a self,
        _r: &'a RepoName,
        _d: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<RemoteBody>, RemoteError>> {
        Box::pin(async { Err(peer_timeout()) })
    }
    fn fetch_manifest<'a>(
        &'a self,
        _r: &'a RepoName,
        _d: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<String>, RemoteError>> {
        Box::pin(async { Err(peer_timeout()) })
    }
    fn resolve_tag<'a>(
        &'a self,
        _r: &'a RepoName,
        _t: &'a cairn_store::oci::Tag,
    ) -> BoxFuture<'a, Result<Option<Digest>, RemoteError>> {
        Box::pin(async { Err(peer_timeout()) })
    }
}

/// A remote that timed out is a 504 on every /v2 read, as on /v1 (it was
/// a 502 for blobs and manifests, and a 404 for a tag).
#[tokio::test]
async fn v2_remote_timeout_is_504_like_v1() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start_with(d.path(), Some(Arc::new(TimedOutRemote))).await;
    let c = Client::new();
    let absent = Digest::of(b"far away").oci();
    for (method, path) in [
        (Method::GET, "manifests/v1".to_owned()),
        (Method::GET, format!("manifests/{absent}")),
        (Method::GET, format!("blobs/{absent}")),
        (Method::HEAD, format!("blobs/{absent}")),
    ] {
        let r = c.request(method.clone(), format!("{}/v2/mirror/x/{path}", s.base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT, "{method} {path}");
        if method == Method::GET {
            let body = r.text().await.unwrap();
            assert!(body.contains("UNKNOWN") && body.contains("10.0.0.9:7420"), "{path}: {body}");
        }
    }
}
