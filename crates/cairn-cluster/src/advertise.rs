//! The address a node tells its peers (`advertise_addr`). When unset it is
//! detected as the original does: the first non-loopback interface address,
//! with the listen port.

use std::net::IpAddr;

/// The first non-loopback address of this host's interfaces: IPv4 first,
/// then a global IPv6 address (link-local ones need a scope peers lack).
pub fn detect_ip() -> Option<IpAddr> {
    let addrs: Vec<IpAddr> = if_addrs::get_if_addrs().ok()?.into_iter().map(|i| i.ip()).collect();
    pick(&addrs)
}

/// The choice [`detect_ip`] makes among `addrs`, in interface order.
pub fn pick(addrs: &[IpAddr]) -> Option<IpAddr> {
    let usable = |ip: &&IpAddr| !ip.is_loopback() && !ip.is_unspecified() && !ip.is_multicast();
    addrs
        .iter()
        .filter(usable)
        .find(|ip| ip.is_ipv4())
        .or_else(|| {
            addrs.iter().filter(usable).find(|ip| match ip {
                // fe80::/10 is link-local.
                IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
                IpAddr::V4(_) => false,
            })
        })
        .copied()
}

/// The port of a listen address such as `:7420`, `0.0.0.0:7420` or `[::]:7420`.
pub fn listen_port(listen_addr: &str) -> Option<u16> {
    listen_addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// `host:port` to advertise: `configured` as given (with the listen port
/// added when it has none), else the detected address with the listen port.
/// `Err` says what is missing.
pub fn advertise_addr(configured: Option<&str>, listen_addr: &str) -> Result<String, String> {
    let port = listen_port(listen_addr);
    if let Some(c) = configured.map(str::trim).filter(|c| !c.is_empty()) {
        if has_port(c) {
            return Ok(c.to_owned());
        }
        let port = port.ok_or_else(|| {
            format!(
                "advertise_addr {c:?} has no port and listen_addr {listen_addr:?} gives none; write it as host:port"
            )
        })?;
        return Ok(join(c, port));
    }
    let port =
        port.ok_or_else(|| format!("listen_addr {listen_addr:?} has no port; write it as host:port or :port"))?;
    let ip = detect_ip().ok_or_else(|| {
        "no non-loopback interface address to advertise; set advertise_addr to the address peers reach this node on"
            .to_owned()
    })?;
    Ok(join(&ip.to_string(), port))
}

fn has_port(a: &str) -> bool {
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split_once(']').is_some_and(|(_, p)| p.starts_with(':'));
    }
    // A bare IPv6 address has several colons and no port.
    a.matches(':').count() == 1 && a.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok())
}

fn join(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn the_first_non_loopback_ipv4_address_wins() {
        let a = ips(&["127.0.0.1", "::1", "fe80::1", "10.231.0.2", "10.9.9.9"]);
        assert_eq!(pick(&a), Some("10.231.0.2".parse().unwrap()));
    }

    #[test]
    fn a_global_ipv6_address_is_used_when_there_is_no_ipv4_but_never_link_local() {
        assert_eq!(pick(&ips(&["::1", "fe80::1", "2001:db8::5"])), Some("2001:db8::5".parse().unwrap()));
        assert_eq!(pick(&ips(&["127.0.0.1", "::1", "fe80::1"])), None);
    }

    #[test]
    fn configured_addresses_are_kept_and_given_the_listen_port_when_they_lack_one() {
        assert_eq!(advertise_addr(Some("node-a:9000"), ":7420").unwrap(), "node-a:9000");
        assert_eq!(advertise_addr(Some("10.0.0.5"), ":7420").unwrap(), "10.0.0.5:7420");
        assert_eq!(advertise_addr(Some("2001:db8::5"), "[::]:7420").unwrap(), "[2001:db8::5]:7420");
        assert_eq!(advertise_addr(Some("[2001:db8::5]:81"), ":7420").unwrap(), "[2001:db8::5]:81");
    }

    #[test]
    fn a_listen_address_without_a_port_is_an_error_naming_it() {
        let e = advertise_addr(Some("node-a"), "localhost").unwrap_err();
        assert!(e.contains("\"localhost\"") && e.contains("host:port"), "{e}");
    }

    #[test]
    fn listen_ports_are_read_from_every_form() {
        assert_eq!(listen_port(":7420"), Some(7420));
        assert_eq!(listen_port("0.0.0.0:81"), Some(81));
        assert_eq!(listen_port("[::]:82"), Some(82));
        assert_eq!(listen_port("nope"), None);
    }

    #[test]
    fn detection_never_returns_a_loopback_address() {
        if let Some(ip) = detect_ip() {
            assert!(!ip.is_loopback(), "{ip}");
        }
    }
}
