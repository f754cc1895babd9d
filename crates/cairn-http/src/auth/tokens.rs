//! Bearer tokens for machines: a file of `NAME TOKEN` lines. Only SHA-256
//! digests of the tokens are kept, and a presented token is compared with
//! every one of them in constant time.

use std::path::Path;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use super::AuthError;

/// Shortest token accepted: guessing must stay hopeless.
pub const MIN_TOKEN_LEN: usize = 16;

/// Token names and the SHA-256 of each token.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("names", &self.entries.iter().map(|e| &e.0).collect::<Vec<_>>()).finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Tokens, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read { path: path.into(), source })?;
        Tokens::parse(&text, path)
    }

    /// Parses `NAME TOKEN` lines (`#` comments, blank lines skipped).
    pub fn parse(text: &str, path: &Path) -> Result<Tokens, AuthError> {
        let mut entries: Vec<(String, [u8; 32])> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |msg: String| AuthError::Tokens { path: path.into(), line: i + 1, msg };
            let mut words = line.split_whitespace();
            let (Some(name), Some(token), None) = (words.next(), words.next(), words.next()) else {
                return Err(bad("expected NAME TOKEN (two words)".into()));
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(bad(format!(
                    "token {name:?} is shorter than {MIN_TOKEN_LEN} characters; make one with `openssl rand -hex 32`"
                )));
            }
            if entries.iter().any(|(n, _)| n == name) {
                return Err(bad(format!("token {name:?} appears twice; keep one entry")));
            }
            let d = digest(token);
            if entries.iter().any(|(_, e)| *e == d) {
                return Err(bad(format!("token {name:?} is the same as another token; give each its own")));
            }
            entries.push((name.to_owned(), d));
        }
        Ok(Tokens { entries })
    }

    /// The name of the token equal to `token`, if any. Every entry is
    /// compared, in constant time, whether or not one matched.
    pub fn find(&self, token: &str) -> Option<&str> {
        let d = digest(token);
        let mut found = None;
        for (name, e) in &self.entries {
            if bool::from(e.ct_eq(&d)) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// Whether the token named `name` is `token` (Basic auth with the
    /// token's name as user and the token as password).
    pub fn check(&self, name: &str, token: &str) -> bool {
        let d = digest(token);
        self.entries.iter().any(|(n, e)| n == name && bool::from(e.ct_eq(&d)))
    }

    /// Whether a token is named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.entries.iter().any(|(n, _)| n == name)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no token.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_by_value_and_checked_by_name() {
        let p = Path::new("/etc/cairn/tokens");
        let t = Tokens::parse("# machines\nbuilder 0123456789abcdef0123\n\ndeploy  fedcba9876543210fedc\n", p).unwrap();
        assert_eq!(t.find("0123456789abcdef0123"), Some("builder"));
        assert_eq!(t.find("fedcba9876543210fedc"), Some("deploy"));
        assert_eq!(t.find("0123456789abcdef012"), None);
        assert!(t.check("builder", "0123456789abcdef0123") && !t.check("deploy", "0123456789abcdef0123"));
        let e = Tokens::parse("a short\n", p).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("openssl rand"), "{e}");
        assert!(!e.contains("short\""), "the token is not echoed: {e}");
        let e = Tokens::parse("a 0123456789abcdef0123 extra\n", p).unwrap_err().to_string();
        assert!(e.contains("NAME TOKEN"), "{e}");
        let e = Tokens::parse("a 0123456789abcdef0123\nb 0123456789abcdef0123\n", p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("same as another"), "{e}");
    }
}
