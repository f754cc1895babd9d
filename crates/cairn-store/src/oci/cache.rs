//! An in-memory cache for manifest GET: tag -> digest, and the bytes and
//! media type of small manifests, so a hit costs three stats instead of
//! three reads, a stat and a hop to a blocking thread.
//!
//! Other processes (the `cairn registry` CLI, a second server on the same
//! data dir, `cairn gc`) change the files behind it, so nothing is trusted
//! without a check on disk. An entry records the identity of the file it
//! was read from ([`Stamp`]: device, inode, size, mtime, ctime), taken with
//! `fstat` on the very descriptor it was read through. A hit re-stats the
//! tag file and the manifest link and needs both stamps unchanged, and the
//! object still present (GC or `verify` may have removed it).
//!
//! Metadata files are never rewritten in place: every change is a new
//! inode renamed over the path (or an unlink). A new file could reuse a
//! freed inode number, so an entry is only kept when the file's ctime was
//! at least [`SETTLED`] old when it was read: any file written later has a
//! later ctime, so its stamp differs (the "racy git" rule; a wall clock
//! stepped back by more than [`SETTLED`] defeats it, as it does git's).

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::digest::Digest;
use crate::oci::repo::{RepoName, Tag};

/// Files changed more recently than this are read but not cached (the default).
pub const SETTLED: Duration = Duration::from_secs(1);
/// Largest manifest kept in memory.
pub const MAX_CACHED_MANIFEST: usize = 64 << 10;
/// At most this many manifests are kept...
pub const MAX_MANIFESTS: usize = 1024;
/// ...holding at most this many bytes together.
pub const MAX_MANIFEST_BYTES: usize = 16 << 20;
/// At most this many tags are kept.
pub const MAX_TAGS: usize = 4096;

/// The identity of one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// A stamp from its parts (backends other than the filesystem number
    /// their versions in `ino`).
    pub fn new(dev: u64, ino: u64, size: u64, mtime: (i64, i64), ctime: (i64, i64)) -> Stamp {
        Stamp { dev, ino, size, mtime, ctime }
    }

    /// The stamp of a file's metadata.
    pub(crate) fn from_meta(m: &Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// True when the file was last changed at least `settle` before now.
    fn settled(&self, settle: Duration) -> bool {
        let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else { return false };
        let Ok(secs) = u64::try_from(self.ctime.0) else { return false };
        let ctime = Duration::new(secs, u32::try_from(self.ctime.1).unwrap_or(0));
        now.checked_sub(ctime).is_some_and(|age| age >= settle)
    }
}

struct TagEntry {
    stamp: Stamp,
    digest: Digest,
    used: u64,
}

struct ManifestEntry {
    link: Stamp,
    media_type: Arc<str>,
    bytes: Arc<[u8]>,
    used: u64,
}

#[derive(Default)]
struct Inner {
    tags: HashMap<RepoName, HashMap<Tag, TagEntry>>,
    manifests: HashMap<RepoName, HashMap<Digest, ManifestEntry>>,
    n_tags: usize,
    n_manifests: usize,
    bytes: usize,
    clock: u64,
}

/// A cached manifest: media type and bytes.
pub(crate) struct CachedManifest {
    pub(crate) media_type: Arc<str>,
    pub(crate) bytes: Arc<[u8]>,
}

/// The cache; shared by the clones of one [`crate::oci::Registry`].
pub(crate) struct ManifestCache {
    inner: Mutex<Inner>,
    settle: Duration,
}

impl Default for ManifestCache {
    fn default() -> Self {
        ManifestCache::new(SETTLED)
    }
}

impl ManifestCache {
    /// A cache that keeps only files changed at least `settle` ago.
    pub(crate) fn new(settle: Duration) -> Self {
        ManifestCache { inner: Mutex::default(), settle }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The maps stay consistent whatever panicked while holding the lock.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The digest `tag` points at, if cached with exactly `now` as its file's stamp.
    pub(crate) fn tag(&self, repo: &RepoName, tag: &Tag, now: Stamp) -> Option<Digest> {
        let mut g = self.lock();
        let inner = &mut *g;
        inner.clock += 1;
        let e = inner.tags.get_mut(repo)?.get_mut(tag)?;
        if e.stamp != now {
            return None;
        }
        e.used = inner.clock;
        Some(e.digest)
    }

    /// The manifest `d` of `repo`, if cached with `link` as its link file's stamp.
    pub(crate) fn manifest(&self, repo: &RepoName, d: &Digest, link: Stamp) -> Option<CachedManifest> {
        let mut g = self.lock();
        let inner = &mut *g;
        inner.clock += 1;
        let e = inner.manifests.get_mut(repo)?.get_mut(d)?;
        if e.link != link {
            return None;
        }
        e.used = inner.clock;
        Some(CachedManifest { media_type: Arc::clone(&e.media_type), bytes: Arc::clone(&e.bytes) })
    }

    /// Remembers what a tag file read said, when the file has settled.
    pub(crate) fn put_tag(&self, repo: &RepoName, tag: &Tag, stamp: Stamp, digest: Digest) {
        if !stamp.settled(self.settle) {
            return;
        }
        let mut g = self.lock();
        let inner = &mut *g;
        inner.clock += 1;
        let used = inner.clock;
        let old = inner.tags.entry(repo.clone()).or_default().insert(tag.clone(), TagEntry { stamp, digest, used });
        if old.is_none() {
            inner.n_tags += 1;
        }
        while inner.n_tags > MAX_TAGS {
            inner.evict_tag();
        }
    }

    /// Remembers a manifest read from disk, when it is small, its bytes
    /// match `d` and its link file has settled.
    pub(crate) fn put_manifest(&self, repo: &RepoName, d: &Digest, link: Stamp, media_type: &str, bytes: &[u8]) {
        if bytes.len() > MAX_CACHED_MANIFEST || !link.settled(self.settle) || Digest::of(bytes) != *d {
            return;
        }
        let mut g = self.lock();
        let inner = &mut *g;
        inner.clock += 1;
        let e = ManifestEntry { link, media_type: media_type.into(), bytes: bytes.into(), used: inner.clock };
        inner.bytes += bytes.len();
        match inner.manifests.entry(repo.clone()).or_default().insert(*d, e) {
            Some(old) => inner.bytes -= old.bytes.len(),
            None => inner.n_manifests += 1,
        }
        while inner.n_manifests > MAX_MANIFESTS || inner.bytes > MAX_MANIFEST_BYTES {
            inner.evict_manifest();
        }
    }

    /// Forgets a tag (it was re-pointed or deleted).
    pub(crate) fn forget_tag(&self, repo: &RepoName, tag: &Tag) {
        let mut g = self.lock();
        let inner = &mut *g;
        if let Some(m) = inner.tags.get_mut(repo)
            && m.remove(tag).is_some()
        {
            inner.n_tags -= 1;
            if m.is_empty() {
                inner.tags.remove(repo);
            }
        }
    }

    /// Forgets manifest `d` of `repo` and every tag of `repo` pointing at it.
    pub(crate) fn forget_manifest(&self, repo: &RepoName, d: &Digest) {
        let mut g = self.lock();
        let inner = &mut *g;
        if let Some(m) = inner.manifests.get_mut(repo)
            && let Some(old) = m.remove(d)
        {
            inner.n_manifests -= 1;
            inner.bytes -= old.bytes.len();
            if m.is_empty() {
                inner.manifests.remove(repo);
            }
        }
        if let Some(m) = inner.tags.get_mut(repo) {
            let before = m.len();
            m.retain(|_, e| e.digest != *d);
            inner.n_tags -= before - m.len();
            if m.is_empty() {
                inner.tags.remove(repo);
            }
        }
    }
}

impl Inner {
    fn evict_tag(&mut self) {
        let oldest = self.tags.iter().flat_map(|(r, m)| m.iter().map(move |(t, e)| (e.used, r, t))).min_by_key(|x| x.0);
        let Some((_, r, t)) = oldest else { return };
        let (r, t) = (r.clone(), t.clone());
        if let Some(m) = self.tags.get_mut(&r) {
            m.remove(&t);
            self.n_tags -= 1;
            if m.is_empty() {
                self.tags.remove(&r);
            }
        }
    }

    fn evict_manifest(&mut self) {
        let oldest =
            self.manifests.iter().flat_map(|(r, m)| m.iter().map(move |(d, e)| (e.used, r, *d))).min_by_key(|x| x.0);
        let Some((_, r, d)) = oldest else { return };
        let r = r.clone();
        if let Some(m) = self.manifests.get_mut(&r)
            && let Some(old) = m.remove(&d)
        {
            self.n_manifests -= 1;
            self.bytes -= old.bytes.len();
            if m.is_empty() {
                self.manifests.remove(&r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(ino: u64) -> Stamp {
        Stamp { dev: 1, ino, size: 72, mtime: (1, 0), ctime: (1, 0) }
    }

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    fn tag(s: &str) -> Tag {
        Tag::parse(s).unwrap()
    }

    #[test]
    fn tag_hit_needs_the_same_stamp() {
        let c = ManifestCache::default();
        let d = Digest::of(b"m");
        c.put_tag(&repo("a"), &tag("v1"), stamp(7), d);
        assert_eq!(c.tag(&repo("a"), &tag("v1"), stamp(7)), Some(d));
        assert_eq!(c.tag(&repo("a"), &tag("v1"), stamp(8)), None);
        assert_eq!(c.tag(&repo("b"), &tag("v1"), stamp(7)), None);
    }

    #[test]
    fn a_file_changed_within_the_settling_time_is_not_cached() {
        let c = ManifestCache::default();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let young = Stamp { ctime: (now.as_secs() as i64, 0), ..stamp(7) };
        c.put_tag(&repo("a"), &tag("v1"), young, Digest::of(b"m"));
        assert_eq!(c.tag(&repo("a"), &tag("v1"), young), None);
        c.put_manifest(&repo("a"), &Digest::of(b"m"), young, "t", b"m");
        assert!(c.manifest(&repo("a"), &Digest::of(b"m"), young).is_none());
    }

    #[test]
    fn manifest_whose_bytes_do_not_match_its_digest_is_not_cached() {
        let c = ManifestCache::default();
        c.put_manifest(&repo("a"), &Digest::of(b"m"), stamp(1), "t", b"not m");
        assert!(c.manifest(&repo("a"), &Digest::of(b"m"), stamp(1)).is_none());
        c.put_manifest(&repo("a"), &Digest::of(b"m"), stamp(1), "t", b"m");
        let hit = c.manifest(&repo("a"), &Digest::of(b"m"), stamp(1)).unwrap();
        assert_eq!((&*hit.media_type, &*hit.bytes), ("t", &b"m"[..]));
        assert!(c.manifest(&repo("a"), &Digest::of(b"m"), stamp(2)).is_none());
    }

    #[test]
    fn large_manifests_are_not_cached_and_the_count_bound_evicts_the_least_recently_used() {
        let c = ManifestCache::default();
        let big = vec![b'x'; MAX_CACHED_MANIFEST + 1];
        c.put_manifest(&repo("a"), &Digest::of(&big), stamp(1), "t", &big);
        assert!(c.manifest(&repo("a"), &Digest::of(&big), stamp(1)).is_none());
        let bodies: Vec<Vec<u8>> = (0..=MAX_MANIFESTS).map(|i| i.to_string().into_bytes()).collect();
        c.put_manifest(&repo("a"), &Digest::of(&bodies[0]), stamp(1), "t", &bodies[0]);
        c.put_manifest(&repo("a"), &Digest::of(&bodies[1]), stamp(1), "t", &bodies[1]);
        // Touch the first so the second is the oldest when the bound is hit.
        assert!(c.manifest(&repo("a"), &Digest::of(&bodies[0]), stamp(1)).is_some());
        for b in &bodies[2..] {
            c.put_manifest(&repo("a"), &Digest::of(b), stamp(1), "t", b);
        }
        assert_eq!(c.lock().n_manifests, MAX_MANIFESTS);
        assert!(c.manifest(&repo("a"), &Digest::of(&bodies[0]), stamp(1)).is_some());
        assert!(c.manifest(&repo("a"), &Digest::of(&bodies[1]), stamp(1)).is_none());
        assert!(c.manifest(&repo("a"), &Digest::of(&bodies[MAX_MANIFESTS]), stamp(1)).is_some());
    }

    #[test]
    fn byte_bound_evicts_until_the_total_fits() {
        let c = ManifestCache::default();
        let n = MAX_MANIFEST_BYTES / MAX_CACHED_MANIFEST + 1;
        for i in 0..n {
            let mut b = vec![b' '; MAX_CACHED_MANIFEST];
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
            c.put_manifest(&repo("a"), &Digest::of(&b), stamp(1), "t", &b);
        }
        let g = c.lock();
        assert!(g.bytes <= MAX_MANIFEST_BYTES);
        assert_eq!(g.n_manifests, MAX_MANIFEST_BYTES / MAX_CACHED_MANIFEST);
    }

    #[test]
    fn tag_bound_evicts_the_least_recently_used() {
        let c = ManifestCache::default();
        for i in 0..=MAX_TAGS {
            c.put_tag(&repo("a"), &tag(&format!("t{i}")), stamp(1), Digest::of(b"m"));
        }
        assert_eq!(c.lock().n_tags, MAX_TAGS);
        assert_eq!(c.tag(&repo("a"), &tag("t0"), stamp(1)), None);
        assert!(c.tag(&repo("a"), &tag(&format!("t{MAX_TAGS}")), stamp(1)).is_some());
    }

    #[test]
    fn forgetting_a_manifest_drops_the_tags_pointing_at_it() {
        let c = ManifestCache::default();
        let (d, other) = (Digest::of(b"m"), Digest::of(b"n"));
        c.put_manifest(&repo("a"), &d, stamp(1), "t", b"m");
        c.put_tag(&repo("a"), &tag("v1"), stamp(2), d);
        c.put_tag(&repo("a"), &tag("v2"), stamp(3), other);
        c.forget_manifest(&repo("a"), &d);
        assert!(c.manifest(&repo("a"), &d, stamp(1)).is_none());
        assert_eq!(c.tag(&repo("a"), &tag("v1"), stamp(2)), None);
        assert_eq!(c.tag(&repo("a"), &tag("v2"), stamp(3)), Some(other));
        c.forget_tag(&repo("a"), &tag("v2"));
        assert_eq!(c.tag(&repo("a"), &tag("v2"), stamp(3)), None);
        let g = c.lock();
        assert_eq!((g.n_tags, g.n_manifests, g.bytes), (0, 0, 0));
    }
}
