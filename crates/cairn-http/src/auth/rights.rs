//! What a request does (its [`Kind`] and repository) and who holds which
//! right: the one classification of every route, and rights per repository
//! pattern.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use axum::http::Method;
use serde::Deserialize;

use crate::v2::route::{self, Target};

/// The four kinds of request (DESIGN.md section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Reads: blobs, manifests, tags, catalog, referrers, node status.
    Pull,
    /// Writes new content: blobs, manifests, tags, upload sessions.
    Push,
    /// Removes content: `/v2` manifest, tag and blob deletion.
    Delete,
    /// Changes node state otherwise (syncs) and any request no route knows.
    Admin,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Pull => "pull",
            Kind::Push => "push",
            Kind::Delete => "delete",
            Kind::Admin => "admin",
        })
    }
}

/// Which API a path belongs to: decides the error body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/v1/...` and anything outside `/v2`.
    V1,
    /// `/v2` and `/v2/...`.
    V2,
}

/// What one request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The right it needs.
    pub kind: Kind,
    /// The repository it acts on; `None`: node-wide (every `/v1` route,
    /// the `/v2` catalog), which needs the right for `*`.
    pub repo: Option<String>,
    /// The API, for the error body.
    pub api: Api,
    /// `GET /v2/`: how clients discover auth. With auth configured it needs
    /// valid credentials (401 without), whatever the anonymous rights.
    pub ping: bool,
    /// The source of a blob mount (`POST .../blobs/uploads/?mount=<digest>&from=<repo>`),
    /// decoded as the handler decodes it. A mount reads its source: it
    /// needs pull there, else it is dropped and a plain upload starts.
    pub mount_from: Option<String>,
}

impl Access {
    fn new(kind: Kind, repo: Option<String>, api: Api) -> Access {
        Access { kind, repo, api, ping: false, mount_from: None }
    }

    /// `push on repository team/app`, `admin on this node`: for messages.
    pub fn describe(&self) -> String {
        match &self.repo {
            Some(r) => format!("{} on repository {r}", self.kind),
            None => format!("{} on this node", self.kind),
        }
    }
}

/// Classifies a request by method, raw path and raw query. Every route of
/// `/v1` and `/v2` is listed; anything else is a pull when it only reads
/// (GET/HEAD, answered 404/405 by the router) and admin otherwise, so an
/// unknown mutation is never cheaper than a known one.
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> Access {
    let reads = *method == Method::GET || *method == Method::HEAD;
    if path == "/v2" || path == "/v2/" {
        let mut a = Access::new(if reads { Kind::Pull } else { Kind::Admin }, None, Api::V2);
        a.ping = reads;
        return a;
    }
    if let Some(rest) = path.strip_prefix("/v2/") {
        return classify_v2(method, rest, query, reads);
    }
    let kind = classify_v1(method, path, reads);
    Access::new(kind, None, Api::V1)
}

fn classify_v1(method: &Method, path: &str, reads: bool) -> Kind {
    let segs: Vec<&str> = path.split('/').collect();
    // ["", "v1", ...]
    let put = *method == Method::PUT;
    let post = *method == Method::POST;
    match segs.as_slice() {
        ["", "v1", "blobs", d] if !d.is_empty() && put => Kind::Push,
        ["", "v1", "manifests", rf] if !rf.is_empty() && put => Kind::Push,
        ["", "v1", "manifests", rf, "sync"] if !rf.is_empty() && post => Kind::Admin,
        // Only ever a verified pull from a member holding the blob (see v1/replicate.rs).
        ["", "v1", "replicate", d] if !d.is_empty() && post => Kind::Pull,
        // Only routing: who holds which pieces (see v1/swarm.rs).
        ["", "v1", "swarm", d, "announce"] if !d.is_empty() && post => Kind::Pull,
        _ if reads => Kind::Pull,
        _ => Kind::Admin,
    }
}

fn classify_v2(method: &Method, rest: &str, query: Option<&str>, reads: bool) -> Access {
    if rest == "_catalog" {
        return Access::new(if reads { Kind::Pull } else { Kind::Admin }, None, Api::V2);
    }
    let Ok((repo, target)) = route::parse(rest) else {
        // The router answers 400/404; a read of nothing needs nothing special.
        return Access::new(if reads { Kind::Pull } else { Kind::Admin }, None, Api::V2);
    };
    let repo = Some(repo.as_str().to_owned());
    let m = method.clone();
    let kind = match (m, &target) {
        (Method::GET | Method::HEAD, Target::Manifest(_) | Target::Blob(_) | Target::Tags | Target::Referrers(_)) => {
            Kind::Pull
        }
        (Method::PUT, Target::Manifest(_)) => Kind::Push,
        (Method::DELETE, Target::Manifest(_) | Target::Blob(_)) => Kind::Delete,
        // An upload session is part of a push, cancelling one included.
        (Method::POST, Target::Uploads) => Kind::Push,
        (Method::GET | Method::PATCH | Method::PUT | Method::DELETE, Target::Upload(_)) => Kind::Push,
        _ if reads => Kind::Pull,
        _ => Kind::Admin,
    };
    let mut a = Access::new(kind, repo, Api::V2);
    if kind == Kind::Push && target == Target::Uploads {
        // Decoded exactly as the handler decodes it (`Query<HashMap>`).
        let q: HashMap<String, String> = serde_urlencoded::from_str(query.unwrap_or_default()).unwrap_or_default();
        if q.contains_key("mount") {
            a.mount_from = q.get("from").cloned();
        }
    }
    a
}

/// The query without a blob mount (every `mount` and `from` pair, keys
/// decoded): what a mount the caller may not read from becomes.
pub fn without_mount(query: &str) -> String {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let kept: Vec<(String, String)> = pairs.into_iter().filter(|(k, _)| k != "mount" && k != "from").collect();
    serde_urlencoded::to_string(kept).unwrap_or_default()
}

/// Rights in their typed form: repository patterns per kind, and admin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RightsConfig {
    /// Repository patterns the holder may pull.
    pub pull: Vec<String>,
    /// Repository patterns the holder may push to.
    pub push: Vec<String>,
    /// Repository patterns the holder may delete in.
    pub delete: Vec<String>,
    /// Syncs and other node-wide changes.
    pub admin: bool,
}

/// Rights as the config writes them: `[pull, push]` or `pull` (those kinds
/// on every repository), or a map `{pull: [patterns], push: [...],
/// delete: [...], admin: true}`. Read loosely and checked by
/// [`RightsSpec::rights`], so a mistake gets a message naming it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum RightsSpec {
    /// Kind names, each on every repository (`*`).
    Kinds(Vec<String>),
    /// One kind name.
    Kind(String),
    /// Patterns per kind, and `admin`.
    Map(BTreeMap<String, serde_json::Value>),
}

impl From<RightsConfig> for RightsSpec {
    fn from(c: RightsConfig) -> RightsSpec {
        let mut m = BTreeMap::new();
        m.insert("pull".to_owned(), serde_json::json!(c.pull));
        m.insert("push".to_owned(), serde_json::json!(c.push));
        m.insert("delete".to_owned(), serde_json::json!(c.delete));
        m.insert("admin".to_owned(), serde_json::json!(c.admin));
        RightsSpec::Map(m)
    }
}

impl Kind {
    /// `pull`, `push`, `delete` or `admin`.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "pull" => Some(Kind::Pull),
            "push" => Some(Kind::Push),
            "delete" => Some(Kind::Delete),
            "admin" => Some(Kind::Admin),
            _ => None,
        }
    }
}

impl RightsSpec {
    /// The list form for `kinds`.
    pub fn kinds(kinds: &[Kind]) -> RightsSpec {
        RightsSpec::Kinds(kinds.iter().map(|k| k.to_string()).collect())
    }

    fn config(&self, who: &str) -> Result<RightsConfig, String> {
        let kind = |name: &str| {
            Kind::parse(name).ok_or_else(|| format!("{who}: {name:?} is not a kind; use pull, push, delete or admin"))
        };
        let from_kinds = |names: &[String]| -> Result<RightsConfig, String> {
            let kinds = names.iter().map(|n| kind(n)).collect::<Result<Vec<_>, _>>()?;
            let all = |k| if kinds.contains(&k) { vec!["*".to_owned()] } else { vec![] };
            Ok(RightsConfig {
                pull: all(Kind::Pull),
                push: all(Kind::Push),
                delete: all(Kind::Delete),
                admin: kinds.contains(&Kind::Admin),
            })
        };
        let map = match self {
            RightsSpec::Kinds(names) => return from_kinds(names),
            RightsSpec::Kind(name) => return from_kinds(std::slice::from_ref(name)),
            RightsSpec::Map(m) => m,
        };
        let mut cfg = RightsConfig::default();
        for (key, v) in map {
            let patterns = || -> Result<Vec<String>, String> {
                match v {
                    serde_json::Value::String(s) => Ok(vec![s.clone()]),
                    serde_json::Value::Array(items) => {
                        items.iter().map(|i| i.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>().ok_or_else(
                            || format!("{who}.{key}: give a list of repository patterns, e.g. [\"team/*\"]"),
                        )
                    }
                    _ => Err(format!("{who}.{key}: give a list of repository patterns, e.g. [\"team/*\"]")),
                }
            };
            match key.as_str() {
                "pull" => cfg.pull = patterns()?,
                "push" => cfg.push = patterns()?,
                "delete" => cfg.delete = patterns()?,
                "admin" => {
                    cfg.admin = v.as_bool().ok_or_else(|| format!("{who}.admin: give true or false"))?;
                }
                other => return Err(format!("{who}: unknown key {other:?}; use pull, push, delete or admin")),
            }
        }
        Ok(cfg)
    }

    /// The checked rights; `who` names the entry in errors.
    pub fn rights(&self, who: &str) -> Result<Rights, String> {
        let cfg = self.config(who)?;
        let patterns = |kind: Kind, list: &[String]| -> Result<Vec<Pattern>, String> {
            list.iter().map(|p| Pattern::parse(p).map_err(|e| format!("{who}.{kind}: {e}"))).collect()
        };
        Ok(Rights {
            pull: patterns(Kind::Pull, &cfg.pull)?,
            push: patterns(Kind::Push, &cfg.push)?,
            delete: patterns(Kind::Delete, &cfg.delete)?,
            admin: cfg.admin,
        })
    }
}

/// A repository pattern: `*` (every repository and the node-wide routes),
/// `team/*` or `team*` (every name starting with the text before `*`), or
/// an exact name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `*`.
    All,
    /// `prefix*`.
    Prefix(String),
    /// One repository.
    Exact(String),
}

impl Pattern {
    /// Parses a pattern; `*` is only allowed at the end.
    pub fn parse(s: &str) -> Result<Pattern, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(Pattern::All);
        }
        if s.is_empty() {
            return Err("an empty repository pattern; use \"*\" for every repository".into());
        }
        match s.find('*') {
            None => Ok(Pattern::Exact(s.to_owned())),
            Some(i) if i == s.len() - 1 => Ok(Pattern::Prefix(s[..i].to_owned())),
            Some(_) => Err(format!("pattern {s:?}: '*' may only end a pattern (e.g. \"team/*\")")),
        }
    }

    /// Whether `repo` (`None`: node-wide) matches.
    pub fn matches(&self, repo: Option<&str>) -> bool {
        match (self, repo) {
            (Pattern::All, _) => true,
            (_, None) => false,
            (Pattern::Prefix(p), Some(r)) => r.starts_with(p.as_str()),
            (Pattern::Exact(e), Some(r)) => r == e,
        }
    }
}

/// Checked rights of one holder (a user, a token, anonymous callers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rights {
    pull: Vec<Pattern>,
    push: Vec<Pattern>,
    delete: Vec<Pattern>,
    admin: bool,
}

impl Rights {
    /// Every right on everything.
    pub fn all() -> Rights {
        Rights { pull: vec![Pattern::All], push: vec![Pattern::All], delete: vec![Pattern::All], admin: true }
    }

    /// Whether these rights allow `kind` on `repo` (`None`: node-wide).
    pub fn allows(&self, kind: Kind, repo: Option<&str>) -> bool {
        let any = |ps: &[Pattern]| ps.iter().any(|p| p.matches(repo));
        match kind {
            Kind::Pull => any(&self.pull),
            Kind::Push => any(&self.push),
            Kind::Delete => any(&self.delete),
            Kind::Admin => self.admin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn c(method: &str, path: &str, query: Option<&str>) -> (Kind, Option<String>) {
        let a = classify(&method.parse().unwrap(), path, query);
        (a.kind, a.repo)
    }

    /// Every route of `v1::router`, `mirror::router` and `v2::router`/`dispatch`.
    #[test]
    fn every_route_is_classified_as_pull_push_delete_or_admin() {
        use Kind::*;
        let rf = "alpine-0123456789ab";
        let team = || Some("team/app".to_owned());
        let dq = format!("digest={D}");
        type Case<'a> = (&'a str, String, Option<&'a str>, Kind, Option<String>);
        let cases: Vec<Case> = vec![
            // /v1 (crates/cairn-http/src/v1/mod.rs)
            ("GET", format!("/v1/blobs/{D}"), None, Pull, None),
            ("HEAD", format!("/v1/blobs/{D}"), None, Pull, None),
            ("PUT", format!("/v1/blobs/{D}"), None, Push, None),
            ("GET", "/v1/manifests".into(), None, Pull, None),
            ("GET", format!("/v1/manifests/{rf}"), None, Pull, None),
            ("PUT", format!("/v1/manifests/{rf}"), None, Push, None),
            ("POST", format!("/v1/manifests/{rf}/sync"), Some("peer=a:1"), Admin, None),
            ("GET", "/v1/health".into(), None, Pull, None),
            ("GET", "/v1/info".into(), None, Pull, None),
            ("GET", "/v1/peers".into(), None, Pull, None),
            // /metrics (crates/cairn-http/src/metrics.rs): the same rule as /v1/peers
            ("GET", "/metrics".into(), None, Pull, None),
            ("GET", "/v1/cluster/manifests".into(), None, Pull, None),
            ("GET", "/v1/cluster/stats".into(), None, Pull, None),
            ("GET", format!("/v1/fetch/{D}"), None, Pull, None),
            ("POST", format!("/v1/replicate/{D}"), Some("from=a&pusher=a"), Pull, None),
            // the mirror's /v1 route (crates/cairn-http/src/mirror.rs)
            ("GET", "/v1/oci/tag".into(), Some("repo=a&tag=b"), Pull, None),
            // /v2 (crates/cairn-http/src/v2/mod.rs and route.rs)
            ("GET", "/v2/".into(), None, Pull, None),
            ("GET", "/v2".into(), None, Pull, None),
            ("GET", "/v2/_catalog".into(), Some("n=10"), Pull, None),
            ("GET", "/v2/team/app/manifests/latest".into(), None, Pull, team()),
            ("HEAD", format!("/v2/team/app/manifests/{D}"), None, Pull, team()),
            ("PUT", "/v2/team/app/manifests/latest".into(), None, Push, team()),
            ("DELETE", "/v2/team/app/manifests/latest".into(), None, Delete, team()),
            ("DELETE", format!("/v2/team/app/manifests/{D}"), None, Delete, team()),
            ("GET", format!("/v2/team/app/blobs/{D}"), None, Pull, team()),
            ("HEAD", format!("/v2/team/app/blobs/{D}"), None, Pull, team()),
            ("DELETE", format!("/v2/team/app/blobs/{D}"), None, Delete, team()),
            ("POST", "/v2/team/app/blobs/uploads/".into(), None, Push, team()),
            ("POST", "/v2/team/app/blobs/uploads".into(), Some(dq.as_str()), Push, team()),
            ("POST", "/v2/team/app/blobs/uploads/".into(), Some("mount=x&from=other"), Push, team()),
            ("GET", "/v2/team/app/blobs/uploads/abc".into(), None, Push, team()),
            ("PATCH", "/v2/team/app/blobs/uploads/abc".into(), None, Push, team()),
            ("PUT", "/v2/team/app/blobs/uploads/abc".into(), Some(dq.as_str()), Push, team()),
            ("DELETE", "/v2/team/app/blobs/uploads/abc".into(), None, Push, team()),
            ("GET", "/v2/team/app/tags/list".into(), Some("n=1&last=a"), Pull, team()),
            ("GET", format!("/v2/team/app/referrers/{D}"), None, Pull, team()),
            // names that hold endpoint words are split from the end, as the router does
            ("PUT", "/v2/x/manifests/y/manifests/v1".into(), None, Push, Some("x/manifests/y".into())),
            // anything else: reads are pulls (the router answers 404/405), the rest admin
            ("GET", "/nowhere".into(), None, Pull, None),
            ("DELETE", format!("/v1/blobs/{D}"), None, Admin, None),
            ("POST", "/v1/health".into(), None, Admin, None),
            ("PUT", "/v1/blobs/".into(), None, Admin, None),
            ("POST", "/v2/team/app/tags/list".into(), None, Admin, team()),
            ("PUT", "/v2/UPPER/manifests/x".into(), None, Admin, None),
            ("DELETE", "/v2/_catalog".into(), None, Admin, None),
            ("POST", "/v2/".into(), None, Admin, None),
            ("OPTIONS", "/v2/team/app/manifests/x".into(), None, Admin, team()),
        ];
        for (m, p, q, kind, repo) in cases {
            assert_eq!(c(m, &p, q), (kind, repo), "{m} {p}?{q:?}");
        }
    }

    #[test]
    fn the_v2_ping_and_mount_sources_are_marked() {
        let a = classify(&Method::GET, "/v2/", None);
        assert!(a.ping && a.api == Api::V2);
        assert!(!classify(&Method::GET, "/v2/_catalog", None).ping);
        let a = classify(&Method::POST, "/v2/a/blobs/uploads/", Some(&format!("mount={D}&from=lib%2Fb")));
        assert_eq!(a.mount_from.as_deref(), Some("lib/b"), "from is decoded as the handler does");
        let a = classify(&Method::POST, "/v2/a/blobs/uploads/", Some(&format!("m%6Funt={D}&from=c")));
        assert_eq!(a.mount_from.as_deref(), Some("c"), "so is the mount key");
        assert_eq!(classify(&Method::POST, "/v2/a/blobs/uploads/", Some("from=lib/b")).mount_from, None);
        assert_eq!(without_mount(&format!("mount={D}&from=lib/b&x=1&m%6Funt=2")), "x=1");
        assert_eq!(classify(&Method::GET, "/v1/info", None).api, Api::V1);
    }

    #[test]
    fn patterns_match_all_prefixes_or_exact_names_and_only_star_is_node_wide() {
        let p = |s| Pattern::parse(s).unwrap();
        assert!(p("*").matches(Some("a/b")) && p("*").matches(None));
        assert!(p("team/*").matches(Some("team/app")) && p("team/*").matches(Some("team/a/b")));
        assert!(!p("team/*").matches(Some("teamx/app")) && !p("team/*").matches(None));
        assert!(p("team*").matches(Some("teamx/app")));
        assert!(p("lib/alpine").matches(Some("lib/alpine")) && !p("lib/alpine").matches(Some("lib/alpine2")));
        assert!(Pattern::parse("a/*/b").unwrap_err().contains("may only end"));
        assert!(Pattern::parse("").is_err());
    }

    #[test]
    fn rights_lists_mean_every_repository_and_maps_are_per_pattern() {
        let r = RightsSpec::kinds(&[Kind::Pull]).rights("anonymous").unwrap();
        assert!(r.allows(Kind::Pull, Some("x")) && r.allows(Kind::Pull, None));
        assert!(!r.allows(Kind::Push, Some("x")) && !r.allows(Kind::Admin, None));
        let ci = RightsSpec::from(RightsConfig {
            push: vec!["team/*".into()],
            pull: vec!["*".into()],
            ..Default::default()
        })
        .rights("ci")
        .unwrap();
        assert!(ci.allows(Kind::Push, Some("team/a")) && !ci.allows(Kind::Push, Some("other")));
        assert!(!ci.allows(Kind::Push, None), "a /v1 push needs push on \"*\"");
        let e = RightsSpec::from(RightsConfig { push: vec!["a*b".into()], ..Default::default() })
            .rights("users.ci")
            .unwrap_err();
        assert!(e.contains("users.ci.push"), "{e}");
        let e = RightsSpec::Kinds(vec!["pul".into()]).rights("anonymous").unwrap_err();
        assert!(e.contains("anonymous") && e.contains("\"pul\" is not a kind"), "{e}");
        let map = |v: serde_json::Value| RightsSpec::Map(serde_json::from_value(v).unwrap());
        assert!(map(serde_json::json!({"pull": "*"})).rights("u").unwrap().allows(Kind::Pull, Some("x")));
        let e = map(serde_json::json!({"pul": ["*"]})).rights("users.ci").unwrap_err();
        assert!(e.contains("users.ci") && e.contains("unknown key \"pul\""), "{e}");
        let e = map(serde_json::json!({"admin": "yes"})).rights("users.ci").unwrap_err();
        assert!(e.contains("users.ci.admin"), "{e}");
        let e = map(serde_json::json!({"push": [1]})).rights("users.ci").unwrap_err();
        assert!(e.contains("users.ci.push"), "{e}");
    }
}
