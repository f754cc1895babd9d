//! Nodes with the durable tier (`storage: {backend: s3}`) on a real S3
//! server (moto): a push is in the bucket when it is answered, any node
//! sharing the bucket serves it with the pushing node stopped, and a bucket
//! that is down refuses pushes instead of half-storing them. Skipped when
//! moto (or, for the image test, skopeo) is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_store::Digest;
use cairn_testkit::registry::{oci_layout_image, skopeo, skopeo_policy, tool_available};
use cairn_testkit::s3::MotoServer;
use cairn_testkit::{NodeProcess, blob, free_port};

const PREFIX: &str = "cluster";

fn creds(dir: &Path, m: &MotoServer) -> PathBuf {
    let p = dir.join("s3-credentials");
    std::fs::write(
        &p,
        format!("[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n", m.access_key, m.secret_key),
    )
    .unwrap();
    p
}

fn storage(endpoint: &str, bucket: &str, creds: &Path) -> String {
    format!(
        "storage:\n  backend: s3\n  bucket: {bucket}\n  prefix: {PREFIX}\n  endpoint: \"{endpoint}\"\n  \
         credentials_file: \"{}\"\n  max_retries: 1\n  retry_timeout: 2s\n  connect_timeout: 1s\n",
        creds.display()
    )
}

/// `cairn serve` named `id` on `addr` with `peers` and the `storage` text.
fn serve(dir: &Path, id: &str, addr: &str, peers: &[&str], storage: &str) -> NodeProcess {
    let peer_list: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    let yaml = format!(
        "node_id: {id}\nlisten_addr: \"{addr}\"\ndata_dir: \"{}\"\npeers: [{}]\npeer_timeout: 1s\n\
         health_interval: 1s\n{storage}",
        dir.join(id).display(),
        peer_list.join(", ")
    );
    let cfg = dir.join(format!("{id}.yaml"));
    std::fs::write(&cfg, yaml).unwrap();
    NodeProcess::serve_logged(env!("CARGO_BIN_EXE_cairn"), &cfg, addr)
}

/// A blocking HTTP client for these tests: (status, body).
struct Http {
    rt: tokio::runtime::Runtime,
    c: reqwest::Client,
}

impl Http {
    fn new() -> Http {
        Http {
            rt: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
            c: reqwest::Client::new(),
        }
    }
    fn send(&self, r: reqwest::RequestBuilder) -> (u16, Vec<u8>) {
        self.rt.block_on(async {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.bytes().await.unwrap().to_vec())
        })
    }
    fn put(&self, url: &str, body: Vec<u8>) -> (u16, String) {
        let (s, b) = self.send(self.c.put(url).body(body));
        (s, String::from_utf8_lossy(&b).into_owned())
    }
    fn get(&self, url: &str) -> (u16, Vec<u8>) {
        self.send(self.c.get(url))
    }
    fn head(&self, url: &str) -> u16 {
        self.send(self.c.head(url)).0
    }
}

fn addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[test]
fn an_image_and_a_ref_pushed_to_node_a_are_pulled_from_node_b_with_a_stopped() {
    let Some(m) = MotoServer::start("an_image_and_a_ref_pushed_to_node_a_are_pulled_from_node_b_with_a_stopped") else {
        return;
    };
    let have_skopeo = tool_available("/usr/bin/skopeo");
    let dir = tempfile::tempdir().unwrap();
    let st = storage(&m.endpoint, &m.bucket, &creds(dir.path(), &m));
    let (a_addr, b_addr) = (addr(), addr());
    let mut a = serve(dir.path(), "a", &a_addr, &[&b_addr], &st);
    let b = serve(dir.path(), "b", &b_addr, &[&a_addr], &st);
    let http = Http::new();

    // /v1: a blob larger than a multipart part, and a ref listing it.
    let data = blob(7, 20 << 20);
    let d = Digest::of(&data);
    let (status, text) = http.put(&format!("http://{a_addr}/v1/blobs/{d}"), data.clone());
    assert_eq!(status, 201, "{text}");
    // Durable when answered: an independent client reads it from the bucket.
    assert_eq!(m.sha256_of(&format!("{PREFIX}/objects/{d}")), d.to_string());
    let man = serde_json::json!({"name": "rootfs", "created_at": "2026-11-30T00:00:00Z", "objects": {"disk.img": d.to_string()}})
        .to_string()
        .into_bytes();
    let rf = format!("rootfs-{}.json", &Digest::of(&man).to_string()[..12]);
    let (status, text) = http.put(&format!("http://{a_addr}/v1/manifests/{rf}"), man);
    assert_eq!(status, 201, "{text}");

    // /v2: an image pushed by skopeo.
    let pol = skopeo_policy(dir.path());
    let img = have_skopeo.then(|| {
        let layout = dir.path().join("layout");
        let img = oci_layout_image(&layout, "v1", &[("etc/motd", blob(8, 3 << 20)), ("bin/tool", blob(9, 100))]);
        let src = format!("oci:{}:v1", layout.display());
        skopeo(&pol, &["copy", "--dest-tls-verify=false", &src, &format!("docker://{a_addr}/team/app:v1")]);
        for l in &img.layers {
            assert_eq!(m.sha256_of(&format!("{PREFIX}/objects/{l}")), l.to_string(), "layer {l} is in the bucket");
        }
        img
    });

    let metrics = String::from_utf8(http.get(&format!("http://{a_addr}/metrics")).1).unwrap();
    let uploads = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cairn_bucket_uploads_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(uploads.is_some_and(|n| n >= 2), "A counts its writes to the bucket: {uploads:?}");
    assert!(
        metrics.lines().any(|l| l.starts_with("cairn_bucket_requests_total ") && !l.ends_with(" 0")),
        "A counts its requests to the bucket"
    );
    if let Err(e) = cairn_testkit::promtool_check(&metrics) {
        panic!("promtool: {e}");
    }
    a.stop_and_log();
    // B never held any of it: the refs come from the bucket, the bytes too.
    assert!(!dir.path().join("b/objects").join(d.to_string()).exists());
    let (status, got) = http.get(&format!("http://{b_addr}/v1/fetch/{d}"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&got));
    assert!(Digest::of(&got) == d, "B serves the right bytes");
    let listed = String::from_utf8(http.get(&format!("http://{b_addr}/v1/manifests")).1).unwrap();
    assert!(listed.contains("rootfs"), "B lists the ref A saved: {listed}");
    if let Some(img) = img {
        let out = dir.path().join("pulled");
        let dest = format!("oci:{}:v1", out.display());
        skopeo(&pol, &["copy", "--src-tls-verify=false", &format!("docker://{b_addr}/team/app:v1"), &dest]);
        let index = std::fs::read_to_string(out.join("index.json")).unwrap();
        assert!(index.contains(&img.manifest.oci()), "B served the manifest A took: {index}");
        for l in &img.layers {
            let bytes = std::fs::read(out.join("blobs/sha256").join(l.to_string())).unwrap();
            assert!(Digest::of(&bytes) == *l, "layer {l} pulled whole");
        }
    }
    let metrics = String::from_utf8(http.get(&format!("http://{b_addr}/metrics")).1).unwrap();
    assert!(
        metrics.lines().any(|l| l.contains("source=\"bucket\"") && !l.starts_with('#') && !l.ends_with(" 0")),
        "B's metrics count transfers from the bucket"
    );
    drop(b);
}

#[test]
fn a_node_whose_bucket_is_down_refuses_pushes_and_stores_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let cred = dir.path().join("creds");
    std::fs::write(&cred, "[default]\naws_access_key_id = x\naws_secret_access_key = y\n").unwrap();
    let dead = format!("http://{}", cairn_testkit::dead_addr());
    let a_addr = addr();
    let a = serve(dir.path(), "a", &a_addr, &[], &storage(&dead, "cairn-test", &cred));
    let http = Http::new();
    // Small: sent whole before the node refuses (it answers before reading a body it cannot store).
    let data = blob(10, 1000);
    let d = Digest::of(&data);
    let (status, text) = http.put(&format!("http://{a_addr}/v1/blobs/{d}"), data);
    assert!(status >= 500, "an unacknowledged push is an error: {status} {text}");
    assert!(text.contains(&dead), "the error names the bucket: {text}");
    assert_eq!(http.head(&format!("http://{a_addr}/v1/blobs/{d}")), 404, "nothing is served");
    assert!(!dir.path().join("a/objects").join(d.to_string()).exists());
    drop(a);
}

#[test]
fn cairn_put_with_the_tier_in_cairn_config_is_durable_in_the_bucket() {
    let Some(m) = MotoServer::start("cairn_put_with_the_tier_in_cairn_config_is_durable_in_the_bucket") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cairn.yaml");
    std::fs::write(&cfg, storage(&m.endpoint, &m.bucket, &creds(dir.path(), &m))).unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, blob(11, 9 << 20)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .env("CAIRN_CONFIG", &cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("put")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d = String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned();
    assert_eq!(m.sha256_of(&format!("{PREFIX}/objects/{d}")), d);
    // A bad storage section stops the command before it writes anything.
    std::fs::write(&cfg, "storage:\n  backend: s3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .env("CAIRN_CONFIG", &cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data2"))
        .arg("put")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("storage.bucket"));
}

#[test]
fn an_origin_blob_is_copied_to_the_bucket_so_a_later_node_never_asks_the_origin_again() {
    let Some(m) =
        MotoServer::start("an_origin_blob_is_copied_to_the_bucket_so_a_later_node_never_asks_the_origin_again")
    else {
        return;
    };
    let data = blob(12, 12 << 20);
    let d = Digest::of(&data);
    let origin = cairn_testkit::TestOrigin::start(&[data], cairn_testkit::OriginMode::Good);
    let dir = tempfile::tempdir().unwrap();
    let st = storage(&m.endpoint, &m.bucket, &creds(dir.path(), &m));
    let (a_addr, b_addr) = (addr(), addr());
    let with_origin = format!("{st}origins:\n  - url: \"{}\"\n", origin.template());
    let mut a = serve(dir.path(), "a", &a_addr, &[], &with_origin);
    let http = Http::new();
    let (status, got) = http.get(&format!("http://{a_addr}/v1/fetch/{d}"));
    assert_eq!((status, Digest::of(&got) == d), (200, true));
    assert_eq!(origin.hits(), 1);
    let key = format!("{PREFIX}/objects/{d}");
    cairn_testkit::wait_for(std::time::Duration::from_secs(30), "the background copy to the bucket", || {
        m.keys().contains(&key)
    });
    assert_eq!(m.sha256_of(&key), d.to_string());
    a.stop_and_log();
    // B has no origin and no peer: only the bucket has the blob now.
    let b = serve(dir.path(), "b", &b_addr, &[], &st);
    let (status, got) = http.get(&format!("http://{b_addr}/v1/fetch/{d}"));
    assert_eq!((status, Digest::of(&got) == d), (200, true));
    assert_eq!(origin.hits(), 1, "the origin was asked once for the whole cluster");
    drop(b);
}

#[test]
fn gc_bucket_deletes_only_objects_no_ref_in_the_bucket_references() {
    let Some(m) = MotoServer::start("gc_bucket_deletes_only_objects_no_ref_in_the_bucket_references") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cairn.yaml");
    std::fs::write(&cfg, storage(&m.endpoint, &m.bucket, &creds(dir.path(), &m))).unwrap();
    let cairn = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .env("CAIRN_CONFIG", &cfg)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "cairn {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("kept"), b"referenced by the snapshot").unwrap();
    cairn(&["snapshot", tree.to_str().unwrap(), "--name", "kept"]);
    let loose = dir.path().join("loose");
    std::fs::write(&loose, b"put, never referenced").unwrap();
    let loose_hex = cairn(&["put", loose.to_str().unwrap()]).split_whitespace().next().unwrap().to_owned();
    let kept_hex = Digest::of(b"referenced by the snapshot").to_string();
    let objects = |m: &MotoServer| -> Vec<String> {
        m.keys().into_iter().filter_map(|k| k.strip_prefix(&format!("{PREFIX}/objects/")).map(str::to_owned)).collect()
    };
    assert!(objects(&m).contains(&loose_hex) && objects(&m).contains(&kept_hex));
    // Within the grace nothing goes.
    cairn(&["gc", "--bucket"]);
    assert!(objects(&m).contains(&loose_hex), "a young object is kept");
    let report = cairn(&["gc", "--bucket", "--grace", "0s", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(v["deleted"].as_array().map(Vec::len), Some(1), "{v}");
    let left = objects(&m);
    assert!(left.contains(&kept_hex), "the referenced object stays: {left:?}");
    assert!(!left.contains(&loose_hex), "the unreferenced one went: {left:?}");
    // The local cache still has its copy: gc --bucket touches only the bucket.
    assert!(dir.path().join("data/objects").join(&loose_hex).exists());
}

/// A counter from a node's `/metrics`, 0 when absent.
fn counter(http: &Http, addr: &str, name: &str) -> u64 {
    let text = String::from_utf8(http.get(&format!("http://{addr}/metrics")).1).unwrap();
    text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[test]
fn a_throttling_bucket_slows_pushes_but_they_land_whole_and_the_metrics_say_so() {
    let Some(m) = MotoServer::start("a_throttling_bucket_slows_pushes_but_they_land_whole_and_the_metrics_say_so")
    else {
        return;
    };
    let proxy = cairn_testkit::s3fault::FaultProxy::start(&m.endpoint);
    let dir = tempfile::tempdir().unwrap();
    // Retries enough to ride out the throttling below.
    let st = storage(&proxy.endpoint, &m.bucket, &creds(dir.path(), &m))
        .replace("max_retries: 1", "max_retries: 6")
        .replace("retry_timeout: 2s", "retry_timeout: 30s");
    let a_addr = addr();
    let a = serve(dir.path(), "a", &a_addr, &[], &st);
    let http = Http::new();
    // Every third request answered 503 SlowDown: a multipart push meets several.
    proxy.set(cairn_testkit::s3fault::Fault::SlowDownEvery(3));
    let data = blob(13, 20 << 20);
    let d = Digest::of(&data);
    let (status, text) = http.put(&format!("http://{a_addr}/v1/blobs/{d}"), data);
    assert_eq!(status, 201, "{text}");
    assert!(proxy.injected() >= 1, "the proxy throttled some requests");
    assert_eq!(m.sha256_of(&format!("{PREFIX}/objects/{d}")), d.to_string(), "the blob landed whole");
    assert!(counter(&http, &a_addr, "cairn_bucket_throttled_total") >= 1, "throttling is in the metrics");
    // Now the bucket refuses everything: a push fails, nothing half-written appears.
    proxy.set(cairn_testkit::s3fault::Fault::Forbidden);
    // Small, so it is sent whole before the node refuses it.
    let other = blob(14, 1000);
    let od = Digest::of(&other);
    let (status, text) = http.put(&format!("http://{a_addr}/v1/blobs/{od}"), other);
    assert!(status >= 500, "{status} {text}");
    assert!(text.contains("credentials"), "a 403 says to check the credentials: {text}");
    proxy.set(cairn_testkit::s3fault::Fault::Forward);
    assert!(!m.keys().iter().any(|k| k.ends_with(&od.to_string())), "no object for the refused push");
    assert_eq!(http.head(&format!("http://{a_addr}/v1/blobs/{od}")), 404);
    assert!(counter(&http, &a_addr, "cairn_bucket_upload_errors_total") >= 1);
    drop(a);
}
