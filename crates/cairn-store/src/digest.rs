//! SHA-256 digests: the address of every blob.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A SHA-256 digest. It can only hold a valid value: parse it with
/// [`Digest::parse`] (or `str::parse`) at the edge, pass it around inside.
///
/// Displays as the bare 64 lowercase hex form the original store writes;
/// [`Digest::oci`] gives the `sha256:<hex>` form of the OCI API.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The input was empty.
    #[error("empty digest: expected 64 hex characters or sha256:<64 hex>")]
    Empty,
    /// An algorithm prefix other than `sha256:`.
    #[error("unsupported digest algorithm {0:?}: only sha256 is supported")]
    Algorithm(String),
    /// The hex part has the wrong length.
    #[error("digest {input:?} has {len} hex characters, expected 64")]
    Length {
        /// The input as given (shortened when long).
        input: String,
        /// How many characters the hex part had.
        len: usize,
    },
    /// A character that is not lowercase hex.
    #[error("digest {input:?} has {ch:?} at position {pos}: only lowercase hex 0-9a-f is allowed")]
    Char {
        /// The input as given (shortened when long).
        input: String,
        /// The offending character.
        ch: char,
        /// Its character position in the hex part.
        pos: usize,
    },
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 80 {
        let head: String = s.chars().take(77).collect();
        format!("{head}...")
    } else {
        s.to_owned()
    }
}

impl Digest {
    /// Parses `<64 lowercase hex>` or `sha256:<64 lowercase hex>`.
    pub fn parse(input: &str) -> Result<Self, DigestError> {
        if input.is_empty() {
            return Err(DigestError::Empty);
        }
        let hex = match input.split_once(':') {
            Some(("sha256", rest)) => rest,
            Some((alg, _)) => return Err(DigestError::Algorithm(shorten(alg))),
            None => input,
        };
        let len = hex.chars().count();
        if len != 64 {
            return Err(DigestError::Length { input: shorten(input), len });
        }
        let mut out = [0u8; 32];
        for (pos, ch) in hex.chars().enumerate() {
            let v = match ch {
                '0'..='9' => ch as u8 - b'0',
                'a'..='f' => ch as u8 - b'a' + 10,
                _ => return Err(DigestError::Char { input: shorten(input), ch, pos }),
            };
            out[pos / 2] |= if pos % 2 == 0 { v << 4 } else { v };
        }
        Ok(Digest(out))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// Builds a digest from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The bare 64 hex form (same as `Display`).
    pub fn hex(&self) -> String {
        self.to_string()
    }

    /// The `sha256:<hex>` form used by the OCI API.
    pub fn oci(&self) -> String {
        format!("sha256:{self}")
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            buf[2 * i] = HEX[(b >> 4) as usize];
            buf[2 * i + 1] = HEX[(b & 0xf) as usize];
        }
        // Only ASCII hex was written.
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Incremental SHA-256 over a stream of chunks.
#[derive(Clone, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }
    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty_input_matches_known_value() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY);
        assert_eq!(Hasher::new().finish().to_string(), EMPTY);
    }

    #[test]
    fn parse_accepts_bare_and_prefixed_forms() {
        let a = Digest::parse(EMPTY).unwrap();
        let b = Digest::parse(&format!("sha256:{EMPTY}")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.oci(), format!("sha256:{EMPTY}"));
    }

    #[test]
    fn parse_rejects_bad_inputs_with_reason() {
        assert_eq!(Digest::parse(""), Err(DigestError::Empty));
        assert!(matches!(Digest::parse("abc"), Err(DigestError::Length { len: 3, .. })));
        assert!(matches!(
            Digest::parse(&format!("sha512:{EMPTY}")),
            Err(DigestError::Algorithm(a)) if a == "sha512"
        ));
        let upper = EMPTY.to_uppercase();
        assert!(matches!(Digest::parse(&upper), Err(DigestError::Char { ch: 'E', pos: 0, .. })));
        let mut slash = EMPTY.to_string();
        slash.replace_range(10..11, "/");
        assert!(matches!(Digest::parse(&slash), Err(DigestError::Char { ch: '/', pos: 10, .. })));
        // Multi-byte characters must not be miscounted as valid length.
        let multibyte = format!("{}é", &EMPTY[..63]);
        assert!(matches!(Digest::parse(&multibyte), Err(DigestError::Char { ch: 'é', .. })));
    }

    #[test]
    fn serde_round_trips_as_bare_hex() {
        let d = Digest::of(b"x");
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(j, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&j).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"nope\"").is_err());
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(bytes in any::<[u8; 32]>()) {
            let d = Digest::from_bytes(bytes);
            prop_assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
            prop_assert_eq!(Digest::parse(&d.oci()).unwrap(), d);
        }

        #[test]
        fn parse_never_panics_and_accepts_only_64_lower_hex(s in "\\PC{0,80}") {
            let ok = Digest::parse(&s).is_ok();
            let hex = s.strip_prefix("sha256:").unwrap_or(&s);
            let valid = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            prop_assert_eq!(ok, valid);
        }

        #[test]
        fn parse_accepts_every_lower_hex_string(s in "[0-9a-f]{64}") {
            prop_assert_eq!(Digest::parse(&s).unwrap().to_string(), s);
        }

        #[test]
        fn parse_of_arbitrary_bytes_never_panics_and_accepted_digests_round_trip(
            bytes in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let s = String::from_utf8_lossy(&bytes);
            if let Ok(d) = Digest::parse(&s) {
                prop_assert_eq!(Digest::parse(&d.oci()).unwrap(), d);
                prop_assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
            }
        }

        /// Near-valid: algorithm prefixes, case, multibyte and odd lengths.
        #[test]
        fn near_valid_digests_are_accepted_exactly_when_canonical(
            prefix in proptest::sample::select(vec!["", "sha256:", "SHA256:", "sha512:", ":", "sha256::", "sha256"]),
            valid in "[0-9a-f]{64}",
            flip in proptest::option::of((0usize..64, proptest::sample::select(vec!['A', 'F', 'g', 'é', ':', ' ', '\0']))),
            cut in 0usize..3,
            extra in "[0-9a-f]{0,2}",
        ) {
            // A valid hex string, maybe with one character replaced, shortened or lengthened.
            let mut hex: String = valid.chars().enumerate().map(|(i, c)| match flip {
                Some((at, to)) if at == i => to,
                _ => c,
            }).collect();
            for _ in 0..cut {
                hex.pop();
            }
            hex.push_str(&extra);
            let s = format!("{prefix}{hex}");
            let canonical = matches!(prefix, "" | "sha256:")
                && hex.len() == 64
                && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            match Digest::parse(&s) {
                Ok(d) => {
                    prop_assert!(canonical, "accepted {}", s);
                    prop_assert_eq!(d.to_string(), hex);
                }
                Err(e) => {
                    prop_assert!(!canonical, "refused {}: {}", s, e);
                    // The error quotes at most a shortened input.
                    prop_assert!(e.to_string().len() < 400);
                }
            }
        }

        /// What a peer or a client sends as JSON: a string, or anything else.
        #[test]
        fn json_digests_parse_without_panic_and_round_trip(
            v in prop_oneof![
                "[0-9a-f]{64}".prop_map(serde_json::Value::from),
                "sha256:[0-9a-f]{64}".prop_map(serde_json::Value::from),
                "\\PC{0,70}".prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                Just(serde_json::Value::Null),
            ],
        ) {
            let text = v.to_string();
            if let Ok(d) = serde_json::from_str::<Digest>(&text) {
                let again = serde_json::to_string(&d).unwrap();
                prop_assert_eq!(serde_json::from_str::<Digest>(&again).unwrap(), d);
            }
        }
    }
}
