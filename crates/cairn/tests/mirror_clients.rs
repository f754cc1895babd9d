//! User story: real mirror clients configured as the README says pull an
//! image through `cairn serve` nodes from a local upstream registry, and
//! each blob crosses from the upstream once per cluster.
//!
//! - containerd (`ctr images pull --hosts-dir`) with the README's
//!   `hosts.toml`, first through node A, then with a fresh content store
//!   through node B, which has A as its peer.
//! - skopeo with the README's `registries.conf` mirror entry (the
//!   containers-image config podman and cri-o read too).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_testkit::containerd::Containerd;
use cairn_testkit::registry::{
    PushedImage, RegistryAuth, TestRegistry, oci_layout_image, skopeo, skopeo_policy, tool_available,
};
use cairn_testkit::{NodeProcess, blob, free_port};

const REPO: &str = "team/app";
const TAG: &str = "v1";

/// `GET` over a fresh connection: status and body, or `None` when nothing answers.
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// Polls `ready` until it holds; fails the test after `what` took 20 s or
/// the node exited.
fn wait_for(node: &mut NodeProcess, what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(node.child.try_wait().unwrap().is_none(), "cairn serve on {} exited before {what}", node.addr);
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `cairn serve` named `id` with `upstream` as its registry origin and
/// `peers`; returns once it answers `/v1/health` and sees every peer healthy.
fn serve(dir: &Path, id: &str, upstream: &str, peers: &[&str]) -> NodeProcess {
    let addr = format!("127.0.0.1:{}", free_port());
    let data = dir.join(id);
    let peer_list: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    let yaml = format!(
        "node_id: {id}\nlisten_addr: \"{addr}\"\ndata_dir: \"{}\"\npeers: [{}]\npeer_timeout: 3s\n\
         health_interval: 1s\norigins:\n  - registry: \"http://{upstream}\"\n    tag_ttl: 1h\n    timeout: 3s\n",
        data.display(),
        peer_list.join(", ")
    );
    let cfg = dir.join(format!("{id}.yaml"));
    std::fs::write(&cfg, yaml).unwrap();
    let mut node = NodeProcess::serve(env!("CARGO_BIN_EXE_cairn"), &cfg, &addr);
    assert!(http_get(&addr, "/v1/health").is_some_and(|(s, _)| s == 200), "a fresh node is healthy");
    let want = peers.len();
    wait_for(&mut node, "peers healthy", || {
        let Some((200, body)) = http_get(&addr, "/v1/peers") else { return false };
        let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
        list.iter().filter(|p| p["healthy"] == true && p["node_id"].is_string()).count() == want
    });
    node
}

/// Whether the node's data dir holds the blob (`objects/<hex>`).
fn node_has(dir: &Path, id: &str, digest: &cairn_store::Digest) -> bool {
    dir.join(id).join("objects").join(digest.hex()).is_file()
}

/// An upstream registry holding a three-layer image pushed with skopeo from
/// an OCI layout, and the layers' bytes (gzip tars) by digest.
struct Upstream {
    reg: TestRegistry,
    img: PushedImage,
    layout: PathBuf,
}

fn upstream_with_image(dir: &Path) -> Option<Upstream> {
    if !tool_available("/usr/bin/skopeo") {
        return None;
    }
    let reg = TestRegistry::start(RegistryAuth::None)?;
    let layout = dir.join("layout");
    let files = [("app/big.bin", blob(70, 1 << 20)), ("app/mid.bin", blob(71, 200_000)), ("etc/small", blob(72, 900))];
    let img = oci_layout_image(&layout, TAG, &files);
    let policy = skopeo_policy(dir);
    let src = format!("oci:{}:{TAG}", layout.display());
    skopeo(&policy, &["copy", "--dest-tls-verify=false", &src, &format!("docker://{}/{REPO}:{TAG}", reg.addr())]);
    Some(Upstream { reg, img, layout })
}

impl Upstream {
    /// Every digest of the image: manifest, config, layers.
    fn digests(&self) -> BTreeSet<String> {
        let img = &self.img;
        [img.manifest, img.config].iter().chain(&img.layers).map(|d| d.oci()).collect()
    }

    /// The bytes of one of the image's blobs, from the layout it was pushed from.
    fn blob_bytes(&self, oci: &str) -> Vec<u8> {
        let hex = oci.strip_prefix("sha256:").unwrap();
        std::fs::read(self.layout.join("blobs/sha256").join(hex)).unwrap()
    }

    /// How many `GET`s of each of the image's blobs the upstream served
    /// since request `since` of its access log.
    fn blob_gets(&self, since: usize) -> Vec<(String, usize)> {
        let reqs = self.reg.requests_settled();
        let img = &self.img;
        std::iter::once(&img.config)
            .chain(&img.layers)
            .map(|d| {
                let want = format!("GET /v2/{REPO}/blobs/{}", d.oci());
                (d.oci(), reqs[since..].iter().filter(|r| **r == want).count())
            })
            .collect()
    }
}

/// `<dir>/<upstream>/hosts.toml` as `cairn mirror configure containerd`
/// writes it: `server` the upstream, the mirror host the given node.
fn hosts_dir(dir: &Path, name: &str, upstream: &str, node: &str) -> PathBuf {
    let hosts = dir.join(name);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["mirror", "configure", "containerd", "--registry", upstream])
        .args(["--server", &format!("http://{upstream}"), "--node", &format!("http://{node}"), "--config-path"])
        .arg(&hosts)
        .output()
        .unwrap();
    assert!(out.status.success(), "cairn mirror configure: {}", String::from_utf8_lossy(&out.stderr));
    assert!(hosts.join(upstream).join("hosts.toml").is_file());
    hosts
}

/// Checks what containerd stored: exactly the image's digests, and the
/// layers byte for byte.
fn assert_containerd_holds(ctd: &Containerd, up: &Upstream) {
    assert_eq!(ctd.content_digests(), up.digests(), "containerd's content store holds exactly the image");
    for d in &up.img.layers {
        assert!(ctd.content(&d.oci()) == up.blob_bytes(&d.oci()), "layer {d} differs in containerd");
    }
}

#[test]
fn containerd_pulls_through_node_a_then_a_fresh_containerd_through_node_b_gets_only_the_tag_from_upstream() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(up) = upstream_with_image(tmp.path()) else { return };
    let Some(ctd) = Containerd::start() else { return };
    let upstream = up.reg.addr();
    let a = serve(tmp.path(), "a", &upstream, &[]);
    let b = serve(tmp.path(), "b", &upstream, &[&a.addr]);
    // The image reference names the local upstream: nothing leaves 127.0.0.1
    // even if containerd fell back to `server`.
    let reference = format!("{upstream}/{REPO}:{TAG}");
    let since = up.reg.requests_settled().len();
    let log_since = up.reg.log().len();

    ctd.pull(&hosts_dir(tmp.path(), "hosts-a", &upstream, &a.addr), &reference);
    assert_containerd_holds(&ctd, &up);
    for (d, n) in up.blob_gets(since) {
        assert_eq!(n, 1, "the upstream served {d} once (to node A)");
    }
    assert!(!up.reg.log()[log_since..].contains("containerd/"), "containerd never asked the upstream itself");
    for d in up.digests() {
        assert!(node_has(tmp.path(), "a", &d.parse().unwrap()), "node A cached {d}");
    }
    let after_a = up.reg.requests_settled().len();
    drop(ctd);

    let fresh = Containerd::start().expect("containerd started once already");
    assert!(fresh.content_digests().is_empty(), "a fresh containerd holds nothing");
    fresh.pull(&hosts_dir(tmp.path(), "hosts-b", &upstream, &b.addr), &reference);
    assert_containerd_holds(&fresh, &up);
    // Tags are not self-verifying: node B asks the upstream what the tag
    // means (one HEAD), and every byte comes from node A.
    let extra = up.reg.requests_settled()[after_a..].to_vec();
    assert_eq!(extra, [format!("HEAD /v2/{REPO}/manifests/{TAG}")], "the pull through node B reached the upstream");
    for d in up.digests() {
        assert!(node_has(tmp.path(), "b", &d.parse().unwrap()), "node B got {d} from node A");
    }
}

/// `registries.conf` for the upstream (plain HTTP), with `mirror` as its
/// pull mirror when given.
fn registries_conf(path: &Path, upstream: &str, mirror: Option<&str>) {
    let mut conf = format!("[[registry]]\nlocation = \"{upstream}\"\ninsecure = true\n");
    if let Some(m) = mirror {
        conf += &format!("\n[[registry.mirror]]\nlocation = \"{m}\"\ninsecure = true\n");
    }
    std::fs::write(path, conf).unwrap();
}

/// The manifest digest an OCI layout's `index.json` names first.
fn layout_manifest(dir: &Path) -> String {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"].as_str().unwrap().to_owned()
}

/// Checks a `skopeo copy` to the OCI layout `dir` succeeded and holds
/// the image byte for byte.
fn assert_copied(dir: &Path, run: std::process::Output, up: &Upstream) {
    let out = dir.display();
    assert!(run.status.success(), "skopeo copy to {out} failed: {}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(layout_manifest(dir), up.img.manifest.oci());
    for d in up.digests() {
        let got = std::fs::read(dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
        assert!(got == up.blob_bytes(&d), "{d} differs in {out}");
    }
}

#[test]
fn skopeo_pulls_through_a_registries_conf_mirror_and_still_pulls_with_the_upstream_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut up) = upstream_with_image(tmp.path()) else { return };
    let upstream = up.reg.addr();
    let a = serve(tmp.path(), "a", &upstream, &[]);
    let policy = skopeo_policy(tmp.path());
    let (mirrored, direct) = (tmp.path().join("mirrored.conf"), tmp.path().join("direct.conf"));
    registries_conf(&mirrored, &upstream, Some(&a.addr));
    registries_conf(&direct, &upstream, None);
    let src = format!("docker://{upstream}/{REPO}:{TAG}");
    let copy_to = |conf: &Path, out: &str| {
        let dest = format!("oci:{}:{TAG}", tmp.path().join(out).display());
        Command::new("skopeo")
            .arg("--policy")
            .arg(&policy)
            .arg("--registries-conf")
            .arg(conf)
            .args(["copy", &src, &dest])
            .output()
            .unwrap()
    };
    let since = up.reg.requests_settled().len();
    let log_since = up.reg.log().len();

    assert_copied(&tmp.path().join("first"), copy_to(&mirrored, "first"), &up);
    for (d, n) in up.blob_gets(since) {
        assert_eq!(n, 1, "the upstream served {d} once (to the node)");
    }
    assert!(!up.reg.log()[log_since..].contains("skopeo/"), "skopeo never asked the upstream itself");

    up.reg.stop();
    assert_copied(&tmp.path().join("second"), copy_to(&mirrored, "second"), &up);
    let run = copy_to(&direct, "third");
    assert!(!run.status.success(), "without the mirror entry skopeo must fail with the upstream stopped");
}
