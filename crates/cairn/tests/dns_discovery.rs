//! `discovery: dns` with real `cairn serve` processes, each in its own
//! network namespace on a private bridge. Each namespace gets its own
//! `/etc/hosts` (through `/etc/netns/<ns>/hosts`, which `ip netns exec`
//! mounts over `/etc/hosts`) in which one name maps to all three nodes, as
//! a Kubernetes headless Service does. Skipped with a message without root;
//! CI (root, CAIRN_REQUIRE_TOOLS=1) runs it.

use std::path::Path;
use std::time::Duration;

use cairn_store::Store;
use cairn_testkit::NodeProcess as Node;
use cairn_testkit::netns::Lab;
use cairn_testkit::wait_for;

const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");
const NAME: &str = "cairn-peers.cairn.svc.cluster.local";

/// A hosts file in which [`NAME`] maps to the nodes `members`.
fn hosts(lab: &Lab, members: &[usize]) -> String {
    let mut h = String::from("127.0.0.1 localhost\n");
    for &m in members {
        h.push_str(&format!("{} {NAME}\n", lab.ip(m)));
    }
    h
}

/// Node `n<i>` in namespace `i`, with no peers: the name alone.
fn start(lab: &Lab, i: usize, dir: &Path) -> Node {
    let dns = format!(
        "discovery: dns\ndns_name: \"{NAME}:7420\"\nhealth_interval: 1s\npeer_timeout: 2s\nenable_cdn_fallback: false\n"
    );
    lab.serve(i, CAIRN, dir, &dns)
}

fn cli(lab: &Lab, i: usize, node: &str, args: &[&str]) -> std::process::Output {
    lab.cli(i, CAIRN, node, args)
}

fn peers(lab: &Lab, i: usize, node: &str) -> Option<Vec<(String, bool)>> {
    lab.peers(i, CAIRN, node)
}

#[test]
fn three_nodes_in_namespaces_find_each_other_by_one_dns_name_share_a_blob_and_drop_a_name_gone_from_it() {
    let Some(lab) = Lab::new_or_skip(3, "DNS discovery test") else { return };
    for i in 0..3 {
        lab.etc_file(i, "hosts", &hosts(&lab, &[0, 1, 2])).unwrap();
    }
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let data = cairn_testkit::blob(11, 3 << 20);
    let d = Store::open(dirs[0].path().join("data")).unwrap().put_reader(&data[..], None).unwrap().digest;

    let nodes: Vec<Node> = (0..3).map(|i| start(&lab, i, dirs[i].path())).collect();
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    // Each lists the other two, healthy, and never itself, though the name
    // gives its own address too.
    for (i, a) in addrs.iter().enumerate() {
        let mut others: Vec<(String, bool)> = addrs.iter().filter(|x| *x != a).map(|x| (x.clone(), true)).collect();
        others.sort();
        let log = || nodes[i].log();
        wait_for(Duration::from_secs(10), &format!("node {i} sees {others:?}; its log:\n{}", log()), || {
            peers(&lab, i, a).as_ref() == Some(&others)
        });
    }

    // A blob only node 0 holds reaches node 1 through the name alone.
    let out = dirs[1].path().join("fetched");
    let o = cli(&lab, 1, &addrs[1], &["fetch", &d.to_string(), "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "fetch on node 1: {}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&out).unwrap() == data);
    let store = Store::open(dirs[1].path().join("data")).unwrap();
    wait_for(Duration::from_secs(10), "node 1 caches it", || store.verify_blob(&d).unwrap_or(false));

    // Node 2 leaves the name (still running): nodes 0 and 1 drop it from
    // their peers at their next resolution.
    for i in 0..2 {
        lab.etc_file(i, "hosts", &hosts(&lab, &[0, 1])).unwrap();
    }
    for (i, other) in [(0, 1), (1, 0)] {
        let a = &addrs[i];
        let log = || nodes[i].log();
        wait_for(Duration::from_secs(10), &format!("node {i} drops node 2; its log:\n{}", log()), || {
            peers(&lab, i, a) == Some(vec![(addrs[other].clone(), true)])
        });
        assert!(log().contains("peer gone from DNS"), "{}", log());
    }
    let names: Vec<String> = (0..3).map(|i| lab.ns(i).to_owned()).collect();
    drop(nodes);
    drop(lab);
    for n in names {
        assert!(!Path::new("/etc/netns").join(n).exists(), "the lab's /etc/netns files are removed");
    }
}
