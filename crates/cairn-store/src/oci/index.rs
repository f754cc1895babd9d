//! The repository index: which manifests and blobs each repository holds,
//! its tags, and the catalog of repositories.

use serde_json::json;

use crate::backend::keys;
use crate::blob::BlobReader;
use crate::digest::Digest;
use crate::error::StoreError;
use crate::oci::Registry;
use crate::oci::error::{OciError, OciResult};
use crate::oci::manifest::{MAX_MANIFEST_SIZE, parse_manifest};
use crate::oci::repo::{Reference, RepoName, Tag};

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
        // The tag's version as this push found it: the update at the end is
        // a compare-and-swap against it, so a concurrent push is never lost.
        let seen = match reference {
            Reference::Tag(t) => self.store.backend().get_stamped(&keys::repo_tag(repo, t))?.map(|(_, s)| s),
            Reference::Digest(_) => None,
        };
        #[cfg(test)]
        tests::after_tag_read(repo);
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
                    !(self.store.backend().exists(&keys::repo_manifest(repo, &c.digest))
                        && self.store.exists(&c.digest))
                })
                .map(|c| c.digest),
        );
        if !missing.is_empty() {
            missing.dedup();
            return Err(OciError::ManifestBlobUnknown(missing));
        }
        // Refreshed, as a ref save does: a GC on another node sharing a
        // bucket (no lock between them) that already read the roots keeps
        // what it re-stats after this.
        for d in m.blobs.iter().filter(|b| !b.external).map(|b| &b.digest).chain(m.manifests.iter().map(|c| &c.digest))
        {
            self.store.touch(d)?;
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
            self.store.write_atomic(&keys::repo_referrer(repo, &s.digest, &digest), desc.to_string().as_bytes())?;
        }
        self.store.write_atomic(&keys::repo_manifest(repo, &digest), m.media_type.as_bytes())?;
        self.store.write_atomic(&keys::repo_pushed(repo, &digest), b"")?;
        if let Reference::Tag(t) = reference {
            let moved =
                !self.store.write_if(&keys::repo_tag(repo, t), format!("{}\n", digest.oci()).as_bytes(), seen)?;
            self.cache.forget_tag(repo, t);
            if moved {
                let now = self.tag_target(repo, t)?;
                if now == Some(digest) {
                    // Where this push wanted it: an identical push won, or
                    // our own write whose answer was lost and was retried.
                    return Ok(PushedManifest {
                        digest,
                        media_type: m.media_type,
                        subject: m.subject.map(|s| s.digest),
                    });
                }
                tracing::info!(%repo, tag = %t, pushed = %digest.oci(), "a concurrent push moved the tag first");
                return Err(OciError::TagMoved { repo: repo.clone(), tag: t.clone(), now, pushed: digest });
            }
        }
        Ok(PushedManifest { digest, media_type: m.media_type, subject: m.subject.map(|s| s.digest) })
    }

    fn unknown_manifest(repo: &RepoName, reference: &Reference) -> OciError {
        OciError::ManifestUnknown { repo: repo.clone(), reference: reference.to_string() }
    }

    /// The digest a tag points at.
    pub fn tag_target(&self, repo: &RepoName, tag: &Tag) -> OciResult<Option<Digest>> {
        let k = keys::repo_tag(repo, tag);
        self.store.read_meta(&k)?.map(|s| parse_tag_file(&self.store.backend().locate(&k), &s)).transpose()
    }

    /// Resolves a reference to a manifest held by `repo`: its digest and media type.
    pub fn resolve(&self, repo: &RepoName, reference: &Reference) -> OciResult<(Digest, String)> {
        let digest = match reference {
            Reference::Digest(d) => *d,
            Reference::Tag(t) => self.tag_target(repo, t)?.ok_or_else(|| Self::unknown_manifest(repo, reference))?,
        };
        let media_type = self
            .store
            .read_meta(&keys::repo_manifest(repo, &digest))?
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
        let (store, be) = (&self.store, self.store.backend());
        let unknown = || Self::unknown_manifest(repo, reference);
        let digest = match reference {
            Reference::Digest(d) => *d,
            Reference::Tag(t) => {
                let k = keys::repo_tag(repo, t);
                let (b, stamp) = be.get_stamped(&k)?.ok_or_else(unknown)?;
                let d = parse_tag_file(&be.locate(&k), &store.meta_text(&k, b)?)?;
                self.cache.put_tag(repo, t, stamp, d);
                d
            }
        };
        let lk = keys::repo_manifest(repo, &digest);
        let (b, link) = be.get_stamped(&lk)?.ok_or_else(unknown)?;
        let media_type = store.meta_text(&lk, b)?;
        let bytes = match store.read_blob(&digest) {
            Ok(b) => b,
            Err(StoreError::BlobNotFound(_)) => return Err(unknown()),
            Err(e) => return Err(e.into()),
        };
        self.cache.put_manifest(repo, &digest, link, &media_type, &bytes);
        Ok(StoredManifest { digest, media_type, bytes })
    }

    /// The manifest from memory, when it was read before and its tag file
    /// (for a tag), its link in `repo` and its object are unchanged on disk.
    /// Costs up to three stats and no reads, so it suits an async task;
    /// `None` means "ask [`Registry::get_manifest`]", not "absent".
    pub fn cached_manifest(&self, repo: &RepoName, reference: &Reference) -> Option<StoredManifest> {
        let be = self.store.backend();
        let digest = match reference {
            Reference::Digest(d) => *d,
            Reference::Tag(t) => self.cache.tag(repo, t, be.stamp(&keys::repo_tag(repo, t))?)?,
        };
        let m = self.cache.manifest(repo, &digest, be.stamp(&keys::repo_manifest(repo, &digest))?)?;
        if !self.store.exists(&digest) {
            return None;
        }
        Some(StoredManifest { digest, media_type: m.media_type.to_string(), bytes: m.bytes.to_vec() })
    }

    /// Records that `repo` holds a manifest fetched from elsewhere (the mirror).
    pub fn link_manifest(&self, repo: &RepoName, digest: &Digest, media_type: &str) -> OciResult<()> {
        Ok(self.store.write_atomic(&keys::repo_manifest(repo, digest), media_type.as_bytes())?)
    }

    /// Deletes a tag, or a manifest by digest (with its tags and its referrer entry).
    pub fn delete_manifest(&self, repo: &RepoName, reference: &Reference) -> OciResult<()> {
        let store = &self.store;
        match reference {
            Reference::Tag(t) => {
                self.cache.forget_tag(repo, t);
                if !store.remove_meta(&keys::repo_tag(repo, t))? {
                    return Err(Self::unknown_manifest(repo, reference));
                }
            }
            Reference::Digest(d) => {
                if !store.backend().exists(&keys::repo_manifest(repo, d)) {
                    return Err(Self::unknown_manifest(repo, reference));
                }
                for t in self.tags(repo)? {
                    let t = Tag::parse(&t)?;
                    if self.tag_target(repo, &t)? == Some(*d) {
                        store.remove_meta(&keys::repo_tag(repo, &t))?;
                    }
                }
                if let Ok(bytes) = store.read_blob(d)
                    && let Ok(m) = parse_manifest(&bytes, None)
                    && let Some(s) = m.subject
                {
                    store.remove_meta(&keys::repo_referrer(repo, &s.digest, d))?;
                }
                store.remove_meta(&keys::repo_pushed(repo, d))?;
                store.remove_meta(&keys::repo_manifest(repo, d))?;
                self.cache.forget_manifest(repo, d);
            }
        }
        Ok(())
    }

    /// The tags of `repo`, sorted; `NameUnknown` when the repository does not exist.
    pub fn tags(&self, repo: &RepoName) -> OciResult<Vec<String>> {
        let be = self.store.backend();
        if !be.is_dir(&keys::repo(repo)) {
            return Err(OciError::NameUnknown(repo.clone()));
        }
        Ok(be.children(&keys::repo_tags(repo))?.into_iter().filter(|t| Tag::parse(t).is_ok()).collect())
    }

    /// Every repository, sorted.
    pub fn catalog(&self) -> OciResult<Vec<String>> {
        let be = self.store.backend();
        let mut out = Vec::new();
        let mut stack = vec![(keys::REPOS.to_owned(), String::new())];
        while let Some((dir, name)) = stack.pop() {
            for n in be.children(&dir)? {
                if n.starts_with('_') {
                    continue;
                }
                let full = if name.is_empty() { n.clone() } else { format!("{name}/{n}") };
                let p = format!("{dir}/{n}");
                if !be.is_dir(&p) || RepoName::parse(&full).is_err() {
                    continue;
                }
                if be.is_dir(&format!("{p}/_manifests")) || be.is_dir(&format!("{p}/_blobs")) {
                    out.push(full.clone());
                }
                stack.push((p, full));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Links a blob a client pushed (or mounted) into `repo`, marked as
    /// pushed: the bounded cache keeps it while its manifest may still be
    /// on its way (see [`crate::Store::registry_pins`]).
    pub fn link_pushed_blob(&self, repo: &RepoName, d: &Digest) -> OciResult<()> {
        self.link_blob(repo, d)?;
        Ok(self.store.write_atomic(&keys::repo_pushed(repo, d), b"")?)
    }

    /// Links a stored blob into `repo` (idempotent).
    pub fn link_blob(&self, repo: &RepoName, d: &Digest) -> OciResult<()> {
        let k = keys::repo_blob(repo, d);
        if !self.store.backend().exists(&k) {
            self.store.write_atomic(&k, b"")?;
        }
        Ok(())
    }

    /// True when `repo` holds the blob (pushed, mounted, or a manifest of it) and it is stored.
    pub fn has_blob(&self, repo: &RepoName, d: &Digest) -> bool {
        let be = self.store.backend();
        (be.exists(&keys::repo_blob(repo, d)) || be.exists(&keys::repo_manifest(repo, d))) && self.store.exists(d)
    }

    /// The size of a blob of `repo`.
    pub fn blob_size(&self, repo: &RepoName, d: &Digest) -> OciResult<u64> {
        let unknown = || OciError::BlobUnknown { repo: repo.clone(), digest: *d };
        let be = self.store.backend();
        if !(be.exists(&keys::repo_blob(repo, d)) || be.exists(&keys::repo_manifest(repo, d))) {
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
        if self.store.remove_meta(&keys::repo_blob(repo, d))? {
            if !self.store.backend().exists(&keys::repo_manifest(repo, d)) {
                self.store.remove_meta(&keys::repo_pushed(repo, d))?;
            }
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
            self.link_pushed_blob(repo, d)?;
        }
        Ok(ok)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Barrier, Mutex};

    use super::*;
    use crate::backend::{Backend, mem::MemBackend, object::ObjectBackend};
    use crate::oci::RegistryOptions;
    use crate::store::{Store, StoreOptions};

    // Pushes to these repositories wait here once they have read the tag,
    // so a test can make two pushes see the same version.
    static AFTER_TAG_READ: Mutex<Vec<(String, Arc<Barrier>)>> = Mutex::new(Vec::new());

    pub(crate) fn after_tag_read(repo: &RepoName) {
        let b = AFTER_TAG_READ.lock().unwrap().iter().find(|(r, _)| r == repo.as_str()).map(|(_, b)| b.clone());
        if let Some(b) = b {
            b.wait();
        }
    }

    fn image(r: &Registry, layer: &[u8]) -> Vec<u8> {
        let config = r.store.put_reader(&b"{}"[..], None).unwrap().digest;
        let l = r.store.put_reader(layer, None).unwrap().digest;
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
            config.oci(),
            l.oci(),
            layer.len()
        )
        .into_bytes()
    }

    /// Two pushes of one tag that both read the same version of it (or
    /// both found it absent): one moves the tag, the other is told, and
    /// neither is lost silently. Then sequential pushes still succeed.
    fn concurrent_pushes_of_one_tag_one_wins_and_the_other_is_told_the_tag_moved(be: Box<dyn Backend>, repo: &str) {
        let r = Registry::new(Store::with_backend(be, StoreOptions::default()), RegistryOptions::default()).unwrap();
        let repo = RepoName::parse(repo).unwrap();
        let t = Tag::parse("latest").unwrap();
        // New manifests each round: on S3 the version of a tag is its ETag,
        // the MD5 of its text, so a push rewriting the current target
        // changes nothing and fairly orders before the other.
        let images: Vec<Vec<u8>> = (0..5u8).map(|i| image(&r, &[b'l', i])).collect();
        let ct = Some("application/vnd.oci.image.manifest.v1+json");
        AFTER_TAG_READ.lock().unwrap().push((repo.to_string(), Arc::new(Barrier::new(2))));
        // Round 0: the tag is absent for both; round 1: both saw round 0's winner.
        for round in 0..2usize {
            let res: Vec<OciResult<PushedManifest>> = std::thread::scope(|sc| {
                let hs: Vec<_> = images[2 * round..2 * round + 2]
                    .iter()
                    .map(|m| {
                        let (r, repo, t) = (&r, &repo, &t);
                        sc.spawn(move || r.put_manifest(repo, &Reference::Tag(t.clone()), m, ct))
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let won: Vec<Digest> = res.iter().filter_map(|r| r.as_ref().ok().map(|p| p.digest)).collect();
            assert_eq!(won.len(), 1, "round {round}: exactly one push wins: {res:?}");
            let lost = res.iter().find_map(|r| r.as_ref().err()).unwrap();
            match lost {
                OciError::TagMoved { now, pushed, .. } => {
                    assert_eq!(*now, Some(won[0]), "the loser is told where the tag went");
                    assert_ne!(*pushed, won[0]);
                    let msg = lost.to_string();
                    assert!(msg.contains(&won[0].oci()) && msg.contains("push again"), "{msg}");
                }
                e => panic!("round {round}: the losing push got {e:?}, not TagMoved"),
            }
            assert_eq!(r.tag_target(&repo, &t).unwrap(), Some(won[0]), "the winner's tag stands");
        }
        // The same manifest pushed twice at once: the tag ends where both
        // wanted it, so neither lost anything (nor does a conditional PUT
        // retried after its answer was lost, which finds its own write).
        let same: Vec<OciResult<PushedManifest>> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..2)
                .map(|_| sc.spawn(|| r.put_manifest(&repo, &Reference::Tag(t.clone()), &images[4], ct)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(same.iter().all(Result::is_ok), "{same:?}");
        assert_eq!(r.tag_target(&repo, &t).unwrap(), Some(Digest::of(&images[4])));
        AFTER_TAG_READ.lock().unwrap().retain(|(n, _)| n != repo.as_str());
        // One push at a time: each moves the tag.
        for m in [&images[0], &images[1], &images[0]] {
            let p = r.put_manifest(&repo, &Reference::Tag(t.clone()), m, ct).unwrap();
            assert_eq!(r.tag_target(&repo, &t).unwrap(), Some(p.digest));
        }
    }

    #[test]
    fn concurrent_pushes_of_one_tag_never_lose_one_silently_on_mem() {
        concurrent_pushes_of_one_tag_one_wins_and_the_other_is_told_the_tag_moved(
            Box::new(MemBackend::new()),
            "race/mem",
        );
    }

    #[test]
    fn concurrent_pushes_of_one_tag_never_lose_one_silently_on_fs() {
        let t = tempfile::tempdir().unwrap();
        let b = crate::backend::fs::FsBackend::open(t.path(), &StoreOptions::default()).unwrap();
        concurrent_pushes_of_one_tag_one_wins_and_the_other_is_told_the_tag_moved(Box::new(b), "race/fs");
    }

    #[test]
    fn concurrent_pushes_of_one_tag_never_lose_one_silently_on_object_mem() {
        let st = Arc::new(object_store::memory::InMemory::new());
        let b = ObjectBackend::new(st, "memory://", "p").unwrap();
        concurrent_pushes_of_one_tag_one_wins_and_the_other_is_told_the_tag_moved(Box::new(b), "race/objmem");
    }

    #[test]
    fn concurrent_pushes_of_one_tag_never_lose_one_silently_on_s3() {
        let Some(m) = cairn_testkit::s3::MotoServer::start("concurrent_pushes_of_one_tag_on_s3") else { return };
        let mut o = crate::backend::object::S3Options::new(&m.bucket, &m.region);
        o.endpoint = Some(m.endpoint.clone());
        o.credentials = Some((m.access_key.clone(), m.secret_key.clone()));
        let b = ObjectBackend::s3(&o).unwrap();
        concurrent_pushes_of_one_tag_one_wins_and_the_other_is_told_the_tag_moved(Box::new(b), "race/s3");
    }
}
