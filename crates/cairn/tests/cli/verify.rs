//! verify.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use cairn_store::Digest;

use crate::util::{Env, seeded, stderr, stdout};

fn corrupt(env: &Env, hex: &str) {
    let p = env.object(hex);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&p).unwrap();
    bytes[0] ^= 1;
    fs::write(&p, bytes).unwrap();
}

#[test]
fn verify_of_a_clean_store_exits_0() {
    let env = Env::new();
    for i in 0..5 {
        env.put(&seeded(10_000 * i + 1, i as u64));
    }
    let out = env.cairn().arg("verify").assert().success();
    assert!(stdout(&out).contains("verified 5 blobs") && stdout(&out).contains("0 corrupt"), "{}", stdout(&out));
}

#[test]
fn verify_quarantines_a_corrupt_blob_exits_3_and_it_is_no_longer_served() {
    let env = Env::new();
    let good = env.put(b"good blob");
    let bad = env.put(&seeded(1 << 20, 9));
    corrupt(&env, &bad);
    let out = env.cairn().arg("verify").assert().code(3);
    let err = stderr(&out);
    assert!(err.starts_with("cairn: corrupt blob") && err.contains(&bad) && err.contains("quarantine"), "{err}");
    assert!(stdout(&out).contains("1 corrupt"), "{}", stdout(&out));
    assert!(env.data.join("quarantine").join(&bad).is_file());
    env.cairn().args(["get", &bad]).assert().code(1);
    env.cairn().args(["has", &bad]).assert().code(1);
    env.cairn().args(["get", &good]).assert().success().stdout("good blob");
    // Putting the original bytes again restores it.
    env.put(&seeded(1 << 20, 9));
    env.cairn().arg("verify").assert().success();
}

#[test]
fn verify_of_given_digests_checks_only_those_and_reports_missing_ones() {
    let env = Env::new();
    let good = env.put(b"good");
    let bad = env.put(b"bad");
    corrupt(&env, &bad);
    let out = env.cairn().args(["verify", &format!("sha256:{good}")]).assert().success();
    assert!(stdout(&out).contains("verified 1 blobs"), "{}", stdout(&out));
    assert!(env.object(&bad).exists(), "an unrequested blob was checked");
    let absent = Digest::of(b"absent").to_string();
    let out = env.cairn().args(["verify", &good, &absent]).assert().code(1);
    assert!(stderr(&out).contains(&absent), "{}", stderr(&out));
    env.cairn().args(["verify", &good, &bad]).assert().code(3);
}

#[test]
fn verify_quarantines_a_symlink_planted_in_objects_without_reading_through_it() {
    let env = Env::new();
    env.put(b"good blob");
    let secret = env.write("outside/secret", b"root:x:0:0\n");
    let hex = Digest::of(b"root:x:0:0\n").to_string();
    std::os::unix::fs::symlink(&secret, env.object(&hex)).unwrap();
    env.cairn().args(["get", &hex]).assert().code(1);
    let out = env.cairn().arg("verify").assert().code(3);
    assert!(stderr(&out).contains(&hex), "{}", stderr(&out));
    assert!(fs::symlink_metadata(env.data.join("quarantine").join(&hex)).unwrap().file_type().is_symlink());
    assert!(fs::symlink_metadata(env.object(&hex)).is_err());
    assert_eq!(fs::read(&secret).unwrap(), b"root:x:0:0\n");
}
