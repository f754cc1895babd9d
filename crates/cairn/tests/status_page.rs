//! The status page in a real browser: headless Chromium loads `GET /` of a
//! running two-node cluster and the rendered DOM is checked against the
//! node's JSON endpoints; a screenshot is kept in the test's temp dir.
//! Everything runs in network namespaces the test makes, so neither the
//! nodes nor the browser can reach any other network.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use cairn_store::{Digest, Store};
use cairn_testkit::NodeProcess;
use cairn_testkit::netns::{Lab, tools_required};

const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");

fn chromium() -> Option<&'static str> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists());
    if found.is_none() {
        assert!(!tools_required(), "chromium is required (scripts/test.sh installs it)");
        eprintln!("SKIPPED: no chromium");
    }
    found
}

/// `curl -s URL` inside namespace `i`: the body, or `None` unless 200.
fn curl(lab: &Lab, i: usize, url: &str) -> Option<String> {
    let out = lab.command(i, "curl").args(["-sf", "--max-time", "5", url]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Node `n<i>` in namespace `i` with `peers`.
fn start(lab: &Lab, i: usize, dir: &Path, peers: &[String]) -> NodeProcess {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    lab.serve(i, CAIRN, dir, &format!("peers: [{}]\nhealth_interval: 1s\npeer_timeout: 2s\n", peers.join(", ")))
}

/// Headless Chromium in namespace 0 with its own profile, nothing in the
/// background, JavaScript given `budget_ms` of virtual time.
fn browse(lab: &Lab, profile: &Path, args: &[&str], url: &str) -> Output {
    let bin = chromium().expect("checked before");
    lab.command(0, bin)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
        .args(["--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=8000", "--window-size=1280,900"])
        .args(args)
        .arg(url)
        .output()
        .unwrap()
}

/// The text of the element with `id` in a DOM dump.
fn text_of(dom: &str, id: &str) -> String {
    let start = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in the page"));
    let open = start + dom[start..].find('>').unwrap() + 1;
    let close = open + dom[open..].find('<').unwrap();
    dom[open..close].to_owned()
}

#[test]
fn chromium_renders_the_status_page_of_a_two_node_cluster_with_the_numbers_of_its_json() {
    let Some(_) = chromium() else { return };
    let Some(lab) = Lab::new_or_skip(2, "status page test") else { return };
    let (da, db, shots) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let data = cairn_testkit::blob(95, 2 << 20);
    let d = Digest::of(&data);
    Store::open(db.path().join("data")).unwrap().put_reader(&data[..], None).unwrap();
    let (a_addr, b_addr) = (lab.node_addr(0), lab.node_addr(1));
    let _b = start(&lab, 1, db.path(), &[]);
    let _a = start(&lab, 0, da.path(), std::slice::from_ref(&b_addr));
    // One pull-through from n1, and one local hit.
    for _ in 0..2 {
        let got = lab.command(0, "curl").args(["-sf", &format!("http://{a_addr}/v1/fetch/{d}")]).output().unwrap();
        assert!(got.status.success() && got.stdout == data, "fetch through n0");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !curl(&lab, 0, &format!("http://{a_addr}/v1/peers")).is_some_and(|p| p.contains("\"node_id\":\"n1\"")) {
        assert!(Instant::now() < deadline, "n0 never saw n1 healthy");
        std::thread::sleep(Duration::from_millis(100));
    }

    let page = format!("http://{a_addr}/");
    let out = browse(&lab, &shots.path().join("profile"), &["--dump-dom"], &page);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("data-loaded=\"yes\""),
        "the page never loaded its data: {dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value =
        serde_json::from_str(&curl(&lab, 0, &format!("http://{a_addr}/v1/status")).unwrap()).unwrap();
    assert_eq!(text_of(&dom, "node-id"), "n0");
    assert_eq!(text_of(&dom, "health"), "ok");
    assert_eq!(text_of(&dom, "version"), status["version"].as_str().unwrap());
    let (hits, misses) = (status["hits"].as_u64().unwrap(), status["misses"].as_u64().unwrap());
    assert_eq!((hits, misses), (1, 1));
    assert_eq!(text_of(&dom, "hits"), format!("{hits} hits, {misses} misses"));
    assert_eq!(text_of(&dom, "hit-ratio"), "50.0 %");
    assert_eq!(text_of(&dom, "egress"), "0 B", "nothing came from an origin");
    // The peer table: B by address and id, healthy.
    let peers = &dom[dom.find("id=\"peers\"").unwrap()..dom.find("id=\"transfers\"").unwrap()];
    assert!(peers.contains(&format!("<td>{b_addr}</td><td>n1</td><td class=\"ok\">healthy</td>")), "{peers}");
    // The transfer: from peer B, ok, 2 MiB.
    let transfers = &dom[dom.find("id=\"transfers\"").unwrap()..];
    assert!(
        transfers.contains(&format!("<td>peer {b_addr}</td><td class=\"ok\">ok</td><td class=\"num\">2.0 MiB</td>")),
        "{transfers}"
    );

    let shot = shots.path().join("status.png");
    let out = browse(&lab, &shots.path().join("profile2"), &[&format!("--screenshot={}", shot.display())], &page);
    let png = std::fs::read(&shot)
        .unwrap_or_else(|e| panic!("no screenshot ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "a rendered page, {} bytes", png.len());
    eprintln!("screenshot: {}", shot.display());
    // Kept for a person to look at when the test is run by hand.
    if let Ok(keep) = std::env::var("CAIRN_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
