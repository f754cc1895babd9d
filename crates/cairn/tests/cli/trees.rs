//! snapshot and checkout.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use cairn_store::Digest;

use crate::util::{Env, seeded, stderr, stdout};

/// What a tree holds: path -> (kind, mode, content or link target).
fn describe(root: &Path) -> BTreeMap<String, (char, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            let mode = m.mode() & 0o7777;
            let entry = if m.file_type().is_symlink() {
                ('l', 0, fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes())
            } else if m.is_dir() {
                stack.push(p.clone());
                ('d', mode, Vec::new())
            } else {
                ('f', mode, fs::read(&p).unwrap())
            };
            out.insert(rel, entry);
        }
    }
    out
}

fn sample_tree(env: &Env) -> std::path::PathBuf {
    let root = env.path("src");
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("var/empty/deeper")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
    fs::write(root.join("etc/hosts.copy"), b"127.0.0.1 localhost\n").unwrap();
    fs::write(root.join("usr/bin/tool"), seeded(300_000, 7)).unwrap();
    fs::write(root.join("etc/secret"), b"s3cret").unwrap();
    fs::write(root.join("empty-file"), b"").unwrap();
    fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(root.join("etc/secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(root.join("var/empty"), fs::Permissions::from_mode(0o711)).unwrap();
    symlink("../etc/hosts", root.join("usr/hosts")).unwrap();
    symlink("/does/not/exist", root.join("dangling")).unwrap();
    symlink("usr", root.join("dirlink")).unwrap();
    root
}

#[test]
fn snapshot_then_checkout_is_byte_identical_with_modes_symlinks_and_empty_dirs() {
    let env = Env::new();
    let src = sample_tree(&env);
    let out = env.cairn().arg("snapshot").arg(&src).args(["--name", "rootfs"]).assert().success();
    let ref_file = stdout(&out).trim().to_owned();
    assert!(ref_file.starts_with("rootfs-") && ref_file.ends_with(".json"), "{ref_file}");
    assert!(env.data.join("refs").join(&ref_file).is_file());
    // Identical files are one blob: 5 files, 4 distinct contents.
    assert_eq!(fs::read_dir(env.data.join("objects")).unwrap().count(), 4);

    let dest = env.path("out");
    env.cairn().args(["checkout", "rootfs"]).arg(&dest).assert().success();
    assert_eq!(describe(&dest), describe(&src));
}

#[test]
fn checkout_with_link_shares_inodes_with_the_objects() {
    let env = Env::new();
    let src = sample_tree(&env);
    env.cairn().arg("snapshot").arg(&src).args(["--name", "rootfs"]).assert().success();
    let dest = env.path("out");
    let out = env.cairn().args(["checkout", "--link", "rootfs"]).arg(&dest).assert().success();
    assert!(stdout(&out).contains("3 linked"), "{}", stdout(&out));
    let hosts = env.object(&Digest::of(b"127.0.0.1 localhost\n").to_string());
    let ino = fs::metadata(&hosts).unwrap().ino();
    assert_eq!(fs::metadata(dest.join("etc/hosts")).unwrap().ino(), ino);
    assert_eq!(fs::metadata(dest.join("etc/hosts.copy")).unwrap().ino(), ino);
    // Linked files are read-only, so an edit cannot reach the store.
    assert_eq!(fs::metadata(dest.join("etc/hosts")).unwrap().mode() & 0o222, 0);
    // Files whose mode the object cannot carry are copied with their mode.
    assert_eq!(fs::metadata(dest.join("usr/bin/tool")).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(fs::read(dest.join("usr/bin/tool")).unwrap(), seeded(300_000, 7));
    assert_eq!(fs::metadata(dest.join("etc/secret")).unwrap().mode() & 0o7777, 0o600);
}

#[test]
fn newest_version_wins_and_a_ref_file_picks_an_exact_version() {
    let env = Env::new();
    let v1 = env.write("v1/f", b"one");
    let v2 = env.write("v2/f", b"two");
    let old = stdout(&env.cairn().arg("snapshot").arg(v1.parent().unwrap()).args(["--name", "app"]).assert().success());
    env.cairn().arg("snapshot").arg(v2.parent().unwrap()).args(["--name", "app"]).assert().success();
    env.cairn().args(["checkout", "app"]).arg(env.path("new")).assert().success();
    assert_eq!(fs::read(env.path("new/f")).unwrap(), b"two");
    env.cairn().args(["checkout", old.trim()]).arg(env.path("old")).assert().success();
    assert_eq!(fs::read(env.path("old/f")).unwrap(), b"one");
}

#[test]
fn checkout_into_a_non_empty_directory_exits_2_and_writes_nothing() {
    let env = Env::new();
    env.write("src/f", b"f");
    env.cairn().arg("snapshot").arg(env.path("src")).args(["--name", "t"]).assert().success();
    env.write("busy/mine", b"mine");
    let out = env.cairn().args(["checkout", "t"]).arg(env.path("busy")).assert().code(2);
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(fs::read_dir(env.path("busy")).unwrap().count(), 1);
    // A plain file as target is refused the same way.
    let out = env.cairn().args(["checkout", "t"]).arg(env.path("busy/mine")).assert().code(2);
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
}

#[test]
fn checkout_of_a_manifest_with_missing_blobs_lists_them_and_writes_nothing() {
    let env = Env::new();
    env.write("src/keep", b"keep");
    env.write("src/lost", b"lost");
    env.cairn().arg("snapshot").arg(env.path("src")).args(["--name", "t"]).assert().success();
    let lost = Digest::of(b"lost").to_string();
    fs::remove_file(env.object(&lost)).unwrap();
    let out = env.cairn().args(["checkout", "t"]).arg(env.path("out")).assert().code(1);
    assert!(stderr(&out).contains(&lost), "{}", stderr(&out));
    assert!(!env.path("out").exists());
}

/// Writes a raw manifest file into refs/ and returns its ref file name.
fn raw_manifest(env: &Env, name: &str, body: &str) -> String {
    fs::create_dir_all(env.data.join("refs")).unwrap();
    let rf = format!("{name}-000000000000.json");
    fs::write(env.data.join("refs").join(&rf), format!(r#"{{"name":"{name}",{body}}}"#)).unwrap();
    rf
}

#[test]
fn checkout_refuses_object_paths_that_escape_the_target_before_writing() {
    let env = Env::new();
    let d = env.put(b"payload");
    let outside = env.path("outside");
    fs::create_dir(&outside).unwrap();
    let cases = [
        ("dotdot", format!(r#""objects":{{"a":"{d}","../escaped":"{d}"}}"#), "../escaped"),
        ("deep", format!(r#""objects":{{"a":"{d}","x/../../escaped":"{d}"}}"#), "x/../../escaped"),
        ("absolute", format!(r#""objects":{{"a":"{d}","{}/abs":"{d}"}}"#, outside.display()), "/abs"),
        (
            "vialink",
            format!(r#""objects":{{"a":"{d}","l/escaped":"{d}"}},"symlinks":{{"l":"{}"}}"#, outside.display()),
            "l/escaped",
        ),
        ("viadot", format!(r#""objects":{{"a":"{d}","l/x/escaped":"{d}"}},"symlinks":{{"l":"."}}"#), "l/x/escaped"),
        ("dirvialink", format!(r#""objects":{{"a":"{d}"}},"dirs":["l/sub"],"symlinks":{{"l":"..\/.."}}"#), "l/sub"),
    ];
    for (name, body, path) in cases {
        let rf = raw_manifest(&env, name, &body);
        let target = env.path(&format!("out-{name}"));
        let out = env.cairn().args(["checkout", &rf]).arg(&target).assert().code(2);
        let err = stderr(&out);
        assert!(err.contains("unsafe path") && err.contains(path), "{name}: {err}");
        assert!(!target.exists(), "{name}: target was created");
    }
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert!(!env.path("escaped").exists());
}

#[test]
fn snapshot_refuses_unsafe_names_with_exit_2() {
    let env = Env::new();
    env.write("src/f", b"f");
    for bad in ["../x", "a/b", "", "has space", ".."] {
        let out = env.cairn().arg("snapshot").arg(env.path("src")).args(["--name", bad]).assert().code(2);
        assert!(stderr(&out).starts_with("cairn: bad --name"), "{bad:?}: {}", stderr(&out));
    }
    assert!(!env.data.exists());
}

#[test]
fn snapshot_of_a_missing_directory_exits_1_naming_it() {
    let env = Env::new();
    let out = env.cairn().arg("snapshot").arg(env.path("nope")).args(["--name", "x"]).assert().code(1);
    assert!(stderr(&out).contains(env.path("nope").to_str().unwrap()), "{}", stderr(&out));
}

#[test]
fn checkout_of_an_unknown_manifest_exits_1_and_of_an_unsafe_name_exits_2() {
    let env = Env::new();
    env.put(b"x");
    let out = env.cairn().args(["checkout", "nosuch"]).arg(env.path("o")).assert().code(1);
    assert!(stderr(&out).contains("\"nosuch\" not found"), "{}", stderr(&out));
    let out = env.cairn().args(["checkout", "../../etc/passwd"]).arg(env.path("o")).assert().code(2);
    assert!(stderr(&out).contains("../../etc/passwd"), "{}", stderr(&out));
    assert!(!env.path("o").exists());
}

#[test]
fn checkout_with_link_onto_another_filesystem_copies_instead() {
    let env = Env::new();
    let shm = Path::new("/dev/shm");
    let other_fs = fs::metadata(shm).is_ok_and(|m| m.dev() != fs::metadata(env.tmp.path()).unwrap().dev());
    if !other_fs {
        eprintln!("skipping: /dev/shm is not a separate filesystem here");
        return;
    }
    env.write("src/a", b"cross-device");
    env.cairn().arg("snapshot").arg(env.path("src")).args(["--name", "x"]).assert().success();
    let elsewhere = tempfile::tempdir_in(shm).unwrap();
    let dest = elsewhere.path().join("out");
    let out = env.cairn().args(["checkout", "--link", "x"]).arg(&dest).assert().success();
    assert!(stdout(&out).contains("0 linked") && stdout(&out).contains("1 copied"), "{}", stdout(&out));
    assert_eq!(fs::read(dest.join("a")).unwrap(), b"cross-device");
}

#[test]
fn checkout_drops_setuid_bits_a_snapshot_records_unless_preserve_special_bits_is_given() {
    let env = Env::new();
    let tool = env.write("src/bin/tool", b"#!/bin/sh\n");
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o4755)).unwrap();
    env.cairn().arg("snapshot").arg(env.path("src")).args(["--name", "suid"]).assert().success();
    let shown = stdout(&env.cairn().args(["manifest", "show", "suid"]).assert().success());
    assert!(shown.contains("2541"), "the manifest records the bits: {shown}");
    let mode = |p: &str| fs::metadata(env.path(p)).unwrap().permissions().mode() & 0o7777;
    env.cairn().args(["checkout", "suid"]).arg(env.path("plain")).assert().success();
    assert_eq!(mode("plain/bin/tool"), 0o755);
    env.cairn().args(["checkout", "--preserve-special-bits", "suid"]).arg(env.path("kept")).assert().success();
    assert_eq!(mode("kept/bin/tool"), 0o4755);
}

#[test]
fn snapshot_names_are_accepted_up_to_237_bytes_so_the_ref_file_fits_255() {
    let env = Env::new();
    env.write("src/f", b"f");
    let name = "n".repeat(237);
    let out = env.cairn().arg("snapshot").arg(env.path("src")).args(["--name", &name]).assert().success();
    let rf = stdout(&out).trim().to_owned();
    assert!(rf.contains(&format!("{name}-")), "{rf}");
    let listed = stdout(&env.cairn().args(["manifests"]).assert().success());
    assert!(listed.contains(&name), "{listed}");
    let out = env.cairn().arg("snapshot").arg(env.path("src")).args(["--name", &"n".repeat(238)]).assert().code(2);
    assert!(stderr(&out).contains("at most 237"), "{}", stderr(&out));
}
