//! A data dir written by the original store opens and works unchanged.

use std::fs;
use std::path::Path;

use crate::util::{Env, stdout};

const MOTD: &str = "bccd0a9bf9278ffcbe94233dd8058b1d094a6b5b9fb0a21074ca704a3774d3e9";
const SEED: &str = "10cb2c0c8ecb668bb113a37bf456583bdf83428eee00798ed0d908a89be03029";
const ORPHAN: &str = "c049bfe29c204d4c3f0c64d0bbe80482cf3a70e52411ad576c4bff512085a1b9";
const NEWEST: &str = "seed-rootfs-995ffadb6b3e.json";
const OLDER: &str = "seed-rootfs-16e83522945b.json";

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn original_store() -> Env {
    let env = Env::new();
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/original-store"), &env.data);
    env
}

#[test]
fn an_original_store_lists_checks_out_and_serves_its_data() {
    let env = original_store();
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&env.cairn().args(["manifests", "--json"]).assert().success())).unwrap();
    let mut got: Vec<(&str, &str, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["ref_file"].as_str().unwrap(), e["blob_count"].as_u64().unwrap()))
        .collect();
    got.sort();
    assert_eq!(got, vec![("seed-rootfs", OLDER, 1), ("seed-rootfs", NEWEST, 2)]);

    let out = env.path("root");
    let line = stdout(&env.cairn().args(["checkout", "--link", "seed-rootfs"]).arg(&out).assert().success());
    assert!(line.starts_with(NEWEST), "{line}");
    // The original's objects are writable, so they are copied, never linked.
    assert!(line.contains("0 linked"), "{line}");
    assert_eq!(fs::read_to_string(out.join("etc/motd")).unwrap(), "hello from the original store\n");
    assert_eq!(fs::read_to_string(out.join("usr/bin/seed")).unwrap(), "#!/bin/sh\necho seed\n");

    env.cairn().args(["get", ORPHAN]).assert().success().stdout("an orphan nobody references\n");
    env.cairn().args(["has", SEED]).assert().success();
    let shown = stdout(&env.cairn().args(["manifest", "show", OLDER]).assert().success());
    assert!(shown.contains("\"createdAt\""), "{shown}");
    env.cairn().arg("verify").assert().success();
}

#[test]
fn an_original_store_accepts_puts_and_gc_keeps_what_its_refs_reference() {
    let env = original_store();
    let new = env.put(b"written by cairn");
    let out = stdout(&env.cairn().args(["gc", "--grace", "0s"]).assert().success());
    assert!(out.contains(&format!("deleted {ORPHAN}")), "{out}");
    for kept in [MOTD, SEED] {
        assert!(env.object(kept).is_file(), "gc deleted referenced blob {kept}");
    }
    assert!(!env.object(ORPHAN).exists());
    // Loose and younger than nothing: collected too; the refs are untouched.
    assert!(!env.object(&new).exists());
    assert_eq!(fs::read_dir(env.data.join("refs")).unwrap().count(), 2);
    let status = stdout(&env.cairn().args(["status", "--json"]).assert().success());
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!((v["blobs"].as_u64(), v["manifests"].as_u64()), (Some(2), Some(2)));
}
