//! `--json` on every command that prints a result: one JSON document on
//! stdout that says what the text output says.

use serde_json::Value;

use crate::util::Env;

fn json(env: &Env, args: &[&str]) -> Value {
    let out = env.cairn().args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "cairn {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("cairn {args:?} --json: {e}"))
}

#[test]
fn put_snapshot_checkout_manifest_rm_gc_and_verify_print_json_results() {
    let env = Env::new();
    let a = env.write("tree/a.txt", b"alpha");
    env.write("tree/sub/b.txt", b"bravo!");

    let v = json(&env, &["put", a.to_str().unwrap()]);
    assert_eq!(v[0]["digest"], cairn_store::Digest::of(b"alpha").oci());
    assert_eq!((v[0]["size"].as_u64(), v[0]["existed"].as_bool()), (Some(5), Some(false)));
    assert_eq!(json(&env, &["put", a.to_str().unwrap()])[0]["existed"], true);

    let v = json(&env, &["snapshot", env.path("tree").to_str().unwrap(), "--name", "t"]);
    assert_eq!((v["name"].as_str(), v["files"].as_u64(), v["bytes"].as_u64()), (Some("t"), Some(2), Some(11)));
    assert_eq!((v["new_blobs"].as_u64(), v["dirs"].as_u64()), (Some(1), Some(1)), "{v}");
    let ref_file = v["ref_file"].as_str().unwrap().to_owned();

    let out = env.path("out");
    let v = json(&env, &["checkout", "t", out.to_str().unwrap()]);
    assert_eq!((v["ref_file"].as_str(), v["files"].as_u64(), v["dirs"].as_u64()), (Some(&*ref_file), Some(2), Some(1)));
    assert_eq!(v["linked"].as_u64().unwrap() + v["cloned"].as_u64().unwrap() + v["copied"].as_u64().unwrap(), 2);

    let v = json(&env, &["verify"]);
    assert_eq!((v["checked"].as_u64(), v["corrupt"].as_array().map(Vec::len)), (Some(2), Some(0)), "{v}");

    let v = json(&env, &["manifest", "rm", "t"]);
    assert_eq!(v, serde_json::json!({"removed": [ref_file]}));

    let v = json(&env, &["gc", "--grace", "0s", "--dry-run"]);
    assert_eq!((v["dry_run"].as_bool(), v["deleted"].as_array().map(Vec::len)), (Some(true), Some(2)), "{v}");
    assert_eq!(v["bytes"].as_u64(), Some(11));
    let v = json(&env, &["gc", "--grace", "0s"]);
    assert_eq!((v["dry_run"].as_bool(), v["deleted"].as_array().map(Vec::len)), (Some(false), Some(2)), "{v}");
    assert_eq!(json(&env, &["ls"]), serde_json::json!([]), "gc deleted them");
}

#[test]
fn verify_json_names_the_corrupt_blob_and_keeps_exit_code_three() {
    let env = Env::new();
    let hex = env.put(b"will rot");
    let obj = env.object(&hex);
    let mut perm = std::fs::metadata(&obj).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&obj, perm).unwrap();
    std::fs::write(&obj, b"rotten!!").unwrap();
    let out = env.cairn().args(["verify", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["corrupt"][0]["digest"], format!("sha256:{hex}"));
}
