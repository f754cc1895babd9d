//! Who may do what, over real HTTP: the loopback-only default, and with an
//! `auth` section every kind of request (pull, push, delete, admin) by an
//! anonymous caller, a wrong password, a user without the right for the
//! repository, and a user with it, on /v1 and /v2; htpasswd files from the
//! real `htpasswd` tool; skopeo logging in.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::{self, Next};
use cairn_http::auth::{AuthConfig, Policy};
use cairn_store::Digest;
use cairn_testkit::{NodeSpec, Server, TestNode};
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

const REALM: &str = "cairn-test";
const CI_PASS: &str = "ci-secret";
const OPS_PASS: &str = "ops-secret";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn v2_node() -> TestNode {
    TestNode::start(NodeSpec { v2: true, ..Default::default() })
}

/// An htpasswd (bcrypt, made in-process) and tokens file in `dir`, and the
/// `auth` section over them: nobody anonymous; `ci` works on `team/*`;
/// `ops` and the `deployer` token may do anything.
fn auth_config(dir: &Path) -> AuthConfig {
    let ht = format!("ci:{}\nops:{}\n", bcrypt::hash(CI_PASS, 4).unwrap(), bcrypt::hash(OPS_PASS, 4).unwrap());
    std::fs::write(dir.join("htpasswd"), ht).unwrap();
    std::fs::write(dir.join("tokens"), format!("# machines\ndeployer {TOKEN}\n")).unwrap();
    serde_json::from_value(json!({
        "realm": REALM,
        "htpasswd_file": dir.join("htpasswd"),
        "tokens_file": dir.join("tokens"),
        "anonymous": [],
        "users": {
            "ci": {"pull": ["team/*"], "push": ["team/*"], "delete": ["team/*"]},
            "ops": {"pull": ["*"], "push": ["*"], "delete": ["*"], "admin": true},
            "deployer": ["pull", "push", "delete", "admin"],
        },
    }))
    .unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Who {
    Anonymous,
    WrongPassword,
    /// `ci`: rights on `team/*` only, none node-wide.
    UserWithoutTheRight,
    /// `ops`.
    User,
    /// The `deployer` token as `Authorization: Bearer`.
    Token,
}

fn with(who: Who, rb: RequestBuilder) -> RequestBuilder {
    match who {
        Who::Anonymous => rb,
        Who::WrongPassword => rb.basic_auth("ops", Some("not-the-password")),
        Who::UserWithoutTheRight => rb.basic_auth("ci", Some(CI_PASS)),
        Who::User => rb.basic_auth("ops", Some(OPS_PASS)),
        Who::Token => rb.bearer_auth(TOKEN),
    }
}

async fn push_image(c: &Client, base: &str, repo: &str, who: Who) -> Digest {
    let config = format!("{{\"repo\":\"{repo}\"}}").into_bytes();
    let cd = Digest::of(&config);
    let r = with(who, c.post(format!("{base}/v2/{repo}/blobs/uploads/?digest={}", cd.oci())))
        .body(config.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.oci(), "size": config.len()},
        "layers": [],
    }))
    .unwrap();
    let r = with(who, c.put(format!("{base}/v2/{repo}/manifests/v1")))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    Digest::of(&m)
}

fn header(r: &Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// Checks a refusal: status, challenge, body format. Returns the message.
async fn refused(r: Response, status: StatusCode, v2: bool, what: &str) -> String {
    assert_eq!(r.status(), status, "{what}");
    let challenge = header(&r, "www-authenticate");
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(challenge, format!("Basic realm=\"{REALM}\""), "{what}");
    } else {
        assert_eq!(challenge, "", "{what}: a 403 does not ask to log in");
    }
    let body: Value = r.json().await.unwrap();
    if v2 {
        let code = if status == StatusCode::UNAUTHORIZED { "UNAUTHORIZED" } else { "DENIED" };
        assert_eq!(body["errors"][0]["code"], code, "{what}: {body}");
        body["errors"][0]["detail"].as_str().unwrap_or_default().to_owned()
    } else {
        body["error"].as_str().unwrap_or_else(|| panic!("{what}: no /v1 error body: {body}")).to_owned()
    }
}

/// One request of each kind on /v2 and /v1, sent by each kind of caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_request_by_every_kind_of_caller_gets_the_right_answer_on_v1_and_v2() {
    let node = v2_node();
    let tmp = tempfile::tempdir().unwrap();
    node.state.auth.set(Policy::from_config(&auth_config(tmp.path())).unwrap());
    let (c, base) = (Client::new(), node.url());
    let team = push_image(&c, &base, "team/app", Who::User).await;
    let other = push_image(&c, &base, "other/app", Who::User).await;
    let blob = b"pushed over /v1".to_vec();
    let bd = Digest::of(&blob);

    type Req = Box<dyn Fn(&Client, &str) -> RequestBuilder>;
    // (what, /v2?, request on a repository ci may use, the same on one it may not, success status)
    let cases: Vec<(&str, bool, Req, Req, StatusCode)> = vec![
        (
            "v2 pull",
            true,
            Box::new(move |c, b| c.get(format!("{b}/v2/team/app/manifests/{}", team.oci()))),
            Box::new(move |c, b| c.get(format!("{b}/v2/other/app/manifests/{}", other.oci()))),
            StatusCode::OK,
        ),
        (
            "v2 push",
            true,
            Box::new(|c, b| c.post(format!("{b}/v2/team/app/blobs/uploads/"))),
            Box::new(|c, b| c.post(format!("{b}/v2/other/app/blobs/uploads/"))),
            StatusCode::ACCEPTED,
        ),
        (
            "v2 delete",
            true,
            Box::new(|c, b| c.delete(format!("{b}/v2/team/app/manifests/v1"))),
            Box::new(|c, b| c.delete(format!("{b}/v2/other/app/manifests/v1"))),
            StatusCode::ACCEPTED,
        ),
        (
            "v1 pull",
            false,
            Box::new(|c, b| c.get(format!("{b}/v1/health"))),
            Box::new(|c, b| c.get(format!("{b}/v1/health"))),
            StatusCode::OK,
        ),
        (
            "v1 push",
            false,
            Box::new(move |c, b| c.put(format!("{b}/v1/blobs/{bd}")).body(blob.clone())),
            Box::new(move |c, b| c.put(format!("{b}/v1/blobs/{bd}")).body(b"x".to_vec())),
            StatusCode::CREATED,
        ),
        (
            "v1 admin (sync)",
            false,
            Box::new(|c, b| c.post(format!("{b}/v1/manifests/a-0123456789ab.json/sync?peer=127.0.0.1:1"))),
            Box::new(|c, b| c.post(format!("{b}/v1/manifests/a-0123456789ab.json/sync?peer=127.0.0.1:1"))),
            // The handler's own answer (127.0.0.1:1 is no peer of this node): auth let it through.
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (what, v2, ours, theirs, ok) in &cases {
        let what = *what;
        let r = ours(&c, &base).send().await.unwrap();
        let msg = refused(r, StatusCode::UNAUTHORIZED, *v2, &format!("{what} anonymous")).await;
        assert!(msg.contains("credentials"), "{what}: {msg}");
        let r = with(Who::WrongPassword, ours(&c, &base)).send().await.unwrap();
        let msg = refused(r, StatusCode::UNAUTHORIZED, *v2, &format!("{what} wrong password")).await;
        assert!(msg.contains("wrong user name or password"), "{what}: {msg}");
        let r = with(Who::UserWithoutTheRight, theirs(&c, &base)).send().await.unwrap();
        let msg = refused(r, StatusCode::FORBIDDEN, *v2, &format!("{what} user without the right")).await;
        assert!(msg.contains("\"ci\""), "{what}: {msg}");
        if *v2 {
            // ci does have the right on its own repositories.
            let r = with(Who::UserWithoutTheRight, ours(&c, &base)).send().await.unwrap();
            assert_eq!(r.status(), *ok, "{what} by ci on team/app: {:?}", r.text().await);
            continue;
        }
        let r = with(Who::User, ours(&c, &base)).send().await.unwrap();
        assert_eq!(r.status(), *ok, "{what} by ops: {:?}", r.text().await);
    }
    // Nothing refused was written: the refused /v1 push left no blob, the refused delete no gap.
    assert!(node.store.size(&Digest::of(b"x")).is_err(), "a refused push stored nothing");
    let r = with(Who::User, c.get(format!("{base}/v2/other/app/manifests/v1"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "a refused delete deleted nothing");
    // The token works as Bearer and as Basic with its name.
    let r = with(Who::Token, c.delete(format!("{base}/v2/other/app/manifests/v1"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = c.get(format!("{base}/v1/info")).basic_auth("deployer", Some(TOKEN)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.get(format!("{base}/v1/info")).bearer_auth("not-a-token-of-this-node").send().await.unwrap();
    refused(r, StatusCode::UNAUTHORIZED, false, "unknown token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v2_ping_asks_for_credentials_when_auth_is_on_and_answers_200_with_them() {
    let node = v2_node();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = auth_config(tmp.path());
    cfg.anonymous = None; // anonymous pulls open: the ping still asks clients to log in
    node.state.auth.set(Policy::from_config(&cfg).unwrap());
    let (c, base) = (Client::new(), node.url());
    for path in ["/v2/", "/v2"] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(header(&r, "docker-distribution-api-version"), "registry/2.0");
        refused(r, StatusCode::UNAUTHORIZED, true, "ping without credentials").await;
        let r = with(Who::WrongPassword, c.get(format!("{base}{path}"))).send().await.unwrap();
        refused(r, StatusCode::UNAUTHORIZED, true, "ping with a wrong password").await;
        for who in [Who::UserWithoutTheRight, Who::User, Who::Token] {
            let r = with(who, c.get(format!("{base}{path}"))).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{who:?}");
        }
    }
    // Anonymous pulls themselves stay open.
    let r = c.get(format!("{base}/v2/team/app/tags/list")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "a pull goes through to the registry");
}

/// Serves `node`'s app as if every client came from `from` (the connect
/// info the server records is replaced before the auth check reads it).
fn as_if_from(node: &TestNode, from: SocketAddr) -> Server {
    let set = move |mut req: Request, next: Next| async move {
        req.extensions_mut().insert(ConnectInfo(from));
        next.run(req).await
    };
    Server::start(cairn_http::app(Arc::clone(&node.state)).layer(middleware::from_fn(set)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_pulls_are_open_and_push_delete_admin_come_only_from_loopback() {
    let node = v2_node();
    let (c, base) = (Client::new(), node.url());
    // From 127.0.0.1: everything, as before (a local try-out keeps working).
    let d = push_image(&c, &base, "lib/app", Who::Anonymous).await;
    let r = c.put(format!("{base}/v1/blobs/{}", Digest::of(b"local"))).body("local").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let remote = as_if_from(&node, "192.0.2.7:40000".parse().unwrap());
    let rbase = format!("http://{}", remote.addr());
    let r = c.get(format!("{rbase}/v2/lib/app/manifests/{}", d.oci())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "pulls are open to anyone");
    let r = c.get(format!("{rbase}/v1/blobs/{}", Digest::of(b"local"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let r = c.put(format!("{rbase}/v1/blobs/{}", Digest::of(b"remote"))).body("remote").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let msg = r.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(msg.contains("loopback") && msg.contains("auth") && msg.contains("Exposing a node"), "{msg}");
    assert!(node.store.size(&Digest::of(b"remote")).is_err(), "nothing was written");
    let r = c.post(format!("{rbase}/v2/lib/app/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.json::<Value>().await.unwrap()["errors"][0]["code"], "DENIED");
    let r = c.delete(format!("{rbase}/v2/lib/app/manifests/{}", d.oci())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c.post(format!("{rbase}/v1/manifests/a-0123456789ab.json/sync?peer=127.0.0.1:1")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c.get(format!("{base}/v2/lib/app/manifests/{}", d.oci())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the refused delete deleted nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_from_a_repository_the_caller_may_not_pull_starts_a_plain_upload() {
    let node = v2_node();
    let tmp = tempfile::tempdir().unwrap();
    node.state.auth.set(Policy::from_config(&auth_config(tmp.path())).unwrap());
    let (c, base) = (Client::new(), node.url());
    push_image(&c, &base, "other/app", Who::User).await;
    let cd = Digest::of(b"{\"repo\":\"other/app\"}");
    let mount = |repo: &str| format!("{base}/v2/team/app/blobs/uploads/?mount={}&from={repo}", cd.oci());
    let r = with(Who::UserWithoutTheRight, c.post(mount("other/app"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "ci may not read other/app: no mount, an upload session");
    let r = with(Who::User, c.post(mount("other/app"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "ops may read it: mounted");
}

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd).arg(arg).output().is_ok_and(|o| o.status.success())
}

/// `CAIRN_REQUIRE_TOOLS=1` turns a missing tool into a failure instead of a skip.
fn tool_missing(what: &str) -> bool {
    if std::env::var("CAIRN_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
        panic!("{what} is required (CAIRN_REQUIRE_TOOLS=1) but missing; run scripts/test.sh to install it");
    }
    eprintln!("skipping: {what} is not installed (scripts/test.sh installs it)");
    true
}

fn htpasswd(args: &[&str]) {
    let out = Command::new("htpasswd").args(args).output().expect("run htpasswd");
    assert!(out.status.success(), "htpasswd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_b_files_are_accepted_and_md5_files_are_refused_with_the_fix() {
    if !have("htpasswd", "-nbB") && !Path::new("/usr/bin/htpasswd").exists() && tool_missing("htpasswd") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("htpasswd");
    let f = file.to_str().unwrap();
    htpasswd(&["-cbB", f, "alice", "wonderland"]);
    htpasswd(&["-bB", f, "bob", "builder"]);
    let cfg: AuthConfig = serde_json::from_value(json!({
        "htpasswd_file": f, "users": {"alice": {"push": ["*"]}, "bob": ["pull"]}
    }))
    .unwrap();
    let node = v2_node();
    node.state.auth.set(Policy::from_config(&cfg).unwrap());
    let (c, base) = (Client::new(), node.url());
    let d = Digest::of(b"by alice");
    let put = |user: &str, pw: &str| c.put(format!("{base}/v1/blobs/{d}")).basic_auth(user, Some(pw)).body("by alice");
    assert_eq!(put("alice", "wonderlan").send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(put("bob", "builder").send().await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(put("alice", "wonderland").send().await.unwrap().status(), StatusCode::CREATED);

    let md5 = tmp.path().join("md5");
    let m = md5.to_str().unwrap();
    htpasswd(&["-cbB", m, "alice", "wonderland"]);
    htpasswd(&["-bm", m, "carol", "md5-is-weak"]);
    let cfg: AuthConfig = serde_json::from_value(json!({"htpasswd_file": m})).unwrap();
    let e = Policy::from_config(&cfg).unwrap_err().to_string();
    for want in [m, "line 2", "\"carol\"", "MD5", &format!("htpasswd -B {m} carol")] {
        assert!(e.contains(want), "{want:?} not in: {e}");
    }
}

/// A one-layer OCI layout in `dir` tagged `v1`, for skopeo to copy from;
/// returns the layer's digest.
fn oci_layout(dir: &Path) -> Digest {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let write = |bytes: &[u8]| {
        let d = Digest::of(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).unwrap();
        d
    };
    let tar = cairn_testkit::registry::tar_one_file("hello.txt", b"hello from an authenticated push\n");
    let layer = cairn_testkit::registry::gzip_stored(&tar);
    let ld = write(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        Digest::of(&tar).oci()
    );
    let config = config.as_bytes();
    let cd = write(config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.oci(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld.oci(), "size": layer.len()}],
    }))
    .unwrap();
    let md = write(&manifest);
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md.oci(), "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    ld
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_with_dest_creds_and_a_wrong_password_fails_writing_nothing() {
    if !have("skopeo", "--version") && tool_missing("skopeo") {
        return;
    }
    let node = v2_node();
    let tmp = tempfile::tempdir().unwrap();
    node.state.auth.set(Policy::from_config(&auth_config(tmp.path())).unwrap());
    let layout = tmp.path().join("layout");
    let layer = oci_layout(&layout);
    let pol = cairn_testkit::registry::skopeo_policy(tmp.path());
    let src = format!("oci:{}:v1", layout.display());
    let dest = format!("docker://{}/team/app:v1", node.addr());
    let copy = move |creds: &str| {
        Command::new("skopeo")
            .arg("--policy")
            .arg(&pol)
            .args(["copy", "--dest-tls-verify=false", "--dest-creds", creds, &src, &dest])
            .output()
            .unwrap()
    };
    let out = tokio::task::spawn_blocking({
        let copy = copy.clone();
        move || copy(&format!("ci:{}", "wrong-password"))
    })
    .await
    .unwrap();
    assert!(!out.status.success(), "a wrong password must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") || err.to_lowercase().contains("unauthorized"), "{err}");
    let repo = cairn_store::oci::RepoName::parse("team/app").unwrap();
    let tags = node.state.registry.as_ref().unwrap().tags(&repo);
    assert!(tags.as_ref().map(|t| t.is_empty()).unwrap_or(true), "nothing was tagged: {tags:?}");
    assert!(node.store.size(&layer).is_err(), "no layer was stored");

    let out = tokio::task::spawn_blocking(move || copy(&format!("ci:{CI_PASS}"))).await.unwrap();
    assert!(out.status.success(), "skopeo with --dest-creds: {}", String::from_utf8_lossy(&out.stderr));
    let r = Client::new()
        .get(format!("{}/v2/team/app/manifests/v1", node.url()))
        .basic_auth("ci", Some(CI_PASS))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// bcrypt is slow on purpose; a client's every request must not pay it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_requests_with_basic_auth_pay_bcrypt_once_not_per_request() {
    let node = v2_node();
    let tmp = tempfile::tempdir().unwrap();
    // Cost 10: a check takes long enough to see in the timing, whatever the machine.
    std::fs::write(tmp.path().join("htpasswd"), format!("ci:{}\n", bcrypt::hash("pw", 10).unwrap())).unwrap();
    let cfg: AuthConfig = serde_json::from_value(json!({
        "htpasswd_file": tmp.path().join("htpasswd"), "anonymous": [], "users": {"ci": ["pull"]}
    }))
    .unwrap();
    node.state.auth.set(Policy::from_config(&cfg).unwrap());
    let d = Digest::of(b"head me");
    node.store.put_reader(&b"head me"[..], Some(&d)).unwrap();
    let (c, url) = (Client::new(), format!("{}/v1/blobs/{d}", node.url()));
    let t = std::time::Instant::now();
    let r = c.head(&url).basic_auth("ci", Some("pw")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let first = t.elapsed();
    let t = std::time::Instant::now();
    for _ in 0..50 {
        let r = c.head(&url).basic_auth("ci", Some("pw")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let next_50 = t.elapsed();
    assert!(next_50 < first * 10, "50 HEADs took {next_50:?}, one bcrypt check {first:?}: credentials are not cached");
    let r = c.head(&url).basic_auth("ci", Some("other")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "the cache holds only the verified pair");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oras_pushes_with_basic_auth_and_a_wrong_password_is_refused_writing_nothing() {
    let has_oras = Command::new("python3").args(["-c", "import oras"]).output().is_ok_and(|o| o.status.success());
    if !has_oras && tool_missing("python3 with the oras package (pip install oras)") {
        return;
    }
    let node = v2_node();
    let tmp = tempfile::tempdir().unwrap();
    node.state.auth.set(Policy::from_config(&auth_config(tmp.path())).unwrap());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oras_auth.py");
    let run = |password: &'static str, work: std::path::PathBuf| {
        let (script, host) = (script.clone(), node.addr());
        std::fs::create_dir_all(&work).unwrap();
        tokio::task::spawn_blocking(move || {
            Command::new("python3").arg(script).arg(host).arg(work).args(["ci", password]).output().unwrap()
        })
    };
    let out = run("wrong-password", tmp.path().join("wrong")).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "refused: {err}");
    assert!(err.contains("UNAUTHORIZED") && err.contains("wrong user name or password"), "{err}");
    let catalog = node.state.registry.as_ref().unwrap().catalog().unwrap();
    assert!(catalog.is_empty(), "nothing was written: {catalog:?}");
    let out = run(CI_PASS, tmp.path().join("right")).await.unwrap();
    assert!(out.status.success(), "oras with ci's password: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(node.state.registry.as_ref().unwrap().catalog().unwrap(), ["team/oras"]);
}

/// containerd with credentials: `ctr --user` (what a person types), and the
/// `hosts.toml` `header` a node's containerd uses to send a token to its
/// mirror. A wrong password or no credentials fails; the right ones fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_fetches_with_user_or_a_hosts_toml_token_and_fails_without() {
    let Some(ctd) = cairn_testkit::containerd::Containerd::start() else {
        if !Path::new(cairn_testkit::containerd::CTR).exists() {
            tool_missing("containerd and ctr");
        }
        return;
    };
    let node = v2_node();
    let tmp = tempfile::tempdir().unwrap();
    node.state.auth.set(Policy::from_config(&auth_config(tmp.path())).unwrap());
    let (c, base) = (Client::new(), node.url());
    let manifest = push_image(&c, &base, "team/app", Who::User).await;
    let reference = format!("{}/team/app:v1", node.addr());
    let ns = cairn_testkit::containerd::NAMESPACE;
    let fetch = |extra: &[&str]| {
        let mut args = vec!["-n", ns, "content", "fetch"];
        args.extend_from_slice(extra);
        args.push(&reference);
        ctd.ctr(&args)
    };
    let out = tokio::task::block_in_place(|| fetch(&["--plain-http", "--user", "ci:wrong-password"]));
    assert!(!out.status.success(), "a wrong password must fail");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("401") || err.contains("unauthorized"), "{err}");
    assert!(tokio::task::block_in_place(|| fetch(&["--plain-http"])).status.code() != Some(0), "no credentials");
    assert!(!ctd.content_digests().contains(&manifest.oci()), "nothing was fetched");
    let user = format!("ci:{CI_PASS}");
    let out = tokio::task::block_in_place(|| fetch(&["--plain-http", "--user", &user]));
    assert!(out.status.success(), "ctr --user: {}", String::from_utf8_lossy(&out.stderr));
    assert!(ctd.content_digests().contains(&manifest.oci()));

    // hosts.toml: the README's mirror entry with the token as a header.
    let hosts = tmp.path().join("certs.d");
    std::fs::create_dir_all(hosts.join(node.addr())).unwrap();
    let toml = format!(
        "server = \"http://{a}\"\n\n[host.\"http://{a}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  \
         [host.\"http://{a}\".header]\n    Authorization = \"Bearer {TOKEN}\"\n",
        a = node.addr()
    );
    std::fs::write(hosts.join(node.addr()).join("hosts.toml"), toml).unwrap();
    push_image(&c, &base, "team/other", Who::User).await;
    let reference = format!("{}/team/other:v1", node.addr());
    let h = hosts.to_str().unwrap();
    let out = tokio::task::block_in_place(|| ctd.ctr(&["-n", ns, "content", "fetch", "--hosts-dir", h, &reference]));
    assert!(out.status.success(), "hosts.toml with a token header: {}", String::from_utf8_lossy(&out.stderr));
}

/// `podman` with its storage and auth file in `dir` (vfs: no overlay needed).
fn podman(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(["--storage-driver", "vfs", "--events-backend", "file"])
        .args(args)
        .env("REGISTRY_AUTH_FILE", dir.join("auth.json"))
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_login_then_push_works_and_a_wrong_password_is_refused() {
    if !have("podman", "--version") && tool_missing("podman") {
        return;
    }
    let node = v2_node();
    let tmp = tempfile::tempdir().unwrap();
    node.state.auth.set(Policy::from_config(&auth_config(tmp.path())).unwrap());
    // podman names the image after the layout's path, which must be lowercase.
    let lower = tempfile::Builder::new()
        .prefix(&format!("cairn-podman-{}", std::process::id()))
        .rand_bytes(0)
        .tempdir()
        .unwrap();
    let layout = lower.path().join("layout");
    oci_layout(&layout);
    let (dir, host) = (tmp.path().join("podman"), node.addr());
    let pol = cairn_testkit::registry::skopeo_policy(tmp.path());
    let pol = pol.to_str().unwrap().to_owned();
    let src = format!("oci:{}:v1", layout.display());
    let dest = format!("{host}/team/podman:v1");
    let out = tokio::task::spawn_blocking(move || {
        let login = |pw: &str| podman(&dir, &["login", "--tls-verify=false", "-u", "ci", "-p", pw, &host]);
        let wrong = login("wrong-password");
        let right = login(CI_PASS);
        let pull = podman(&dir, &["pull", "--signature-policy", &pol, &src]);
        assert!(pull.status.success(), "podman pull oci: {}", String::from_utf8_lossy(&pull.stderr));
        let local = String::from_utf8_lossy(&pull.stdout).trim().to_owned();
        let push = podman(&dir, &["push", "--tls-verify=false", "--signature-policy", &pol, &local, &dest]);
        (wrong, right, push)
    })
    .await
    .unwrap();
    let (wrong, right, push) = out;
    assert!(!wrong.status.success(), "podman login with a wrong password must fail");
    let err = String::from_utf8_lossy(&wrong.stderr).to_lowercase();
    assert!(err.contains("invalid username/password") || err.contains("401"), "{err}");
    assert!(right.status.success(), "podman login: {}", String::from_utf8_lossy(&right.stderr));
    assert!(push.status.success(), "podman push after login: {}", String::from_utf8_lossy(&push.stderr));
    let repo = cairn_store::oci::RepoName::parse("team/podman").unwrap();
    assert_eq!(node.state.registry.as_ref().unwrap().tags(&repo).unwrap(), ["v1"]);
}
