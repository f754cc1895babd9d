//! The referrers API's data: manifests of a repository whose `subject` is a
//! given digest, recorded at push time as descriptor files.

use serde_json::{Value, json};

use crate::digest::Digest;
use crate::oci::error::OciResult;
use crate::oci::manifest::OCI_INDEX;
use crate::oci::repo::RepoName;
use crate::oci::{Registry, dir_names};

impl Registry {
    /// Descriptors of the manifests in `repo` that refer to `subject`, sorted
    /// by digest; with `artifact_type`, only those of that type.
    pub fn referrers(&self, repo: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> OciResult<Vec<Value>> {
        let layout = self.store.layout();
        let mut out = Vec::new();
        for n in dir_names(&layout.repo_referrers_dir(repo, subject))? {
            let Ok(d) = Digest::parse(&n) else { continue };
            // A referrer deleted since (or collected) is not listed.
            if !crate::nofollow::is_file(&layout.repo_manifest(repo, &d)) {
                continue;
            }
            let p = layout.repo_referrer(repo, subject, &d);
            let desc: Value = match crate::nofollow::read(&p) {
                Ok(b) => match serde_json::from_slice(&b) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(path = %p.display(), error = %e, "skipping unreadable referrer record");
                        continue;
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(crate::error::StoreError::Io { op: "read", path: p, source: e }.into()),
            };
            if let Some(want) = artifact_type
                && desc.get("artifactType").and_then(Value::as_str) != Some(want)
            {
                continue;
            }
            out.push(desc);
        }
        Ok(out)
    }

    /// The referrers response body: an OCI image index of [`Registry::referrers`].
    pub fn referrers_index(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> OciResult<Vec<u8>> {
        let manifests = self.referrers(repo, subject, artifact_type)?;
        let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        Ok(body.to_string().into_bytes())
    }
}
