//! The node's configuration: a YAML (or JSON) file with the seed's keys and
//! Cairn's own, overridden by flags, checked into one [`NodeConfig`].
//! No file at all is fine: every key has a default.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_cluster::Origin;
use serde::Deserialize;

/// The seed's default port.
pub const DEFAULT_PORT: u16 = 7420;

/// The file as written. Unknown keys are an error naming the key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Seed: this node's id (default: the hostname).
    pub node_id: Option<String>,
    /// Seed: `host:port` or `:port` (default `:7420`).
    pub listen_addr: Option<String>,
    /// Seed: peer addresses, `host:port`.
    pub peers: Option<Vec<String>>,
    /// Seed: the address peers reach this node at (default: first non-loopback address).
    pub advertise_addr: Option<String>,
    /// Seed: peer request timeout, humantime (`10s`, `500ms`).
    pub peer_timeout: Option<String>,
    /// Seed: use origins when no peer has a blob (default true).
    pub enable_cdn_fallback: Option<bool>,
    /// Cairn: the data directory.
    pub data_dir: Option<PathBuf>,
    /// Cairn: origins, tried in order: `[{url: "http://cdn/blobs/{digest}"}]`
    /// or `[{registry: "https://registry-1.docker.io", ...}]`.
    pub origins: Option<Vec<OriginConfig>>,
    /// Cairn: time between health probes of a healthy peer (default `30s`).
    pub health_interval: Option<String>,
    /// Cairn: remote transfers at once, also the sync concurrency (default 16).
    pub max_concurrent_fetches: Option<usize>,
    /// Cairn: how long shutdown waits for in-flight requests (default `30s`).
    pub shutdown_grace: Option<String>,
    /// Cairn: how peers are found: `static` (the `peers` list; default),
    /// `mdns` (the list plus DNS-SD on the advertised interface) or `dns`
    /// (the list plus every address `dns_name` resolves to).
    pub discovery: Option<String>,
    /// Cairn: bytes per second this node sends to peers, all together (default: no limit).
    pub egress_limit: Option<u64>,
    /// Cairn: one origin fetch per cluster via an elected owner per digest (default true).
    pub elect_owner: Option<bool>,
    /// Cairn: a second listener for the OCI registry (`/v2`), `host:port` or
    /// `:port`; `/v2` is always served on `listen_addr` too (default: none).
    pub registry_addr: Option<String>,
    /// Cairn: registry uploads idle this long are dropped (default `1h`).
    pub upload_ttl: Option<String>,
    /// Cairn: open registry upload sessions, all clients together (default 1024).
    pub max_upload_sessions: Option<usize>,
    /// Cairn: open registry upload sessions of one client address (default 64).
    pub max_upload_sessions_per_client: Option<usize>,
    /// Cairn: bytes per second a peer or origin must keep up while sending
    /// a blob, 0 for no minimum (default 65536).
    pub min_transfer_rate: Option<u64>,
    /// Cairn: the window `min_transfer_rate` is measured over (default `10s`).
    pub rate_window: Option<String>,
    /// Cairn: largest blob fetched from a peer or origin, bytes (default 64 GiB).
    pub max_blob_size: Option<u64>,
    /// Cairn: free bytes kept in the data dir when fetching (default 256 MiB).
    pub min_free_space: Option<u64>,
    /// Cairn: most objects a synced or pushed manifest may list (default 100000).
    pub max_manifest_objects: Option<usize>,
    /// Cairn: a request body (upload) that sends nothing this long is dropped (default `30s`).
    pub body_timeout: Option<String>,
    /// Cairn: a client must send its request headers within this (default `10s`).
    pub header_timeout: Option<String>,
    /// Cairn: a keep-alive connection with no request for this long is closed (default `60s`).
    pub idle_timeout: Option<String>,
    /// Cairn: open client connections at most, per listener (default 4096, at most 3/4 of the fd limit).
    pub max_connections: Option<usize>,
    /// Cairn: when peers are asked for a tag while registry origins are
    /// configured: `never`, `fallback` (default; after the upstreams) or `first`.
    pub peer_tags: Option<String>,
    /// Cairn: who may do what (users, tokens, rights); without it pulls are
    /// open and the rest is loopback-only (README: "Exposing a node").
    pub auth: Option<cairn_http::auth::AuthConfig>,
    /// Cairn: a file holding the shared cluster secret peers prove
    /// membership with (README: "Cluster membership"; default: none).
    pub cluster_secret_file: Option<PathBuf>,
    /// Cairn: HTTPS on every listener and to peers: `{cert_file, key_file,
    /// client_ca_file?, peer_ca_file?}` (README: "TLS").
    pub tls: Option<cairn_http::tls::TlsFiles>,
    /// Cairn: `text` (default) or `json` (one object per line) for `serve`'s log.
    pub log_format: Option<String>,
    /// Cairn: what `serve` logs, as `RUST_LOG` takes it (`info`, `warn,cairn=debug`;
    /// default `warn` plus the start and stop lines). `$RUST_LOG` overrides it.
    pub log_level: Option<String>,
    /// Cairn: `serve` runs a GC this often (default `off`).
    pub gc_interval: Option<String>,
    /// Cairn: the scheduled GC keeps unreferenced blobs younger than this (default `1h`).
    pub gc_grace: Option<String>,
    /// Cairn: a listener serving only `GET /metrics`, `host:port` or `:port`;
    /// `/metrics` is always served on `listen_addr` too (default: none).
    pub metrics_addr: Option<String>,
    /// Cairn: with `discovery: dns` (the default when this is set), the
    /// `host:port` resolved every `health_interval`; each address is a peer
    /// (e.g. a Kubernetes headless Service, `cairn-peers.cairn.svc.cluster.local:7420`).
    pub dns_name: Option<String>,
    /// Cairn: the bounded cache, `{max_bytes, min_free}` (default: none, no cap).
    pub cache: Option<CacheSection>,
    /// Cairn: the durable tier, `{backend: s3, bucket, ...}` (default: local only).
    pub storage: Option<crate::storage::StorageSection>,
    /// Cairn: copies kept of every blob a client pushes, on distinct nodes
    /// (default 1: only the pushing node's; README: "Replication").
    pub replicas: Option<usize>,
    /// Cairn: fetch big blobs as pieces from every node that has some
    /// (default false; README: "Swarm").
    pub swarm: Option<bool>,
    /// Cairn: the slowest an asker may take a swarm piece from this node,
    /// bytes per second; past 1 s plus the piece at this rate its
    /// connection is cut and the upload slot freed (default 1048576).
    pub swarm_min_send_rate: Option<u64>,
}

/// The `cache` section: limits past which `serve` evicts least recently
/// used blobs. Sizes are bytes, `500MB`, `50GiB`, or `10%` of the data
/// dir's filesystem.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    /// Most bytes of blobs kept (default: no cap).
    pub max_bytes: Option<SizeText>,
    /// Least free bytes left on the data dir's filesystem (default 0).
    pub min_free: Option<SizeText>,
}

/// A size as written: a number, or text such as `50GiB` or `10%`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeText {
    /// Bytes.
    Bytes(u64),
    /// Text for [`cairn_store::cache::Limit`].
    Text(String),
}

impl SizeText {
    fn limit(&self, key: &str) -> anyhow::Result<cairn_store::cache::Limit> {
        match self {
            SizeText::Bytes(n) => Ok(cairn_store::cache::Limit::Bytes(*n)),
            SizeText::Text(t) => t.parse().with_context(|| format!("cache.{key}")),
        }
    }
}

/// The checked `cache` section; resolved to bytes against the data dir's
/// filesystem when `serve` starts ([`CacheLimits::resolve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// `cache.max_bytes`; `None`: no cap.
    pub max_bytes: Option<cairn_store::cache::Limit>,
    /// `cache.min_free`; `None`: 0.
    pub min_free: Option<cairn_store::cache::Limit>,
}

impl CacheLimits {
    /// The watermarks for a filesystem of `total` bytes.
    pub fn resolve(&self, total: u64) -> cairn_store::cache::Watermarks {
        cairn_store::cache::Watermarks {
            max_bytes: self.max_bytes.map_or(u64::MAX, |l| l.resolve(total)),
            min_free: self.min_free.map_or(0, |l| l.resolve(total)),
        }
    }
}

/// One origin entry: either `url` (a URL template) or `registry` (an
/// upstream OCI registry, with the keys after it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    /// URL template containing `{digest}`.
    pub url: Option<String>,
    /// Upstream OCI registry base URL, e.g. `https://registry-1.docker.io`.
    pub registry: Option<String>,
    /// Registry user (token endpoint or basic auth); needs `password`.
    pub username: Option<String>,
    /// Registry password or access token.
    pub password: Option<String>,
    /// How long a tag resolved upstream is trusted (default `5m`).
    pub tag_ttl: Option<String>,
    /// A URL origin: its time for the answer's headers and for any pause in
    /// its body (default `peer_timeout`). A registry: its connect and answer
    /// timeout (default `30s`).
    pub timeout: Option<String>,
    /// A URL origin: extra tries after a transport error or a 5xx, with
    /// backoff and jitter (default 2).
    pub retries: Option<u32>,
    /// PEM CA certificates trusted for this origin, besides the system trust store.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate from this origin (default false; logged as a warning).
    pub insecure_skip_verify: Option<bool>,
    /// A registry: a file holding the password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// A registry: an environment variable holding the password.
    pub password_env: Option<String>,
}

impl OriginConfig {
    /// The origin this entry describes; errors name the entry and the key.
    pub fn to_origin(&self, index: usize) -> anyhow::Result<Origin> {
        let at = |key: &str| format!("origins[{index}].{key}");
        match (&self.url, &self.registry) {
            (Some(url), None) => {
                for (key, set) in [
                    ("username", self.username.is_some()),
                    ("password", self.password.is_some()),
                    ("tag_ttl", self.tag_ttl.is_some()),
                    ("password_file", self.password_file.is_some()),
                    ("password_env", self.password_env.is_some()),
                ] {
                    if set {
                        bail!("{}: only a registry origin takes {key}", at(key));
                    }
                }
                let mut origin = Origin::http(url).map_err(|e| anyhow::anyhow!("{}: {e}", at("url")))?;
                if let Some(v) = &self.timeout {
                    origin = origin.with_timeout(duration(&at("timeout"), v)?);
                }
                if let Some(n) = self.retries {
                    origin = origin.with_retries(n);
                }
                if self.ca_file.is_some() || self.insecure_skip_verify == Some(true) {
                    origin = origin
                        .with_tls(self.ca_file.as_deref(), self.insecure_skip_verify.unwrap_or(false))
                        .map_err(|e| anyhow::anyhow!("origins[{index}]: {e}"))?;
                }
                Ok(origin)
            }
            (None, Some(registry)) => {
                if self.retries.is_some() {
                    bail!("{}: only a url origin takes retries", at("retries"));
                }
                let defaults = cairn_cluster::upstream::UpstreamConfig::default();
                let tag_ttl = match &self.tag_ttl {
                    // Zero is allowed: ask upstream every time, use the cache only when it is down.
                    Some(v) => humantime::parse_duration(v.trim())
                        .with_context(|| format!("{}: {v:?} is not a duration (use e.g. 5m, 30s)", at("tag_ttl")))?,
                    None => defaults.tag_ttl,
                };
                let timeout = match &self.timeout {
                    Some(v) => duration(&at("timeout"), v)?,
                    None => defaults.timeout,
                };
                let password = self.password(index)?;
                Origin::registry(cairn_cluster::upstream::UpstreamConfig {
                    url: registry.clone(),
                    username: self.username.clone(),
                    password,
                    tag_ttl,
                    timeout,
                    ca_file: self.ca_file.clone(),
                    insecure_skip_verify: self.insecure_skip_verify.unwrap_or(false),
                })
                .map_err(|e| anyhow::anyhow!("{}: {e}", at("registry")))
            }
            (Some(_), Some(_)) => bail!("origins[{index}]: give either url or registry, not both"),
            (None, None) => {
                bail!("origins[{index}]: give url (a template with {{digest}}) or registry (a registry URL)")
            }
        }
    }
}

impl OriginConfig {
    /// The registry password: inline, from `password_file`, or from the
    /// variable `password_env`; at most one of them.
    fn password(&self, index: usize) -> anyhow::Result<Option<String>> {
        let given = [self.password.is_some(), self.password_file.is_some(), self.password_env.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            bail!("origins[{index}]: give one of password, password_file and password_env");
        }
        if let Some(p) = &self.password_file {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("origins[{index}].password_file: reading {}", p.display()))?;
            let pw = text.trim_end_matches(['\r', '\n']).to_owned();
            if pw.is_empty() {
                bail!("origins[{index}].password_file: {} is empty", p.display());
            }
            return Ok(Some(pw));
        }
        if let Some(var) = &self.password_env {
            return match std::env::var(var) {
                Ok(pw) if !pw.is_empty() => Ok(Some(pw)),
                _ => bail!("origins[{index}].password_env: the environment variable {var} is not set or empty"),
            };
        }
        if self.password.is_some() {
            tracing::warn!(
                origin = index,
                "origins[{index}].password is written in the config; prefer password_file or password_env"
            );
        }
        Ok(self.password.clone())
    }
}

/// Flags of `cairn serve` that override the file.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Config file (YAML or JSON) [default: $CAIRN_CONFIG]
    #[arg(long, value_name = "FILE", env = "CAIRN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Node id [config: node_id; default: the hostname]
    #[arg(long)]
    pub node_id: Option<String>,
    /// Listen address, `host:port` or `:port` [config: listen_addr; default :7420]
    #[arg(long, value_name = "ADDR")]
    pub listen_addr: Option<String>,
    /// A peer `host:port`; repeat for several (replaces the config's list) [config: peers]
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<String>,
    /// Address peers reach this node at [config: advertise_addr]
    #[arg(long, value_name = "ADDR")]
    pub advertise_addr: Option<String>,
    /// Peer request timeout, e.g. 10s, 500ms [config: peer_timeout; default 10s]
    #[arg(long, value_name = "DURATION")]
    pub peer_timeout: Option<String>,
    /// Health probe interval [config: health_interval; default 30s]
    #[arg(long, value_name = "DURATION")]
    pub health_interval: Option<String>,
    /// An origin URL template with {digest}; repeat for several [config: origins]
    #[arg(long = "origin", value_name = "URL")]
    pub origins: Vec<String>,
    /// Never use origins [config: enable_cdn_fallback: false]
    #[arg(long)]
    pub no_cdn_fallback: bool,
    /// Remote transfers at once [config: max_concurrent_fetches; default 16]
    #[arg(long, value_name = "N")]
    pub max_concurrent_fetches: Option<usize>,
    /// Also serve the OCI registry (/v2) here, `host:port` or `:port` [config: registry_addr]
    #[arg(long, value_name = "ADDR")]
    pub registry_addr: Option<String>,
}

/// The checked configuration of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// What the cluster layer takes: node id, peers, origins, timeouts and
    /// transfer limits (their defaults are `ClusterConfig::default`).
    pub cluster: cairn_cluster::ClusterConfig,
    /// The listen address as configured (shown in `/v1/info`).
    pub listen_addr: String,
    /// The socket address to bind.
    pub bind: SocketAddr,
    /// Address advertised to peers.
    pub advertise_addr: String,
    /// Data dir.
    pub data_dir: PathBuf,
    /// Shutdown deadline.
    pub shutdown_grace: Duration,
    /// How peers are found.
    pub discovery: cairn_cluster::discovery::Discovery,
    /// The registry's listener, when there is one.
    pub registry_bind: Option<SocketAddr>,
    /// Registry upload lifetime.
    pub upload_ttl: Duration,
    /// Open registry upload sessions, all clients together.
    pub max_upload_sessions: usize,
    /// Open registry upload sessions of one client address.
    pub max_upload_sessions_per_client: usize,
    /// Longest time to receive a request's headers.
    pub header_timeout: Duration,
    /// Longest idle time of a keep-alive connection.
    pub idle_timeout: Duration,
    /// Open client connections at most, per listener (`None`: the default, from the fd limit).
    pub max_connections: Option<usize>,
    /// The `auth` section, when there is one (its files are read at start).
    pub auth: Option<cairn_http::auth::AuthConfig>,
    /// The `tls` section, when there is one (its files are read at start and on SIGHUP).
    pub tls: Option<cairn_http::tls::TlsFiles>,
    /// The log's format.
    pub log_format: LogFormat,
    /// The log filter (`RUST_LOG` syntax).
    pub log_level: String,
    /// How often `serve` runs a GC (`None`: never).
    pub gc_interval: Option<Duration>,
    /// Grace of the scheduled GC.
    pub gc_grace: Duration,
    /// The listener serving only `/metrics`, when there is one.
    pub metrics_bind: Option<SocketAddr>,
    /// The `host:port` whose addresses are peers (`discovery: dns`).
    pub dns_name: Option<String>,
    /// The bounded cache's limits (`None`: no cache section, no cap).
    pub cache: Option<CacheLimits>,
    /// The durable tier (`None`: the data dir alone).
    pub storage: Option<crate::storage::StorageConfig>,
}

/// How `serve` writes its log (config key `log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The log filter when neither `log_level` nor `$RUST_LOG` says otherwise:
/// warnings, plus `serve`'s own start and stop lines.
pub const DEFAULT_LOG_LEVEL: &str = "warn,cairn::cmd::serve=info";

/// Reads a config file: JSON when it starts with `{`, YAML otherwise.
pub fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    parse(&text).with_context(|| format!("config file {}", path.display()))
}

/// Parses config text (YAML, or JSON).
pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{e}"));
    }
    serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))
}

fn duration(key: &str, v: &str) -> anyhow::Result<Duration> {
    let d = humantime::parse_duration(v.trim())
        .with_context(|| format!("{key}: {v:?} is not a duration (use e.g. 10s, 500ms, 1m)"))?;
    if d.is_zero() {
        bail!("{key}: must be more than zero");
    }
    Ok(d)
}

/// The address to bind for a listen address: `:7420` means every interface.
pub fn bind_addr(listen: &str) -> anyhow::Result<SocketAddr> {
    let full = if listen.starts_with(':') { format!("0.0.0.0{listen}") } else { listen.to_owned() };
    full.to_socket_addrs()
        .with_context(|| format!("listen_addr {listen:?} is not host:port or :port"))?
        .next()
        .with_context(|| format!("listen_addr {listen:?} resolves to no address"))
}

/// Why peer entry `p` names this node itself, if it does: its node id, its
/// listen or advertised address, or its port on a loopback or unspecified
/// host (or on the address it binds).
fn self_peer(p: &str, node_id: &str, listen: &str, bind: SocketAddr, advertise: &str) -> Option<String> {
    if p == node_id {
        return Some("this node's node_id".into());
    }
    if p == listen || p == advertise || p == client_addr(listen) {
        return Some("this node's listen or advertised address".into());
    }
    let (host, port) = p.rsplit_once(':')?;
    if port.parse::<u16>().ok()? != bind.port() {
        return None;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host == node_id {
        return Some(format!("this node's node_id with its port {}", bind.port()));
    }
    let local = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback() || ip.is_unspecified() || ip == bind.ip(),
        Err(_) => host.is_empty() || host.eq_ignore_ascii_case("localhost"),
    };
    local.then(|| format!("this host's port {}, where this node listens", bind.port()))
}

/// The checked `dns_name`: required with `discovery: dns`, refused with
/// another discovery (it would be silently unused), and `host:port`.
fn dns_name(discovery: cairn_cluster::discovery::Discovery, name: Option<String>) -> anyhow::Result<Option<String>> {
    use cairn_cluster::discovery::Discovery;
    let name = name.map(|n| n.trim().to_owned());
    match (discovery, name) {
        (Discovery::Dns, None) => bail!(
            "discovery: dns needs dns_name, the host:port whose addresses are the peers \
             (e.g. dns_name: \"cairn-peers.cairn.svc.cluster.local:7420\")"
        ),
        (Discovery::Dns, Some(n)) => {
            let port = n.rsplit_once(':').filter(|(h, _)| !h.is_empty()).and_then(|(_, p)| p.parse::<u16>().ok());
            if n.contains(char::is_whitespace) || n.contains('/') || !matches!(port, Some(p) if p > 0) {
                bail!("dns_name {n:?} is not host:port (e.g. cairn-peers.cairn.svc.cluster.local:7420)");
            }
            Ok(Some(n))
        }
        (other, Some(n)) => {
            bail!("dns_name {n:?} is set but discovery is {:?}; it is used only with discovery: dns", other.as_str())
        }
        (_, None) => Ok(None),
    }
}

/// Where a client reaches the node listening on `listen`.
pub fn client_addr(listen: &str) -> String {
    match listen.strip_prefix(':') {
        Some(port) => format!("127.0.0.1:{port}"),
        None => listen.replace("0.0.0.0:", "127.0.0.1:"),
    }
}

fn hostname() -> String {
    let from_file = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    if !from_file.is_empty() {
        return from_file;
    }
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "cairn".into())
}

impl NodeConfig {
    /// Merges the file (if any), the flags and the defaults, and checks the result.
    pub fn load(flags: &Overrides, data_dir_flag: Option<PathBuf>) -> anyhow::Result<NodeConfig> {
        let file = match &flags.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        NodeConfig::merge(file, flags, data_dir_flag)
    }

    /// Applies flags over `file` over the defaults.
    pub fn merge(file: FileConfig, flags: &Overrides, data_dir_flag: Option<PathBuf>) -> anyhow::Result<NodeConfig> {
        // The cluster's defaults are set in one place: `ClusterConfig::default`.
        let defaults = cairn_cluster::ClusterConfig::default();
        let node_id = flags.node_id.clone().or(file.node_id).unwrap_or_else(hostname);
        if node_id.is_empty() || !node_id.chars().all(|c| c.is_ascii_graphic()) {
            bail!("node_id {node_id:?} must be non-empty printable ASCII without spaces");
        }
        let listen_addr = flags.listen_addr.clone().or(file.listen_addr).unwrap_or_else(|| format!(":{DEFAULT_PORT}"));
        let bind = bind_addr(&listen_addr)?;
        let peers = if flags.peers.is_empty() { file.peers.unwrap_or_default() } else { flags.peers.clone() };
        for p in &peers {
            if p.trim().is_empty() || p.contains(char::is_whitespace) {
                bail!("peers: {p:?} is not a host:port address");
            }
        }
        let advertise_addr = match flags.advertise_addr.clone().or(file.advertise_addr) {
            Some(a) => a,
            None => match cairn_cluster::advertise::detect_ip() {
                Some(ip) => SocketAddr::new(ip, bind.port()).to_string(),
                None => format!("127.0.0.1:{}", bind.port()),
            },
        };
        for p in &peers {
            if let Some(why) = self_peer(p, &node_id, &listen_addr, bind, &advertise_addr) {
                bail!("peers: {p:?} is this node itself ({why}); remove it from peers (a node is never its own peer)");
            }
        }
        let peer_timeout = match flags.peer_timeout.as_deref().or(file.peer_timeout.as_deref()) {
            Some(v) => duration("peer_timeout", v)?,
            None => defaults.peer_timeout,
        };
        let health_interval = match flags.health_interval.as_deref().or(file.health_interval.as_deref()) {
            Some(v) => duration("health_interval", v)?,
            None => defaults.health_interval,
        };
        let shutdown_grace = match file.shutdown_grace.as_deref() {
            Some(v) => duration("shutdown_grace", v)?,
            None => Duration::from_secs(30),
        };
        let entries: Vec<OriginConfig> = if flags.origins.is_empty() {
            file.origins.unwrap_or_default()
        } else {
            flags.origins.iter().map(|u| OriginConfig { url: Some(u.clone()), ..Default::default() }).collect()
        };
        let origins = entries.iter().enumerate().map(|(i, o)| o.to_origin(i)).collect::<anyhow::Result<Vec<_>>>()?;
        let discovery = match file.discovery.as_deref() {
            Some(v) => v.parse().map_err(|e: String| anyhow::anyhow!("discovery: {e}"))?,
            // dns_name alone says which discovery is meant.
            None if file.dns_name.is_some() => cairn_cluster::discovery::Discovery::Dns,
            None => cairn_cluster::discovery::Discovery::Static,
        };
        if file.swarm_min_send_rate == Some(0) {
            bail!("swarm_min_send_rate must be at least 1 byte per second (default 1048576)");
        }
        if file.egress_limit == Some(0) {
            bail!("egress_limit must be at least 1 byte per second (leave it out for no limit)");
        }
        let max_concurrent_fetches =
            flags.max_concurrent_fetches.or(file.max_concurrent_fetches).unwrap_or(defaults.max_concurrent_fetches);
        if max_concurrent_fetches == 0 {
            bail!("max_concurrent_fetches must be at least 1");
        }
        let enable_cdn_fallback =
            !flags.no_cdn_fallback && file.enable_cdn_fallback.unwrap_or(defaults.enable_cdn_fallback);
        let data_dir = data_dir_flag.or(file.data_dir).unwrap_or_else(|| crate::cmd::data_dir(None));
        let registry_bind = match flags.registry_addr.clone().or(file.registry_addr).filter(|a| !a.is_empty()) {
            Some(a) => Some(bind_addr(&a).with_context(|| format!("registry_addr {a:?}"))?),
            None => None,
        };
        let upload_ttl = match file.upload_ttl.as_deref() {
            Some(v) => duration("upload_ttl", v)?,
            None => cairn_store::oci::DEFAULT_UPLOAD_TTL,
        };
        let rate_window = match file.rate_window.as_deref() {
            Some(v) => duration("rate_window", v)?,
            None => defaults.rate_window,
        };
        let max_blob_size = file.max_blob_size.unwrap_or(defaults.max_blob_size);
        if max_blob_size == 0 {
            bail!("max_blob_size must be at least 1 byte");
        }
        let max_manifest_objects = file.max_manifest_objects.unwrap_or(defaults.max_manifest_objects);
        if max_manifest_objects == 0 {
            bail!("max_manifest_objects must be at least 1");
        }
        let max_upload_sessions = file.max_upload_sessions.unwrap_or(cairn_store::oci::DEFAULT_MAX_UPLOAD_SESSIONS);
        if max_upload_sessions == 0 {
            bail!("max_upload_sessions must be at least 1");
        }
        let max_upload_sessions_per_client =
            file.max_upload_sessions_per_client.unwrap_or(cairn_store::oci::DEFAULT_MAX_UPLOAD_SESSIONS_PER_CLIENT);
        if max_upload_sessions_per_client == 0 {
            bail!("max_upload_sessions_per_client must be at least 1");
        }
        let body_timeout = match file.body_timeout.as_deref() {
            Some(v) => duration("body_timeout", v)?,
            None => defaults.body_timeout,
        };
        let header_timeout = match file.header_timeout.as_deref() {
            Some(v) => duration("header_timeout", v)?,
            None => cairn_http::ServeLimits::default().header_timeout,
        };
        let idle_timeout = match file.idle_timeout.as_deref() {
            Some(v) => duration("idle_timeout", v)?,
            None => cairn_http::ServeLimits::default().idle_timeout,
        };
        if file.max_connections == Some(0) {
            bail!("max_connections must be at least 1");
        }
        let peer_tags = match file.peer_tags.as_deref() {
            Some(v) => v.trim().parse().map_err(|e: String| anyhow::anyhow!("peer_tags: {e}"))?,
            None => defaults.peer_tags,
        };
        let cluster_secret = match &file.cluster_secret_file {
            Some(path) => {
                let bytes = std::fs::read(path).with_context(|| {
                    format!("cluster_secret_file: reading {} (create it with `openssl rand -hex 32`)", path.display())
                })?;
                let secret = cairn_cluster::membership::ClusterSecret::new(&bytes)
                    .map_err(|e| anyhow::anyhow!("cluster_secret_file {}: {e}", path.display()))?;
                Some(secret)
            }
            None => None,
        };
        let log_format = match file.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => bail!("log_format {other:?} is not one of: text, json"),
        };
        let log_level = file.log_level.unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned());
        let gc_interval = match file.gc_interval.as_deref() {
            None | Some("off") => None,
            Some(v) => match duration("gc_interval", v)? {
                d if d.is_zero() => {
                    bail!("gc_interval 0 would run GC without pause; give a duration such as 6h, or off")
                }
                d => Some(d),
            },
        };
        let gc_grace = match file.gc_grace.as_deref() {
            Some(v) => duration("gc_grace", v)?,
            None => cairn_store::gc::DEFAULT_GRACE,
        };
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            bail!("log_level {log_level:?} is not a log filter ({e}); use e.g. info, warn or warn,cairn=debug");
        }
        let metrics_bind = match file.metrics_addr.filter(|a| !a.is_empty()) {
            Some(a) => Some(bind_addr(&a).with_context(|| format!("metrics_addr {a:?}"))?),
            None => None,
        };
        let dns_name = dns_name(discovery, file.dns_name)?;
        let cache = match &file.cache {
            None => None,
            Some(c) => Some(CacheLimits {
                max_bytes: c.max_bytes.as_ref().map(|s| s.limit("max_bytes")).transpose()?,
                min_free: c.min_free.as_ref().map(|s| s.limit("min_free")).transpose()?,
            }),
        };
        let storage = crate::storage::check(file.storage.as_ref())?;
        let replicas = file.replicas.unwrap_or(defaults.replicas);
        if replicas == 0 {
            bail!("replicas must be at least 1 (1 keeps a pushed blob only on the node it was pushed to)");
        }
        Ok(NodeConfig {
            cluster: cairn_cluster::ClusterConfig {
                node_id,
                peers,
                peer_timeout,
                enable_cdn_fallback,
                origins,
                health_interval,
                max_concurrent_fetches,
                egress_limit: file.egress_limit.or(defaults.egress_limit),
                elect_owner: file.elect_owner.unwrap_or(defaults.elect_owner),
                min_transfer_rate: file.min_transfer_rate.unwrap_or(defaults.min_transfer_rate),
                rate_window,
                max_blob_size,
                min_free_space: file.min_free_space.unwrap_or(defaults.min_free_space),
                max_manifest_objects,
                body_timeout,
                peer_tags,
                cluster_secret,
                replicas,
                swarm: file.swarm.unwrap_or(defaults.swarm),
                swarm_min_send_rate: file.swarm_min_send_rate.unwrap_or(defaults.swarm_min_send_rate),
            },
            listen_addr,
            bind,
            advertise_addr,
            data_dir,
            shutdown_grace,
            discovery,
            registry_bind,
            upload_ttl,
            max_upload_sessions,
            max_upload_sessions_per_client,
            header_timeout,
            idle_timeout,
            max_connections: file.max_connections,
            auth: file.auth,
            tls: file.tls,
            log_format,
            log_level,
            gc_interval,
            gc_grace,
            metrics_bind,
            dns_name,
            cache,
            storage,
        })
    }

    /// The cluster's part of the configuration.
    pub fn cluster(&self) -> cairn_cluster::ClusterConfig {
        self.cluster.clone()
    }
}

/// The node a client command talks to: `--node`, else the local config's
/// listen address, else `127.0.0.1:7420`.
pub fn node_addr(node: Option<String>, config: Option<&Path>) -> anyhow::Result<String> {
    if let Some(n) = node {
        return Ok(n);
    }
    let listen = match config {
        Some(p) => read_file(p)?.listen_addr,
        None => None,
    };
    Ok(client_addr(&listen.unwrap_or_else(|| format!(":{DEFAULT_PORT}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(yaml: &str) -> anyhow::Result<NodeConfig> {
        NodeConfig::merge(parse(yaml)?, &Overrides::default(), Some("/tmp/x".into()))
    }

    #[test]
    fn no_config_at_all_gives_the_seed_defaults() {
        let c = merged("").unwrap();
        assert_eq!(c.listen_addr, ":7420");
        assert_eq!(c.bind.port(), 7420);
        assert_eq!(c.cluster.peer_timeout, Duration::from_secs(10));
        assert_eq!(c.cluster.health_interval, Duration::from_secs(30));
        assert!(c.cluster.enable_cdn_fallback);
        assert!(c.cluster.peers.is_empty() && c.cluster.origins.is_empty());
        assert!(!c.cluster.node_id.is_empty());
        assert!(c.advertise_addr.ends_with(":7420"));
    }

    #[test]
    fn an_empty_config_gives_exactly_the_cluster_defaults() {
        let mut c = merged("").unwrap().cluster();
        let d = cairn_cluster::ClusterConfig::default();
        // The node id defaults to the hostname, by design.
        c.node_id.clone_from(&d.node_id);
        assert_eq!(format!("{c:?}"), format!("{d:?}"), "the node's defaults and the cluster's differ");
    }

    #[test]
    fn seed_keys_and_cairn_keys_are_read_from_yaml() {
        let c = merged(
            "node_id: n1\nlisten_addr: \"127.0.0.1:9000\"\npeers: [\"a:1\", \"b:2\"]\nadvertise_addr: \"10.0.0.1:9000\"\n\
             peer_timeout: 500ms\nenable_cdn_fallback: false\norigins:\n  - url: \"http://cdn/blobs/{digest}\"\n\
             health_interval: 2s\nmax_concurrent_fetches: 3\n",
        )
        .unwrap();
        assert_eq!(c.cluster.node_id, "n1");
        assert_eq!(c.bind, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.cluster.peers, ["a:1", "b:2"]);
        assert_eq!(c.advertise_addr, "10.0.0.1:9000");
        assert_eq!(c.cluster.peer_timeout, Duration::from_millis(500));
        assert!(!c.cluster.enable_cdn_fallback);
        assert_eq!(c.cluster.origins, [Origin::http("http://cdn/blobs/{digest}").unwrap()]);
        assert_eq!(c.cluster.health_interval, Duration::from_secs(2));
        assert_eq!(c.cluster.max_concurrent_fetches, 3);
    }

    #[test]
    fn replicas_is_read_defaults_to_one_and_zero_is_an_error() {
        assert_eq!(merged("").unwrap().cluster.replicas, 1);
        assert_eq!(merged("replicas: 3\n").unwrap().cluster.replicas, 3);
        let e = format!("{:#}", merged("replicas: 0\n").unwrap_err());
        assert!(e.contains("replicas must be at least 1"), "{e}");
    }

    #[test]
    fn json_config_is_accepted() {
        let c = merged(r#"{"node_id": "j", "peers": ["x:1"], "peer_timeout": "10s"}"#).unwrap();
        assert_eq!((c.cluster.node_id.as_str(), c.cluster.peers.len()), ("j", 1));
    }

    #[test]
    fn unknown_keys_are_an_error_naming_the_key() {
        let e = merged("node_id: a\npeer_timout: 5s\n").unwrap_err().to_string();
        assert!(e.contains("peer_timout"), "{e}");
        let e = merged(r#"{"listen": ":1"}"#).unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
        let e = merged("origins:\n  - url: \"http://x/{digest}\"\n    weight: 3\n").unwrap_err().to_string();
        assert!(e.contains("weight"), "{e}");
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        for (yaml, key) in [
            ("peer_timeout: soon\n", "peer_timeout"),
            ("health_interval: 0s\n", "health_interval"),
            ("listen_addr: \"nope\"\n", "listen_addr"),
            ("origins:\n  - url: \"ftp://x/{digest}\"\n", "origins"),
            ("origins:\n  - url: \"http://x/blobs\"\n", "origins"),
            ("origins:\n  - registry: \"ftp://r\"\n", "origins[0].registry"),
            (
                "origins:\n  - url: \"http://x/{digest}\"\n  - registry: \"http://r\"\n    username: u\n",
                "origins[1].registry",
            ),
            ("origins:\n  - registry: \"http://r\"\n    tag_ttl: soon\n", "origins[0].tag_ttl"),
            ("origins:\n  - registry: \"http://r\"\n    timeout: 0s\n", "origins[0].timeout"),
            ("origins:\n  - url: \"http://x/{digest}\"\n    password: p\n", "origins[0].password"),
            ("origins:\n  - url: \"http://x/{digest}\"\n    registry: \"http://r\"\n", "origins[0]"),
            ("origins:\n  - {}\n", "origins[0]"),
            ("max_concurrent_fetches: 0\n", "max_concurrent_fetches"),
            ("replicas: 0\n", "replicas"),
            ("rate_window: 0s\n", "rate_window"),
            ("max_blob_size: 0\n", "max_blob_size"),
            ("max_manifest_objects: 0\n", "max_manifest_objects"),
            ("node_id: \"a b\"\n", "node_id"),
        ] {
            let e = format!("{:#}", merged(yaml).unwrap_err());
            assert!(e.contains(key), "{yaml}: {e}");
        }
    }

    #[test]
    fn cluster_secret_file_is_read_and_a_short_or_missing_one_is_an_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cluster.secret");
        assert!(merged("").unwrap().cluster().cluster_secret.is_none(), "no secret by default");
        std::fs::write(&f, "0123456789abcdef0123456789abcdef\n").unwrap();
        let c = merged(&format!("cluster_secret_file: \"{}\"\n", f.display())).unwrap();
        assert!(c.cluster().cluster_secret.is_some());
        std::fs::write(&f, "short\n").unwrap();
        let e = format!("{:#}", merged(&format!("cluster_secret_file: \"{}\"\n", f.display())).unwrap_err());
        assert!(e.contains("cluster_secret_file") && e.contains("fewer than 16"), "{e}");
        let e = format!("{:#}", merged("cluster_secret_file: \"/nonexistent/cairn.secret\"\n").unwrap_err());
        assert!(e.contains("cluster_secret_file") && e.contains("/nonexistent/cairn.secret"), "{e}");
    }

    #[test]
    fn a_node_refuses_its_own_address_or_node_id_in_peers_naming_the_entry() {
        let base = "node_id: n1\nlisten_addr: \":7425\"\nadvertise_addr: \"10.0.0.9:7425\"\n";
        for own in [
            "127.0.0.1:7425",
            "localhost:7425",
            ":7425",
            "0.0.0.0:7425",
            "10.0.0.9:7425",
            "n1:7425",
            "n1",
            "[::1]:7425",
        ] {
            let yaml = format!("{base}peers: [\"a:1\", \"{own}\"]\n");
            let e = format!("{:#}", merged(&yaml).unwrap_err());
            assert!(e.contains(&format!("{own:?}")) && e.contains("this node itself"), "{own}: {e}");
        }
        let c = merged(&format!("{base}peers: [\"127.0.0.1:7426\", \"n2:7425\", \"10.0.0.8:7425\"]\n")).unwrap();
        assert_eq!(c.cluster.peers.len(), 3, "other ports, hosts and ids are peers");
        let e = format!(
            "{:#}",
            merged("node_id: n1\nlisten_addr: \"127.0.0.1:7427\"\npeers: [\"127.0.0.1:7427\"]\n").unwrap_err()
        );
        assert!(e.contains("this node itself"), "{e}");
    }

    #[test]
    fn registry_origins_sit_beside_url_origins_with_their_own_keys() {
        let c = merged(
            "origins:\n  - registry: \"https://registry-1.docker.io\"\n    username: alice\n    password: s3cret\n    \
             tag_ttl: 1m\n    timeout: 5s\n  - url: \"http://cdn/blobs/{digest}\"\n  - registry: \"http://127.0.0.1:5000\"\n",
        )
        .unwrap();
        let cairn_cluster::Origin::Registry(hub) = &c.cluster.origins[0] else { panic!("{:?}", c.cluster.origins[0]) };
        let cfg = hub.config();
        assert_eq!((cfg.url.as_str(), cfg.username.as_deref()), ("https://registry-1.docker.io", Some("alice")));
        assert_eq!((cfg.tag_ttl, cfg.timeout), (Duration::from_secs(60), Duration::from_secs(5)));
        assert_eq!(c.cluster.origins[1], Origin::http("http://cdn/blobs/{digest}").unwrap());
        let cairn_cluster::Origin::Registry(local) = &c.cluster.origins[2] else {
            panic!("{:?}", c.cluster.origins[2])
        };
        assert_eq!(local.config().tag_ttl, Duration::from_secs(300), "default tag_ttl");
        assert!(!format!("{c:?}").contains("s3cret"), "the password never reaches a debug print");
    }

    #[test]
    fn flags_override_the_file() {
        let file = parse("node_id: file\npeers: [\"a:1\"]\npeer_timeout: 5s\nenable_cdn_fallback: true\n").unwrap();
        let flags = Overrides {
            node_id: Some("flag".into()),
            peers: vec!["b:2".into()],
            peer_timeout: Some("1s".into()),
            no_cdn_fallback: true,
            listen_addr: Some(":8000".into()),
            ..Default::default()
        };
        let c = NodeConfig::merge(file, &flags, None).unwrap();
        assert_eq!(c.cluster.node_id, "flag");
        assert_eq!(c.cluster.peers, ["b:2"]);
        assert_eq!(c.cluster.peer_timeout, Duration::from_secs(1));
        assert!(!c.cluster.enable_cdn_fallback);
        assert_eq!(c.listen_addr, ":8000");
    }

    /// A config object: known keys with good values, wrong values of the
    /// right type, values of the wrong type, and now and then an unknown key.
    fn near_valid_config() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::{Value, json};
        let s = |v: &[&'static str]| proptest::sample::select(v.to_vec()).prop_map(Value::from).boxed();
        let duration = || s(&["500ms", "10s", "1m 30s", "0s", "soon", "", "5"]);
        let number =
            || prop_oneof![4 => (0u64..100).prop_map(Value::from), 1 => Just(json!(-1)), 1 => Just(json!("8"))].boxed();
        let boolean = || prop_oneof![4 => any::<bool>().prop_map(Value::from), 1 => Just(json!("yes"))].boxed();
        let addr = || s(&["127.0.0.1:7420", ":7420", "0.0.0.0:5000", "nope", "[::1]:1", ""]);
        let origin = prop_oneof![
            s(&["http://cdn/{digest}", "ftp://x/{digest}", "http://x/blobs"]).prop_map(|u| json!({"url": u})),
            (
                s(&["http://127.0.0.1:5000", "https://registry-1.docker.io", "r"]),
                duration(),
                proptest::option::of(s(&["u"]))
            )
                .prop_map(|(r, ttl, user)| {
                    let mut o = json!({"registry": r, "tag_ttl": ttl});
                    if let Some(u) = user {
                        o["username"] = u;
                        o["password"] = json!("p");
                    }
                    o
                }),
            Just(json!({})),
            Just(json!({"url": "http://x/{digest}", "weight": 3})),
        ];
        let fields: Vec<(&'static str, BoxedStrategy<Value>)> = vec![
            ("node_id", s(&["n1", "node-a", "a b", ""])),
            ("listen_addr", addr()),
            ("peers", proptest::collection::vec(s(&["a:1", "b:2", " ", "c d:3"]), 0..3).prop_map(Value::from).boxed()),
            ("advertise_addr", s(&["10.0.0.1:7420", "127.0.0.1:1"])),
            ("peer_timeout", duration()),
            ("enable_cdn_fallback", boolean()),
            ("data_dir", s(&["/tmp/x", "rel/dir"])),
            ("origins", proptest::collection::vec(origin, 0..3).prop_map(Value::from).boxed()),
            ("health_interval", duration()),
            ("max_concurrent_fetches", number()),
            ("shutdown_grace", duration()),
            ("discovery", s(&["static", "mdns", "dns"])),
            ("dns_name", s(&["peers.example:7420", "nope", ""])),
            ("egress_limit", number()),
            ("elect_owner", boolean()),
            ("registry_addr", addr()),
            ("upload_ttl", duration()),
            ("max_upload_sessions", number()),
            ("max_upload_sessions_per_client", number()),
            ("peer_tags", s(&["never", "fallback", "first", "always"])),
            ("replicas", number()),
            ("swarm", boolean()),
            ("swarm_min_send_rate", number()),
            ("peer_timout", s(&["5s"])),
        ];
        let per_field: Vec<_> = fields
            .into_iter()
            .map(|(k, v)| {
                proptest::option::weighted(if k == "peer_timout" { 0.05 } else { 0.4 }, v).prop_map(move |v| (k, v))
            })
            .collect();
        per_field.prop_map(|fs| {
            // Never empty: an empty YAML document is no mapping at all.
            let mut o = serde_json::Map::from_iter([("node_id".to_owned(), json!("n0"))]);
            o.extend(fs.into_iter().filter_map(|(k, v)| Some((k.to_owned(), v?))));
            Value::Object(o)
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn any_text_parses_or_errors_without_panicking(s in "\\PC{0,200}") {
            if let Ok(f) = parse(&s) {
                let _ = NodeConfig::merge(f, &Overrides::default(), Some("/tmp/x".into()));
            }
        }

        #[test]
        fn any_bytes_parse_or_error_without_panicking(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            if let Ok(f) = parse(&String::from_utf8_lossy(&bytes)) {
                let _ = NodeConfig::merge(f, &Overrides::default(), Some("/tmp/x".into()));
            }
        }

        /// Near-valid configs written as JSON and as YAML read the same:
        /// what JSON accepts, YAML accepts into the same file and the same
        /// node config (or the same error). YAML may accept more: its
        /// parser reads a quoted `"8"` as a number where JSON refuses it.
        #[test]
        fn near_valid_configs_read_the_same_from_json_and_yaml(v in near_valid_config()) {
            let json = serde_json::to_string(&v).unwrap();
            let yaml: String = v
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| format!("{k}: {v}\n"))
                .collect();
            let (j, y) = (parse(&json), parse(&yaml));
            proptest::prop_assert!(j.is_err() || y.is_ok(), "{}\n{}\n{:?}\n{:?}", json, yaml, j, y);
            if let (Ok(j), Ok(y)) = (j, y) {
                proptest::prop_assert_eq!(format!("{j:?}"), format!("{y:?}"));
                let flags = Overrides::default();
                let (j, y) = (NodeConfig::merge(j, &flags, None), NodeConfig::merge(y, &flags, None));
                match (j, y) {
                    (Ok(j), Ok(y)) => proptest::prop_assert_eq!(format!("{j:?}"), format!("{y:?}")),
                    (Err(j), Err(y)) => proptest::prop_assert_eq!(format!("{j:#}"), format!("{y:#}")),
                    (j, y) => proptest::prop_assert!(false, "JSON {:?} but YAML {:?}", j.is_ok(), y.is_ok()),
                }
            }
        }

        #[test]
        fn any_humantime_duration_round_trips(ms in 1u64..10_000_000) {
            let text = humantime::format_duration(Duration::from_millis(ms)).to_string();
            let c = merged(&format!("peer_timeout: \"{text}\"\n")).unwrap();
            proptest::prop_assert_eq!(c.cluster.peer_timeout, Duration::from_millis(ms));
        }
    }

    #[test]
    fn limit_keys_have_defaults_and_are_read() {
        let c = merged("").unwrap();
        assert_eq!((c.cluster.min_transfer_rate, c.cluster.rate_window), (64 << 10, Duration::from_secs(10)));
        assert_eq!(
            (c.cluster.max_blob_size, c.cluster.min_free_space, c.cluster.max_manifest_objects),
            (64 << 30, 256 << 20, 100_000)
        );
        let c = merged(
            "min_transfer_rate: 0\nrate_window: 2s\nmax_blob_size: 1000\nmin_free_space: 5\nmax_manifest_objects: 7\n",
        )
        .unwrap();
        let k = c.cluster();
        assert_eq!((k.min_transfer_rate, k.rate_window), (0, Duration::from_secs(2)));
        assert_eq!((k.max_blob_size, k.min_free_space, k.max_manifest_objects), (1000, 5, 7));
    }

    #[test]
    fn scale_keys_default_to_static_discovery_no_egress_limit_and_owner_election() {
        let c = merged("").unwrap();
        assert_eq!(c.discovery, cairn_cluster::discovery::Discovery::Static, "mDNS is off by default");
        assert_eq!((c.cluster.egress_limit, c.cluster.elect_owner), (None, true));
        let c = merged("discovery: mdns\negress_limit: 1048576\nelect_owner: false\n").unwrap();
        assert_eq!(c.discovery, cairn_cluster::discovery::Discovery::Mdns);
        assert_eq!((c.cluster.egress_limit, c.cluster.elect_owner), (Some(1 << 20), false));
    }

    #[test]
    fn discovery_dns_takes_dns_name_as_host_port_and_refuses_it_missing_or_unused() {
        use cairn_cluster::discovery::Discovery;
        let c = merged("discovery: dns\ndns_name: \"cairn-peers.cairn.svc.cluster.local:7420\"\n").unwrap();
        assert_eq!(c.discovery, Discovery::Dns);
        assert_eq!(c.dns_name.as_deref(), Some("cairn-peers.cairn.svc.cluster.local:7420"));
        assert_eq!(merged("").unwrap().dns_name, None);
        let e = format!("{:#}", merged("discovery: dns\n").unwrap_err());
        assert!(e.contains("dns_name") && e.contains("discovery: dns"), "{e}");
        for bad in ["peers", "peers:", ":7420", "peers:0", "peers:99999", "http://peers:7420", "a b:1"] {
            let e = format!("{:#}", merged(&format!("discovery: dns\ndns_name: \"{bad}\"\n")).unwrap_err());
            assert!(e.contains("dns_name") && e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        let e = format!("{:#}", merged("discovery: mdns\ndns_name: \"p:1\"\n").unwrap_err());
        assert!(e.contains("dns_name") && e.contains("\"mdns\"") && e.contains("discovery: dns"), "{e}");
        let c = merged("dns_name: \"p:1\"\n").unwrap();
        assert_eq!((c.discovery, c.dns_name.as_deref()), (Discovery::Dns, Some("p:1")), "dns_name alone means dns");
    }

    #[test]
    fn origins_take_a_timeout_and_retries_each() {
        let c = merged(
            "origins:\n  - url: http://a/{digest}\n    timeout: 3s\n    retries: 5\n  - url: http://b/{digest}\n",
        )
        .unwrap();
        assert_eq!(c.cluster.origins[0].timeout(), Some(Duration::from_secs(3)));
        assert_eq!(c.cluster.origins[0].retries(), 5);
        assert_eq!(c.cluster.origins[1].timeout(), None);
        assert_eq!(c.cluster.origins[1].url(&cairn_store::Digest::of(b"")).split('/').nth(2), Some("b"));
    }

    #[test]
    fn bad_scale_values_are_errors_naming_the_key() {
        let e = format!("{:#}", merged("discovery: consul\n").unwrap_err());
        assert!(e.contains("discovery") && e.contains("\"consul\""), "{e}");
        let e = format!("{:#}", merged("egress_limit: 0\n").unwrap_err());
        assert!(e.contains("egress_limit"), "{e}");
        let e = format!("{:#}", merged("swarm_min_send_rate: 0\n").unwrap_err());
        assert!(e.contains("swarm_min_send_rate"), "{e}");
        let e = format!("{:#}", merged("origins:\n  - url: http://a/{digest}\n    timeout: soon\n").unwrap_err());
        assert!(e.contains("origins[0].timeout"), "{e}");
        let e = format!("{:#}", merged("origins:\n  - url: http://a/{digest}\n    retry: 1\n").unwrap_err());
        assert!(e.contains("retry"), "{e}");
    }

    #[test]
    fn the_auth_section_is_read_and_its_unknown_keys_are_errors_naming_them() {
        assert_eq!(merged("").unwrap().auth, None, "no auth section: the loopback-only default");
        let c = merged(
            "auth:\n  realm: r\n  htpasswd_file: /h\n  anonymous: [pull]\n  users:\n    ci: {push: [\"team/*\"]}\n",
        )
        .unwrap();
        let a = c.auth.unwrap();
        assert_eq!((a.realm.as_deref(), a.htpasswd_file.as_deref()), (Some("r"), Some(Path::new("/h"))));
        assert!(a.users.contains_key("ci"));
        let e = format!("{:#}", merged("auth:\n  htpasswd: /h\n").unwrap_err());
        assert!(e.contains("htpasswd") && e.contains("htpasswd_file"), "{e}");
    }

    #[test]
    fn connection_and_body_limits_have_defaults_and_are_read_from_the_file() {
        let c = merged("").unwrap();
        assert_eq!(c.cluster.body_timeout, Duration::from_secs(30));
        assert_eq!(c.header_timeout, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.max_connections, None);
        assert_eq!(c.cluster().body_timeout, Duration::from_secs(30));
        let c = merged("body_timeout: 5s\nheader_timeout: 2s\nidle_timeout: 1m\nmax_connections: 100\n").unwrap();
        assert_eq!(
            (c.cluster.body_timeout, c.header_timeout, c.idle_timeout),
            (Duration::from_secs(5), Duration::from_secs(2), Duration::from_secs(60))
        );
        assert_eq!(c.max_connections, Some(100));
        assert_eq!(c.cluster().body_timeout, Duration::from_secs(5));
        for (bad, key) in [
            ("body_timeout: 0s\n", "body_timeout"),
            ("header_timeout: soon\n", "header_timeout"),
            ("max_connections: 0\n", "max_connections"),
        ] {
            let e = format!("{:#}", merged(bad).unwrap_err());
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn peer_tags_defaults_to_fallback_and_takes_never_or_first() {
        use cairn_cluster::mirror::PeerTags;
        assert_eq!(merged("").unwrap().cluster().peer_tags, PeerTags::Fallback);
        assert_eq!(merged("peer_tags: never\n").unwrap().cluster().peer_tags, PeerTags::Never);
        assert_eq!(merged(r#"{"peer_tags": "first"}"#).unwrap().cluster().peer_tags, PeerTags::First);
        let e = format!("{:#}", merged("peer_tags: always\n").unwrap_err());
        assert!(e.contains("peer_tags") && e.contains("never, fallback, first"), "{e}");
    }

    #[test]
    fn the_tls_section_is_read_and_its_unknown_keys_are_errors() {
        assert_eq!(merged("").unwrap().tls, None, "no tls section: plain HTTP");
        let c = merged("tls:\n  cert_file: /c.pem\n  key_file: /k.pem\n  client_ca_file: /ca.pem\n").unwrap();
        let t = c.tls.unwrap();
        assert_eq!((t.cert_file.as_path(), t.key_file.as_path()), (Path::new("/c.pem"), Path::new("/k.pem")));
        assert_eq!((t.client_ca_file.as_deref(), t.peer_ca_file), (Some(Path::new("/ca.pem")), None));
        let e = format!("{:#}", merged("tls:\n  cert_file: /c\n  key_file: /k\n  ca_file: /x\n").unwrap_err());
        assert!(e.contains("ca_file"), "{e}");
        let e = format!("{:#}", merged("tls:\n  cert_file: /c\n").unwrap_err());
        assert!(e.contains("key_file"), "{e}");
    }

    #[test]
    fn registry_passwords_come_from_a_file_or_an_environment_variable() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let reg = |extra: &str| merged(&format!("origins:\n  - registry: \"http://r\"\n    username: u\n{extra}"));
        let password = |c: NodeConfig| match &c.cluster.origins[0] {
            cairn_cluster::Origin::Registry(up) => up.config().password.clone(),
            o => panic!("{o:?}"),
        };
        assert_eq!(password(reg(&format!("    password_file: \"{}\"\n", pw.display())).unwrap()).unwrap(), "s3cret");
        // PATH is always set; the test cannot set a variable (no unsafe code).
        assert_eq!(password(reg("    password_env: PATH\n").unwrap()), std::env::var("PATH").ok());
        let e = format!("{:#}", reg("    password_env: CAIRN_NO_SUCH_VARIABLE_7\n").unwrap_err());
        assert!(e.contains("origins[0].password_env") && e.contains("CAIRN_NO_SUCH_VARIABLE_7"), "{e}");
        let e = format!("{:#}", reg("    password_file: /nonexistent/pw\n").unwrap_err());
        assert!(e.contains("origins[0].password_file") && e.contains("/nonexistent/pw"), "{e}");
        let e = format!("{:#}", reg("    password: p\n    password_env: PATH\n").unwrap_err());
        assert!(e.contains("one of password, password_file and password_env"), "{e}");
        let e =
            format!("{:#}", merged("origins:\n  - url: \"http://x/{digest}\"\n    password_env: PATH\n").unwrap_err());
        assert!(e.contains("only a registry origin takes password_env"), "{e}");
    }

    #[test]
    fn an_origin_ca_file_that_cannot_be_read_is_an_error_naming_the_origin() {
        let e = format!(
            "{:#}",
            merged("origins:\n  - url: \"https://x/{digest}\"\n    ca_file: /nonexistent/ca.pem\n").unwrap_err()
        );
        assert!(e.contains("origins[0]") && e.contains("/nonexistent/ca.pem"), "{e}");
        let e = format!(
            "{:#}",
            merged("origins:\n  - registry: \"https://r\"\n    ca_file: /nonexistent/ca.pem\n").unwrap_err()
        );
        assert!(e.contains("origins[0]") && e.contains("/nonexistent/ca.pem"), "{e}");
        let c = merged("origins:\n  - url: \"https://x/{digest}\"\n    insecure_skip_verify: true\n").unwrap();
        assert!(format!("{:?}", c.cluster.origins[0]).contains("insecure: true"));
    }

    #[test]
    fn client_address_of_a_wildcard_listen_is_loopback() {
        assert_eq!(client_addr(":7420"), "127.0.0.1:7420");
        assert_eq!(client_addr("0.0.0.0:9"), "127.0.0.1:9");
        assert_eq!(client_addr("node:9"), "node:9");
    }
}
