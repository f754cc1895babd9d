//! The files an operator installs: the systemd unit (checked by
//! `systemd-analyze verify`, and its `Type=notify` handshake with the real
//! binary).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cairn_testkit::{NodeProcess, free_port, health_ok};

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

fn unit() -> String {
    std::fs::read_to_string(repo_file("contrib/systemd/cairn.service")).expect("read contrib/systemd/cairn.service")
}

/// The value of `key=` in the unit (the last one, as systemd reads it).
fn setting<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines().rev().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

fn tool(name: &str) -> bool {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {name}")]).output().is_ok_and(|o| o.status.success());
    if !found && std::env::var_os("CAIRN_REQUIRE_TOOLS").is_some() {
        panic!("{name} is required (scripts/test.sh installs it)");
    }
    found
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if !tool("systemd-analyze") {
        eprintln!("skipped: no systemd-analyze");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = unit();
    // verify checks that ExecStart's binary exists: point it at this build.
    let local = text.replace("/usr/local/bin/cairn", env!("CARGO_BIN_EXE_cairn"));
    assert_ne!(local, text, "the unit starts /usr/local/bin/cairn");
    let path = dir.path().join("cairn.service");
    std::fs::write(&path, local).unwrap();
    // Documentation= names man pages: install them where `man` looks.
    let man1 = dir.path().join("man/man1");
    let pages = Command::new(env!("CARGO_BIN_EXE_cairn")).args(["man", "--out"]).arg(&man1).output().unwrap();
    assert!(pages.status.success(), "cairn man: {}", String::from_utf8_lossy(&pages.stderr));
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("MANPATH", dir.path().join("man"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "systemd-analyze verify: {err}");
}

#[test]
fn the_systemd_unit_is_hardened_and_runs_a_command_line_cairn_accepts() {
    let u = unit();
    for (key, want) in [
        ("Type", "notify"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("StateDirectory", "cairn"),
        ("Environment", "CAIRN_DATA_DIR=/var/lib/cairn"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert_eq!(setting(&u, key), Some(want), "{key}= in cairn.service");
    }
    // The unit's command line, run against an empty config, starts a node.
    let exec = setting(&u, "ExecStart").expect("ExecStart=");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/cairn"));
    let args: Vec<&str> = words.collect();
    assert_eq!(args, ["serve", "--config", "/etc/cairn/cairn.yaml"]);
    let out = Command::new(env!("CARGO_BIN_EXE_cairn")).args(["serve", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config"), "cairn serve takes --config");
}

/// Receives one notification, or `None` after 20 s.
fn recv(sock: &UnixDatagram) -> Option<String> {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn serve_tells_systemd_it_is_ready_once_it_answers_and_that_it_is_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("cairn.yaml");
    std::fs::write(&cfg, format!("listen_addr: \"{addr}\"\ndata_dir: \"{}\"\n", dir.path().join("data").display()))
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(["serve", "--config"]).arg(&cfg).env_remove("CAIRN_CONFIG").env("NOTIFY_SOCKET", &sock_path);
    let mut node = NodeProcess::spawn_until(cmd, &addr, || true);
    let ready = recv(&sock).unwrap_or_else(|| panic!("no notification within 20 s: {}", node.stop_and_log()));
    assert_eq!(ready.trim(), "READY=1");
    // Ready means serving: systemd starts dependent units right away.
    assert!(health_ok(&addr), "READY=1 came before the node answered");
    let pid = node.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let stopping = recv(&sock).unwrap_or_else(|| panic!("no STOPPING=1 within 20 s: {}", node.stop_and_log()));
    assert_eq!(stopping.trim(), "STOPPING=1");
    assert!(node.child.wait().unwrap().success());
}
