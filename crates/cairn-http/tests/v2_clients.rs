//! Real clients against the /v2 API: skopeo (copy both ways, inspect,
//! delete) and ORAS (artifacts and referrers). They fail instead of skipping
//! when `CAIRN_REQUIRE_TOOLS=1` and the tool is missing.

mod v2common;

use std::path::Path;
use std::process::Command;

use cairn_store::Digest;
use cairn_testkit::registry::{gzip_stored, skopeo, skopeo_policy};
use serde_json::{Value, json};

/// Seeded bytes (xorshift64*), so big fixtures are generated, never committed.
fn seeded(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write_blob(layout: &Path, bytes: &[u8]) -> Digest {
    let d = Digest::of(bytes);
    std::fs::write(layout.join("blobs/sha256").join(d.to_string()), bytes).unwrap();
    d
}

/// Writes an OCI image layout holding one image tagged `tag`; returns its manifest digest and layer digests.
fn oci_layout(dir: &Path, tag: &str, layers: &[(Vec<u8>, &str, Digest)]) -> (Digest, Vec<Digest>) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let diff_ids: Vec<String> = layers.iter().map(|(_, _, diff)| diff.oci()).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let cfg = write_blob(dir, &config);
    let mut descs = Vec::new();
    let mut digests = Vec::new();
    for (bytes, mt, _) in layers {
        let d = write_blob(dir, bytes);
        digests.push(d);
        descs.push(json!({"mediaType": mt, "digest": d.oci(), "size": bytes.len()}));
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg.oci(), "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let m = write_blob(dir, &manifest);
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m.oci(), "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    (m, digests)
}

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd).arg(arg).output().is_ok_and(|o| o.status.success())
}

fn layout_manifest(dir: &Path) -> Digest {
    let idx: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    Digest::parse(idx["manifests"][0]["digest"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_a_multi_layer_image_in_and_out_unchanged_then_deletes_it() {
    if !have("skopeo", "--version") && v2common::tool_missing("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = v2common::start(&tmp.path().join("data")).await;
    let pol = skopeo_policy(tmp.path());
    let big = seeded(64 << 20, 42);
    let small = seeded(300_000, 7);
    let layers = [
        (gzip_stored(&big), "application/vnd.oci.image.layer.v1.tar+gzip", Digest::of(&big)),
        (gzip_stored(&small), "application/vnd.oci.image.layer.v1.tar+gzip", Digest::of(&small)),
    ];
    let src = tmp.path().join("src");
    let (manifest, layer_digests) = oci_layout(&src, "v1", &layers);
    let host = s.addr.to_string();
    let dest = format!("docker://{host}/test/multi:v1");
    let (src_ref, pol2) = (format!("oci:{}:v1", src.display()), pol.clone());
    let dest2 = dest.clone();
    tokio::task::spawn_blocking(move || skopeo(&pol2, &["copy", "--dest-tls-verify=false", &src_ref, &dest2]))
        .await
        .unwrap();
    for d in &layer_digests {
        assert!(s.registry.store().exists(d), "layer {d} stored under its own digest");
    }

    let (pol2, dest2) = (pol.clone(), dest.clone());
    let inspect =
        tokio::task::spawn_blocking(move || skopeo(&pol2, &["inspect", "--tls-verify=false", &dest2])).await.unwrap();
    let v: Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Digest"], manifest.oci());
    assert_eq!(v["Layers"], json!(layer_digests.iter().map(|d| d.oci()).collect::<Vec<_>>()));

    let back = tmp.path().join("back");
    let (pol2, dest2, back_ref) = (pol.clone(), dest.clone(), format!("oci:{}:v1", back.display()));
    tokio::task::spawn_blocking(move || skopeo(&pol2, &["copy", "--src-tls-verify=false", &dest2, &back_ref]))
        .await
        .unwrap();
    assert_eq!(layout_manifest(&back), manifest, "manifest digest identical after the round trip");
    for d in &layer_digests {
        let bytes = std::fs::read(back.join("blobs/sha256").join(d.to_string())).unwrap();
        assert_eq!(Digest::of(&bytes), *d);
    }

    let (pol2, by_digest) = (pol.clone(), format!("docker://{host}/test/multi@{}", manifest.oci()));
    tokio::task::spawn_blocking(move || skopeo(&pol2, &["delete", "--tls-verify=false", &by_digest])).await.unwrap();
    let r = reqwest::get(format!("{}/v2/test/multi/manifests/v1", s.base)).await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_push_of_an_uncompressed_layer_round_trips() {
    if !have("skopeo", "--version") && v2common::tool_missing("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = v2common::start(&tmp.path().join("data")).await;
    let pol = skopeo_policy(tmp.path());
    let raw = seeded(2 << 20, 9);
    let src = tmp.path().join("src");
    oci_layout(&src, "raw", &[(raw.clone(), "application/vnd.oci.image.layer.v1.tar", Digest::of(&raw))]);
    let dest = format!("docker://{}/test/raw:v1", s.addr);
    let back = tmp.path().join("back");
    let (src_ref, back_ref) = (format!("oci:{}:raw", src.display()), format!("oci:{}:v1", back.display()));
    let pushed = tokio::task::spawn_blocking(move || {
        // skopeo compresses on push (length unknown up front): a streamed upload.
        skopeo(&pol, &["copy", "--dest-tls-verify=false", &src_ref, &dest]);
        let v: Value = serde_json::from_str(&skopeo(&pol, &["inspect", "--tls-verify=false", &dest])).unwrap();
        skopeo(&pol, &["copy", "--src-tls-verify=false", &dest, &back_ref]);
        v
    })
    .await
    .unwrap();
    assert_eq!(layout_manifest(&back).oci(), pushed["Digest"].as_str().unwrap());
    let layer = Digest::parse(pushed["Layers"][0].as_str().unwrap()).unwrap();
    let got = std::fs::read(back.join("blobs/sha256").join(layer.to_string())).unwrap();
    assert_eq!(Digest::of(&got), layer);
    if have("gzip", "--version") {
        let mut child = Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &got));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.stdout == raw, "the pulled layer decompresses to the original bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oras_pushes_and_pulls_artifacts_and_finds_referrers() {
    let has_oras = Command::new("python3").args(["-c", "import oras"]).output().is_ok_and(|o| o.status.success());
    if !has_oras && v2common::tool_missing("python3 with the oras package (pip install oras)") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = v2common::start(&tmp.path().join("data")).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oras_roundtrip.py");
    let (host, work) = (s.addr.to_string(), tmp.path().to_owned());
    let out = tokio::task::spawn_blocking(move || Command::new("python3").arg(script).arg(host).arg(work).output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "oras script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.registry.catalog().unwrap().contains(&"artifacts/multi".to_owned()));
}
