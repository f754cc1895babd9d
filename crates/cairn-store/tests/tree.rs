//! Public-API tests of snapshot and checkout, on both backends
//! (filesystem-only ones say so).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use cairn_store::{CheckoutOptions, Digest, Manifest, RefName, Store, StoreError};
use common::Env;

both_backends!(
    checkout_of_a_snapshot_rebuilds_the_tree_with_modes_and_symlinks,
    checkout_refuses_missing_blobs_before_writing_anything,
    checkout_refuses_a_target_that_is_not_empty,
    checkout_of_a_manifest_escaping_its_target_writes_nothing,
    checkout_drops_setuid_setgid_and_sticky_bits_unless_asked_to_keep_them,
);
s3_backend!(
    checkout_of_a_snapshot_rebuilds_the_tree_with_modes_and_symlinks,
    checkout_refuses_missing_blobs_before_writing_anything,
    checkout_refuses_a_target_that_is_not_empty,
    checkout_of_a_manifest_escaping_its_target_writes_nothing,
    checkout_drops_setuid_setgid_and_sticky_bits_unless_asked_to_keep_them,
);

fn tree(root: &Path) {
    fs::create_dir_all(root.join("etc/empty")).unwrap();
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
    fs::write(root.join("bin/tool"), vec![7u8; 200_000]).unwrap();
    fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(root.join("etc/empty"), fs::Permissions::from_mode(0o700)).unwrap();
    symlink("../etc/hosts", root.join("bin/hosts")).unwrap();
    symlink("/nonexistent/abs", root.join("dangling")).unwrap();
}

fn no_progress(_: u64, _: u64) {}

fn checkout_of_a_snapshot_rebuilds_the_tree_with_modes_and_symlinks(env: &Env) {
    let t = env.scratch();
    tree(&t.join("src"));
    let s = env.store();
    let snap = s.snapshot(&t.join("src"), &RefName::parse("root").unwrap(), &no_progress).unwrap();
    let out = t.join("out");
    let r = s.checkout(&snap.ref_file, &out, CheckoutOptions::default(), &no_progress).unwrap();
    assert_eq!((r.files, r.symlinks, r.dirs, r.linked), (2, 2, 3, 0));
    assert_eq!(fs::read(out.join("bin/tool")).unwrap(), vec![7u8; 200_000]);
    assert_eq!(fs::metadata(out.join("bin/tool")).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(fs::metadata(out.join("etc/empty")).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(fs::read_link(out.join("bin/hosts")).unwrap(), Path::new("../etc/hosts"));
    assert_eq!(fs::read_link(out.join("dangling")).unwrap(), Path::new("/nonexistent/abs"));
    // A copied file must not share the object's inode.
    if let Some(dir) = env.data_dir() {
        let obj = dir.join("objects").join(Digest::of(b"127.0.0.1 localhost\n").to_string());
        assert_ne!(fs::metadata(obj).unwrap().ino(), fs::metadata(out.join("etc/hosts")).unwrap().ino());
    }
}

/// Filesystem only: hard links.
#[test]
fn checkout_with_link_shares_the_object_inode() {
    let t = tempfile::tempdir().unwrap();
    tree(&t.path().join("src"));
    let s = Store::open(t.path().join("data")).unwrap();
    let snap = s.snapshot(&t.path().join("src"), &RefName::parse("root").unwrap(), &no_progress).unwrap();
    let out = t.path().join("out");
    let r =
        s.checkout(&snap.ref_file, &out, CheckoutOptions { link: true, ..Default::default() }, &no_progress).unwrap();
    // The 0644 file is linked; the 0755 one is copied so the object stays 0444.
    assert_eq!((r.linked, r.copied + r.cloned), (1, 1));
    let obj = t.path().join("data/objects").join(Digest::of(b"127.0.0.1 localhost\n").to_string());
    assert_eq!(fs::metadata(&obj).unwrap().ino(), fs::metadata(out.join("etc/hosts")).unwrap().ino());
    let tool = t.path().join("data/objects").join(Digest::of(&vec![7u8; 200_000]).to_string());
    assert_eq!(fs::metadata(tool).unwrap().mode() & 0o777, 0o444);
}

fn checkout_refuses_missing_blobs_before_writing_anything(env: &Env) {
    let t = env.scratch();
    let s = env.store();
    let present = s.put_reader(&b"here"[..], None).unwrap().digest;
    let absent = Digest::of(b"absent");
    let json = format!(r#"{{"name":"m","created_at":"","objects":{{"a":"{present}","b":"{absent}"}}}}"#);
    env.plant("refs/m-000000000000.json", json.as_bytes());
    let rf = s.resolve("m").unwrap();
    let out = t.join("out");
    match s.checkout(&rf, &out, CheckoutOptions::default(), &no_progress) {
        Err(StoreError::MissingBlobs { missing, .. }) => assert_eq!(missing, vec![absent]),
        other => panic!("{other:?}"),
    }
    assert!(!out.exists());
}

fn checkout_refuses_a_target_that_is_not_empty(env: &Env) {
    let t = env.scratch();
    let s = env.store();
    let d = s.put_reader(&b"x"[..], None).unwrap().digest;
    let mut m = Manifest::new(&RefName::parse("m").unwrap());
    m.objects.insert("x".into(), d);
    let rf = s.save_manifest(&m).unwrap();
    let out = t.join("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("keep"), b"mine").unwrap();
    let e = s.checkout(&rf, &out, CheckoutOptions::default(), &no_progress).unwrap_err();
    assert!(matches!(e, StoreError::TargetNotEmpty(_)), "{e}");
    assert_eq!(fs::read_dir(&out).unwrap().count(), 1);
    // An empty existing directory is fine.
    fs::remove_file(out.join("keep")).unwrap();
    s.checkout(&rf, &out, CheckoutOptions::default(), &no_progress).unwrap();
    assert_eq!(fs::read(out.join("x")).unwrap(), b"x");
}

fn checkout_of_a_manifest_escaping_its_target_writes_nothing(env: &Env) {
    let t = env.scratch();
    let s = env.store();
    let d = s.put_reader(&b"evil"[..], None).unwrap().digest;
    let cases = [
        format!(r#""objects":{{"ok":"{d}","../escape":"{d}"}}"#),
        format!(r#""objects":{{"ok":"{d}","/tmp/abs":"{d}"}}"#),
        format!(r#""objects":{{"ok":"{d}","sub/../../x":"{d}"}}"#),
        format!(r#""objects":{{"ok":"{d}","link/x":"{d}"}},"symlinks":{{"link":"{}"}}"#, t.display()),
    ];
    for (i, body) in cases.iter().enumerate() {
        let rf = format!("bad{i}-000000000000.json");
        env.plant(&format!("refs/{rf}"), format!(r#"{{"name":"bad{i}",{body}}}"#).as_bytes());
        let out = t.join(format!("out{i}"));
        let e = s.checkout(&rf.parse().unwrap(), &out, CheckoutOptions::default(), &no_progress).unwrap_err();
        assert!(matches!(e, StoreError::UnsafePath { .. }), "case {i}: {e}");
        assert!(!out.exists(), "case {i} wrote into its target");
    }
    assert!(!t.join("x").exists() && !t.join("escape").exists());
}

/// Saves `json` under the ref file its bytes call for.
fn save_json(s: &Store, name: &str, json: &str) -> cairn_store::RefFile {
    let rf = cairn_store::RefFile::for_manifest(&RefName::parse(name).unwrap(), json.as_bytes()).unwrap();
    s.save_manifest_bytes(&rf, json.as_bytes()).unwrap();
    rf
}

fn checkout_drops_setuid_setgid_and_sticky_bits_unless_asked_to_keep_them(env: &Env) {
    let t = env.scratch();
    let s = env.store();
    let d = s.put_reader(&b"#!/bin/sh\n"[..], None).unwrap().digest;
    // 2541 is 0o4755: the decimal form a JSON manifest carries.
    let json = format!(
        r#"{{"name":"suid","objects":{{"bin/tool":"{d}","bin/sgid":"{d}"}},"modes":{{"bin/tool":2541,"bin/sgid":{},"tmp":{}}},"dirs":["tmp"]}}"#,
        0o2755, 0o1777
    );
    let rf = save_json(&s, "suid", &json);
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;

    let out = t.join("plain");
    s.checkout(&rf, &out, CheckoutOptions::default(), &no_progress).unwrap();
    assert_eq!(mode(&out.join("bin/tool")), 0o755);
    assert_eq!(mode(&out.join("bin/sgid")), 0o755);
    assert_eq!(mode(&out.join("tmp")), 0o777);

    let out = t.join("kept");
    let opts = CheckoutOptions { preserve_special_bits: true, ..Default::default() };
    s.checkout(&rf, &out, opts, &no_progress).unwrap();
    assert_eq!(mode(&out.join("bin/tool")), 0o4755);
    assert_eq!(mode(&out.join("tmp")), 0o1777);
    // The manifest still records the bits as given.
    assert_eq!(s.load_manifest(&rf).unwrap().modes["bin/tool"], 0o4755);
}
