//! `cairn serve`: run a node until SIGINT/SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cairn_http::AppState;
use cairn_store::Store;

use crate::config::NodeConfig;

pub fn run(cfg: NodeConfig) -> anyhow::Result<ExitCode> {
    // Before the runtime's threads exist, so every one of them inherits it.
    let nofile = match cairn_http::server::raise_nofile_limit() {
        Ok(n) => {
            tracing::info!(limit = ?n, "open files: soft limit raised to the hard limit");
            n
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-file limit; connections are capped lower");
            cairn_http::server::nofile_limit()
        }
    };
    let limits = cairn_http::ServeLimits {
        header_timeout: cfg.header_timeout,
        idle_timeout: cfg.idle_timeout,
        max_connections: cfg.max_connections.unwrap_or_else(|| cairn_http::ServeLimits::fitting(nofile)),
    };
    tracing::info!(
        max_connections = limits.max_connections,
        header_timeout = ?limits.header_timeout,
        idle_timeout = ?limits.idle_timeout,
        body_timeout = ?cfg.cluster.body_timeout,
        "connection limits"
    );
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let grace = cfg.shutdown_grace;
    let res = rt.block_on(serve(cfg, limits));
    // Blocking store work still running (a temp blob being written) gets
    // the same deadline; an unfinished temp file is never made visible.
    rt.shutdown_timeout(grace);
    res?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(cfg: NodeConfig, limits: cairn_http::ServeLimits) -> anyhow::Result<()> {
    let (dir, storage) = (cfg.data_dir.clone(), cfg.storage.clone());
    let store = tokio::task::spawn_blocking(move || {
        crate::storage::open_store(&dir, storage.as_ref(), cairn_store::StoreOptions::default())
    })
    .await
    .context("opening the data dir")??;
    enable_cache(&cfg, &store).await?;
    // Every node is also a registry: /v2 on listen_addr, and on registry_addr when set.
    let registry = open_registry(&cfg, store.clone()).await?;
    let tls = match &cfg.tls {
        Some(files) => {
            Some(cairn_http::tls::ServerTls::load(files.clone()).context("loading the tls section's files")?)
        }
        None => None,
    };
    let client = match &tls {
        Some(t) => {
            let c = t.peer_client_config().context("the peer client's TLS")?;
            cairn_http::Client::for_peers_tls(cfg.cluster.peer_timeout, c).map_err(anyhow::Error::msg)?
        }
        None => cairn_http::Client::for_peers(cfg.cluster.peer_timeout),
    };
    let state = AppState::with_peer_client(store, cfg.cluster(), &cfg.listen_addr, Some(registry), client)
        .map_err(anyhow::Error::msg)?;
    install_auth(&cfg, &state)?;
    let listener = tokio::net::TcpListener::bind(cfg.bind)
        .await
        .with_context(|| format!("binding listen_addr {} ({})", cfg.listen_addr, cfg.bind))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let (registry, registry_addr) = match (cfg.registry_bind, state.v2_state()) {
        (Some(addr), Some(v2)) => {
            let (task, bound) = registry_listener(&cfg, v2, addr, limits, tls.clone()).await?;
            (Some(task), Some(bound))
        }
        _ => (None, None),
    };
    let (metrics, metrics_addr) = match cfg.metrics_bind {
        Some(addr) => {
            let (task, bound) = metrics_listener(&cfg, &state, addr, limits, tls.clone()).await?;
            (Some(task), Some(bound))
        }
        None => (None, None),
    };
    let reload = spawn_reload(&cfg, Arc::clone(&state.auth), tls.clone());
    let health = state.cluster.spawn_health_loop();
    let sweeper = state.registry.clone().map(cairn_http::v2::spawn_upload_sweeper);
    let gc = cfg
        .gc_interval
        .map(|every| spawn_gc(state.cluster.store().clone(), Arc::clone(&state.metrics), every, cfg.gc_grace));
    let evictor = cairn_http::evictor::spawn_evictor(Arc::clone(&state), cairn_http::evictor::EVICT_INTERVAL, |r| {
        if !r.blobs.is_empty() {
            tracing::info!(
                blobs = r.blobs.len(),
                bytes = r.bytes,
                pinned_over_cap = r.pinned_over_cap,
                "evicted least recently used blobs"
            );
        }
    });
    let mdns = start_discovery(&cfg, &state.cluster)?;
    let dns = start_dns_discovery(&cfg, &state.cluster, local);
    let discovery = match &cfg.dns_name {
        Some(name) => format!("dns {name}"),
        None => cfg.discovery.as_str().to_owned(),
    };
    // The one start line: what an operator needs to see the node is set up as meant.
    tracing::info!(
        node_id = %cfg.cluster.node_id,
        listen = %local,
        registry = %registry_addr.map_or_else(|| "none".to_owned(), |a| a.to_string()),
        metrics = %metrics_addr.map_or_else(|| "listen_addr".to_owned(), |a| a.to_string()),
        advertise = %cfg.advertise_addr,
        data_dir = %cfg.data_dir.display(),
        storage = %cfg.storage.as_ref().map_or_else(|| "local".to_owned(), storage_line),
        peers = ?cfg.cluster.peers,
        discovery = %discovery,
        cluster_secret = if cfg.cluster.cluster_secret.is_some() { "on: peers prove membership" } else { "off: peers unauthenticated" },
        auth = ?auth_mode(&state),
        tls = %tls.as_ref().map_or("off", |t| t.mode()),
        "cairn node serving"
    );
    notify_systemd(sd_notify::NotifyState::Ready);
    cairn_http::serve_tls_with(
        listener,
        cairn_http::app(Arc::clone(&state)),
        shutdown_signal(),
        cfg.shutdown_grace,
        limits,
        tls,
    )
    .await
    .context("serving")?;
    health.abort();
    if let Some(r) = reload {
        r.abort();
    }
    if let Some(g) = gc {
        g.abort();
    }
    if let Some(e) = evictor {
        e.abort();
    }
    if let Some(s) = sweeper {
        s.abort();
    }
    if let Some(d) = dns {
        d.abort();
    }
    // Dropping the announcer sends the goodbye, so peers drop this node now.
    drop(mdns);
    if let Some(r) = registry {
        r.await.context("registry listener task")?.context("serving the registry")?;
    }
    if let Some(m) = metrics {
        m.await.context("metrics listener task")?.context("serving metrics")?;
    }
    tracing::info!("cairn node stopped");
    Ok(())
}

/// Turns on the bounded cache when the config has a `cache` section: its
/// sizes resolved against the data dir's filesystem, the store listed once
/// to learn what it holds.
/// How the start line names the durable tier.
fn storage_line(s: &crate::storage::StorageConfig) -> String {
    let at = s.s3.endpoint.as_deref().unwrap_or("aws");
    let prefix = if s.s3.prefix.is_empty() { String::new() } else { format!("/{}", s.s3.prefix) };
    format!("s3 {at} bucket {}{prefix}", s.s3.bucket)
}

async fn enable_cache(cfg: &NodeConfig, store: &Store) -> anyhow::Result<()> {
    let Some(limits) = cfg.cache else { return Ok(()) };
    let total = cairn_http::metrics::disk(&cfg.data_dir)
        .with_context(|| format!("cache: reading the size of {}'s filesystem", cfg.data_dir.display()))?
        .0;
    let w = limits.resolve(total);
    store
        .run(move |s| s.enable_cache(w))
        .await
        .with_context(|| format!("cache: listing the blobs in {}", cfg.data_dir.display()))?;
    tracing::info!(
        max_bytes = w.max_bytes,
        min_free = w.min_free,
        used = store.cache_used().unwrap_or(0),
        "bounded cache on: least recently used blobs are evicted past these limits"
    );
    Ok(())
}

/// Runs a GC every `every` (first after one interval). GC takes the same
/// locks as `cairn gc`, so it is safe beside pushes and pulls; a failed run
/// is logged and the next one tried.
fn spawn_gc(
    store: Store,
    metrics: Arc<cairn_http::metrics::Metrics>,
    every: Duration,
    grace: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let opts = cairn_store::GcOptions { grace, dry_run: false };
            match store.run(move |s| s.gc(opts)).await {
                Ok(r) => {
                    metrics.record_gc(&r);
                    tracing::info!(
                        deleted = r.blobs.len(),
                        bytes = r.bytes,
                        referenced = r.referenced,
                        young = r.young,
                        "scheduled gc finished"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "scheduled gc failed; the next run is in gc_interval"),
            }
        }
    })
}

/// Who may do what, for the start line.
fn auth_mode(state: &AppState) -> String {
    state.auth.policy().describe().to_string()
}

/// Installs the `auth` section's policy (reading its files), or keeps the
/// loopback-only default, and logs which one is on.
fn install_auth(cfg: &NodeConfig, state: &AppState) -> anyhow::Result<()> {
    if let Some(a) = &cfg.auth {
        state.auth.set(cairn_http::auth::Policy::from_config(a)?);
    }
    // The mode itself is in the start line.
    let policy = state.auth.policy();
    let has_peers = !cfg.cluster.peers.is_empty() || cfg.discovery != cairn_cluster::discovery::Discovery::Static;
    // With a cluster secret, peers prove membership and may pull anyway.
    if has_peers && cfg.cluster.cluster_secret.is_none() && !policy.anonymous_may(cairn_http::auth::Kind::Pull, None) {
        tracing::warn!(
            "auth.anonymous cannot pull \"*\", and without cluster_secret_file peers send no credentials: peers \
             will get 401 from this node; set cluster_secret_file on every node (README: \"Cluster membership\"), \
             or give anonymous pull on \"*\""
        );
    }
    Ok(())
}

/// On SIGHUP, reads the `auth` section's htpasswd and tokens files again
/// (rights come from the config as loaded at start) and the `tls` files.
/// A file that no longer loads keeps what is in force, with a warning.
fn spawn_reload(
    cfg: &NodeConfig,
    auth: Arc<cairn_http::auth::Auth>,
    tls: Option<Arc<cairn_http::tls::ServerTls>>,
) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let section = cfg.auth.clone();
    if section.is_none() && tls.is_none() {
        return None;
    }
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; auth and tls files are read at start only");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if let Some(section) = &section {
                match cairn_http::auth::Policy::from_config(section) {
                    Ok(p) => {
                        auth.set(p);
                        tracing::info!(mode = %auth.policy().describe(), "SIGHUP: auth files reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "SIGHUP: auth files not reloaded; the previous rules stay in force")
                    }
                }
            }
            if let Some(t) = &tls {
                match t.reload() {
                    Ok(()) => tracing::info!("SIGHUP: tls certificate reloaded; new connections use it"),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "SIGHUP: tls files not reloaded; the previous certificate stays in force"
                    ),
                }
            }
        }
    }))
}

/// Starts mDNS when `discovery: mdns`; the peers it finds join the peer set.
fn start_discovery(
    cfg: &NodeConfig,
    cluster: &cairn_cluster::Cluster,
) -> anyhow::Result<Option<cairn_cluster::discovery::Mdns>> {
    if cfg.discovery != cairn_cluster::discovery::Discovery::Mdns {
        return Ok(None);
    }
    let addr: std::net::SocketAddr = cfg.advertise_addr.parse().with_context(|| {
        format!("discovery: mdns announces advertise_addr, which must be ip:port, not {:?}", cfg.advertise_addr)
    })?;
    let c = cluster.clone();
    let m = cairn_cluster::discovery::Mdns::start(&cfg.cluster.node_id, addr, move |ev| c.peers().apply(&ev))
        .context("starting mDNS discovery")?;
    Ok(Some(m))
}

/// Starts the `dns_name` resolution loop when `discovery: dns`; the
/// addresses it finds join the peer set, this node's own left out.
fn start_dns_discovery(
    cfg: &NodeConfig,
    cluster: &cairn_cluster::Cluster,
    bound: std::net::SocketAddr,
) -> Option<tokio::task::JoinHandle<()>> {
    use cairn_cluster::discovery::{Discovery, OwnAddrs, SystemResolver, spawn_dns};
    let name = cfg.dns_name.clone().filter(|_| cfg.discovery == Discovery::Dns)?;
    let own = OwnAddrs { bound, advertise: cfg.advertise_addr.parse().ok() };
    let c = cluster.clone();
    // A lookup takes no longer than a peer request, nor than the period.
    let timeout = cfg.cluster.peer_timeout.min(cfg.cluster.health_interval);
    Some(spawn_dns(name, SystemResolver, own, cfg.cluster.health_interval, timeout, move |ev| c.peers().apply(&ev)))
}

/// The OCI registry on the node's store.
async fn open_registry(cfg: &NodeConfig, store: Store) -> anyhow::Result<cairn_store::oci::Registry> {
    let opts = cairn_store::oci::RegistryOptions {
        upload_ttl: cfg.upload_ttl,
        max_upload_sessions: cfg.max_upload_sessions,
        max_upload_sessions_per_client: cfg.max_upload_sessions_per_client,
    };
    store
        .run(move |s| cairn_store::oci::Registry::new(s.clone(), opts))
        .await
        .with_context(|| format!("cleaning expired uploads in {}", cfg.data_dir.display()))
}

/// Serves /v2 on its own listener until SIGINT/SIGTERM; a miss goes
/// through the cluster pipeline (the mirror). Returns the task and the
/// bound address.
async fn registry_listener(
    cfg: &NodeConfig,
    v2: cairn_http::v2::V2State,
    addr: std::net::SocketAddr,
    limits: cairn_http::ServeLimits,
    tls: Option<Arc<cairn_http::tls::ServerTls>>,
) -> anyhow::Result<(tokio::task::JoinHandle<std::io::Result<()>>, std::net::SocketAddr)> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding registry_addr {addr}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let app = cairn_http::v2::registry_app(v2);
    let serving = cairn_http::serve_tls_with(listener, app, shutdown_signal(), cfg.shutdown_grace, limits, tls);
    Ok((tokio::spawn(serving), bound))
}

/// Serves only `GET /metrics` on its own listener until SIGINT/SIGTERM.
/// Returns the task and the bound address.
async fn metrics_listener(
    cfg: &NodeConfig,
    state: &Arc<AppState>,
    addr: std::net::SocketAddr,
    limits: cairn_http::ServeLimits,
    tls: Option<Arc<cairn_http::tls::ServerTls>>,
) -> anyhow::Result<(tokio::task::JoinHandle<std::io::Result<()>>, std::net::SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding metrics_addr {addr}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let app = cairn_http::metrics::app(Arc::clone(state));
    let serving = cairn_http::serve_tls_with(listener, app, shutdown_signal(), cfg.shutdown_grace, limits, tls);
    Ok((tokio::spawn(serving), bound))
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
    notify_systemd(sd_notify::NotifyState::Stopping);
}

/// Tells systemd (`Type=notify`, `$NOTIFY_SOCKET` set) where the node is:
/// ready once its listeners are bound, stopping on a signal. Without
/// systemd this does nothing.
fn notify_systemd(state: sd_notify::NotifyState) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %e, "could not notify systemd through $NOTIFY_SOCKET");
    }
}
