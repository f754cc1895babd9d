//! Who may do what (DESIGN.md section 6): every request is classified as
//! pull, push, delete or admin ([`rights::classify`]); the caller is
//! authenticated from its `Authorization` header (htpasswd users with
//! bcrypt, bearer tokens); [`decide`] weighs the two against the
//! [`Policy`]; [`check`] is the middleware doing all of it in front of
//! every router.
//!
//! With no `auth` section the policy is [`Policy::loopback_only`]: pulls
//! are open, everything else is accepted from loopback clients only.

pub mod htpasswd;
pub mod rights;
pub mod tokens;

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::error::ApiError;
use crate::v2::errors::{DENIED, V2Error};
pub use htpasswd::Htpasswd;
pub use rights::{Access, Api, Kind, Rights, RightsConfig, RightsSpec, classify};
pub use tokens::Tokens;

/// How long a verified user:password pair is trusted without a new bcrypt check.
pub const CREDENTIAL_CACHE_TTL: Duration = Duration::from_secs(300);
/// Verified pairs remembered at most (the oldest half goes when full).
pub const CREDENTIAL_CACHE_SIZE: usize = 4096;
/// bcrypt checks running at once: wrong passwords cannot take every core.
const BCRYPT_SLOTS: usize = 4;
/// The realm when the config names none.
pub const DEFAULT_REALM: &str = "cairn";

/// A failure loading the `auth` section or its files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A file could not be read.
    #[error("auth: reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A bad htpasswd line.
    #[error("auth.htpasswd_file {path}, line {line}: {msg}")]
    Htpasswd {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong and what to do.
        msg: String,
    },
    /// A bad tokens line.
    #[error("auth.tokens_file {path}, line {line}: {msg}")]
    Tokens {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong and what to do.
        msg: String,
    },
    /// A bad key of the section.
    #[error("auth.{0}")]
    Config(String),
}

/// The `auth` section of the config file. See the README, "Exposing a node".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The realm clients are shown (`WWW-Authenticate: Basic realm="..."`).
    pub realm: Option<String>,
    /// An htpasswd file of bcrypt entries (`htpasswd -B`).
    pub htpasswd_file: Option<PathBuf>,
    /// A file of `NAME TOKEN` lines.
    pub tokens_file: Option<PathBuf>,
    /// Rights of callers without credentials (default `[pull]`).
    pub anonymous: Option<RightsSpec>,
    /// Rights by user (htpasswd user or token name), on top of `anonymous`.
    #[serde(default)]
    pub users: BTreeMap<String, RightsSpec>,
}

/// Who a request comes from, once its credentials are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials.
    Anonymous,
    /// An htpasswd user or a token, by name.
    User(String),
    /// A node of the cluster (a valid `X-Cairn-Peer` proof), by node id:
    /// it may pull, and otherwise has anonymous rights.
    Peer(String),
}

/// What [`decide`] says about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Go ahead as a plain upload: the caller may not read the mount's source.
    AllowWithoutMount,
    /// 401: credentials are needed (or were wrong); the message says which.
    Unauthorized(String),
    /// 403: the caller is known (or the rule is the loopback one) and may not.
    Forbidden(String),
}

/// The rules in force.
#[derive(Debug)]
pub struct Policy {
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    LoopbackOnly,
    Configured(Box<Configured>),
}

#[derive(Debug)]
struct Configured {
    realm: String,
    htpasswd: Htpasswd,
    tokens: Tokens,
    anonymous: Rights,
    users: HashMap<String, Rights>,
    cache: CredentialCache,
}

impl Policy {
    /// No `auth` section: pulls open, the rest from loopback only.
    pub fn loopback_only() -> Policy {
        Policy { mode: Mode::LoopbackOnly }
    }

    /// The policy of an `auth` section; reads its files.
    pub fn from_config(cfg: &AuthConfig) -> Result<Policy, AuthError> {
        let realm = cfg.realm.clone().unwrap_or_else(|| DEFAULT_REALM.to_owned());
        if realm.is_empty() || !realm.chars().all(|c| (c.is_ascii_graphic() || c == ' ') && c != '"' && c != '\\') {
            return Err(AuthError::Config(format!(
                "realm {realm:?} must be non-empty printable ASCII without quotes or backslashes"
            )));
        }
        let htpasswd = match &cfg.htpasswd_file {
            Some(p) => Htpasswd::load(p)?,
            None => Htpasswd::default(),
        };
        let tokens = match &cfg.tokens_file {
            Some(p) => Tokens::load(p)?,
            None => Tokens::default(),
        };
        let anonymous = match &cfg.anonymous {
            Some(spec) => spec.rights("anonymous").map_err(AuthError::Config)?,
            None => RightsSpec::kinds(&[Kind::Pull]).rights("anonymous").map_err(AuthError::Config)?,
        };
        let mut users = HashMap::new();
        for (name, spec) in &cfg.users {
            if !htpasswd.has(name) && !tokens.has(name) {
                return Err(AuthError::Config(format!(
                    "users.{name}: no user {name:?} in htpasswd_file nor token {name:?} in tokens_file; \
                     add it there (htpasswd -B FILE {name}) or fix the name"
                )));
            }
            users.insert(name.clone(), spec.rights(&format!("users.{name}")).map_err(AuthError::Config)?);
        }
        Ok(Policy {
            mode: Mode::Configured(Box::new(Configured {
                realm,
                htpasswd,
                tokens,
                anonymous,
                users,
                cache: CredentialCache::new(),
            })),
        })
    }

    /// One line for the startup log: which mode is on.
    pub fn describe(&self) -> String {
        match &self.mode {
            Mode::LoopbackOnly => "no auth section: pulls are open to anyone; push, delete and admin requests \
                                   are accepted from loopback clients only (add an auth section to allow them \
                                   from other hosts)"
                .to_owned(),
            Mode::Configured(c) => format!(
                "auth on (realm {:?}): {} htpasswd users, {} tokens, rights for {} users; anonymous callers: {}",
                c.realm,
                c.htpasswd.len(),
                c.tokens.len(),
                c.users.len(),
                describe_rights(&c.anonymous)
            ),
        }
    }

    /// Whether callers without credentials may do `kind` on `repo` (`None`: node-wide).
    pub fn anonymous_may(&self, kind: Kind, repo: Option<&str>) -> bool {
        match &self.mode {
            Mode::LoopbackOnly => kind == Kind::Pull,
            Mode::Configured(c) => c.anonymous.allows(kind, repo),
        }
    }

    /// True with an `auth` section.
    pub fn is_configured(&self) -> bool {
        matches!(self.mode, Mode::Configured(_))
    }

    /// Checks the request's credentials. `Err`: they were sent and are
    /// wrong or malformed (a 401 with the message). Without an `auth`
    /// section credentials are ignored.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, String> {
        let Mode::Configured(c) = &self.mode else { return Ok(Principal::Anonymous) };
        let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(Principal::Anonymous) };
        let text = value.to_str().map_err(|_| "the Authorization header is not ASCII text".to_owned())?;
        let (user, password) = match parse_authorization(text)? {
            Credentials::Bearer(token) => {
                return match c.tokens.find(token) {
                    Some(name) => Ok(Principal::User(name.to_owned())),
                    None => Err("the bearer token is not one of this node's tokens".to_owned()),
                };
            }
            Credentials::Basic { user, password } => (user, password),
        };
        let (user, password) = (user.as_str(), password.as_str());
        let key = c.cache.key(user, password);
        if c.cache.hit(&key) {
            return Ok(Principal::User(user.to_owned()));
        }
        let ok = if c.tokens.check(user, password) {
            true
        } else if let Some(hash) = c.htpasswd.hash(user) {
            let (hash, p) = (hash.to_owned(), password.to_owned());
            let _slot = bcrypt_slots().acquire().await.map_err(|_| "the node is shutting down".to_owned())?;
            tokio::task::spawn_blocking(move || bcrypt::verify(&p, &hash).unwrap_or(false)).await.unwrap_or(false)
        } else {
            false
        };
        if !ok {
            return Err(format!(
                "wrong user name or password for user {:?}",
                user.chars().take(64).collect::<String>()
            ));
        }
        c.cache.insert(key);
        Ok(Principal::User(user.to_owned()))
    }

    fn realm(&self) -> &str {
        match &self.mode {
            Mode::Configured(c) => &c.realm,
            Mode::LoopbackOnly => DEFAULT_REALM,
        }
    }

    /// A 401 (`unauthorized`) or 403 answer with `msg`, in the body format of `api`.
    pub fn refusal(&self, api: Api, unauthorized: bool, msg: String) -> Response {
        let realm = self.realm();
        match api {
            Api::V1 if unauthorized => ApiError::Unauthorized { realm: realm.to_owned(), msg }.into_response(),
            Api::V1 => ApiError::Forbidden(msg).into_response(),
            Api::V2 => {
                let e = if unauthorized { V2Error::unauthorized(realm, msg) } else { V2Error::new(&DENIED, msg) };
                let mut r = e.into_response();
                r.headers_mut().insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
                r
            }
        }
    }
}

fn describe_rights(r: &Rights) -> String {
    let kinds: Vec<String> = [Kind::Pull, Kind::Push, Kind::Delete, Kind::Admin]
        .into_iter()
        .filter(|k| r.allows(*k, None))
        .map(|k| k.to_string())
        .collect();
    if kinds.is_empty() {
        "no node-wide rights".to_owned()
    } else {
        format!("{} on every repository", kinds.join(", "))
    }
}

fn bcrypt_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(BCRYPT_SLOTS);
    &SLOTS
}

/// Whether `ip` is a loopback address (127.0.0.0/8, ::1, and IPv4-mapped 127.x).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// The decision for `access` by `who`, calling from `client` (`None`: the
/// server did not say, treated as not loopback).
pub fn decide(policy: &Policy, who: &Principal, client: Option<IpAddr>, access: &Access) -> Decision {
    let c = match &policy.mode {
        Mode::LoopbackOnly => {
            if access.kind == Kind::Pull || client.is_some_and(is_loopback) {
                return Decision::Allow;
            }
            return Decision::Forbidden(format!(
                "{} is only accepted from this host (a loopback client) because this node has no `auth` \
                 section; to allow it from other hosts, configure users and rights under `auth` \
                 (see the README, \"Exposing a node\")",
                access.describe()
            ));
        }
        Mode::Configured(c) => c,
    };
    if let Principal::Peer(_) = who
        && access.kind == Kind::Pull
    {
        return Decision::Allow;
    }
    let user = match who {
        Principal::Anonymous | Principal::Peer(_) => None,
        Principal::User(name) => Some(name.as_str()),
    };
    if access.ping {
        return match user {
            Some(_) => Decision::Allow,
            None => Decision::Unauthorized("this registry needs credentials; log in first".to_owned()),
        };
    }
    let rights = user.and_then(|u| c.users.get(u));
    let may =
        |kind: Kind, repo: Option<&str>| c.anonymous.allows(kind, repo) || rights.is_some_and(|r| r.allows(kind, repo));
    if !may(access.kind, access.repo.as_deref()) {
        return match user {
            None => Decision::Unauthorized(format!(
                "{} needs credentials: log in (docker/podman login, skopeo --creds) or send \
                 `Authorization: Bearer <token>`",
                access.describe()
            )),
            Some(u) => Decision::Forbidden(format!(
                "user {u:?} may not {}; the operator grants rights under auth.users.{u}",
                access.describe()
            )),
        };
    }
    match &access.mount_from {
        Some(from) if !may(Kind::Pull, Some(from)) => Decision::AllowWithoutMount,
        _ => Decision::Allow,
    }
}

/// The shared, replaceable policy every router checks requests against.
/// Starts as [`Policy::loopback_only`]; [`Auth::set`] installs another
/// (at startup, or on a reload: the credential cache goes with the old one).
#[derive(Debug)]
pub struct Auth {
    policy: RwLock<Arc<Policy>>,
    /// The cluster secret peers prove membership with, when configured.
    cluster_secret: RwLock<Option<cairn_cluster::membership::ClusterSecret>>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth::new(Policy::loopback_only())
    }
}

impl Auth {
    /// A handle on `policy`.
    pub fn new(policy: Policy) -> Auth {
        Auth { policy: RwLock::new(Arc::new(policy)), cluster_secret: RwLock::new(None) }
    }

    /// Accepts requests proving membership of the cluster of `secret` as
    /// [`Principal::Peer`].
    pub fn set_cluster_secret(&self, secret: cairn_cluster::membership::ClusterSecret) {
        match self.cluster_secret.write() {
            Ok(mut s) => *s = Some(secret),
            Err(poisoned) => *poisoned.into_inner() = Some(secret),
        }
    }

    /// The peer a request's `X-Cairn-Peer` proof names; `Ok(None)` without
    /// a header or without a secret configured; an error for a bad proof.
    fn peer(&self, req: &Request) -> Result<Option<String>, String> {
        let Some(h) = req.headers().get(cairn_cluster::membership::PEER_HEADER) else { return Ok(None) };
        let secret = match self.cluster_secret.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let Some(secret) = secret else { return Ok(None) };
        let path = req.uri().path_and_query().map_or_else(|| req.uri().path(), |pq| pq.as_str());
        let value = h.to_str().map_err(|_| "the X-Cairn-Peer header is not text".to_owned())?;
        secret.check_request(value, req.method().as_str(), path).map(Some).map_err(|e| e.to_string())
    }

    /// The policy now in force.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => Arc::clone(&p),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Installs `policy` for every request from now on.
    pub fn set(&self, policy: Policy) {
        let new = Arc::new(policy);
        match self.policy.write() {
            Ok(mut p) => *p = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}

/// The middleware: classify, authenticate, decide; refuse in the API's
/// error format, or pass the request on (a refused mount without its mount).
pub async fn check(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let policy = auth.policy();
    let access = classify(req.method(), req.uri().path(), req.uri().query());
    // Without an auth section a pull needs no look at the caller at all.
    if access.kind == Kind::Pull && !policy.is_configured() {
        return next.run(req).await;
    }
    let client = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let peer = match auth.peer(&req) {
        Ok(p) => p,
        Err(msg) => {
            tracing::warn!(uri = %req.uri(), ?client, %msg, "cluster membership proof refused");
            return policy.refusal(access.api, true, format!("{msg}; this node does not take it as a cluster peer"));
        }
    };
    let who = match peer {
        Some(node_id) => Ok(Principal::Peer(node_id)),
        None => policy.authenticate(req.headers()).await,
    };
    let who = match who {
        Ok(who) => who,
        Err(msg) => {
            tracing::debug!(uri = %req.uri(), %msg, "credentials refused");
            return policy.refusal(access.api, true, msg);
        }
    };
    match decide(&policy, &who, client, &access) {
        Decision::Allow => next.run(req).await,
        Decision::AllowWithoutMount => {
            let query = rights::without_mount(req.uri().query().unwrap_or_default());
            let pq =
                if query.is_empty() { req.uri().path().to_owned() } else { format!("{}?{query}", req.uri().path()) };
            match Uri::builder().path_and_query(pq).build() {
                Ok(uri) => {
                    *req.uri_mut() = uri;
                    next.run(req).await
                }
                Err(e) => ApiError::BadRequest(format!("rewriting the upload request: {e}")).into_response(),
            }
        }
        Decision::Unauthorized(msg) => {
            tracing::debug!(uri = %req.uri(), ?client, %msg, "request refused: no credentials");
            policy.refusal(access.api, true, msg)
        }
        Decision::Forbidden(msg) => {
            tracing::debug!(uri = %req.uri(), ?who, ?client, %msg, "request refused");
            policy.refusal(access.api, false, msg)
        }
    }
}

/// Verified user:password pairs (keyed by a salted SHA-256 of both), so a
/// client's every request does not cost a bcrypt check.
#[derive(Debug)]
struct CredentialCache {
    salt: [u64; 2],
    seen: Mutex<HashMap<[u8; 32], Instant>>,
}

impl CredentialCache {
    fn new() -> CredentialCache {
        // A per-process random salt (std's hash keys are random per instance).
        let r = || std::collections::hash_map::RandomState::new().build_hasher().finish();
        CredentialCache { salt: [r(), r()], seen: Mutex::new(HashMap::new()) }
    }

    fn key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt[0].to_le_bytes());
        h.update(self.salt[1].to_le_bytes());
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn hit(&self, key: &[u8; 32]) -> bool {
        let Ok(seen) = self.seen.lock() else { return false };
        seen.get(key).is_some_and(|at| at.elapsed() < CREDENTIAL_CACHE_TTL)
    }

    fn insert(&self, key: [u8; 32]) {
        let Ok(mut seen) = self.seen.lock() else { return };
        if seen.len() >= CREDENTIAL_CACHE_SIZE {
            seen.retain(|_, at| at.elapsed() < CREDENTIAL_CACHE_TTL);
        }
        if seen.len() >= CREDENTIAL_CACHE_SIZE {
            // Still full of fresh entries: forget the older half.
            let mut ages: Vec<Instant> = seen.values().copied().collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            seen.retain(|_, at| *at > cut);
        }
        seen.insert(key, Instant::now());
    }
}

/// What an `Authorization` header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// `Bearer <token>`.
    Bearer(&'a str),
    /// `Basic <base64 of user:password>`, decoded.
    Basic {
        /// The user (no `:`).
        user: String,
        /// The password (may contain `:`).
        password: String,
    },
}

/// Parses an `Authorization` header value; the error says what is wrong
/// with it (the 401's message). Never panics, whatever the bytes.
pub fn parse_authorization(text: &str) -> Result<Credentials<'_>, String> {
    let (scheme, rest) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credentials::Bearer(rest));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        let shown: String = scheme.chars().take(32).collect();
        return Err(format!("Authorization scheme {shown:?} is not supported; use Basic or Bearer"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| "the Basic credentials are not base64 of user:password".to_owned())?;
    let Some((user, password)) = decoded.split_once(':') else {
        return Err("the Basic credentials are not user:password".to_owned());
    };
    Ok(Credentials::Basic { user: user.to_owned(), password: password.to_owned() })
}

#[cfg(test)]
mod tests;
