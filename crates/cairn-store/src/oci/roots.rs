//! What the registry keeps alive in a GC: every tagged manifest and its
//! whole closure (index -> manifests -> config + layers), the referrers of
//! every kept manifest, and anything pushed or linked within the grace period.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, SystemTime};

use crate::backend::keys;
use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::oci::manifest::parse_manifest;
use crate::oci::repo::{RepoName, Tag};
use crate::oci::{Registry, RegistryOptions};
use crate::store::Store;

fn young(store: &Store, key: &str, grace: Duration) -> bool {
    let age = store.backend().modified(key).and_then(|t| SystemTime::now().duration_since(t).ok());
    // A clock step backwards makes a file look young: keeping it is the safe side.
    age.is_none_or(|a| a < grace)
}

fn to_store(e: crate::oci::OciError) -> StoreError {
    match e {
        crate::oci::OciError::Store(s) => s,
        e => StoreError::InvalidManifest { what: "registry metadata".into(), reason: e.to_string() },
    }
}

impl Store {
    /// Digests the registry needs kept: per repository, every tagged
    /// manifest and everything it references (child manifests, config,
    /// layers), the referrers of each kept manifest, and manifests and blob
    /// links younger than `grace` (pushes in progress) with their closure.
    ///
    /// A stored manifest that no longer parses is an error, so a GC stops
    /// rather than deleting what it might reference.
    pub fn registry_roots(&self, grace: Duration) -> Result<Vec<Digest>> {
        self.collect_registry_roots(grace, false)
    }

    /// What the bounded cache never evicts from the registry: every tagged
    /// manifest and every manifest a client pushed here (tagged or not),
    /// each with its closure and referrers, and blobs pushed within the GC
    /// grace (a push's layers come before its manifest). Manifests and blobs
    /// the mirror fetched and left untagged are not pinned: they are cached
    /// copies.
    pub fn registry_pins(&self) -> Result<Vec<Digest>> {
        self.collect_registry_roots(Duration::ZERO, true)
    }

    fn collect_registry_roots(&self, grace: Duration, pushed: bool) -> Result<Vec<Digest>> {
        let reg = Registry {
            store: self.clone(),
            opts: RegistryOptions::default(),
            hashers: Default::default(),
            last_sweep: Default::default(),
            cache: Default::default(),
            sessions: Default::default(),
        };
        let be = self.backend();
        let mut keep = BTreeSet::new();
        for name in reg.catalog().map_err(to_store)? {
            let Ok(repo) = RepoName::parse(&name) else { continue };
            let mut queue = VecDeque::new();
            for t in be.children(&keys::repo_tags(&repo))? {
                let Ok(tag) = Tag::parse(&t) else { continue };
                if let Some(d) = reg.tag_target(&repo, &tag).map_err(to_store)? {
                    queue.push_back(d);
                }
            }
            for n in be.children(&keys::repo_manifests(&repo))? {
                if let Ok(d) = Digest::parse(&n)
                    && young(self, &keys::repo_manifest(&repo, &d), grace)
                {
                    queue.push_back(d);
                }
            }
            if pushed {
                for n in be.children(&keys::repo_pushed_dir(&repo))? {
                    let Ok(d) = Digest::parse(&n) else { continue };
                    if be.exists(&keys::repo_manifest(&repo, &d)) {
                        queue.push_back(d);
                    } else if young(self, &keys::repo_pushed(&repo, &d), crate::gc::DEFAULT_GRACE) {
                        // A pushed layer whose manifest may still be on its way.
                        keep.insert(d);
                    }
                }
            }
            for n in be.children(&keys::repo_blobs(&repo))? {
                if let Ok(d) = Digest::parse(&n)
                    && young(self, &keys::repo_blob(&repo, &d), grace)
                {
                    keep.insert(d);
                }
            }
            let mut seen = BTreeSet::new();
            while let Some(d) = queue.pop_front() {
                if !seen.insert(d) || !self.exists(&d) {
                    continue;
                }
                keep.insert(d);
                let bytes = self.read_blob(&d)?;
                let m = parse_manifest(&bytes, None).map_err(|e| StoreError::InvalidManifest {
                    what: format!("{} in repository {repo}", d.oci()),
                    reason: e.to_string(),
                })?;
                keep.extend(m.blobs.iter().filter(|b| !b.external).map(|b| b.digest));
                queue.extend(m.manifests.iter().map(|c| c.digest));
                for r in be.children(&keys::repo_referrers(&repo, &d))? {
                    if let Ok(rd) = Digest::parse(&r)
                        && be.exists(&keys::repo_manifest(&repo, &rd))
                    {
                        queue.push_back(rd);
                    }
                }
            }
        }
        Ok(keep.into_iter().collect())
    }
}
