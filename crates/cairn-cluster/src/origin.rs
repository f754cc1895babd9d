//! Origins: where a blob comes from when no peer has it. Tried in the
//! configured order after the peers.

use std::sync::Arc;

use cairn_store::Digest;
use futures_util::TryStreamExt;

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
    },
    /// An upstream OCI registry; used only for digests asked for through
    /// `/v2`, which name their repository.
    Registry(Arc<Upstream>),
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
        Ok(Origin::Http { url_template: url_template.to_owned() })
    }

    /// A registry origin (see [`crate::upstream::UpstreamConfig`]).
    pub fn registry(cfg: crate::upstream::UpstreamConfig) -> Result<Self, String> {
        Ok(Origin::Registry(Arc::new(Upstream::new(cfg)?)))
    }

    /// A short name for logs and errors.
    pub fn name(&self) -> String {
        match self {
            Origin::Http { url_template } => format!("origin {url_template}"),
            Origin::Registry(up) => up.name(),
        }
    }

    /// The URL of one blob.
    pub fn url(&self, d: &Digest) -> String {
        match self {
            Origin::Http { url_template } => url_template.replace("{digest}", &d.to_string()),
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
        let resp = http.get(&url).send().await.map_err(|e| err(format!("GET {url}: {e}")))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(ClusterError::NotFound { digest: *d, tried: vec![format!("{}: 404", self.name())] });
        }
        if !status.is_success() {
            return Err(err(format!("GET {url}: HTTP {status}")));
        }
        let size = resp.content_length();
        let name = self.name();
        let digest = *d;
        let body = resp.bytes_stream().map_err(move |e| ClusterError::Truncated {
            source_name: name.clone(),
            digest,
            reason: e.to_string(),
        });
        Ok(RemoteBlob { size, body: Box::pin(body) })
    }
}

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
    fn http_origin_rejects_templates_without_scheme_or_placeholder() {
        assert!(Origin::http("cdn.example/{digest}").unwrap_err().contains("http://"));
        assert!(Origin::http("http://cdn.example/blobs/").unwrap_err().contains("{digest}"));
    }
}
