//! Stalled upload bodies hold no thread: hundreds of clients that send a
//! byte of their body and stop cannot keep reads from being answered, and
//! after `body_timeout` their temp data is gone.

use std::time::{Duration, Instant};

use cairn_store::Digest;
use cairn_testkit::{NodeSpec, TestNode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// More than tokio's default blocking pool (512 threads).
const STALLED_V1: usize = 300;
const STALLED_V2: usize = 300;
const BODY_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends `head` and the first byte of a body it declares longer, then stalls.
async fn stall(addr: &str, head: String) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(b"x").await.unwrap();
    s
}

async fn get_within(url: &str, limit: Duration) -> (u16, Vec<u8>) {
    let c = reqwest::Client::new();
    let r = tokio::time::timeout(limit, async {
        let r = c.get(url).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.bytes().await.unwrap().to_vec())
    })
    .await;
    r.unwrap_or_else(|_| panic!("GET {url} took more than {limit:?} while uploads stall"))
}

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Polls `cond` until it holds or `limit` passes.
async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upload_bodies_do_not_take_threads_from_reads() {
    // Each stalled upload costs a few descriptors (client socket, server socket, temp file).
    let _ = cairn_http::server::raise_nofile_limit();
    // Every stalled session comes from this one client address: room for them all.
    let registry = cairn_store::oci::RegistryOptions {
        max_upload_sessions: 2 * STALLED_V2,
        max_upload_sessions_per_client: 2 * STALLED_V2,
        ..Default::default()
    };
    let node = TestNode::start(NodeSpec { v2: true, body_timeout: BODY_TIMEOUT, registry, ..Default::default() });
    let addr = node.addr();
    let blob = node.put(b"a blob to read while uploads stall");
    let json =
        format!("{{\"name\": \"app\", \"created_at\": \"2024-05-01T10:00:00Z\", \"objects\": {{\"f\": \"{blob}\"}}}}");
    let rf = format!("app-{}.json", &Digest::of(json.as_bytes()).hex()[..12]);
    std::fs::write(node.dir().join("refs").join(&rf), &json).unwrap();
    let c = reqwest::Client::new();
    let mut sessions = Vec::new();
    for _ in 0..STALLED_V2 {
        let r = c.post(format!("{}/v2/stall/blobs/uploads/", node.url())).send().await.unwrap();
        assert_eq!(r.status(), 202);
        sessions.push(r.headers()["location"].to_str().unwrap().to_owned());
    }

    let mut stalled = Vec::new();
    for i in 0..STALLED_V1 {
        let d = Digest::of(format!("never sent {i}").as_bytes());
        stalled
            .push(stall(&addr, format!("PUT /v1/blobs/{d} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")).await);
    }
    for loc in &sessions {
        let head = format!("PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Range: 0-999\r\nContent-Length: 1000\r\n\r\n");
        stalled.push(stall(&addr, head).await);
    }
    wait_for("every stalled upload to reach its handler", Duration::from_secs(10), || {
        node.counters.get("PUT /v1/blobs") == STALLED_V1 && node.counters.get("PATCH /v2/stall") == STALLED_V2
    })
    .await;

    let limit = Duration::from_secs(2);
    let (status, body) = get_within(&format!("{}/v1/blobs/{blob}", node.url()), limit).await;
    assert_eq!((status, body.as_slice()), (200, &b"a blob to read while uploads stall"[..]));
    let (status, body) = get_within(&format!("{}/v1/manifests/{rf}", node.url()), limit).await;
    assert_eq!((status, body), (200, json.into_bytes()));
    let (status, body) = get_within(&format!("{}/v2/_catalog", node.url()), limit).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, body) = get_within(&format!("{}/v1/health", node.url()), limit).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // After body_timeout every stalled upload is answered and its bytes are gone.
    let tmp = node.dir().join("tmp");
    wait_for("the stalled /v1 uploads' temp files to be removed", BODY_TIMEOUT * 4, || files_in(&tmp) == 0).await;
    let n = stalled.len();
    for i in [0, 1, 2, n - 3, n - 2, n - 1] {
        let s = &mut stalled[i];
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(BODY_TIMEOUT * 2, s.read(&mut answer)).await.expect("an answer").unwrap_or(0);
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("no request body data"), "{answer}");
    }
    let uploads = node.dir().join("registry/uploads");
    wait_for("the stalled /v2 chunks to be rolled back", BODY_TIMEOUT * 2, || {
        sessions.iter().all(|loc| {
            let id = loc.rsplit('/').next().unwrap();
            std::fs::metadata(uploads.join(id).join("data")).is_ok_and(|m| m.len() == 0)
        })
    })
    .await;
}

#[tokio::test]
async fn health_answers_503_degraded_when_the_store_cannot_answer() {
    let node = TestNode::start(NodeSpec::default());
    let r = reqwest::get(format!("{}/v1/health", node.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    std::fs::remove_dir_all(node.dir().join("objects")).unwrap();
    let r = reqwest::get(format!("{}/v1/health", node.url())).await.unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "degraded");
    assert!(v["reason"].as_str().unwrap().contains("objects directory"), "{v}");
}
