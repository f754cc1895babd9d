//! Symlinks planted in `objects/` or `refs/` are never followed
//! (filesystem backend only: no other backend has symlinks).

use std::fs;
use std::os::unix::fs::symlink;

use cairn_store::{Digest, RefFile, RefName, Store, StoreError};

/// A file outside the data dir whose bytes hash to its planted name, as a
/// sensitive file someone knows the content of would.
fn outside(t: &tempfile::TempDir, bytes: &[u8]) -> (std::path::PathBuf, Digest) {
    let p = t.path().join("secret");
    fs::write(&p, bytes).unwrap();
    (p, Digest::of(bytes))
}

#[test]
fn a_symlink_planted_in_objects_is_not_read_through_and_verify_quarantines_it() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path().join("data")).unwrap();
    let (secret, d) = outside(&t, b"root:x:0:0:root:/root:/bin/sh\n");
    symlink(&secret, t.path().join("data/objects").join(d.to_string())).unwrap();

    assert!(!s.exists(&d));
    assert!(matches!(s.size(&d), Err(StoreError::Symlink(_))));
    match s.get(&d) {
        Err(e) => assert!(e.is_not_found(), "{e}"),
        Ok(_) => panic!("a planted symlink was opened"),
    }
    assert!(s.verify_blob(&d).is_err());

    let report = s.verify(None, &|_, _| {}).unwrap();
    assert_eq!(report.corrupt.len(), 1, "{report:?}");
    assert_eq!(report.corrupt[0].digest, d);
    assert!(fs::symlink_metadata(t.path().join("data/objects").join(d.to_string())).is_err(), "moved out of objects/");
    assert_eq!(fs::read(&secret).unwrap(), b"root:x:0:0:root:/root:/bin/sh\n", "the target is untouched");
}

#[test]
fn a_put_replaces_a_planted_symlink_with_the_verified_bytes() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path().join("data")).unwrap();
    let (secret, d) = outside(&t, b"known bytes");
    symlink(&secret, t.path().join("data/objects").join(d.to_string())).unwrap();
    let out = s.put_reader(&b"known bytes"[..], Some(&d)).unwrap();
    assert!(!out.existed);
    assert!(fs::symlink_metadata(t.path().join("data/objects").join(d.to_string())).unwrap().is_file());
    assert!(s.verify_blob(&d).unwrap());
    assert_eq!(fs::read(&secret).unwrap(), b"known bytes");
}

#[test]
fn a_finished_upload_replaces_a_planted_symlink_with_the_verified_bytes() {
    use cairn_store::oci::{Registry, RegistryOptions, RepoName};
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path().join("data")).unwrap();
    let (secret, d) = outside(&t, b"pushed bytes");
    let obj = t.path().join("data/objects").join(d.to_string());
    symlink(&secret, &obj).unwrap();
    let r = Registry::new(s.clone(), RegistryOptions::default()).unwrap();
    let rp = RepoName::parse("a").unwrap();
    let id = r.start_upload(&rp).unwrap();
    r.append_upload(&rp, &id, None, None, &b"pushed bytes"[..]).unwrap();
    let out = r.finish_upload(&rp, &id, &d).unwrap();
    assert!(!out.existed);
    assert!(fs::symlink_metadata(&obj).unwrap().is_file());
    assert!(s.verify_blob(&d).unwrap() && r.has_blob(&rp, &d));
    assert_eq!(fs::read(&secret).unwrap(), b"pushed bytes");
}

#[test]
fn a_snapshot_replaces_a_planted_symlink_with_the_verified_bytes() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path().join("data")).unwrap();
    let (secret, d) = outside(&t, b"tree file");
    let obj = t.path().join("data/objects").join(d.to_string());
    symlink(&secret, &obj).unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"tree file").unwrap();
    let r = s.snapshot(&src, &RefName::parse("tree").unwrap(), &|_, _| {}).unwrap();
    assert_eq!(r.new_blobs, 1);
    assert!(fs::symlink_metadata(&obj).unwrap().is_file());
    assert!(s.verify_blob(&d).unwrap());
    assert_eq!(fs::read(&secret).unwrap(), b"tree file");
}

#[test]
fn a_symlink_planted_in_refs_is_not_read_listed_or_resolved() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path().join("data")).unwrap();
    let json = br#"{"name":"x","created_at":"2999-01-01T00:00:00Z","objects":{}}"#;
    let secret = t.path().join("secret.json");
    fs::write(&secret, json).unwrap();
    let rf = RefFile::for_manifest(&RefName::parse("x").unwrap(), json).unwrap();
    symlink(&secret, t.path().join("data/refs").join(rf.as_str())).unwrap();

    match s.manifest_bytes(&rf) {
        Err(e @ StoreError::Symlink(_)) => assert!(e.is_not_found() && e.to_string().contains("symlink"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(s.list_manifests().unwrap().is_empty());
    assert!(s.resolve("x").is_err());
    // Nor is it replaced through: the slot is taken, the target untouched.
    assert!(matches!(s.save_manifest_bytes(&rf, json), Err(StoreError::RefConflict(_))));
    assert_eq!(fs::read(&secret).unwrap(), json);
}
