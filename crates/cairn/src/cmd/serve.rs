//! `cairn serve`: run a node until SIGINT/SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use cairn_http::AppState;
use cairn_store::Store;

use crate::config::NodeConfig;

pub fn run(cfg: NodeConfig) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let grace = cfg.shutdown_grace;
    let res = rt.block_on(serve(cfg));
    // Blocking store work still running (a temp blob being written) gets
    // the same deadline; an unfinished temp file is never made visible.
    rt.shutdown_timeout(grace);
    res?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(cfg: NodeConfig) -> anyhow::Result<()> {
    let dir = cfg.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .context("opening the data dir")?
        .with_context(|| format!("opening data dir {}", cfg.data_dir.display()))?;
    let state = AppState::new(store, cfg.cluster(), &cfg.listen_addr).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(cfg.bind)
        .await
        .with_context(|| format!("binding listen_addr {} ({})", cfg.listen_addr, cfg.bind))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let health = state.cluster.spawn_health_loop();
    tracing::info!(
        node_id = %cfg.node_id,
        listen = %local,
        advertise = %cfg.advertise_addr,
        peers = ?cfg.peers,
        data_dir = %cfg.data_dir.display(),
        "cairn node serving"
    );
    cairn_http::serve(listener, cairn_http::app(Arc::clone(&state)), shutdown_signal(), cfg.shutdown_grace)
        .await
        .context("serving")?;
    health.abort();
    tracing::info!("cairn node stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            // Without a SIGTERM handler, only Ctrl-C stops the node.
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
