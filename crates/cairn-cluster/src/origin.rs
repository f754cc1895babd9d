//! Origins: where a blob comes from when no peer has it. Tried in the
//! configured order after the peers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_store::Digest;

use crate::error::{ClusterError, Result};
use crate::peer::RemoteBlob;
use crate::upstream::Upstream;

/// One origin. An enum so other kinds (an upstream OCI registry) slot in
/// beside the plain HTTP one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// A plain HTTP(S) server; `{digest}` in the template is replaced by
    /// the bare hex digest, e.g. `http://cdn.example/blobs/{digest}`.
    Http {
        /// The URL template.
        url_template: String,
        /// Time allowed for the answer's headers, and for any pause in its
        /// body; the peer timeout when `None`.
        timeout: Option<Duration>,
        /// Extra tries after a transport error or a 5xx (never after wrong bytes or a 404).
        retries: u32,
        /// Its own HTTPS client, when it has a `ca_file` or skips verification.
        tls: Option<Arc<OriginTls>>,
    },
    /// An upstream OCI registry; used only for digests asked for through
    /// `/v2`, which name their repository.
    Registry(Arc<Upstream>),
}

/// Extra tries of an origin unless configured.
pub const DEFAULT_RETRIES: u32 = 2;

/// The first retry waits about this long; each next one twice as long.
pub const RETRY_BASE: Duration = Duration::from_millis(200);

/// The wait before retry number `attempt` (1-based): doubling from
/// [`RETRY_BASE`], at most 5 s, with up to half of it added as jitter so
/// nodes retrying together spread out.
pub fn backoff(attempt: u32) -> Duration {
    let base = RETRY_BASE.saturating_mul(1 << attempt.saturating_sub(1).min(5)).min(Duration::from_secs(5));
    base + base.mul_f64(rand::random::<f64>() / 2.0)
}

impl Origin {
    /// An HTTP origin from a URL template. The template must be an
    /// `http://` or `https://` URL containing `{digest}`.
    pub fn http(url_template: &str) -> Result<Self, String> {
        if !(url_template.starts_with("http://") || url_template.starts_with("https://")) {
            return Err(format!("origin url {url_template:?} must start with http:// or https://"));
        }
        if !url_template.contains("{digest}") {
            return Err(format!("origin url {url_template:?} must contain {{digest}}"));
        }
        Ok(Origin::Http { url_template: url_template.to_owned(), timeout: None, retries: DEFAULT_RETRIES, tls: None })
    }

    /// The same origin with its own timeout (a registry origin keeps its
    /// configured one).
    pub fn with_timeout(mut self, t: Duration) -> Self {
        if let Origin::Http { timeout, .. } = &mut self {
            *timeout = Some(t);
        }
        self
    }

    /// The same origin with `n` extra tries (a registry origin is not retried
    /// by the pipeline).
    pub fn with_retries(mut self, n: u32) -> Self {
        if let Origin::Http { retries, .. } = &mut self {
            *retries = n;
        }
        self
    }

    /// The same origin trusting the CA certificates in `ca_file` besides
    /// the system trust store, or (`insecure`) any certificate at all.
    pub fn with_tls(mut self, ca_file: Option<&Path>, insecure: bool) -> Result<Self, String> {
        if let Origin::Http { tls, url_template, .. } = &mut self {
            let http = https_client(url_template, ca_file, insecure)?
                .build()
                .map_err(|e| format!("origin {url_template}: cannot build its HTTPS client: {}", error_chain(&e)))?;
            *tls = Some(Arc::new(OriginTls { ca_file: ca_file.map(Path::to_owned), insecure, http }));
        }
        Ok(self)
    }

    /// Its timeout, if it has its own.
    pub fn timeout(&self) -> Option<Duration> {
        match self {
            Origin::Http { timeout, .. } => *timeout,
            Origin::Registry(up) => Some(up.config().timeout),
        }
    }

    /// Its extra tries.
    pub fn retries(&self) -> u32 {
        match self {
            Origin::Http { retries, .. } => *retries,
            Origin::Registry(_) => 0,
        }
    }

    /// A registry origin (see [`crate::upstream::UpstreamConfig`]).
    pub fn registry(cfg: crate::upstream::UpstreamConfig) -> Result<Self, String> {
        Ok(Origin::Registry(Arc::new(Upstream::new(cfg)?)))
    }

    /// A short name for logs and errors.
    pub fn name(&self) -> String {
        match self {
            Origin::Http { url_template, .. } => format!("origin {url_template}"),
            Origin::Registry(up) => up.name(),
        }
    }

    /// The URL of one blob.
    pub fn url(&self, d: &Digest) -> String {
        match self {
            Origin::Http { url_template, .. } => url_template.replace("{digest}", &d.to_string()),
            Origin::Registry(up) => format!("{}/v2/<repository>/blobs/{}", up.config().url, d.oci()),
        }
    }

    /// Starts a GET of the blob.
    pub(crate) async fn get(&self, http: &reqwest::Client, d: &Digest) -> Result<RemoteBlob> {
        let err = |reason: String| ClusterError::Origin { origin: self.name(), digest: *d, reason };
        if let Origin::Registry(_) = self {
            return Err(err("a registry origin needs the repository; it serves only /v2 requests".into()));
        }
        let url = self.url(d);
        let http = match self {
            Origin::Http { tls: Some(t), .. } => &t.http,
            _ => http,
        };
        let resp = http.get(&url).send().await.map_err(|e| err(format!("GET {url}: {}", error_chain(&e))))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(ClusterError::NotFound { digest: *d, tried: vec![format!("{}: 404", self.name())] });
        }
        // A refusal is final; a timeout, throttling or 5xx may pass.
        if status.is_client_error()
            && status != reqwest::StatusCode::REQUEST_TIMEOUT
            && status != reqwest::StatusCode::TOO_MANY_REQUESTS
        {
            return Err(ClusterError::OriginRefused { origin: self.name(), digest: *d, status: status.as_u16() });
        }
        if !status.is_success() {
            return Err(err(format!("GET {url}: HTTP {status}")));
        }
        Ok(RemoteBlob::from_response(resp, self.name(), *d))
    }
}

/// The HTTPS settings of one origin, with the client built from them.
pub struct OriginTls {
    ca_file: Option<PathBuf>,
    insecure: bool,
    http: reqwest::Client,
}

impl PartialEq for OriginTls {
    fn eq(&self, other: &Self) -> bool {
        (&self.ca_file, self.insecure) == (&other.ca_file, other.insecure)
    }
}

impl Eq for OriginTls {}

impl std::fmt::Debug for OriginTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginTls").field("ca_file", &self.ca_file).field("insecure", &self.insecure).finish()
    }
}

pub use crate::net::{error_chain, https_client};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_origin_substitutes_the_bare_digest() {
        let o = Origin::http("http://cdn.example/blobs/{digest}").unwrap();
        let d = Digest::of(b"x");
        assert_eq!(o.url(&d), format!("http://cdn.example/blobs/{d}"));
    }

    #[test]
    fn backoff_doubles_with_at_most_half_again_of_jitter_and_is_capped() {
        for attempt in 1..10 {
            let base = RETRY_BASE.saturating_mul(1 << (attempt - 1).min(5)).min(Duration::from_secs(5));
            let b = backoff(attempt);
            assert!(b >= base && b <= base + base / 2, "attempt {attempt}: {b:?}");
        }
        let waits: std::collections::HashSet<Duration> = (0..20).map(|_| backoff(3)).collect();
        assert!(waits.len() > 1, "jitter varies the wait");
    }

    #[test]
    fn http_origin_defaults_and_overrides_timeout_and_retries() {
        let o = Origin::http("http://cdn/{digest}").unwrap();
        assert_eq!((o.timeout(), o.retries()), (None, DEFAULT_RETRIES));
        let o = o.with_timeout(Duration::from_secs(3)).with_retries(0);
        assert_eq!((o.timeout(), o.retries()), (Some(Duration::from_secs(3)), 0));
    }

    #[test]
    fn http_origin_rejects_templates_without_scheme_or_placeholder() {
        assert!(Origin::http("cdn.example/{digest}").unwrap_err().contains("http://"));
        assert!(Origin::http("http://cdn.example/blobs/").unwrap_err().contains("{digest}"));
    }
}
