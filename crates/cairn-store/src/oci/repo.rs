//! Repository names, tags and manifest references, checked against the
//! distribution-spec grammar before anything becomes a path.

use std::fmt;

use crate::digest::Digest;

/// Longest repository name accepted (clients limit host + name to 255).
pub const MAX_REPO_LEN: usize = 255;

/// Longest tag (the spec's grammar allows 128 characters).
pub const MAX_TAG_LEN: usize = 128;

/// A repository name: `/`-separated components, each
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, at most [`MAX_REPO_LEN`] bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

/// Why a repository name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid repository name {name:?}: {reason}")]
pub struct RepoNameError {
    /// The name as given (shortened when long).
    pub name: String,
    /// What rule it breaks.
    pub reason: &'static str,
}

fn component_ok(c: &str) -> Result<(), &'static str> {
    let b = c.as_bytes();
    if b.is_empty() {
        return Err("empty path component (leading, trailing or double '/')");
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err("each component must start and end with a lowercase letter or digit");
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or one or more '-'.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        match &c[start..i] {
            "." | "_" | "__" => {}
            s if s.bytes().all(|x| x == b'-') => {}
            s if s.bytes().all(|x| matches!(x, b'.' | b'_' | b'-')) => {
                return Err("separators are '.', '_', '__' or a run of '-', never mixed");
            }
            _ => return Err("only lowercase letters, digits, '.', '_', '-' and '/' are allowed"),
        }
    }
    Ok(())
}

impl RepoName {
    /// Checks `s` against the spec's name grammar.
    pub fn parse(s: &str) -> Result<Self, RepoNameError> {
        let err = |reason| RepoNameError { name: s.chars().take(80).collect(), reason };
        if s.is_empty() {
            return Err(err("empty name"));
        }
        if s.len() > MAX_REPO_LEN {
            return Err(err("longer than 255 bytes"));
        }
        for c in s.split('/') {
            component_ok(c).map_err(err)?;
        }
        Ok(RepoName(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated components (each safe as one path component).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoName({:?})", self.0)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}` (never `.` or `..`, so safe as a file name).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

/// Why a tag was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tag {tag:?}: tags are 1 to 128 of [A-Za-z0-9._-] and do not start with '.' or '-'")]
pub struct TagError {
    /// The tag as given (shortened when long).
    pub tag: String,
}

impl Tag {
    /// Checks `s` against the spec's tag grammar.
    pub fn parse(s: &str) -> Result<Self, TagError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= MAX_TAG_LEN
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter().all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'.' | b'_' | b'-'));
        if ok { Ok(Tag(s.to_owned())) } else { Err(TagError { tag: s.chars().take(80).collect() }) }
    }

    /// The tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({:?})", self.0)
    }
}

/// The `<reference>` of a manifest path: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// By tag.
    Tag(Tag),
    /// By digest.
    Digest(Digest),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t.as_str()),
            Reference::Digest(d) => f.write_str(&d.oci()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn repo_names_from_the_spec_grammar_are_accepted() {
        for ok in ["a", "library/ubuntu", "a.b/c_d/e__f/g---h", "0/1/2", "foo/manifests/bar"] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn repo_names_breaking_the_grammar_are_refused_with_reason() {
        for bad in [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "-a",
            "a-",
            "a._b",
            "a___b",
            "a..b",
            "..",
            "a/../b",
            "a b",
            "_a",
            "a/_manifests",
        ] {
            let e = RepoName::parse(bad).unwrap_err();
            assert!(!e.reason.is_empty(), "{bad}");
        }
        assert!(RepoName::parse(&"a".repeat(256)).unwrap_err().reason.contains("255"));
    }

    #[test]
    fn tags_follow_the_spec_grammar() {
        for ok in ["latest", "v1.0", "_x", "A-b_c.d", &"t".repeat(128)] {
            assert!(Tag::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "-x", ".x", "a/b", "a:b", &"t".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn accepted_repo_names_are_safe_path_components(s in "[a-z0-9._/-]{0,40}") {
            if let Ok(r) = RepoName::parse(&s) {
                for c in r.components() {
                    prop_assert!(!c.is_empty() && c != "." && c != ".." && !c.starts_with('_') && !c.starts_with('.'));
                }
            }
        }

        #[test]
        fn accepted_tags_are_safe_file_names(s in "\\PC{0,20}") {
            if let Ok(t) = Tag::parse(&s) {
                prop_assert!(!t.as_str().starts_with('.') && !t.as_str().contains('/'));
            }
        }

        #[test]
        fn repo_names_from_arbitrary_text_never_panic_and_round_trip(
            s in prop_oneof!["\\PC{0,300}", "[a-z0-9._/-]{0,300}", "([a-z0-9]{1,5}[._-]{0,3}){1,8}(/[a-z0-9._-]{0,8}){0,6}"],
        ) {
            match RepoName::parse(&s) {
                Ok(r) => {
                    prop_assert_eq!(r.to_string(), s.clone());
                    prop_assert_eq!(RepoName::parse(&r.to_string()).unwrap(), r);
                    prop_assert!(s.len() <= MAX_REPO_LEN);
                }
                Err(e) => prop_assert!(e.name.chars().count() <= 80),
            }
        }

        #[test]
        fn tags_from_arbitrary_text_never_panic_and_round_trip(
            s in prop_oneof!["\\PC{0,140}", "[A-Za-z0-9_.-]{0,130}", "[A-Za-z0-9_][A-Za-z0-9._-]{126,128}"],
        ) {
            let valid = !s.is_empty()
                && s.len() <= MAX_TAG_LEN
                && s.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            match Tag::parse(&s) {
                Ok(t) => {
                    prop_assert!(valid, "accepted {:?}", s);
                    prop_assert_eq!(Tag::parse(&t.to_string()).unwrap(), t);
                }
                Err(e) => {
                    prop_assert!(!valid, "refused {:?}", s);
                    prop_assert!(e.tag.chars().count() <= 80);
                }
            }
        }

        #[test]
        fn references_display_as_what_parses_back(tag in "[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", bytes in any::<[u8; 32]>()) {
            let t = Reference::Tag(Tag::parse(&tag).unwrap());
            prop_assert_eq!(t.to_string(), tag);
            let d = Reference::Digest(Digest::from_bytes(bytes));
            prop_assert_eq!(Digest::parse(&d.to_string()).map(Reference::Digest).unwrap(), d);
        }
    }
}
