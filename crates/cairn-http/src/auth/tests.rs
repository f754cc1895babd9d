use axum::http::Method;

use super::*;

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

fn access(method: Method, path: &str) -> Access {
    classify(&method, path, None)
}

const PUT_BLOB: &str = "/v1/blobs/sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[test]
fn without_auth_pulls_are_open_and_everything_else_needs_a_loopback_client() {
    let p = Policy::loopback_only();
    let anon = Principal::Anonymous;
    let push = access(Method::PUT, PUT_BLOB);
    let delete = access(Method::DELETE, "/v2/a/manifests/latest");
    let admin = access(Method::POST, "/v1/manifests/a-0123456789ab/sync");
    let pull = access(Method::GET, "/v2/a/manifests/latest");
    for client in [ip("127.0.0.1"), ip("127.3.2.1"), ip("::1"), ip("::ffff:127.0.0.1")] {
        for a in [&push, &delete, &admin, &pull] {
            assert_eq!(decide(&p, &anon, client, a), Decision::Allow, "{client:?} {a:?}");
        }
    }
    for client in [ip("10.0.0.7"), ip("192.168.1.2"), ip("::ffff:10.0.0.1"), ip("fe80::1"), None] {
        assert_eq!(decide(&p, &anon, client, &pull), Decision::Allow);
        for a in [&push, &delete, &admin] {
            let Decision::Forbidden(msg) = decide(&p, &anon, client, a) else { panic!("{client:?} {a:?} allowed") };
            assert!(msg.contains("loopback") && msg.contains("auth"), "{msg}");
        }
    }
}

fn policy(anonymous: Option<RightsSpec>) -> Policy {
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("ci-pass", 4).unwrap();
    std::fs::write(dir.path().join("htpasswd"), format!("ci:{hash}\nnobody:{hash}\n")).unwrap();
    std::fs::write(dir.path().join("tokens"), "builder 0123456789abcdef0123\n").unwrap();
    let yaml = RightsSpec::from;
    let cfg = AuthConfig {
        realm: Some("test realm".into()),
        htpasswd_file: Some(dir.path().join("htpasswd")),
        tokens_file: Some(dir.path().join("tokens")),
        anonymous,
        users: [
            (
                "ci".to_owned(),
                yaml(RightsConfig { push: vec!["team/*".into()], pull: vec!["*".into()], ..Default::default() }),
            ),
            ("builder".to_owned(), RightsSpec::kinds(&[Kind::Pull, Kind::Push, Kind::Delete, Kind::Admin])),
        ]
        .into(),
    };
    Policy::from_config(&cfg).unwrap()
}

#[test]
fn with_auth_rights_decide_and_anonymous_callers_are_asked_to_log_in() {
    let p = policy(None);
    let (anon, ci, builder) = (Principal::Anonymous, Principal::User("ci".into()), Principal::User("builder".into()));
    let nobody = Principal::User("nobody".into());
    let push_team = access(Method::PUT, "/v2/team/app/manifests/v1");
    let push_other = access(Method::PUT, "/v2/other/manifests/v1");
    let pull = access(Method::GET, "/v2/other/manifests/v1");
    let v1_push = access(Method::PUT, PUT_BLOB);
    let lo = ip("127.0.0.1");
    // Loopback gives nothing extra once auth is configured.
    assert!(matches!(decide(&p, &anon, lo, &push_team), Decision::Unauthorized(_)));
    assert_eq!(decide(&p, &anon, lo, &pull), Decision::Allow, "anonymous pull is the default");
    assert_eq!(decide(&p, &ci, None, &push_team), Decision::Allow);
    let Decision::Forbidden(msg) = decide(&p, &ci, None, &push_other) else { panic!() };
    assert!(msg.contains("\"ci\"") && msg.contains("push on repository other"), "{msg}");
    assert!(matches!(decide(&p, &ci, None, &v1_push), Decision::Forbidden(_)), "/v1 needs push on *");
    assert_eq!(decide(&p, &builder, None, &v1_push), Decision::Allow);
    assert!(matches!(decide(&p, &nobody, None, &push_team), Decision::Forbidden(_)), "a user without rights");
    assert_eq!(decide(&p, &nobody, None, &pull), Decision::Allow, "users have the anonymous rights too");
    // The /v2 ping needs credentials, whatever the anonymous rights.
    let ping = access(Method::GET, "/v2/");
    assert!(matches!(decide(&p, &anon, lo, &ping), Decision::Unauthorized(_)));
    assert_eq!(decide(&p, &nobody, None, &ping), Decision::Allow);
    // A mount from a repository the caller may not read becomes a plain upload.
    let closed = policy(Some(RightsSpec::kinds(&[])));
    let mount = |from: &str| classify(&Method::POST, "/v2/team/app/blobs/uploads/", Some(from));
    let d = "mount=sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    assert_eq!(decide(&closed, &ci, None, &mount(&format!("{d}&from=other"))), Decision::Allow);
    assert!(matches!(decide(&closed, &anon, None, &pull), Decision::Unauthorized(_)), "anonymous: []");
}

#[test]
fn a_mount_from_an_unreadable_repository_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("pw", 4).unwrap();
    std::fs::write(dir.path().join("htpasswd"), format!("dev:{hash}\n")).unwrap();
    let cfg = AuthConfig {
        htpasswd_file: Some(dir.path().join("htpasswd")),
        anonymous: Some(RightsSpec::kinds(&[])),
        users: [(
            "dev".to_owned(),
            RightsSpec::from(RightsConfig {
                push: vec!["dev/*".into()],
                pull: vec!["dev/*".into()],
                ..Default::default()
            }),
        )]
        .into(),
        ..Default::default()
    };
    let p = Policy::from_config(&cfg).unwrap();
    let dev = Principal::User("dev".into());
    let d = "mount=sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let post = |q: String| classify(&Method::POST, "/v2/dev/app/blobs/uploads/", Some(&q));
    assert_eq!(decide(&p, &dev, None, &post(format!("{d}&from=dev/base"))), Decision::Allow);
    assert_eq!(decide(&p, &dev, None, &post(format!("{d}&from=secret/x"))), Decision::AllowWithoutMount);
    assert_eq!(decide(&p, &dev, None, &post(d.to_owned())), Decision::Allow, "no from: no mount (a plain upload)");
}

#[tokio::test]
async fn credentials_are_checked_once_then_cached_and_wrong_ones_are_refused() {
    let p = policy(None);
    let basic = |user: &str, pw: &str| {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        h.insert(header::AUTHORIZATION, format!("Basic {v}").parse().unwrap());
        h
    };
    let bearer = |t: &str| {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
        h
    };
    assert_eq!(p.authenticate(&HeaderMap::new()).await, Ok(Principal::Anonymous));
    assert_eq!(p.authenticate(&basic("ci", "ci-pass")).await, Ok(Principal::User("ci".into())));
    let Mode::Configured(c) = &p.mode else { panic!() };
    assert!(c.cache.hit(&c.cache.key("ci", "ci-pass")), "a verified pair is cached");
    assert!(!c.cache.hit(&c.cache.key("ci", "ci-pas")));
    assert!(p.authenticate(&basic("ci", "wrong")).await.unwrap_err().contains("wrong user name or password"));
    assert!(p.authenticate(&basic("ghost", "ci-pass")).await.is_err());
    assert_eq!(p.authenticate(&bearer("0123456789abcdef0123")).await, Ok(Principal::User("builder".into())));
    assert_eq!(p.authenticate(&basic("builder", "0123456789abcdef0123")).await, Ok(Principal::User("builder".into())));
    assert!(p.authenticate(&bearer("0123456789abcdef0124")).await.is_err());
    assert!(p.authenticate(&basic("ci", "0123456789abcdef0123")).await.is_err(), "a token is not ci's password");
    let mut h = HeaderMap::new();
    h.insert(header::AUTHORIZATION, "Digest x".parse().unwrap());
    assert!(p.authenticate(&h).await.unwrap_err().contains("Digest"));
    h.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
    assert!(p.authenticate(&h).await.is_err());
    // Without an auth section credentials are ignored.
    assert_eq!(Policy::loopback_only().authenticate(&basic("ci", "x")).await, Ok(Principal::Anonymous));
}

#[test]
fn the_credential_cache_stays_bounded() {
    let c = CredentialCache::new();
    for i in 0..(CREDENTIAL_CACHE_SIZE + 10) {
        c.insert(c.key("u", &i.to_string()));
    }
    let n = c.seen.lock().unwrap().len();
    assert!(n <= CREDENTIAL_CACHE_SIZE, "{n}");
    assert!(c.hit(&c.key("u", &(CREDENTIAL_CACHE_SIZE + 9).to_string())), "the newest entry stays");
}

#[test]
fn config_errors_name_the_key_and_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = AuthConfig { htpasswd_file: Some(dir.path().join("nope")), ..Default::default() };
    let e = Policy::from_config(&missing).unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
    let unknown_user =
        AuthConfig { users: [("ghost".to_owned(), RightsSpec::kinds(&[]))].into(), ..Default::default() };
    let e = Policy::from_config(&unknown_user).unwrap_err().to_string();
    assert!(e.contains("users.ghost") && e.contains("htpasswd -B"), "{e}");
    let bad_realm = AuthConfig { realm: Some("a\"b".into()), ..Default::default() };
    assert!(Policy::from_config(&bad_realm).unwrap_err().to_string().contains("realm"));
    std::fs::write(dir.path().join("md5"), "bob:$apr1$Mq5u5QJm$1Vh4xTM2Mu2WOBLqtRMxl/\n").unwrap();
    let md5 = AuthConfig { htpasswd_file: Some(dir.path().join("md5")), ..Default::default() };
    let e = Policy::from_config(&md5).unwrap_err().to_string();
    assert!(e.contains("htpasswd -B") && e.contains("line 1") && e.contains("MD5"), "{e}");
}

mod authorization_header {
    use base64::Engine;
    use proptest::prelude::*;

    use super::super::{Credentials, parse_authorization};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_header_text_parses_or_is_refused_without_a_panic(text in any::<String>()) {
            let _ = parse_authorization(&text);
        }

        #[test]
        fn near_valid_headers_never_panic(scheme in "(?i)(basic|bearer|digest|)", rest in "[ -~]{0,80}") {
            let _ = parse_authorization(&format!("{scheme} {rest}"));
        }

        #[test]
        fn basic_credentials_round_trip(user in "[^:\\x00]{0,40}", password in any::<String>()) {
            let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let header = format!("Basic {b64}");
            let got = parse_authorization(&header).unwrap();
            prop_assert_eq!(got, Credentials::Basic { user: user.clone(), password: password.clone() });
        }

        #[test]
        fn bearer_tokens_round_trip(token in "[!-~]{1,80}") {
            let header = format!("Bearer {token}");
            prop_assert_eq!(parse_authorization(&header).unwrap(), Credentials::Bearer(&token));
        }
    }
}
