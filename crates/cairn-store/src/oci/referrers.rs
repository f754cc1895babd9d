//! The referrers API's data: manifests of a repository whose `subject` is a
//! given digest, recorded at push time as descriptor files.

use serde_json::{Value, json};

use crate::backend::keys;
use crate::digest::Digest;
use crate::oci::Registry;
use crate::oci::error::OciResult;
use crate::oci::manifest::OCI_INDEX;
use crate::oci::repo::RepoName;

impl Registry {
    /// Descriptors of the manifests in `repo` that refer to `subject`, sorted
    /// by digest; with `artifact_type`, only those of that type.
    pub fn referrers(&self, repo: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> OciResult<Vec<Value>> {
        let be = self.store.backend();
        let mut out = Vec::new();
        for n in be.children(&keys::repo_referrers(repo, subject))? {
            let Ok(d) = Digest::parse(&n) else { continue };
            // A referrer deleted since (or collected) is not listed.
            if !be.exists(&keys::repo_manifest(repo, &d)) {
                continue;
            }
            let k = keys::repo_referrer(repo, subject, &d);
            let desc: Value = match be.get(&k, u64::MAX - 1)? {
                Some(b) => match serde_json::from_slice(&b) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(path = %be.locate(&k).display(), error = %e, "skipping unreadable referrer record");
                        continue;
                    }
                },
                None => continue,
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
