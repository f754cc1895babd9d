//! `cairn serve` raises its open-file soft limit to the hard limit, so a
//! default of 1024 descriptors does not make a busy node unreachable.

use std::process::Command;

use cairn_testkit::{NodeProcess, free_port};

/// (soft, hard) "Max open files" of a process, from `/proc/<pid>/limits`.
fn nofile(pid: &str) -> (String, String) {
    let t = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = t.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[3].to_owned(), f[4].to_owned())
}

#[test]
fn serve_raises_the_open_file_soft_limit_to_the_hard_limit() {
    let (_, hard) = nofile("self");
    if hard != "unlimited" && hard.parse::<u64>().unwrap() <= 256 {
        eprintln!("skipping: the hard open-file limit ({hard}) leaves nothing to raise");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = dir.path().join("cairn.yaml");
    let data = dir.path().join("data");
    std::fs::write(&cfg, format!("listen_addr: \"{addr}\"\ndata_dir: \"{}\"\n", data.display())).unwrap();
    // The child starts with a low soft limit; this process's own limits are untouched.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -Sn 256 && exec \"$0\" serve --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_cairn"))
        .arg(&cfg)
        .env_remove("CAIRN_CONFIG");
    let node = NodeProcess::spawn(cmd, &addr);
    let (soft, hard) = nofile(&node.child.id().to_string());
    assert_eq!(soft, hard, "the node's soft open-file limit was not raised to its hard limit");
}
