//! Garbage collection: delete blobs no root references.
//!
//! Two phases. The scan takes no lock: it reads the roots and picks the
//! unreferenced blobs older than the grace period. The delete phase takes the
//! GC lock exclusively (puts and manifest saves hold it shared while they
//! make data visible), then reads the roots again and re-stats each
//! candidate, so a blob that a concurrent put refreshed or a concurrent
//! manifest save started to reference is kept.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::name::RefFile;
use crate::store::Store;

/// Default grace period: blobs younger than this are never collected, so an
/// upload whose manifest is not saved yet survives.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// Options for [`Store::gc`].
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Keep unreferenced blobs modified less than this long ago.
    pub grace: Duration,
    /// Only report what would be deleted.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions { grace: DEFAULT_GRACE, dry_run: false }
    }
}

/// What a GC deleted (or, in a dry run, would delete).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// The blobs and their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// Their total size.
    pub bytes: u64,
    /// Blobs kept because a root references them.
    pub referenced: u64,
    /// Unreferenced blobs kept because they are younger than the grace period.
    pub young: u64,
    /// Temporaries older than the grace period removed (an object store's
    /// `tmp/` leftovers; 0 on disk, where opening the store clears them).
    pub temporaries: u64,
}

/// Only the field GC needs, read leniently: a manifest written by another
/// tool may hold object paths a checkout would refuse, and its blobs must
/// still count as referenced.
#[derive(serde::Deserialize)]
struct RootsOnly {
    #[serde(alias = "Objects", default)]
    objects: BTreeMap<String, Digest>,
}

impl Store {
    /// Every blob that must survive a GC: the objects of every manifest in
    /// `refs/`. [`Store::gc`] adds the registry's roots to these.
    ///
    /// A manifest that cannot be read fails the whole call: collecting
    /// without its roots could delete blobs it needs.
    pub fn gc_roots(&self) -> Result<HashSet<Digest>> {
        let mut roots = HashSet::new();
        for name in self.backend().children(crate::backend::keys::REFS)? {
            if !name.ends_with(".json") {
                continue;
            }
            let unreadable = |reason: String| StoreError::InvalidManifest {
                what: format!("refs/{name}"),
                reason: format!("{reason}; GC refuses to run until it is fixed or removed"),
            };
            let rf = RefFile::parse(&name).map_err(|e| unreadable(e.to_string()))?;
            let bytes = match self.manifest_bytes(&rf) {
                Ok(b) => b,
                // Deleted since the directory was read.
                Err(StoreError::ManifestNotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let m: RootsOnly = serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
            roots.extend(m.objects.into_values());
        }
        Ok(roots)
    }

    /// Deletes unreferenced blobs older than `opts.grace` (see the module docs).
    pub fn gc(&self, opts: GcOptions) -> Result<GcReport> {
        self.check_writable()?;
        let mut report = GcReport::default();
        let roots = self.all_roots(opts.grace)?;
        let mut candidates = Vec::new();
        let cutoff = SystemTime::now().checked_sub(opts.grace).unwrap_or(SystemTime::UNIX_EPOCH);
        for d in self.list()? {
            let d = d?;
            if roots.contains(&d) {
                report.referenced += 1;
                continue;
            }
            match self.blob_mtime(&d)? {
                Some((_, mtime)) if mtime > cutoff => report.young += 1,
                Some((size, _)) => candidates.push((d, size)),
                None => {}
            }
        }
        if opts.dry_run {
            report.bytes = candidates.iter().map(|c| c.1).sum();
            report.blobs = candidates;
            return Ok(report);
        }
        report.temporaries = self.backend().sweep_temporaries(cutoff)? as u64;
        if candidates.is_empty() {
            return Ok(report);
        }
        let _lock = self.gc_exclusive()?;
        // Saves and puts that finished while we scanned are visible now.
        let roots = self.all_roots(opts.grace)?;
        let cutoff = SystemTime::now().checked_sub(opts.grace).unwrap_or(SystemTime::UNIX_EPOCH);
        for (d, _) in candidates {
            if roots.contains(&d) {
                report.referenced += 1;
                continue;
            }
            match self.blob_mtime(&d)? {
                Some((_, mtime)) if mtime > cutoff => report.young += 1,
                Some((size, _)) if self.remove_blob(&d)? => {
                    report.bytes += size;
                    report.blobs.push((d, size));
                }
                _ => {}
            }
        }
        if !report.blobs.is_empty() {
            self.backend().sync_deletes()?;
        }
        Ok(report)
    }

    /// Manifest roots plus the registry's (tagged closures, referrers, and
    /// pushes younger than `grace`).
    fn all_roots(&self, grace: Duration) -> Result<HashSet<Digest>> {
        let mut roots = self.gc_roots()?;
        roots.extend(self.registry_roots(grace)?);
        roots.extend(self.held_pins()?);
        Ok(roots)
    }

    /// Size and mtime of a blob; `None` when it is gone.
    fn blob_mtime(&self, d: &Digest) -> Result<Option<(u64, SystemTime)>> {
        self.backend().stat_mtime(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::RefName;
    use crate::refs::Manifest;
    use crate::testing::{Env, both_backends};

    both_backends!(
        gc_deletes_only_old_unreferenced_blobs,
        gc_refuses_to_run_with_an_unreadable_manifest,
        gc_roots_include_manifests_with_paths_checkout_would_refuse,
    );

    fn gc_deletes_only_old_unreferenced_blobs(env: &Env) {
        let s = env.store();
        let kept = s.put_reader(&b"kept"[..], None).unwrap().digest;
        let old = s.put_reader(&b"old garbage"[..], None).unwrap().digest;
        let young = s.put_reader(&b"young garbage"[..], None).unwrap().digest;
        let mut m = Manifest::new(&RefName::parse("m").unwrap());
        m.objects.insert("a".into(), kept);
        s.save_manifest(&m).unwrap();
        env.age(&kept, 7200);
        env.age(&old, 7200);

        let dry = s.gc(GcOptions { dry_run: true, ..Default::default() }).unwrap();
        assert_eq!(dry.blobs, vec![(old, 11)]);
        assert!(s.exists(&old), "dry run deleted a blob");

        let r = s.gc(GcOptions::default()).unwrap();
        assert_eq!((r.blobs, r.bytes, r.referenced, r.young), (vec![(old, 11)], 11, 1, 1));
        assert!(!s.exists(&old));
        assert!(s.exists(&kept) && s.exists(&young));
    }

    fn gc_refuses_to_run_with_an_unreadable_manifest(env: &Env) {
        let s = env.store();
        let d = s.put_reader(&b"x"[..], None).unwrap().digest;
        env.age(&d, 7200);
        env.plant("refs/broken-000000000000.json", b"{not json");
        let e = s.gc(GcOptions::default()).unwrap_err().to_string();
        assert!(e.contains("broken-000000000000.json") && e.contains("GC refuses"), "{e}");
        assert!(s.exists(&d));
    }

    fn gc_roots_include_manifests_with_paths_checkout_would_refuse(env: &Env) {
        let s = env.store();
        let d = s.put_reader(&b"x"[..], None).unwrap().digest;
        let json = format!(r#"{{"Name":"old","Objects":{{"/abs/../path":"{d}"}}}}"#);
        env.plant("refs/old-000000000000.json", json.as_bytes());
        assert!(s.gc_roots().unwrap().contains(&d));
    }
}
