//! Numbers from the network never wrap: a `Content-Range` whose length does
//! not fit in 64 bits is refused, and a final PUT's body is always appended
//! (and checked) before the upload is committed.

mod v2common;

use cairn_store::Digest;
use reqwest::{Client, StatusCode};

fn chunked(bytes: &'static [u8]) -> reqwest::Body {
    let s = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(bytes))]);
    reqwest::Body::wrap_stream(s)
}

async fn session(c: &Client, base: &str) -> String {
    let r = c.post(format!("{base}/v2/ovf/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    format!("{base}{}", r.headers()["location"].to_str().unwrap())
}

async fn received(c: &Client, url: &str) -> String {
    let r = c.get(url).send().await.unwrap();
    r.headers().get("range").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn content_range_of_2_pow_64_bytes_is_refused_not_wrapped_to_an_empty_chunk() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let c = Client::new();
    let url = session(&c, &s.base).await;
    let r =
        c.patch(&url).header("content-range", "0-18446744073709551615").body(chunked(b"hello")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let text = r.text().await.unwrap();
    assert!(text.contains("0-18446744073709551615") && text.contains("2^64"), "{text}");
    assert_eq!(received(&c, &url).await, "0-0", "nothing was appended");
}

#[tokio::test]
async fn final_put_with_an_overflowing_content_range_does_not_commit_the_empty_blob_and_its_body_counts() {
    let d = tempfile::tempdir().unwrap();
    let s = v2common::start(d.path()).await;
    let c = Client::new();
    let url = session(&c, &s.base).await;
    let empty = Digest::of(b"");
    let r = c
        .put(format!("{url}?digest={}", empty.oci()))
        .header("content-range", "0-18446744073709551615")
        .body(chunked(b"hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert!(!s.registry.store().exists(&empty), "the empty blob was committed with the body dropped");
    // The body is appended: the digest of the empty blob no longer matches.
    let url = session(&c, &s.base).await;
    let r = c.put(format!("{url}?digest={}", empty.oci())).body(chunked(b"hello")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(!s.registry.store().exists(&empty));
    // And with the right digest the blob holds the body.
    let url = session(&c, &s.base).await;
    let hello = Digest::of(b"hello");
    let r = c
        .put(format!("{url}?digest={}", hello.oci()))
        .header("content-range", "0-4")
        .body(chunked(b"hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c.get(format!("{}/v2/ovf/blobs/{}", s.base, hello.oci())).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello");
}
