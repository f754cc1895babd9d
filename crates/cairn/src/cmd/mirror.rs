//! `cairn mirror configure containerd`: writes containerd's per-registry
//! `hosts.toml` so pulls ask the local node first and fall back to the
//! registry itself when the node answers 404 or is down.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use crate::cli::ConfigureTarget;
use crate::exit::{BAD_INPUT, Exit};

/// First line of every file this command writes: files with it are ours to rewrite.
const MARKER: &str = "# Written by `cairn mirror configure containerd`; rerunning it rewrites this file.";

/// One `hosts.toml` and what happened to it.
#[derive(Debug, Serialize)]
struct Written {
    registry: String,
    path: PathBuf,
    /// `written`, `unchanged`, or `replaced` (a foreign file was kept as `hosts.toml.orig`).
    status: &'static str,
}

/// Runs `cairn mirror configure ...`.
pub fn configure(target: ConfigureTarget) -> anyhow::Result<ExitCode> {
    let ConfigureTarget::Containerd { registries, node, config_path, server, json } = target;
    let node = check_url(&node, "--node")?;
    if server.is_some() && registries.len() > 1 {
        return Err(bad("--server names the upstream of one registry; give one --registry with it".into()));
    }
    let server = server.map(|s| check_url(&s, "--server")).transpose()?;
    let mut done = Vec::new();
    for r in &registries {
        check_registry(r)?;
        let upstream = server.clone().unwrap_or_else(|| default_server(r));
        done.push(write_hosts(&config_path, r, &upstream, &node)?);
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&done).context("encoding the result")?);
    } else {
        for w in &done {
            outln!("{:<9}  {}  ({})", w.status, w.path.display(), w.registry);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn bad(msg: String) -> anyhow::Error {
    Exit { code: BAD_INPUT, msg }.into()
}

/// Docker Hub's registry is not at its reference name.
fn default_server(registry: &str) -> String {
    match registry {
        "docker.io" => "https://registry-1.docker.io".to_owned(),
        r => format!("https://{r}"),
    }
}

/// A registry host as in an image reference: becomes a directory name, so
/// nothing but a host and an optional port.
fn check_registry(r: &str) -> anyhow::Result<()> {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
        });
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(bad(format!("--registry {r:?} is not a registry host (like docker.io or registry.example:5000)")))
    }
}

/// An `http(s)://host[:port]` URL, without a path: what containerd's `host` and `server` take.
fn check_url(u: &str, flag: &str) -> anyhow::Result<String> {
    let rest = u.strip_prefix("http://").or_else(|| u.strip_prefix("https://"));
    let ok = rest.is_some_and(|r| {
        let r = r.trim_end_matches('/');
        !r.is_empty() && !r.contains(['/', '"', '\\', ' ', '\n', '?', '#', '@'])
    });
    if ok {
        Ok(u.trim_end_matches('/').to_owned())
    } else {
        Err(bad(format!("{flag} {u:?} is not an http:// or https:// URL of a host (like http://127.0.0.1:7420)")))
    }
}

fn contents(server: &str, node: &str) -> String {
    format!("{MARKER}\nserver = \"{server}\"\n\n[host.\"{node}\"]\n  capabilities = [\"pull\", \"resolve\"]\n")
}

fn write_hosts(config_path: &Path, registry: &str, server: &str, node: &str) -> anyhow::Result<Written> {
    let dir = config_path.join(registry);
    let path = dir.join("hosts.toml");
    let want = contents(server, node);
    let status = match std::fs::read_to_string(&path) {
        Ok(have) if have == want => "unchanged",
        Ok(have) if have.starts_with(MARKER) => "written",
        Ok(_) => {
            let orig = dir.join("hosts.toml.orig");
            if !orig.exists() {
                std::fs::rename(&path, &orig)
                    .with_context(|| format!("keeping {} as {}", path.display(), orig.display()))?;
            }
            "replaced"
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "written",
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if status != "unchanged" {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {} (run as root?)", dir.display()))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(&dir).with_context(|| format!("writing into {}", dir.display()))?;
        std::io::Write::write_all(&mut tmp, want.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
        // containerd reads it as root; people reading it need not be.
        std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .with_context(|| format!("chmod {}", tmp.path().display()))?;
        tmp.persist(&path).map_err(|e| e.error).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(Written { registry: registry.to_owned(), path, status })
}
