//! Manifest names and ref file names: parsed once at the edge, so inner
//! code never builds a path from an unchecked string.

use std::fmt;

use crate::digest::Digest;

/// Longest ref file name, in bytes (a common filesystem limit).
pub const MAX_NAME_LEN: usize = 255;

/// What a ref file adds to its manifest's name: `-<12 hex>.json`.
const REF_SUFFIX_LEN: usize = "-0123456789ab.json".len();

/// Longest manifest name, in bytes: its ref file must fit in [`MAX_NAME_LEN`].
pub const MAX_REF_NAME_LEN: usize = MAX_NAME_LEN - REF_SUFFIX_LEN;

/// Why a name or ref file name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name was empty.
    #[error("empty name")]
    Empty,
    /// Over the length limit ([`MAX_NAME_LEN`] or [`MAX_REF_NAME_LEN`]).
    #[error("name is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// The name's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `.` or `..`.
    #[error("name {0:?} is a relative path component")]
    Dots(String),
    /// A character outside `[A-Za-z0-9._-]`.
    #[error("name {name:?} has {ch:?}: only letters, digits, '.', '_' and '-' are allowed")]
    Char {
        /// The name (escaped by `Debug`).
        name: String,
        /// The first offending character.
        ch: char,
    },
    /// A ref file name that does not end in `.json`.
    #[error("ref file {0:?} must end in .json")]
    NotJson(String),
}

fn check_component(s: &str, max: usize) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > max {
        return Err(NameError::TooLong { len: s.len(), max });
    }
    if s == "." || s == ".." {
        return Err(NameError::Dots(s.to_owned()));
    }
    if let Some(ch) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        let name: String = s.chars().take(80).collect();
        return Err(NameError::Char { name, ch });
    }
    Ok(())
}

/// A manifest name: one path component of `[A-Za-z0-9._-]`, 1 to
/// [`MAX_REF_NAME_LEN`] (237) bytes, so that its ref file fits in 255.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct RefName(String);

impl RefName {
    /// Checks `s` against the name rules.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        check_component(s, MAX_REF_NAME_LEN)?;
        Ok(RefName(s.to_owned()))
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A ref file name: any safe single component ending in `.json`, so files
/// the original wrote under other names can still be read. A new ref file
/// must be `<name>-<12 hex>.json` for its bytes ([`RefFile::for_manifest`];
/// checked by `Manifest::from_json_for`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct RefFile(String);

impl RefFile {
    /// Checks `s`: a safe single path component ending in `.json`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        check_component(s, MAX_NAME_LEN)?;
        if !s.ends_with(".json") || s.len() == ".json".len() {
            return Err(NameError::NotJson(s.chars().take(80).collect()));
        }
        Ok(RefFile(s.to_owned()))
    }
    /// The ref file the store writes for `name` whose JSON bytes are `json`.
    pub fn for_manifest(name: &RefName, json: &[u8]) -> Result<Self, NameError> {
        let hex = Digest::of(json).to_string();
        RefFile::parse(&format!("{}-{}.json", name.as_str(), &hex[..12]))
    }
    /// The file name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// True when this file name belongs to manifest `name`
    /// (`<name>-<12 hex>.json`).
    pub fn is_version_of(&self, name: &RefName) -> bool {
        self.0
            .strip_prefix(name.as_str())
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_suffix(".json"))
            .is_some_and(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

macro_rules! impl_display {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
        impl std::str::FromStr for $t {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
impl_display!(RefName);
impl_display!(RefFile);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unsafe_names_are_rejected() {
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0b", "../x", "a b", "é", "%2e%2e"] {
            assert!(RefName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(RefName::parse(&"a".repeat(238)), Err(NameError::TooLong { len: 238, max: 237 }));
        assert!(RefName::parse(&"a".repeat(237)).is_ok());
        assert_eq!(RefFile::parse(&"a".repeat(256)), Err(NameError::TooLong { len: 256, max: 255 }));
    }

    #[test]
    fn ref_files_must_be_json_components() {
        assert!(RefFile::parse("ubuntu-0123456789ab.json").is_ok());
        for bad in ["x.txt", ".json", "../a.json", "a/b.json", "..", "a.json\0"] {
            assert!(RefFile::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ref_file_for_manifest_uses_first_12_hex_of_json_hash() {
        let name = RefName::parse("rootfs").unwrap();
        let rf = RefFile::for_manifest(&name, b"{}").unwrap();
        let hex = Digest::of(b"{}").to_string();
        assert_eq!(rf.as_str(), format!("rootfs-{}.json", &hex[..12]));
        assert!(rf.is_version_of(&name));
        assert!(!rf.is_version_of(&RefName::parse("root").unwrap()));
    }

    #[test]
    fn the_longest_name_has_a_ref_file_that_fits_a_filename() {
        let name = RefName::parse(&"n".repeat(MAX_REF_NAME_LEN)).unwrap();
        let rf = RefFile::for_manifest(&name, b"{}").unwrap();
        assert_eq!(rf.as_str().len(), MAX_NAME_LEN);
        assert!(rf.is_version_of(&name));
    }

    proptest! {
        #[test]
        fn accepted_names_are_single_safe_components(s in "\\PC{0,40}") {
            if let Ok(n) = RefName::parse(&s) {
                let p = std::path::Path::new(n.as_str());
                prop_assert_eq!(p.components().count(), 1);
                prop_assert!(matches!(p.components().next(), Some(std::path::Component::Normal(_))));
            }
        }

        #[test]
        fn names_of_allowed_chars_are_accepted(s in "[A-Za-z0-9_-][A-Za-z0-9._-]{0,50}") {
            prop_assert!(RefName::parse(&s).is_ok());
        }
    }
}
