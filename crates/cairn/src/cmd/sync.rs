//! `cairn sync PEER REF_FILE`: pull a manifest and its missing blobs from a
//! peer into the local data dir, with a progress bar on a terminal.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use cairn_cluster::{Cluster, SyncEvent};
use cairn_http::Client;
use cairn_store::{RefFile, Store};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use crate::config::NodeConfig;
use crate::exit::{BAD_INPUT, Exit};

pub fn run(cfg: NodeConfig, peer: &str, ref_file: &str, json: bool) -> anyhow::Result<ExitCode> {
    let rf = RefFile::parse(ref_file).map_err(|e| Exit { code: BAD_INPUT, msg: format!("ref file: {e}") })?;
    let store = Store::open(&cfg.data_dir).with_context(|| format!("opening data dir {}", cfg.data_dir.display()))?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = rt.block_on(sync(store, &cfg, peer, &rf))?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!(
            "synced {} ({} blobs) from {}: fetched {} blob(s), {} bytes",
            report.ref_file,
            report.blob_count,
            report.peer,
            report.fetched,
            report.bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn sync(store: Store, cfg: &NodeConfig, peer: &str, rf: &RefFile) -> anyhow::Result<cairn_cluster::SyncReport> {
    let cluster = Cluster::new(store, cfg.cluster(), Arc::new(Client::new(cfg.cluster.peer_timeout)));
    let bar = progress_bar();
    let b2 = bar.clone();
    let total_bytes = AtomicU64::new(0);
    let progress = Arc::new(move |e: SyncEvent| {
        let Some(b) = &b2 else { return };
        match e {
            SyncEvent::Planned { total, missing } => {
                b.set_length(missing as u64);
                b.set_prefix(format!("{total} listed"));
            }
            SyncEvent::Fetched { bytes, .. } => {
                let t = total_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
                b.inc(1);
                b.set_message(HumanBytes(t).to_string());
            }
        }
    });
    let res = cluster.sync(peer, rf, progress).await.with_context(|| format!("syncing {rf} from peer {peer}"));
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    res
}

fn progress_bar() -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = ProgressBar::new(0);
    let style =
        ProgressStyle::with_template("{spinner} {prefix}: {pos}/{len} missing blobs fetched, {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    b.set_style(style);
    Some(b)
}
