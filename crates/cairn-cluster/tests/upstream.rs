//! The upstream registry client against the real distribution registry
//! (open, and behind token auth), and against small fakes for what the
//! real one cannot be made to do (lie, ask for basic auth).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cairn_cluster::mirror::PeerTags;
use cairn_cluster::upstream::{Freshness, ObjectKind, Upstream, UpstreamConfig, UpstreamError};
use cairn_store::Digest;
use cairn_testkit::registry::{RegistryAuth, TestRegistry, TokenOptions, TokenServer, push_image};
use cairn_testkit::{Breakage, BrokenRegistry, Server, blob, dead_addr};
use futures_util::StreamExt;

fn upstream(url: &str) -> Upstream {
    Upstream::new(UpstreamConfig { url: url.into(), timeout: Duration::from_secs(5), ..Default::default() }).unwrap()
}

fn with_creds(url: &str, user: &str, pass: &str) -> Upstream {
    Upstream::new(UpstreamConfig {
        url: url.into(),
        username: Some(user.into()),
        password: Some(pass.into()),
        timeout: Duration::from_secs(5),
        ..Default::default()
    })
    .unwrap()
}

async fn read_blob(u: &Upstream, repo: &str, d: &Digest, kind: ObjectKind) -> Vec<u8> {
    let mut r = u.open(repo, d, kind).await.unwrap();
    let mut out = Vec::new();
    while let Some(c) = r.body.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

#[tokio::test]
async fn open_registry_serves_tag_manifest_and_blobs_by_digest() {
    let Some(reg) = TestRegistry::start(RegistryAuth::None) else { return };
    let layers = [blob(1, 300 << 10), blob(2, 10)];
    let img = push_image(&reg.url(), None, "team/app", "v1", &layers).await;
    let u = upstream(&reg.url());

    let t = u.resolve_tag("team/app", "v1").await.unwrap();
    assert_eq!((t.digest, t.freshness), (img.manifest, Freshness::Upstream));
    assert_eq!(t.media_type.as_deref(), Some("application/vnd.oci.image.manifest.v1+json"));

    let by_tag = u.get_manifest("team/app", "v1").await.unwrap();
    let by_digest = u.get_manifest("team/app", &img.manifest.oci()).await.unwrap();
    assert_eq!(by_tag.bytes, img.manifest_bytes);
    assert_eq!(by_digest.digest, img.manifest);
    assert_eq!(read_blob(&u, "team/app", &img.manifest, ObjectKind::Manifest).await, img.manifest_bytes);

    assert_eq!(read_blob(&u, "team/app", &img.layers[0], ObjectKind::Blob).await, layers[0]);
    assert_eq!(u.head("team/app", &img.layers[1], ObjectKind::Blob).await.unwrap(), Some(10));
    assert_eq!(u.head("team/app", &Digest::of(b"absent"), ObjectKind::Blob).await.unwrap(), None);
}

#[tokio::test]
async fn unknown_tag_or_repository_is_not_found_and_not_unavailable() {
    let Some(reg) = TestRegistry::start(RegistryAuth::None) else { return };
    push_image(&reg.url(), None, "team/app", "v1", &[blob(3, 100)]).await;
    let u = upstream(&reg.url());
    for (repo, tag) in [("team/app", "nope"), ("team/other", "v1")] {
        let e = u.resolve_tag(repo, tag).await.unwrap_err();
        assert!(e.is_not_found() && !e.is_unavailable(), "{e}");
    }
    let e = u.open("team/app", &Digest::of(b"absent"), ObjectKind::Blob).await.err().unwrap();
    assert!(e.is_not_found(), "{e}");
}

#[tokio::test]
async fn token_auth_fetches_one_token_per_repository_and_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let Some(tokens) = TokenServer::start(dir.path(), TokenOptions::default()) else { return };
    let Some(reg) = TestRegistry::start(RegistryAuth::Token(&tokens)) else { return };
    let push = tokens.issue(&["repository:team/app:pull,push", "repository:team/db:pull,push"]);
    let img = push_image(&reg.url(), Some(&push), "team/app", "v1", &[blob(4, 1000), blob(5, 2000)]).await;
    push_image(&reg.url(), Some(&push), "team/db", "v1", &[blob(6, 1000)]).await;
    assert_eq!(tokens.requests(), 0);

    let u = upstream(&reg.url());
    assert_eq!(u.resolve_tag("team/app", "v1").await.unwrap().digest, img.manifest);
    assert_eq!(u.get_manifest("team/app", "v1").await.unwrap().bytes, img.manifest_bytes);
    for l in &img.layers {
        assert_eq!(Digest::of(&read_blob(&u, "team/app", l, ObjectKind::Blob).await), *l);
    }
    assert_eq!(tokens.requests(), 1, "one token serves every request of the repository");
    assert_eq!(tokens.scopes(), ["repository:team/app:pull"]);

    u.resolve_tag("team/db", "v1").await.unwrap();
    assert_eq!(tokens.requests(), 2, "another repository needs its own scope");
    assert_eq!(u.cached_tokens(), 2);
}

#[tokio::test]
async fn token_endpoint_credentials_are_sent_and_wrong_or_missing_ones_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let opts = TokenOptions { creds: Some(("alice".into(), "s3cret".into())), ..Default::default() };
    let Some(tokens) = TokenServer::start(dir.path(), opts) else { return };
    let Some(reg) = TestRegistry::start(RegistryAuth::Token(&tokens)) else { return };
    let push = tokens.issue(&["repository:private/app:pull,push"]);
    let img = push_image(&reg.url(), Some(&push), "private/app", "v1", &[blob(7, 500)]).await;

    let good = with_creds(&reg.url(), "alice", "s3cret");
    assert_eq!(good.resolve_tag("private/app", "v1").await.unwrap().digest, img.manifest);

    let e = with_creds(&reg.url(), "alice", "wrong").resolve_tag("private/app", "v1").await.unwrap_err();
    assert!(matches!(e, UpstreamError::Auth { .. }), "{e}");
    assert!(e.to_string().contains("check the password"), "{e}");
    assert!(!e.is_unavailable(), "a refused password must not serve stale tags");

    let e = upstream(&reg.url()).resolve_tag("private/app", "v1").await.unwrap_err();
    assert!(e.to_string().contains("set username and password"), "{e}");
}

#[tokio::test]
async fn token_that_expires_at_once_is_fetched_again_for_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    // A lifetime inside the safety margin: cached as already expired.
    let opts = TokenOptions { lifetime: Duration::from_secs(2), ..Default::default() };
    let Some(tokens) = TokenServer::start(dir.path(), opts) else { return };
    let Some(reg) = TestRegistry::start(RegistryAuth::Token(&tokens)) else { return };
    let push = tokens.issue(&["repository:a/b:pull,push"]);
    let img = push_image(&reg.url(), Some(&push), "a/b", "v1", &[blob(8, 100)]).await;
    let u = upstream(&reg.url());
    u.get_manifest("a/b", &img.manifest.oci()).await.unwrap();
    u.get_manifest("a/b", &img.manifest.oci()).await.unwrap();
    assert_eq!(tokens.requests(), 2);
    assert_eq!(u.cached_tokens(), 0);
}

#[tokio::test]
async fn cached_tag_is_served_within_its_ttl_without_asking_upstream() {
    let Some(reg) = TestRegistry::start(RegistryAuth::None) else { return };
    let img = push_image(&reg.url(), None, "team/app", "v1", &[blob(9, 100)]).await;
    let u = Upstream::new(UpstreamConfig { url: reg.url(), tag_ttl: Duration::from_secs(3600), ..Default::default() })
        .unwrap();
    assert_eq!(u.resolve_tag("team/app", "v1").await.unwrap().freshness, Freshness::Upstream);
    let heads = |reqs: Vec<String>| reqs.iter().filter(|r| r.starts_with("HEAD /v2/team/app/manifests/v1")).count();
    assert_eq!(heads(reg.requests_settled()), 1);

    // Moving the tag upstream is not seen until the TTL runs out.
    push_image(&reg.url(), None, "team/app", "v1", &[blob(10, 100)]).await;
    let again = u.resolve_tag("team/app", "v1").await.unwrap();
    assert_eq!((again.digest, again.freshness), (img.manifest, Freshness::Cached));
    assert_eq!(heads(reg.requests_settled()), 1);
}

#[tokio::test]
async fn expired_tag_is_asked_again_and_served_stale_only_while_the_registry_is_down() {
    let Some(mut reg) = TestRegistry::start(RegistryAuth::None) else { return };
    push_image(&reg.url(), None, "team/app", "v1", &[blob(11, 100)]).await;
    let u = Upstream::new(UpstreamConfig {
        url: reg.url(),
        tag_ttl: Duration::ZERO,
        timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .unwrap();
    u.resolve_tag("team/app", "v1").await.unwrap();
    let moved = push_image(&reg.url(), None, "team/app", "v1", &[blob(12, 100)]).await;
    let t = u.resolve_tag("team/app", "v1").await.unwrap();
    assert_eq!((t.digest, t.freshness), (moved.manifest, Freshness::Upstream), "expired entries are re-asked");

    reg.stop();
    let t = u.resolve_tag("team/app", "v1").await.unwrap();
    assert_eq!((t.digest, t.freshness), (moved.manifest, Freshness::Stale));
    let e = u.resolve_tag("team/app", "never-resolved").await.unwrap_err();
    assert!(e.is_unavailable(), "{e}");
}

#[tokio::test]
async fn unreachable_registry_is_an_error_naming_it() {
    let url = format!("http://{}", dead_addr());
    let e = upstream(&url).resolve_tag("a", "b").await.unwrap_err();
    assert!(e.is_unavailable());
    assert!(e.to_string().contains(&url), "{e}");
}

/// A fake registry: basic auth for `u:p`, and a manifest endpoint that
/// answers every digest with the same (wrong) bytes.
struct Fake {
    hits: AtomicUsize,
}

async fn fake_manifest(
    State(f): State<Arc<Fake>>,
    Path((_, reference)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    f.hits.fetch_add(1, Ordering::SeqCst);
    // "u:p" in base64.
    if h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some("Basic dTpw") {
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic realm=\"fake\"")]).into_response();
    }
    let body = br#"{"schemaVersion":2}"#.to_vec();
    let mut hdrs = vec![(header::CONTENT_TYPE, "application/vnd.oci.image.manifest.v1+json".to_owned())];
    if reference == "lying-tag" {
        hdrs.push((header::HeaderName::from_static("docker-content-digest"), Digest::of(b"other").oci()));
    }
    let mut r = body.into_response();
    for (k, v) in hdrs {
        r.headers_mut().insert(k, v.parse().unwrap());
    }
    r
}

fn fake() -> (Server, Arc<Fake>) {
    let f = Arc::new(Fake { hits: AtomicUsize::new(0) });
    let app = Router::new().route("/v2/{repo}/manifests/{reference}", get(fake_manifest)).with_state(Arc::clone(&f));
    (Server::start(app), f)
}

#[tokio::test]
async fn basic_challenge_is_answered_with_the_configured_credentials_then_sent_up_front() {
    let (srv, f) = fake();
    let u = with_creds(&format!("http://{}", srv.addr()), "u", "p");
    let m = u.get_manifest("repo", "v1").await.unwrap();
    assert_eq!(m.digest, Digest::of(br#"{"schemaVersion":2}"#));
    assert_eq!(f.hits.load(Ordering::SeqCst), 2, "challenge, then retry");
    u.get_manifest("repo", "v1").await.unwrap();
    assert_eq!(f.hits.load(Ordering::SeqCst), 3, "credentials sent up front afterwards");

    let e = with_creds(&format!("http://{}", srv.addr()), "u", "bad").get_manifest("repo", "v1").await.unwrap_err();
    assert!(e.to_string().contains("rejected the credentials"), "{e}");
}

#[tokio::test]
async fn manifest_whose_bytes_do_not_match_the_digest_is_refused() {
    let (srv, _) = fake();
    let u = with_creds(&format!("http://{}", srv.addr()), "u", "p");
    let want = Digest::of(b"something else");
    let e = u.get_manifest("repo", &want.oci()).await.unwrap_err();
    assert!(matches!(e, UpstreamError::BadAnswer { .. }) && e.to_string().contains("hashes to"), "{e}");
    let e = u.get_manifest("repo", "lying-tag").await.unwrap_err();
    assert!(e.to_string().contains("Docker-Content-Digest says"), "{e}");
}

/// A registry whose token endpoint gives a lifetime no clock can hold.
async fn huge_token(State(_): State<Arc<std::sync::Mutex<String>>>) -> Response {
    axum::Json(serde_json::json!({"token": "t", "expires_in": u64::MAX})).into_response()
}

async fn bearer_manifest(State(realm): State<Arc<std::sync::Mutex<String>>>, h: HeaderMap) -> Response {
    if h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some("Bearer t") {
        let challenge = format!("Bearer realm=\"{}\",service=\"fake\"", realm.lock().unwrap());
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, challenge)]).into_response();
    }
    let mut r = br#"{"schemaVersion":2}"#.to_vec().into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, "application/vnd.oci.image.manifest.v1+json".parse().unwrap());
    r
}

#[tokio::test]
async fn token_lifetime_too_large_for_the_clock_is_capped_not_a_panic() {
    let realm = Arc::new(std::sync::Mutex::new(String::new()));
    let app = Router::new()
        .route("/token", get(huge_token))
        .route("/v2/{repo}/manifests/{reference}", get(bearer_manifest))
        .with_state(Arc::clone(&realm));
    let srv = Server::start(app);
    *realm.lock().unwrap() = format!("http://{}/token", srv.addr());
    let u = upstream(&format!("http://{}", srv.addr()));
    let m = u.get_manifest("repo", "v1").await.unwrap();
    assert_eq!(m.digest, Digest::of(br#"{"schemaVersion":2}"#));
    assert_eq!(u.cached_tokens(), 1);
}

/// A cluster with no peers: every peer call is a bug in the test.
struct NoPeers;

impl cairn_cluster::PeerApi for NoPeers {
    fn health<'a>(&'a self, _: &'a str) -> cairn_cluster::peer::BoxFut<'a, cairn_cluster::PeerHealth> {
        unreachable!("no peers")
    }
    fn head_blob<'a>(&'a self, _: &'a str, _: &'a Digest) -> cairn_cluster::peer::BoxFut<'a, Option<u64>> {
        unreachable!("no peers")
    }
    fn get_blob<'a>(&'a self, _: &'a str, _: &'a Digest) -> cairn_cluster::peer::BoxFut<'a, cairn_cluster::RemoteBlob> {
        unreachable!("no peers")
    }
    fn list_manifests<'a>(&'a self, _: &'a str) -> cairn_cluster::peer::BoxFut<'a, Vec<cairn_cluster::ManifestEntry>> {
        unreachable!("no peers")
    }
    fn get_manifest<'a>(&'a self, _: &'a str, _: &'a cairn_store::RefFile) -> cairn_cluster::peer::BoxFut<'a, Vec<u8>> {
        unreachable!("no peers")
    }
}

fn cluster_with(origins: Vec<cairn_cluster::Origin>) -> (cairn_cluster::Cluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = cairn_store::Store::open(dir.path()).unwrap();
    let cfg = cairn_cluster::ClusterConfig { origins, peer_timeout: Duration::from_secs(5), ..Default::default() };
    (cairn_cluster::Cluster::new(store, cfg, Arc::new(NoPeers)), dir)
}

fn stored(c: &cairn_cluster::Cluster, d: &Digest) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut c.store().get(d).unwrap(), &mut out).unwrap();
    out
}

fn registry_origin(url: &str) -> cairn_cluster::Origin {
    cairn_cluster::Origin::registry(UpstreamConfig { url: url.into(), ..Default::default() }).unwrap()
}

fn hint(repo: &str, kind: ObjectKind) -> cairn_cluster::upstream::OciHint {
    cairn_cluster::upstream::OciHint { repo: repo.into(), kind }
}

#[tokio::test]
async fn registry_origin_fills_the_store_for_oci_requests_and_is_skipped_for_bare_digests() {
    let Some(reg) = TestRegistry::start(RegistryAuth::None) else { return };
    let layers = [blob(20, 2 << 20)];
    let img = push_image(&reg.url(), None, "team/app", "v1", &layers).await;
    let (cluster, _dir) = cluster_with(vec![registry_origin(&reg.url())]);

    let e = cluster.ensure_local(img.layers[0], None).await.unwrap_err();
    assert!(e.is_not_found() && e.to_string().contains("bare digest names no repository"), "{e}");

    assert!(cluster.ensure_local_oci(img.layers[0], hint("team/app", ObjectKind::Blob)).await.unwrap());
    assert_eq!(stored(&cluster, &img.layers[0]), layers[0]);
    assert!(cluster.ensure_local_oci(img.manifest, hint("team/app", ObjectKind::Manifest)).await.unwrap());
    assert_eq!(stored(&cluster, &img.manifest), img.manifest_bytes);
    assert!(!cluster.ensure_local_oci(img.manifest, hint("team/app", ObjectKind::Manifest)).await.unwrap());

    let t = cluster.resolve_tag("team/app", "v1").await.unwrap().unwrap();
    assert_eq!(t.digest, img.manifest);
    assert_eq!(cluster.cached_tag("team/app", "v1").map(|t| t.digest), Some(img.manifest));
    assert_eq!(cluster.resolve_tag("team/app", "nope").await.unwrap(), None);
}

#[tokio::test]
async fn tag_resolution_fails_clearly_when_the_only_upstream_is_down_and_nothing_is_cached() {
    let (cluster, _dir) = cluster_with(vec![registry_origin(&format!("http://{}", dead_addr()))]);
    let e = cluster.resolve_tag("team/app", "v1").await.unwrap_err();
    assert!(e.to_string().contains("tag team/app:v1 could not be resolved"), "{e}");
}

#[tokio::test]
async fn registry_origin_sending_wrong_bytes_stores_nothing() {
    let data = blob(21, 4096);
    let srv = BrokenRegistry::start(Breakage::Tamper, std::slice::from_ref(&data));
    let (cluster, _dir) = cluster_with(vec![registry_origin(&srv.url())]);
    let d = Digest::of(&data);
    let e = cluster.ensure_local_oci(d, hint("repo", ObjectKind::Blob)).await.unwrap_err();
    assert!(e.to_string().contains("wrong bytes"), "{e}");
    assert!(cluster.local_size(d).await.unwrap().is_none());
}

#[tokio::test]
async fn registry_refuses_a_token_signed_by_a_key_it_does_not_trust() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let Some(trusted) = TokenServer::start(d1.path(), TokenOptions::default()) else { return };
    let Some(stranger) = TokenServer::start(d2.path(), TokenOptions::default()) else { return };
    let Some(reg) = TestRegistry::start(RegistryAuth::Token(&trusted)) else { return };
    let forged = stranger.issue(&["repository:a/b:pull,push"]);
    let r = reqwest::Client::new()
        .post(format!("{}/v2/a/b/blobs/uploads/", reg.url()))
        .bearer_auth(forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    let good = trusted.issue(&["repository:a/b:pull,push"]);
    push_image(&reg.url(), Some(&good), "a/b", "v1", &[blob(30, 10)]).await;
}

/// One peer that knows one tag, counting the questions it gets.
struct TagPeer {
    digest: Digest,
    asked: AtomicUsize,
}

impl cairn_cluster::PeerApi for TagPeer {
    fn health<'a>(&'a self, _: &'a str) -> cairn_cluster::peer::BoxFut<'a, cairn_cluster::PeerHealth> {
        unreachable!("no probes in this test")
    }
    fn head_blob<'a>(&'a self, _: &'a str, _: &'a Digest) -> cairn_cluster::peer::BoxFut<'a, Option<u64>> {
        Box::pin(async { Ok(None) })
    }
    fn get_blob<'a>(&'a self, _: &'a str, _: &'a Digest) -> cairn_cluster::peer::BoxFut<'a, cairn_cluster::RemoteBlob> {
        unreachable!("HEAD said absent")
    }
    fn list_manifests<'a>(&'a self, _: &'a str) -> cairn_cluster::peer::BoxFut<'a, Vec<cairn_cluster::ManifestEntry>> {
        unreachable!("not listed")
    }
    fn get_manifest<'a>(&'a self, _: &'a str, _: &'a cairn_store::RefFile) -> cairn_cluster::peer::BoxFut<'a, Vec<u8>> {
        unreachable!("not synced")
    }
    fn resolve_tag<'a>(
        &'a self,
        peer: &'a str,
        repo: &'a str,
        tag: &'a str,
    ) -> cairn_cluster::peer::BoxFut<'a, Option<cairn_cluster::mirror::TagTarget>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let known = (repo, tag) == ("team/app", "v1");
        let t =
            cairn_cluster::mirror::TagTarget { digest: self.digest, media_type: None, source: format!("peer {peer}") };
        Box::pin(async move { Ok(known.then_some(t)) })
    }
}

#[tokio::test]
async fn with_peer_tags_first_a_peer_that_knows_the_tag_answers_before_the_upstream_is_asked() {
    let Some(reg) = TestRegistry::start(RegistryAuth::None) else { return };
    let upstream_img = push_image(&reg.url(), None, "team/app", "v1", &[blob(31, 10)]).await;
    let peer = Arc::new(TagPeer { digest: Digest::of(b"the peer's manifest"), asked: AtomicUsize::new(0) });
    let dir = tempfile::tempdir().unwrap();
    let cfg = cairn_cluster::ClusterConfig {
        peers: vec!["peer-a:1".into()],
        origins: vec![registry_origin(&reg.url())],
        peer_tags: PeerTags::First,
        ..Default::default()
    };
    let api: Arc<dyn cairn_cluster::PeerApi> = peer.clone();
    let cluster = cairn_cluster::Cluster::new(cairn_store::Store::open(dir.path()).unwrap(), cfg, api);

    let t = cluster.resolve_tag("team/app", "v1").await.unwrap().unwrap();
    assert_eq!((t.digest, t.source.as_str()), (peer.digest, "peer peer-a:1"));
    let reads = |r: &String| !r.starts_with("PUT ") && r.contains("/manifests/");
    assert_eq!(reg.requests_settled().iter().filter(|r| reads(r)).count(), 0, "upstream was asked");

    // A tag the peer lacks goes upstream, and is then answered from the cache.
    let t = cluster.resolve_tag("team/app", "v1-missing-on-peer").await;
    assert!(matches!(t, Ok(None)), "{t:?}");
    let other = push_image(&reg.url(), None, "team/db", "v2", &[blob(32, 10)]).await;
    assert_eq!(cluster.resolve_tag("team/db", "v2").await.unwrap().unwrap().digest, other.manifest);
    let asked = peer.asked.load(Ordering::SeqCst);
    let cached = cluster.resolve_tag("team/db", "v2").await.unwrap().unwrap();
    assert_eq!(cached.digest, other.manifest);
    assert!(cached.source.ends_with("(cached)"), "{}", cached.source);
    assert_eq!(peer.asked.load(Ordering::SeqCst), asked, "a fresh cached tag asks no peer");
    assert_ne!(upstream_img.manifest, peer.digest);
}

#[tokio::test]
async fn by_default_a_tag_the_upstream_knows_asks_no_peer() {
    let Some(reg) = TestRegistry::start(RegistryAuth::None) else { return };
    let img = push_image(&reg.url(), None, "team/app", "v1", &[blob(33, 10)]).await;
    let peer = Arc::new(TagPeer { digest: Digest::of(b"the peer's manifest"), asked: AtomicUsize::new(0) });
    let dir = tempfile::tempdir().unwrap();
    let cfg = cairn_cluster::ClusterConfig {
        peers: vec!["peer-a:1".into()],
        origins: vec![registry_origin(&reg.url())],
        ..Default::default()
    };
    assert_eq!(cfg.peer_tags, PeerTags::Fallback);
    let api: Arc<dyn cairn_cluster::PeerApi> = peer.clone();
    let cluster = cairn_cluster::Cluster::new(cairn_store::Store::open(dir.path()).unwrap(), cfg, api);

    let t = cluster.resolve_tag("team/app", "v1").await.unwrap().unwrap();
    assert_eq!(t.digest, img.manifest, "{}", t.source);
    assert_eq!(peer.asked.load(Ordering::SeqCst), 0, "the peer was asked although the upstream answered");
    // The upstream lacks it: that is its answer, not a failure for peers to cover.
    let e = cluster.resolve_tag("team/app", "nope").await;
    assert!(matches!(e, Ok(None)), "{e:?}");
    assert_eq!(peer.asked.load(Ordering::SeqCst), 0, "a tag the upstream lacks was asked of the peers");
}

#[tokio::test]
async fn an_upstream_answering_5xx_falls_back_only_to_member_peers_and_to_none_when_peer_tags_is_never() {
    let srv = BrokenRegistry::start(Breakage::Unavailable, &[]);
    let peer = Arc::new(TagPeer { digest: Digest::of(b"the peer's manifest"), asked: AtomicUsize::new(0) });
    let with = |peer_tags| {
        let cfg = cairn_cluster::ClusterConfig {
            peers: vec!["peer-a:1".into()],
            origins: vec![registry_origin(&srv.url())],
            peer_tags,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let api: Arc<dyn cairn_cluster::PeerApi> = peer.clone();
        (cairn_cluster::Cluster::new(cairn_store::Store::open(dir.path()).unwrap(), cfg, api), dir)
    };

    // Without a cluster secret no peer has proved membership: none stands in.
    let (fallback, _d1) = with(PeerTags::Fallback);
    let e = fallback.resolve_tag("team/app", "v1").await.unwrap_err().to_string();
    assert!(e.contains("HTTP 503") && e.contains("cluster_secret_file"), "{e}");
    assert_eq!(peer.asked.load(Ordering::SeqCst), 0, "an unauthenticated peer was asked for a tag");
    // An operator who trusts the peers says so.
    let (first, _d3) = with(PeerTags::First);
    let t = first.resolve_tag("team/app", "v1").await.unwrap().unwrap();
    assert_eq!((t.digest, t.source.as_str()), (peer.digest, "peer peer-a:1"));

    let (never, _d2) = with(PeerTags::Never);
    let asked = peer.asked.load(Ordering::SeqCst);
    let e = never.resolve_tag("team/app", "v1").await.unwrap_err().to_string();
    assert!(e.contains("HTTP 503") && e.contains("peer_tags: never"), "{e}");
    assert_eq!(peer.asked.load(Ordering::SeqCst), asked, "peer_tags: never asked a peer");
}

/// A registry that knows one tag and can be made to hang.
struct Hanging {
    hang: std::sync::atomic::AtomicBool,
}

async fn hanging_head(State(h): State<Arc<Hanging>>) -> Response {
    if h.hang.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let mut r = StatusCode::OK.into_response();
    r.headers_mut().insert("docker-content-digest", Digest::of(b"m").oci().parse().unwrap());
    r
}

#[tokio::test]
async fn hanging_upstream_gives_the_stale_tag_after_its_timeout() {
    let h = Arc::new(Hanging { hang: std::sync::atomic::AtomicBool::new(false) });
    let app = Router::new().route("/v2/{repo}/manifests/{reference}", get(hanging_head)).with_state(Arc::clone(&h));
    let srv = Server::start(app);
    let u = Upstream::new(UpstreamConfig {
        url: format!("http://{}", srv.addr()),
        tag_ttl: Duration::ZERO,
        timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(u.resolve_tag("repo", "v1").await.unwrap().freshness, Freshness::Upstream);
    h.hang.store(true, Ordering::SeqCst);
    let start = std::time::Instant::now();
    let t = u.resolve_tag("repo", "v1").await.unwrap();
    assert_eq!((t.digest, t.freshness), (Digest::of(b"m"), Freshness::Stale));
    assert!(start.elapsed() < Duration::from_secs(5), "the timeout bounds the wait");
}

async fn slow_head(State(hits): State<Arc<AtomicUsize>>) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    // A slow upstream, so the callers below overlap.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut r = StatusCode::OK.into_response();
    r.headers_mut().insert("docker-content-digest", Digest::of(b"m").oci().parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_of_one_tag_send_one_request_upstream() {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new().route("/v2/{repo}/manifests/{reference}", get(slow_head)).with_state(Arc::clone(&hits));
    let srv = Server::start(app);
    let u = Arc::new(upstream(&format!("http://{}", srv.addr())));
    let asks: Vec<_> = (0..20)
        .map(|_| {
            let u = Arc::clone(&u);
            tokio::spawn(async move { u.resolve_tag("repo", "v1").await.unwrap().digest })
        })
        .collect();
    for a in asks {
        assert_eq!(a.await.unwrap(), Digest::of(b"m"));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

async fn slow_absent() -> StatusCode {
    // Slow enough for the second caller below to join this transfer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    StatusCode::NOT_FOUND
}

async fn good_blob(State(bytes): State<Arc<Vec<u8>>>) -> Vec<u8> {
    bytes.as_ref().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_request_joining_a_bare_digest_transfer_still_gets_the_registry_origin() {
    let data = Arc::new(blob(33, 50_000));
    let d = Digest::of(&data);
    let cdn = Server::start(Router::new().route("/blobs/{digest}", get(slow_absent)));
    let reg = Server::start(Router::new().route("/v2/{repo}/blobs/{digest}", get(good_blob)).with_state(data.clone()));
    let (cluster, _dir) = cluster_with(vec![
        cairn_cluster::Origin::http(&format!("http://{}/blobs/{{digest}}", cdn.addr())).unwrap(),
        registry_origin(&format!("http://{}", reg.addr())),
    ]);
    let bare = {
        let c = cluster.clone();
        tokio::spawn(async move { c.ensure_local(d, None).await })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cluster.transfers_in_flight() == 0 {
        assert!(std::time::Instant::now() < deadline, "the bare transfer never started");
        tokio::task::yield_now().await;
    }
    assert!(cluster.ensure_local_oci(d, hint("repo", ObjectKind::Blob)).await.unwrap());
    assert_eq!(stored(&cluster, &d), *data);
    assert!(bare.await.unwrap().unwrap_err().is_not_found(), "the bare digest alone is still absent");
}
