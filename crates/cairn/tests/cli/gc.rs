//! gc.

use std::fs::File;
use std::time::{Duration, SystemTime};

use crate::util::{Env, stderr, stdout};

fn age(env: &Env, hex: &str, secs: u64) {
    let f = File::open(env.object(hex)).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(secs)).unwrap();
}

#[test]
fn gc_deletes_old_unreferenced_blobs_and_keeps_referenced_and_young_ones() {
    let env = Env::new();
    env.write("tree/kept", b"referenced");
    env.cairn().arg("snapshot").arg(env.path("tree")).args(["--name", "t"]).assert().success();
    let kept = cairn_store::Digest::of(b"referenced").to_string();
    let old = env.put(b"old garbage!");
    let young = env.put(b"young garbage");
    age(&env, &kept, 7200);
    age(&env, &old, 7200);

    let dry = stdout(&env.cairn().args(["gc", "--dry-run"]).assert().success());
    assert!(dry.contains(&format!("would delete {old}  12")), "{dry}");
    assert!(dry.contains("would delete 1 blobs"), "{dry}");
    assert!(env.object(&old).exists(), "dry run deleted");

    let out = stdout(&env.cairn().arg("gc").assert().success());
    assert!(out.contains(&format!("deleted {old}  12")) && out.contains("(12 bytes)"), "{out}");
    assert!(!env.object(&old).exists());
    assert!(env.object(&kept).exists() && env.object(&young).exists());

    // With a grace shorter than the young blob's age it goes too.
    age(&env, &young, 120);
    let out = stdout(&env.cairn().args(["gc", "--grace", "1m"]).assert().success());
    assert!(out.contains(&format!("deleted {young}")), "{out}");
    assert!(env.object(&kept).exists());
}

#[test]
fn gc_with_a_bad_grace_exits_2_and_deletes_nothing() {
    let env = Env::new();
    let hex = env.put(b"x");
    age(&env, &hex, 7200);
    for bad in ["soon", "1x", "-5m", ""] {
        let out = env.cairn().arg("gc").arg(format!("--grace={bad}")).assert().code(2);
        assert!(stderr(&out).contains("bad --grace"), "{bad}: {}", stderr(&out));
    }
    assert!(env.object(&hex).exists());
}

#[test]
fn gc_refuses_to_run_while_a_manifest_is_unreadable() {
    let env = Env::new();
    let hex = env.put(b"x");
    age(&env, &hex, 7200);
    std::fs::write(env.data.join("refs/broken-0123456789ab.json"), b"{\"objects\": 42").unwrap();
    let out = env.cairn().arg("gc").assert().code(2);
    assert!(stderr(&out).contains("broken-0123456789ab.json"), "{}", stderr(&out));
    assert!(env.object(&hex).exists());
}
