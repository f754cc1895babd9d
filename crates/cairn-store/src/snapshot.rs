//! Snapshot: store a directory tree as blobs plus a manifest.
//!
//! The tree is walked once (metadata only), then its regular files are
//! hashed into `tmp/` on all cores. One `syncfs` makes them durable, they are
//! linked into `objects/` (identical files become one blob) and the manifest
//! is saved, all under the shared GC lock so a GC cannot collect a new blob
//! before the manifest that references it exists.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::backend::fs::FsStaged;
use crate::blob::{BlobWriter, COPY_BUF};
use crate::error::{Result, StoreError};
use crate::name::{RefFile, RefName};
use crate::refs::{Manifest, check_object_path};
use crate::store::Store;

/// What a snapshot stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotReport {
    /// The saved manifest's file in `refs/`.
    pub ref_file: RefFile,
    /// Regular files in the tree.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Distinct blobs the store did not hold before.
    pub new_blobs: u64,
    /// Symlinks recorded.
    pub symlinks: u64,
    /// Directories recorded (the root itself excluded).
    pub dirs: u64,
    /// Sockets, FIFOs, device nodes and the data dir itself: not stored.
    pub skipped: Vec<PathBuf>,
}

struct FileEntry {
    rel: String,
    abs: PathBuf,
    size: u64,
}

impl Store {
    /// Stores the tree under `dir` and saves it as a new version of `name`.
    /// `progress(done_bytes, total_bytes)` is called after each file.
    pub fn snapshot(&self, dir: &Path, name: &RefName, progress: &(dyn Fn(u64, u64) + Sync)) -> Result<SnapshotReport> {
        self.check_writable()?;
        let meta = fs::metadata(dir).map_err(StoreError::io("stat", dir))?;
        if !meta.is_dir() {
            return Err(StoreError::SnapshotPath { path: dir.to_owned(), reason: "not a directory" });
        }
        let mut m = Manifest::new(name);
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        // Snapshotting a tree that holds the data dir must not store the store.
        let own = fs::metadata(self.root()).map(|m| (m.dev(), m.ino())).ok();
        walk(dir, own, &mut m, &mut files, &mut skipped)?;

        let total: u64 = files.iter().map(|f| f.size).sum();
        let done = AtomicU64::new(0);
        let (new_blobs, _gc) = if self.backend().fs().is_some() {
            let staged: Vec<FsStaged> = files
                .par_iter()
                .map(|f| {
                    let s = self.write_file_blob(&f.abs, f.size)?.stage()?;
                    progress(done.fetch_add(f.size, Ordering::Relaxed) + f.size, total);
                    Ok(s)
                })
                .collect::<Result<_>>()?;
            for (f, s) in files.iter().zip(&staged) {
                m.objects.insert(f.rel.clone(), s.digest());
            }
            let gc = self.gc_shared()?;
            let mut distinct: Vec<&FsStaged> = Vec::with_capacity(staged.len());
            let mut seen = std::collections::HashSet::new();
            for s in &staged {
                if seen.insert(s.digest()) {
                    distinct.push(s);
                }
            }
            (self.publish(&distinct)? as u64, gc)
        } else {
            // No batch sync to save: each blob is committed as it is written.
            let outs = files
                .par_iter()
                .map(|f| {
                    let out = self.write_file_blob(&f.abs, f.size)?.commit(None)?;
                    progress(done.fetch_add(f.size, Ordering::Relaxed) + f.size, total);
                    Ok(out)
                })
                .collect::<Result<Vec<_>>>()?;
            for (f, o) in files.iter().zip(&outs) {
                m.objects.insert(f.rel.clone(), o.digest);
            }
            (outs.iter().filter(|o| !o.existed).count() as u64, self.gc_shared()?)
        };
        let ref_file = self.save_manifest(&m)?;
        Ok(SnapshotReport {
            ref_file,
            files: files.len() as u64,
            bytes: total,
            new_blobs,
            symlinks: m.symlinks.len() as u64,
            dirs: m.dirs.len() as u64,
            skipped,
        })
    }

    fn write_file_blob(&self, path: &Path, size: u64) -> Result<BlobWriter> {
        let mut f = File::open(path).map_err(StoreError::io("open", path))?;
        let mut w = self.writer()?;
        let mut buf = vec![0u8; (size as usize).clamp(4096, COPY_BUF)];
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::Io { op: "read", path: path.to_owned(), source: e }),
            };
            w.write_all(&buf[..n]).map_err(StoreError::io("write temp file for", path))?;
        }
        Ok(w)
    }
}

/// Records every entry under `root` into `m` (dirs, modes, symlinks) and
/// collects the regular files to store.
fn walk(
    root: &Path,
    own: Option<(u64, u64)>,
    m: &mut Manifest,
    files: &mut Vec<FileEntry>,
    skipped: &mut Vec<PathBuf>,
) -> Result<()> {
    let mut stack = vec![(root.to_owned(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let rd = fs::read_dir(&dir).map_err(StoreError::io("read directory", &dir))?;
        for e in rd {
            let e = e.map_err(StoreError::io("read directory", &dir))?;
            let abs = e.path();
            let Some(file_name) = e.file_name().to_str().map(str::to_owned) else {
                return Err(StoreError::SnapshotPath { path: abs, reason: "the name is not valid UTF-8" });
            };
            let rel = if prefix.is_empty() { file_name } else { format!("{prefix}/{file_name}") };
            if check_object_path(&rel).is_err() {
                return Err(StoreError::SnapshotPath { path: abs, reason: "the name cannot be stored in a manifest" });
            }
            let meta = fs::symlink_metadata(&abs).map_err(StoreError::io("stat", &abs))?;
            let ft = meta.file_type();
            let mode = meta.permissions().mode() & 0o7777;
            if ft.is_dir() && own == Some((meta.dev(), meta.ino())) {
                tracing::info!(path = %abs.display(), "not storing the data dir inside the snapshot");
                skipped.push(abs);
            } else if ft.is_dir() {
                m.dirs.push(rel.clone());
                m.modes.insert(rel.clone(), mode);
                stack.push((abs, rel));
            } else if ft.is_symlink() {
                let target = fs::read_link(&abs).map_err(StoreError::io("read symlink", &abs))?;
                let Some(target) = target.to_str() else {
                    return Err(StoreError::SnapshotPath {
                        path: abs,
                        reason: "the symlink target is not valid UTF-8",
                    });
                };
                m.symlinks.insert(rel, target.to_owned());
            } else if ft.is_file() {
                m.modes.insert(rel.clone(), mode);
                files.push(FileEntry { rel, abs, size: meta.len() });
            } else {
                tracing::info!(path = %abs.display(), "skipping special file (socket, FIFO or device)");
                skipped.push(abs);
            }
        }
    }
    m.dirs.sort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Env, both_backends};
    use std::os::unix::fs::symlink;

    both_backends!(snapshot_records_files_modes_symlinks_and_empty_dirs, snapshot_of_a_file_is_refused);

    fn snapshot_records_files_modes_symlinks_and_empty_dirs(env: &Env) {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("a/empty")).unwrap();
        fs::write(src.join("a/one"), b"same").unwrap();
        fs::write(src.join("two"), b"same").unwrap();
        fs::write(src.join("run.sh"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("a/one", src.join("link")).unwrap();
        let s = env.store();
        let r = s.snapshot(&src, &RefName::parse("tree").unwrap(), &|_, _| {}).unwrap();
        assert_eq!((r.files, r.bytes, r.new_blobs, r.symlinks, r.dirs), (3, 18, 2, 1, 2));
        let m = s.load_manifest(&r.ref_file).unwrap();
        assert_eq!(m.objects["a/one"], m.objects["two"]);
        assert_eq!(m.modes["run.sh"], 0o755);
        assert_eq!(m.symlinks["link"], "a/one");
        assert_eq!(m.dirs, vec!["a".to_string(), "a/empty".to_string()]);
        assert_eq!(s.list().unwrap().count(), 2);
        assert_eq!(s.temporaries().unwrap(), 0);
    }

    /// Filesystem only: a data dir inside the tree.
    #[test]
    fn snapshot_of_a_tree_holding_the_data_dir_leaves_the_store_out() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("f"), b"file").unwrap();
        let s = Store::open(t.path().join("data")).unwrap();
        s.put_reader(&b"already stored"[..], None).unwrap();
        let r = s.snapshot(t.path(), &RefName::parse("all").unwrap(), &|_, _| {}).unwrap();
        assert_eq!((r.files, r.dirs), (1, 0));
        assert_eq!(r.skipped, vec![t.path().join("data")]);
    }

    fn snapshot_of_a_file_is_refused(env: &Env) {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("f"), b"x").unwrap();
        let s = env.store();
        let e = s.snapshot(&t.path().join("f"), &RefName::parse("x").unwrap(), &|_, _| {}).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert!(s.list_manifests().unwrap().is_empty());
    }
}
