//! The node under hostile load, as one process: idle sockets, stalled
//! uploads and a trickling peer at once must not keep a normal client from
//! being served, nor grow the node's memory without bound.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cairn_store::Digest;
use cairn_testkit::{HostilePeer, Hostility, NodeProcess, OriginMode, TestOrigin, blob, free_port};

const IDLE: usize = 1_000;
const STALLED_V1: usize = 300;
const STALLED_V2: usize = 300;
const BUDGET: Duration = Duration::from_secs(2);

/// Sends the head of a request declaring a large body, and one byte of it.
fn stalled_upload(addr: &str, head: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect stalled upload");
    s.write_all(head.as_bytes()).expect("send head");
    s.write_all(b"x").expect("send one byte");
    s
}

/// Awaits `f` (one normal client request) and checks it finished inside the budget.
async fn within_budget<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    let t0 = Instant::now();
    let out = f.await;
    let took = t0.elapsed();
    eprintln!("{what}: {took:?} under hostile load");
    assert!(took <= BUDGET, "{what} took {took:?} under hostile load (budget {BUDGET:?})");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_client_is_served_within_two_seconds_while_sockets_idle_uploads_stall_and_a_peer_trickles() {
    // ~2,000 sockets in this process, whatever the soft limit is.
    cairn_http::server::raise_nofile_limit().expect("raise RLIMIT_NOFILE");
    let dir = tempfile::tempdir().expect("tempdir");
    let origin_blob = blob(51, 4 << 20);
    let trickled = blob(52, 8 << 20);
    let origin = TestOrigin::start(std::slice::from_ref(&origin_blob), OriginMode::Good);
    let trickler = HostilePeer::start(Hostility::Trickle, std::slice::from_ref(&trickled), &[]);

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = dir.path().join("cairn.yaml");
    std::fs::write(
        &cfg,
        format!(
            "node_id: hostile-load\nlisten_addr: \"{addr}\"\ndata_dir: \"{}\"\npeers: [\"{}\"]\n\
             origins:\n  - url: \"{}\"\nheader_timeout: 60s\nbody_timeout: 60s\n",
            dir.path().join("data").display(),
            trickler.addr(),
            origin.template()
        ),
    )
    .expect("write config");
    let node = NodeProcess::serve(env!("CARGO_BIN_EXE_cairn"), &cfg, &addr);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    assert!(http.get(format!("http://{addr}/v1/health")).send().await.is_ok_and(|r| r.status().is_success()));
    let base = format!("http://{addr}");

    // What the normal client will read: a blob, a manifest, and an image on /v2.
    let local = blob(53, 1 << 20);
    let ld = Digest::of(&local);
    assert_eq!(
        http.put(format!("{base}/v1/blobs/{ld}")).body(local.clone()).send().await.expect("put blob").status(),
        201
    );
    let manifest = format!(
        "{{\n  \"name\": \"app\",\n  \"created_at\": \"2026-01-01T00:00:00Z\",\n  \"objects\": {{\n    \"bin/app\": \"{ld}\"\n  }}\n}}"
    );
    let ref_file = format!("app-{}.json", &Digest::of(manifest.as_bytes()).to_string()[..12]);
    let r =
        http.put(format!("{base}/v1/manifests/{ref_file}")).body(manifest.clone()).send().await.expect("put manifest");
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let cd = Digest::of(&config);
    for (d, b) in [(ld, &local), (cd, &config)] {
        let r = http.post(format!("{base}/v2/team/app/blobs/uploads/?digest={}", d.oci())).body(b.clone()).send().await;
        assert_eq!(r.expect("v2 blob").status(), 201);
    }
    let image = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
        cd.oci(),
        config.len(),
        ld.oci(),
        local.len()
    );
    let r = http
        .put(format!("{base}/v2/team/app/manifests/v1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(image.clone())
        .send()
        .await
        .expect("put image");
    assert_eq!(r.status(), 201);

    // The hostile load: a fetch held by the trickling peer, idle sockets, stalled uploads.
    let td = Digest::of(&trickled);
    let trickle_fetch = tokio::spawn(reqwest::Client::new().get(format!("{base}/v1/fetch/{td}")).send());
    // The trickling transfer is under way before the rest of the load starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while trickler.gets() == 0 {
        assert!(Instant::now() < deadline, "the node never asked the trickling peer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut held = Vec::with_capacity(IDLE + STALLED_V1 + STALLED_V2);
    for _ in 0..IDLE {
        held.push(TcpStream::connect(&addr).expect("idle connection"));
    }
    for i in 0..STALLED_V1 {
        let d = Digest::of(&blob(1_000 + i as u64, 64));
        let head = format!("PUT /v1/blobs/{d} HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n");
        held.push(stalled_upload(&addr, &head));
    }
    for i in 0..STALLED_V2 {
        let d = Digest::of(&blob(2_000 + i as u64, 64));
        let head = format!(
            "POST /v2/stall/s{i}/blobs/uploads/?digest={} HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n",
            d.oci()
        );
        held.push(stalled_upload(&addr, &head));
    }

    // A normal client is served within the budget, every answer checked.
    let got =
        within_budget("GET /v1/blobs", async { http.get(format!("{base}/v1/blobs/{ld}")).send().await?.bytes().await })
            .await;
    assert_eq!(Digest::of(&got.expect("blob GET")), ld);
    let got = within_budget("GET /v1/manifests", async {
        http.get(format!("{base}/v1/manifests/{ref_file}")).send().await?.text().await
    })
    .await;
    assert_eq!(got.expect("manifest GET"), manifest);
    let got = within_budget("/v2 pull", async {
        let m = http
            .get(format!("{base}/v2/team/app/manifests/v1"))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await?
            .text()
            .await?;
        let b = http.get(format!("{base}/v2/team/app/blobs/{}", ld.oci())).send().await?.bytes().await?;
        Ok::<_, reqwest::Error>((m, b))
    })
    .await;
    let (m, b) = got.expect("/v2 pull");
    assert_eq!(m, image);
    assert_eq!(Digest::of(&b), ld);
    let od = Digest::of(&origin_blob);
    let got =
        within_budget("pull-through", async { http.get(format!("{base}/v1/fetch/{od}")).send().await?.bytes().await })
            .await;
    assert_eq!(Digest::of(&got.expect("pull-through")), od);

    let rss = node.memory_mib("VmHWM");
    eprintln!("node peak RSS: {rss} MiB");
    assert!(rss < 256, "node peak RSS {rss} MiB under hostile load (limit 256 MiB)");
    assert!(!trickle_fetch.is_finished(), "the trickled fetch must still be running during the measurement");
    drop(held);
    drop(node);
    // The trickled fetch ends one way or another once the node is gone.
    let _ = trickle_fetch.await;
}
