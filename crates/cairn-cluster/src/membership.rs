//! Cluster membership proofs from a shared secret (README, "Cluster
//! membership"). The secret itself never crosses the network: requests to a
//! peer carry `X-Cairn-Peer: <node_id>;<unix seconds>;<hex HMAC-SHA256 over
//! node_id, time, method and path>`, accepted within [`SKEW`] of the
//! receiver's clock; a `/v1/health` answer to a request carrying
//! `X-Cairn-Nonce` carries `X-Cairn-Nonce-Proof`, an HMAC over the nonce and
//! the node id it claims, so the asker tells a member from an impostor.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The request header proving a peer knows the secret.
pub const PEER_HEADER: &str = "x-cairn-peer";
/// The health request header with the asker's nonce.
pub const NONCE_HEADER: &str = "x-cairn-nonce";
/// The health answer header proving the answering node knows the secret.
pub const NONCE_PROOF_HEADER: &str = "x-cairn-nonce-proof";
/// How far a request proof's time may be from the receiver's clock.
pub const SKEW: Duration = Duration::from_secs(300);
/// Shortest secret accepted.
pub const MIN_SECRET_BYTES: usize = 16;
/// Longest nonce answered.
pub const MAX_NONCE: usize = 128;

/// The shared cluster secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct ClusterSecret(Arc<[u8]>);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

/// Why a request proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Not `node_id;time;hex`.
    #[error("the X-Cairn-Peer header is not node_id;unix-time;hex-mac")]
    Malformed,
    /// Outside the accepted window.
    #[error(
        "the X-Cairn-Peer proof is {0} s away from this node's clock (more than 300 s): expired, or a clock is wrong"
    )]
    Expired(u64),
    /// The MAC does not match: another secret, or a proof for another request.
    #[error("the X-Cairn-Peer proof does not match this request and this cluster's secret")]
    BadMac,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

impl ClusterSecret {
    /// A secret from the bytes of `cluster_secret_file` (surrounding
    /// whitespace dropped); at least [`MIN_SECRET_BYTES`].
    pub fn new(bytes: &[u8]) -> Result<Self, String> {
        let s = bytes.trim_ascii();
        if s.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the cluster secret has {} bytes, fewer than {MIN_SECRET_BYTES}; write a long random one, e.g. \
                 `openssl rand -hex 32 > FILE`",
                s.len()
            ));
        }
        Ok(ClusterSecret(Arc::from(s)))
    }

    /// The MAC over `parts`, each ended by a newline (no part holds one).
    fn mac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        for p in parts {
            m.update(p);
            m.update(b"\n");
        }
        m
    }

    /// The `X-Cairn-Peer` value for a request `method path_and_query` sent now.
    pub fn request_proof(&self, node_id: &str, method: &str, path: &str) -> String {
        self.request_proof_at(node_id, unix_now(), method, path)
    }

    /// [`Self::request_proof`] at `time` (unix seconds).
    pub fn request_proof_at(&self, node_id: &str, time: u64, method: &str, path: &str) -> String {
        let t = time.to_string();
        let mac = self.mac(&[b"req", node_id.as_bytes(), t.as_bytes(), method.as_bytes(), path.as_bytes()]);
        format!("{node_id};{t};{}", hex(&mac.finalize().into_bytes()))
    }

    /// Checks an `X-Cairn-Peer` value for `method path_and_query` against
    /// the clock; the proving node's id when it holds.
    pub fn check_request(&self, header: &str, method: &str, path: &str) -> Result<String, ProofError> {
        self.check_request_at(header, unix_now(), method, path)
    }

    /// [`Self::check_request`] with the clock at `now`.
    pub fn check_request_at(&self, header: &str, now: u64, method: &str, path: &str) -> Result<String, ProofError> {
        let mut it = header.split(';');
        let (Some(id), Some(t), Some(mac), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(ProofError::Malformed);
        };
        let time: u64 = t.parse().map_err(|_| ProofError::Malformed)?;
        let mac = unhex(mac).ok_or(ProofError::Malformed)?;
        if id.is_empty() || t != time.to_string() {
            return Err(ProofError::Malformed);
        }
        let off = now.abs_diff(time);
        if off > SKEW.as_secs() {
            return Err(ProofError::Expired(off));
        }
        // `verify_slice` compares in constant time.
        self.mac(&[b"req", id.as_bytes(), t.as_bytes(), method.as_bytes(), path.as_bytes()])
            .verify_slice(&mac)
            .map_err(|_| ProofError::BadMac)?;
        Ok(id.to_owned())
    }

    /// The `X-Cairn-Nonce-Proof` of a health answer claiming `node_id`.
    pub fn nonce_proof(&self, nonce: &str, node_id: &str) -> String {
        hex(&self.mac(&[b"health", nonce.as_bytes(), node_id.as_bytes()]).finalize().into_bytes())
    }

    /// True when `proof` is this cluster's answer to `nonce` for `node_id`.
    pub fn check_nonce_proof(&self, nonce: &str, node_id: &str, proof: &str) -> bool {
        let Some(mac) = unhex(proof) else { return false };
        self.mac(&[b"health", nonce.as_bytes(), node_id.as_bytes()]).verify_slice(&mac).is_ok()
    }
}

/// A fresh random nonce for a health probe.
pub fn nonce() -> String {
    hex(&rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> ClusterSecret {
        ClusterSecret::new(s.as_bytes()).unwrap()
    }

    #[test]
    fn a_request_proof_holds_only_for_its_secret_request_and_time_window() {
        let s = secret("0123456789abcdef-cluster");
        let p = s.request_proof_at("n1", 1_000_000, "GET", "/v1/blobs/ab");
        assert_eq!(s.check_request_at(&p, 1_000_100, "GET", "/v1/blobs/ab"), Ok("n1".into()));
        assert_eq!(s.check_request_at(&p, 1_000_000, "GET", "/v1/blobs/cd"), Err(ProofError::BadMac), "other path");
        assert_eq!(s.check_request_at(&p, 1_000_000, "HEAD", "/v1/blobs/ab"), Err(ProofError::BadMac), "other method");
        assert_eq!(s.check_request_at(&p, 1_000_301, "GET", "/v1/blobs/ab"), Err(ProofError::Expired(301)));
        assert_eq!(s.check_request_at(&p, 999_600, "GET", "/v1/blobs/ab"), Err(ProofError::Expired(400)));
        let other = secret("another-secret-of-16+");
        assert_eq!(other.check_request_at(&p, 1_000_000, "GET", "/v1/blobs/ab"), Err(ProofError::BadMac));
        let forged = p.replacen("n1;", "n2;", 1);
        assert_eq!(s.check_request_at(&forged, 1_000_000, "GET", "/v1/blobs/ab"), Err(ProofError::BadMac));
        for bad in ["", "n1", "n1;1000000", "n1;x;00", "n1;1000000;zz", "n1;1000000;0", ";1000000;00", "a;01;00;x"] {
            assert_eq!(s.check_request_at(bad, 1_000_000, "GET", "/"), Err(ProofError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn a_nonce_proof_binds_the_nonce_and_the_claimed_node_id() {
        let s = secret("0123456789abcdef-cluster");
        let p = s.nonce_proof("abc", "n1");
        assert!(s.check_nonce_proof("abc", "n1", &p));
        assert!(!s.check_nonce_proof("abd", "n1", &p));
        assert!(!s.check_nonce_proof("abc", "n2", &p));
        assert!(!secret("another-secret-of-16+").check_nonce_proof("abc", "n1", &p));
        assert!(!s.check_nonce_proof("abc", "n1", "not hex"));
    }

    #[test]
    fn short_secrets_are_refused_and_debug_hides_the_secret() {
        assert!(ClusterSecret::new(b"  short \n").unwrap_err().contains("fewer than 16"));
        assert_eq!(format!("{:?}", secret("0123456789abcdef\n")), "ClusterSecret(<redacted>)");
    }
}
