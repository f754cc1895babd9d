//! /v2 under hostile input and load: upload session caps and the timed
//! sweep of idle sessions, mounts, unknown paths.

mod common;
mod v2common;

use std::net::IpAddr;
use std::time::Duration;

use cairn_store::Digest;
use cairn_store::oci::RegistryOptions;
use cairn_testkit::{NodeSpec, TestNode};
use common::wait_until;
use reqwest::{Client, StatusCode};

fn node(registry: RegistryOptions) -> TestNode {
    TestNode::start(NodeSpec { v2: true, registry, ..Default::default() })
}

/// A client whose connections come from `ip` (any 127/8 address works on loopback).
fn client_from(ip: &str) -> Client {
    let ip: IpAddr = ip.parse().unwrap();
    Client::builder().local_address(ip).build().unwrap()
}

/// Starts a session; its status and, on success, its `Location`.
async fn open(c: &Client, n: &TestNode, repo: &str) -> (StatusCode, String) {
    let r = c.post(format!("{}/v2/{repo}/blobs/uploads/", n.url())).send().await.unwrap();
    let loc = r.headers().get("location").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (r.status(), loc)
}

async fn error_code(r: reqwest::Response) -> (StatusCode, String, String) {
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap();
    let e = &v["errors"][0];
    (status, e["code"].as_str().unwrap_or_default().to_owned(), e["detail"].to_string())
}

/// PATCHes `data` into the session at `loc` and finishes it.
async fn finish(c: &Client, base: &str, loc: &str, data: &[u8]) -> StatusCode {
    let r = c.patch(format!("{base}{loc}")).body(data.to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let d = Digest::of(data);
    let r = c.put(format!("{base}{loc}?digest={}", d.oci())).send().await.unwrap();
    r.status()
}

fn caps(total: usize, per_client: usize) -> RegistryOptions {
    RegistryOptions { max_upload_sessions: total, max_upload_sessions_per_client: per_client, ..Default::default() }
}

#[tokio::test]
async fn upload_sessions_past_the_per_client_cap_get_429_and_open_ones_keep_working() {
    let n = node(caps(100, 3));
    let a = client_from("127.0.0.1");
    let mut locs = Vec::new();
    for _ in 0..3 {
        let (s, loc) = open(&a, &n, "team/app").await;
        assert_eq!(s, StatusCode::ACCEPTED);
        locs.push(loc);
    }
    let r = a.post(format!("{}/v2/team/app/blobs/uploads/", n.url())).send().await.unwrap();
    let (status, code, detail) = error_code(r).await;
    assert_eq!((status, code.as_str()), (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"));
    assert!(detail.contains("127.0.0.1") && detail.contains("limit 3"), "{detail}");
    // Another repository does not help: the cap is the client's.
    assert_eq!(open(&a, &n, "other").await.0, StatusCode::TOO_MANY_REQUESTS);

    // The open sessions still take bytes and finish, and a finished one frees its slot.
    assert_eq!(finish(&a, &n.url(), &locs[0], b"layer one").await, StatusCode::CREATED);
    let r = a.get(format!("{}/v2/team/app/blobs/{}", n.url(), Digest::of(b"layer one").oci())).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"layer one");
    let (s, loc) = open(&a, &n, "team/app").await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(finish(&a, &n.url(), &loc, b"layer two").await, StatusCode::CREATED);
    // A cancelled one too.
    let r = a.delete(format!("{}{}", n.url(), locs[1])).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(open(&a, &n, "team/app").await.0, StatusCode::ACCEPTED);

    // Another address has its own share.
    let b = client_from("127.0.0.2");
    assert_eq!(open(&b, &n, "team/app").await.0, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn upload_sessions_past_the_total_cap_get_429_whoever_asks() {
    let n = node(caps(3, 100));
    let (a, b, c) = (client_from("127.0.0.1"), client_from("127.0.0.2"), client_from("127.0.0.3"));
    let (_, first) = open(&a, &n, "x").await;
    assert_eq!(open(&a, &n, "x").await.0, StatusCode::ACCEPTED);
    assert_eq!(open(&b, &n, "y").await.0, StatusCode::ACCEPTED);
    let r = c.post(format!("{}/v2/z/blobs/uploads/", n.url())).send().await.unwrap();
    let (status, code, detail) = error_code(r).await;
    assert_eq!((status, code.as_str()), (StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"));
    assert!(detail.contains("on this registry"), "{detail}");
    assert_eq!(open(&b, &n, "y").await.0, StatusCode::TOO_MANY_REQUESTS);
    // A mount that cannot be done falls back to a session, and so meets the cap too.
    let r = c
        .post(format!("{}/v2/z/blobs/uploads/?mount={}&from=x", n.url(), Digest::of(b"absent").oci()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // A single-request push opens no session and still works.
    let d = Digest::of(b"monolithic");
    let r =
        c.post(format!("{}/v2/z/blobs/uploads/?digest={}", n.url(), d.oci())).body("monolithic").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(finish(&a, &n.url(), &first, b"done").await, StatusCode::CREATED);
    assert_eq!(open(&c, &n, "z").await.0, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn idle_upload_sessions_are_swept_on_a_timer_without_a_new_upload_starting() {
    // Long enough that a loaded machine still PATCHes before the session expires.
    let n = node(RegistryOptions { upload_ttl: Duration::from_secs(3), ..Default::default() });
    let c = Client::new();
    let (s, loc) = open(&c, &n, "idle").await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let r = c.patch(format!("{}{loc}", n.url())).body(vec![7u8; 100_000]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = loc.rsplit('/').next().unwrap().to_owned();
    let dir = n.dir().join("registry/uploads").join(&id);
    assert!(dir.join("data").is_file());
    let reg = n.state.registry.clone().unwrap();
    assert_eq!(reg.open_uploads(), 1);
    // No request reaches the node while it waits: only the timer can remove it.
    // The sweep removes the directory, then frees the session's slot.
    let swept = wait_until(Duration::from_secs(30), || !dir.exists() && reg.open_uploads() == 0).await;
    assert!(
        swept,
        "idle session {id} was not swept (directory present: {}, open: {})",
        dir.exists(),
        reg.open_uploads()
    );
    let r = c.get(format!("{}{loc}", n.url())).send().await.unwrap();
    assert_eq!(error_code(r).await.1, "BLOB_UPLOAD_UNKNOWN");
}

/// Pushes `data` to `repo` in one request.
async fn push(c: &Client, base: &str, repo: &str, data: &[u8]) -> Digest {
    let d = Digest::of(data);
    let r =
        c.post(format!("{base}/v2/{repo}/blobs/uploads/?digest={}", d.oci())).body(data.to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    d
}

#[tokio::test]
async fn mount_without_from_or_from_a_repository_without_the_blob_starts_an_upload_and_links_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = v2common::start(dir.path()).await;
    let c = Client::new();
    let d = push(&c, &s.base, "a", b"a's private layer").await;
    let blob_of_b = format!("{}/v2/b/blobs/{}", s.base, d.oci());

    let r = c.post(format!("{}/v2/b/blobs/uploads/?mount={}", s.base, d.oci())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "a digest alone is no right to a stored blob");
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(loc.starts_with("/v2/b/blobs/uploads/"), "{loc}");
    assert_eq!(c.get(&blob_of_b).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(c.head(&blob_of_b).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    // The session it started is a normal one.
    assert_eq!(finish(&c, &s.base, &loc, b"b's own layer").await, StatusCode::CREATED);

    let r = c.post(format!("{}/v2/b/blobs/uploads/?mount={}&from=c", s.base, d.oci())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(c.get(&blob_of_b).send().await.unwrap().status(), StatusCode::NOT_FOUND);

    let r = c.post(format!("{}/v2/b/blobs/uploads/?mount={}&from=a", s.base, d.oci())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["location"].to_str().unwrap(), format!("/v2/b/blobs/{}", d.oci()));
    assert_eq!(c.get(&blob_of_b).send().await.unwrap().bytes().await.unwrap().as_ref(), b"a's private layer");
}

#[tokio::test]
async fn a_blob_stored_only_as_a_mirror_cache_is_not_mountable_without_from() {
    // A blob in the store that no repository links (as the mirror's cache, or /v1 puts it there).
    let n = node(RegistryOptions::default());
    let d = n.put(b"cached from upstream");
    let c = Client::new();
    let r = c.post(format!("{}/v2/anyone/blobs/uploads/?mount={}", n.url(), d.oci())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let reg = n.state.registry.clone().unwrap();
    assert!(!reg.has_blob(&cairn_store::oci::RepoName::parse("anyone").unwrap(), &d));
}

/// A 404's status, content type and JSON body.
async fn json_answer(c: &Client, method: reqwest::Method, url: &str) -> (StatusCode, String, serde_json::Value) {
    let r = c.request(method, url).send().await.unwrap();
    let status = r.status();
    let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: body {text:?} is not JSON: {e}"));
    (status, ct, v)
}

#[tokio::test]
async fn unknown_paths_get_a_json_404_in_the_format_of_their_api() {
    let n = node(RegistryOptions::default());
    let c = Client::new();
    // `/` is the status page (see tests/status.rs); every other unknown path is a JSON 404.
    for p in ["/nope", "/v1", "/v1/", "/v1/nope", "/v1/blobs", "/v1/health/x", "/v3/x", "/v2x", "//"] {
        let (status, ct, v) = json_answer(&c, reqwest::Method::GET, &format!("{}{p}", n.url())).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{p}");
        assert_eq!(ct, "application/json", "{p}");
        let msg = v["error"].as_str().unwrap_or_else(|| panic!("{p}: {v}"));
        assert!(msg.contains("no endpoint at") && msg.contains(p), "{p}: {msg}");
    }
    for p in ["/v2/a/whatever", "/v2/_catalog/x", "/v2/a/blobs", "/v2/a/b/c"] {
        let (status, ct, v) = json_answer(&c, reqwest::Method::GET, &format!("{}{p}", n.url())).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{p}");
        assert_eq!(ct, "application/json", "{p}");
        assert_eq!(v["errors"][0]["code"], "UNSUPPORTED", "{p}: {v}");
    }
    for (m, p) in
        [(reqwest::Method::POST, "/v2/_catalog"), (reqwest::Method::DELETE, "/v2/"), (reqwest::Method::PUT, "/v2")]
    {
        let (status, _, v) = json_answer(&c, m.clone(), &format!("{}{p}", n.url())).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{m} {p}");
        assert_eq!(v["errors"][0]["code"], "UNSUPPORTED", "{m} {p}: {v}");
    }
    // The API itself still answers.
    assert_eq!(c.get(format!("{}/v1/health", n.url())).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(c.get(format!("{}/v2/", n.url())).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn v2_paths_on_a_node_without_a_registry_and_other_paths_on_a_registry_listener_get_json_404s() {
    let n = TestNode::start(NodeSpec::default());
    let c = Client::new();
    let (status, _, v) = json_answer(&c, reqwest::Method::GET, &format!("{}/v2/a/manifests/latest", n.url())).await;
    assert_eq!((status, &v["errors"][0]["code"]), (StatusCode::NOT_FOUND, &serde_json::json!("UNSUPPORTED")));

    let dir = tempfile::tempdir().unwrap();
    let s = v2common::start(dir.path()).await;
    for p in ["/", "/v1/health", "/v2x"] {
        let (status, ct, v) = json_answer(&c, reqwest::Method::GET, &format!("{}{p}", s.base)).await;
        assert_eq!((status, ct.as_str()), (StatusCode::NOT_FOUND, "application/json"), "{p}");
        assert_eq!(v["errors"][0]["code"], "UNSUPPORTED", "{p}: {v}");
    }
}

#[tokio::test]
async fn catalog_pages_are_capped_whatever_n_asks_and_the_link_leads_to_the_rest() {
    use cairn_http::v2::lists::MAX_PAGE;
    // 10,001 directories: on tmpfs when there is one, which makes them cheap.
    let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
    let s = v2common::start(dir.path()).await;
    // Repositories as the registry lays them out (quicker than 10,001 pushes).
    let repos = dir.path().join("registry/repositories");
    for i in 0..=MAX_PAGE {
        std::fs::create_dir_all(repos.join(format!("r{i:05}/_blobs"))).unwrap();
    }
    let c = Client::new();
    for q in ["", "?n=18446744073709551615", "?n=99999999999999999999999"] {
        let r = c.get(format!("{}/v2/_catalog{q}", s.base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{q}");
        let link = r.headers().get("link").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        assert_eq!(link, format!("</v2/_catalog?n={MAX_PAGE}&last=r09999>; rel=\"next\""), "{q}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["repositories"].as_array().unwrap().len(), MAX_PAGE, "{q}");
    }
    let r = c.get(format!("{}/v2/_catalog?n={MAX_PAGE}&last=r09999", s.base)).send().await.unwrap();
    assert!(r.headers().get("link").is_none());
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["r10000"]));
    for bad in ["-1", "", "1e3", "+5"] {
        let r = c.get(format!("{}/v2/_catalog?n={bad}", s.base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "n={bad}");
    }
}

/// Entries left in the node's `tmp/` (temp blobs of uploads in flight).
fn tmp_entries(n: &TestNode) -> usize {
    std::fs::read_dir(n.dir().join("tmp")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn uploads_past_max_blob_size_are_413_before_they_are_stored_on_v1_and_v2() {
    const MAX: usize = 1 << 20;
    let n = TestNode::start(NodeSpec {
        v2: true,
        tune: Some(|c: &mut cairn_cluster::ClusterConfig| c.max_blob_size = MAX as u64),
        ..Default::default()
    });
    // A refused body is not read, so the node closes that connection: no reuse.
    let c = Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let big = cairn_testkit::blob(71, MAX + 1);
    let bd = Digest::of(&big);

    // Declared too large: refused before any byte is read.
    let r = c.put(format!("{}/v1/blobs/{bd}", n.url())).body(big.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.text().await.unwrap().contains("max_blob_size"));
    // Not declared (chunked): cut as soon as it passes the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = c.put(format!("{}/v1/blobs/{bd}", n.url())).body(body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = c.post(format!("{}/v2/big/blobs/uploads/?digest={}", n.url(), bd.oci())).body(big.clone()).send().await;
    let (status, code, _) = error_code(r.unwrap()).await;
    assert_eq!((status, code.as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "BLOB_UPLOAD_INVALID"));
    assert!(!n.dir().join("objects").join(bd.to_string()).exists());
    assert!(
        wait_until(Duration::from_secs(10), || tmp_entries(&n) == 0).await,
        "temp blobs of refused uploads stay in tmp/"
    );

    // A session counts every chunk: the one that would pass the limit is refused and rolled back.
    let (s, loc) = open(&c, &n, "big").await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let half = MAX / 2 + 1;
    let r = c.patch(format!("{}{loc}", n.url())).body(big[..half].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c.patch(format!("{}{loc}", n.url())).body(big[half..].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = c.get(format!("{}{loc}", n.url())).send().await.unwrap();
    assert_eq!(r.headers()["range"], format!("0-{}", half - 1).as_str());

    // Exactly the limit is fine.
    let fits = &big[..MAX];
    let r = c.put(format!("{}/v1/blobs/{}", n.url(), Digest::of(fits))).body(fits.to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}
