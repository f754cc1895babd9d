//! The repository index: which manifests and blobs each repository holds,
//! its tags, and the catalog of repositories.

use std::io;

use serde_json::json;

use crate::blob::BlobReader;
use crate::digest::Digest;
use crate::error::StoreError;
use crate::oci::cache::{Stamp, read_stamped};
use crate::oci::error::{OciError, OciResult};
use crate::oci::manifest::{MAX_MANIFEST_SIZE, parse_manifest};
use crate::oci::repo::{Reference, RepoName, Tag};
use crate::oci::{Registry, dir_names, remove_if_present};

/// What a manifest push stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedManifest {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// The digest of its `subject`, when it has one.
    pub subject: Option<Digest>,
}

/// A manifest read back.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    /// Its digest.
    pub digest: Digest,
    /// Its media type, as pushed.
    pub media_type: String,
    /// Its bytes (bounded by the manifest size limit at push).
    pub bytes: Vec<u8>,
}

fn parse_tag_file(p: &std::path::Path, s: &str) -> OciResult<Digest> {
    Digest::parse(s.trim()).map_err(|e| {
        StoreError::InvalidManifest { what: p.display().to_string(), reason: format!("corrupt tag file: {e}") }.into()
    })
}

fn read_small(p: &std::path::Path) -> OciResult<Option<String>> {
    match crate::nofollow::read_to_string(p) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // The registry never makes symlinks: a planted one stands for nothing.
        Err(e) if crate::nofollow::is_symlink_error(&e) => {
            tracing::warn!(path = %p.display(), "ignoring a symlink in the registry metadata");
            Ok(None)
        }
        Err(e) => Err(StoreError::Io { op: "read", path: p.to_owned(), source: e }.into()),
    }
}

impl Registry {
    /// Checks, stores and links a manifest pushed to `repo` under `reference`.
    /// Every blob and child manifest it references must already be present.
    pub fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> OciResult<PushedManifest> {
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(OciError::ManifestTooLarge { limit: MAX_MANIFEST_SIZE });
        }
        let digest = Digest::of(bytes);
        if let Reference::Digest(d) = reference
            && *d != digest
        {
            return Err(OciError::DigestMismatch { expected: *d, actual: digest });
        }
        let m = parse_manifest(bytes, content_type)?;
        let layout = self.store.layout();
        // Held from the existence check until the links are written, so a GC
        // cannot delete a referenced blob in between (its second root scan
        // then sees the new, young manifest link).
        let _gc = self.store.gc_shared()?;
        let mut missing: Vec<Digest> =
            m.blobs.iter().filter(|b| !b.external && !self.store.exists(&b.digest)).map(|b| b.digest).collect();
        missing.extend(
            m.manifests
                .iter()
                .filter(|c| {
                    !(crate::nofollow::is_file(&layout.repo_manifest(repo, &c.digest)) && self.store.exists(&c.digest))
                })
                .map(|c| c.digest),
        );
        if !missing.is_empty() {
            missing.dedup();
            return Err(OciError::ManifestBlobUnknown(missing));
        }
        self.store.put_reader(bytes, Some(&digest))?;
        for b in m.blobs.iter().filter(|b| !b.external) {
            self.link_blob(repo, &b.digest)?;
        }
        if let Some(s) = &m.subject {
            let mut desc = json!({"mediaType": m.media_type, "digest": digest.oci(), "size": bytes.len()});
            if let Some(t) = &m.artifact_type {
                desc["artifactType"] = json!(t);
            }
            if let Some(a) = &m.annotations {
                desc["annotations"] = json!(a);
            }
            self.store.write_atomic(&layout.repo_referrer(repo, &s.digest, &digest), desc.to_string().as_bytes())?;
        }
        self.store.write_atomic(&layout.repo_manifest(repo, &digest), m.media_type.as_bytes())?;
        if let Reference::Tag(t) = reference {
            self.store.write_atomic(&layout.repo_tag(repo, t), format!("{}\n", digest.oci()).as_bytes())?;
            self.cache.forget_tag(repo, t);
        }
        Ok(PushedManifest { digest, media_type: m.media_type, subject: m.subject.map(|s| s.digest) })
    }

    fn unknown_manifest(repo: &RepoName, reference: &Reference) -> OciError {
        OciError::ManifestUnknown { repo: repo.clone(), reference: reference.to_string() }
    }

    /// The digest a tag points at.
    pub fn tag_target(&self, repo: &RepoName, tag: &Tag) -> OciResult<Option<Digest>> {
        let p = self.store.layout().repo_tag(repo, tag);
        read_small(&p)?.map(|s| parse_tag_file(&p, &s)).transpose()
    }

    /// Resolves a reference to a manifest held by `repo`: its digest and media type.
    pub fn resolve(&self, repo: &RepoName, reference: &Reference) -> OciResult<(Digest, String)> {
        let digest = match reference {
            Reference::Digest(d) => *d,
            Reference::Tag(t) => self.tag_target(repo, t)?.ok_or_else(|| Self::unknown_manifest(repo, reference))?,
        };
        let media_type = read_small(&self.store.layout().repo_manifest(repo, &digest))?
            .filter(|_| self.store.exists(&digest))
            .ok_or_else(|| Self::unknown_manifest(repo, reference))?;
        Ok((digest, media_type))
    }

    /// Reads a manifest of `repo` by tag or digest (from memory when
    /// [`Registry::cached_manifest`] has it), and remembers it.
    pub fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> OciResult<StoredManifest> {
        if let Some(m) = self.cached_manifest(repo, reference) {
            return Ok(m);
        }
        let layout = self.store.layout();
        let unknown = || Self::unknown_manifest(repo, reference);
        let digest = match reference {
            Reference::Digest(d) => *d,
            Reference::Tag(t) => {
                let p = layout.repo_tag(repo, t);
                let (s, stamp) = read_stamped(&p).map_err(StoreError::io("read", &p))?.ok_or_else(unknown)?;
                let d = parse_tag_file(&p, &s)?;
                self.cache.put_tag(repo, t, stamp, d);
                d
            }
        };
        let lp = layout.repo_manifest(repo, &digest);
        let (media_type, link) = read_stamped(&lp).map_err(StoreError::io("read", &lp))?.ok_or_else(unknown)?;
        let p = layout.object(&digest);
        let bytes = match crate::nofollow::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(unknown()),
            Err(e) => return Err(StoreError::Io { op: "read", path: p, source: e }.into()),
        };
        self.cache.put_manifest(repo, &digest, link, &media_type, &bytes);
        Ok(StoredManifest { digest, media_type, bytes })
    }

    /// The manifest from memory, when it was read before and its tag file
    /// (for a tag), its link in `repo` and its object are unchanged on disk.
    /// Costs up to three stats and no reads, so it suits an async task;
    /// `None` means "ask [`Registry::get_manifest`]", not "absent".
    pub fn cached_manifest(&self, repo: &RepoName, reference: &Reference) -> Option<StoredManifest> {
        let layout = self.store.layout();
        let digest = match reference {
            Reference::Digest(d) => *d,
            Reference::Tag(t) => self.cache.tag(repo, t, Stamp::of(&layout.repo_tag(repo, t))?)?,
        };
        let m = self.cache.manifest(repo, &digest, Stamp::of(&layout.repo_manifest(repo, &digest))?)?;
        if !self.store.exists(&digest) {
            return None;
        }
        Some(StoredManifest { digest, media_type: m.media_type.to_string(), bytes: m.bytes.to_vec() })
    }

    /// Records that `repo` holds a manifest fetched from elsewhere (the mirror).
    pub fn link_manifest(&self, repo: &RepoName, digest: &Digest, media_type: &str) -> OciResult<()> {
        Ok(self.store.write_atomic(&self.store.layout().repo_manifest(repo, digest), media_type.as_bytes())?)
    }

    /// Deletes a tag, or a manifest by digest (with its tags and its referrer entry).
    pub fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> OciResult<()> {
        let layout = self.store.layout();
        match reference {
            Reference::Tag(t) => {
                self.cache.forget_tag(repo, t);
                if !remove_if_present(&layout.repo_tag(repo, t))? {
                    return Err(Self::unknown_manifest(repo, reference));
                }
            }
            Reference::Digest(d) => {
                if !crate::nofollow::is_file(&layout.repo_manifest(repo, d)) {
                    return Err(Self::unknown_manifest(repo, reference));
                }
                for t in self.tags(repo)? {
                    let t = Tag::parse(&t)?;
                    if self.tag_target(repo, &t)? == Some(*d) {
                        remove_if_present(&layout.repo_tag(repo, &t))?;
                    }
                }
                if let Ok(bytes) = crate::nofollow::read(&layout.object(d))
                    && let Ok(m) = parse_manifest(&bytes, None)
                    && let Some(s) = m.subject
                {
                    remove_if_present(&layout.repo_referrer(repo, &s.digest, d))?;
                }
                remove_if_present(&layout.repo_manifest(repo, d))?;
                self.cache.forget_manifest(repo, d);
            }
        }
        Ok(())
    }

    /// The tags of `repo`, sorted; `NameUnknown` when the repository does not exist.
    pub fn tags(&self, repo: &RepoName) -> OciResult<Vec<String>> {
        if !self.store.layout().repo_dir(repo).is_dir() {
            return Err(OciError::NameUnknown(repo.clone()));
        }
        Ok(dir_names(&self.store.layout().repo_tags_dir(repo))?.into_iter().filter(|t| Tag::parse(t).is_ok()).collect())
    }

    /// Every repository, sorted.
    pub fn catalog(&self) -> OciResult<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![(self.store.layout().repos_dir(), String::new())];
        while let Some((dir, name)) = stack.pop() {
            for n in dir_names(&dir)? {
                if n.starts_with('_') {
                    continue;
                }
                let full = if name.is_empty() { n.clone() } else { format!("{name}/{n}") };
                let p = dir.join(&n);
                if !p.is_dir() || RepoName::parse(&full).is_err() {
                    continue;
                }
                if p.join("_manifests").is_dir() || p.join("_blobs").is_dir() {
                    out.push(full.clone());
                }
                stack.push((p, full));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Links a stored blob into `repo` (idempotent).
    pub fn link_blob(&self, repo: &RepoName, d: &Digest) -> OciResult<()> {
        let p = self.store.layout().repo_blob(repo, d);
        if !crate::nofollow::is_file(&p) {
            self.store.write_atomic(&p, b"")?;
        }
        Ok(())
    }

    /// True when `repo` holds the blob (pushed, mounted, or a manifest of it) and it is stored.
    pub fn has_blob(&self, repo: &RepoName, d: &Digest) -> bool {
        let l = self.store.layout();
        (crate::nofollow::is_file(&l.repo_blob(repo, d)) || crate::nofollow::is_file(&l.repo_manifest(repo, d)))
            && self.store.exists(d)
    }

    /// The size of a blob of `repo`.
    pub fn blob_size(&self, repo: &RepoName, d: &Digest) -> OciResult<u64> {
        let unknown = || OciError::BlobUnknown { repo: repo.clone(), digest: *d };
        let l = self.store.layout();
        if !(crate::nofollow::is_file(&l.repo_blob(repo, d)) || crate::nofollow::is_file(&l.repo_manifest(repo, d))) {
            return Err(unknown());
        }
        self.store.size(d).map_err(|e| if e.is_not_found() { unknown() } else { e.into() })
    }

    /// Opens `len` bytes (or the rest) of a blob of `repo` from `offset`.
    pub fn open_blob(&self, repo: &RepoName, d: &Digest, offset: u64, len: Option<u64>) -> OciResult<BlobReader> {
        self.blob_size(repo, d)?;
        self.store.get_range(d, offset, len).map_err(|e| match e {
            StoreError::BlobNotFound(_) => OciError::BlobUnknown { repo: repo.clone(), digest: *d },
            e => e.into(),
        })
    }

    /// Unlinks a blob from `repo`; the bytes stay until GC finds them unreferenced.
    pub fn delete_blob(&self, repo: &RepoName, d: &Digest) -> OciResult<()> {
        if remove_if_present(&self.store.layout().repo_blob(repo, d))? {
            Ok(())
        } else {
            Err(OciError::BlobUnknown { repo: repo.clone(), digest: *d })
        }
    }

    /// Cross-repository mount: links `d` into `repo` when `from` holds it.
    /// False when it cannot, always without `from`: a blob in the store may
    /// belong to another repository or be a mirror's cache, and knowing its
    /// digest is no right to it.
    pub fn mount_blob(&self, repo: &RepoName, d: &Digest, from: Option<&RepoName>) -> OciResult<bool> {
        let Some(from) = from else { return Ok(false) };
        let _gc = self.store.gc_shared()?;
        let ok = self.has_blob(from, d);
        if ok {
            self.link_blob(repo, d)?;
        }
        Ok(ok)
    }
}
