//! The cluster-wide `/v2` mirror: Cairn nodes pulling through from a real
//! upstream registry (open, and behind token auth with credentials),
//! serving a cached tag while the upstream is down, tags resolved at the
//! upstream before any peer, and a three-node cluster where skopeo pulls
//! from one node an image pushed to another with no object from the upstream.

mod common;

use std::time::Duration;

use cairn_cluster::mirror::PeerTags;
use cairn_cluster::upstream::UpstreamConfig;
use cairn_store::Digest;
use cairn_testkit::registry::{
    OCI_MANIFEST, PushedImage, RegistryAuth, TestRegistry, TokenOptions, TokenServer, push_image, skopeo,
    skopeo_policy, tool_available,
};
use cairn_testkit::{NodeSpec, TestNode, blob, start_cluster};

fn mirror_spec(upstream: UpstreamConfig) -> NodeSpec {
    NodeSpec { v2: true, registries: vec![upstream], peer_timeout: Duration::from_secs(5), ..Default::default() }
}

fn upstream(url: &str, tag_ttl: Duration) -> UpstreamConfig {
    UpstreamConfig { url: url.into(), tag_ttl, timeout: Duration::from_secs(3), ..Default::default() }
}

/// `GET` through a node's `/v2`: status, `Docker-Content-Digest`, body.
async fn get(node: &TestNode, path: &str) -> (u16, Option<String>, Vec<u8>) {
    let r = reqwest::Client::new()
        .get(format!("{}/v2/{path}", node.url()))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let digest = r.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (status, digest, r.bytes().await.unwrap().to_vec())
}

/// Pulls `repo:tag` through `node` like a client: manifest by tag, then
/// the config and every layer; checks every byte.
async fn pull(node: &TestNode, repo: &str, tag: &str, img: &PushedImage, layers: &[Vec<u8>]) {
    let (status, digest, body) = get(node, &format!("{repo}/manifests/{tag}")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(digest, Some(img.manifest.oci()));
    assert_eq!(body, img.manifest_bytes);
    let (status, _, _) = get(node, &format!("{repo}/blobs/{}", img.config.oci())).await;
    assert_eq!(status, 200);
    for (d, want) in img.layers.iter().zip(layers) {
        let (status, _, body) = get(node, &format!("{repo}/blobs/{}", d.oci())).await;
        assert_eq!(status, 200);
        assert!(body == *want, "layer {d} differs");
    }
}

fn upstream_reads(reg: &TestRegistry) -> Vec<String> {
    reg.requests_settled().into_iter().filter(|r| r.starts_with("GET ") || r.starts_with("HEAD ")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_is_pulled_through_a_node_from_an_open_upstream_then_served_without_it() {
    let Some(reg) = TestRegistry::start(RegistryAuth::None) else { return };
    let layers = vec![blob(40, 3 << 20), blob(41, 1000)];
    let img = push_image(&reg.url(), None, "team/app", "v1", &layers).await;
    let node = TestNode::start(mirror_spec(upstream(&reg.url(), Duration::from_secs(3600))));

    pull(&node, "team/app", "v1", &img, &layers).await;
    let first = upstream_reads(&reg);
    assert!(first.iter().any(|r| r.starts_with("GET /v2/team/app/blobs/")), "{first:?}");
    for d in img.layers.iter().chain([&img.manifest, &img.config]) {
        // A streamed miss is linked into the store just after its response ends.
        let cached = common::wait_until(Duration::from_secs(20), || node.store.exists(d)).await;
        assert!(cached, "{d} is cached in the node's store");
    }

    pull(&node, "team/app", "v1", &img, &layers).await;
    assert_eq!(upstream_reads(&reg).len(), first.len(), "a second pull asks the upstream nothing");

    let (status, _, _) = get(&node, "team/app/manifests/no-such-tag").await;
    assert_eq!(status, 404);
    let (status, _, _) = get(&node, &format!("team/app/blobs/{}", Digest::of(b"absent").oci())).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_is_pulled_through_a_node_from_a_token_auth_upstream_with_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let opts = TokenOptions { creds: Some(("puller".into(), "pa55".into())), ..Default::default() };
    let Some(tokens) = TokenServer::start(dir.path(), opts) else { return };
    let Some(reg) = TestRegistry::start(RegistryAuth::Token(&tokens)) else { return };
    let push = tokens.issue(&["repository:private/app:pull,push"]);
    let layers = vec![blob(42, 2 << 20), blob(43, 500)];
    let img = push_image(&reg.url(), Some(&push), "private/app", "v1", &layers).await;

    let with_creds = UpstreamConfig {
        username: Some("puller".into()),
        password: Some("pa55".into()),
        ..upstream(&reg.url(), Duration::from_secs(3600))
    };
    let node = TestNode::start(mirror_spec(with_creds));
    pull(&node, "private/app", "v1", &img, &layers).await;
    assert_eq!(tokens.requests(), 1, "one token for the repository, reused for every request");

    // Without credentials the token endpoint refuses: the upstream failed
    // (502), it did not say the tag is absent (which would be a 404).
    let anonymous = TestNode::start(mirror_spec(upstream(&reg.url(), Duration::from_secs(3600))));
    let (status, _, body) = get(&anonymous, "private/app/manifests/v1").await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    assert!(!anonymous.store.exists(&img.manifest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_tag_is_served_while_the_upstream_is_stopped() {
    let Some(mut reg) = TestRegistry::start(RegistryAuth::None) else { return };
    let layers = vec![blob(44, 1 << 20)];
    let img = push_image(&reg.url(), None, "team/app", "v1", &layers).await;
    // A zero TTL asks the upstream every time it is up: only its absence
    // makes the node answer from the cache.
    let node = TestNode::start(mirror_spec(upstream(&reg.url(), Duration::ZERO)));
    pull(&node, "team/app", "v1", &img, &layers).await;
    let moved = push_image(&reg.url(), None, "team/app", "v1", &[blob(45, 10)]).await;
    let (_, digest, _) = get(&node, "team/app/manifests/v1").await;
    assert_eq!(digest, Some(moved.manifest.oci()), "an expired tag is asked again");

    reg.stop();
    let (status, digest, body) = get(&node, "team/app/manifests/v1").await;
    assert_eq!((status, digest), (200, Some(moved.manifest.oci())));
    assert_eq!(body, moved.manifest_bytes);
    let (status, _, _) = get(&node, "team/app/manifests/never-pulled").await;
    assert_eq!(status, 502, "a tag never resolved cannot be served from the cache: the upstream's outage shows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_tag_endpoint_answers_local_tags_and_refuses_bad_names() {
    let node = TestNode::start(NodeSpec { v2: true, ..Default::default() });
    let img = push_image(&node.url(), None, "team/app", "v1", &[blob(46, 10)]).await;
    let client = reqwest::Client::new();
    let ask = |repo: &str, tag: &str| {
        client.get(format!("{}/v1/oci/tag", node.url())).query(&[("repo", repo), ("tag", tag)]).send()
    };
    let r = ask("team/app", "v1").await.unwrap();
    assert_eq!(r.status(), 200);
    let a: cairn_http::v1::wire::TagAnswer = r.json().await.unwrap();
    assert_eq!((a.digest, a.media_type.as_deref()), (img.manifest.oci(), Some(OCI_MANIFEST)));
    assert_eq!(ask("team/app", "v2").await.unwrap().status(), 404);
    assert_eq!(ask("Team/App", "v1").await.unwrap().status(), 400);
    assert_eq!(ask("team/app", "-bad").await.unwrap().status(), 400);

    let c = cairn_http::Client::new(Duration::from_secs(2));
    let t = c.resolve_tag(&node.addr(), "team/app", "v1").await.unwrap().unwrap();
    assert_eq!(t.digest, img.manifest);
    assert_eq!(c.resolve_tag(&node.addr(), "team/app", "v2").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pushed_to_node_a_is_pulled_with_skopeo_from_node_c_with_no_object_from_the_upstream() {
    if !tool_available("/usr/bin/skopeo") {
        return;
    }
    let Some(reg) = TestRegistry::start(RegistryAuth::None) else { return };
    // The cluster's own tags first: an image pushed to one node under a mirrored name.
    let spec = NodeSpec { peer_tags: PeerTags::First, ..mirror_spec(upstream(&reg.url(), Duration::from_secs(3600))) };
    let nodes = start_cluster(3, spec);
    let layers = vec![blob(47, 4 << 20), blob(48, 64 << 10)];
    let img = push_image(&nodes[0].url(), None, "team/app", "v1", &layers).await;

    let dir = tempfile::tempdir().unwrap();
    let policy = skopeo_policy(dir.path());
    let out = dir.path().join("out");
    let src = format!("docker://{}/team/app:v1", nodes[2].addr());
    let dest = format!("dir:{}", out.display());
    tokio::task::spawn_blocking(move || skopeo(&policy, &["copy", "--src-tls-verify=false", &src, &dest]))
        .await
        .unwrap();

    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), img.manifest_bytes);
    for (d, want) in img.layers.iter().zip(&layers) {
        assert!(std::fs::read(out.join(d.hex())).unwrap() == *want, "layer {d} differs");
        assert!(nodes[2].store.exists(d), "node C caches what it served");
    }
    assert!(!nodes[1].store.exists(&img.layers[0]), "node B was not involved");
    assert!(nodes[0].counters.get("GET /v1/blobs") >= 3, "node A served the manifest, config and layers");
    // The peers answered the tag first: nothing at all came from the upstream.
    let reads = upstream_reads(&reg);
    assert!(reads.is_empty(), "the upstream was asked: {reads:?}");
}

/// The issue's scenario: node A (no upstream) holds a different manifest
/// under the upstream's tag; nodes mirroring the upstream with a zero TTL
/// and A as a peer must serve the upstream's digest, and take A's word only
/// as `peer_tags` allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_tag_resolves_at_the_upstream_before_any_peer_and_peers_stand_in_only_as_peer_tags_says() {
    let Some(mut reg) = TestRegistry::start(RegistryAuth::None) else { return };
    let real = push_image(&reg.url(), None, "library/alpine", "latest", &[blob(50, 1000)]).await;
    // Members of one cluster (a shared secret): a peer's tag counts only then.
    fn member(c: &mut cairn_cluster::ClusterConfig) {
        c.cluster_secret =
            Some(cairn_cluster::membership::ClusterSecret::new(cairn_testkit::SECRET.as_bytes()).unwrap());
    }
    let a = TestNode::start(NodeSpec { v2: true, tune: Some(member), ..Default::default() });
    let spoof = push_image(&a.url(), None, "library/alpine", "latest", &[blob(51, 1000)]).await;
    let local = push_image(&a.url(), None, "library/alpine", "cluster-only", &[blob(52, 1000)]).await;
    assert_ne!(real.manifest, spoof.manifest);
    let spec = |peer_tags| NodeSpec {
        peers: vec![a.addr()],
        peer_tags,
        tune: Some(member),
        ..mirror_spec(upstream(&reg.url(), Duration::ZERO))
    };
    let b = TestNode::start(spec(PeerTags::Fallback));
    let first = TestNode::start(spec(PeerTags::First));
    let never = TestNode::start(spec(PeerTags::Never));
    // Asks nothing until the upstream is down, so it has no cached answer.
    let late = TestNode::start(spec(PeerTags::Fallback));
    // Each has proved a's membership (and a theirs) before anything is asked.
    for n in [&b, &first, &never, &late] {
        n.state.cluster.probe_all().await;
    }

    let latest = "library/alpine/manifests/latest";
    let (status, digest, body) = get(&b, latest).await;
    assert_eq!((status, digest), (200, Some(real.manifest.oci())), "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, real.manifest_bytes);
    let (_, digest, _) = get(&b, latest).await;
    assert_eq!(digest, Some(real.manifest.oci()), "asked upstream again (zero TTL), still its digest");
    let (_, digest, _) = get(&first, latest).await;
    assert_eq!(digest, Some(spoof.manifest.oci()), "peer_tags: first takes the peer's word");

    // A tag the upstream does not have: its answer stands, only `first` takes the cluster's.
    let cluster_only = "library/alpine/manifests/cluster-only";
    let (status, _, _) = get(&b, cluster_only).await;
    assert_eq!(status, 404, "fallback: a tag the upstream says it lacks is not taken from a peer");
    let (status, digest, _) = get(&first, cluster_only).await;
    assert_eq!((status, digest), (200, Some(local.manifest.oci())), "peer_tags: first takes the cluster's tag");
    let (status, _, _) = get(&never, cluster_only).await;
    assert_eq!(status, 404, "peer_tags: never asks no peer");

    reg.stop();
    let (status, digest, _) = get(&late, latest).await;
    assert_eq!((status, digest), (200, Some(spoof.manifest.oci())), "upstream down: a peer stands in");
    let (status, digest, _) = get(&b, latest).await;
    assert_eq!((status, digest), (200, Some(real.manifest.oci())), "the upstream's own last answer beats a peer's");
    let (status, _, _) = get(&never, latest).await;
    assert_eq!(status, 502, "peer_tags: never, upstream down, nothing cached: the outage, not a miss");
}

/// A peer whose tag answers are wrong in the way `mode` says.
async fn lying_peer(axum::extract::State(mode): axum::extract::State<&'static str>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let digest = Digest::of(b"x").oci();
    match mode {
        "other-tag" => {
            axum::Json(serde_json::json!({"repo": "team/app", "tag": "v9", "digest": digest})).into_response()
        }
        "bad-digest" => {
            axum::Json(serde_json::json!({"repo": "team/app", "tag": "v1", "digest": "md5:abc"})).into_response()
        }
        _ => "not json".into_response(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_tag_answers_of_the_wrong_shape_are_errors_naming_the_peer() {
    let c = cairn_http::Client::new(Duration::from_secs(2));
    for (mode, says) in [("other-tag", "answered for team/app:v9"), ("bad-digest", "md5:abc"), ("junk", "JSON")] {
        let app = axum::Router::new().route("/v1/oci/tag", axum::routing::get(lying_peer)).with_state(mode);
        let srv = cairn_testkit::Server::start(app);
        let e = c.resolve_tag(&srv.addr(), "team/app", "v1").await.unwrap_err().to_string();
        assert!(e.contains(&srv.addr()) && e.contains(says), "{mode}: {e}");
    }
}

/// An address where nothing listens: connections to it are refused.
fn dead_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// The issue's bug: `/v2` answered 404 for a tag while its upstream was
/// down, where `/v1/fetch` answers 502. Every remote failure is now the
/// status `/v1` gives it; only an upstream's "no such thing" is a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_upstream_outage_is_502_not_404() {
    let dead = dead_address();
    let spec = NodeSpec {
        origins: vec![format!("{dead}/blobs/{{digest}}")],
        origin_retries: Some(0),
        ..mirror_spec(upstream(&dead, Duration::from_secs(3600)))
    };
    let node = TestNode::start(spec);
    let c = reqwest::Client::new();
    let absent = Digest::of(b"somewhere upstream");
    for path in [
        "team/app/manifests/v1".to_owned(),
        format!("team/app/manifests/{}", absent.oci()),
        format!("team/app/blobs/{}", absent.oci()),
    ] {
        let r = c.get(format!("{}/v2/{path}", node.url())).header("accept", OCI_MANIFEST).send().await.unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(status, 502, "GET {path}: {body}");
        assert_eq!(body["errors"][0]["code"], "UNKNOWN", "{path}: {body}");
        assert!(body.to_string().contains("unreachable"), "the answer names the failure: {body}");
    }
    let r = c.head(format!("{}/v2/team/app/blobs/{}", node.url(), absent.oci())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 502, "HEAD of a blob");
    // The same outage on /v1 (the URL origin; a bare digest names no repository).
    let r = c.get(format!("{}/v1/fetch/{}", node.url(), absent)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 502, "/v1/fetch");
}
