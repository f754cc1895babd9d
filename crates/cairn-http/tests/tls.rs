//! TLS: nodes serve HTTPS, peers call them over HTTPS with the cluster's
//! CA (and their own certificate when the node asks for one), and origins
//! are trusted through the system store plus their own `ca_file`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn_cluster::{Cluster, ClusterConfig, Origin};
use cairn_http::tls::{ServerTls, TlsFiles};
use cairn_http::{AppState, Client};
use cairn_store::{Digest, Store};
use cairn_testkit::tls::{CertFiles, TestCa};
use cairn_testkit::{TestOrigin, blob};
use futures_util::StreamExt;

fn files(c: &CertFiles, client_ca: Option<&Path>, peer_ca: Option<&Path>) -> TlsFiles {
    TlsFiles {
        cert_file: c.cert.clone(),
        key_file: c.key.clone(),
        client_ca_file: client_ca.map(Path::to_owned),
        peer_ca_file: peer_ca.map(Path::to_owned),
    }
}

/// A node serving HTTPS with `tls` on 127.0.0.1; returns its `host:port`.
async fn https_node(tls: Arc<ServerTls>, limits: cairn_http::ServeLimits) -> (String, tempfile::TempDir) {
    let (addr, dir, _store) = https_node_with_store(tls, limits).await;
    (addr, dir)
}

async fn https_node_with_store(
    tls: Arc<ServerTls>,
    limits: cairn_http::ServeLimits,
) -> (String, tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let state = AppState::new(store.clone(), ClusterConfig::default(), "127.0.0.1:0").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = cairn_http::app(state);
    tokio::spawn(cairn_http::serve_tls_with(listener, app, std::future::pending(), Duration::ZERO, limits, Some(tls)));
    (addr, dir, store)
}

/// The peer client of a node whose `tls` section is `f`.
fn peer_client(f: TlsFiles) -> Client {
    let cfg = ServerTls::load(f).unwrap().peer_client_config().unwrap();
    Client::for_peers_tls(Duration::from_secs(5), cfg).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_certificate_from_another_ca_is_refused_when_client_ca_file_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "cluster");
    let other = TestCa::new(dir.path(), "other");
    let a = ca.issue("a");
    let tls = ServerTls::load(files(&a, Some(&ca.cert), None)).unwrap();
    assert_eq!(tls.mode(), "mtls");
    let (addr, _d) = https_node(tls, Default::default()).await;

    // A member: its certificate is from the cluster CA; bare host:port means https.
    let member = peer_client(files(&ca.issue("b"), Some(&ca.cert), None));
    let h = member.health(&addr).await.unwrap();
    assert_eq!(h.status, "ok");

    // A stranger that trusts the node's CA but holds another CA's certificate.
    let stranger = peer_client(files(&other.issue("x"), None, Some(&ca.cert)));
    let e = stranger.health(&addr).await.unwrap_err().to_string();
    assert!(e.contains(&addr), "the error names the peer: {e}");

    // And a plain HTTP client gets nothing either.
    let plain = Client::for_peers(Duration::from_secs(5));
    assert!(plain.health(&format!("http://{addr}")).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_fetches_a_blob_from_its_peer_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "cluster");
    let tls = ServerTls::load(files(&ca.issue("a"), Some(&ca.cert), None)).unwrap();
    let (addr, _d, store) = https_node_with_store(tls, Default::default()).await;
    let data = blob(9, 3 << 20);
    let d = store.put_reader(&data[..], None).unwrap().digest;

    let bdir = tempfile::tempdir().unwrap();
    let cfg = ClusterConfig { peers: vec![addr.clone()], enable_cdn_fallback: false, ..Default::default() };
    let client = peer_client(files(&ca.issue("b"), Some(&ca.cert), None));
    let b = Cluster::new(Store::open(bdir.path()).unwrap(), cfg, Arc::new(client));
    b.probe_all().await;
    let body = b.fetch(d).await.unwrap();
    assert_eq!(body.source, format!("peer {addr}"), "from the peer");
    let mut got = Vec::new();
    let mut s = body.stream;
    while let Some(c) = s.next().await {
        got.extend_from_slice(&c.unwrap());
    }
    assert!(got == data, "the peer's blob, verified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_client_refuses_an_expired_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "cluster");
    let (addr, _d) =
        https_node(ServerTls::load(files(&ca.issue_expired("old"), None, None)).unwrap(), Default::default()).await;
    let client = peer_client(files(&ca.issue("b"), None, Some(&ca.cert)));
    let e = client.health(&addr).await.unwrap_err().to_string();
    assert!(e.contains("Expired") || e.contains("expired"), "{e}");

    // The same client reaches a node with a valid certificate from that CA.
    let (good, _d2) =
        https_node(ServerTls::load(files(&ca.issue("new"), None, None)).unwrap(), Default::default()).await;
    assert_eq!(client.health(&good).await.unwrap().status, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_never_comes_is_closed_after_header_timeout() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "cluster");
    let limits = cairn_http::ServeLimits { header_timeout: Duration::from_millis(300), ..Default::default() };
    let (addr, _d) = https_node(ServerTls::load(files(&ca.issue("a"), None, None)).unwrap(), limits).await;
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the node closes a connection that never starts its handshake")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed, nothing sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_quiet_after_its_handshake_gets_idle_timeout_not_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "cluster");
    let limits = cairn_http::ServeLimits {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let (addr, _d) = https_node(ServerTls::load(files(&ca.issue("a"), None, None)).unwrap(), limits).await;
    let cfg = ServerTls::load(files(&ca.issue("b"), None, Some(&ca.cert))).unwrap().peer_client_config().unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    // Quiet for longer than header_timeout: what is measured, not a wait for something.
    tokio::time::sleep(Duration::from_millis(900)).await;
    tls.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    assert!(out.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&out));
}

#[test]
fn a_bad_new_certificate_file_keeps_the_one_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "cluster");
    let a = ca.issue("a");
    let tls = ServerTls::load(files(&a, None, None)).unwrap();
    std::fs::write(&a.key, "not a key").unwrap();
    let e = tls.reload().unwrap_err().to_string();
    assert!(e.contains("key_file") && e.contains(&a.key.display().to_string()), "{e}");
    let e = ServerTls::load(files(&a, None, None)).unwrap_err().to_string();
    assert!(e.contains("key_file"), "{e}");
    // A key that is not the certificate's is refused too.
    let b = ca.issue("b");
    std::fs::copy(&b.key, &a.key).unwrap();
    let e = tls.reload().unwrap_err().to_string();
    assert!(e.contains("does not fit"), "{e}");
}

fn origin_cluster(origin: Origin) -> (tempfile::TempDir, Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let cfg = ClusterConfig { origins: vec![origin.with_retries(0)], ..Default::default() };
    let api = Arc::new(Client::for_peers(Duration::from_secs(5)));
    (dir, Cluster::new(store, cfg, api))
}

async fn fetch_all(c: &Cluster, d: Digest) -> Result<Vec<u8>, String> {
    let mut body = c.fetch(d).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(chunk) = body.stream.next().await {
        out.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_origin_over_https_works_with_its_ca_file_and_fails_clearly_without() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "origin");
    let data = blob(7, 300_000);
    let d = Digest::of(&data);
    let origin = TestOrigin::start_https(
        std::slice::from_ref(&data),
        ServerTls::load(files(&ca.issue("o"), None, None)).unwrap(),
    );
    let template = origin.template();
    assert!(template.starts_with("https://"), "{template}");

    let (_d1, without) = origin_cluster(Origin::http(&template).unwrap());
    let e = fetch_all(&without, d).await.unwrap_err();
    assert!(e.contains("not trusted") && e.contains("ca_file"), "says what to do: {e}");

    let (_d2, with) = origin_cluster(Origin::http(&template).unwrap().with_tls(Some(&ca.cert), false).unwrap());
    assert_eq!(fetch_all(&with, d).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skip_verify_accepts_an_untrusted_origin_only_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "origin");
    let data = blob(8, 1000);
    let d = Digest::of(&data);
    let origin = TestOrigin::start_https(
        std::slice::from_ref(&data),
        ServerTls::load(files(&ca.issue("o"), None, None)).unwrap(),
    );
    let (_d1, off) = origin_cluster(Origin::http(&origin.template()).unwrap().with_tls(None, false).unwrap());
    assert!(fetch_all(&off, d).await.is_err());
    let (_d2, on) = origin_cluster(Origin::http(&origin.template()).unwrap().with_tls(None, true).unwrap());
    assert_eq!(fetch_all(&on, d).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_origin_over_https_needs_its_ca_file() {
    use cairn_cluster::upstream::{Upstream, UpstreamConfig};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "registry");
    // A node's /v2 is a registry; over HTTPS it stands in for an upstream.
    let (addr, _d) = https_node(ServerTls::load(files(&ca.issue("r"), None, None)).unwrap(), Default::default()).await;
    let cfg = |ca_file: Option<&Path>| UpstreamConfig {
        url: format!("https://{addr}"),
        timeout: Duration::from_secs(5),
        ca_file: ca_file.map(Path::to_owned),
        ..Default::default()
    };
    let e = Upstream::new(cfg(None)).unwrap().resolve_tag("library/none", "x").await.unwrap_err().to_string();
    assert!(e.contains("not trusted") && e.contains("ca_file"), "{e}");
    let e = Upstream::new(cfg(Some(&ca.cert))).unwrap().resolve_tag("library/none", "x").await.unwrap_err();
    assert!(e.is_not_found() || !e.to_string().contains("certificate"), "TLS passed, the tag is just absent: {e}");
}
