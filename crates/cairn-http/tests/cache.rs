//! The bounded cache through a running node: pulls through a capped node
//! evict least recently used blobs, keep pinned and recently read ones, and
//! a blob that cannot fit is a clean 507.

mod common;

use std::time::Duration;

use cairn_store::cache::Watermarks;
use cairn_store::{Digest, Manifest, RefName};
use cairn_testkit::{NodeSpec, OriginMode, TestNode, TestOrigin, TinyDisk, blob};

const MIB: usize = 1 << 20;

/// Bytes of the files in `objects/`: what the blobs take, whatever the cache counts.
fn objects_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir.join("objects")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

async fn get(url: &str) -> (u16, Vec<u8>) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.bytes().await.unwrap().to_vec())
}

fn capped(origin: &TestOrigin, max_bytes: u64) -> NodeSpec {
    NodeSpec {
        origins: vec![origin.template()],
        cache: Some(Watermarks { max_bytes, min_free: 0 }),
        // The tmpfs is smaller than the default reserve.
        tune: Some(|c| c.min_free_space = 0),
        ..Default::default()
    }
}

#[tokio::test]
async fn pulling_four_times_the_cap_through_a_capped_node_evicts_lru_and_keeps_pinned_and_recent() {
    let Some((_disk, dir)) = TinyDisk::mount("64m") else { return };
    let cap = 8 * MIB as u64;
    let blobs: Vec<Vec<u8>> = (0..32).map(|i| blob(1000 + i, MIB)).collect();
    let pinned_data: Vec<Vec<u8>> = (0..2).map(|i| blob(2000 + i, MIB)).collect();
    let huge = blob(3000, 9 * MIB);
    let all: Vec<Vec<u8>> = blobs.iter().chain(&pinned_data).chain([&huge]).cloned().collect();
    let origin = TestOrigin::start(&all, OriginMode::Good);
    let node = TestNode::start_on(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), capped(&origin, cap), dir);
    let fetch = |d: &Digest| format!("{}/v1/fetch/{d}", node.url());

    // Pinned: fetched like the rest, then referenced by a manifest in refs/.
    let pinned: Vec<Digest> = pinned_data.iter().map(|b| Digest::of(b)).collect();
    let mut m = Manifest::new(&RefName::parse("pinned").unwrap());
    for (i, (d, b)) in pinned.iter().zip(&pinned_data).enumerate() {
        assert_eq!(get(&fetch(d)).await, (200, b.clone()));
        assert!(common::cached(&node.store, node.dir(), d).await);
        m.objects.insert(format!("p{i}"), *d);
    }
    node.store.save_manifest(&m).unwrap();

    let digests: Vec<Digest> = blobs.iter().map(|b| Digest::of(b)).collect();
    let hot = digests[0];
    for (d, b) in digests.iter().zip(&blobs) {
        let (status, body) = get(&fetch(d)).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert!(Digest::of(&body) == *d && body == *b, "pull of {d} did not verify");
        // The response ends once the digest matched; the link into objects/ follows.
        assert!(common::cached(&node.store, node.dir(), d).await, "{d} was not stored");
        // Read the hot blob after every pull: it stays the most recently used.
        let (status, body) = get(&format!("{}/v1/blobs/{hot}", node.url())).await;
        assert!(status == 200 && Digest::of(&body) == hot, "the recently read blob {hot} was evicted");
        let on_disk = objects_bytes(node.dir());
        assert!(on_disk <= cap + MIB as u64, "{on_disk} bytes on disk, past the cap {cap} by more than one blob");
        assert!(node.store.cache_used().unwrap() <= cap + MIB as u64);
    }
    assert!(pinned.iter().all(|d| node.store.exists(d)), "a pinned blob was evicted");
    let last = digests[digests.len() - 1];
    assert!(node.store.exists(&last) && node.store.exists(&hot), "the most recently used blobs survive");
    assert!(!node.store.exists(&digests[1]), "the least recently used blob was kept while 4x the cap went through");
    let (evicted, bytes) = node.store.cache_evicted().unwrap();
    assert!(evicted >= 20 && bytes >= 20 * MIB as u64, "{evicted} blobs, {bytes} bytes evicted");

    // Larger than the cap: refused before any write, nothing half-written.
    let hits = origin.hits();
    let (status, body) = get(&fetch(&Digest::of(&huge))).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 507, "{text}");
    assert!(text.contains("cache is full") && text.contains("cache.max_bytes"), "{text}");
    assert_eq!(origin.hits(), hits + 1, "the origin is asked once, not retried");
    assert_eq!(common::tmp_entries(node.dir()), 0, "a temp file was left behind");
    assert!(!node.store.exists(&Digest::of(&huge)));

    // The node keeps serving, and everything it holds is whole.
    assert_eq!(get(&fetch(&digests[1])).await, (200, blobs[1].clone()));
    assert!(common::cached(&node.store, node.dir(), &digests[1]).await);
    let mut kept = 0;
    for d in node.store.list().unwrap() {
        let d = d.unwrap();
        assert!(node.store.verify_blob(&d).unwrap(), "{d} is corrupt");
        kept += 1;
    }
    assert!(kept >= 4, "{kept} blobs kept");
}

#[tokio::test]
async fn a_commit_past_the_cap_wakes_the_evictor_which_brings_the_store_back_under_it() {
    let origin = TestOrigin::start(&[], OriginMode::Good);
    let cap = 4 * MIB as u64;
    let node = TestNode::start(capped(&origin, cap));
    // Straight into the store, as the CLI writes: nothing makes room first.
    let put: Vec<Digest> = (0..6).map(|i| node.put(&blob(4000 + i, MIB))).collect();
    let store = node.store.clone();
    let under = common::wait_until(Duration::from_secs(5), || store.cache_used().unwrap() <= cap).await;
    assert!(under, "still {} bytes after 5 s over a cap of {cap}", node.store.cache_used().unwrap());
    assert!(!node.store.exists(&put[0]) && node.store.exists(&put[5]), "the oldest put goes first");
    let text = reqwest::get(format!("{}/metrics", node.url())).await.unwrap().text().await.unwrap();
    let value = |name: &str| -> f64 {
        text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok()).unwrap_or(-1.0)
    };
    assert!(value("cairn_evictions_total") >= 2.0, "{text}");
    assert_eq!(value("cairn_cache_max_bytes"), cap as f64);
    assert!(value("cairn_cache_used_bytes") <= cap as f64);
    assert_eq!(value("cairn_cache_pinned_over_cap"), 0.0);
    let status: serde_json::Value =
        reqwest::get(format!("{}/v1/status", node.url())).await.unwrap().json().await.unwrap();
    assert_eq!(status["cache_max_bytes"], cap);
    assert!(status["cache_used_bytes"].as_u64().is_some_and(|u| u <= cap), "{status}");
}

#[tokio::test]
async fn a_push_that_cannot_fit_under_the_cap_is_507_on_v1_and_v2_and_nothing_is_stored() {
    let origin = TestOrigin::start(&[], OriginMode::Good);
    let node = TestNode::start(NodeSpec { v2: true, ..capped(&origin, MIB as u64) });
    let pinned = node.put(&blob(5000, 900_000));
    let mut m = Manifest::new(&RefName::parse("pinned").unwrap());
    m.objects.insert("p".into(), pinned);
    node.store.save_manifest(&m).unwrap();
    let client = reqwest::Client::new();
    let data = blob(5001, 500_000);
    let d = Digest::of(&data);
    let full = |what: &str, status: u16, body: &str| {
        assert_eq!(status, 507, "{what}: {body}");
        assert!(body.contains("cache is full"), "{what}: {body}");
    };

    let r = client.put(format!("{}/v1/blobs/{d}", node.url())).body(data.clone()).send().await.unwrap();
    full("PUT /v1/blobs", r.status().as_u16(), &r.text().await.unwrap());

    let r = client
        .post(format!("{}/v2/app/blobs/uploads/?digest={}", node.url(), d.oci()))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    full("monolithic /v2 push", r.status().as_u16(), &r.text().await.unwrap());

    let r = client.post(format!("{}/v2/app/blobs/uploads/", node.url())).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let url = if loc.starts_with("http") { loc } else { format!("{}{loc}", node.url()) };
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = client.put(format!("{url}{sep}digest={}", d.oci())).body(data.clone()).send().await.unwrap();
    full("/v2 session finish", r.status().as_u16(), &r.text().await.unwrap());

    assert!(!node.store.exists(&d) && node.store.exists(&pinned));
    assert_eq!(common::tmp_entries(node.dir()), 0, "a temp file was left behind");
    // A blob that fits is still taken.
    let small = blob(5002, 50_000);
    let r = client.put(format!("{}/v1/blobs/{}", node.url(), Digest::of(&small))).body(small).send().await.unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn pulls_onto_a_small_disk_evict_to_keep_min_free_and_all_succeed() {
    let Some((_disk, dir)) = TinyDisk::mount("16m") else { return };
    let min_free = 8 * MIB as u64;
    let blobs: Vec<Vec<u8>> = (0..24).map(|i| blob(6000 + i, MIB)).collect();
    let origin = TestOrigin::start(&blobs, OriginMode::Good);
    let mut spec = capped(&origin, u64::MAX);
    spec.cache = Some(Watermarks { max_bytes: u64::MAX, min_free });
    let node = TestNode::start_on(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), spec, dir);
    for b in &blobs {
        let d = Digest::of(b);
        let (status, body) = get(&format!("{}/v1/fetch/{d}", node.url())).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert!(body == *b, "pull of {d} did not verify");
        assert!(common::cached(&node.store, node.dir(), &d).await, "{d} was not stored");
        let free = node.store.free_space().unwrap().unwrap();
        assert!(free + MIB as u64 >= min_free, "{free} bytes free, under min_free {min_free} by more than a blob");
    }
    let (evicted, _) = node.store.cache_evicted().unwrap();
    assert!(evicted >= 12, "24 MiB through a 16 MiB disk keeping 8 MiB free: only {evicted} blobs evicted");
}
