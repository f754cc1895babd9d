//! One test body, two backends: each shared test is a `fn(&Env)`, and
//! [`both_backends!`] runs it once on a data dir and once in memory.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use cairn_store::backend::mem::MemBackend;
use cairn_store::backend::{BlobBackend, MetaBackend};
use cairn_store::{Digest, Store, StoreOptions};

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A data dir in a temp dir.
    Fs,
    /// In memory.
    Mem,
}

/// One store for one test; [`Env::store`] opens a new handle on it.
pub struct Env {
    pub kind: Kind,
    dir: tempfile::TempDir,
    mem: MemBackend,
    opts: StoreOptions,
}

impl Env {
    /// A fresh store that fsyncs.
    pub fn new(kind: Kind) -> Env {
        Env::with(kind, StoreOptions::default())
    }

    /// A fresh store opened with `opts`.
    pub fn with(kind: Kind, opts: StoreOptions) -> Env {
        Env { kind, dir: tempfile::tempdir().unwrap(), mem: MemBackend::new(), opts }
    }

    /// A new handle on this test's store (same data every call).
    pub fn store(&self) -> Store {
        self.store_with(self.opts.clone())
    }

    /// A new handle opened with `opts`.
    pub fn store_with(&self, opts: StoreOptions) -> Store {
        match self.kind {
            Kind::Fs => Store::open_with(self.dir.path().join("data"), opts).unwrap(),
            Kind::Mem => Store::with_backend(Box::new(self.mem.clone()), opts),
        }
    }

    /// The data dir, for the filesystem backend.
    pub fn data_dir(&self) -> Option<PathBuf> {
        (self.kind == Kind::Fs).then(|| self.dir.path().join("data"))
    }

    /// A scratch directory outside the store (trees to snapshot, checkouts).
    pub fn scratch(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Writes `bytes` at metadata `key` behind the store's back (another
    /// tool, or the original store, wrote it).
    pub fn plant(&self, key: &str, bytes: &[u8]) {
        match self.data_dir() {
            Some(d) => {
                let p = d.join(key);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                let _ = std::fs::remove_file(&p);
                std::fs::write(p, bytes).unwrap();
            }
            None => {
                self.mem.delete(key).unwrap();
                self.mem.put(key, bytes).unwrap();
            }
        }
    }

    /// The raw bytes at metadata `key`.
    pub fn raw(&self, key: &str) -> Vec<u8> {
        match self.data_dir() {
            Some(d) => std::fs::read(d.join(key)).unwrap(),
            None => self.mem.get(key, u64::MAX - 1).unwrap().unwrap(),
        }
    }

    /// Names under metadata `key`.
    pub fn children(&self, key: &str) -> Vec<String> {
        match self.data_dir() {
            Some(d) => match std::fs::read_dir(d.join(key)) {
                Ok(rd) => rd.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
                Err(_) => Vec::new(),
            },
            None => self.mem.children(key).unwrap(),
        }
    }

    /// Removes a blob behind the store's back (another process, a disk error).
    pub fn remove_blob_raw(&self, d: &Digest) {
        match self.data_dir() {
            Some(dir) => std::fs::remove_file(dir.join("objects").join(d.to_string())).unwrap(),
            None => assert!(self.mem.delete_blob(d).unwrap()),
        }
    }

    /// The blob's modification time.
    pub fn mtime(&self, d: &Digest) -> SystemTime {
        self.store().size(d).unwrap();
        self.mem_or_fs_mtime(d)
    }

    fn mem_or_fs_mtime(&self, d: &Digest) -> SystemTime {
        match self.data_dir() {
            Some(dir) => std::fs::metadata(dir.join("objects").join(d.to_string())).unwrap().modified().unwrap(),
            None => self.mem.stat_mtime(d).unwrap().unwrap().1,
        }
    }

    /// Makes a blob look `secs` old (GC grace).
    pub fn age(&self, d: &Digest, secs: u64) {
        let t = SystemTime::now() - Duration::from_secs(secs);
        match self.data_dir() {
            Some(dir) => std::fs::File::open(dir.join("objects").join(d.to_string())).unwrap().set_modified(t).unwrap(),
            None => self.mem.set_mtime(d, t),
        }
    }
}

/// Runs each listed `fn(&Env)` once per backend, as `on_fs::<name>` and `on_mem::<name>`.
#[macro_export]
macro_rules! both_backends {
    ($($t:ident),* $(,)?) => {
        mod on_fs {
            $(#[test] fn $t() { super::$t(&$crate::common::Env::new($crate::common::Kind::Fs)) })*
        }
        mod on_mem {
            $(#[test] fn $t() { super::$t(&$crate::common::Env::new($crate::common::Kind::Mem)) })*
        }
    };
}
