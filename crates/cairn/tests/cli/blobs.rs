//! put, get, has, ls, status.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command as StdCommand;

use cairn_store::Digest;

use crate::util::{Env, seeded, stderr, stdout};

#[test]
fn put_output_diffs_clean_against_sha256sum_for_files_and_stdin() {
    let env = Env::new();
    let a = env.write("a.bin", &seeded(3 << 20, 1));
    let b = env.write("dir with space/b", b"bee\n");
    let c = env.write("empty", b"");
    // Names sha256sum escapes.
    let odd = [env.write("back\\slash", b"1"), env.write("new\nline", b"2"), env.write("carriage\rreturn", b"3")];
    let input = seeded(100_000, 2);
    let ours =
        env.cairn().arg("put").args([&a, &b]).arg("-").arg(&c).args(&odd).write_stdin(input.clone()).assert().success();
    let theirs = assert_cmd::Command::from_std(StdCommand::new("sha256sum"))
        .args([&a, &b])
        .arg("-")
        .arg(&c)
        .args(&odd)
        .write_stdin(input)
        .assert()
        .success();
    assert_eq!(stdout(&ours), stdout(&theirs));
    assert_eq!(stdout(&ours).lines().count(), 7);
    assert!(env.tmp_entries().is_empty());
}

#[test]
fn put_of_a_missing_file_reports_it_stores_the_rest_and_exits_1() {
    let env = Env::new();
    let good = env.write("good", b"good");
    let missing = env.path("missing");
    let out = env.cairn().arg("put").arg(&missing).arg(&good).assert().code(1);
    let err = stderr(&out);
    assert!(err.starts_with("cairn: put ") && err.contains(missing.to_str().unwrap()), "{err}");
    assert_eq!(stdout(&out), format!("{}  {}\n", Digest::of(b"good"), good.display()));
}

#[test]
fn put_of_a_directory_is_bad_input_pointing_at_snapshot() {
    let env = Env::new();
    let dir = env.path("d");
    fs::create_dir(&dir).unwrap();
    let out = env.cairn().arg("put").arg(&dir).assert().code(2);
    assert!(stderr(&out).contains("cairn snapshot"), "{}", stderr(&out));
}

#[test]
fn putting_the_same_bytes_twice_keeps_the_first_object() {
    let env = Env::new();
    let hex = env.put(b"twice");
    let ino = fs::metadata(env.object(&hex)).unwrap().ino();
    env.put(b"twice");
    assert_eq!(fs::metadata(env.object(&hex)).unwrap().ino(), ino);
    assert_eq!(fs::read_dir(env.data.join("objects")).unwrap().count(), 1);
}

#[test]
fn get_streams_the_blob_by_bare_or_prefixed_digest() {
    let env = Env::new();
    let data = seeded(2 << 20, 3);
    let hex = env.put(&data);
    let out = env.cairn().args(["get", &hex]).assert().success();
    assert_eq!(out.get_output().stdout, data);
    let out = env.cairn().args(["get", &format!("sha256:{hex}")]).assert().success();
    assert_eq!(out.get_output().stdout, data);
}

#[test]
fn get_with_output_writes_the_file_and_leaves_no_temp_file() {
    let env = Env::new();
    let data = seeded(500_000, 4);
    let hex = env.put(&data);
    let dest = env.path("out/file");
    fs::create_dir(env.path("out")).unwrap();
    env.cairn().args(["get", &hex, "-o"]).arg(&dest).assert().success().stdout("");
    assert_eq!(fs::read(&dest).unwrap(), data);
    assert_eq!(fs::read_dir(env.path("out")).unwrap().count(), 1);
}

#[test]
fn get_of_an_absent_blob_exits_1_naming_it_and_writes_no_output_file() {
    let env = Env::new();
    env.put(b"something");
    let absent = Digest::of(b"absent").to_string();
    let dest = env.path("never");
    let out = env.cairn().args(["get", &absent, "-o"]).arg(&dest).assert().code(1);
    assert!(stderr(&out).contains(&absent), "{}", stderr(&out));
    assert!(!dest.exists());
    assert_eq!(fs::read_dir(env.tmp.path()).unwrap().count(), 1, "only data/ should exist");
}

#[test]
fn malformed_digests_exit_2_with_the_reason_before_touching_the_disk() {
    let env = Env::new();
    let upper = Digest::of(b"x").to_string().to_uppercase();
    for (bad, why) in [("abc", "3 hex characters"), ("sha512:abcd", "sha512"), (upper.as_str(), "lowercase hex")] {
        for cmd in [&["get", bad][..], &["has", bad], &["verify", bad]] {
            let out = env.cairn().args(cmd).assert().code(2);
            let err = stderr(&out);
            assert!(err.starts_with("cairn: bad digest argument") && err.contains(why), "{cmd:?}: {err}");
        }
    }
    assert!(!env.data.exists(), "a bad argument created the data dir");
}

#[test]
fn has_exits_0_when_present_and_1_when_absent() {
    let env = Env::new();
    let absent = Digest::of(b"absent").to_string();
    env.cairn().args(["has", &absent]).assert().code(1).stdout("").stderr("");
    let hex = env.put(b"present");
    env.cairn().args(["has", &hex]).assert().success();
    env.cairn().args(["has", &format!("sha256:{hex}")]).assert().success();
    env.cairn().args(["has", &absent]).assert().code(1);
}

#[test]
fn ls_lists_every_blob_with_its_size_as_text_and_json() {
    let env = Env::new();
    env.cairn().args(["ls", "--json"]).assert().code(1);
    let a = env.put(b"a");
    let b = env.put(&seeded(1000, 5));
    let mut lines: Vec<String> = stdout(&env.cairn().arg("ls").assert().success()).lines().map(String::from).collect();
    lines.sort();
    let mut want = vec![format!("{a}  1"), format!("{b}  1000")];
    want.sort();
    assert_eq!(lines, want);
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&env.cairn().args(["ls", "--json"]).assert().success())).unwrap();
    let mut got: Vec<(String, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["digest"].as_str().unwrap().to_owned(), e["size"].as_u64().unwrap()))
        .collect();
    got.sort();
    let mut want = vec![(a, 1), (b, 1000)];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn ls_json_of_an_empty_store_is_an_empty_array() {
    let env = Env::new();
    fs::create_dir_all(env.data.join("objects")).unwrap();
    let out = env.cairn().args(["ls", "--json"]).assert().success();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap(), serde_json::json!([]));
}

#[test]
fn status_counts_blobs_bytes_and_manifests() {
    let env = Env::new();
    env.write("tree/f", b"12345");
    env.put(b"abc");
    env.cairn().args(["snapshot"]).arg(env.path("tree")).args(["--name", "t"]).assert().success();
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&env.cairn().args(["status", "--json"]).assert().success())).unwrap();
    assert_eq!((v["blobs"].as_u64(), v["bytes"].as_u64(), v["manifests"].as_u64()), (Some(2), Some(8), Some(1)));
    assert_eq!(v["data_dir"].as_str(), env.data.to_str());
    let text = stdout(&env.cairn().arg("status").assert().success());
    assert!(text.contains("blobs:     2") && text.contains("manifests: 1"), "{text}");
}

#[test]
fn read_commands_on_a_missing_data_dir_exit_1_and_create_nothing() {
    let env = Env::new();
    let absent = Digest::of(b"x").to_string();
    for cmd in [&["status"][..], &["ls"], &["get", &absent], &["manifests"], &["manifest", "show", "x"]] {
        let out = env.cairn().args(cmd).assert().code(1);
        let err = stderr(&out);
        assert!(
            err.starts_with("cairn: opening data dir") && err.contains("nothing has been stored"),
            "{cmd:?}: {err}"
        );
    }
    assert!(!env.data.exists());
}

#[test]
fn data_dir_defaults_to_the_environment_variable() {
    let env = Env::new();
    let mut c = assert_cmd::Command::new(crate::util::bin());
    c.env("CAIRN_DATA_DIR", &env.data).args(["put", "-"]).write_stdin("via env").assert().success();
    assert!(env.object(&Digest::of(b"via env").to_string()).is_file());
}
