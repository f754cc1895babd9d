//! `cairn registry serve | ls | tags`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use cairn_http::v2::{V2State, registry_app};
use cairn_store::oci::{OciError, Registry, RegistryOptions, RepoName, Tag};
use cairn_store::{Access, Store, StoreOptions};

use crate::cli::RegistryCommand;
use crate::exit::{BAD_INPUT, Exit};

pub fn run(data_dir: &Path, cmd: RegistryCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RegistryCommand::Serve { port, bind, upload_ttl } => serve(data_dir, SocketAddr::new(bind, port), upload_ttl),
        RegistryCommand::Ls { json } => ls(data_dir, json),
        RegistryCommand::Tags { repo, json } => tags(data_dir, &repo, json),
    }
}

fn open_read_only(data_dir: &Path) -> anyhow::Result<Registry> {
    let store = Store::open_with(data_dir, StoreOptions { access: Access::ReadOnly, ..Default::default() })
        .with_context(|| format!("opening data dir {}", data_dir.display()))?;
    Ok(Registry::new(store, RegistryOptions::default())?)
}

fn serve(data_dir: &Path, addr: SocketAddr, upload_ttl: std::time::Duration) -> anyhow::Result<ExitCode> {
    let store = Store::open(data_dir).with_context(|| format!("opening data dir {}", data_dir.display()))?;
    let registry = Registry::new(store, RegistryOptions { upload_ttl, ..Default::default() })
        .with_context(|| format!("cleaning expired uploads in {}", data_dir.display()))?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr} (is another registry running there? try --port)"))?;
        let local = listener.local_addr().with_context(|| format!("reading the bound address of {addr}"))?;
        // One line: callers read it to learn the address.
        eprintln!(
            "cairn registry listening on http://{local} (data dir {}); pulls are open, pushes and deletes are \
             accepted from this host only (to take them from others: `cairn serve` with `auth`, README: Exposing a node)",
            data_dir.display()
        );
        let sweeper = cairn_http::v2::spawn_upload_sweeper(registry.clone());
        // The node's connection layer: header and idle timeouts, a connection cap, and the
        // client address (the per-client upload session cap counts by it).
        let app = registry_app(V2State::new(registry));
        let res = cairn_http::serve(listener, app, shutdown(), std::time::Duration::from_secs(30))
            .await
            .with_context(|| format!("serving the registry on {local}"));
        sweeper.abort();
        res
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

fn ls(data_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let reg = open_read_only(data_dir)?;
    let repos = reg.catalog().with_context(|| format!("listing repositories in {}", data_dir.display()))?;
    if json {
        super::print_json(&repos)?;
        return Ok(ExitCode::SUCCESS);
    }
    for r in repos {
        outln!("{r}");
    }
    Ok(ExitCode::SUCCESS)
}

fn tags(data_dir: &Path, repo: &str, json: bool) -> anyhow::Result<ExitCode> {
    let name = RepoName::parse(repo).map_err(|e| Exit { code: BAD_INPUT, msg: e.to_string() })?;
    let reg = open_read_only(data_dir)?;
    let tags = match reg.tags(&name) {
        Err(e @ OciError::NameUnknown(_)) => return Err(anyhow::Error::new(e).context("see `cairn registry ls`")),
        r => r.with_context(|| format!("listing tags of {repo}"))?,
    };
    let mut rows = Vec::new();
    for t in tags {
        let tag = Tag::parse(&t).with_context(|| format!("tag file {t:?} of {repo}"))?;
        let target = reg.tag_target(&name, &tag).with_context(|| format!("reading tag {repo}:{t}"))?;
        rows.push((t, target.map(|d| d.oci())));
    }
    if json {
        let v: Vec<_> = rows.iter().map(|(t, d)| serde_json::json!({"tag": t, "digest": d})).collect();
        super::print_json(&v)?;
    } else {
        for (t, d) in rows {
            outln!("{t}\t{}", d.unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}
