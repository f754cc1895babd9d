//! Metadata keys: `/`-separated, the relative paths of the original layout
//! (see [`super::fs`]), so the filesystem backend maps a key to
//! `<data dir>/<key>` and every other backend uses the same names.

use crate::digest::Digest;
use crate::name::RefFile;
use crate::oci::{RepoName, Tag};

/// `refs`.
pub const REFS: &str = "refs";
/// `registry/repositories`.
pub const REPOS: &str = "registry/repositories";

/// `refs/<ref_file>`.
pub fn ref_file(r: &RefFile) -> String {
    format!("{REFS}/{}", r.as_str())
}
/// `registry/repositories/<repo>` (the name's components are checked safe).
pub fn repo(r: &RepoName) -> String {
    format!("{REPOS}/{}", r.as_str())
}
/// `<repo>/_manifests`.
pub fn repo_manifests(r: &RepoName) -> String {
    format!("{}/_manifests", repo(r))
}
/// `<repo>/_manifests/<hex>`.
pub fn repo_manifest(r: &RepoName, d: &Digest) -> String {
    format!("{}/{d}", repo_manifests(r))
}
/// `<repo>/_blobs`.
pub fn repo_blobs(r: &RepoName) -> String {
    format!("{}/_blobs", repo(r))
}
/// `<repo>/_blobs/<hex>`.
pub fn repo_blob(r: &RepoName, d: &Digest) -> String {
    format!("{}/{d}", repo_blobs(r))
}
/// `<repo>/_pushed`: manifests a client pushed to this node (the mirror's
/// fetched ones are only in `_manifests`), which the cache never evicts.
pub fn repo_pushed_dir(r: &RepoName) -> String {
    format!("{}/_pushed", repo(r))
}
/// `<repo>/_pushed/<hex>`.
pub fn repo_pushed(r: &RepoName, d: &Digest) -> String {
    format!("{}/{d}", repo_pushed_dir(r))
}
/// `<repo>/_tags`.
pub fn repo_tags(r: &RepoName) -> String {
    format!("{}/_tags", repo(r))
}
/// `<repo>/_tags/<tag>`.
pub fn repo_tag(r: &RepoName, t: &Tag) -> String {
    format!("{}/{}", repo_tags(r), t.as_str())
}
/// `<repo>/_referrers/<subject hex>`.
pub fn repo_referrers(r: &RepoName, subject: &Digest) -> String {
    format!("{}/_referrers/{subject}", repo(r))
}
/// `<repo>/_referrers/<subject hex>/<hex>`.
pub fn repo_referrer(r: &RepoName, subject: &Digest, d: &Digest) -> String {
    format!("{}/{d}", repo_referrers(r, subject))
}
/// `registry/uploads/<id>/info.json`.
pub fn upload_info(id: &str) -> String {
    format!("registry/uploads/{id}/info.json")
}
