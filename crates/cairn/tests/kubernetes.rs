//! The manifests under `contrib/kubernetes/`: every one parses, and the
//! fields that must agree do (ports, paths, probes, names, labels) against
//! the config in the ConfigMap, which `cairn config check` accepts. The
//! pods' command lines are run for real: the mirror step writes its
//! `hosts.toml`, and `serve` with the container's arguments answers the
//! probes' path.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/kubernetes")
}

/// Every document of every `*.yaml` file, with the file's name. A file may
/// hold several documents separated by `---` lines.
fn documents() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        for part in split_documents(&text) {
            if part.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
                continue;
            }
            let v: Value = serde_saphyr::from_str(&part).unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
            docs.push((name.clone(), v));
        }
    }
    docs
}

fn split_documents(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            parts.push(String::new());
        } else if let Some(p) = parts.last_mut() {
            p.push_str(line);
            p.push('\n');
        }
    }
    parts
}

#[test]
fn multi_document_files_are_split_on_their_separator_lines() {
    let parts = split_documents("a: 1\n---\nb: 2\n--- \nc: \"---\"\n");
    assert_eq!(parts, ["a: 1\n", "b: 2\n", "c: \"---\"\n"]);
}

fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path).as_str().unwrap_or_else(|| panic!("{path} is not a string in {v}"))
}

/// `v` at a `/`-separated path (`spec/template/spec`).
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    let p = format!("/{path}");
    v.pointer(&p).unwrap_or_else(|| panic!("no {path} in {v}"))
}

fn one<'a>(docs: &'a [(String, Value)], kind: &str) -> &'a Value {
    let all: Vec<&Value> = docs.iter().filter(|(_, d)| d["kind"] == kind).map(|(_, d)| d).collect();
    assert_eq!(all.len(), 1, "one {kind} in contrib/kubernetes");
    all[0]
}

/// The port of a `host:port` (or `:port`, `http://host:port`).
fn port_of(addr: &str) -> u16 {
    let a = addr.trim_end_matches('/');
    a.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or_else(|| panic!("{addr:?} has no port"))
}

/// The value following `flag` in a command line.
fn flag<'a>(cmd: &'a [String], name: &str) -> &'a str {
    let i = cmd.iter().position(|a| a == name).unwrap_or_else(|| panic!("no {name} in {cmd:?}"));
    cmd.get(i + 1).unwrap_or_else(|| panic!("{name} has no value in {cmd:?}"))
}

/// A container's `command` followed by its `args`.
fn command_line(c: &Value) -> Vec<String> {
    let list = |k: &str| -> Vec<String> {
        c[k].as_array().map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect()).unwrap_or_default()
    };
    [list("command"), list("args")].concat()
}

/// The port a probe names: a number, or the name of a container port.
fn probe_port(c: &Value, probe: &str) -> u64 {
    let p = at(c, &format!("{probe}/httpGet/port"));
    if let Some(n) = p.as_u64() {
        return n;
    }
    let name = p.as_str().unwrap();
    let ports = c["ports"].as_array().unwrap();
    ports.iter().find(|q| q["name"] == name).and_then(|q| q["containerPort"].as_u64()).unwrap()
}

/// The volume mounted at `mount_path` in container `c`, from the pod's volumes.
fn volume_at<'a>(pod: &'a Value, c: &Value, mount_path: &str) -> &'a Value {
    let mounts = c["volumeMounts"].as_array().unwrap();
    let m = mounts
        .iter()
        .find(|m| m["mountPath"] == mount_path)
        .unwrap_or_else(|| panic!("container {} mounts nothing at {mount_path}", c["name"]));
    let vols = pod["volumes"].as_array().unwrap();
    vols.iter().find(|v| v["name"] == m["name"]).unwrap_or_else(|| panic!("no volume {}", m["name"]))
}

/// The labels `selector` asks for are all on `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let s = selector.as_object().unwrap();
    !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `cairn config check` of the ConfigMap's cairn.yaml: the effective config.
fn effective(config_yaml: &str) -> Value {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("cairn.yaml");
    std::fs::write(&f, config_yaml).unwrap();
    let out = Command::new(CAIRN).args(["config", "check"]).arg(&f).env_remove("CAIRN_CONFIG").output().unwrap();
    assert!(out.status.success(), "the ConfigMap's cairn.yaml: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_kubernetes_manifests_parse_and_agree_with_each_other_and_with_the_config() {
    let docs = documents();
    for (file, d) in &docs {
        assert!(d["apiVersion"].is_string() && d["kind"].is_string(), "{file}: a document without apiVersion/kind");
    }
    // kustomization.yaml applies every other manifest.
    let kust = one(&docs, "Kustomization");
    let listed: BTreeSet<String> =
        kust["resources"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect();
    let files: BTreeSet<String> =
        docs.iter().filter(|(_, d)| d["kind"] != "Kustomization").map(|(f, _)| f.clone()).collect();
    assert_eq!(listed, files, "kustomization.yaml's resources are the manifest files");

    let ns = str_at(at(one(&docs, "Namespace"), "metadata"), "name");
    for (file, d) in docs.iter().filter(|(_, d)| d["kind"] != "Namespace" && d["kind"] != "Kustomization") {
        assert_eq!(d["metadata"]["namespace"], ns, "{file}: every object in namespace {ns}");
    }
    let ds = one(&docs, "DaemonSet");
    let svc = one(&docs, "Service");
    let cm = one(&docs, "ConfigMap");
    let pod = at(ds, "spec/template/spec");
    let pod_labels = at(ds, "spec/template/metadata/labels");

    // The config loads, and says what the manifests assume.
    let cfg_text = str_at(cm, "data/cairn.yaml");
    let cfg = effective(cfg_text);
    let port = port_of(str_at(&cfg, "listen_addr"));
    assert_eq!(cfg["discovery"], "dns");
    let svc_name = str_at(svc, "metadata/name");
    assert_eq!(
        str_at(&cfg, "dns_name"),
        format!("{svc_name}.{ns}.svc.cluster.local:{port}"),
        "dns_name is the Service's"
    );

    // The headless Service selects the DaemonSet's pods, on the node's port.
    assert_eq!(svc["spec"]["clusterIP"], "None", "a headless Service: its name gives every pod's address");
    assert!(selects(at(svc, "spec/selector"), pod_labels), "the Service selects the DaemonSet's pods");
    assert!(selects(at(ds, "spec/selector/matchLabels"), pod_labels), "the DaemonSet selects its own pods");
    let svc_ports = at(svc, "spec/ports").as_array().unwrap();
    assert!(svc_ports.iter().all(|p| p["port"] == port && p["targetPort"] == port), "{svc_ports:?}");

    // The node container: port, probes, config, data dir, resources.
    let containers = at(pod, "containers").as_array().unwrap();
    let node = containers.iter().find(|c| command_line(c).iter().any(|a| a == "serve")).expect("a serve container");
    let ports = at(node, "ports").as_array().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["containerPort"], port, "the container port is listen_addr's");
    assert!(pod["hostNetwork"] == true || ports[0]["hostPort"] == port, "reachable on the machine's port");
    if pod["hostNetwork"] == true {
        assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet", "hostNetwork pods resolve cluster names only so");
    }
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(str_at(node, &format!("{probe}/httpGet/path")), "/v1/health");
        assert_eq!(probe_port(node, probe), u64::from(port), "{probe} port");
    }
    let cmd = command_line(node);
    let config_path = flag(&cmd, "--config");
    let (config_dir, config_file) = config_path.rsplit_once('/').unwrap();
    let config_vol = volume_at(pod, node, config_dir);
    assert_eq!(config_vol["configMap"]["name"], cm["metadata"]["name"], "--config comes from the ConfigMap");
    assert!(cm["data"].get(config_file).is_some(), "the ConfigMap has {config_file}");
    assert_eq!(port_of(flag(&cmd, "--advertise-addr")), port);
    let data_dir = match node["env"].as_array().and_then(|e| e.iter().find(|v| v["name"] == "CAIRN_DATA_DIR")) {
        Some(v) => str_at(v, "value").to_owned(),
        None => str_at(&cfg, "data_dir").to_owned(),
    };
    let data_vol = volume_at(pod, node, &data_dir);
    assert!(data_vol["hostPath"]["path"].is_string(), "the data dir is a hostPath: {data_vol}");
    let grace = humantime::parse_duration(str_at(&cfg, "shutdown_grace")).unwrap();
    let pod_grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    assert!(pod_grace > grace.as_secs(), "the pod waits longer than shutdown_grace");

    // The containerd mirror step: the same image, pointed at this node's
    // port on loopback, writing into the machine's certs.d.
    let inits = pod["initContainers"].as_array().unwrap();
    let mirror = inits.iter().find(|c| command_line(c).windows(3).any(|w| w == ["mirror", "configure", "containerd"]));
    let mirror = mirror.expect("an initContainer running `cairn mirror configure containerd`");
    assert_eq!(mirror["image"], node["image"]);
    let mcmd = command_line(mirror);
    let node_url = flag(&mcmd, "--node");
    assert!(node_url.starts_with("http://127.0.0.1:") && pod["hostNetwork"] == true, "{node_url}");
    assert_eq!(port_of(node_url), port, "--node is this node's port");
    let certs = flag(&mcmd, "--config-path");
    let certs_vol = volume_at(pod, mirror, certs);
    assert!(certs_vol["hostPath"]["path"].is_string(), "certs.d is the machine's: {certs_vol}");

    // Every container asks for what it needs.
    for c in containers.iter().chain(inits) {
        let r = &c["resources"]["requests"];
        assert!(r["cpu"].is_string() && r["memory"].is_string(), "{} has cpu and memory requests", c["name"]);
    }
}

/// The DaemonSet's containers, and the ConfigMap's config text.
fn pod_and_config() -> (Value, String) {
    let docs = documents();
    let pod = at(one(&docs, "DaemonSet"), "spec/template/spec").clone();
    let cfg = str_at(one(&docs, "ConfigMap"), "data/cairn.yaml").to_owned();
    (pod, cfg)
}

#[test]
fn the_daemonsets_mirror_step_runs_and_writes_containerds_hosts_toml() {
    let (pod, _) = pod_and_config();
    let init = &pod["initContainers"][0];
    let mut cmd = command_line(init);
    assert_eq!(cmd[0], "cairn");
    let tmp = tempfile::tempdir().unwrap();
    let certs = flag(&cmd, "--config-path").to_owned();
    let i = cmd.iter().position(|a| *a == certs).unwrap();
    cmd[i] = tmp.path().to_string_lossy().into_owned();
    let out = Command::new(CAIRN).args(&cmd[1..]).env_remove("CAIRN_CONFIG").output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    let hosts = std::fs::read_to_string(tmp.path().join("docker.io/hosts.toml")).unwrap();
    assert!(hosts.contains(&format!("[host.\"{}\"]", flag(&cmd, "--node"))), "{hosts}");
    // Run again (a pod restart): nothing changes.
    let again = Command::new(CAIRN).args(&cmd[1..]).env_remove("CAIRN_CONFIG").output().unwrap();
    assert!(again.status.success());
    assert_eq!(std::fs::read_to_string(tmp.path().join("docker.io/hosts.toml")).unwrap(), hosts);
}

#[test]
fn the_daemonsets_serve_command_starts_a_node_that_answers_the_probes_path() {
    let (pod, cfg_text) = pod_and_config();
    let node = pod["containers"].as_array().unwrap().iter().find(|c| command_line(c).contains(&"serve".into()));
    let mut cmd = command_line(node.unwrap());
    // On loopback, with a temp data dir; the name is this node's own
    // address (left out), so nothing is asked of any DNS server.
    let tmp = tempfile::tempdir().unwrap();
    let port = cairn_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cfg: serde_json::Map<String, Value> = serde_saphyr::from_str(&cfg_text).unwrap();
    let listen = cfg["listen_addr"].as_str().unwrap().to_owned();
    assert!(listen.starts_with(':'), "every interface, as the port rewrite assumes");
    cfg.insert("listen_addr".into(), addr.clone().into());
    cfg.insert("data_dir".into(), tmp.path().join("data").to_string_lossy().into_owned().into());
    cfg.insert("dns_name".into(), addr.clone().into());
    let f = tmp.path().join("cairn.yaml");
    std::fs::write(&f, serde_json::to_string(&cfg).unwrap()).unwrap();
    let new_port = format!(":{port}");
    let vars = [("$(NODE_NAME)", "node-a"), ("$(NODE_IP)", "127.0.0.1"), (listen.as_str(), new_port.as_str())];
    for a in &mut cmd {
        for (from, to) in vars {
            *a = a.replace(from, to);
        }
    }
    let i = cmd.iter().position(|a| a == "--config").unwrap() + 1;
    cmd[i] = f.to_string_lossy().into_owned();
    assert!(cmd.iter().all(|a| !a.contains("$(")), "every variable the command uses is set here: {cmd:?}");
    let mut c = Command::new(CAIRN);
    c.args(&cmd[1..]).env_remove("CAIRN_CONFIG").env("RUST_LOG", "info");
    let mut n = cairn_testkit::NodeProcess::spawn(c, &addr);
    assert!(cairn_testkit::health_ok(&addr), "GET /v1/health answers 200");
    let log = n.stop_and_log();
    assert!(log.contains("node-a") && log.contains(&format!("dns {addr}")), "{log}");
}
