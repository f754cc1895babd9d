//! `cairn mirror configure containerd`: the files it writes, rerunning it,
//! and names that must not become paths. (containerd pulling through the
//! files it writes is in tests/mirror_clients.rs.)

use crate::util::Env;

fn configure(env: &Env, args: &[&str]) -> std::process::Output {
    env.cairn()
        .args(["mirror", "configure", "containerd", "--config-path"])
        .arg(env.path("certs.d"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn containerd_hosts_files_point_at_the_node_with_docker_hub_at_its_real_host() {
    let env = Env::new();
    let out = configure(&env, &["--registry", "docker.io", "--registry", "ghcr.io", "--node", "http://10.0.0.7:5000"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hub = std::fs::read_to_string(env.path("certs.d/docker.io/hosts.toml")).unwrap();
    assert!(hub.contains("server = \"https://registry-1.docker.io\"\n"), "{hub}");
    assert!(hub.contains("[host.\"http://10.0.0.7:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n"), "{hub}");
    let ghcr = std::fs::read_to_string(env.path("certs.d/ghcr.io/hosts.toml")).unwrap();
    assert!(ghcr.contains("server = \"https://ghcr.io\"\n"), "{ghcr}");
    let listed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(listed.lines().filter(|l| l.starts_with("written")).count(), 2, "{listed}");
}

#[test]
fn rerunning_mirror_configure_changes_nothing_and_says_so() {
    let env = Env::new();
    let args = ["--registry", "docker.io", "--json"];
    assert!(configure(&env, &args).status.success());
    let path = env.path("certs.d/docker.io/hosts.toml");
    let first = std::fs::read(&path).unwrap();
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let out = configure(&env, &args);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["status"], "unchanged", "{v}");
    assert_eq!(std::fs::read(&path).unwrap(), first);
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime, "the file was not rewritten");
    // A new node address rewrites its own file in place, with no backup.
    let out = configure(&env, &["--registry", "docker.io", "--node", "http://127.0.0.1:5000", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["status"], "written", "{v}");
    assert!(std::fs::read_to_string(&path).unwrap().contains("http://127.0.0.1:5000"));
    assert!(!env.path("certs.d/docker.io/hosts.toml.orig").exists());
}

#[test]
fn a_hosts_file_written_by_someone_else_is_kept_as_orig_once() {
    let env = Env::new();
    let theirs = "server = \"https://registry-1.docker.io\"\n# the operator's own\n";
    env.write("certs.d/docker.io/hosts.toml", theirs.as_bytes());
    let out = configure(&env, &["--registry", "docker.io", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["status"], "replaced", "{v}");
    assert_eq!(std::fs::read_to_string(env.path("certs.d/docker.io/hosts.toml.orig")).unwrap(), theirs);
    // Rewriting our own file later never overwrites that backup.
    assert!(configure(&env, &["--registry", "docker.io", "--node", "http://127.0.0.1:1"]).status.success());
    assert_eq!(std::fs::read_to_string(env.path("certs.d/docker.io/hosts.toml.orig")).unwrap(), theirs);
}

#[test]
fn registry_names_and_urls_that_are_not_hosts_are_refused_before_writing() {
    let env = Env::new();
    for (args, says) in [
        (&["--registry", "../../etc"][..], "not a registry host"),
        (&["--registry", "docker.io/library"], "not a registry host"),
        (&["--registry", "a..b"], "not a registry host"),
        (&["--registry", "host:99999"], "not a registry host"),
        (&["--registry", ""], "not a registry host"),
        (&["--registry", "docker.io", "--node", "127.0.0.1:7420"], "--node"),
        (&["--registry", "docker.io", "--node", "http://x\"]\nevil = [\""], "--node"),
        (&["--registry", "a.io", "--registry", "b.io", "--server", "https://a.io"], "one --registry"),
    ] {
        let out = configure(&env, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(!env.path("certs.d").exists(), "nothing was written");
}
