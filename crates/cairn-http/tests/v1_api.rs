//! The /v1 API of one node: wire format (exact fields and headers of the
//! seed), blobs, ranges, uploads, manifests, and every bad input.

mod common;

use cairn_store::Digest;
use cairn_testkit::{NodeSpec, TestNode, blob};
use common::{raw, raw_get, tmp_entries};
use serde_json::Value;

fn node() -> TestNode {
    TestNode::start(NodeSpec { node_id: Some("node-a".into()), ..Default::default() })
}

async fn get_json(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test]
async fn health_answers_ok_with_node_id_and_utc_rfc3339_time() {
    let n = node();
    let (status, v) = get_json(&format!("{}/v1/health", n.url())).await;
    assert_eq!(status, 200);
    assert_eq!(keys(&v), ["instance", "node_id", "status", "time"], "the seed's fields, and Cairn's instance id");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["node_id"], "node-a");
    let t = v["time"].as_str().unwrap();
    assert!(t.ends_with('Z') && t.contains('T'), "{t}");
}

#[tokio::test]
async fn info_has_exactly_the_seed_fields() {
    let n = TestNode::start(NodeSpec {
        node_id: Some("n1".into()),
        peers: vec!["10.0.0.9:7420".into()],
        ..Default::default()
    });
    let (_, v) = get_json(&format!("{}/v1/info", n.url())).await;
    assert_eq!(keys(&v), ["cas_base", "listen_addr", "node_id", "peers"]);
    assert_eq!(v["peers"], serde_json::json!(["10.0.0.9:7420"]));
    assert_eq!(v["cas_base"], n.dir().display().to_string());
}

#[tokio::test]
async fn empty_store_lists_manifests_as_an_empty_array() {
    let n = node();
    let body = reqwest::get(format!("{}/v1/manifests", n.url())).await.unwrap().text().await.unwrap();
    assert_eq!(body, "[]");
}

#[tokio::test]
async fn blob_get_streams_bytes_with_length_type_and_node_header() {
    let n = node();
    let data = blob(1, 3 << 20);
    let d = n.put(&data);
    let r = reqwest::get(format!("{}/v1/blobs/{d}", n.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.headers()["x-volt-node"], "node-a");
    assert_eq!(r.content_length(), Some(data.len() as u64));
    assert!(r.bytes().await.unwrap() == data);
    // The sha256: form is accepted too.
    let r = reqwest::get(format!("{}/v1/blobs/{}", n.url(), d.oci())).await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn blob_head_gives_length_when_present_and_404_when_absent() {
    let n = node();
    let d = n.put(b"hello");
    let c = reqwest::Client::new();
    let r = c.head(format!("{}/v1/blobs/{d}", n.url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "5");
    let absent = Digest::of(b"absent");
    let r = c.head(format!("{}/v1/blobs/{absent}", n.url())).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = reqwest::get(format!("{}/v1/blobs/{absent}", n.url())).await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains(&absent.to_string()));
}

#[tokio::test]
async fn range_requests_answer_206_with_content_range_or_416() {
    let n = node();
    let data = blob(2, 1000);
    let d = n.put(&data);
    let c = reqwest::Client::new();
    let url = format!("{}/v1/blobs/{d}", n.url());
    let r = c.get(&url).header("Range", "bytes=10-19").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/1000");
    assert_eq!(r.bytes().await.unwrap(), data[10..20]);
    let r = c.get(&url).header("Range", "bytes=-100").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), data[900..]);
    let r = c.get(&url).header("Range", "bytes=1000-").send().await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */1000");
}

#[tokio::test]
async fn malformed_digests_are_400_with_a_json_error_on_every_route() {
    let n = node();
    let c = reqwest::Client::new();
    for bad in ["abc", "SHA256:00", &"A".repeat(64), &format!("md5:{}", "0".repeat(64)), &"g".repeat(64)] {
        for path in ["/v1/blobs/", "/v1/fetch/"] {
            let r = c.get(format!("{}{path}{bad}", n.url())).send().await.unwrap();
            assert_eq!(r.status(), 400, "{path}{bad}");
            let v: Value = r.json().await.unwrap();
            assert!(v["error"].as_str().unwrap().contains("digest"), "{v}");
        }
        let r = c.put(format!("{}/v1/blobs/{bad}", n.url())).body("x").send().await.unwrap();
        assert_eq!(r.status(), 400);
        let r = c.head(format!("{}/v1/blobs/{bad}", n.url())).send().await.unwrap();
        assert_eq!(r.status(), 400);
    }
    // A short digest (the seed crashed on fewer than 12 characters) is a plain 400.
    let (status, _) = raw_get(&n.addr(), "/v1/blobs/ab");
    assert_eq!(status, 400);
}

#[tokio::test]
async fn put_blob_stores_verified_bytes_and_refuses_a_wrong_digest() {
    let n = node();
    let c = reqwest::Client::new();
    let data = blob(3, 2 << 20);
    let d = Digest::of(&data);
    let r = c.put(format!("{}/v1/blobs/{d}", n.url())).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["digest"], d.to_string());
    assert_eq!(v["size"], data.len());
    assert!(n.store.verify_blob(&d).unwrap());

    let other = Digest::of(b"something else");
    let r = c.put(format!("{}/v1/blobs/{other}", n.url())).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("mismatch"), "{v}");
    assert!(!n.store.exists(&other));
    assert_eq!(tmp_entries(n.dir()), 0);
}

#[tokio::test]
async fn upload_cut_mid_body_stores_nothing() {
    let n = node();
    let data = blob(4, 1000);
    let d = Digest::of(&data);
    let head = format!("PUT /v1/blobs/{d} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n");
    let req = format!("{head}{}", "x".repeat(500));
    let addr = n.addr();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Both).unwrap();
    })
    .await
    .unwrap();
    let handled = || n.counters.get("PUT /v1/blobs done") == 1;
    assert!(common::wait_until(std::time::Duration::from_secs(5), handled).await);
    assert_eq!(tmp_entries(n.dir()), 0);
    assert!(!n.store.exists(&d));
}

#[tokio::test]
async fn unsafe_ref_files_are_400_and_touch_no_file() {
    let n = node();
    // A file outside refs/ that a traversal would reach.
    std::fs::write(n.dir().join("secret.json"), b"{\"name\":\"s\",\"objects\":{}}").unwrap();
    for bad in [
        "/v1/manifests/..",
        "/v1/manifests/%2e%2e",
        "/v1/manifests/%2E%2E",
        "/v1/manifests/..%2Fsecret.json",
        "/v1/manifests/..%2fsecret.json",
        "/v1/manifests/a%2Fb.json",
        "/v1/manifests/a%5Cb.json",
        "/v1/manifests/a%00.json",
        "/v1/manifests/.json",
        "/v1/manifests/passwd",
        "/v1/manifests/%ff.json",
    ] {
        let (status, body) = raw_get(&n.addr(), bad);
        assert_eq!(status, 400, "{bad}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{bad}: not JSON: {body}"));
        assert!(v["error"].is_string());
    }
    // Raw traversal with real slashes never reaches a manifest route.
    let (status, _) = raw_get(&n.addr(), "/v1/manifests/../secret.json");
    assert_ne!(status, 200);
}

#[tokio::test]
async fn seed_format_manifest_is_listed_and_served_verbatim() {
    let n = node();
    let d = n.put(b"file bytes");
    let json = format!(
        "{{\"Name\": \"rootfs\", \"CreatedAt\": \"2024-05-01T10:00:00Z\", \"Objects\": {{\"etc/hostname\": \"{d}\"}}}}"
    );
    let rf = "rootfs-0123456789ab.json";
    std::fs::write(n.dir().join("refs").join(rf), &json).unwrap();
    let (_, list) = get_json(&format!("{}/v1/manifests", n.url())).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(keys(&list[0]), ["blob_count", "name", "node_id", "ref_file"]);
    assert_eq!(list[0]["name"], "rootfs");
    assert_eq!(list[0]["ref_file"], rf);
    assert_eq!(list[0]["blob_count"], 1);
    assert_eq!(list[0]["node_id"], "node-a");
    let r = reqwest::get(format!("{}/v1/manifests/{rf}", n.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-volt-node"], "node-a");
    assert_eq!(r.text().await.unwrap(), json);
    let r = reqwest::get(format!("{}/v1/manifests/absent-000000000000.json", n.url())).await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn manifest_push_is_409_listing_missing_blobs_then_201_when_present() {
    let n = node();
    let c = reqwest::Client::new();
    let have = n.put(b"have");
    let missing = Digest::of(b"missing");
    let json = serde_json::json!({"name": "app", "created_at": "2024-01-01T00:00:00Z",
        "objects": {"a": have.to_string(), "b": missing.to_string()}});
    let rf = cairn_testkit::ref_file_for("app", json.to_string().as_bytes());
    let url = format!("{}/v1/manifests/{rf}", n.url());
    let r = c.put(&url).body(json.to_string()).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["missing"], serde_json::json!([missing.to_string()]));
    assert!(!n.dir().join("refs").join(rf.as_str()).exists());

    n.put(b"missing");
    let r = c.put(&url).body(json.to_string()).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["ref_file"], rf.as_str());
    assert_eq!(v["blob_count"], 2);
    assert_eq!(std::fs::read(n.dir().join("refs").join(rf.as_str())).unwrap(), json.to_string().as_bytes());
}

#[tokio::test]
async fn manifest_push_refuses_oversize_and_unsafe_content() {
    let n = node();
    let c = reqwest::Client::new();
    let url = format!("{}/v1/manifests/big-000000000001.json", n.url());
    let r = c.put(&url).body(vec![b' '; (4 << 20) + 1]).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("limit"));
    let d = n.put(b"x");
    for (json, field) in [
        (serde_json::json!({"name": "../evil", "objects": {}}), "name"),
        (serde_json::json!({"name": "ok", "objects": {"/etc/passwd": d.to_string()}}), "/etc/passwd"),
        (serde_json::json!({"name": "ok", "objects": {"a/../../b": d.to_string()}}), ".."),
        (serde_json::json!({"name": "ok", "objects": {"a": "abc"}}), "abc"),
    ] {
        let r = c
            .put(format!("{}/v1/manifests/ok-000000000001.json", n.url()))
            .body(json.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{json}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains(field), "{v}");
    }
    let r = c.put(format!("{}/v1/manifests/ok-000000000001.json", n.url())).body("not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(std::fs::read_dir(n.dir().join("refs")).unwrap().count(), 0);
}

#[tokio::test]
async fn other_methods_on_known_paths_are_405() {
    let n = node();
    let c = reqwest::Client::new();
    let d = Digest::of(b"x");
    for (m, p) in [
        (reqwest::Method::DELETE, format!("/v1/blobs/{d}")),
        (reqwest::Method::POST, format!("/v1/blobs/{d}")),
        (reqwest::Method::POST, "/v1/health".into()),
        (reqwest::Method::PUT, "/v1/manifests".into()),
        (reqwest::Method::DELETE, "/v1/info".into()),
        (reqwest::Method::GET, "/v1/manifests/a-000000000000.json/sync".into()),
    ] {
        let r = c.request(m.clone(), format!("{}{p}", n.url())).send().await.unwrap();
        assert_eq!(r.status(), 405, "{m} {p}");
    }
}

#[tokio::test]
async fn sync_without_a_peer_parameter_is_400() {
    let n = node();
    let (status, body) = raw(
        &n.addr(),
        "POST /v1/manifests/a-000000000000.json/sync HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("peer"));
}

#[tokio::test]
async fn sync_of_an_unsafe_ref_file_is_400_and_of_an_unreachable_peer_is_502_naming_it() {
    let n = node();
    let (status, _) = raw(
        &n.addr(),
        "POST /v1/manifests/%2e%2e/sync?peer=127.0.0.1:1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 400);
    // An unreachable peer is a configured one (others are refused before any request).
    let dead = cairn_testkit::dead_addr();
    let n = TestNode::start(cairn_testkit::NodeSpec { peers: vec![dead.clone()], ..Default::default() });
    let r = reqwest::Client::new()
        .post(format!("{}/v1/manifests/a-000000000000.json/sync?peer={dead}", n.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains(&dead), "{v}");
}

#[tokio::test]
async fn manifest_push_under_a_ref_file_not_bound_to_its_bytes_is_400_before_any_blob_is_fetched() {
    let data = blob(41, 10_000);
    let origin = cairn_testkit::TestOrigin::start(std::slice::from_ref(&data), cairn_testkit::OriginMode::Good);
    let n = TestNode::start(NodeSpec { origins: vec![origin.template()], ..Default::default() });
    let c = reqwest::Client::new();
    // A future created_at would make it the newest "app" if it were accepted.
    let json = serde_json::json!({"name": "app", "created_at": "2999-01-01T00:00:00Z",
        "objects": {"bin/app": Digest::of(&data).to_string()}})
    .to_string();
    let right = cairn_testkit::ref_file_for("app", json.as_bytes());
    let hex = &right.as_str()[4..16];
    for bad in ["app-000000000000.json".to_owned(), format!("other-{hex}.json"), "x.json".to_owned()] {
        let r = c.put(format!("{}/v1/manifests/{bad}", n.url())).body(json.clone()).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let v: Value = r.json().await.unwrap();
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(&bad) && msg.contains(right.as_str()), "{msg}");
    }
    assert_eq!(origin.hits(), 0, "nothing fetched for a refused manifest");
    assert!(!n.store.exists(&Digest::of(&data)));
    assert_eq!(std::fs::read_dir(n.dir().join("refs")).unwrap().count(), 0);
    let r = c.put(format!("{}/v1/manifests/{right}", n.url())).body(json).send().await.unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn manifest_push_never_replaces_an_existing_ref_file_with_other_bytes() {
    let n = node();
    let c = reqwest::Client::new();
    let d = n.put(b"x");
    let json =
        serde_json::json!({"name": "app", "created_at": "2024-01-01T00:00:00Z", "objects": {"a": d.to_string()}})
            .to_string();
    let rf = cairn_testkit::ref_file_for("app", json.as_bytes());
    let url = format!("{}/v1/manifests/{rf}", n.url());
    assert_eq!(c.put(&url).body(json.clone()).send().await.unwrap().status(), 201);
    // The same bytes again: idempotent.
    assert_eq!(c.put(&url).body(json.clone()).send().await.unwrap().status(), 201);
    // A file the original wrote under that name with other bytes stays as it is.
    let p = n.dir().join("refs").join(rf.as_str());
    std::fs::remove_file(&p).unwrap();
    std::fs::write(&p, b"{\"name\":\"app\",\"objects\":{}}").unwrap();
    let r = c.put(&url).body(json.clone()).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("never replaced"), "{v}");
    assert_eq!(std::fs::read(&p).unwrap(), b"{\"name\":\"app\",\"objects\":{}}");
    // Reading is unchanged: a legacy file whose name does not match its bytes is served.
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"{\"name\":\"app\",\"objects\":{}}");
}

#[tokio::test]
async fn symlinks_planted_in_objects_and_refs_are_not_served() {
    let n = node();
    let t = tempfile::tempdir().unwrap();
    let secret = b"root:x:0:0:root:/root:/bin/sh\n";
    let target = t.path().join("passwd");
    std::fs::write(&target, secret).unwrap();
    let d = Digest::of(secret);
    std::os::unix::fs::symlink(&target, n.dir().join("objects").join(d.to_string())).unwrap();
    let json = br#"{"name":"x","created_at":"2999-01-01T00:00:00Z","objects":{}}"#;
    let mtarget = t.path().join("m.json");
    std::fs::write(&mtarget, json).unwrap();
    let rf = cairn_testkit::ref_file_for("x", json);
    std::os::unix::fs::symlink(&mtarget, n.dir().join("refs").join(rf.as_str())).unwrap();

    for path in [format!("/v1/blobs/{d}"), format!("/v1/manifests/{rf}")] {
        let r = reqwest::get(format!("{}{path}", n.url())).await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("root:x") && !body.contains("2999"), "{path}: {body}");
        assert!(!body.contains(&n.dir().display().to_string()), "{path}: {body}");
    }
    let r = reqwest::Client::new().head(format!("{}/v1/blobs/{d}", n.url())).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let (_, list) = get_json(&format!("{}/v1/manifests", n.url())).await;
    assert_eq!(list, serde_json::json!([]));
}

#[tokio::test]
async fn store_errors_do_not_reveal_the_data_dir_to_remote_callers() {
    let n = node();
    // A file where tmp/ should be: every put fails on a path inside the data dir.
    let tmp = n.dir().join("tmp");
    std::fs::remove_dir_all(&tmp).unwrap();
    std::fs::write(&tmp, b"not a dir").unwrap();
    let r = reqwest::Client::new()
        .put(format!("{}/v1/blobs/{}", n.url(), Digest::of(b"x")))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let body = r.text().await.unwrap();
    let dir = n.dir().display().to_string();
    assert!(body.contains("create temp file") && body.contains("<path on the node>"), "{body}");
    assert!(!body.contains(&dir) && !body.contains("/tmp/"), "{body}");
}

#[tokio::test]
async fn info_shows_the_data_dir_to_a_loopback_caller() {
    let n = node();
    let (_, v) = get_json(&format!("{}/v1/info", n.url())).await;
    assert_eq!(v["cas_base"], n.dir().display().to_string());
}
