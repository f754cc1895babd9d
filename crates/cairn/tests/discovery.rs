//! mDNS discovery with real `cairn serve` processes, each in its own
//! network namespace on a private bridge (mDNS never runs in the root
//! namespace: it would multicast on the machine's network card). Skipped
//! with a message without root; CI (root, CAIRN_REQUIRE_TOOLS=1) runs it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_store::Store;
use cairn_testkit::NodeProcess as Node;
use cairn_testkit::netns::Lab;
use cairn_testkit::wait_for;

const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");

const MDNS: &str = "discovery: mdns\nhealth_interval: 1s\npeer_timeout: 2s\nenable_cdn_fallback: false\n";

/// Node `n<i>` in namespace `i`: no peers and no advertise_addr, so
/// discovery and address detection alone; `extra` config lines after.
fn start_with(lab: &Lab, i: usize, dir: &Path, extra: &str) -> Node {
    lab.serve(i, CAIRN, dir, &format!("{MDNS}{extra}"))
}

fn start(lab: &Lab, i: usize, dir: &Path) -> Node {
    start_with(lab, i, dir, "")
}

fn cli(lab: &Lab, i: usize, node: &str, args: &[&str]) -> std::process::Output {
    lab.cli(i, CAIRN, node, args)
}

fn peers(lab: &Lab, i: usize, node: &str) -> Option<Vec<(String, bool)>> {
    lab.peers(i, CAIRN, node)
}

#[test]
fn three_nodes_in_namespaces_find_each_other_by_mdns_share_a_blob_and_drop_a_stopped_node() {
    let Some(lab) = Lab::new_or_skip(3, "mDNS discovery test") else { return };
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let data = cairn_testkit::blob(7, 3 << 20);
    let d = Store::open(dirs[0].path().join("data")).unwrap().put_reader(&data[..], None).unwrap().digest;

    let mut nodes: Vec<Node> = (0..3).map(|i| start(&lab, i, dirs[i].path())).collect();
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    // Each sees the other two within 5 s of all being up.
    let start = Instant::now();
    for (i, a) in addrs.iter().enumerate() {
        let mut others: Vec<(String, bool)> = addrs.iter().filter(|x| *x != a).map(|x| (x.clone(), true)).collect();
        others.sort();
        let left = Duration::from_secs(5).saturating_sub(start.elapsed());
        let log = || nodes[i].log();
        wait_for(left, &format!("node {i} sees {others:?}; its log:\n{}", log()), || {
            peers(&lab, i, a).as_ref() == Some(&others)
        });
    }

    // A blob only node 0 holds reaches node 1 through discovery alone.
    let out = dirs[1].path().join("fetched");
    let o = cli(&lab, 1, &addrs[1], &["fetch", &d.to_string(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "fetch on node 1: {}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&out).unwrap() == data);
    // The node links the blob into its store just after the response ends.
    let store = Store::open(dirs[1].path().join("data")).unwrap();
    wait_for(Duration::from_secs(10), "node 1 caches it", || store.verify_blob(&d).unwrap_or(false));

    // A stopped node says goodbye and drops out of the others' peers (not
    // just marked unhealthy: it is gone from the list).
    let pid = nodes[2].child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(nodes[2].child.wait().unwrap().success(), "node 2 stops cleanly on SIGTERM");
    for i in 0..2 {
        let a = &addrs[i];
        wait_for(Duration::from_secs(10), &format!("node {i} drops node 2"), || {
            peers(&lab, i, a).is_some_and(|p| p.len() == 1 && p[0].0 != addrs[2])
        });
    }
    drop(nodes);
    drop(lab);
}

#[test]
fn an_mdns_impostor_without_the_cluster_secret_is_dropped_after_its_failed_proof_and_members_stay() {
    let Some(lab) = Lab::new_or_skip(3, "mDNS impostor test") else { return };
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let secret_line = |i: usize, secret: &str| {
        let f = dirs[i].path().join("cluster.secret");
        std::fs::write(&f, secret).unwrap();
        format!("cluster_secret_file: \"{}\"\n", f.display())
    };
    let members = "0123456789abcdef-members-secret\n";
    let mut nodes = vec![
        start_with(&lab, 0, dirs[0].path(), &secret_line(0, members)),
        start_with(&lab, 1, dirs[1].path(), &secret_line(1, members)),
        // The impostor announces `_cairn._tcp` like a member, with another secret.
        start_with(&lab, 2, dirs[2].path(), &secret_line(2, "fedcba9876543210-impostor-secret\n")),
    ];
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    for (i, other) in [(0, 1), (1, 0)] {
        let a = &addrs[i];
        let log = || nodes[i].log();
        wait_for(Duration::from_secs(10), &format!("node {i} refuses the impostor; its log:\n{}", log()), || {
            log().contains("failed the cluster membership proof") && log().contains(&addrs[2])
        });
        wait_for(Duration::from_secs(10), &format!("node {i} lists only node {other}; its log:\n{}", log()), || {
            peers(&lab, i, a) == Some(vec![(addrs[other].clone(), true)])
        });
    }
    for n in &mut nodes {
        let pid = n.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let _ = n.child.wait();
    }
}
