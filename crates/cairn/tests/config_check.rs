//! `cairn config check`, the sample `contrib/cairn.yaml`, and the log keys.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn_testkit::{NodeProcess, free_port};

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/cairn.yaml")
}

fn check(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn")).args(["config", "check"]).arg(path).output().unwrap()
}

/// Every key the config file takes, as the loader lists them for an unknown one.
fn all_keys() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(&f, "no_such_key_at_all: 1\n").unwrap();
    let out = check(&f);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    let list = err.split("expected one of ").nth(1).and_then(|l| l.lines().next()).expect("the expected keys");
    list.split(", ").map(|k| k.trim().to_owned()).collect()
}

/// Commented-out blocks (`# key:` for a config key, and the indented lines
/// after it), uncommented.
fn commented_blocks(text: &str, keys: &[String]) -> Vec<String> {
    let mut blocks: Vec<String> = Vec::new();
    let mut open = false;
    for line in text.lines() {
        let body = line.strip_prefix("# ").unwrap_or("");
        let starts = body.split_once(':').is_some_and(|(k, _)| keys.iter().any(|x| x == k));
        if starts {
            blocks.push(format!("{body}\n"));
            open = true;
        } else if open && line.starts_with("#  ") {
            if let Some(b) = blocks.last_mut() {
                b.push_str(&line[2..]);
                b.push('\n');
            }
        } else {
            open = false;
        }
    }
    blocks
}

#[test]
fn the_sample_config_names_every_key_and_loads_and_its_commented_examples_parse() {
    let text = std::fs::read_to_string(sample()).unwrap();
    let keys = all_keys();
    assert!(keys.len() > 30 && keys.contains(&"log_level".to_owned()), "{keys:?}");
    for k in &keys {
        let set = text.lines().any(|l| l.starts_with(&format!("{k}:")) || l.starts_with(&format!("# {k}:")));
        assert!(set, "contrib/cairn.yaml lacks {k}");
    }
    let out = check(&sample());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Each commented example is a valid config on its own (file paths aside).
    let dir = tempfile::tempdir().unwrap();
    let blocks = commented_blocks(&text, &keys);
    assert!(blocks.len() >= 8, "{blocks:#?}");
    // The files check reads, made real; the tls and auth files are read by serve.
    let ca = cairn_testkit::tls::TestCa::new(dir.path(), "cdn");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "pw\n").unwrap();
    let s3_creds = dir.path().join("s3-credentials");
    std::fs::write(&s3_creds, "[default]\naws_access_key_id = AK\naws_secret_access_key = SK\n").unwrap();
    for b in blocks {
        let f = dir.path().join("block.yaml");
        let b = b
            .replace("/etc/cairn/cluster-secret", secret.to_str().unwrap())
            .replace("/etc/cairn/cdn-ca.pem", ca.cert.to_str().unwrap())
            .replace("/etc/cairn/registry-password", password.to_str().unwrap())
            .replace("/etc/cairn/s3-credentials", s3_creds.to_str().unwrap());
        std::fs::write(&f, &b).unwrap();
        let out = check(&f);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "commented example does not load:\n{b}\n{err}");
    }
}

#[test]
fn config_check_prints_a_config_that_loads_to_the_same_effective_config() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(&f, "node_id: n1\npeers: [\"10.0.0.2:7420\"]\npeer_timeout: 3s\nlog_format: json\n").unwrap();
    let first = check(&f);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let v: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!((v["peer_timeout"].as_str(), v["health_interval"].as_str()), (Some("3s"), Some("30s")), "{v}");
    assert_eq!((v["log_format"].as_str(), v["max_concurrent_fetches"].as_u64()), (Some("json"), Some(16)));
    let again = dir.path().join("effective.json");
    std::fs::write(&again, &first.stdout).unwrap();
    let second = check(&again);
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert_eq!(first.stdout, second.stdout, "the effective config is a fixed point");
}

#[test]
fn config_check_reads_the_cache_section_and_prints_it_back_loadable() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(&f, "cache:\n  max_bytes: 50GiB\n  min_free: 10%\n").unwrap();
    let first = check(&f);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let v: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(v["cache"], serde_json::json!({"max_bytes": (50u64 << 30).to_string(), "min_free": "10%"}), "{v}");
    let again = dir.path().join("effective.json");
    std::fs::write(&again, &first.stdout).unwrap();
    let second = check(&again);
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert_eq!(first.stdout, second.stdout, "the effective config is a fixed point");
    std::fs::write(&f, "node_id: n1\n").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&check(&f).stdout).unwrap();
    assert!(v["cache"].is_null(), "no cache section: no cap, {v}");
}

#[test]
fn config_check_refuses_bad_values_naming_the_key_and_prints_no_password() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, says) in [
        ("log_format: xml\n", "log_format"),
        ("log_level: \"[[[\"\n", "log_level"),
        ("peer_timeout: soon\n", "peer_timeout"),
        ("listen_addr: nowhere\n", "listen_addr"),
        ("cache:\n  max_bytes: 12 parsecs\n", "cache.max_bytes"),
        ("cache:\n  min_free: 101%\n", "cache.min_free"),
    ] {
        let f = dir.path().join("bad.yaml");
        std::fs::write(&f, yaml).unwrap();
        let out = check(&f);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {err}");
        assert!(err.contains(says) && err.contains("bad.yaml"), "{yaml}: {err}");
    }
    let f = dir.path().join("pw.yaml");
    std::fs::write(&f, "origins:\n  - registry: https://r.example\n    username: u\n    password: hunter2-secret\n")
        .unwrap();
    let out = check(&f);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"), "a password in the output");
}

#[test]
fn log_format_json_makes_serve_log_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("cairn.yaml");
    let data = dir.path().join("data");
    std::fs::write(
        &cfg,
        format!("listen_addr: \"{addr}\"\ndata_dir: \"{}\"\nlog_format: json\nlog_level: info\n", data.display()),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(["serve", "--config"]).arg(&cfg).env_remove("RUST_LOG").env_remove("CAIRN_CONFIG");
    let mut node = NodeProcess::spawn(cmd, &addr);
    let log = node.stop_and_log();
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let start = lines.iter().find(|l| l["fields"]["message"] == "cairn node serving").expect("the start line");
    assert_eq!(start["level"], "INFO");
    assert_eq!(start["fields"]["listen"], addr.as_str());
}

#[test]
fn config_check_reads_the_storage_section_and_prints_it_back_loadable_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::write(&creds, "[default]\naws_access_key_id = AKIDSECRETID\naws_secret_access_key = VERYSECRET\n")
        .unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        format!(
            "storage:\n  backend: s3\n  bucket: team-blobs\n  endpoint: http://127.0.0.1:9000\n  credentials_file: {}\n",
            creds.display()
        ),
    )
    .unwrap();
    let first = check(&f);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let text = String::from_utf8_lossy(&first.stdout);
    assert!(!text.contains("VERYSECRET") && !text.contains("AKIDSECRETID"), "no credential is printed: {text}");
    let v: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(v["storage"]["bucket"], "team-blobs");
    assert_eq!(v["storage"]["region"], "us-east-1", "the default region is written out");
    assert_eq!(v["storage"]["write_fetched"], true);
    let again = dir.path().join("effective.json");
    std::fs::write(&again, &first.stdout).unwrap();
    let second = check(&again);
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert_eq!(first.stdout, second.stdout, "the effective config is a fixed point");
    std::fs::write(&f, "storage:\n  backend: s3\n").unwrap();
    let out = check(&f);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("storage.bucket"));
}
