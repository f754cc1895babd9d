//! `replicas: 2` with three real `cairn serve` processes: a push to A
//! survives A stopping (pulled from C, no origin configured), and A coming
//! back with B stopped; `cairn cluster stats` shows the replication.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use cairn_store::Digest;
use cairn_testkit::{NodeProcess as Node, free_port, health_ok};

fn config(dir: &Path, port: u16, peers: &[u16]) -> PathBuf {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let text = format!(
        "node_id: n{port}\nlisten_addr: \"127.0.0.1:{port}\"\npeers: [{}]\npeer_timeout: 2s\nhealth_interval: 300ms\n\
         enable_cdn_fallback: false\ndata_dir: \"{}\"\nreplicas: 2\n",
        peers.join(", "),
        dir.join(format!("data-{port}")).display()
    );
    let cfg = dir.join(format!("cairn-{port}.yaml"));
    std::fs::write(&cfg, text).unwrap();
    cfg
}

fn serve(cfg: &Path, port: u16) -> Node {
    let node = Node::serve(env!("CARGO_BIN_EXE_cairn"), cfg, &format!("127.0.0.1:{port}"));
    assert!(health_ok(&node.addr));
    node
}

fn stats(addr: &str) -> serde_json::Value {
    let out = Command::cargo_bin("cairn")
        .unwrap()
        .args(["cluster", "stats", "--node", addr, "--json"])
        .env_remove("CAIRN_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn pull(addr: &str, d: &Digest) -> Result<Vec<u8>, String> {
    let r = reqwest::get(format!("http://{addr}/v1/fetch/{d}")).await.map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("status {}", r.status()));
    }
    cairn_testkit::read_all(r).await
}

fn wait(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_serve_processes_with_two_replicas_keep_a_push_through_a_holder_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let cfgs: Vec<PathBuf> = (0..3)
        .map(|i| {
            let others: Vec<u16> = ports.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, p)| *p).collect();
            config(dir.path(), ports[i], &others)
        })
        .collect();
    let mut nodes: Vec<Node> = (0..3).map(|i| serve(&cfgs[i], ports[i])).collect();
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = cairn_http::Client::new(Duration::from_secs(5));
    // Every node knows the others' ids before the push (else it is placed later, by repair).
    wait("peers known", || {
        addrs.iter().all(|a| rt.block_on(client.peers(a)).is_ok_and(|ps| ps.iter().all(|p| !p.node_id.is_empty())))
    });
    let blobs: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 40_000 + usize::from(i)]).collect();
    let ds: Vec<Digest> = blobs.iter().map(|b| Digest::of(b)).collect();
    for (d, b) in ds.iter().zip(&blobs) {
        rt.block_on(client.put_blob(&addrs[0], d, b.clone())).unwrap();
    }
    let copies = |d: &Digest, on: &[&String]| {
        on.iter().filter(|a| rt.block_on(client.head_blob(a, d)).ok().flatten().is_some()).count()
    };
    wait("two copies of every blob", || ds.iter().all(|d| copies(d, &[&addrs[0], &addrs[1], &addrs[2]]) == 2));
    wait("A sees nothing under-replicated", || stats(&addrs[0])["replication"]["under_replicated"] == 0);
    let s = stats(&addrs[0]);
    assert_eq!((s["replication"]["replicas"].as_u64(), s["replication"]["held"].as_u64()), (Some(2), Some(3)));

    // A stops: every blob is pulled from C, and repair puts it on B and C.
    nodes[0].stop_and_log();
    for (d, b) in ds.iter().zip(&blobs) {
        let got = rt.block_on(pull(&addrs[2], d));
        assert!(got.as_deref().ok() == Some(b.as_slice()), "blob {d} from C with A down: {got:?}");
    }
    wait("B and C hold every blob", || ds.iter().all(|d| copies(d, &[&addrs[1], &addrs[2]]) == 2));
    wait("C holds every blob pinned", || stats(&addrs[2])["replication"]["held"] == 3);

    // A comes back on its port and data dir; B stops: still available everywhere left.
    nodes[0] = serve(&cfgs[0], ports[0]);
    nodes[1].stop_and_log();
    for (d, b) in ds.iter().zip(&blobs) {
        for a in [&addrs[0], &addrs[2]] {
            let got = rt.block_on(pull(a, d));
            assert!(got.as_deref().ok() == Some(b.as_slice()), "blob {d} from {a} with B down: {got:?}");
        }
    }
}
