//! The typed `/v1` client: what peers and the CLI use to call a node.
//! Every answer is shape-checked; a malformed one is an error naming the
//! peer, never a crash.

use cairn_cluster::membership::{ClusterSecret, NONCE_HEADER, NONCE_PROOF_HEADER, PEER_HEADER};
use std::time::Duration;

use bytes::Bytes;
use cairn_cluster::mirror::TagTarget;
use cairn_cluster::peer::{BoxFut, ReplicaAnswer};
use cairn_cluster::{
    ClusterError, ClusterStats, ManifestEntry, PeerApi, PeerHealth, PeerStatus, RemoteBlob, Result, SyncReport,
};
use cairn_store::refs::MAX_MANIFEST_BYTES;
use cairn_store::{Digest, PutOutcome, RefFile};
use futures_util::TryStreamExt;
use serde::de::DeserializeOwned;

use crate::v1::wire::{FORWARDED_HEADER, NodeInfo, PutBlobAnswer, ReplicateAnswer, TagAnswer};

/// Largest JSON answer read from a peer (manifest lists can be long).
const MAX_JSON_BYTES: u64 = 64 << 20;

/// Largest `/v1/manifests` answer read from a peer: about 60,000 entries.
/// A longer one is refused as soon as it passes this size (or declares
/// more), so a caller of `/v1/cluster/manifests` costs at most this much
/// per peer.
pub const MAX_LISTING_BYTES: u64 = 16 << 20;

/// A `/v1` client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    timeout: Duration,
    /// Whether error bodies are quoted in errors: yes for an operator's
    /// CLI talking to its node, never for a node talking to peers (their
    /// pages would be relayed to this node's callers).
    quote_errors: bool,
    /// This node's id and the cluster secret: every request carries a
    /// membership proof, and health answers must prove theirs.
    membership: Option<(String, ClusterSecret)>,
    /// The scheme of a peer given as bare `host:port`: `https` when the
    /// node has `tls` (a cluster is all TLS or all plain HTTP).
    scheme: &'static str,
}

/// `http://host:port` for an address given as `host:port`, `:port` or a URL.
pub fn base_url(addr: &str) -> String {
    base_url_with(addr, "http")
}

/// [`base_url`] with `scheme` for an address without one.
pub fn base_url_with(addr: &str, scheme: &str) -> String {
    let a = addr.trim_end_matches('/');
    if a.starts_with("http://") || a.starts_with("https://") {
        a.to_owned()
    } else if let Some(port) = a.strip_prefix(':') {
        format!("{scheme}://127.0.0.1:{port}")
    } else {
        format!("{scheme}://{a}")
    }
}

impl Client {
    /// A client whose connects and JSON calls time out after `timeout`
    /// (blob bodies have no overall limit; the cluster watches for stalls).
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Client { http, timeout, quote_errors: true, membership: None, scheme: "http" }
    }

    /// A node's client of its peers: like [`Client::new`], but a peer's
    /// error answer becomes its status, size and kind; the body itself is
    /// only logged here.
    pub fn for_peers(timeout: Duration) -> Self {
        Client { quote_errors: false, ..Client::new(timeout) }
    }

    /// This client proves membership of the cluster of `secret` as node
    /// `node_id` on every request, and checks the proof of health answers.
    pub fn with_membership(self, node_id: &str, secret: ClusterSecret) -> Self {
        Client { membership: Some((node_id.to_owned(), secret)), ..self }
    }

    /// Sends `req`, with the membership proof when a secret is set.
    async fn execute(&self, req: reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
        let Some((node_id, secret)) = &self.membership else { return req.send().await };
        let (client, req) = req.build_split();
        let mut req = req?;
        let url = req.url();
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let proof = secret.request_proof(node_id, req.method().as_str(), &path);
        if let Ok(v) = reqwest::header::HeaderValue::from_str(&proof) {
            req.headers_mut().insert(PEER_HEADER, v);
        }
        client.execute(req).await
    }

    /// [`Client::for_peers`] over TLS: bare `host:port` peers are called
    /// with `https://`, verified and answered with `tls` (see
    /// [`crate::tls::ServerTls::peer_client_config`]).
    pub fn for_peers_tls(timeout: Duration, tls: rustls::ClientConfig) -> std::result::Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| format!("building the TLS peer client: {e}"))?;
        Ok(Client { http, timeout, quote_errors: false, membership: None, scheme: "https" })
    }

    fn transport(&self, peer: &str, what: &str, e: reqwest::Error) -> ClusterError {
        if e.is_timeout() {
            ClusterError::PeerTimeout { peer: peer.to_owned(), what: what.to_owned(), after: self.timeout }
        } else if e.is_connect() || e.is_request() {
            let mut reason = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                reason = format!("{reason}: {s}");
                src = s.source();
            }
            ClusterError::PeerUnreachable { peer: peer.to_owned(), reason }
        } else {
            ClusterError::PeerBadAnswer { peer: peer.to_owned(), what: what.to_owned(), reason: e.to_string() }
        }
    }

    async fn send(&self, peer: &str, what: &str, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = self.execute(req).await.map_err(|e| self.transport(peer, what, e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let kind = body_kind(resp.headers());
        let declared = resp.content_length();
        let body = read_limited(resp, 4096).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        let error_field = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned));
        let body = if self.quote_errors {
            error_field.unwrap_or_else(|| text.chars().take(300).collect())
        } else {
            let excerpt: String = error_field.unwrap_or_else(|| text.chars().take(300).collect());
            // Answers that are part of normal operation: a HEAD of a blob
            // the peer lacks, a swarm's flow control (busy, declined, not
            // the owner, piece not held).
            let routine = (status == 404 && what.starts_with("HEAD "))
                || (what.contains(" /v1/swarm/") && matches!(status, 404 | 409 | 429 | 503));
            if routine {
                tracing::debug!(peer, what, status, body = %excerpt, "peer answered with an error");
            } else {
                tracing::warn!(peer, what, status, body = %excerpt, "peer answered with an error");
            }
            let size = declared.map_or_else(|| format!("{}+", body.len()), |n| n.to_string());
            format!("a {size}-byte {kind} answer (not shown; it is in this node's log)")
        };
        Err(ClusterError::PeerStatus { peer: peer.to_owned(), what: what.to_owned(), status, body })
    }

    /// A malformed JSON answer: quoted for the CLI, only located for peers
    /// (serde's messages can quote the answer's strings).
    fn bad_json(&self, peer: &str, what: &str, e: &serde_json::Error) -> ClusterError {
        let reason = if self.quote_errors {
            format!("not the expected JSON: {e}")
        } else {
            tracing::warn!(peer, what, error = %e, "peer sent malformed JSON");
            format!("not the expected JSON ({:?} error at line {} column {})", e.classify(), e.line(), e.column())
        };
        ClusterError::PeerBadAnswer { peer: peer.to_owned(), what: what.to_owned(), reason }
    }

    async fn body(&self, peer: &str, what: &str, resp: reqwest::Response, limit: u64) -> Result<Vec<u8>> {
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(ClusterError::PeerBadAnswer {
                peer: peer.to_owned(),
                what: what.to_owned(),
                reason: format!("answer declares more than {limit} bytes"),
            });
        }
        match read_limited(resp, limit).await {
            Ok(b) => Ok(b),
            Err(LimitError::Over) => Err(ClusterError::PeerBadAnswer {
                peer: peer.to_owned(),
                what: what.to_owned(),
                reason: format!("answer is over {limit} bytes"),
            }),
            Err(LimitError::Http(e)) => Err(self.transport(peer, what, e)),
        }
    }

    async fn json<T: DeserializeOwned>(&self, peer: &str, what: &str, req: reqwest::RequestBuilder) -> Result<T> {
        self.json_within(peer, what, req, MAX_JSON_BYTES).await
    }

    async fn json_within<T: DeserializeOwned>(
        &self,
        peer: &str,
        what: &str,
        req: reqwest::RequestBuilder,
        limit: u64,
    ) -> Result<T> {
        let resp = self.send(peer, what, req.timeout(self.timeout)).await?;
        let bytes = self.body(peer, what, resp, limit).await?;
        serde_json::from_slice(&bytes).map_err(|e| self.bad_json(peer, what, &e))
    }

    fn url(&self, peer: &str, path: &str) -> String {
        format!("{}{path}", base_url_with(peer, self.scheme))
    }

    /// `GET /v1/health`.
    pub async fn health(&self, peer: &str) -> Result<PeerHealth> {
        let what = "GET /v1/health";
        let nonce = self.membership.as_ref().map(|_| cairn_cluster::membership::nonce());
        let mut req = self.http.get(self.url(peer, "/v1/health")).timeout(self.timeout);
        if let Some(n) = &nonce {
            req = req.header(NONCE_HEADER, n);
        }
        let resp = self.send(peer, what, req).await?;
        let proof = resp.headers().get(NONCE_PROOF_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = self.body(peer, what, resp, MAX_JSON_BYTES).await?;
        let mut h: PeerHealth = serde_json::from_slice(&bytes).map_err(|e| self.bad_json(peer, what, &e))?;
        if let (Some((_, secret)), Some(n)) = (&self.membership, &nonce) {
            h.proven = Some(proof.is_some_and(|p| secret.check_nonce_proof(n, &h.node_id, &p)));
        }
        if h.status != "ok" {
            return Err(ClusterError::PeerBadAnswer {
                peer: peer.to_owned(),
                what: "GET /v1/health".into(),
                reason: format!("status is {:?}, not \"ok\"", h.status),
            });
        }
        Ok(h)
    }

    /// `GET /v1/info`.
    pub async fn info(&self, peer: &str) -> Result<NodeInfo> {
        self.json(peer, "GET /v1/info", self.http.get(self.url(peer, "/v1/info"))).await
    }

    /// `HEAD /v1/blobs/{digest}`: the size, or `None` when absent.
    pub async fn head_blob(&self, peer: &str, d: &Digest) -> Result<Option<u64>> {
        let what = format!("HEAD /v1/blobs/{d}");
        let req = self.http.head(self.url(peer, &format!("/v1/blobs/{d}"))).timeout(self.timeout);
        match self.send(peer, &what, req).await {
            Ok(resp) => match resp.headers().get(reqwest::header::CONTENT_LENGTH) {
                Some(v) => v.to_str().ok().and_then(|s| s.parse().ok()).map(Some).ok_or_else(|| {
                    ClusterError::PeerBadAnswer { peer: peer.to_owned(), what, reason: "bad Content-Length".into() }
                }),
                None => {
                    Err(ClusterError::PeerBadAnswer { peer: peer.to_owned(), what, reason: "no Content-Length".into() })
                }
            },
            Err(ClusterError::PeerStatus { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn stream(&self, peer: &str, what: String, url: String) -> Result<RemoteBlob> {
        self.stream_req(peer, what, self.http.get(url)).await
    }

    async fn stream_req(&self, peer: &str, what: String, req: reqwest::RequestBuilder) -> Result<RemoteBlob> {
        let resp = self.send(peer, &what, req).await?;
        let size = resp.content_length();
        let peer = peer.to_owned();
        let body = resp.bytes_stream().map_err(move |e| ClusterError::PeerBadAnswer {
            peer: peer.clone(),
            what: what.clone(),
            reason: format!("body cut: {e}"),
        });
        Ok(RemoteBlob { size, body: Box::pin(body) })
    }

    /// `GET /v1/blobs/{digest}` (only the node's local store).
    pub async fn get_blob(&self, peer: &str, d: &Digest) -> Result<RemoteBlob> {
        self.stream(peer, format!("GET /v1/blobs/{d}"), self.url(peer, &format!("/v1/blobs/{d}"))).await
    }

    /// `GET /v1/fetch/{digest}`: through the node's pull-through pipeline.
    pub async fn fetch(&self, node: &str, d: &Digest) -> Result<RemoteBlob> {
        self.stream(node, format!("GET /v1/fetch/{d}"), self.url(node, &format!("/v1/fetch/{d}"))).await
    }

    /// `GET /v1/fetch/{digest}` as a peer that elected `node` owner of the
    /// digest: the node fetches it itself, never forwarding again.
    pub async fn fetch_via(&self, node: &str, d: &Digest) -> Result<RemoteBlob> {
        let req = self.http.get(self.url(node, &format!("/v1/fetch/{d}"))).header(FORWARDED_HEADER, "1");
        self.stream_req(node, format!("GET /v1/fetch/{d} (forwarded)"), req).await
    }

    /// `POST /v1/replicate/{digest}?from=FROM&pusher=PUSHER`: asks `node` to
    /// hold a copy of a blob pushed to `pusher`, pulling it from `from`.
    pub async fn replicate(&self, node: &str, d: &Digest, from: &str, pusher: &str) -> Result<ReplicaAnswer> {
        let what = format!("POST /v1/replicate/{d}");
        let req =
            self.http.post(self.url(node, &format!("/v1/replicate/{d}"))).query(&[("from", from), ("pusher", pusher)]);
        let a: ReplicateAnswer = self.json(node, &what, req).await?;
        Ok(a.status)
    }

    /// `POST /v1/swarm/{digest}/announce?node=NODE_ID`: the tracker's raw
    /// answer, at most [`cairn_cluster::swarm::MAX_ANSWER_BYTES`].
    pub async fn swarm_announce(&self, node: &str, d: &Digest, node_id: &str, body: Vec<u8>) -> Result<Vec<u8>> {
        let what = format!("POST /v1/swarm/{d}/announce");
        let req = self
            .http
            .post(self.url(node, &format!("/v1/swarm/{d}/announce")))
            .query(&[("node", node_id)])
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(self.timeout);
        let resp = self.send(node, &what, req).await?;
        self.body(node, &what, resp, cairn_cluster::swarm::MAX_ANSWER_BYTES as u64).await
    }

    /// `GET /v1/swarm/{digest}/piece/{index}`: a piece's bytes, unverified,
    /// at most `piece_size`.
    pub async fn swarm_piece(
        &self,
        node: &str,
        d: &Digest,
        index: u32,
        blob_size: u64,
        piece_size: u64,
    ) -> Result<cairn_cluster::peer::SwarmPiece> {
        let what = format!("GET /v1/swarm/{d}/piece/{index}");
        let (b, p) = (blob_size.to_string(), piece_size.to_string());
        let req = self
            .http
            .get(self.url(node, &format!("/v1/swarm/{d}/piece/{index}")))
            .query(&[("blob_size", b.as_str()), ("piece_size", p.as_str())]);
        let resp = self.send(node, &what, req).await?;
        let have = resp
            .headers()
            .get(cairn_cluster::peer::SWARM_HAVE_HEADER)
            .and_then(|v| v.to_str().ok())
            // A bitfield of the most pieces, in hex: anything longer is not one.
            .filter(|v| v.len() <= cairn_cluster::swarm::MAX_PIECES as usize / 4)
            .map(str::to_owned);
        let bytes = Bytes::from(self.body(node, &what, resp, piece_size).await?);
        Ok(cairn_cluster::peer::SwarmPiece { bytes, have })
    }
    /// `GET /v1/manifests`, at most [`MAX_LISTING_BYTES`].
    pub async fn manifests(&self, peer: &str) -> Result<Vec<ManifestEntry>> {
        let req = self.http.get(self.url(peer, "/v1/manifests"));
        self.json_within(peer, "GET /v1/manifests", req, MAX_LISTING_BYTES).await
    }

    /// `GET /v1/manifests/{ref_file}`: the raw bytes.
    pub async fn manifest(&self, peer: &str, rf: &RefFile) -> Result<Vec<u8>> {
        let what = format!("GET /v1/manifests/{rf}");
        let req = self.http.get(self.url(peer, &format!("/v1/manifests/{rf}"))).timeout(self.timeout);
        let resp = self.send(peer, &what, req).await?;
        self.body(peer, &what, resp, MAX_MANIFEST_BYTES).await
    }

    /// `GET /v1/peers`.
    pub async fn peers(&self, node: &str) -> Result<Vec<PeerStatus>> {
        self.json(node, "GET /v1/peers", self.http.get(self.url(node, "/v1/peers"))).await
    }

    /// `GET /v1/cluster/manifests`.
    pub async fn cluster_manifests(&self, node: &str) -> Result<Vec<ManifestEntry>> {
        let url = self.url(node, "/v1/cluster/manifests");
        self.json(node, "GET /v1/cluster/manifests", self.http.get(url)).await
    }

    /// `GET /v1/cluster/stats`.
    pub async fn cluster_stats(&self, node: &str) -> Result<ClusterStats> {
        self.json(node, "GET /v1/cluster/stats", self.http.get(self.url(node, "/v1/cluster/stats"))).await
    }

    /// `POST /v1/manifests/{ref_file}/sync?peer=PEER` on `node`. No
    /// timeout: a sync of a large manifest takes as long as it takes.
    pub async fn sync(&self, node: &str, peer: &str, rf: &RefFile) -> Result<SyncReport> {
        let what = format!("POST /v1/manifests/{rf}/sync");
        let req = self.http.post(self.url(node, &format!("/v1/manifests/{rf}/sync"))).query(&[("peer", peer)]);
        let resp = self.send(node, &what, req).await?;
        let bytes = self.body(node, &what, resp, MAX_JSON_BYTES).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClusterError::PeerBadAnswer {
            peer: node.to_owned(),
            what,
            reason: format!("not the expected JSON: {e}"),
        })
    }

    /// `PUT /v1/blobs/{digest}` with a body.
    pub async fn put_blob(&self, node: &str, d: &Digest, body: impl Into<reqwest::Body>) -> Result<PutOutcome> {
        let what = format!("PUT /v1/blobs/{d}");
        let req = self.http.put(self.url(node, &format!("/v1/blobs/{d}"))).body(body);
        let resp = self.send(node, &what, req).await?;
        let bytes = self.body(node, &what, resp, MAX_JSON_BYTES).await?;
        let a: PutBlobAnswer = serde_json::from_slice(&bytes).map_err(|e| ClusterError::PeerBadAnswer {
            peer: node.to_owned(),
            what,
            reason: format!("not the expected JSON: {e}"),
        })?;
        Ok(PutOutcome { digest: a.digest, size: a.size, existed: a.existed })
    }

    /// `PUT /v1/manifests/{ref_file}`.
    pub async fn put_manifest(&self, node: &str, rf: &RefFile, json: Bytes) -> Result<ManifestEntry> {
        let req = self.http.put(self.url(node, &format!("/v1/manifests/{rf}"))).body(json);
        self.json(node, &format!("PUT /v1/manifests/{rf}"), req).await
    }

    /// `GET /v1/oci/tag?repo=&tag=`: what the peer's registry has for a
    /// tag; `None` on 404 (also what a peer without the endpoint answers).
    pub async fn resolve_tag(&self, peer: &str, repo: &str, tag: &str) -> Result<Option<TagTarget>> {
        let what = format!("GET /v1/oci/tag {repo}:{tag}");
        let req = self.http.get(self.url(peer, "/v1/oci/tag")).query(&[("repo", repo), ("tag", tag)]);
        let a: TagAnswer = match self.json(peer, &what, req).await {
            Ok(a) => a,
            Err(ClusterError::PeerStatus { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = |reason: String| ClusterError::PeerBadAnswer { peer: peer.to_owned(), what: what.clone(), reason };
        if a.repo != repo || a.tag != tag {
            return Err(bad(format!("answered for {}:{}", a.repo, a.tag)));
        }
        if !a.digest.starts_with("sha256:") {
            return Err(bad(format!("digest {:?} is not sha256:<hex>", a.digest)));
        }
        let digest = Digest::parse(&a.digest).map_err(|e| bad(format!("digest {:?}: {e}", a.digest)))?;
        Ok(Some(TagTarget { digest, media_type: a.media_type, source: format!("peer {peer}") }))
    }
}

/// What kind of body an error answer has, from its `Content-Type`.
fn body_kind(h: &reqwest::header::HeaderMap) -> &'static str {
    let ct = h.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.contains("json") {
        "JSON"
    } else if ct.contains("html") {
        "HTML"
    } else if ct.starts_with("text/") {
        "text"
    } else {
        "untyped"
    }
}

enum LimitError {
    Over,
    Http(reqwest::Error),
}

async fn read_limited(mut resp: reqwest::Response, limit: u64) -> std::result::Result<Vec<u8>, LimitError> {
    // Sized once from the declared length (within the limit): growing by
    // doubling cost a swarm asker more CPU in page faults than hashing.
    let declared = resp.content_length().unwrap_or(0).min(limit);
    let mut out = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    while let Some(c) = resp.chunk().await.map_err(LimitError::Http)? {
        if (out.len() + c.len()) as u64 > limit {
            return Err(LimitError::Over);
        }
        out.extend_from_slice(&c);
        if (out.len() as u64) < declared {
            cairn_cluster::net::gather_after(c.len()).await;
        }
    }
    Ok(out)
}

impl PeerApi for Client {
    fn health<'a>(&'a self, peer: &'a str) -> BoxFut<'a, PeerHealth> {
        Box::pin(Client::health(self, peer))
    }
    fn head_blob<'a>(&'a self, peer: &'a str, digest: &'a Digest) -> BoxFut<'a, Option<u64>> {
        Box::pin(Client::head_blob(self, peer, digest))
    }
    fn get_blob<'a>(&'a self, peer: &'a str, digest: &'a Digest) -> BoxFut<'a, RemoteBlob> {
        Box::pin(Client::get_blob(self, peer, digest))
    }
    fn list_manifests<'a>(&'a self, peer: &'a str) -> BoxFut<'a, Vec<ManifestEntry>> {
        Box::pin(Client::manifests(self, peer))
    }
    fn get_manifest<'a>(&'a self, peer: &'a str, ref_file: &'a RefFile) -> BoxFut<'a, Vec<u8>> {
        Box::pin(Client::manifest(self, peer, ref_file))
    }
    fn fetch_via<'a>(&'a self, peer: &'a str, digest: &'a Digest) -> BoxFut<'a, RemoteBlob> {
        Box::pin(Client::fetch_via(self, peer, digest))
    }
    fn resolve_tag<'a>(&'a self, peer: &'a str, repo: &'a str, tag: &'a str) -> BoxFut<'a, Option<TagTarget>> {
        Box::pin(Client::resolve_tag(self, peer, repo, tag))
    }
    fn replicate<'a>(
        &'a self,
        peer: &'a str,
        digest: &'a Digest,
        from: &'a str,
        pusher: &'a str,
    ) -> BoxFut<'a, ReplicaAnswer> {
        Box::pin(Client::replicate(self, peer, digest, from, pusher))
    }
    fn swarm_announce<'a>(
        &'a self,
        peer: &'a str,
        digest: &'a Digest,
        node_id: &'a str,
        body: Vec<u8>,
    ) -> BoxFut<'a, Vec<u8>> {
        Box::pin(Client::swarm_announce(self, peer, digest, node_id, body))
    }
    fn swarm_piece<'a>(
        &'a self,
        peer: &'a str,
        digest: &'a Digest,
        index: u32,
        blob_size: u64,
        piece_size: u64,
    ) -> BoxFut<'a, cairn_cluster::peer::SwarmPiece> {
        Box::pin(Client::swarm_piece(self, peer, digest, index, blob_size, piece_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_http_urls() {
        assert_eq!(base_url("node-a:7420"), "http://node-a:7420");
        assert_eq!(base_url(":7420"), "http://127.0.0.1:7420");
        assert_eq!(base_url("https://x.example/"), "https://x.example");
    }
}
