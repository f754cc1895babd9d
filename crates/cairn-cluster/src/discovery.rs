//! Peer discovery. `static` is the configured `peers` list; `mdns` announces
//! this node as a DNS-SD service `_cairn._tcp.local.` (TXT: `node_id`,
//! `addr`) and browses for the others, reporting peers as they come and go
//! (goodbye packets and expiry both end in a removal).
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
}

impl std::str::FromStr for Discovery {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "static" => Ok(Discovery::Static),
            "mdns" => Ok(Discovery::Mdns),
            other => Err(format!("discovery {other:?} is not one of: static, mdns")),
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
        let e = "dns".parse::<Discovery>().unwrap_err();
        assert!(e.contains("\"dns\"") && e.contains("static, mdns"), "{e}");
    }
}
