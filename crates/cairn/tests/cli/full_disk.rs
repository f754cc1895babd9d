//! A CLI write onto a full disk: exit 1 with a message saying what to do,
//! and nothing half-written left in the store.

use cairn_testkit::TinyDisk;

use crate::util::{Env, bin};

#[test]
fn put_onto_a_full_disk_exits_1_saying_what_to_do_and_leaves_nothing_behind() {
    let Some((_disk, mount)) = TinyDisk::mount("4m") else { return };
    let env = Env::new();
    let data = mount.path().join("data");
    let big = env.write("big.bin", &cairn_testkit::blob(9, 6 << 20));
    let small = env.write("small.bin", b"fits");
    let out = std::process::Command::new(bin())
        .arg("--data-dir")
        .arg(&data)
        .arg("put")
        .arg(&big)
        .arg(&small)
        .env_remove("CAIRN_DATA_DIR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("big.bin") && err.contains("filesystem is full") && err.contains("cairn gc"), "{err}");
    // The file that fits is stored; the one that did not left nothing.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("small.bin") && !stdout.contains("big.bin"), "{stdout}");
    let objects: Vec<_> = std::fs::read_dir(data.join("objects")).unwrap().collect();
    assert_eq!(objects.len(), 1, "only the small blob is in objects/");
    assert_eq!(std::fs::read_dir(data.join("tmp")).unwrap().count(), 0, "no temp file left");
}
