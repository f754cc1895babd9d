//! Splitting a `/v2/<name>/...` path: names hold `/`, so the route is read
//! from the end of the path, and the name is checked before any handler runs.

use cairn_store::oci::RepoName;

use crate::v2::errors::{NAME_INVALID, V2Error};

/// What a `/v2/<name>/...` path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/v2/<name>/manifests/<reference>`.
    Manifest(String),
    /// `/v2/<name>/blobs/<digest>`.
    Blob(String),
    /// `/v2/<name>/blobs/uploads/`.
    Uploads,
    /// `/v2/<name>/blobs/uploads/<id>`.
    Upload(String),
    /// `/v2/<name>/tags/list`.
    Tags,
    /// `/v2/<name>/referrers/<digest>`.
    Referrers(String),
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the part of the path after `/v2/`.
pub fn parse(rest: &str) -> Result<(RepoName, Target), V2Error> {
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let at = |i: usize| if i < n { segs[n - 1 - i] } else { "" };
    let (name_len, target) = if n >= 3 && at(1) == "blobs" && at(0) == "uploads" {
        (n - 2, Target::Uploads)
    } else if n >= 4 && at(2) == "blobs" && at(1) == "uploads" {
        (n - 3, if at(0).is_empty() { Target::Uploads } else { Target::Upload(decode(at(0))) })
    } else if n >= 3 && at(1) == "manifests" {
        (n - 2, Target::Manifest(decode(at(0))))
    } else if n >= 3 && at(1) == "blobs" {
        (n - 2, Target::Blob(decode(at(0))))
    } else if n >= 3 && at(1) == "tags" && at(0) == "list" {
        (n - 2, Target::Tags)
    } else if n >= 3 && at(1) == "referrers" {
        (n - 2, Target::Referrers(decode(at(0))))
    } else {
        return Err(V2Error::no_endpoint(&format!("/v2/{rest}")));
    };
    let name = segs[..name_len].join("/");
    let repo = RepoName::parse(&name).map_err(|e| V2Error::new(&NAME_INVALID, e.to_string()))?;
    Ok((repo, target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parse_never_panics_and_accepted_names_are_valid(p in "[a-z0-9./_%-]{0,40}") {
            if let Ok((repo, _)) = parse(&p) {
                prop_assert!(RepoName::parse(repo.as_str()).is_ok());
                prop_assert!(!repo.as_str().split('/').any(|c| c == ".." || c.is_empty()));
            }
        }

        /// Any path text, and paths built from names and endpoint words:
        /// no panic, and what is accepted, written back as a path (its last
        /// segment percent-encoded), parses to the same name and target.
        #[test]
        fn any_path_parses_without_panic_and_accepted_ones_round_trip(
            p in prop_oneof![
                "\\PC{0,80}",
                (
                    "[a-z0-9]{1,4}([._-][a-z0-9]{1,3}){0,2}(/[a-zA-Z0-9._-]{1,6}){0,3}",
                    proptest::sample::select(vec!["manifests", "blobs", "blobs/uploads", "tags", "referrers", "x"]),
                    "(%[0-9a-fA-F]{0,2}|[a-zA-Z0-9:._/-]|\\PC){0,12}",
                )
                    .prop_map(|(n, e, t)| format!("{n}/{e}/{t}")),
            ],
        ) {
            if let Ok((repo, target)) = parse(&p) {
                prop_assert!(RepoName::parse(repo.as_str()).is_ok());
                let back = match &target {
                    Target::Manifest(r) => format!("{repo}/manifests/{}", encode(r)),
                    Target::Blob(d) => format!("{repo}/blobs/{}", encode(d)),
                    Target::Uploads => format!("{repo}/blobs/uploads/"),
                    Target::Upload(id) => format!("{repo}/blobs/uploads/{}", encode(id)),
                    Target::Tags => format!("{repo}/tags/list"),
                    Target::Referrers(d) => format!("{repo}/referrers/{}", encode(d)),
                };
                prop_assert_eq!(parse(&back).ok(), Some((repo, target)), "{} -> {}", p, back);
            }
        }
    }

    /// Percent-encodes every byte but unreserved ones, as a client would.
    fn encode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    fn ok(p: &str) -> (String, Target) {
        let (r, t) = parse(p).unwrap();
        (r.to_string(), t)
    }

    #[test]
    fn names_with_slashes_and_endpoint_words_are_split_from_the_end() {
        assert_eq!(ok("a/b/manifests/latest"), ("a/b".into(), Target::Manifest("latest".into())));
        assert_eq!(ok("x/manifests/y/manifests/v1"), ("x/manifests/y".into(), Target::Manifest("v1".into())));
        assert_eq!(ok("a/blobs/uploads/"), ("a".into(), Target::Uploads));
        assert_eq!(ok("a/blobs/uploads"), ("a".into(), Target::Uploads));
        assert_eq!(ok("a/blobs/uploads/abc"), ("a".into(), Target::Upload("abc".into())));
        assert_eq!(ok("a/blobs/sha256%3Aab"), ("a".into(), Target::Blob("sha256:ab".into())));
        assert_eq!(ok("t/tags/list"), ("t".into(), Target::Tags));
        assert_eq!(ok("r/referrers/sha256:1"), ("r".into(), Target::Referrers("sha256:1".into())));
    }

    #[test]
    fn bad_names_and_unknown_endpoints_are_refused() {
        assert_eq!(parse("UPPER/manifests/x").unwrap_err().code().code, "NAME_INVALID");
        assert_eq!(parse("../manifests/x").unwrap_err().code().code, "NAME_INVALID");
        assert_eq!(parse("a/whatever").unwrap_err().status(), axum::http::StatusCode::NOT_FOUND);
        assert_eq!(parse("manifests/x").unwrap_err().status(), axum::http::StatusCode::NOT_FOUND);
    }
}
