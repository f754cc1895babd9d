//! Blob manifests ("refs"): named lists of the blobs of one artifact, in the
//! original store's format (`refs/<name>-<12 hex>.json`, 2-space JSON).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::name::{RefFile, RefName};
use crate::nofollow;
use crate::store::Store;

/// Largest manifest accepted from a file, a peer or a client.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// A blob manifest. The first three fields are the original's; the rest are
/// Cairn's additions, which a reader of only the first three ignores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The manifest name.
    #[serde(alias = "Name")]
    pub name: String,
    /// RFC 3339 creation time; the newest version of a name is "latest".
    #[serde(alias = "CreatedAt", alias = "createdAt", default)]
    pub created_at: String,
    /// Relative path -> blob digest (bare hex).
    #[serde(alias = "Objects", default)]
    pub objects: BTreeMap<String, Digest>,
    /// Relative path -> Unix mode bits, for files and directories.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub modes: BTreeMap<String, u32>,
    /// Relative path -> symlink target.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub symlinks: BTreeMap<String, String>,
    /// Directories (so empty ones survive a round trip).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<String>,
}

/// One line of a manifest listing (the `/v1/manifests` entry, less `node_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestSummary {
    /// The manifest name.
    pub name: String,
    /// Its file in `refs/`.
    pub ref_file: RefFile,
    /// Number of objects it lists.
    pub blob_count: usize,
    /// Its `created_at` as written.
    pub created_at: String,
}

/// Checks that `p` is a relative path that stays inside its root.
pub fn check_object_path(p: &str) -> Result<(), &'static str> {
    if p.is_empty() {
        return Err("empty path");
    }
    if p.contains('\0') {
        return Err("contains NUL");
    }
    if p.contains('\\') {
        return Err("contains a backslash");
    }
    let path = Path::new(p);
    if path.is_absolute() {
        return Err("absolute path");
    }
    // `Path::components` would quietly skip these; a manifest path must be canonical.
    if p.split('/').any(|c| c.is_empty()) {
        return Err("has an empty component ('//' or a trailing '/')");
    }
    if p.split('/').any(|c| c == ".") {
        return Err("contains '.'");
    }
    for c in path.components() {
        match c {
            Component::Normal(_) => {}
            Component::ParentDir => return Err("contains '..'"),
            Component::CurDir => return Err("contains '.'"),
            _ => return Err("not a plain relative path"),
        }
    }
    Ok(())
}

impl Manifest {
    /// A new, empty manifest named `name`, created now.
    pub fn new(name: &RefName) -> Self {
        Manifest {
            name: name.to_string(),
            created_at: now_rfc3339(),
            objects: BTreeMap::new(),
            modes: BTreeMap::new(),
            symlinks: BTreeMap::new(),
            dirs: Vec::new(),
        }
    }

    /// Parses manifest JSON from any source (a file, a peer, a client) and
    /// validates it. `what` names the source in errors.
    pub fn from_json(bytes: &[u8], what: &str) -> Result<Self> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| StoreError::InvalidManifest { what: what.to_owned(), reason: e.to_string() })?;
        m.validate(what)?;
        Ok(m)
    }

    /// Parses manifest bytes to be saved as `ref_file` and checks that the
    /// file name is bound to them: `<name>-<first 12 hex of the SHA-256 of
    /// bytes>.json`, `name` being the manifest's own. Every new ref file,
    /// from a client, a peer or the CLI, goes through this.
    pub fn from_json_for(ref_file: &RefFile, bytes: &[u8], what: &str) -> Result<Self> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(StoreError::InvalidManifest {
                what: what.to_owned(),
                reason: format!("{} bytes is over the {MAX_MANIFEST_BYTES} byte limit", bytes.len()),
            });
        }
        let m = Manifest::from_json(bytes, what)?;
        let expected = RefFile::for_manifest(&m.ref_name()?, bytes)?;
        if expected != *ref_file {
            return Err(StoreError::RefFileMismatch { got: ref_file.clone(), expected: expected.to_string() });
        }
        Ok(m)
    }

    /// Checks the name and every path; see [`check_object_path`].
    pub fn validate(&self, what: &str) -> Result<()> {
        let invalid = |reason: String| StoreError::InvalidManifest { what: what.to_owned(), reason };
        RefName::parse(&self.name).map_err(|e| invalid(format!("field name: {e}")))?;
        let paths = self.objects.keys().map(|p| ("objects", p));
        let paths = paths.chain(self.modes.keys().map(|p| ("modes", p)));
        let paths = paths.chain(self.symlinks.keys().map(|p| ("symlinks", p)));
        for (field, p) in paths.chain(self.dirs.iter().map(|p| ("dirs", p))) {
            check_object_path(p).map_err(|r| invalid(format!("field {field}: path {p:?}: {r}")))?;
        }
        Ok(())
    }

    /// The manifest name, checked.
    pub fn ref_name(&self) -> Result<RefName> {
        Ok(RefName::parse(&self.name)?)
    }

    /// `created_at` as a time; `None` when absent or unparseable.
    pub fn created(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::parse(&self.created_at, &Rfc3339).ok()
    }

    /// The JSON the store writes: 2-space indented.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing maps of strings cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Distinct digests the manifest lists.
    pub fn digests(&self) -> Vec<Digest> {
        let mut v: Vec<Digest> = self.objects.values().copied().collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Now, as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default()
}

impl Store {
    /// Saves `m` as a new version: every listed blob must be present.
    /// Returns its ref file.
    pub fn save_manifest(&self, m: &Manifest) -> Result<RefFile> {
        m.validate(&m.name)?;
        let json = m.to_json();
        let rf = RefFile::for_manifest(&m.ref_name()?, &json)?;
        self.write_manifest(&rf, m, &json)?;
        Ok(rf)
    }

    /// Saves manifest bytes received from elsewhere under `ref_file`, byte
    /// for byte, after validating them (see [`Manifest::from_json_for`]).
    /// Every listed blob must be present. An existing ref file is never
    /// replaced: the same bytes again succeed, other bytes are a
    /// [`StoreError::RefConflict`].
    pub fn save_manifest_bytes(&self, ref_file: &RefFile, bytes: &[u8]) -> Result<Manifest> {
        let m = Manifest::from_json_for(ref_file, bytes, ref_file.as_str())?;
        self.write_manifest(ref_file, &m, bytes)?;
        Ok(m)
    }

    /// Checks that saving `bytes` as `ref_file` would not replace other
    /// bytes: `Ok` when the file is absent or holds exactly `bytes`. Lets
    /// a caller refuse a conflict before it fetches any blob.
    pub fn check_ref_free(&self, ref_file: &RefFile, bytes: &[u8]) -> Result<()> {
        match self.manifest_bytes(ref_file) {
            Ok(have) if have == bytes => Ok(()),
            Ok(_) => Err(StoreError::RefConflict(ref_file.clone())),
            Err(StoreError::ManifestNotFound(_)) => Ok(()),
            Err(StoreError::InvalidManifest { .. } | StoreError::Symlink(_)) => {
                Err(StoreError::RefConflict(ref_file.clone()))
            }
            Err(e) => Err(e),
        }
    }

    fn write_manifest(&self, rf: &RefFile, m: &Manifest, json: &[u8]) -> Result<()> {
        self.check_writable()?;
        self.check_ref_free(rf, json)?;
        let _gc = self.gc_shared()?;
        let missing = self.missing(&m.digests());
        if !missing.is_empty() {
            return Err(StoreError::MissingBlobs { name: m.name.clone(), missing });
        }
        // Refresh the blobs so a GC that started before this save keeps them.
        for d in m.digests() {
            self.touch(&d)?;
        }
        let tmp = self.layout().tmp_dir().join(format!("{:016x}.ref", rand::random::<u64>()));
        let res = (|| {
            let mut f = File::create(&tmp).map_err(StoreError::io("create", &tmp))?;
            f.write_all(json).map_err(StoreError::io("write", &tmp))?;
            if self.inner.opts.fsync {
                f.sync_all().map_err(StoreError::io("fsync", &tmp))?;
            }
            let dest = self.layout().ref_path(rf);
            // A link never replaces an existing file (nor a planted
            // symlink), so two concurrent saves cannot overwrite each other.
            match fs::hard_link(&tmp, &dest) {
                Ok(()) => self.sync_dir(&self.layout().refs_dir()),
                // Lost a race: fine only if the winner wrote the same bytes.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => self.check_ref_free(rf, json),
                Err(e) => Err(StoreError::Io { op: "link into refs", path: dest, source: e }),
            }
        })();
        let _ = fs::remove_file(&tmp);
        res
    }

    /// The digests among `ds` that the store does not hold.
    pub fn missing(&self, ds: &[Digest]) -> Vec<Digest> {
        ds.iter().filter(|d| !self.exists(d)).copied().collect()
    }

    /// The raw bytes of a manifest.
    pub fn manifest_bytes(&self, rf: &RefFile) -> Result<Vec<u8>> {
        let p = self.layout().ref_path(rf);
        let f = match nofollow::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::manifest_not_found(rf)),
            Err(e) => return Err(nofollow::error("open", &p)(e)),
        };
        let mut buf = Vec::new();
        f.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut buf).map_err(StoreError::io("read", &p))?;
        if buf.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(StoreError::InvalidManifest {
                what: rf.to_string(),
                reason: format!("over the {MAX_MANIFEST_BYTES} byte limit"),
            });
        }
        Ok(buf)
    }

    /// Loads and validates a manifest.
    pub fn load_manifest(&self, rf: &RefFile) -> Result<Manifest> {
        Manifest::from_json(&self.manifest_bytes(rf)?, rf.as_str())
    }

    /// Every readable manifest in `refs/`, sorted by name then ref file.
    /// Unreadable ones are logged and skipped.
    pub fn list_manifests(&self) -> Result<Vec<ManifestSummary>> {
        let mut out = Vec::new();
        for name in crate::oci::dir_names(&self.layout().refs_dir())? {
            let Ok(rf) = RefFile::parse(&name) else { continue };
            match self.load_manifest(&rf) {
                Ok(m) => out.push(ManifestSummary {
                    blob_count: m.objects.len(),
                    name: m.name,
                    created_at: m.created_at,
                    ref_file: rf,
                }),
                Err(err) => tracing::warn!(ref_file = %rf, error = %err, "skipping unreadable manifest"),
            }
        }
        out.sort_by(|a, b| (&a.name, &a.ref_file).cmp(&(&b.name, &b.ref_file)));
        Ok(out)
    }

    /// Resolves a ref file name, or a manifest name to its newest version.
    pub fn resolve(&self, name_or_file: &str) -> Result<RefFile> {
        if let Ok(rf) = RefFile::parse(name_or_file)
            && nofollow::is_file(&self.layout().ref_path(&rf))
        {
            return Ok(rf);
        }
        let name = RefName::parse(name_or_file)?;
        let best = self
            .list_manifests()?
            .into_iter()
            .filter(|s| s.name == name.as_str())
            .max_by_key(|s| (OffsetDateTime::parse(&s.created_at, &Rfc3339).ok(), s.ref_file.clone()));
        best.map(|s| s.ref_file).ok_or_else(|| StoreError::ManifestNotFound(name.to_string()))
    }

    /// Deletes one manifest version.
    pub fn delete_manifest(&self, rf: &RefFile) -> Result<()> {
        self.check_writable()?;
        let p = self.layout().ref_path(rf);
        match fs::remove_file(&p) {
            Ok(()) => self.sync_dir(&self.layout().refs_dir()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::manifest_not_found(rf)),
            Err(e) => Err(StoreError::Io { op: "remove", path: p, source: e }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn original_key_spellings_are_read() {
        let d = Digest::of(b"a");
        let j = format!(r#"{{"Name":"x","CreatedAt":"2024-01-02T03:04:05Z","Objects":{{"a/b":"{d}"}}}}"#);
        let m = Manifest::from_json(j.as_bytes(), "t").unwrap();
        assert_eq!(m.name, "x");
        assert_eq!(m.objects["a/b"], d);
        let j = r#"{"name":"y","createdAt":"2024-01-02T03:04:05+02:00","objects":{}}"#;
        let m = Manifest::from_json(j.as_bytes(), "t").unwrap();
        assert_eq!(m.created().unwrap().unix_timestamp(), 1704157445);
    }

    #[test]
    fn manifests_with_unsafe_content_are_rejected() {
        let d = Digest::of(b"a");
        let bad = [
            ("../x", "a"),
            ("x", "/etc/passwd"),
            ("x", "a/../../b"),
            ("x", ""),
            ("x", "a\\b"),
            ("x", "a/./b"),
            ("x", "a//b"),
            ("x", "a/"),
        ];
        for (name, path) in bad {
            let j = serde_json::json!({"name": name, "objects": {path: d.to_string()}});
            let e = Manifest::from_json(j.to_string().as_bytes(), "peer").unwrap_err();
            assert!(matches!(e, StoreError::InvalidManifest { .. }), "{name} {path}: {e}");
        }
        let short = r#"{"name":"x","objects":{"a":"abc"}}"#;
        let e = Manifest::from_json(short.as_bytes(), "peer").unwrap_err().to_string();
        assert!(e.contains("peer") && e.contains("3 hex characters"), "{e}");
    }

    #[test]
    fn written_json_is_two_space_indented_with_seed_fields_first() {
        let mut m = Manifest::new(&RefName::parse("n").unwrap());
        m.objects.insert("f".into(), Digest::of(b"f"));
        let s = String::from_utf8(m.to_json()).unwrap();
        assert!(s.starts_with("{\n  \"name\": \"n\",\n  \"created_at\": "), "{s}");
        assert!(!s.contains("modes"));
    }

    proptest! {
        #[test]
        fn manifest_parsing_never_panics_on_arbitrary_input(s in "\\PC{0,200}") {
            let _ = Manifest::from_json(s.as_bytes(), "fuzz");
        }

        #[test]
        fn written_manifests_read_back_equal(
            name in "[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}",
            objects in proptest::collection::btree_map("[a-z]{1,6}(/[a-z]{1,6}){0,2}", any::<[u8; 32]>(), 0..8),
            modes in proptest::collection::btree_map("[a-z]{1,6}", 0u32..0o7777, 0..4),
        ) {
            let mut m = Manifest::new(&RefName::parse(&name).unwrap());
            m.objects = objects.into_iter().map(|(p, b)| (p, Digest::from_bytes(b))).collect();
            m.modes = modes;
            let back = Manifest::from_json(&m.to_json(), "t").unwrap();
            prop_assert_eq!(back, m);
        }

        #[test]
        fn accepted_object_paths_stay_inside_root(p in "[a-z./\\\\]{0,12}") {
            if check_object_path(&p).is_ok() {
                let joined = Path::new("/root").join(&p);
                prop_assert!(joined.starts_with("/root"));
                prop_assert!(!p.split('/').any(|c| c == ".."));
            }
        }
    }
}
