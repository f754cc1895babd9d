//! The filesystem backend: the original store's on-disk layout.
//!
//! ```text
//! <data dir>/
//!   objects/<64 hex>            one blob per file, plain bytes, read-only (original layout)
//!   refs/<name>-<12 hex>.json   blob manifests (original layout)
//!   tmp/<random>.part           blobs being written; swept when the store opens unshared
//!   tmp/<random>.partial        swarm transfers (pieces in any order, `Store::partial`); swept the same way
//!   quarantine/<64 hex>         blobs that failed `verify`; never served
//!   registry/                   OCI registry metadata, plain files written atomically:
//!     repositories/<repo name>/   one dir per repository (names may hold '/'; no component starts with '_')
//!       _manifests/<64 hex>       manifest in this repo; content: its media type
//!       _blobs/<64 hex>           blob linked into this repo (pushed, mounted or referenced); empty
//!       _pushed/<64 hex>          a manifest or blob a client pushed here (not the mirror); empty
//!       _tags/<tag>               content: sha256:<hex> of the tagged manifest
//!       _referrers/<subject hex>/<64 hex>  descriptor JSON of a manifest whose subject is <subject hex>
//!     uploads/<32 hex>/           one upload session
//!       info.json                 {"repo", "started"}
//!       data                      bytes received so far (linked into objects/ when finished)
//!   replication/<64 hex>        a blob held as one of `replicas` copies; content: `pushed|replica <pusher id>`
//!   .cairn.lock                 shared by every writer, exclusive only for the temp sweep
//!   .cairn-gc.lock              shared by put/manifest save, exclusive during a GC sweep
//!   .cairn-meta.lock            exclusive around a conditional metadata write (tag updates)
//! ```
//!
//! Durability: every file is written under `tmp/` (same filesystem), fsynced,
//! then hard-linked (blobs, refs: a link never replaces) or renamed
//! (registry metadata) into place, and the directory fsynced. Nothing under
//! the data dir is opened through a symlink (`O_NOFOLLOW`).

mod blobs;
mod meta;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use blobs::FsStaged;
pub(crate) use blobs::WriteBack;

use super::{Backend, Guard};
use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::nofollow;
use crate::store::{Access, StoreOptions};

/// Paths inside one data directory; private to this backend.
#[derive(Debug, Clone)]
struct Layout {
    root: PathBuf,
}

impl Layout {
    fn objects_dir(&self) -> PathBuf {
        self.root.join("objects")
    }
    fn object(&self, d: &Digest) -> PathBuf {
        self.objects_dir().join(d.to_string())
    }
    /// Same filesystem as `objects/`, so a rename or link is atomic.
    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    fn quarantined(&self, d: &Digest) -> PathBuf {
        self.root.join("quarantine").join(d.to_string())
    }
    /// A metadata key as a path.
    fn key(&self, key: &str) -> PathBuf {
        let mut p = self.root.clone();
        p.extend(key.split('/'));
        p
    }
    fn upload_dir(&self, id: &str) -> PathBuf {
        self.root.join("registry").join("uploads").join(id)
    }
    fn upload_data(&self, id: &str) -> PathBuf {
        self.upload_dir(id).join("data")
    }
    fn dirs(&self) -> [PathBuf; 4] {
        [self.objects_dir(), self.root.join("refs"), self.tmp_dir(), self.root.join("quarantine")]
    }
}

/// A data directory on a local filesystem; cheap to clone.
#[derive(Debug, Clone)]
pub struct FsBackend {
    s: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    layout: Layout,
    fsync: bool,
    // Held for the life of the handle: a shared flock tells other openers
    // that temp files may belong to a live writer.
    _lock: Option<File>,
}

impl FsBackend {
    /// Opens the data dir at `root`. Read-write: creates the directories,
    /// takes a shared lock, and when no other process has the dir open,
    /// removes temp files left by a crash.
    pub fn open(root: &Path, opts: &StoreOptions) -> Result<FsBackend> {
        let layout = Layout { root: root.to_owned() };
        let lock = match opts.access {
            Access::ReadOnly => {
                if !layout.root.is_dir() {
                    return Err(StoreError::Io {
                        op: "open data dir",
                        path: layout.root.clone(),
                        source: io::Error::new(
                            io::ErrorKind::NotFound,
                            "no such directory (nothing has been stored yet?)",
                        ),
                    });
                }
                None
            }
            Access::ReadWrite => {
                for d in layout.dirs() {
                    fs::create_dir_all(&d).map_err(StoreError::io("create directory", &d))?;
                }
                let path = layout.root.join(".cairn.lock");
                let f = open_lock_file(&path, "open lock file")?;
                // Exclusive means no live writer: any temp file is a crash leftover.
                if f.try_lock().is_ok() {
                    sweep_tmp(&layout)?;
                    f.unlock().map_err(StoreError::io("unlock", &path))?;
                }
                f.lock_shared().map_err(StoreError::io("lock", &path))?;
                Some(f)
            }
        };
        Ok(FsBackend { s: Arc::new(Shared { layout, fsync: opts.fsync, _lock: lock }) })
    }

    fn layout(&self) -> &Layout {
        &self.s.layout
    }

    /// The object file of `d`, for hard-link checkouts (a reader of it must
    /// not follow a symlink: open it with `O_NOFOLLOW`).
    pub fn object_path(&self, d: &Digest) -> PathBuf {
        self.layout().object(d)
    }

    /// Bytes available to this process on the data dir's filesystem.
    pub fn free_space(&self) -> io::Result<u64> {
        let st = rustix::fs::statvfs(self.layout().tmp_dir()).map_err(io::Error::from)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        if self.s.fsync {
            File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::io("fsync directory", dir))?;
        }
        Ok(())
    }

    /// Writes `bytes` to a new temp file (fsynced when the store fsyncs)
    /// and returns its path; `ext` names what it is. The caller links or
    /// renames it into place, and removes it on failure.
    fn write_temp(&self, ext: &str, bytes: &[u8]) -> Result<PathBuf> {
        let tmp = self.layout().tmp_dir().join(format!("{:016x}.{ext}", rand::random::<u64>()));
        let res = (|| {
            let mut f =
                OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(StoreError::io("create", &tmp))?;
            f.write_all(bytes).map_err(StoreError::io("write", &tmp))?;
            if self.s.fsync {
                f.sync_all().map_err(StoreError::io("fsync", &tmp))?;
            }
            Ok(())
        })();
        match res {
            Ok(()) => Ok(tmp),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// The lock of conditional metadata writes ([`MetaBackend::put_if`]).
    fn lock_meta(&self) -> Result<File> {
        let p = self.layout().root.join(".cairn-meta.lock");
        let f = open_lock_file(&p, "open metadata lock")?;
        f.lock().map_err(StoreError::io("lock", &p))?;
        Ok(f)
    }

    /// The one atomic write: `bytes` to `path` so readers see the old file
    /// or the new one, never a part: temp file in `tmp/`, fsync, rename,
    /// fsync the directory.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let dir = path.parent().ok_or_else(|| StoreError::Io {
            op: "write",
            path: path.to_owned(),
            source: io::Error::other("path has no parent directory"),
        })?;
        fs::create_dir_all(dir).map_err(StoreError::io("create directory", dir))?;
        let tmp = self.write_temp("meta", bytes)?;
        if let Err(e) = fs::rename(&tmp, path) {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::Io { op: "rename into place", path: path.to_owned(), source: e });
        }
        self.sync_dir(dir)
    }

    /// The one "link into objects": makes the complete, verified file at
    /// `src` (inside the data dir, already synced and read-only) the object
    /// `d`. A hard link never replaces an existing object, so a concurrent
    /// writer of the same blob cannot disturb a reader or a hard link taken
    /// elsewhere; an existing one only has its mtime refreshed. A planted
    /// symlink holding the name is replaced by the verified bytes (rename
    /// replaces the link itself, never its target). Returns true when `d`
    /// existed. The objects directory is not synced here: see
    /// [`FsBackend::sync_objects`].
    fn link_object(&self, src: &Path, d: &Digest) -> Result<bool> {
        let dest = self.layout().object(d);
        match fs::hard_link(src, &dest) {
            Ok(()) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match super::BlobBackend::touch(self, d) {
                Ok(()) => Ok(true),
                Err(StoreError::Symlink(_)) => {
                    fs::rename(src, &dest).map_err(StoreError::io("replace symlink in objects", &dest))?;
                    Ok(false)
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(StoreError::Io { op: "link into objects", path: dest, source: e }),
        }
    }

    /// Fsyncs `objects/` after new links.
    fn sync_objects(&self) -> Result<()> {
        self.sync_dir(&self.layout().objects_dir())
    }

    /// Makes `f` (open on `path`) durable and read-only, ready to link.
    fn seal(&self, f: &File, path: &Path) -> Result<()> {
        if self.s.fsync {
            f.sync_all().map_err(StoreError::io("fsync", path))?;
        }
        let mut perms = f.metadata().map_err(StoreError::io("stat", path))?.permissions();
        perms.set_readonly(true);
        f.set_permissions(perms).map_err(StoreError::io("chmod", path))
    }
}

fn open_lock_file(p: &Path, op: &'static str) -> Result<File> {
    OpenOptions::new().create(true).truncate(false).read(true).write(true).open(p).map_err(StoreError::io(op, p))
}

impl Backend for FsBackend {
    fn root(&self) -> &Path {
        &self.layout().root
    }

    fn lock_gc(&self, exclusive: bool) -> Result<Guard> {
        let p = self.layout().root.join(".cairn-gc.lock");
        let f = open_lock_file(&p, "open gc lock")?;
        if exclusive { f.lock() } else { f.lock_shared() }.map_err(StoreError::io("lock", &p))?;
        Ok(Box::new(f))
    }

    fn probe(&self) -> Result<()> {
        let dir = self.layout().objects_dir();
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(StoreError::Io {
                op: "stat",
                path: dir,
                source: io::Error::new(io::ErrorKind::NotADirectory, "the objects directory is not a directory"),
            }),
            Err(e) => Err(StoreError::Io { op: "stat", path: dir, source: e }),
        }
    }

    fn fs(&self) -> Option<&FsBackend> {
        Some(self)
    }
}

fn sweep_tmp(layout: &Layout) -> Result<()> {
    let dir = layout.tmp_dir();
    let entries = fs::read_dir(&dir).map_err(StoreError::io("read directory", &dir))?;
    let mut removed = 0usize;
    for e in entries {
        let e = e.map_err(StoreError::io("read directory", &dir))?;
        let p = e.path();
        let res = if e.file_type().is_ok_and(|t| t.is_dir()) { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        res.map_err(StoreError::io("remove leftover temp file", &p))?;
        removed += 1;
    }
    if removed > 0 {
        tracing::info!(removed, dir = %dir.display(), "removed temp files left by an earlier crash");
    }
    Ok(())
}

/// Names of the entries of `dir` (UTF-8 ones), sorted; an absent dir is empty.
fn dir_names(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::Io { op: "read directory", path: dir.to_owned(), source: e }),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(StoreError::io("read directory", dir))?;
        if let Some(n) = e.file_name().to_str() {
            out.push(n.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// Maps an open error through `nofollow`: NotFound becomes `None`.
fn open_nofollow(p: &Path, op: &'static str) -> Result<Option<File>> {
    match nofollow::open(p) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(nofollow::error(op, p)(e)),
    }
}
