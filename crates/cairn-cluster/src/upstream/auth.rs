//! Registry authentication: the `WWW-Authenticate` challenge, the bearer
//! token endpoint, and a token cache keyed by scope.
//!
//! The flow (distribution's token spec): a request answered `401` carries a
//! challenge; `Bearer realm=...,service=...,scope=...` means "GET a token
//! from realm with those parameters (and basic credentials if you have
//! them), then retry with `Authorization: Bearer <token>`". `Basic` means
//! "retry with basic credentials".

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::UpstreamError;

/// Token lifetime when the token endpoint does not say (the spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Longest a token is kept, whatever the endpoint says (its number comes
/// from the network and must fit the clock).
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A token is dropped from the cache this long before it expires, so a
/// request never leaves with a token that dies on the way.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

/// Largest token answer read.
const MAX_TOKEN_ANSWER: usize = 1 << 20;

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// Get a token from `realm`.
    Bearer {
        /// The token endpoint URL.
        realm: String,
        /// The `service` parameter to pass on.
        service: Option<String>,
        /// The scope the registry asked for, if it said.
        scope: Option<String>,
    },
    /// Send basic credentials.
    Basic,
}

/// Parses one challenge header value. Parameters are `key=value` or
/// `key="quoted value"` separated by commas; quoted values may contain
/// commas (`scope="repository:a:pull,push"`). Unknown schemes are `None`.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
    let params = parse_params(rest)?;
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let get = |k: &str| params.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
    let realm = get("realm").filter(|r| !r.is_empty())?;
    Some(Challenge::Bearer { realm, service: get("service"), scope: get("scope") })
}

/// `k=v, k2="v 2"` into pairs; `None` when malformed (unterminated quote,
/// a parameter without `=`).
fn parse_params(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            if c == ',' {
                return None;
            }
            key.push(c);
            chars.next();
        }
        chars.next()?; // the '='
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key.trim().to_owned(), value.trim().to_owned()));
    }
}

/// What the token endpoint answers. Docker Hub sends both `token` and
/// `access_token`; the spec allows either.
#[derive(Debug, Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// How a registry wants to be authenticated, learnt from its challenges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Scheme {
    /// Nothing asked yet: send no credentials.
    #[default]
    Unknown,
    /// Send basic credentials with every request.
    Basic,
    /// Send a bearer token for the request's scope.
    Bearer,
}

#[derive(Debug, Default)]
struct State {
    scheme: Scheme,
    tokens: HashMap<String, (String, Instant)>,
}

/// The authentication state of one upstream registry.
pub(crate) struct Auth {
    registry: String,
    creds: Option<(String, String)>,
    state: std::sync::Mutex<State>,
    /// Serialises token fetches so a burst of requests gets one token.
    fetching: tokio::sync::Mutex<()>,
}

/// The `Authorization` to put on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    None,
    Basic(String, String),
    Bearer(String),
}

impl Credential {
    pub(crate) fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Credential::None => req,
            Credential::Basic(u, p) => req.basic_auth(u, Some(p)),
            Credential::Bearer(t) => req.bearer_auth(t),
        }
    }
}

impl Auth {
    pub(crate) fn new(registry: String, creds: Option<(String, String)>) -> Self {
        Auth { registry, creds, state: Default::default(), fetching: Default::default() }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // Plain maps: still valid if another thread panicked holding the lock.
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// The credential to send up front for `scope`, from what earlier
    /// challenges taught (no round trip).
    pub(crate) fn current(&self, scope: &str) -> Credential {
        let now = Instant::now();
        self.with(|s| match s.scheme {
            Scheme::Unknown => Credential::None,
            Scheme::Basic => match &self.creds {
                Some((u, p)) => Credential::Basic(u.clone(), p.clone()),
                None => Credential::None,
            },
            Scheme::Bearer => match s.tokens.get(scope) {
                Some((t, exp)) if *exp > now => Credential::Bearer(t.clone()),
                _ => Credential::None,
            },
        })
    }

    /// Tokens in the cache that have not expired (for tests and metrics).
    pub(crate) fn live_tokens(&self) -> usize {
        let now = Instant::now();
        self.with(|s| s.tokens.values().filter(|(_, exp)| *exp > now).count())
    }

    /// Answers a `401`: returns the credential to retry with. `sent` is
    /// what the failed request carried: a rejected password is an error, a
    /// rejected token is replaced (the caller retries only once).
    pub(crate) async fn answer(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
        scope: &str,
        challenge: Option<&str>,
        sent: &Credential,
        what: &str,
    ) -> Result<Credential, UpstreamError> {
        let err =
            |reason: String| UpstreamError::Auth { registry: self.registry.clone(), what: what.to_owned(), reason };
        let header = challenge.ok_or_else(|| err("401 without a WWW-Authenticate challenge".into()))?;
        match parse_challenge(header) {
            Some(Challenge::Basic) => {
                let Some((u, p)) = &self.creds else {
                    return Err(err("the registry wants basic credentials; set username and password".into()));
                };
                if matches!(sent, Credential::Basic(..)) {
                    return Err(err(format!("the registry rejected the credentials of user {u:?}")));
                }
                self.with(|s| s.scheme = Scheme::Basic);
                Ok(Credential::Basic(u.clone(), p.clone()))
            }
            Some(Challenge::Bearer { realm, service, scope: asked }) => {
                let _one = self.fetching.lock().await;
                // Another request may have fetched it while this one waited.
                if let c @ Credential::Bearer(_) = self.current(scope)
                    && &c != sent
                {
                    return Ok(c);
                }
                let want = asked.as_deref().unwrap_or(scope);
                let (token, lifetime) = self.fetch_token(http, timeout, &realm, service.as_deref(), want, what).await?;
                let expiry = Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN);
                self.with(|s| {
                    s.scheme = Scheme::Bearer;
                    s.tokens.retain(|_, (_, exp)| *exp > Instant::now());
                    s.tokens.insert(scope.to_owned(), (token.clone(), expiry));
                });
                Ok(Credential::Bearer(token))
            }
            None => Err(err(format!("unsupported or malformed challenge {header:?}"))),
        }
    }

    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        what: &str,
    ) -> Result<(String, Duration), UpstreamError> {
        let err =
            |reason: String| UpstreamError::Auth { registry: self.registry.clone(), what: what.to_owned(), reason };
        let mut url =
            reqwest::Url::parse(realm).map_err(|e| err(format!("token realm {realm:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err(format!("token realm {realm:?} is not http(s)")));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            // Several scopes are separate parameters.
            for s in scope.split(' ').filter(|s| !s.is_empty()) {
                q.append_pair("scope", s);
            }
            if let Some((u, _)) = &self.creds {
                q.append_pair("account", u);
            }
        }
        let mut req = http.get(url.clone());
        if let Some((u, p)) = &self.creds {
            req = req.basic_auth(u, Some(p));
        }
        let send = async {
            let resp = req.send().await.map_err(|e| UpstreamError::Unreachable {
                registry: self.registry.clone(),
                what: format!("token request to {realm}"),
                reason: super::error_chain(&e),
            })?;
            let status = resp.status();
            let body = super::read_limited(resp, MAX_TOKEN_ANSWER)
                .await
                .map_err(|reason| err(format!("token answer from {realm}: {reason}")))?;
            Ok::<_, UpstreamError>((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, send).await.map_err(|_| UpstreamError::Unreachable {
            registry: self.registry.clone(),
            what: format!("token request to {realm}"),
            reason: format!("no answer within {timeout:?}"),
        })??;
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(err(match &self.creds {
                Some((u, _)) => {
                    format!("token endpoint {realm} refused user {u:?} (HTTP {status}); check the password")
                }
                None => format!("token endpoint {realm} wants credentials (HTTP {status}); set username and password"),
            }));
        }
        if !status.is_success() {
            return Err(err(format!("token endpoint {realm} answered HTTP {status}: {}", super::snippet(&body))));
        }
        read_token_answer(&body).map_err(|why| err(format!("token endpoint {realm} {why}")))
    }
}

/// The token and how long to use it, from a token endpoint's answer.
fn read_token_answer(body: &[u8]) -> Result<(String, Duration), String> {
    let answer: TokenAnswer = serde_json::from_slice(body).map_err(|e| format!("sent malformed JSON: {e}"))?;
    let token = answer.token.or(answer.access_token).filter(|t| !t.is_empty()).ok_or("sent no token")?;
    let lifetime = answer.expires_in.map_or(DEFAULT_TOKEN_LIFETIME, |s| Duration::from_secs(s).min(MAX_TOKEN_LIFETIME));
    Ok((token, lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    #[test]
    fn bearer_challenge_with_quoted_comma_scope_is_parsed() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
    }

    #[test]
    fn bearer_challenge_accepts_unquoted_values_spaces_and_any_case() {
        let c = parse_challenge(r#"bearer  realm=http://127.0.0.1:1/t , service="s""#);
        assert_eq!(
            c,
            Some(Challenge::Bearer { realm: "http://127.0.0.1:1/t".into(), service: Some("s".into()), scope: None })
        );
    }

    #[test]
    fn basic_challenge_is_recognised() {
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Basic"), Some(Challenge::Basic));
    }

    #[test]
    fn malformed_or_unknown_challenges_are_refused() {
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
        assert_eq!(parse_challenge(r#"Bearer service="s""#), None, "no realm");
        assert_eq!(parse_challenge(r#"Bearer realm="""#), None, "empty realm");
        assert_eq!(parse_challenge(r#"Negotiate abc"#), None);
        assert_eq!(parse_challenge(""), None);
        assert_eq!(parse_challenge("Bearer realm"), None, "parameter without value");
    }

    #[test]
    fn escaped_quotes_inside_values_are_kept() {
        let c = parse_challenge(r#"Bearer realm="http://a/t",service="a\"b""#);
        assert!(matches!(c, Some(Challenge::Bearer { service: Some(s), .. }) if s == "a\"b"));
    }

    #[test]
    fn no_credential_is_sent_before_the_first_challenge() {
        let a = Auth::new("r".into(), Some(("u".into(), "p".into())));
        assert_eq!(a.current("repository:x:pull"), Credential::None);
    }

    #[tokio::test]
    async fn basic_challenge_without_credentials_says_to_configure_them() {
        let a = Auth::new("r".into(), None);
        let http = reqwest::Client::new();
        let e = a
            .answer(&http, Duration::from_secs(1), "s", Some("Basic realm=x"), &Credential::None, "GET /v2/")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("set username and password"), "{e}");
    }

    #[tokio::test]
    async fn basic_challenge_is_answered_once_then_rejected_credentials_are_an_error() {
        let a = Auth::new("r".into(), Some(("u".into(), "p".into())));
        let http = reqwest::Client::new();
        let c = a.answer(&http, Duration::from_secs(1), "s", Some("Basic"), &Credential::None, "GET").await.unwrap();
        assert_eq!(c, Credential::Basic("u".into(), "p".into()));
        assert_eq!(a.current("other scope"), c, "basic is sent up front afterwards");
        let e = a.answer(&http, Duration::from_secs(1), "s", Some("Basic"), &c, "GET").await.unwrap_err();
        assert!(e.to_string().contains("rejected the credentials"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn challenge_parser_never_panics(s in ".{0,200}") {
            let _ = parse_challenge(&s);
        }

        /// What a token endpoint sends: any bytes, or a near-valid answer.
        /// No panic, a token is never empty, and its lifetime fits the clock.
        #[test]
        fn token_answers_never_panic_and_lifetimes_fit_the_clock(
            body in proptest::prop_oneof![
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100),
                (
                    proptest::option::of("\\PC{0,8}"),
                    proptest::option::of("\\PC{0,8}"),
                    proptest::option::of(proptest::prelude::any::<i128>()),
                )
                    .prop_map(|(t, a, e)| {
                        let mut o = serde_json::json!({"token": t, "access_token": a});
                        if let Some(e) = e {
                            // Any integer JSON can write, also negative or past u64.
                            o["expires_in"] = serde_json::from_str(&e.to_string()).unwrap_or_default();
                        }
                        serde_json::to_vec(&o).unwrap()
                    }),
            ],
        ) {
            if let Ok((token, lifetime)) = read_token_answer(&body) {
                proptest::prop_assert!(!token.is_empty());
                proptest::prop_assert!(lifetime <= MAX_TOKEN_LIFETIME);
                proptest::prop_assert!(Instant::now().checked_add(lifetime).is_some());
            }
        }

        #[test]
        fn quoted_parameter_values_round_trip(realm in "[ -~]{1,40}", scope in "[ -~]{0,40}") {
            let q = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
            let h = format!("Bearer realm=\"{}\",scope=\"{}\"", q(&realm), q(&scope));
            let parsed = parse_challenge(&h);
            let realm_t = realm.trim().to_owned();
            if realm_t.is_empty() {
                proptest::prop_assert_eq!(parsed, None);
            } else {
                proptest::prop_assert_eq!(parsed, Some(Challenge::Bearer {
                    realm: realm_t,
                    service: None,
                    scope: Some(scope.trim().to_owned()),
                }));
            }
        }
    }
}
