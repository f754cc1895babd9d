//! An upstream OCI registry as an origin: tags resolved upstream (and
//! cached for a TTL), manifests and blobs fetched by digest, with the
//! registry's token auth (see `auth.rs`).
//!
//! Bytes fetched here are not trusted: manifests fetched by digest are
//! checked against it, and blob bodies go through the fetch pipeline,
//! which verifies them before they enter the store.

mod auth;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_store::Digest;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode, header};

use crate::peer::RemoteBlob;
use auth::{Auth, Credential};

/// Every manifest type asked for: OCI and Docker schema 2, images and indexes.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest read from an upstream (the limit registries commonly apply).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Upper bound on remembered tags; past it, expired entries are dropped.
const MAX_CACHED_TAGS: usize = 10_000;

/// `registry:` origin settings.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Base URL, e.g. `https://registry-1.docker.io`.
    pub url: String,
    /// User for the token endpoint or basic auth.
    pub username: Option<String>,
    /// Password or access token of `username`.
    pub password: Option<String>,
    /// How long a tag resolved upstream is served without asking again.
    pub tag_ttl: Duration,
    /// Connect timeout, and the limit on waiting for an answer's headers.
    pub timeout: Duration,
    /// PEM CA certificates trusted besides the system trust store.
    pub ca_file: Option<std::path::PathBuf>,
    /// Accept any certificate (only when set explicitly).
    pub insecure_skip_verify: bool,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            url: String::new(),
            username: None,
            password: None,
            tag_ttl: Duration::from_secs(300),
            timeout: Duration::from_secs(30),
            ca_file: None,
            insecure_skip_verify: false,
        }
    }
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches a log line.
        f.debug_struct("UpstreamConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tag_ttl", &self.tag_ttl)
            .field("timeout", &self.timeout)
            .field("ca_file", &self.ca_file)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

/// What went wrong talking to an upstream registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// No connection, a transport error, or no answer in time.
    #[error("registry {registry} is unreachable ({what}): {reason}; check its URL and the network")]
    Unreachable {
        /// The registry URL.
        registry: String,
        /// The request.
        what: String,
        /// What the transport reported.
        reason: String,
    },
    /// The registry has no such repository, tag, manifest or blob.
    #[error("registry {registry} has no {what}")]
    NotFound {
        /// The registry URL.
        registry: String,
        /// What was asked for, e.g. `manifest library/alpine:3`.
        what: String,
    },
    /// Authentication failed; the reason says what to fix.
    #[error("registry {registry} refused {what}: {reason}")]
    Auth {
        /// The registry URL.
        registry: String,
        /// The request.
        what: String,
        /// Why, and what to check.
        reason: String,
    },
    /// An unexpected HTTP status.
    #[error("registry {registry} answered {what} with HTTP {status}: {body}")]
    Status {
        /// The registry URL.
        registry: String,
        /// The request.
        what: String,
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// An answer that breaks the protocol (bad digest header, wrong bytes,
    /// oversize manifest).
    #[error("registry {registry} sent a bad answer to {what}: {reason}")]
    BadAnswer {
        /// The registry URL.
        registry: String,
        /// The request.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A repository name or tag that cannot be sent upstream.
    #[error("{field} {value:?} cannot be asked of registry {registry}: {reason}")]
    BadInput {
        /// The registry URL.
        registry: String,
        /// `repository` or `tag`.
        field: &'static str,
        /// The value given.
        value: String,
        /// The rule it breaks.
        reason: &'static str,
    },
}

impl UpstreamError {
    /// True when the registry could not answer (down, overloaded, rate
    /// limited): a cached tag may be served instead.
    pub fn is_unavailable(&self) -> bool {
        match self {
            UpstreamError::Unreachable { .. } => true,
            UpstreamError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// True for a plain "no such thing".
    pub fn is_not_found(&self) -> bool {
        matches!(self, UpstreamError::NotFound { .. })
    }
}

/// Where a resolved tag came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Asked of the registry just now.
    Upstream,
    /// From the cache, younger than the TTL.
    Cached,
    /// From the cache, older than the TTL, because the registry is unavailable.
    Stale,
}

/// A tag resolved to a manifest digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTag {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its `Content-Type`, when the registry sent one.
    pub media_type: Option<String>,
    /// Its size, when the registry sent one.
    pub size: Option<u64>,
    /// Where the answer came from.
    pub freshness: Freshness,
}

/// A manifest fetched from an upstream, verified against its digest.
#[derive(Debug, Clone)]
pub struct UpstreamManifest {
    /// SHA-256 of `bytes`.
    pub digest: Digest,
    /// The registry's `Content-Type`.
    pub media_type: Option<String>,
    /// The manifest, exactly as served.
    pub bytes: Vec<u8>,
}

/// Which endpoint serves an object: manifests and blobs live apart upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// `/v2/<name>/blobs/<digest>`.
    Blob,
    /// `/v2/<name>/manifests/<digest>`.
    Manifest,
}

/// `(repository, tag)` as the client named them.
type TagKey = (String, String);

struct CachedTag {
    digest: Digest,
    media_type: Option<String>,
    size: Option<u64>,
    at: Instant,
}

/// A client of one upstream registry. Cheap to share behind an `Arc`.
pub struct Upstream {
    cfg: UpstreamConfig,
    base: String,
    docker_hub: bool,
    http: reqwest::Client,
    auth: Auth,
    tags: Mutex<HashMap<TagKey, CachedTag>>,
    /// One lock per tag being asked upstream: concurrent misses of one tag
    /// send one `HEAD`, the others then read its answer from the cache.
    asking: Mutex<HashMap<TagKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl PartialEq for Upstream {
    fn eq(&self, other: &Self) -> bool {
        self.cfg == other.cfg
    }
}

impl Eq for Upstream {}

/// The repository and kind of a digest asked for through `/v2`: what an
/// upstream registry needs to serve it (a bare digest names no repository).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciHint {
    /// The repository, as the client named it.
    pub repo: String,
    /// Blob or manifest.
    pub kind: ObjectKind,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl Upstream {
    /// A client for `cfg.url` (`http://` or `https://`, no query). Basic
    /// credentials need both a username and a password.
    pub fn new(cfg: UpstreamConfig) -> Result<Self, String> {
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| format!("registry url {:?} is not a URL: {e}", cfg.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("registry url {:?} must start with http:// or https://", cfg.url));
        }
        if url.query().is_some() || url.fragment().is_some() || url.host_str().is_none() {
            return Err(format!("registry url {:?} must be scheme://host[:port] with no query", cfg.url));
        }
        if cfg.username.is_some() != cfg.password.is_some() {
            return Err(format!("registry {}: set both username and password, or neither", cfg.url));
        }
        let base = cfg.url.trim_end_matches('/').to_owned();
        let docker_hub = matches!(url.host_str(), Some("registry-1.docker.io" | "docker.io" | "index.docker.io"));
        let http = crate::net::https_client(&cfg.url, cfg.ca_file.as_deref(), cfg.insecure_skip_verify)
            .map_err(|e| format!("registry {}: {e}", cfg.url))?
            .connect_timeout(cfg.timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("registry {}: cannot build an HTTP client: {e}", cfg.url))?;
        let creds = cfg.username.clone().zip(cfg.password.clone());
        let auth = Auth::new(base.clone(), creds);
        Ok(Upstream { cfg, base, docker_hub, http, auth, tags: Default::default(), asking: Default::default() })
    }

    /// Its settings.
    pub fn config(&self) -> &UpstreamConfig {
        &self.cfg
    }

    /// A short name for logs and errors.
    pub fn name(&self) -> String {
        format!("registry {}", self.base)
    }

    /// Bearer tokens currently cached (one per scope).
    pub fn cached_tokens(&self) -> usize {
        self.auth.live_tokens()
    }

    /// The repository name as the upstream knows it: Docker Hub's official
    /// images live under `library/`.
    fn remote_repo(&self, repo: &str) -> Result<String, UpstreamError> {
        let bad = |reason| UpstreamError::BadInput {
            registry: self.base.clone(),
            field: "repository",
            value: repo.to_owned(),
            reason,
        };
        if repo.is_empty() || repo.len() > 255 {
            return Err(bad("it must be 1 to 255 characters"));
        }
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c);
        if !repo.chars().all(ok) || repo.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
            return Err(bad("it must be path components of [a-z0-9._-]"));
        }
        Ok(if self.docker_hub && !repo.contains('/') { format!("library/{repo}") } else { repo.to_owned() })
    }

    fn check_tag(&self, tag: &str) -> Result<(), UpstreamError> {
        let first_ok = tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let ok = tag.len() <= 128 && tag.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if first_ok && ok {
            Ok(())
        } else {
            Err(UpstreamError::BadInput {
                registry: self.base.clone(),
                field: "tag",
                value: tag.to_owned(),
                reason: "a tag is [A-Za-z0-9_][A-Za-z0-9._-]{0,127}",
            })
        }
    }

    /// Resolves `repo:tag` to a manifest digest: from the cache while it is
    /// younger than the TTL, else with a `HEAD` upstream. When the upstream
    /// is unavailable, a cached answer of any age is served (marked
    /// [`Freshness::Stale`]); when it says the tag is gone, the cache
    /// forgets it.
    pub async fn resolve_tag(&self, repo: &str, tag: &str) -> Result<ResolvedTag, UpstreamError> {
        self.check_tag(tag)?;
        let key = (repo.to_owned(), tag.to_owned());
        let cached = |fresh| {
            self.with_tags(|m| {
                m.get(&key).map(|c| ResolvedTag {
                    digest: c.digest,
                    media_type: c.media_type.clone(),
                    size: c.size,
                    freshness: if c.at.elapsed() < self.cfg.tag_ttl { Freshness::Cached } else { fresh },
                })
            })
        };
        if let Some(hit) = cached(Freshness::Stale).filter(|h| h.freshness == Freshness::Cached) {
            return Ok(hit);
        }
        let gate = {
            let mut g = self.asking.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(g.entry(key.clone()).or_default())
        };
        let turn = gate.lock().await;
        // The caller ahead in line may have just filled the cache.
        if let Some(hit) = cached(Freshness::Stale).filter(|h| h.freshness == Freshness::Cached) {
            return Ok(hit);
        }
        let answer = self.head_tag(repo, tag).await;
        drop(turn);
        {
            let mut g = self.asking.lock().unwrap_or_else(|e| e.into_inner());
            // Only the map and this caller hold it: nobody waits.
            if Arc::strong_count(&gate) <= 2 {
                g.remove(&key);
            }
        }
        match answer {
            Ok(r) => {
                self.with_tags(|m| {
                    if m.len() >= MAX_CACHED_TAGS {
                        let ttl = self.cfg.tag_ttl;
                        m.retain(|_, c| c.at.elapsed() < ttl);
                    }
                    m.insert(
                        key,
                        CachedTag {
                            digest: r.digest,
                            media_type: r.media_type.clone(),
                            size: r.size,
                            at: Instant::now(),
                        },
                    );
                });
                Ok(r)
            }
            Err(e) if e.is_unavailable() => match cached(Freshness::Stale) {
                Some(stale) => {
                    tracing::warn!(registry = %self.base, repo, tag, error = %e, "serving a cached tag past its TTL");
                    Ok(ResolvedTag { freshness: Freshness::Stale, ..stale })
                }
                None => Err(e),
            },
            Err(e) => {
                if e.is_not_found() {
                    self.with_tags(|m| m.remove(&key));
                }
                Err(e)
            }
        }
    }

    /// The cached answer for `repo:tag` if it is younger than the TTL; no request.
    pub fn fresh_tag(&self, repo: &str, tag: &str) -> Option<ResolvedTag> {
        let ttl = self.cfg.tag_ttl;
        self.with_tags(|m| {
            m.get(&(repo.to_owned(), tag.to_owned())).filter(|c| c.at.elapsed() < ttl).map(|c| ResolvedTag {
                digest: c.digest,
                media_type: c.media_type.clone(),
                size: c.size,
                freshness: Freshness::Cached,
            })
        })
    }

    fn with_tags<R>(&self, f: impl FnOnce(&mut HashMap<TagKey, CachedTag>) -> R) -> R {
        // A plain map: still valid if another thread panicked holding it.
        let mut g = self.tags.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    async fn head_tag(&self, repo: &str, tag: &str) -> Result<ResolvedTag, UpstreamError> {
        let remote = self.remote_repo(repo)?;
        let what = format!("HEAD manifest {remote}:{tag}");
        let path = format!("/v2/{remote}/manifests/{tag}");
        let resp = self.send(Method::HEAD, &path, &remote, Some(MANIFEST_ACCEPT), &what).await?;
        let resp = self.check(resp, &what, || format!("manifest {remote}:{tag}")).await?;
        let media_type = content_type(&resp);
        let size = resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        let digest = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_owned);
        match digest {
            Some(d) => {
                let digest =
                    Digest::parse(&d).map_err(|e| self.bad(&what, format!("Docker-Content-Digest {d:?}: {e}")))?;
                Ok(ResolvedTag { digest, media_type, size, freshness: Freshness::Upstream })
            }
            None => {
                // Some registries omit the digest on HEAD: hash the manifest itself.
                let m = self.get_manifest(repo, tag).await?;
                Ok(ResolvedTag {
                    digest: m.digest,
                    media_type: m.media_type,
                    size: Some(m.bytes.len() as u64),
                    freshness: Freshness::Upstream,
                })
            }
        }
    }

    /// Fetches a manifest by tag or by digest. By digest, the bytes must
    /// hash to it; by tag, they must match the `Docker-Content-Digest` the
    /// registry sent (if any).
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<UpstreamManifest, UpstreamError> {
        let by_digest = reference.starts_with("sha256:");
        let want = if by_digest {
            Some(Digest::parse(reference).map_err(|_| UpstreamError::BadInput {
                registry: self.base.clone(),
                field: "digest",
                value: reference.to_owned(),
                reason: "a digest is sha256:<64 lowercase hex>",
            })?)
        } else {
            self.check_tag(reference)?;
            None
        };
        let remote = self.remote_repo(repo)?;
        let what = format!("GET manifest {remote}:{reference}");
        let path = format!("/v2/{remote}/manifests/{reference}");
        let resp = self.send(Method::GET, &path, &remote, Some(MANIFEST_ACCEPT), &what).await?;
        let resp = self.check(resp, &what, || format!("manifest {remote}:{reference}")).await?;
        let media_type = content_type(&resp);
        let said = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = read_limited(resp, MAX_MANIFEST_BYTES).await.map_err(|r| self.bad(&what, r))?;
        let digest = Digest::of(&bytes);
        if let Some(w) = want.filter(|w| *w != digest) {
            return Err(self.bad(&what, format!("the manifest hashes to {}, not {}", digest.oci(), w.oci())));
        }
        if let Some(s) = said.filter(|s| Digest::parse(s).ok() != Some(digest)) {
            return Err(
                self.bad(&what, format!("Docker-Content-Digest says {s} but the manifest hashes to {}", digest.oci()))
            );
        }
        Ok(UpstreamManifest { digest, media_type, bytes })
    }

    /// `HEAD` of a blob or manifest by digest: its size, `None` when absent.
    pub async fn head(&self, repo: &str, d: &Digest, kind: ObjectKind) -> Result<Option<u64>, UpstreamError> {
        let remote = self.remote_repo(repo)?;
        let (what, path) = object_path(&remote, d, kind);
        let what = format!("HEAD {what}");
        let accept = (kind == ObjectKind::Manifest).then_some(MANIFEST_ACCEPT);
        let resp = self.send(Method::HEAD, &path, &remote, accept, &what).await?;
        match self.check(resp, &what, || what.clone()).await {
            Ok(r) => Ok(r.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Starts a streaming `GET` of a blob or manifest by digest. The body is
    /// not verified here: the fetch pipeline hashes it.
    pub async fn open(&self, repo: &str, d: &Digest, kind: ObjectKind) -> Result<RemoteBlob, UpstreamError> {
        let remote = self.remote_repo(repo)?;
        let (what, path) = object_path(&remote, d, kind);
        let accept = (kind == ObjectKind::Manifest).then_some(MANIFEST_ACCEPT);
        let resp = self.send(Method::GET, &path, &remote, accept, &format!("GET {what}")).await?;
        let resp = self.check(resp, &format!("GET {what}"), || what.clone()).await?;
        Ok(RemoteBlob::from_response(resp, self.name(), *d))
    }

    /// Sends one request with what auth knows, answering one `401` challenge.
    async fn send(
        &self,
        method: Method,
        path: &str,
        remote_repo: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<reqwest::Response, UpstreamError> {
        let scope = format!("repository:{remote_repo}:pull");
        let url = format!("{}{path}", self.base);
        let sent = self.auth.current(&scope);
        let resp = self.send_once(&method, &url, accept, &sent, what).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let cred = self.auth.answer(&self.http, self.cfg.timeout, &scope, challenge.as_deref(), &sent, what).await?;
        let resp = self.send_once(&method, &url, accept, &cred, what).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let reason = match &cred {
                Credential::Basic(u, _) => {
                    format!("the registry rejected the credentials of user {u:?}; check the password")
                }
                _ => format!("still 401 with a fresh token for {scope}; check the credentials' access to it"),
            };
            return Err(UpstreamError::Auth { registry: self.base.clone(), what: what.to_owned(), reason });
        }
        Ok(resp)
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &str,
        accept: Option<&str>,
        cred: &Credential,
        what: &str,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut req = self.http.request(method.clone(), url);
        if let Some(a) = accept {
            req = req.header(header::ACCEPT, a);
        }
        let req = cred.apply(req);
        let unreachable =
            |reason| UpstreamError::Unreachable { registry: self.base.clone(), what: what.to_owned(), reason };
        match tokio::time::timeout(self.cfg.timeout, req.send()).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(unreachable(error_chain(&e))),
            Err(_) => Err(unreachable(format!("no answer within {:?}", self.cfg.timeout))),
        }
    }

    /// Turns a non-success status into an error.
    async fn check(
        &self,
        resp: reqwest::Response,
        what: &str,
        missing: impl FnOnce() -> String,
    ) -> Result<reqwest::Response, UpstreamError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == StatusCode::NOT_FOUND {
            return Err(UpstreamError::NotFound { registry: self.base.clone(), what: missing() });
        }
        let body = read_limited(resp, 4096).await.map(|b| snippet(&b)).unwrap_or_default();
        if status == StatusCode::FORBIDDEN {
            return Err(UpstreamError::Auth {
                registry: self.base.clone(),
                what: what.to_owned(),
                reason: format!("HTTP 403 {body}; the credentials lack access"),
            });
        }
        Err(UpstreamError::Status { registry: self.base.clone(), what: what.to_owned(), status: status.as_u16(), body })
    }

    fn bad(&self, what: &str, reason: String) -> UpstreamError {
        UpstreamError::BadAnswer { registry: self.base.clone(), what: what.to_owned(), reason }
    }
}

fn object_path(remote: &str, d: &Digest, kind: ObjectKind) -> (String, String) {
    match kind {
        ObjectKind::Blob => (format!("blob {remote}@{}", d.oci()), format!("/v2/{remote}/blobs/{}", d.oci())),
        ObjectKind::Manifest => {
            (format!("manifest {remote}@{}", d.oci()), format!("/v2/{remote}/manifests/{}", d.oci()))
        }
    }
}

fn content_type(resp: &reqwest::Response) -> Option<String> {
    let v = resp.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    // Parameters (`; charset=...`) are not part of a media type.
    let t = v.split(';').next().unwrap_or(v).trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// An error with its sources, which is where reqwest puts the useful part.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    crate::net::error_chain(e)
}

/// Reads a body of at most `limit` bytes.
pub(crate) async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|l| l > limit as u64) {
        return Err(format!("body is larger than {limit} bytes"));
    }
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(c) = s.next().await {
        let c = c.map_err(|e| format!("body cut: {}", error_chain(&e)))?;
        if out.len() + c.len() > limit {
            return Err(format!("body is larger than {limit} bytes"));
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// An error body, for an error message that may reach other callers: the
/// OCI error codes it lists, else only its size. The start of the body
/// itself goes to this node's log.
pub(crate) fn snippet(b: &[u8]) -> String {
    let start = String::from_utf8_lossy(&b[..b.len().min(200)]);
    tracing::debug!(body = %start.trim(), "upstream error body");
    let codes: Vec<String> = serde_json::from_slice::<serde_json::Value>(b)
        .ok()
        .and_then(|v| v.get("errors").and_then(|e| e.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.get("code").and_then(|c| c.as_str()))
        .filter(|c| c.len() <= 40 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .take(4)
        .map(str::to_owned)
        .collect();
    if codes.is_empty() { format!("({} byte body, not shown)", b.len()) } else { format!("({})", codes.join(", ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(url: &str) -> Upstream {
        Upstream::new(UpstreamConfig { url: url.into(), ..Default::default() }).unwrap()
    }

    #[test]
    fn registry_url_must_be_http_without_query_and_credentials_come_in_pairs() {
        let new = |url: &str, user: Option<&str>| {
            Upstream::new(UpstreamConfig { url: url.into(), username: user.map(Into::into), ..Default::default() })
        };
        assert!(new("ftp://r.example", None).unwrap_err().contains("http://"));
        assert!(new("r.example", None).unwrap_err().contains("not a URL"));
        assert!(new("https://r.example/?x=1", None).unwrap_err().contains("no query"));
        assert!(new("https://r.example", Some("u")).unwrap_err().contains("both username and password"));
        assert_eq!(up("https://r.example/").name(), "registry https://r.example");
    }

    #[test]
    fn docker_hub_official_images_get_the_library_prefix() {
        let hub = up("https://registry-1.docker.io");
        assert_eq!(hub.remote_repo("alpine").unwrap(), "library/alpine");
        assert_eq!(hub.remote_repo("grafana/grafana").unwrap(), "grafana/grafana");
        assert_eq!(up("http://127.0.0.1:5000").remote_repo("alpine").unwrap(), "alpine");
    }

    #[test]
    fn unsafe_repository_names_and_tags_are_refused_before_any_request() {
        let u = up("http://127.0.0.1:5000");
        for bad in ["", "../x", "a//b", "A", "a/./b", "a?b", "a b", "a/"] {
            assert!(matches!(u.remote_repo(bad), Err(UpstreamError::BadInput { field: "repository", .. })), "{bad}");
        }
        for bad in ["", "-x", ".x", "a/b", "a:b", &"x".repeat(129)] {
            assert!(matches!(u.check_tag(bad), Err(UpstreamError::BadInput { field: "tag", .. })), "{bad}");
        }
        assert!(u.check_tag("v1.2_3-rc").is_ok());
    }

    #[test]
    fn password_is_redacted_from_debug_output() {
        let c = UpstreamConfig { username: Some("u".into()), password: Some("hunter2".into()), ..Default::default() };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn only_transport_failures_rate_limits_and_5xx_allow_stale_tags() {
        let status =
            |s| UpstreamError::Status { registry: "r".into(), what: "w".into(), status: s, body: String::new() };
        assert!(status(503).is_unavailable());
        assert!(status(429).is_unavailable());
        assert!(!status(400).is_unavailable());
        assert!(!UpstreamError::NotFound { registry: "r".into(), what: "w".into() }.is_unavailable());
        assert!(
            UpstreamError::Unreachable { registry: "r".into(), what: "w".into(), reason: "x".into() }.is_unavailable()
        );
    }
}
