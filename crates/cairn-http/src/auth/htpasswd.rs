//! htpasswd files, bcrypt entries only (`htpasswd -B`). Other hash kinds
//! are weak or unsalted, so a file holding one is refused at load, naming
//! the line and the user.

use std::collections::HashMap;
use std::path::Path;

use super::AuthError;

/// Users and their bcrypt hashes.
#[derive(Clone, Default)]
pub struct Htpasswd {
    users: HashMap<String, String>,
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: hashes stay out of logs.
        f.debug_struct("Htpasswd").field("users", &self.users.keys().collect::<Vec<_>>()).finish()
    }
}

/// What a non-bcrypt hash is, for the refusal message.
fn hash_kind(hash: &str) -> &'static str {
    if hash.starts_with("$apr1$") {
        "MD5 ($apr1$, htpasswd -m)"
    } else if hash.starts_with("{SHA}") {
        "SHA-1 ({SHA}, htpasswd -s)"
    } else if hash.starts_with("$1$") {
        "MD5-crypt ($1$)"
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        "SHA-crypt ($5$/$6$)"
    } else if hash.len() == 13 {
        "DES crypt (htpasswd -d)"
    } else {
        "not a known hash (plain text? htpasswd -p)"
    }
}

impl Htpasswd {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Htpasswd, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read { path: path.into(), source })?;
        Htpasswd::parse(&text, path)
    }

    /// Parses htpasswd text; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Htpasswd, AuthError> {
        let mut users = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |msg: String| AuthError::Htpasswd { path: path.into(), line: i + 1, msg };
            let Some((user, hash)) = line.split_once(':') else {
                return Err(bad("expected user:hash".into()));
            };
            if user.is_empty() {
                return Err(bad("the user name is empty".into()));
            }
            let bcrypt = ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p));
            if !bcrypt {
                return Err(bad(format!(
                    "user {user:?}: the password hash is {}, which Cairn refuses; only bcrypt is accepted: \
                     re-create the entry with `htpasswd -B {} {user}`",
                    hash_kind(hash),
                    path.display()
                )));
            }
            if hash.len() != 60 {
                return Err(bad(format!(
                    "user {user:?}: the bcrypt hash is {} characters, not 60; re-create the entry with `htpasswd -B`",
                    hash.len()
                )));
            }
            if users.insert(user.to_owned(), hash.to_owned()).is_some() {
                return Err(bad(format!("user {user:?} appears twice; keep one entry")));
            }
        }
        Ok(Htpasswd { users })
    }

    /// Whether `user` is in the file.
    pub fn has(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// `user`'s bcrypt hash.
    pub fn hash(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(String::as_str)
    }

    /// Checks `password` against `user`'s hash (slow on purpose: bcrypt).
    /// False for an unknown user or a wrong password.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => false,
        }
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when the file holds no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Htpasswd, AuthError> {
        Htpasswd::parse(text, Path::new("/etc/cairn/htpasswd"))
    }

    #[test]
    fn bcrypt_entries_verify_and_other_hash_kinds_are_refused_naming_line_and_user() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let h = parse(&format!("# people\n\nalice:{hash}\n")).unwrap();
        assert!(h.verify("alice", "s3cret"));
        assert!(!h.verify("alice", "S3cret") && !h.verify("bob", "s3cret"));
        for (line, kind) in [
            ("bob:$apr1$Mq5u5QJm$1Vh4xTM2Mu2WOBLqtRMxl/", "MD5"),
            ("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
            ("bob:abJnggxhB/yWI", "DES crypt"),
            ("bob:plaintext", "plain"),
        ] {
            let e = parse(&format!("alice:{hash}\n{line}\n")).unwrap_err().to_string();
            for want in ["line 2", "\"bob\"", kind, "htpasswd -B /etc/cairn/htpasswd bob"] {
                assert!(e.contains(want), "{want:?} not in {e}");
            }
            assert!(!e.contains(line.split_once(':').unwrap().1), "the hash is not echoed: {e}");
        }
        assert!(parse("nocolon\n").unwrap_err().to_string().contains("line 1"));
        assert!(parse(&format!("a:{hash}\na:{hash}\n")).unwrap_err().to_string().contains("twice"));
    }
}
