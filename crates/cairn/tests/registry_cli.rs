//! `cairn registry serve | ls | tags` as a user runs them.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use assert_cmd::prelude::*;
use cairn_store::oci::{Reference, Registry, RegistryOptions, RepoName, Tag};
use cairn_store::{Digest, Store};
use cairn_testkit::free_port;
use predicates::prelude::*;

fn seed(dir: &std::path::Path) -> Digest {
    let reg = Registry::new(Store::open(dir).unwrap(), RegistryOptions::default()).unwrap();
    let cfg = reg.store().put_reader(&b"{}"[..], None).unwrap().digest;
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[]}}"#,
        cfg.oci()
    );
    let repo = RepoName::parse("team/app").unwrap();
    for t in ["v1", "latest"] {
        reg.put_manifest(&repo, &Reference::Tag(Tag::parse(t).unwrap()), m.as_bytes(), None).unwrap();
    }
    Digest::of(m.as_bytes())
}

#[test]
fn registry_ls_and_tags_list_what_was_pushed() {
    let d = tempfile::tempdir().unwrap();
    let m = seed(d.path());
    Command::cargo_bin("cairn")
        .unwrap()
        .args(["registry", "ls"])
        .arg("--data-dir")
        .arg(d.path())
        .assert()
        .success()
        .stdout("team/app\n");
    let want = format!("latest\t{0}\nv1\t{0}\n", m.oci());
    Command::cargo_bin("cairn")
        .unwrap()
        .args(["registry", "tags", "team/app"])
        .arg("--data-dir")
        .arg(d.path())
        .assert()
        .success()
        .stdout(want);
}

#[test]
fn registry_ls_and_tags_print_json_with_json() {
    let d = tempfile::tempdir().unwrap();
    let m = seed(d.path());
    let run = |args: &[&str]| -> serde_json::Value {
        let out = Command::cargo_bin("cairn").unwrap().args(args).arg("--data-dir").arg(d.path()).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(run(&["registry", "ls", "--json"]), serde_json::json!(["team/app"]));
    assert_eq!(
        run(&["registry", "tags", "team/app", "--json"]),
        serde_json::json!([{"tag": "latest", "digest": m.oci()}, {"tag": "v1", "digest": m.oci()}])
    );
}

#[test]
fn registry_tags_of_bad_or_unknown_repository_fails_with_a_reason() {
    let d = tempfile::tempdir().unwrap();
    seed(d.path());
    let run = |repo: &str| {
        Command::cargo_bin("cairn").unwrap().args(["registry", "tags", repo]).arg("--data-dir").arg(d.path()).assert()
    };
    run("Bad//Name").code(2).stderr(predicate::str::contains("invalid repository name"));
    run("no/such")
        .code(1)
        .stderr(predicate::str::contains("not known").and(predicate::str::contains("cairn registry ls")));
}

#[test]
fn registry_serve_answers_v2_on_the_printed_address() {
    let d = tempfile::tempdir().unwrap();
    let mut child = Command::cargo_bin("cairn")
        .unwrap()
        .args(["registry", "serve", "--port", "0"])
        .arg("--data-dir")
        .arg(d.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The line is printed after the listener is bound: ready when read.
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).unwrap();
    let addr =
        line.split("http://").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_else(|| panic!("{line}"));
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("docker-distribution-api-version: registry/2.0"), "{answer}");
}

fn raw_get(addr: &str, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    Some(answer)
}

#[test]
fn node_serve_serves_v2_on_listen_addr_and_on_registry_addr() {
    let d = tempfile::tempdir().unwrap();
    seed(d.path());
    let (node, reg) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let mut child = Command::cargo_bin("cairn")
        .unwrap()
        .args(["serve", "--node-id", "r1", "--listen-addr", &node, "--registry-addr", &reg])
        .arg("--data-dir")
        .arg(d.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let catalog = loop {
        if let Some(a) = raw_get(&reg, "/v2/_catalog").filter(|a| a.starts_with("HTTP/1.1 200")) {
            break Some(a);
        }
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let v1 = raw_get(&node, "/v1/health");
    let v2_on_node = raw_get(&node, "/v2/_catalog");
    child.kill().unwrap();
    child.wait().unwrap();
    let catalog = catalog.expect("the registry listener answered within 20 s");
    assert!(catalog.contains(r#"{"repositories":["team/app"]}"#), "{catalog}");
    assert!(v1.is_some_and(|a| a.starts_with("HTTP/1.1 200")), "/v1 still on the node listener");
    let v2_on_node = v2_on_node.expect("the node listener answered /v2");
    assert!(v2_on_node.contains(r#"{"repositories":["team/app"]}"#), "/v2 on listen_addr: {v2_on_node}");
}
