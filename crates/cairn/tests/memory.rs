//! Memory of a node process under many short downloads: buffers are shared
//! and reused, so what the node holds afterwards does not grow with the
//! number of downloads it served.

use cairn_store::Digest;
use cairn_testkit::{NodeProcess, blob, free_port, health_ok};

const DOWNLOADERS: usize = 8;
const DOWNLOADS_EACH: usize = 100;
const BLOBS: usize = 40;
const LIMIT_MIB: u64 = 192;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_short_downloads_leave_the_node_holding_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("cairn.yaml");
    let config =
        format!("node_id: mem\nlisten_addr: \"{addr}\"\ndata_dir: \"{}\"\n", dir.path().join("data").display());
    std::fs::write(&cfg, config).expect("write config");
    let node = NodeProcess::serve(env!("CARGO_BIN_EXE_cairn"), &cfg, &addr);
    assert!(health_ok(&addr), "a fresh node is healthy");
    // A connection per download, as many short-lived clients do.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    // Blobs of many sizes up to two read chunks, as a registry serves.
    let mut blobs = Vec::new();
    for i in 0..BLOBS {
        let data = blob(600 + i as u64, 4096 + i * ((2 << 20) / BLOBS));
        let d = Digest::of(&data);
        let url = format!("http://{addr}/v1/blobs/{d}");
        assert_eq!(http.put(&url).body(data).send().await.expect("put").status(), 201);
        blobs.push((url, d));
    }
    let blobs = std::sync::Arc::new(blobs);
    let tasks = (0..DOWNLOADERS).map(|t| {
        let (http, blobs) = (http.clone(), std::sync::Arc::clone(&blobs));
        tokio::spawn(async move {
            for i in 0..DOWNLOADS_EACH {
                let (url, d) = &blobs[(i * 7 + t * 13) % blobs.len()];
                let b = http.get(url).send().await?.bytes().await?;
                assert_eq!(Digest::of(&b), *d);
            }
            Ok::<_, reqwest::Error>(())
        })
    });
    for t in futures_util::future::join_all(tasks).await {
        t.expect("download task").expect("download");
    }
    let rss = node.memory_mib("VmRSS");
    eprintln!("node RSS after {} downloads: {rss} MiB", DOWNLOADERS * DOWNLOADS_EACH);
    assert!(rss < LIMIT_MIB, "node holds {rss} MiB after many short downloads (limit {LIMIT_MIB} MiB)");
}
