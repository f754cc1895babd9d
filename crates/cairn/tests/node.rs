//! User stories of the node, with the real `cairn` binary: serve from a
//! config file, stop on SIGTERM, and the cluster commands against it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use cairn_store::Digest;
use cairn_testkit::{NodeProcess as Node, free_port, health_ok};

fn serve(dir: &Path, config: &str) -> Node {
    let cfg = dir.join("cairn.yaml");
    std::fs::write(&cfg, config).unwrap();
    let addr =
        config.lines().find_map(|l| l.strip_prefix("listen_addr: ")).map(|a| a.trim_matches('"').to_owned()).unwrap();
    let node = Node::serve_logged(env!("CARGO_BIN_EXE_cairn"), &cfg, &addr);
    assert!(health_ok(&node.addr), "a fresh node is healthy");
    node
}

fn sigterm(node: &mut Node) -> std::process::ExitStatus {
    let pid = node.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(st) = node.child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "node did not stop within 15 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cairn(args: &[&str]) -> std::process::Output {
    Command::cargo_bin("cairn").unwrap().args(args).env_remove("CAIRN_CONFIG").output().unwrap()
}

fn node_config(dir: &Path, port: u16, peers: &[String]) -> String {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "node_id: n{port}\nlisten_addr: \"127.0.0.1:{port}\"\npeers: [{}]\npeer_timeout: 2s\nhealth_interval: 1s\n\
         enable_cdn_fallback: true\ndata_dir: \"{}\"\nmax_concurrent_fetches: 4\n",
        peers.join(", "),
        dir.join("data").display()
    )
}

#[test]
fn serve_with_a_config_file_becomes_ready_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut node = serve(dir.path(), &node_config(dir.path(), port, &[]));
    let out = cairn(&["peers", "--node", &node.addr, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let status = sigterm(&mut node);
    assert!(status.success(), "exit status {status:?}");
    // Nothing half-written is left behind.
    assert_eq!(std::fs::read_dir(dir.path().join("data/tmp")).unwrap().count(), 0);
    assert!(!health_ok(&node.addr));
}

#[test]
fn a_manifest_with_the_longest_allowed_name_is_pushed_served_and_listed_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let node = serve(dir.path(), &node_config(dir.path(), free_port(), &[]));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = cairn_http::Client::new(Duration::from_secs(5));
    let d = Digest::of(b"long");
    rt.block_on(client.put_blob(&node.addr, &d, b"long".to_vec())).unwrap();
    let name = "n".repeat(cairn_store::name::MAX_REF_NAME_LEN);
    let json = serde_json::to_vec(&serde_json::json!({"name": name, "objects": {"f": d.to_string()}})).unwrap();
    let rf = cairn_testkit::ref_file_for(&name, &json);
    assert_eq!(rf.as_str().len(), 255);
    rt.block_on(client.put_manifest(&node.addr, &rf, json.clone().into())).unwrap();
    let got = rt.block_on(client.manifest(&node.addr, &rf)).unwrap();
    assert_eq!(got, json);
    let data = dir.path().join("data");
    let out = cairn(&["manifests", "--json", "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(rf.as_str()));
}

/// What an operator reads first: one line saying how the node is set up,
/// shown without `RUST_LOG`, and no colour codes in a log that is not a
/// terminal (a journal, a file).
#[test]
fn serve_logs_one_start_line_with_every_setting_and_no_ansi_colour_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (port, reg_port, dead) = (free_port(), free_port(), free_port());
    let data = dir.path().join("data");
    let cfg = dir.path().join("cairn.yaml");
    std::fs::write(
        &cfg,
        format!(
            "node_id: start-line\nlisten_addr: \"127.0.0.1:{port}\"\nregistry_addr: \"127.0.0.1:{reg_port}\"\n\
             peers: [\"127.0.0.1:{dead}\"]\ndata_dir: \"{}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(["serve", "--config"]).arg(&cfg).env_remove("RUST_LOG").env_remove("CAIRN_CONFIG");
    let mut node = Node::spawn(cmd, &format!("127.0.0.1:{port}"));
    // Logged before the node serves, so it is there once it answers.
    let log = node.log();
    let start =
        log.lines().find(|l| l.contains("cairn node serving")).unwrap_or_else(|| panic!("no start line: {log}"));
    for field in [
        "INFO".to_owned(),
        "node_id=start-line".to_owned(),
        format!("listen=127.0.0.1:{port}"),
        format!("registry=127.0.0.1:{reg_port}"),
        format!("data_dir={}", data.display()),
        format!("peers=[\"127.0.0.1:{dead}\"]"),
        "discovery=static".to_owned(),
        "cluster_secret=\"off: peers unauthenticated\"".to_owned(),
        "auth=\"no auth section: pulls are open to anyone; push, delete and admin requests are accepted from loopback clients only".to_owned(),
        "tls=off".to_owned(),
    ] {
        assert!(start.contains(&field), "{field} is missing from the start line: {start}");
    }
    let status = sigterm(&mut node);
    assert!(status.success(), "exit status {status:?}");
    let all = node.log();
    assert_eq!(all.matches("cairn node serving").count(), 1, "{all}");
    assert!(!all.contains('\x1b'), "an ANSI escape in a log written to a file:\n{all}");
}

#[test]
fn serve_refuses_an_unknown_config_key_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, "listen_addr: \"127.0.0.1:1\"\npeer_timout: 5s\n").unwrap();
    let out = cairn(&["serve", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("peer_timout") && err.contains("c.yaml"), "{err}");
}

#[test]
fn two_served_nodes_share_blobs_through_fetch_sync_and_the_cluster_commands() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (pa, pb) = (free_port(), free_port());
    let a_addr = format!("127.0.0.1:{pa}");
    let b_addr = format!("127.0.0.1:{pb}");
    let mut a = serve(da.path(), &node_config(da.path(), pa, std::slice::from_ref(&b_addr)));
    let mut b = serve(db.path(), &node_config(db.path(), pb, std::slice::from_ref(&a_addr)));

    // Put a blob and a manifest on A through its API.
    let data = cairn_testkit::blob(7, 300_000);
    let d = Digest::of(&data);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = cairn_http::Client::new(Duration::from_secs(5));
    rt.block_on(client.put_blob(&a.addr, &d, data.clone())).unwrap();
    let json = serde_json::to_vec_pretty(&serde_json::json!({"name": "app", "created_at": "2024-01-01T00:00:00Z",
        "objects": {"bin/app": d.to_string()}}))
    .unwrap();
    let rf = cairn_testkit::ref_file_for("app", &json);
    rt.block_on(client.put_manifest(&a.addr, &rf, json.into())).unwrap();

    // Fetch through B's pipeline: B pulls it from A.
    let out_file = db.path().join("out.bin");
    let out = cairn(&["fetch", &d.to_string(), "-o", out_file.to_str().unwrap(), "--node", &b.addr]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&out_file).unwrap(), data);
    // B links the blob into its store just after the response ends.
    let obj = db.path().join("data/objects").join(d.to_string());
    let end = Instant::now() + Duration::from_secs(10);
    while !obj.is_file() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(obj.is_file(), "B caches the blob it fetched");

    let out = cairn(&["cluster", "stats", "--node", &b.addr, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total_nodes"], 2);
    assert_eq!(v["total_manifests"], 1);
    let out = cairn(&["cluster", "manifests", "--node", &b.addr]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(rf.as_str()));

    // Sync the manifest into a third, offline data dir.
    let dc = tempfile::tempdir().unwrap();
    let out = cairn(&["sync", &a.addr, rf.as_str(), "--data-dir", dc.path().to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["fetched"], 1);
    assert!(dc.path().join("refs").join(rf.as_str()).is_file());

    // A blob no node has: an error naming it, and no file (or temp file) left.
    let absent = Digest::of(b"absent everywhere");
    let missing_file = db.path().join("missing.bin");
    let out = cairn(&["fetch", &absent.to_string(), "-o", missing_file.to_str().unwrap(), "--node", &b.addr]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&absent.to_string()));
    assert!(!missing_file.exists() && !db.path().join(".missing.bin.cairn-part").exists());

    // To standard output: the bytes and nothing else.
    let out = cairn(&["fetch", &d.oci(), "--node", &b.addr]);
    assert!(out.status.success());
    assert!(out.stdout == data);

    // A malformed digest is bad input (exit 2) before any request.
    let out = cairn(&["fetch", "abc", "--node", &b.addr]);
    assert_eq!(out.status.code(), Some(2));

    assert!(sigterm(&mut b).success());
    assert!(sigterm(&mut a).success());
}

#[test]
fn cairn_peers_shows_each_peers_last_contact_age() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (pa, pb) = (free_port(), free_port());
    let mut b = serve(db.path(), &node_config(db.path(), pb, &[]));
    let mut a = serve(da.path(), &node_config(da.path(), pa, &[b.addr.clone()]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let table = loop {
        let out = cairn(&["peers", "--node", &a.addr]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let table = String::from_utf8_lossy(&out.stdout).to_string();
        if table.contains(" ago") || Instant::now() > deadline {
            break table;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(table.lines().next().unwrap().contains("LAST_CONTACT"), "{table}");
    let row = table.lines().find(|l| l.starts_with(&b.addr)).unwrap();
    assert!(row.ends_with(" ago"), "the peer's last answer is shown with its age: {table}");
    assert!(sigterm(&mut a).success());
    assert!(sigterm(&mut b).success());
}

#[test]
fn cluster_commands_against_no_node_fail_naming_the_address() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let out = cairn(&["peers", "--node", &addr]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&addr));
}

#[test]
fn sigterm_stops_accepting_but_finishes_an_in_flight_download() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut node = serve(dir.path(), &node_config(dir.path(), port, &[]));
    let data = cairn_testkit::blob(8, 16 << 20);
    let d = Digest::of(&data);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(cairn_http::Client::new(Duration::from_secs(30)).put_blob(&node.addr, &d, data.clone())).unwrap();

    // Start a download and read only its first bytes: the rest is in flight.
    let mut s = std::net::TcpStream::connect(&node.addr).unwrap();
    std::io::Write::write_all(&mut s, format!("GET /v1/blobs/{d} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
    let mut first = vec![0u8; 4096];
    s.read_exact(&mut first).unwrap();

    let pid = node.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    // New connections are refused once shutdown has begun.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&node.addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The download in flight still completes, byte for byte.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    let text_end = first.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(first[text_end..] == data[..], "download cut by shutdown");
    let status = sigterm_wait(&mut node);
    assert!(status.success());
}

fn sigterm_wait(node: &mut Node) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(st) = node.child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "node did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `cairn --data-dir DATA ARGS`, which must succeed: its stdout.
fn cli_ok(data: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn")).arg("--data-dir").arg(data).args(args).output().unwrap();
    assert!(out.status.success(), "cairn {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn serve_runs_gc_on_its_schedule_and_keeps_referenced_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = dir.path().join("data");
    let cli = |args: &[&str]| cli_ok(&data, args);
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("kept.txt"), b"referenced by a manifest").unwrap();
    cli(&["snapshot", tree.to_str().unwrap(), "--name", "kept"]);
    let loose = dir.path().join("loose.txt");
    std::fs::write(&loose, b"referenced by nothing").unwrap();
    let hex = cli(&["put", loose.to_str().unwrap()]).split_whitespace().next().unwrap().to_owned();
    let kept = Digest::of(b"referenced by a manifest").to_string();
    let config = format!(
        "listen_addr: \"127.0.0.1:{port}\"\ndata_dir: \"{}\"\ngc_interval: 200ms\ngc_grace: 1ms\n",
        data.display()
    );
    let node = serve(dir.path(), &config);
    let deadline = Instant::now() + Duration::from_secs(20);
    while data.join("objects").join(&hex).exists() {
        assert!(Instant::now() < deadline, "the unreferenced blob is still there: {}", node.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(data.join("objects").join(&kept).exists(), "the scheduled gc deleted a referenced blob");
    node.wait_log("scheduled gc finished");
    let (status, metrics) = http_get(&node.addr, "/metrics");
    assert_eq!(status, 200);
    let runs = metrics.lines().find_map(|l| l.strip_prefix("cairn_gc_runs_total ")).unwrap_or("0");
    assert!(runs.parse::<u64>().is_ok_and(|n| n >= 1), "gc runs in /metrics: {runs}");
    let deleted = metrics.lines().find_map(|l| l.strip_prefix("cairn_gc_deleted_blobs_total ")).unwrap_or("0");
    assert!(deleted.parse::<u64>().is_ok_and(|n| n >= 1), "gc deletions in /metrics: {deleted}");
}

/// `GET path` over a plain TCP connection: the status and the body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

#[test]
fn metrics_addr_serves_only_metrics_and_listen_addr_serves_them_too() {
    let dir = tempfile::tempdir().unwrap();
    let (port, mport) = (free_port(), free_port());
    let mut node = serve(
        dir.path(),
        &format!(
            "listen_addr: \"127.0.0.1:{port}\"\nmetrics_addr: \"127.0.0.1:{mport}\"\ndata_dir: \"{}\"\n",
            dir.path().join("data").display()
        ),
    );
    let metrics = format!("127.0.0.1:{mport}");
    let (status, body) = http_get(&metrics, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("# TYPE cairn_served_bytes_total counter"), "{body}");
    assert!(body.contains("cairn_disk_free_bytes "), "{body}");
    for path in ["/v1/health", "/v1/peers", "/v2/", "/"] {
        let (status, body) = http_get(&metrics, path);
        assert_eq!(status, 404, "{path} on metrics_addr: {body}");
    }
    let (status, body) = http_get(&format!("127.0.0.1:{port}"), "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("cairn_http_requests_total"), "{body}");
    let log = node.log();
    assert!(log.contains(&format!("metrics=127.0.0.1:{mport}")), "the start line names it: {log}");
    assert!(sigterm(&mut node).success());
}

#[test]
fn serve_with_a_cache_section_evicts_past_max_bytes_and_keeps_referenced_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = dir.path().join("data");
    let cli = |args: &[&str]| cli_ok(&data, args);
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let pinned = cairn_testkit::blob(1, 200_000);
    std::fs::write(tree.join("kept.bin"), &pinned).unwrap();
    cli(&["snapshot", tree.to_str().unwrap(), "--name", "kept"]);
    let mut loose = Vec::new();
    for i in 0..5u64 {
        let f = dir.path().join(format!("loose{i}"));
        std::fs::write(&f, cairn_testkit::blob(10 + i, 100_000)).unwrap();
        loose.push(cli(&["put", f.to_str().unwrap()]).split_whitespace().next().unwrap().to_owned());
    }
    let config =
        format!("listen_addr: \"127.0.0.1:{port}\"\ndata_dir: \"{}\"\ncache:\n  max_bytes: 500KB\n", data.display());
    let node = serve(dir.path(), &config);
    node.wait_log("bounded cache on");
    node.wait_log("evicted least recently used blobs");
    let objects = |d: &str| data.join("objects").join(d).exists();
    assert!(objects(&Digest::of(&pinned).to_string()), "the referenced blob was evicted");
    let left = loose.iter().filter(|d| objects(d)).count();
    assert_eq!(left, 2, "700 KB down to under 450 KB: 200 KB pinned and 2 of the 100 KB blobs");
    let (status, metrics) = http_get(&node.addr, "/metrics");
    assert_eq!(status, 200);
    let max = metrics.lines().find_map(|l| l.strip_prefix("cairn_cache_max_bytes ")).unwrap_or("0");
    assert_eq!(max, "500000", "{metrics}");
    let evicted = metrics.lines().find_map(|l| l.strip_prefix("cairn_evictions_total ")).unwrap_or("0");
    assert_eq!(evicted, "3");
}
