//! Peer discovery. `static` is the configured `peers` list; `mdns` announces
//! this node as a DNS-SD service `_cairn._tcp.local.` (TXT: `node_id`,
//! `addr`) and browses for the others, reporting peers as they come and go
//! (goodbye packets and expiry both end in a removal); `dns` resolves one
//! `host:port` name (a Kubernetes headless Service) every interval and makes
//! each address a peer ([`DnsPeers`], [`spawn_dns`]).
//!
//! mDNS multicasts on every interface it is allowed on, so it is off by
//! default; tests enable it only inside network namespaces they create.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};

/// The DNS-SD service type Cairn nodes announce.
pub const SERVICE_TYPE: &str = "_cairn._tcp.local.";

/// How a node finds its peers (config key `discovery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Discovery {
    /// Only the configured `peers`.
    #[default]
    Static,
    /// The configured `peers` plus whatever mDNS finds.
    Mdns,
    /// The configured `peers` plus the addresses `dns_name` resolves to.
    Dns,
}

impl Discovery {
    /// The name the config file spells it with.
    pub fn as_str(self) -> &'static str {
        match self {
            Discovery::Static => "static",
            Discovery::Mdns => "mdns",
            Discovery::Dns => "dns",
        }
    }
}

impl std::str::FromStr for Discovery {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "static" => Ok(Discovery::Static),
            "mdns" => Ok(Discovery::Mdns),
            "dns" => Ok(Discovery::Dns),
            other => Err(format!("discovery {other:?} is not one of: static, mdns, dns")),
        }
    }
}

/// A change in the set of discovered peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A node announced itself (or changed its address).
    Up {
        /// Its node id.
        node_id: String,
        /// `host:port` to reach it on.
        address: String,
    },
    /// A node said goodbye or its announcement expired.
    Down {
        /// Its node id.
        node_id: String,
        /// The address it had.
        address: String,
    },
}

/// A running mDNS announcer and browser. Dropping it (or [`Mdns::stop`])
/// sends the goodbye packets.
pub struct Mdns {
    daemon: ServiceDaemon,
    fullname: String,
}

/// mDNS could not start; the node cannot discover peers.
#[derive(Debug, thiserror::Error)]
#[error(
    "mDNS discovery could not {what}: {reason}; check that the node may use multicast on its advertised interface, or use `discovery: static` with a `peers` list"
)]
pub struct DiscoveryError {
    /// The step that failed.
    pub what: String,
    /// What the mDNS daemon reported.
    pub reason: String,
}

fn mdns_err(what: &str, e: impl std::fmt::Display) -> DiscoveryError {
    DiscoveryError { what: what.to_owned(), reason: e.to_string() }
}

type Result<T> = std::result::Result<T, DiscoveryError>;

/// A DNS label from a node id: `[a-z0-9-]`, at most 40 bytes, never empty.
fn label(node_id: &str) -> String {
    let mut l: String = node_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(40)
        .collect();
    l = l.trim_matches('-').to_owned();
    if l.is_empty() { "cairn".to_owned() } else { l }
}

impl Mdns {
    /// Announces `node_id` at `advertise` and reports every other Cairn
    /// node seen to `on_event` (called from the browser's own thread).
    pub fn start(node_id: &str, advertise: SocketAddr, on_event: impl Fn(PeerEvent) + Send + 'static) -> Result<Mdns> {
        let daemon = ServiceDaemon::new().map_err(|e| mdns_err("start its daemon", e))?;
        restrict_to(&daemon, advertise.ip())?;
        // The instance name must be unique on the link; the id alone may not
        // be a valid label, so a label of it plus the port.
        let instance = format!("{}-{}", label(node_id), advertise.port());
        let host = format!("{instance}.local.");
        let addr = advertise.to_string();
        let props = [("node_id", node_id), ("addr", addr.as_str())];
        let info = ServiceInfo::new(SERVICE_TYPE, &instance, &host, advertise.ip(), advertise.port(), &props[..])
            .map_err(|e| mdns_err(&format!("build the service for node {node_id:?}"), e))?;
        let fullname = info.get_fullname().to_owned();
        let events = daemon.browse(SERVICE_TYPE).map_err(|e| mdns_err("browse for peers", e))?;
        daemon.register(info).map_err(|e| mdns_err("announce this node", e))?;
        let me = node_id.to_owned();
        std::thread::Builder::new()
            .name("cairn-mdns".into())
            .spawn(move || browse_loop(&me, &addr, events, on_event))
            .map_err(|e| mdns_err("start its browser thread", e))?;
        tracing::info!(node_id, %advertise, service = SERVICE_TYPE, "mDNS discovery started");
        Ok(Mdns { daemon, fullname })
    }

    /// Says goodbye and stops the daemon.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Mdns {
    fn drop(&mut self) {
        // Unregister first: shutdown alone may exit before the goodbye goes out.
        if let Ok(rx) = self.daemon.unregister(&self.fullname) {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(1));
        }
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(1));
        }
    }
}

/// Only the interface holding the advertised address, when it is local;
/// never loopback otherwise.
fn restrict_to(daemon: &ServiceDaemon, ip: IpAddr) -> Result<()> {
    let local = if_addrs::get_if_addrs().map(|l| l.iter().any(|i| i.ip() == ip)).unwrap_or(false);
    if local && !ip.is_loopback() {
        daemon.disable_interface(IfKind::All).map_err(|e| mdns_err("select its interface", e))?;
        daemon.enable_interface(IfKind::Addr(ip)).map_err(|e| mdns_err("select its interface", e))?;
    } else {
        daemon
            .disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])
            .map_err(|e| mdns_err("select its interface", e))?;
    }
    Ok(())
}

fn browse_loop(me: &str, my_addr: &str, events: mdns_sd::Receiver<ServiceEvent>, on_event: impl Fn(PeerEvent)) {
    // fullname -> (node_id, address), to turn a removal into its peer.
    let mut known: HashMap<String, (String, String)> = HashMap::new();
    while let Ok(ev) = events.recv() {
        match ev {
            ServiceEvent::ServiceResolved(s) => {
                let Some((node_id, address)) = peer_of(&s) else {
                    tracing::warn!(service = %s.fullname, "ignoring an mDNS announcement without node_id/addr");
                    continue;
                };
                if node_id == me {
                    if address != my_addr {
                        tracing::warn!(%address, %node_id, "ignoring an mDNS announcement of this node's own node_id from another address: duplicate node_id?");
                    }
                    continue;
                }
                let entry = (node_id.clone(), address.clone());
                if known.get(&s.fullname) == Some(&entry) {
                    continue;
                }
                if let Some((old_id, old_addr)) = known.insert(s.fullname.clone(), entry)
                    && old_addr != address
                {
                    on_event(PeerEvent::Down { node_id: old_id, address: old_addr });
                }
                tracing::info!(%node_id, %address, "peer discovered by mDNS");
                on_event(PeerEvent::Up { node_id, address });
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                if let Some((node_id, address)) = known.remove(&fullname) {
                    tracing::info!(%node_id, %address, "peer left (mDNS goodbye or expiry)");
                    on_event(PeerEvent::Down { node_id, address });
                }
            }
            _ => {}
        }
    }
}

/// The peer an announcement describes. Its TXT `addr` must be a socket
/// address: a name would let any host on the link point us anywhere.
fn peer_of(s: &mdns_sd::ResolvedService) -> Option<(String, String)> {
    let node_id = s.get_property_val_str("node_id").filter(|v| !v.is_empty() && v.len() <= 255)?.to_owned();
    let addr: SocketAddr = s.get_property_val_str("addr")?.parse().ok()?;
    Some((node_id, addr.to_string()))
}

/// Most peers one DNS answer makes. A headless Service answers with one
/// address per node, far below this; a broken or hostile answer with
/// thousands of records would otherwise become thousands of peers, each
/// probed every interval and asked on every miss.
pub const MAX_DNS_PEERS: usize = 256;

/// Resolves a `host:port` name to socket addresses: the system resolver in
/// a node ([`SystemResolver`]), scripted answers in tests.
pub trait Resolver: Send + Sync + 'static {
    /// The addresses `name` resolves to now.
    fn resolve(&self, name: &str) -> impl Future<Output = std::io::Result<Vec<SocketAddr>>> + Send;
}

/// The system resolver (`getaddrinfo`: `/etc/hosts`, then DNS, as
/// `nsswitch.conf` says).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    async fn resolve(&self, name: &str) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host(name).await?.collect())
    }
}

/// The addresses that reach this node itself, never made its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnAddrs {
    /// The address the node's listener is bound to.
    pub bound: SocketAddr,
    /// The address it advertises, when that is `ip:port`.
    pub advertise: Option<SocketAddr>,
}

impl OwnAddrs {
    /// Whether `a` is this node: its bound or advertised address, or its
    /// port on a loopback or own interface address when it listens on every
    /// interface. `local_ips` are this host's interface addresses.
    pub fn contains(&self, a: &SocketAddr, local_ips: &[IpAddr]) -> bool {
        if *a == self.bound || Some(*a) == self.advertise {
            return true;
        }
        a.port() == self.bound.port()
            && self.bound.ip().is_unspecified()
            && (a.ip().is_loopback() || local_ips.contains(&a.ip()))
    }
}

/// This host's interface addresses now (empty when they cannot be read).
pub fn local_ips() -> Vec<IpAddr> {
    if_addrs::get_if_addrs().map(|l| l.into_iter().map(|i| i.ip()).collect()).unwrap_or_default()
}

/// Something worth one log line: said when the state it describes begins
/// or ends, not on every resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsNote {
    /// The name stopped resolving; the last peers are kept.
    Failing(String),
    /// It resolves again after failing.
    Resolving,
    /// The answer has more usable addresses than [`MAX_DNS_PEERS`]; only
    /// the lowest that many are peers.
    Capped(usize),
    /// The answer fits the cap again.
    Uncapped,
}

/// What one resolution changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DnsRound {
    /// Peers that appeared and left, to apply to the peer set.
    pub events: Vec<PeerEvent>,
    /// State changes to log.
    pub notes: Vec<DnsNote>,
}

/// The peers a DNS name gives, kept across resolutions: an address
/// becomes a peer when it appears in the answer and stops being one when
/// it is gone from it. A failed resolution changes nothing.
#[derive(Debug, Default)]
pub struct DnsPeers {
    known: std::collections::BTreeSet<SocketAddr>,
    failing: bool,
    capped: bool,
}

impl DnsPeers {
    /// No peers yet.
    pub fn new() -> DnsPeers {
        DnsPeers::default()
    }

    /// The current peers, lowest address first.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.known.iter().copied().collect()
    }

    /// Takes one answer. Addresses for which `is_self` holds, and ones no
    /// peer can have (unspecified, multicast, port 0), are skipped; of the
    /// rest, the lowest [`MAX_DNS_PEERS`] are kept, so a reordered answer
    /// keeps the same peers.
    pub fn update(
        &mut self,
        answer: std::io::Result<Vec<SocketAddr>>,
        is_self: impl Fn(&SocketAddr) -> bool,
    ) -> DnsRound {
        let mut round = DnsRound::default();
        let addrs = match answer {
            Ok(a) => a,
            Err(e) => {
                if !self.failing {
                    self.failing = true;
                    round.notes.push(DnsNote::Failing(e.to_string()));
                }
                return round;
            }
        };
        if self.failing {
            self.failing = false;
            round.notes.push(DnsNote::Resolving);
        }
        let usable: std::collections::BTreeSet<SocketAddr> = addrs
            .into_iter()
            .filter(|a| a.port() != 0 && !a.ip().is_unspecified() && !a.ip().is_multicast() && !is_self(a))
            .collect();
        let total = usable.len();
        let wanted: std::collections::BTreeSet<SocketAddr> = usable.into_iter().take(MAX_DNS_PEERS).collect();
        match (total > MAX_DNS_PEERS, self.capped) {
            (true, false) => round.notes.push(DnsNote::Capped(total)),
            (false, true) => round.notes.push(DnsNote::Uncapped),
            _ => {}
        }
        self.capped = total > MAX_DNS_PEERS;
        for gone in self.known.difference(&wanted) {
            round.events.push(PeerEvent::Down { node_id: String::new(), address: gone.to_string() });
        }
        for new in wanted.difference(&self.known) {
            // The node id comes with the first health probe.
            round.events.push(PeerEvent::Up { node_id: String::new(), address: new.to_string() });
        }
        self.known = wanted;
        round
    }
}

/// Resolves `name` now and every `interval` after, each try bounded by
/// `timeout`, and reports the peers that appear and leave to `on_event`.
/// Runs until the task is aborted.
pub fn spawn_dns<R: Resolver>(
    name: String,
    resolver: R,
    own: OwnAddrs,
    interval: std::time::Duration,
    timeout: std::time::Duration,
    on_event: impl Fn(PeerEvent) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tracing::info!(dns_name = %name, ?interval, "DNS discovery started");
    tokio::spawn(async move {
        let mut peers = DnsPeers::new();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let answer = match tokio::time::timeout(timeout, resolver.resolve(&name)).await {
                Ok(a) => a,
                Err(_) => {
                    Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {timeout:?}")))
                }
            };
            let ips = local_ips();
            let round = peers.update(answer, |a| own.contains(a, &ips));
            log_notes(&name, &round.notes);
            for ev in round.events {
                match &ev {
                    PeerEvent::Up { address, .. } => tracing::info!(%address, dns_name = %name, "peer found in DNS"),
                    PeerEvent::Down { address, .. } => {
                        tracing::info!(%address, dns_name = %name, "peer gone from DNS")
                    }
                }
                on_event(ev);
            }
        }
    })
}

fn log_notes(name: &str, notes: &[DnsNote]) {
    for n in notes {
        match n {
            DnsNote::Failing(e) => tracing::warn!(
                dns_name = name,
                error = %e,
                "dns_name does not resolve; keeping the peers it last gave (check the name and the node's resolver, \
                 e.g. dnsPolicy: ClusterFirstWithHostNet with hostNetwork)"
            ),
            DnsNote::Resolving => tracing::info!(dns_name = name, "dns_name resolves again"),
            DnsNote::Capped(n) => tracing::warn!(
                dns_name = name,
                addresses = n,
                max = MAX_DNS_PEERS,
                "dns_name gives more addresses than a node takes as peers; only the lowest are used"
            ),
            DnsNote::Uncapped => tracing::info!(dns_name = name, "dns_name's answer fits the peer cap again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_become_valid_dns_labels() {
        assert_eq!(label("Node_A.example"), "node-a-example");
        assert_eq!(label("__"), "cairn");
        assert_eq!(label(&"x".repeat(100)).len(), 40);
    }

    #[test]
    fn discovery_mode_parses_and_names_bad_values() {
        assert_eq!("mdns".parse::<Discovery>(), Ok(Discovery::Mdns));
        assert_eq!("static".parse::<Discovery>(), Ok(Discovery::Static));
        assert_eq!(Discovery::default(), Discovery::Static, "mDNS is off by default");
        assert_eq!("dns".parse::<Discovery>(), Ok(Discovery::Dns));
        for d in [Discovery::Static, Discovery::Mdns, Discovery::Dns] {
            assert_eq!(d.as_str().parse::<Discovery>(), Ok(d));
        }
        let e = "consul".parse::<Discovery>().unwrap_err();
        assert!(e.contains("\"consul\"") && e.contains("static, mdns, dns"), "{e}");
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn no_self(_: &SocketAddr) -> bool {
        false
    }

    #[test]
    fn a_failing_dns_name_is_noted_once_per_change_of_state_not_per_resolution() {
        let mut d = DnsPeers::new();
        let fail = || Err(std::io::Error::other("Name or service not known"));
        let r = d.update(Ok(vec![sa("10.0.0.2:7420")]), no_self);
        assert!(r.notes.is_empty() && r.events.len() == 1, "{r:?}");
        let r = d.update(fail(), no_self);
        assert_eq!(r.notes, [DnsNote::Failing("Name or service not known".into())]);
        assert!(r.events.is_empty(), "the last peers are kept");
        for _ in 0..5 {
            assert_eq!(d.update(fail(), no_self), DnsRound::default(), "no note while it keeps failing");
        }
        assert_eq!(d.peers(), [sa("10.0.0.2:7420")]);
        let r = d.update(Ok(vec![sa("10.0.0.2:7420")]), no_self);
        assert_eq!((r.notes, r.events), (vec![DnsNote::Resolving], vec![]));
        assert_eq!(d.update(Ok(vec![sa("10.0.0.2:7420")]), no_self), DnsRound::default());
    }

    #[test]
    fn a_dns_answer_over_the_cap_is_noted_once_and_keeps_the_lowest_addresses() {
        let mut d = DnsPeers::new();
        let many: Vec<SocketAddr> = (0..(MAX_DNS_PEERS as u32 + 10))
            .rev()
            .map(|i| SocketAddr::from(([10, 2, (i >> 8) as u8, (i & 0xff) as u8], 1)))
            .collect();
        let r = d.update(Ok(many.clone()), no_self);
        assert_eq!(r.notes, [DnsNote::Capped(MAX_DNS_PEERS + 10)]);
        assert_eq!(r.events.len(), MAX_DNS_PEERS);
        assert_eq!(d.peers().first(), Some(&sa("10.2.0.0:1")));
        assert_eq!(d.peers().last(), Some(&SocketAddr::from(([10, 2, 0, 255], 1))));
        assert_eq!(d.update(Ok(many.clone()), no_self), DnsRound::default(), "same answer, nothing new");
        let r = d.update(Ok(many[..3].to_vec()), no_self);
        assert_eq!(r.notes, [DnsNote::Uncapped]);
        assert_eq!(d.peers().len(), 3);
    }

    #[test]
    fn own_addresses_are_the_bound_the_advertised_and_the_port_on_own_ips_when_listening_everywhere() {
        let local: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "192.168.1.5".parse().unwrap()];
        let all = OwnAddrs { bound: sa("0.0.0.0:7420"), advertise: Some(sa("203.0.113.9:7000")) };
        for own in ["10.0.0.1:7420", "192.168.1.5:7420", "127.0.0.1:7420", "203.0.113.9:7000", "0.0.0.0:7420"] {
            assert!(all.contains(&sa(own), &local), "{own}");
        }
        for other in ["10.0.0.2:7420", "10.0.0.1:7421", "127.0.0.1:7421", "203.0.113.9:7420"] {
            assert!(!all.contains(&sa(other), &local), "{other}");
        }
        let one = OwnAddrs { bound: sa("10.0.0.1:7420"), advertise: None };
        assert!(one.contains(&sa("10.0.0.1:7420"), &local));
        assert!(!one.contains(&sa("127.0.0.1:7420"), &local), "nothing of this node listens on loopback");
        assert!(!one.contains(&sa("192.168.1.5:7420"), &local));
    }
}
