//! `cairn serve` with a `tls` section: HTTPS on every listener for curl
//! and skopeo, client certificates with `client_ca_file`, and a SIGHUP
//! that swaps the certificate without dropping open connections.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_testkit::tls::{CertFiles, TestCa};
use cairn_testkit::{NodeProcess as Node, free_port};

/// `curl -sS` over HTTPS with `args`; returns the HTTP status (0: no answer) and the body.
fn curl(args: &[&str]) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let mut body = out.stdout;
    let cut = body.iter().rposition(|b| *b == b'\n').unwrap_or(0);
    let status = String::from_utf8_lossy(&body[cut..]).trim().parse().unwrap_or(0);
    body.truncate(cut);
    (status, body)
}

/// The YAML block after the `tls-example` marker in the README.
fn readme_tls_snippet() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let after = &readme[readme.find("<!-- tls-example").expect("tls-example marker in README")..];
    let start = after.find("```yaml\n").unwrap() + "```yaml\n".len();
    let end = start + after[start..].find("```").unwrap();
    after[start..end].to_owned()
}

/// The README's "TLS" snippet with the test's files, on `port` (and `reg`
/// for /v2); without `client_ca` its `client_ca_file` line is left out.
fn tls_config(dir: &Path, port: u16, reg: u16, node: &CertFiles, client_ca: Option<&Path>) -> String {
    let snippet = readme_tls_snippet()
        .lines()
        .filter(|l| client_ca.is_some() || !l.contains("client_ca_file"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace("/etc/cairn/tls/node.pem", &node.cert.display().to_string())
        .replace("/etc/cairn/tls/node.key", &node.key.display().to_string())
        .replace("/etc/cairn/tls/ca.pem", &client_ca.map(|p| p.display().to_string()).unwrap_or_default());
    assert!(!snippet.contains("/etc/cairn"), "every path of the snippet is replaced: {snippet}");
    format!(
        "listen_addr: \"127.0.0.1:{port}\"\nregistry_addr: \"127.0.0.1:{reg}\"\ndata_dir: \"{}\"\n{snippet}",
        dir.join("data").display()
    )
}

/// Starts `cairn serve` with its log kept.
fn serve(dir: &Path, config: &str, addr: &str) -> Node {
    let cfg = dir.join("cairn.yaml");
    std::fs::write(&cfg, config).unwrap();
    Node::serve_logged(env!("CARGO_BIN_EXE_cairn"), &cfg, addr)
}

#[test]
fn an_https_node_serves_a_blob_and_health_to_curl_and_skopeo_on_both_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let node_cert = ca.issue("node");
    let (port, reg) = (free_port(), free_port());
    let cacert = ca.cert.to_str().unwrap().to_owned();
    let base = format!("https://127.0.0.1:{port}");
    let health = format!("{base}/v1/health");
    let mut node =
        serve(dir.path(), &tls_config(dir.path(), port, reg, &node_cert, None), &format!("127.0.0.1:{port}"));

    let (status, body) = curl(&["--cacert", &cacert, &health]);
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("\"status\":\"ok\""));
    // Without the CA, curl does not trust the node; plain HTTP gets no answer.
    assert_eq!(curl(&[&health]).0, 0);
    assert_ne!(curl(&[&format!("http://127.0.0.1:{port}/v1/health")]).0, 200);

    let data = cairn_testkit::blob(3, 200_000);
    let d = cairn_store::Digest::of(&data);
    let file = dir.path().join("blob");
    std::fs::write(&file, &data).unwrap();
    let url = format!("{base}/v1/blobs/{d}");
    let (status, _) = curl(&["--cacert", &cacert, "-X", "PUT", "--data-binary", &format!("@{}", file.display()), &url]);
    assert!(status == 200 || status == 201, "PUT over HTTPS: {status}");
    let (status, got) = curl(&["--cacert", &cacert, &url]);
    assert_eq!((status, got.len()), (200, data.len()));
    assert!(got == data, "the blob over HTTPS is the blob");
    // The registry listener is HTTPS too.
    assert_eq!(curl(&["--cacert", &cacert, &format!("https://127.0.0.1:{reg}/v2/")]).0, 200);

    if cairn_testkit::registry::tool_available("/usr/bin/skopeo") {
        let pol = cairn_testkit::registry::skopeo_policy(dir.path());
        let certs = dir.path().join("certs.d");
        std::fs::create_dir(&certs).unwrap();
        std::fs::copy(&ca.cert, certs.join("ca.crt")).unwrap();
        let src = dir.path().join("oci");
        cairn_testkit::registry::oci_layout_image(&src, "v1", &[("hello.txt", b"over https".to_vec())]);
        let (src_ref, dest) = (format!("oci:{}:v1", src.display()), format!("docker://127.0.0.1:{reg}/tls/hello:v1"));
        let certs = certs.to_str().unwrap();
        cairn_testkit::registry::skopeo(&pol, &["copy", "--dest-cert-dir", certs, &src_ref, &dest]);
        let inspect = cairn_testkit::registry::skopeo(&pol, &["inspect", "--cert-dir", certs, &dest]);
        assert!(inspect.contains("\"Digest\""), "{inspect}");
        // Verification is on: without the CA, skopeo refuses the node.
        let out = Command::new("skopeo").args(["--policy"]).arg(&pol).args(["inspect", &dest]).output().unwrap();
        assert!(!out.status.success(), "skopeo trusted an unknown CA");
    }
    let log = node.stop_and_log();
    assert!(log.contains("tls=on"), "the start line says TLS is on: {log}");
}

#[test]
fn with_client_ca_file_a_client_needs_a_certificate_from_that_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let other = TestCa::new(dir.path(), "other");
    let node_cert = ca.issue("node");
    let member = ca.issue("member");
    let stranger = other.issue("stranger");
    let (port, reg) = (free_port(), free_port());
    let cacert = ca.cert.to_str().unwrap().to_owned();
    let health = format!("https://127.0.0.1:{port}/v1/health");
    let with = |c: &CertFiles| {
        curl(&["--cacert", &cacert, "--cert", c.cert.to_str().unwrap(), "--key", c.key.to_str().unwrap(), &health]).0
    };
    let cfg = tls_config(dir.path(), port, reg, &node_cert, Some(&ca.cert));
    let mut node = serve(dir.path(), &cfg, &format!("127.0.0.1:{port}"));
    assert_eq!(with(&member), 200);
    assert_ne!(with(&stranger), 200, "a certificate from another CA is refused");
    assert_ne!(curl(&["--cacert", &cacert, &health]).0, 200, "no certificate, no answer");
    let log = node.stop_and_log();
    assert!(log.contains("tls=mtls"), "{log}");
}

/// A client that trusts only `ca` and keeps its connections open.
fn client_trusting(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_for_new_connections_while_an_open_connection_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (TestCa::new(dir.path(), "old"), TestCa::new(dir.path(), "new"));
    let live = old_ca.issue("node");
    let (port, reg) = (free_port(), free_port());
    let health = format!("https://127.0.0.1:{port}/v1/health");
    let cfg = tls_config(dir.path(), port, reg, &live, None);
    let cacert = old_ca.cert.to_str().unwrap().to_owned();
    let node = tokio::task::spawn_blocking(move || {
        let d = tempfile::tempdir().unwrap();
        let n = serve(d.path(), &cfg, &format!("127.0.0.1:{port}"));
        assert_eq!(curl(&["--cacert", &cacert, &format!("https://127.0.0.1:{port}/v1/health")]).0, 200);
        (n, d)
    })
    .await
    .unwrap();

    let open = client_trusting(&old_ca.cert);
    assert_eq!(open.get(&health).send().await.unwrap().status(), 200, "a keep-alive connection is open");

    // The renewed certificate (from another CA, so the two are told apart).
    let renewed = new_ca.issue("node");
    std::fs::copy(&renewed.cert, &live.cert).unwrap();
    std::fs::copy(&renewed.key, &live.key).unwrap();
    let pid = node.0.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A fresh client: a new connection.
        if client_trusting(&new_ca.cert).get(&health).send().await.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "new connections never got the renewed certificate");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(client_trusting(&old_ca.cert).get(&health).send().await.is_err(), "new connections see only the new one");
    // The connection opened before the reload still works (a new one from
    // this client would fail: it trusts only the old CA).
    assert_eq!(open.get(&health).send().await.unwrap().status(), 200);

    // A broken file on the next SIGHUP keeps the renewed certificate.
    std::fs::write(&live.key, "garbage").unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let n = &node.0;
    tokio::task::block_in_place(|| n.wait_log("tls files not reloaded"));
    let r = client_trusting(&new_ca.cert).get(&health).send().await.unwrap();
    assert_eq!(r.status(), 200, "the renewed certificate stays in force");
    assert!(node.0.log().contains("SIGHUP: tls certificate reloaded"));
    drop(node);
}

#[test]
fn containerd_pulls_over_https_through_a_hosts_toml_with_ca() {
    use cairn_testkit::registry::{oci_layout_image, skopeo, skopeo_policy, tool_available};
    if !tool_available("/usr/bin/skopeo") {
        return;
    }
    let Some(ctd) = cairn_testkit::containerd::Containerd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let (port, reg) = (free_port(), free_port());
    let cacert = ca.cert.to_str().unwrap().to_owned();
    let health = format!("https://127.0.0.1:{port}/v1/health");
    let cfg = tls_config(dir.path(), port, reg, &ca.issue("node"), None);
    let _node = serve(dir.path(), &cfg, &format!("127.0.0.1:{port}"));
    assert_eq!(curl(&["--cacert", &cacert, &health]).0, 200);

    let pol = skopeo_policy(dir.path());
    let certs = dir.path().join("certs.d");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(&ca.cert, certs.join("ca.crt")).unwrap();
    let src = dir.path().join("oci");
    let image = oci_layout_image(&src, "v1", &[("hello.txt", b"pulled by containerd over https".to_vec())]);
    let host = format!("127.0.0.1:{reg}");
    let dest = format!("docker://{host}/tls/ctd:v1");
    skopeo(&pol, &["copy", "--dest-cert-dir", certs.to_str().unwrap(), &format!("oci:{}:v1", src.display()), &dest]);

    // The README's hosts.toml, with the test's address and CA.
    let hosts = |with_ca: bool| {
        let d = dir.path().join(if with_ca { "hosts-ca" } else { "hosts-plain" });
        std::fs::create_dir_all(d.join(&host)).unwrap();
        let ca_line = if with_ca { format!("  ca = \"{cacert}\"\n") } else { String::new() };
        std::fs::write(
            d.join(&host).join("hosts.toml"),
            format!("server = \"https://{host}\"\n\n[host.\"https://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n{ca_line}"),
        )
        .unwrap();
        d
    };
    let reference = format!("{host}/tls/ctd:v1");
    let plain = hosts(false);
    let out = ctd.ctr(&[
        "-n",
        cairn_testkit::containerd::NAMESPACE,
        "images",
        "pull",
        "--snapshotter",
        "native",
        "--hosts-dir",
        plain.to_str().unwrap(),
        &reference,
    ]);
    assert!(!out.status.success(), "containerd trusted the node without its CA");
    ctd.pull(&hosts(true), &reference);
    let got = ctd.content_digests();
    for d in &image.layers {
        assert!(got.contains(&d.oci()), "layer {d} pulled over HTTPS: {got:?}");
    }
}
