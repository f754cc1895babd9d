//! The data directory, and the only place that builds paths inside it.
//!
//! ```text
//! <data dir>/
//!   objects/<64 hex>            one blob per file, plain bytes, read-only (original layout)
//!   refs/<name>-<12 hex>.json   blob manifests (original layout)
//!   tmp/<random>.part           blobs being written; swept when the store opens unshared
//!   quarantine/<64 hex>         blobs that failed `verify`; never served
//!   registry/                   OCI registry metadata, plain files written atomically:
//!     repositories/<repo name>/   one dir per repository (names may hold '/'; no component starts with '_')
//!       _manifests/<64 hex>       manifest in this repo; content: its media type
//!       _blobs/<64 hex>           blob linked into this repo (pushed, mounted or referenced); empty
//!       _tags/<tag>               content: sha256:<hex> of the tagged manifest
//!       _referrers/<subject hex>/<64 hex>  descriptor JSON of a manifest whose subject is <subject hex>
//!     uploads/<32 hex>/           one upload session
//!       info.json                 {"repo", "started"}
//!       data                      bytes received so far (linked into objects/ when finished)
//!   .cairn.lock                 shared by every writer, exclusive only for the temp sweep
//!   .cairn-gc.lock              shared by put/manifest save, exclusive during a GC sweep
//! ```

use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::name::RefFile;
use crate::oci::{RepoName, Tag, UploadId};

/// Paths inside one data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// A layout rooted at `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }
    /// The data directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `objects/`.
    pub fn objects_dir(&self) -> PathBuf {
        self.root.join("objects")
    }
    /// `objects/<hex>`.
    pub fn object(&self, d: &Digest) -> PathBuf {
        self.objects_dir().join(d.to_string())
    }
    /// `refs/`.
    pub fn refs_dir(&self) -> PathBuf {
        self.root.join("refs")
    }
    /// `refs/<ref_file>`.
    pub fn ref_path(&self, r: &RefFile) -> PathBuf {
        self.refs_dir().join(r.as_str())
    }
    /// `tmp/`: same filesystem as `objects/`, so a rename or link is atomic.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// `quarantine/`.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join("quarantine")
    }
    /// `quarantine/<hex>`.
    pub fn quarantined(&self, d: &Digest) -> PathBuf {
        self.quarantine_dir().join(d.to_string())
    }
    /// `registry/`: OCI registry metadata.
    pub fn registry_dir(&self) -> PathBuf {
        self.root.join("registry")
    }
    /// `registry/repositories/`.
    pub fn repos_dir(&self) -> PathBuf {
        self.registry_dir().join("repositories")
    }
    /// `registry/repositories/<repo>/` (the name's components are checked safe).
    pub fn repo_dir(&self, r: &RepoName) -> PathBuf {
        let mut p = self.repos_dir();
        p.extend(r.components());
        p
    }
    /// `<repo>/_manifests/`.
    pub fn repo_manifests_dir(&self, r: &RepoName) -> PathBuf {
        self.repo_dir(r).join("_manifests")
    }
    /// `<repo>/_manifests/<hex>`.
    pub fn repo_manifest(&self, r: &RepoName, d: &Digest) -> PathBuf {
        self.repo_manifests_dir(r).join(d.to_string())
    }
    /// `<repo>/_blobs/`.
    pub fn repo_blobs_dir(&self, r: &RepoName) -> PathBuf {
        self.repo_dir(r).join("_blobs")
    }
    /// `<repo>/_blobs/<hex>`.
    pub fn repo_blob(&self, r: &RepoName, d: &Digest) -> PathBuf {
        self.repo_blobs_dir(r).join(d.to_string())
    }
    /// `<repo>/_tags/`.
    pub fn repo_tags_dir(&self, r: &RepoName) -> PathBuf {
        self.repo_dir(r).join("_tags")
    }
    /// `<repo>/_tags/<tag>`.
    pub fn repo_tag(&self, r: &RepoName, t: &Tag) -> PathBuf {
        self.repo_tags_dir(r).join(t.as_str())
    }
    /// `<repo>/_referrers/<subject hex>/`.
    pub fn repo_referrers_dir(&self, r: &RepoName, subject: &Digest) -> PathBuf {
        self.repo_dir(r).join("_referrers").join(subject.to_string())
    }
    /// `<repo>/_referrers/<subject hex>/<hex>`.
    pub fn repo_referrer(&self, r: &RepoName, subject: &Digest, d: &Digest) -> PathBuf {
        self.repo_referrers_dir(r, subject).join(d.to_string())
    }
    /// `registry/uploads/`.
    pub fn uploads_dir(&self) -> PathBuf {
        self.registry_dir().join("uploads")
    }
    /// `registry/uploads/<id>/`.
    pub fn upload_dir(&self, id: &UploadId) -> PathBuf {
        self.uploads_dir().join(id.as_str())
    }
    /// `registry/uploads/<id>/data`.
    pub fn upload_data(&self, id: &UploadId) -> PathBuf {
        self.upload_dir(id).join("data")
    }
    /// `registry/uploads/<id>/info.json`.
    pub fn upload_info(&self, id: &UploadId) -> PathBuf {
        self.upload_dir(id).join("info.json")
    }
    /// The data-dir lock file.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join(".cairn.lock")
    }
    /// The GC lock file.
    pub fn gc_lock_file(&self) -> PathBuf {
        self.root.join(".cairn-gc.lock")
    }
    /// Directories created when the store opens.
    pub(crate) fn dirs(&self) -> [PathBuf; 4] {
        [self.objects_dir(), self.refs_dir(), self.tmp_dir(), self.quarantine_dir()]
    }
}
