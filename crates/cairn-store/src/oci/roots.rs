//! What the registry keeps alive in a GC: every tagged manifest and its
//! whole closure (index -> manifests -> config + layers), the referrers of
//! every kept manifest, and anything pushed or linked within the grace period.

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::time::{Duration, SystemTime};

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::oci::manifest::parse_manifest;
use crate::oci::repo::{RepoName, Tag};
use crate::oci::{Registry, RegistryOptions, dir_names};
use crate::store::Store;

fn young(p: &std::path::Path, grace: Duration) -> bool {
    let age =
        fs::symlink_metadata(p).and_then(|m| m.modified()).ok().and_then(|t| SystemTime::now().duration_since(t).ok());
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
        let reg = Registry {
            store: self.clone(),
            opts: RegistryOptions::default(),
            hashers: Default::default(),
            last_sweep: Default::default(),
            cache: Default::default(),
            sessions: Default::default(),
        };
        let layout = self.layout();
        let mut keep = BTreeSet::new();
        for name in reg.catalog().map_err(to_store)? {
            let Ok(repo) = RepoName::parse(&name) else { continue };
            let mut queue = VecDeque::new();
            for t in dir_names(&layout.repo_tags_dir(&repo))? {
                let Ok(tag) = Tag::parse(&t) else { continue };
                if let Some(d) = reg.tag_target(&repo, &tag).map_err(to_store)? {
                    queue.push_back(d);
                }
            }
            for n in dir_names(&layout.repo_manifests_dir(&repo))? {
                if let Ok(d) = Digest::parse(&n)
                    && young(&layout.repo_manifest(&repo, &d), grace)
                {
                    queue.push_back(d);
                }
            }
            for n in dir_names(&layout.repo_blobs_dir(&repo))? {
                if let Ok(d) = Digest::parse(&n)
                    && young(&layout.repo_blob(&repo, &d), grace)
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
                let p = layout.object(&d);
                let bytes = crate::nofollow::read(&p).map_err(crate::nofollow::error("read", &p))?;
                let m = parse_manifest(&bytes, None).map_err(|e| StoreError::InvalidManifest {
                    what: format!("{} in repository {repo}", d.oci()),
                    reason: e.to_string(),
                })?;
                keep.extend(m.blobs.iter().filter(|b| !b.external).map(|b| b.digest));
                queue.extend(m.manifests.iter().map(|c| c.digest));
                for r in dir_names(&layout.repo_referrers_dir(&repo, &d))? {
                    if let Ok(rd) = Digest::parse(&r)
                        && crate::nofollow::is_file(&layout.repo_manifest(&repo, &rd))
                    {
                        queue.push_back(rd);
                    }
                }
            }
        }
        Ok(keep.into_iter().collect())
    }
}
