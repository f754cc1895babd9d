//! `cairn serve` and access control: the startup log names the mode, and
//! the README's "Exposing a node" snippet, as written there, runs a node
//! that asks for credentials and grants the rights it lists.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use assert_cmd::cargo::CommandCargoExt;
use cairn_testkit::registry::base64_std;
use cairn_testkit::{NodeProcess as Node, free_port};

const TOKEN: &str = "5f1c0ffee5f1c0ffee5f1c0ffee5f1c0";

/// One HTTP/1.1 request; returns the status and the whole answer.
fn raw(addr: &str, method: &str, path: &str, auth: Option<&str>, body: &[u8]) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return (0, String::new()) };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes()).and_then(|_| s.write_all(body)).is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64_std(format!("{user}:{password}").as_bytes()))
}

/// Starts `cairn serve` on `config` with its log kept.
fn serve(dir: &Path, config: &str, addr: &str) -> Node {
    let cfg = dir.join("cairn.yaml");
    std::fs::write(&cfg, config).unwrap();
    let node = Node::serve_logged(env!("CARGO_BIN_EXE_cairn"), &cfg, addr);
    assert_eq!(raw(addr, "GET", "/v1/health", None, b"").0, 200, "health is open to loopback callers");
    node
}

fn base_config(dir: &Path, port: u16) -> String {
    format!("listen_addr: \"127.0.0.1:{port}\"\ndata_dir: \"{}\"\n", dir.join("data").display())
}

/// The YAML block after the `auth-example` marker in the README.
fn readme_auth_snippet() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let after = readme.split("<!-- auth-example").nth(1).expect("the README has the auth-example marker");
    let block = after.split("```yaml\n").nth(1).expect("a yaml block after the marker");
    block.split("```").next().unwrap().to_owned()
}

#[test]
fn serve_without_auth_logs_the_loopback_rule_and_takes_pushes_from_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut node = serve(tmp.path(), &base_config(tmp.path(), port), &addr);
    let d = cairn_store::Digest::of(b"local push");
    let (status, out) = raw(&addr, "PUT", &format!("/v1/blobs/{d}"), None, b"local push");
    assert_eq!(status, 201, "{out}");
    let log = node.stop_and_log();
    assert!(log.contains("cairn node serving") && log.contains("loopback clients only"), "{log}");
}

#[test]
fn the_readme_auth_snippet_runs_a_node_that_asks_for_credentials_and_grants_its_rights() {
    let have = Command::new("htpasswd").arg("-nbB").arg("u").arg("p").output().is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var("CAIRN_REQUIRE_TOOLS").map_or(true, |v| v != "1"),
            "htpasswd is required (CAIRN_REQUIRE_TOOLS=1); run scripts/test.sh"
        );
        eprintln!("skipping: htpasswd is not installed (scripts/test.sh installs it)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (ht, tokens) = (tmp.path().join("htpasswd"), tmp.path().join("tokens"));
    let out = Command::new("htpasswd").arg("-cbB").arg(&ht).args(["ci", "ci-password"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&tokens, format!("deployer {TOKEN}\n")).unwrap();
    let snippet = readme_auth_snippet()
        .replace("/etc/cairn/htpasswd", ht.to_str().unwrap())
        .replace("/etc/cairn/tokens", tokens.to_str().unwrap());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut node = serve(tmp.path(), &format!("{}{snippet}", base_config(tmp.path(), port)), &addr);

    let (status, out) = raw(&addr, "GET", "/v2/", None, b"");
    assert_eq!(status, 401, "{out}");
    assert!(out.to_lowercase().contains("www-authenticate: basic realm=\"cairn\""), "{out}");
    assert_eq!(raw(&addr, "GET", "/v2/", Some(&basic("ci", "ci-password")), b"").0, 200);
    assert_eq!(raw(&addr, "GET", "/v2/", Some(&basic("ci", "wrong")), b"").0, 401);
    // anonymous: [pull]
    assert_eq!(raw(&addr, "GET", "/v2/team/app/tags/list", None, b"").0, 404, "anonymous pulls go through");
    // ci: push team/*, nothing else; from loopback too.
    let ci = basic("ci", "ci-password");
    assert_eq!(raw(&addr, "POST", "/v2/team/app/blobs/uploads/", None, b"").0, 401);
    assert_eq!(raw(&addr, "POST", "/v2/team/app/blobs/uploads/", Some(&ci), b"").0, 202);
    let (status, out) = raw(&addr, "POST", "/v2/other/app/blobs/uploads/", Some(&ci), b"");
    assert_eq!(status, 403, "{out}");
    assert!(out.contains("DENIED"), "{out}");
    let d = cairn_store::Digest::of(b"by token");
    assert_eq!(raw(&addr, "PUT", &format!("/v1/blobs/{d}"), Some(&ci), b"by token").0, 403, "/v1 needs *");
    // deployer (a token): everything.
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(raw(&addr, "PUT", &format!("/v1/blobs/{d}"), Some(&bearer), b"by token").0, 201);
    let log = node.stop_and_log();
    assert!(log.contains("auth on") && log.contains("1 htpasswd users, 1 tokens"), "{log}");
}

#[test]
fn serve_refuses_an_md5_htpasswd_file_naming_the_user_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let ht = tmp.path().join("htpasswd");
    std::fs::write(&ht, "carol:$apr1$Mq5u5QJm$1Vh4xTM2Mu2WOBLqtRMxl/\n").unwrap();
    let port = free_port();
    let cfg = tmp.path().join("cairn.yaml");
    let text = format!("{}auth:\n  htpasswd_file: \"{}\"\n", base_config(tmp.path(), port), ht.display());
    std::fs::write(&cfg, text).unwrap();
    let out = Command::cargo_bin("cairn")
        .unwrap()
        .args(["serve", "--config"])
        .arg(&cfg)
        .env_remove("CAIRN_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"carol\"") && err.contains("htpasswd -B") && err.contains("line 1"), "{err}");
    assert!(raw(&format!("127.0.0.1:{port}"), "GET", "/v1/health", None, b"").0 == 0, "nothing listens");
}

#[test]
fn sighup_rereads_the_htpasswd_and_tokens_files_and_forgets_cached_passwords() {
    if Command::new("htpasswd").arg("-nbB").arg("u").arg("p").output().map_or(true, |o| !o.status.success()) {
        assert!(std::env::var("CAIRN_REQUIRE_TOOLS").map_or(true, |v| v != "1"), "htpasswd is required");
        eprintln!("skipping: htpasswd is not installed (scripts/test.sh installs it)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (ht, tokens) = (tmp.path().join("htpasswd"), tmp.path().join("tokens"));
    let set_password = |create: bool, pw: &str| {
        let flags = if create { "-cbB" } else { "-bB" };
        let out = Command::new("htpasswd").arg(flags).arg(&ht).args(["ci", pw]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    set_password(true, "old-password");
    std::fs::write(&tokens, format!("deployer {TOKEN}\n")).unwrap();
    let snippet = readme_auth_snippet()
        .replace("/etc/cairn/htpasswd", ht.to_str().unwrap())
        .replace("/etc/cairn/tokens", tokens.to_str().unwrap());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let node = serve(tmp.path(), &format!("{}{snippet}", base_config(tmp.path(), port)), &addr);
    let ping = |auth: &str| raw(&addr, "GET", "/v2/", Some(auth), b"").0;
    let hup = || {
        let pid = node.child.id().to_string();
        assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    };
    let (old_pw, new_pw) = (basic("ci", "old-password"), basic("ci", "new-password"));
    assert_eq!(ping(&old_pw), 200, "verified and now cached");
    let new_token = "9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e";
    set_password(false, "new-password");
    std::fs::write(&tokens, format!("deployer {new_token}\n")).unwrap();
    assert_eq!(ping(&old_pw), 200, "files are read at start and on SIGHUP only");
    hup();
    node.wait_log("SIGHUP: auth files reloaded");
    assert_eq!(ping(&new_pw), 200);
    assert_eq!(ping(&old_pw), 401, "the cached old password is forgotten");
    assert_eq!(ping(&format!("Bearer {new_token}")), 200);
    assert_eq!(ping(&format!("Bearer {TOKEN}")), 401);
    // A file that no longer loads keeps the rules in force.
    std::fs::write(&tokens, "deployer short\n").unwrap();
    hup();
    node.wait_log("not reloaded");
    assert_eq!(ping(&format!("Bearer {new_token}")), 200);
    assert_eq!(ping(&new_pw), 200);
}

#[test]
fn serve_warns_when_auth_shuts_out_peers_that_send_no_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = tmp.path().join("cairn.yaml");
    let text = format!("{}peers: [\"127.0.0.1:1\"]\nauth:\n  anonymous: []\n", base_config(tmp.path(), port));
    std::fs::write(&cfg, text).unwrap();
    let mut node = Node::serve_logged(env!("CARGO_BIN_EXE_cairn"), &cfg, &addr);
    assert_eq!(raw(&addr, "GET", "/v1/health", None, b"").0, 401, "anonymous callers get 401 even for /v1/health");
    let log = node.stop_and_log();
    assert!(log.contains("peers will get 401"), "{log}");
}
