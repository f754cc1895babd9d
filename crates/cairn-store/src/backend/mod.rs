//! The storage seam: everything the store keeps goes through [`Backend`].
//!
//! - [`BlobBackend`]: immutable blobs named by digest (stat, ranged read,
//!   a sink that ends in `commit(digest)`, delete, list, touch, quarantine).
//!   The store hashes; a backend only keeps bytes, and a commit never
//!   replaces an object already there.
//! - [`MetaBackend`]: small documents under `/`-separated keys (blob
//!   manifests in `refs/`, the registry's links and tags): get, atomic put,
//!   create-only put, delete, list children. [`keys`] builds every key.
//! - [`UploadBackend`]: registry upload sessions, appendable data that
//!   lives across requests and is finished by linking it into the blobs.
//!
//! Three implementations: [`fs`] (the original store's on-disk layout, every
//! durability rule), [`mem`] (the short reference) and [`object`] (a bucket
//! of an object store such as S3). A new backend is a new module here
//! implementing these traits, opened
//! through [`crate::Store::with_backend`]. Filesystem-only features (hard
//! links for checkout, one `syncfs` for a snapshot's batch, free space) are
//! reached through [`Backend::fs`] and skipped or done generically when it
//! is `None`.

pub mod fs;
pub mod keys;
pub mod mem;
pub mod object;

use std::any::Any;
use std::fmt;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use crate::blob::BlobReader;
use crate::digest::Digest;
use crate::error::Result;
use crate::oci::cache::Stamp;

/// A held lock; released when dropped.
pub type Guard = Box<dyn Any + Send>;

/// Blobs: immutable bytes named by their SHA-256.
pub trait BlobBackend {
    /// The blob's size; `BlobNotFound`, or `Symlink` for a planted symlink.
    fn stat(&self, d: &Digest) -> Result<u64>;
    /// Size and modification time (GC grace); `None` when absent.
    fn stat_mtime(&self, d: &Digest) -> Result<Option<(u64, SystemTime)>>;
    /// Size and Unix mode bits of a present blob (checkout), `None` when absent.
    fn stat_mode(&self, d: &Digest) -> Option<(u64, u32)>;
    /// `len` bytes (or the rest) from `offset`; `Range` when outside the blob.
    fn read(&self, d: &Digest, offset: u64, len: Option<u64>) -> Result<BlobReader>;
    /// A sink for a new blob; nothing is visible until it is committed.
    fn create(&self) -> Result<Box<dyn BlobSink>>;
    /// Removes a blob; `false` when it was absent.
    fn delete_blob(&self, d: &Digest) -> Result<bool>;
    /// Makes deletions durable (after a batch of [`BlobBackend::delete_blob`]).
    fn sync_deletes(&self) -> Result<()>;
    /// Every stored digest, lazily.
    fn list_blobs(&self) -> Result<Box<dyn Iterator<Item = Result<Digest>> + Send>>;
    /// Marks a blob as recently used (GC grace).
    fn touch(&self, d: &Digest) -> Result<()>;
    /// Moves a blob aside so it is no longer served; returns where it went.
    fn quarantine(&self, d: &Digest) -> Result<std::path::PathBuf>;
    /// Uncommitted blob writes and other temporaries (0 when nothing leaked).
    fn temporaries(&self) -> Result<usize>;
    /// Removes temporaries last changed before `before` that no writer of
    /// this process holds (leftovers of a crash or a failed commit, which
    /// a GC clears); how many. A backend that clears them when it opens
    /// (the filesystem's) does nothing here.
    fn sweep_temporaries(&self, before: SystemTime) -> Result<usize> {
        let _ = before;
        Ok(0)
    }
}

/// The bytes of one blob being written. Dropped without commit, it is gone.
pub trait BlobSink: Send {
    /// Appends bytes.
    fn write(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes the bytes durable and visible as `d` (the caller checked the
    /// digest), never replacing an existing object. True when `d` existed
    /// (its mtime is then refreshed). The caller holds the shared GC lock.
    fn commit(self: Box<Self>, d: &Digest) -> Result<bool>;
    /// Where the bytes are, for error messages.
    fn location(&self) -> &Path;
    /// For capability-specific batching ([`fs::FsBackend::stage`]).
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

/// Small documents under `/`-separated keys built by [`keys`].
pub trait MetaBackend {
    /// The document, `None` when absent; at most `max + 1` bytes are read.
    /// A planted symlink is [`crate::StoreError::Symlink`].
    fn get(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>>;
    /// The document with the stamp of the version read (see [`Stamp`]);
    /// a symlink counts as absent.
    fn get_stamped(&self, key: &str) -> Result<Option<(Vec<u8>, Stamp)>>;
    /// The stamp of the version there now, `None` when absent.
    fn stamp(&self, key: &str) -> Option<Stamp>;
    /// True when a document (not a symlink, not a directory) is at `key`.
    fn exists(&self, key: &str) -> bool;
    /// True when some key starts with `key/`.
    fn is_dir(&self, key: &str) -> bool;
    /// When the document (or directory) at `key` last changed.
    fn modified(&self, key: &str) -> Option<SystemTime>;
    /// Writes `bytes` at `key` atomically: readers see the old or the new.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<()>;
    /// Writes `bytes` at `key` only when nothing is there; `false` (and
    /// nothing written) when something is. The caller holds the GC lock.
    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<bool>;
    /// Writes `bytes` at `key` only when the version there is still the
    /// one `seen` stamps (from [`MetaBackend::get_stamped`]; `None`: only
    /// when nothing is there): a compare-and-swap. `false` (and nothing
    /// written) when the document changed, appeared or went away since.
    fn put_if(&self, key: &str, bytes: &[u8], seen: Option<Stamp>) -> Result<bool>;
    /// Removes the document; `false` when it was absent.
    fn delete(&self, key: &str) -> Result<bool>;
    /// Names directly under `key/`, sorted; empty when there are none.
    fn children(&self, key: &str) -> Result<Vec<String>>;
    /// Where `key` is, for error messages.
    fn locate(&self, key: &str) -> std::path::PathBuf;
}

/// Registry upload sessions' data.
pub trait UploadBackend {
    /// Creates session `id` with empty data.
    fn create_upload(&self, id: &str) -> Result<()>;
    /// Opens the data of session `id` for reading and appending; `None` when absent.
    fn open_upload(&self, id: &str) -> Result<Option<Box<dyn UploadData>>>;
    /// Removes session `id` and everything under it.
    fn remove_upload(&self, id: &str) -> Result<()>;
    /// Every session id present.
    fn list_uploads(&self) -> Result<Vec<String>>;
    /// When session `id` was created (for sessions a crash left without data).
    fn upload_created(&self, id: &str) -> Option<SystemTime>;
}

/// An open upload session's data.
pub trait UploadData: Send {
    /// Bytes stored.
    fn len(&self) -> io::Result<u64>;
    /// True when nothing is stored.
    fn is_empty(&self) -> io::Result<bool> {
        self.len().map(|n| n == 0)
    }
    /// Last change.
    fn modified(&self) -> Option<SystemTime>;
    /// Locks the session for this handle; `Ok(false)` when another holds it.
    /// Released when the handle is dropped.
    fn try_lock(&mut self) -> io::Result<bool>;
    /// Feeds the first `len` bytes to `f`, in order.
    fn read_prefix(&mut self, len: u64, f: &mut dyn FnMut(&[u8])) -> io::Result<()>;
    /// Positions appends at `at` (the current length).
    fn begin_append(&mut self, at: u64) -> io::Result<()>;
    /// Appends bytes.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Waits for background write-back started by appends.
    fn end_append(&mut self) -> io::Result<()>;
    /// Cuts the data back to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Makes the data the blob `d` (verified by the caller), never
    /// replacing an existing object; true when `d` existed.
    fn commit(&mut self, d: &Digest) -> Result<bool>;
    /// Where the data is, for error messages.
    fn location(&self) -> &Path;
}

/// A whole backend, as [`crate::Store`] holds it.
pub trait Backend: BlobBackend + MetaBackend + UploadBackend + fmt::Debug + Send + Sync + 'static {
    /// Where the store is, for messages (`<memory>` for the in-memory one).
    fn root(&self) -> &Path;
    /// The GC lock: shared while data becomes visible, exclusive for a GC's
    /// delete phase.
    fn lock_gc(&self, exclusive: bool) -> Result<Guard>;
    /// A cheap liveness check (a stat of the objects directory).
    fn probe(&self) -> Result<()>;
    /// The filesystem backend, for features only it has.
    fn fs(&self) -> Option<&fs::FsBackend> {
        None
    }
}

/// What every backend must do, checked on both.
#[cfg(test)]
mod contract {
    use std::io::Read;

    use super::*;
    use crate::store::StoreOptions;

    fn fs() -> (tempfile::TempDir, Box<dyn Backend>) {
        let t = tempfile::tempdir().unwrap();
        let b = fs::FsBackend::open(t.path(), &StoreOptions::default()).unwrap();
        (t, Box::new(b))
    }

    fn mem() -> (tempfile::TempDir, Box<dyn Backend>) {
        (tempfile::tempdir().unwrap(), Box::new(mem::MemBackend::new()))
    }

    fn read_all(b: &dyn Backend, d: &Digest) -> Vec<u8> {
        let mut out = Vec::new();
        b.read(d, 0, None).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    fn a_commit_never_replaces_an_existing_object(b: &dyn Backend) {
        let d = Digest::of(b"first");
        let mut s = b.create().unwrap();
        s.write(b"first").unwrap();
        assert!(!s.commit(&d).unwrap());
        let mut s = b.create().unwrap();
        s.write(b"second").unwrap();
        assert!(s.commit(&d).unwrap(), "an existing object is reported, not replaced");
        assert_eq!(read_all(b, &d), b"first");
        assert_eq!(b.list_blobs().unwrap().map(Result::unwrap).collect::<Vec<_>>(), vec![d]);
        assert_eq!(b.temporaries().unwrap(), 0);
    }

    fn a_dropped_sink_leaves_nothing(b: &dyn Backend) {
        let mut s = b.create().unwrap();
        s.write(b"partial").unwrap();
        assert_eq!(b.temporaries().unwrap(), 1);
        drop(s);
        assert_eq!(b.temporaries().unwrap(), 0);
        assert_eq!(b.list_blobs().unwrap().count(), 0);
    }

    fn create_only_put_never_replaces_and_put_does(b: &dyn Backend) {
        assert!(b.put_new("refs/a.json", b"one").unwrap());
        assert!(!b.put_new("refs/a.json", b"two").unwrap());
        assert_eq!(b.get("refs/a.json", 100).unwrap().unwrap(), b"one");
        b.put("registry/repositories/x/_tags/v1", b"d1").unwrap();
        b.put("registry/repositories/x/_tags/v1", b"d2").unwrap();
        b.put("registry/repositories/x/_tags/v2", b"d3").unwrap();
        assert_eq!(b.get("registry/repositories/x/_tags/v1", 100).unwrap().unwrap(), b"d2");
        assert_eq!(b.children("registry/repositories/x/_tags").unwrap(), vec!["v1", "v2"]);
        assert_eq!(b.children("registry/repositories").unwrap(), vec!["x"]);
        assert!(b.is_dir("registry/repositories/x") && !b.is_dir("registry/repositories/y"));
        assert!(b.exists("refs/a.json") && !b.exists("registry/repositories/x"));
        assert!(b.delete("registry/repositories/x/_tags/v1").unwrap());
        assert!(!b.delete("registry/repositories/x/_tags/v1").unwrap());
        assert_eq!(b.get("refs/absent.json", 100).unwrap(), None);
        assert!(b.children("nowhere").unwrap().is_empty());
        // A stamp names one version: a rewrite changes it.
        let before = b.stamp("registry/repositories/x/_tags/v2").unwrap();
        b.put("registry/repositories/x/_tags/v2", b"d4").unwrap();
        assert_ne!(b.stamp("registry/repositories/x/_tags/v2"), Some(before));
    }

    fn a_conditional_put_replaces_only_the_version_seen(b: &dyn Backend) {
        let k = "registry/repositories/x/_tags/latest";
        assert!(b.put_if(k, b"d1", None).unwrap(), "absent, as seen");
        assert!(!b.put_if(k, b"d9", None).unwrap(), "\"must be absent\" fails once it is there");
        let (got, s1) = b.get_stamped(k).unwrap().unwrap();
        assert_eq!(got, b"d1");
        assert!(b.put_if(k, b"d2", Some(s1)).unwrap(), "the version seen is replaced");
        assert!(!b.put_if(k, b"d3", Some(s1)).unwrap(), "a stale version loses");
        assert_eq!(b.get(k, 100).unwrap().unwrap(), b"d2", "and writes nothing");
        let (_, s2) = b.get_stamped(k).unwrap().unwrap();
        b.put(k, b"d4").unwrap();
        assert!(!b.put_if(k, b"d5", Some(s2)).unwrap(), "an unconditional write in between is seen");
        let (_, s4) = b.get_stamped(k).unwrap().unwrap();
        assert!(b.delete(k).unwrap());
        assert!(!b.put_if(k, b"d6", Some(s4)).unwrap(), "deleted meanwhile: nothing to replace");
        assert_eq!(b.get(k, 100).unwrap(), None, "and nothing written");
    }

    fn of_writers_that_saw_the_same_version_exactly_one_wins(b: &dyn Backend) {
        let k = "registry/repositories/x/_tags/race";
        for round in 0..3 {
            let seen = b.get_stamped(k).unwrap().map(|(_, s)| s);
            let go = std::sync::Barrier::new(4);
            let won: Vec<bool> = std::thread::scope(|sc| {
                let hs: Vec<_> = (0..4)
                    .map(|i| {
                        let go = &go;
                        sc.spawn(move || {
                            go.wait();
                            b.put_if(k, format!("r{round}w{i}").as_bytes(), seen).unwrap()
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(won.iter().filter(|w| **w).count(), 1, "round {round}: {won:?}");
            let winner = won.iter().position(|w| *w).unwrap();
            assert_eq!(b.get(k, 100).unwrap().unwrap(), format!("r{round}w{winner}").as_bytes());
        }
    }

    fn upload_data_appends_truncates_and_commits_as_a_blob(b: &dyn Backend) {
        b.create_upload("u1").unwrap();
        let mut u = b.open_upload("u1").unwrap().unwrap();
        assert!(u.try_lock().unwrap());
        assert!(!b.open_upload("u1").unwrap().unwrap().try_lock().unwrap(), "one writer at a time");
        u.begin_append(0).unwrap();
        u.append(b"hello").unwrap();
        u.append(b" world!").unwrap();
        u.end_append().unwrap();
        u.truncate(11).unwrap();
        assert_eq!(u.len().unwrap(), 11);
        let mut seen = Vec::new();
        u.read_prefix(5, &mut |c| seen.extend_from_slice(c)).unwrap();
        assert_eq!(seen, b"hello");
        let d = Digest::of(b"hello world");
        assert!(!u.commit(&d).unwrap());
        drop(u);
        b.remove_upload("u1").unwrap();
        assert!(b.open_upload("u1").unwrap().is_none());
        assert_eq!(read_all(b, &d), b"hello world");
    }

    fn a_blob_larger_than_a_part_round_trips_with_ranges_and_is_never_replaced(b: &dyn Backend) {
        // Two full parts and a bit: the object backend's multipart path.
        let data: Vec<u8> = (0..2 * object::PART_SIZE + 12345).map(|i| (i % 253) as u8).collect();
        let d = Digest::of(&data);
        let mut s = b.create().unwrap();
        for c in data.chunks(1 << 20) {
            s.write(c).unwrap();
        }
        assert!(!s.commit(&d).unwrap());
        assert_eq!(b.stat(&d).unwrap(), data.len() as u64);
        assert!(read_all(b, &d) == data, "the blob reads back whole");
        let (off, len) = (object::PART_SIZE as u64 - 10, 20);
        let mut part = Vec::new();
        b.read(&d, off, Some(len)).unwrap().read_to_end(&mut part).unwrap();
        assert_eq!(part, &data[off as usize..(off + len) as usize], "a range across a part boundary");
        let mut s = b.create().unwrap();
        s.write(&data[..object::PART_SIZE + 1]).unwrap();
        assert!(s.commit(&d).unwrap(), "an existing object is reported, not replaced");
        assert!(read_all(b, &d) == data);
        assert_eq!(b.temporaries().unwrap(), 0, "no temp object is left behind");
    }

    macro_rules! on_both {
        ($($t:ident),* $(,)?) => {
            mod on_fs { $(#[test] fn $t() { let (_t, b) = super::fs(); super::$t(&*b) })* }
            mod on_mem { $(#[test] fn $t() { let (_t, b) = super::mem(); super::$t(&*b) })* }
        };
    }

    on_both!(
        a_commit_never_replaces_an_existing_object,
        a_dropped_sink_leaves_nothing,
        create_only_put_never_replaces_and_put_does,
        a_conditional_put_replaces_only_the_version_seen,
        of_writers_that_saw_the_same_version_exactly_one_wins,
        upload_data_appends_truncates_and_commits_as_a_blob,
        a_blob_larger_than_a_part_round_trips_with_ranges_and_is_never_replaced,
    );

    /// The same contract on `object_store`'s in-memory store: the object
    /// backend is generic over `ObjectStore`.
    mod on_object_mem {
        fn be() -> Box<dyn super::Backend> {
            let st = std::sync::Arc::new(object_store::memory::InMemory::new());
            Box::new(super::object::ObjectBackend::new(st, "memory://", "p").unwrap())
        }
        macro_rules! on_object_mem {
            ($($t:ident),* $(,)?) => { $(#[test] fn $t() { super::$t(&*be()) })* };
        }
        on_object_mem!(
            a_commit_never_replaces_an_existing_object,
            a_dropped_sink_leaves_nothing,
            create_only_put_never_replaces_and_put_does,
            a_conditional_put_replaces_only_the_version_seen,
            of_writers_that_saw_the_same_version_exactly_one_wins,
            a_blob_larger_than_a_part_round_trips_with_ranges_and_is_never_replaced,
            upload_data_appends_truncates_and_commits_as_a_blob,
        );
    }

    /// The same contract on a bucket of a real S3 server (moto), when installed.
    mod on_s3 {
        use super::*;

        fn s3(test: &str) -> Option<(cairn_testkit::s3::MotoServer, Box<dyn Backend>)> {
            let m = cairn_testkit::s3::MotoServer::start(test)?;
            let mut o = object::S3Options::new(&m.bucket, &m.region);
            o.endpoint = Some(m.endpoint.clone());
            o.credentials = Some((m.access_key.clone(), m.secret_key.clone()));
            o.prefix = "a/prefix".into();
            let b = object::ObjectBackend::s3(&o).unwrap();
            Some((m, Box::new(b)))
        }

        macro_rules! on_s3 {
            ($($t:ident),* $(,)?) => {
                $(#[test] fn $t() { if let Some((_m, b)) = s3(stringify!($t)) { super::$t(&*b) } })*
            };
        }

        on_s3!(
            a_commit_never_replaces_an_existing_object,
            a_dropped_sink_leaves_nothing,
            create_only_put_never_replaces_and_put_does,
            a_conditional_put_replaces_only_the_version_seen,
            of_writers_that_saw_the_same_version_exactly_one_wins,
            a_blob_larger_than_a_part_round_trips_with_ranges_and_is_never_replaced,
            upload_data_appends_truncates_and_commits_as_a_blob,
        );
    }
}
