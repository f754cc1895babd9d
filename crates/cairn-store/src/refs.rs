//! Blob manifests ("refs"): named lists of the blobs of one artifact, in the
//! original store's format (`refs/<name>-<12 hex>.json`, 2-space JSON).

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::backend::keys;
use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::name::{RefFile, RefName};
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
        // Create-only: two concurrent saves cannot overwrite each other.
        if self.backend().put_new(&keys::ref_file(rf), json)? {
            Ok(())
        } else {
            // Lost a race: fine only if the winner wrote the same bytes.
            self.check_ref_free(rf, json)
        }
    }

    /// The digests among `ds` that the store does not hold.
    pub fn missing(&self, ds: &[Digest]) -> Vec<Digest> {
        ds.iter().filter(|d| !self.exists(d)).copied().collect()
    }

    /// The raw bytes of a manifest.
    pub fn manifest_bytes(&self, rf: &RefFile) -> Result<Vec<u8>> {
        let Some(buf) = self.backend().get(&keys::ref_file(rf), MAX_MANIFEST_BYTES)? else {
            return Err(StoreError::manifest_not_found(rf));
        };
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
        for name in self.backend().children(keys::REFS)? {
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
            && self.backend().exists(&keys::ref_file(&rf))
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
        if self.backend().delete(&keys::ref_file(rf))? { Ok(()) } else { Err(StoreError::manifest_not_found(rf)) }
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

    /// Object paths, mostly fine, some trying to leave the root.
    fn path() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-z]{1,6}(/[a-z]{1,6}){0,2}",
            1 => proptest::sample::select(vec!["..", "../x", "/etc/passwd", "a//b", "a/./b", "a\\b", "a\0b", ""])
                .prop_map(str::to_owned),
        ]
    }

    /// A digest as JSON: bare hex (the seed's form), `sha256:` or junk.
    fn digest_json() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            6 => any::<[u8; 32]>().prop_map(|b| serde_json::Value::from(Digest::from_bytes(b).to_string())),
            1 => any::<[u8; 32]>().prop_map(|b| serde_json::Value::from(Digest::from_bytes(b).oci())),
            1 => "[0-9a-fA-F]{0,65}".prop_map(serde_json::Value::from),
            1 => any::<u64>().prop_map(serde_json::Value::from),
        ]
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
        fn manifest_parsing_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Manifest::from_json(&bytes, "fuzz");
            if let Ok(rf) = RefFile::parse("fuzz-000000000000.json") {
                let _ = Manifest::from_json_for(&rf, &bytes, "fuzz");
            }
        }

        /// Near-valid manifests as a peer or client might send them: seed
        /// and Cairn field names, paths that try to leave the root, bad
        /// digests and modes. Whatever is accepted writes back equal.
        #[test]
        fn near_valid_manifests_parse_or_fail_cleanly_and_accepted_ones_round_trip(
            name_key in proptest::sample::select(vec!["name", "Name", "nom"]),
            name in prop_oneof![4 => "[A-Za-z0-9_-][A-Za-z0-9._-]{0,12}", 1 => "\\PC{0,12}", 1 => Just("..".to_owned())],
            created in prop_oneof![Just("2024-01-02T03:04:05Z".to_owned()), "\\PC{0,10}"],
            objects_key in proptest::sample::select(vec!["objects", "Objects"]),
            objects in proptest::collection::btree_map(path(), digest_json(), 0..5),
            modes in proptest::collection::btree_map(path(), prop_oneof![4 => (0u32..0o7777).prop_map(serde_json::Value::from), 1 => Just(serde_json::Value::from(-1))], 0..3),
            symlinks in proptest::collection::btree_map(path(), "\\PC{0,10}", 0..3),
            dirs in proptest::collection::vec(path(), 0..3),
        ) {
            let v = serde_json::json!({
                name_key: name,
                "created_at": created,
                objects_key: objects,
                "modes": modes,
                "symlinks": symlinks,
                "dirs": dirs,
            });
            let bytes = serde_json::to_vec(&v).unwrap();
            if let Ok(m) = Manifest::from_json(&bytes, "fuzz") {
                for p in m.objects.keys().chain(m.modes.keys()).chain(m.symlinks.keys()).chain(&m.dirs) {
                    prop_assert!(check_object_path(p).is_ok(), "accepted path {:?}", p);
                }
                let back = Manifest::from_json(&m.to_json(), "again").unwrap();
                prop_assert_eq!(back, m);
            }
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
