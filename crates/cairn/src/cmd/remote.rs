//! Commands that talk to a running node: `peers`, `cluster stats`,
//! `cluster manifests`, `fetch`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::table::Table;
use anyhow::{Context, bail};
use cairn_http::Client;
use cairn_store::{Digest, Hasher};
use futures_util::StreamExt;

use crate::cli::ClusterCommand;
use crate::exit::{BAD_INPUT, Exit};

/// Timeout of the JSON calls of these commands.
const TIMEOUT: Duration = Duration::from_secs(30);

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

use super::print_json;

/// `cairn peers`.
pub fn peers(node: &str, json: bool) -> anyhow::Result<ExitCode> {
    let list = runtime()?.block_on(Client::new(TIMEOUT).peers(node)).with_context(|| format!("asking node {node}"))?;
    if json {
        print_json(&list)?;
    } else if list.is_empty() {
        outln!("no peers configured on {node}");
    } else {
        let mut t = Table::new(&["ADDRESS", "NODE_ID", "HEALTHY", "LATENCY", "LAST_CONTACT"]).right(3).right(4);
        for p in list {
            let lat = humantime::format_duration(Duration::from_micros(p.latency / 1000)).to_string();
            let healthy = match (p.healthy, p.proven) {
                (_, Some(false)) => "unproven",
                (true, _) => "yes",
                (false, _) => "no",
            };
            // Owner election needs unique ids: say so where the operator looks.
            let id = if p.duplicate_node_id { format!("{} (DUPLICATE ID)", p.node_id) } else { p.node_id.clone() };
            t.row(vec![p.address, id, healthy.to_owned(), lat, contact_age(p.last_contact_ms)]);
        }
        t.print();
    }
    Ok(ExitCode::SUCCESS)
}

/// "3s ago" (whole seconds; "<1s ago" below), or "never".
fn contact_age(ms: Option<u64>) -> String {
    match ms {
        None => "never".into(),
        Some(ms) if ms < 1000 => "<1s ago".into(),
        Some(ms) => format!("{} ago", humantime::format_duration(Duration::from_secs(ms / 1000))),
    }
}

/// `cairn cluster ...`.
pub fn cluster(cmd: ClusterCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(TIMEOUT);
    let rt = runtime()?;
    match cmd {
        ClusterCommand::Stats { target } => {
            let node = target.node()?;
            let s = rt.block_on(client.cluster_stats(&node)).with_context(|| format!("asking node {node}"))?;
            if target.json {
                print_json(&s)?;
            } else {
                outln!(
                    "nodes:            {} ({} healthy)\nmanifests:        {}\nunique manifests: {}",
                    s.total_nodes,
                    s.healthy_nodes,
                    s.total_manifests,
                    s.unique_manifests
                );
                if let Some(r) = s.replication {
                    outln!(
                        "replicas:         {}\nheld here:        {} ({} under-replicated)\n\
                         replication:      {} in flight, {} failed, {} pulled since start",
                        r.replicas,
                        r.held,
                        r.under_replicated,
                        r.in_flight,
                        r.failed,
                        r.completed
                    );
                }
            }
        }
        ClusterCommand::Manifests { target } => {
            let node = target.node()?;
            let list = rt.block_on(client.cluster_manifests(&node)).with_context(|| format!("asking node {node}"))?;
            if target.json {
                print_json(&list)?;
            } else {
                let mut t = Table::new(&["NAME", "REF_FILE", "BLOBS", "NODE_ID"]).right(2);
                for m in list {
                    t.row(vec![m.name.to_string(), m.ref_file.to_string(), m.blob_count.to_string(), m.node_id]);
                }
                t.print();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `cairn fetch DIGEST [-o FILE]`: through the node's pipeline, verified
/// again here; a file is written to a temp name and renamed when complete.
pub fn fetch(node: &str, digest: &str, output: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let d = Digest::parse(digest).map_err(|e| Exit { code: BAD_INPUT, msg: format!("{e}") })?;
    let rt = runtime()?;
    let size = rt.block_on(fetch_to(node, &d, output))?;
    if json {
        let path = output.map(|p| p.display().to_string());
        print_json(&serde_json::json!({"digest": d, "size": size, "path": path, "node": node}))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn fetch_to(node: &str, d: &Digest, output: Option<&Path>) -> anyhow::Result<u64> {
    let client = Client::new(TIMEOUT);
    let mut blob = client.fetch(node, d).await.with_context(|| format!("fetching blob {d} through node {node}"))?;
    let (mut sink, tmp): (Box<dyn Write>, Option<PathBuf>) = match output {
        Some(p) => {
            let tmp = tmp_name(p);
            let f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            (Box::new(std::io::BufWriter::new(f)), Some(tmp))
        }
        None => {
            if std::io::stdout().is_terminal() {
                bail!("refusing to write blob bytes to a terminal; use -o FILE or redirect stdout");
            }
            (Box::new(std::io::stdout().lock()), None)
        }
    };
    let res = async {
        let mut h = Hasher::new();
        let mut n = 0u64;
        while let Some(c) = blob.body.next().await {
            let c = c.with_context(|| format!("receiving blob {d} from node {node}"))?;
            h.update(&c);
            n += c.len() as u64;
            sink.write_all(&c).context("writing the blob")?;
        }
        sink.flush().context("writing the blob")?;
        let got = h.finish();
        if got != *d {
            bail!("node {node} sent bytes hashing to {got} for blob {d}; nothing was kept");
        }
        Ok(n)
    }
    .await;
    drop(sink);
    match (res, tmp, output) {
        (Ok(n), Some(tmp), Some(out)) => {
            std::fs::rename(&tmp, out).with_context(|| format!("renaming into {}", out.display()))?;
            Ok(n)
        }
        (Ok(n), _, _) => Ok(n),
        (Err(e), tmp, _) => {
            if let Some(t) = tmp {
                let _ = std::fs::remove_file(t);
            }
            Err(e)
        }
    }
}

fn tmp_name(p: &Path) -> PathBuf {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "blob".into());
    p.with_file_name(format!(".{name}.cairn-part"))
}
