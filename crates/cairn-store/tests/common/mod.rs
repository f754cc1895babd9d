//! One test body, several backends: each shared test is a `fn(&Env)`;
//! [`both_backends!`] runs it once on a data dir and once in memory, and
//! [`s3_backend!`] once more on a bucket of a real S3 server (moto), when
//! moto is installed.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use cairn_store::backend::mem::MemBackend;
use cairn_store::backend::object::{ObjectBackend, S3Options};
use cairn_store::{Digest, Store, StoreOptions};
use cairn_testkit::s3::MotoServer;

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A data dir in a temp dir.
    Fs,
    /// In memory.
    Mem,
    /// A bucket of a moto server.
    S3,
}

/// One store for one test; [`Env::store`] opens a new handle on it.
pub struct Env {
    pub kind: Kind,
    dir: tempfile::TempDir,
    mem: MemBackend,
    opts: StoreOptions,
    s3: Option<(MotoServer, ObjectBackend)>,
}

impl Env {
    /// A fresh store that fsyncs.
    pub fn new(kind: Kind) -> Env {
        Env::with(kind, StoreOptions::default())
    }

    /// A fresh store opened with `opts`.
    pub fn with(kind: Kind, opts: StoreOptions) -> Env {
        assert!(kind != Kind::S3, "use Env::s3");
        Env { kind, dir: tempfile::tempdir().unwrap(), mem: MemBackend::new(), opts, s3: None }
    }

    /// A fresh store in a bucket of a new moto server; `None` (the test is
    /// skipped) when moto is not installed.
    pub fn s3(test: &str) -> Option<Env> {
        let m = MotoServer::start(test)?;
        let mut o = S3Options::new(&m.bucket, &m.region);
        o.endpoint = Some(m.endpoint.clone());
        o.credentials = Some((m.access_key.clone(), m.secret_key.clone()));
        o.prefix = "cairn".into();
        let b = ObjectBackend::s3(&o).unwrap();
        let opts = StoreOptions::default();
        Some(Env { kind: Kind::S3, dir: tempfile::tempdir().unwrap(), mem: MemBackend::new(), opts, s3: Some((m, b)) })
    }

    /// The moto server of an S3 env.
    pub fn moto(&self) -> Option<&MotoServer> {
        self.s3.as_ref().map(|(m, _)| m)
    }

    /// The backend that is not a data dir: memory, or the bucket.
    fn meta(&self) -> &dyn cairn_store::backend::Backend {
        match &self.s3 {
            Some((_, b)) => b,
            None => &self.mem,
        }
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
            Kind::S3 => Store::with_backend(Box::new(self.s3.as_ref().unwrap().1.clone()), opts),
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
                self.meta().delete(key).unwrap();
                self.meta().put(key, bytes).unwrap();
            }
        }
    }

    /// The raw bytes at metadata `key`.
    pub fn raw(&self, key: &str) -> Vec<u8> {
        match self.data_dir() {
            Some(d) => std::fs::read(d.join(key)).unwrap(),
            None => self.meta().get(key, u64::MAX - 1).unwrap().unwrap(),
        }
    }

    /// Names under metadata `key`.
    pub fn children(&self, key: &str) -> Vec<String> {
        match self.data_dir() {
            Some(d) => match std::fs::read_dir(d.join(key)) {
                Ok(rd) => rd.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
                Err(_) => Vec::new(),
            },
            None => self.meta().children(key).unwrap(),
        }
    }

    /// Removes a blob behind the store's back (another process, a disk error).
    pub fn remove_blob_raw(&self, d: &Digest) {
        match self.data_dir() {
            Some(dir) => std::fs::remove_file(dir.join("objects").join(d.to_string())).unwrap(),
            None => assert!(self.meta().delete_blob(d).unwrap()),
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
            None => self.meta().stat_mtime(d).unwrap().unwrap().1,
        }
    }

    /// Makes a blob look `secs` old (GC grace).
    pub fn age(&self, d: &Digest, secs: u64) {
        let t = SystemTime::now() - Duration::from_secs(secs);
        match self.data_dir() {
            Some(dir) => std::fs::File::open(dir.join("objects").join(d.to_string())).unwrap().set_modified(t).unwrap(),
            None => {
                assert!(self.kind == Kind::Mem, "an object's mtime cannot be set: not an S3 test");
                self.mem.set_mtime(d, t)
            }
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

/// Runs each listed `fn(&Env)` on a bucket of a moto server, as
/// `on_s3::<name>`; skipped with a message when moto is not installed.
#[macro_export]
macro_rules! s3_backend {
    ($($t:ident),* $(,)?) => {
        mod on_s3 {
            $(#[test] fn $t() {
                if let Some(env) = $crate::common::Env::s3(stringify!($t)) { super::$t(&env) }
            })*
        }
    };
}
