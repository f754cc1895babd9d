//! Checkout: rebuild a manifest's tree in a new directory.
//!
//! Everything that can be refused is refused before the first write: unsafe
//! object paths (absolute, `..`, through a symlink, file/dir clashes),
//! missing blobs, and a target that is not new or empty. Directories are
//! made first, then files, then symlinks, so no write can follow a symlink
//! the manifest creates; directory modes come last so a read-only
//! directory can still be filled.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::name::RefFile;
use crate::refs::{Manifest, check_object_path};
use crate::store::Store;

/// Mode of checked-out files the manifest gives none for.
const DEFAULT_FILE_MODE: u32 = 0o644;

/// Options for [`Store::checkout`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckoutOptions {
    /// Hard-link files from `objects/` instead of copying them. Linked files
    /// share the object's read-only inode. A file is copied instead when its
    /// mode differs from the object's in more than write bits (e.g. 0755),
    /// when the object itself is writable, or across filesystems.
    pub link: bool,
    /// Keep the setuid, setgid and sticky bits the manifest gives. Off by
    /// default: a manifest from a peer or client must not make a setuid
    /// binary (the manifest still records the bits either way).
    pub preserve_special_bits: bool,
}

/// Setuid, setgid and sticky.
const SPECIAL_BITS: u32 = 0o7000;

/// What a checkout wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckoutReport {
    /// Regular files written.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Files hard-linked from the store.
    pub linked: u64,
    /// Files cloned with `FICLONE` (filesystems with reflinks).
    pub cloned: u64,
    /// Files copied byte by byte.
    pub copied: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Directories created (the target excluded).
    pub dirs: u64,
}

/// A checked manifest: every path safe, ready to write.
struct Plan {
    dirs: BTreeSet<String>,
    files: Vec<(String, Digest, u32)>,
    symlinks: Vec<(String, String)>,
    dir_modes: Vec<(String, u32)>,
}

enum How {
    Linked,
    Cloned,
    Copied,
}

impl Store {
    /// Writes the tree of manifest `rf` into `target`, which must not exist
    /// or be an empty directory.
    pub fn checkout(
        &self,
        rf: &RefFile,
        target: &Path,
        opts: CheckoutOptions,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<CheckoutReport> {
        let bytes = self.manifest_bytes(rf)?;
        // Paths are checked by `plan` below, which names the unsafe one.
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::InvalidManifest { what: rf.to_string(), reason: e.to_string() })?;
        m.ref_name().map_err(|e| StoreError::InvalidManifest { what: rf.to_string(), reason: e.to_string() })?;
        let plan = plan(&m, opts.preserve_special_bits)?;
        // One stat per distinct object: presence, size and mode.
        let mut objs: BTreeMap<Digest, (u64, u32)> = BTreeMap::new();
        let mut missing = Vec::new();
        for d in m.digests() {
            match self.backend().stat_mode(&d) {
                Some(sm) => {
                    objs.insert(d, sm);
                }
                None => missing.push(d),
            }
        }
        if !missing.is_empty() {
            return Err(StoreError::MissingBlobs { name: m.name.clone(), missing });
        }
        check_target(target)?;

        fs::create_dir_all(target).map_err(StoreError::io("create directory", target))?;
        for d in &plan.dirs {
            let p = target.join(d);
            fs::create_dir(&p).map_err(StoreError::io("create directory", &p))?;
        }
        let mut work = Vec::with_capacity(plan.files.len());
        for (rel, d, mode) in &plan.files {
            let (size, obj_mode) = objs.get(d).copied().ok_or(StoreError::BlobNotFound(*d))?;
            work.push((rel, d, *mode, size, obj_mode));
        }
        let total: u64 = work.iter().map(|w| w.3).sum();
        let done = AtomicU64::new(0);
        let hows: Vec<How> = work
            .par_iter()
            .map(|&(rel, d, mode, size, obj_mode)| {
                let how = self.write_file(d, &target.join(rel), mode, obj_mode, opts.link)?;
                progress(done.fetch_add(size, Ordering::Relaxed) + size, total);
                Ok(how)
            })
            .collect::<Result<_>>()?;
        for (rel, to) in &plan.symlinks {
            let p = target.join(rel);
            std::os::unix::fs::symlink(to, &p).map_err(StoreError::io("create symlink", &p))?;
        }
        for (rel, mode) in plan.dir_modes.iter().rev() {
            let p = target.join(rel);
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).map_err(StoreError::io("chmod", &p))?;
        }
        let mut r = CheckoutReport {
            files: plan.files.len() as u64,
            bytes: total,
            symlinks: plan.symlinks.len() as u64,
            dirs: plan.dirs.len() as u64,
            ..Default::default()
        };
        for h in hows {
            match h {
                How::Linked => r.linked += 1,
                How::Cloned => r.cloned += 1,
                How::Copied => r.copied += 1,
            }
        }
        Ok(r)
    }

    fn write_file(&self, d: &Digest, dest: &Path, mode: u32, obj_mode: u32, link: bool) -> Result<How> {
        // Hard links and reflinks need the object as a file (filesystem backend).
        let Some(obj) = self.backend().fs().map(|fs| fs.object_path(d)) else {
            return self.copy_object(d, dest, mode);
        };
        if link {
            // A writable object (the original store wrote some) would let an
            // edit of the checkout corrupt the store, so it is copied.
            if obj_mode & 0o222 == 0 && (obj_mode & 0o7777) == (mode & !0o222) {
                match fs::hard_link(&obj, dest) {
                    Ok(()) => return Ok(How::Linked),
                    Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {}
                    Err(e) => {
                        return Err(StoreError::Io { op: "hard-link object to", path: dest.to_owned(), source: e });
                    }
                }
            }
        }
        let mut src = crate::nofollow::open(&obj).map_err(crate::nofollow::error("open", &obj))?;
        let mut out = create_new(dest)?;
        let how = if rustix::fs::ioctl_ficlone(&out, &src).is_ok() {
            How::Cloned
        } else {
            io::copy(&mut src, &mut out).map_err(StoreError::io("copy object to", dest))?;
            How::Copied
        };
        out.set_permissions(fs::Permissions::from_mode(mode)).map_err(StoreError::io("chmod", dest))?;
        Ok(how)
    }

    /// Copies the object's bytes through a reader (backends without files).
    fn copy_object(&self, d: &Digest, dest: &Path, mode: u32) -> Result<How> {
        let src = self.get(d)?;
        let mut out = create_new(dest)?;
        src.copy_to_file(&mut out).map_err(StoreError::io("copy object to", dest))?;
        out.set_permissions(fs::Permissions::from_mode(mode)).map_err(StoreError::io("chmod", dest))?;
        Ok(How::Copied)
    }
}

fn plan(m: &Manifest, preserve_special_bits: bool) -> Result<Plan> {
    let unsafe_path = |path: &str, reason: &'static str| StoreError::UnsafePath {
        name: m.name.clone(),
        path: path.to_owned(),
        reason,
    };
    let all = m.objects.keys().chain(m.symlinks.keys()).chain(&m.dirs).chain(m.modes.keys());
    for p in all.clone() {
        check_object_path(p).map_err(|r| unsafe_path(p, r))?;
    }
    let mut dirs: BTreeSet<String> = m.dirs.iter().cloned().collect();
    for p in m.objects.keys().chain(m.symlinks.keys()).chain(&m.dirs) {
        let mut prefix = String::new();
        let parts: Vec<&str> = p.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if m.symlinks.contains_key(&prefix) {
                return Err(unsafe_path(p, "it passes through a symlink the manifest creates"));
            }
            if m.objects.contains_key(&prefix) {
                return Err(unsafe_path(p, "it passes through a path the manifest lists as a file"));
            }
            dirs.insert(prefix.clone());
        }
    }
    for p in m.objects.keys() {
        if m.symlinks.contains_key(p) {
            return Err(unsafe_path(p, "it is listed as both a file and a symlink"));
        }
        if dirs.contains(p) {
            return Err(unsafe_path(p, "it is listed as both a file and a directory"));
        }
    }
    for (p, to) in &m.symlinks {
        if dirs.contains(p) {
            return Err(unsafe_path(p, "it is listed as both a symlink and a directory"));
        }
        if to.is_empty() || to.contains('\0') {
            return Err(unsafe_path(p, "its symlink target is empty or contains NUL"));
        }
    }
    let keep = if preserve_special_bits { 0o7777 } else { 0o7777 & !SPECIAL_BITS };
    let mode = |p: &str, default: u32| m.modes.get(p).map_or(default, |m| m & keep);
    Ok(Plan {
        files: m.objects.iter().map(|(p, d)| (p.clone(), *d, mode(p, DEFAULT_FILE_MODE))).collect(),
        symlinks: m.symlinks.iter().map(|(p, t)| (p.clone(), t.clone())).collect(),
        dir_modes: dirs.iter().filter(|d| m.modes.contains_key(*d)).map(|d| (d.clone(), mode(d, 0))).collect(),
        dirs,
    })
}

fn check_target(target: &Path) -> Result<()> {
    match fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Io { op: "stat", path: target.to_owned(), source: e }),
        Ok(_) => {
            let not_empty = || StoreError::TargetNotEmpty(PathBuf::from(target));
            let mut rd = fs::read_dir(target).map_err(|_| not_empty())?;
            if rd.next().is_some() { Err(not_empty()) } else { Ok(()) }
        }
    }
}

/// A new private file at `dest`; create_new never follows a symlink at the
/// final component, so a planted link cannot redirect the write.
fn create_new(dest: &Path) -> Result<fs::File> {
    OpenOptions::new().write(true).create_new(true).mode(0o600).open(dest).map_err(StoreError::io("create", dest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::RefName;

    fn manifest(objects: &[(&str, Digest)], symlinks: &[(&str, &str)]) -> Manifest {
        let mut m = Manifest::new(&RefName::parse("m").unwrap());
        m.objects = objects.iter().map(|(p, d)| (p.to_string(), *d)).collect();
        m.symlinks = symlinks.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect();
        m
    }

    #[test]
    fn plan_refuses_paths_through_symlinks_and_clashes() {
        let d = Digest::of(b"x");
        let cases: &[(Manifest, &str)] = &[
            (manifest(&[("l/x", d)], &[("l", "/etc")]), "l/x"),
            (manifest(&[("f", d), ("f/x", d)], &[]), "f/x"),
            (manifest(&[("a", d)], &[("a", "b")]), "a"),
            (manifest(&[("a/b", d)], &[("a", ".")]), "a/b"),
            (manifest(&[], &[("s", "")]), "s"),
        ];
        for (m, bad) in cases {
            match plan(m, false) {
                Err(StoreError::UnsafePath { path, .. }) => assert_eq!(path, *bad),
                other => panic!("{bad}: {:?}", other.err()),
            }
        }
    }

    #[test]
    fn plan_creates_implied_parent_dirs_in_order() {
        let d = Digest::of(b"x");
        let p = plan(&manifest(&[("a/b/c", d), ("z", d)], &[("a/l", "../z")]), false).unwrap();
        assert_eq!(p.dirs.into_iter().collect::<Vec<_>>(), vec!["a".to_string(), "a/b".to_string()]);
    }
}
