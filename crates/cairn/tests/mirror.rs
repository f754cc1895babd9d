//! User story: `cairn serve` configured with a registry origin is a
//! pull-through mirror on its registry listener.

use cairn_testkit::registry::{OCI_MANIFEST, RegistryAuth, TestRegistry, push_image};
use cairn_testkit::{NodeProcess, blob};

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_a_registry_origin_pulls_an_image_through_its_registry_listener() {
    let Some(reg) = TestRegistry::start(RegistryAuth::None) else { return };
    let layers = vec![blob(60, 1 << 20)];
    let img = push_image(&reg.url(), None, "team/app", "v1", &layers).await;

    let dir = tempfile::tempdir().unwrap();
    let (listen, registry) = (free_addr(), free_addr());
    let cfg = dir.path().join("cairn.yaml");
    let yaml = format!(
        "listen_addr: \"{listen}\"\nregistry_addr: \"{registry}\"\ndata_dir: \"{}\"\norigins:\n  - registry: \"{}\"\n    tag_ttl: 1m\n",
        dir.path().join("data").display(),
        reg.url()
    );
    std::fs::write(&cfg, yaml).unwrap();
    let _node = NodeProcess::serve(env!("CARGO_BIN_EXE_cairn"), &cfg, &listen);

    let http = reqwest::Client::new();
    let base = format!("http://{registry}/v2");
    assert!(
        http.get(format!("{base}/")).send().await.is_ok_and(|r| r.status().is_success()),
        "the registry listener serves"
    );

    let r = http.get(format!("{base}/team/app/manifests/v1")).header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), img.manifest_bytes);
    let r = http.get(format!("{base}/team/app/blobs/{}", img.layers[0].oci())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().to_vec() == layers[0], "layer differs");
}
