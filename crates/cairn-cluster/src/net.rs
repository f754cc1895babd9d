//! HTTP client helpers shared by the peer client, the origins and the
//! upstream registries (below all three, so none imports another for them).

use std::path::Path;
use std::time::Duration;

/// A read smaller than this means the body trickles in (a shaped link
/// delivers a packet at a time, each one a wake-up of the runtime).
pub const SMALL_READ: usize = 16 * 1024;

/// After a read of `n` bytes of a body: when it was small, lets the body
/// gather in the socket for a moment before the next read. One wake-up a
/// millisecond instead of one a packet cut a swarm node's CPU by more than
/// half at 200 Mbit/s, for at most a millisecond of latency a read.
pub async fn gather_after(n: usize) {
    if n < SMALL_READ {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A client builder for an origin or registry called `name`: the system
/// trust store, plus the CA certificates of `ca_file`; with `insecure`,
/// no certificate check at all (warned about once, here).
pub fn https_client(name: &str, ca_file: Option<&Path>, insecure: bool) -> Result<reqwest::ClientBuilder, String> {
    let mut b = reqwest::Client::builder();
    if let Some(p) = ca_file {
        let pem = std::fs::read(p).map_err(|e| format!("ca_file {}: cannot read it: {e}", p.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("ca_file {}: not PEM certificates: {e}", p.display()))?;
        if certs.is_empty() {
            return Err(format!("ca_file {}: holds no PEM certificate", p.display()));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if insecure {
        tracing::warn!(origin = name, "insecure_skip_verify: true: any certificate is accepted from this origin");
        b = b.danger_accept_invalid_certs(true);
    }
    Ok(b)
}

/// A transport error with its causes, and what to do when the cause is an
/// untrusted certificate.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        text = format!("{text}: {s}");
        src = s.source();
    }
    if text.contains("certificate") {
        text.push_str(
            " (the server's TLS certificate is not trusted: give its CA in this origin's ca_file, \
             or set insecure_skip_verify: true to skip the check)",
        );
    }
    text
}
