//! In-crate tests on both backends: one body, run by [`both_backends!`] as
//! `on_fs::<name>` and `on_mem::<name>` (see also `tests/common`).

use std::time::{Duration, SystemTime};

use crate::backend::MetaBackend;
use crate::backend::mem::MemBackend;
use crate::digest::Digest;
use crate::store::{Store, StoreOptions};

/// One store for one test.
pub(crate) enum Env {
    Fs(tempfile::TempDir),
    Mem(MemBackend),
}

impl Env {
    pub(crate) fn fs() -> Env {
        Env::Fs(tempfile::tempdir().unwrap())
    }

    pub(crate) fn mem() -> Env {
        Env::Mem(MemBackend::new())
    }

    /// A handle on this test's store.
    pub(crate) fn store(&self) -> Store {
        match self {
            Env::Fs(t) => Store::open(t.path().join("data")).unwrap(),
            Env::Mem(m) => Store::with_backend(Box::new(m.clone()), StoreOptions::default()),
        }
    }

    /// Makes a blob look `secs` old.
    pub(crate) fn age(&self, d: &Digest, secs: u64) {
        let t = SystemTime::now() - Duration::from_secs(secs);
        match self {
            Env::Fs(dir) => {
                let p = dir.path().join("data/objects").join(d.to_string());
                std::fs::File::open(p).unwrap().set_modified(t).unwrap();
            }
            Env::Mem(m) => m.set_mtime(d, t),
        }
    }

    /// Overwrites a blob's bytes behind the store's back (bit rot).
    pub(crate) fn corrupt(&self, d: &Digest, bytes: &[u8]) {
        match self {
            Env::Fs(dir) => {
                use std::os::unix::fs::PermissionsExt;
                let p = dir.path().join("data/objects").join(d.to_string());
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
                std::fs::write(&p, bytes).unwrap();
            }
            Env::Mem(m) => m.corrupt(d, bytes),
        }
    }

    /// Writes a metadata document behind the store's back.
    pub(crate) fn plant(&self, key: &str, bytes: &[u8]) {
        match self {
            Env::Fs(dir) => std::fs::write(dir.path().join("data").join(key), bytes).unwrap(),
            Env::Mem(m) => m.put(key, bytes).unwrap(),
        }
    }
}

/// Runs each listed `fn(&Env)` once per backend.
macro_rules! both_backends {
    ($($t:ident),* $(,)?) => {
        mod on_fs {
            $(#[test] fn $t() { super::$t(&$crate::testing::Env::fs()) })*
        }
        mod on_mem {
            $(#[test] fn $t() { super::$t(&$crate::testing::Env::mem()) })*
        }
    };
}
pub(crate) use both_backends;
