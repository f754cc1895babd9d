//! manifests, manifest show, manifest rm.

use std::fs;

use crate::util::{Env, stderr, stdout};

fn snapshot(env: &Env, name: &str, content: &[u8]) -> String {
    let dir = format!("src-{name}-{}", content.len());
    env.write(&format!("{dir}/f"), content);
    stdout(&env.cairn().arg("snapshot").arg(env.path(&dir)).args(["--name", name]).assert().success()).trim().to_owned()
}

#[test]
fn manifests_lists_every_version_as_text_and_json() {
    let env = Env::new();
    let a1 = snapshot(&env, "alpha", b"1");
    let a2 = snapshot(&env, "alpha", b"22");
    let b = snapshot(&env, "beta", b"333");
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&env.cairn().args(["manifests", "--json"]).assert().success())).unwrap();
    let mut got: Vec<(String, String, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["created_at"].is_string());
            (
                e["name"].as_str().unwrap().into(),
                e["ref_file"].as_str().unwrap().into(),
                e["blob_count"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let mut want =
        vec![("alpha".into(), a1.clone(), 1), ("alpha".into(), a2.clone(), 1), ("beta".into(), b.clone(), 1)];
    want.sort();
    assert_eq!(got, want);
    let text = stdout(&env.cairn().arg("manifests").assert().success());
    assert!(text.starts_with("NAME"), "{text}");
    for rf in [&a1, &a2, &b] {
        assert!(text.contains(rf.as_str()), "{text}");
    }
}

#[test]
fn manifest_show_prints_the_stored_json_of_the_newest_version() {
    let env = Env::new();
    snapshot(&env, "app", b"old");
    let new = snapshot(&env, "app", b"newer");
    let shown = stdout(&env.cairn().args(["manifest", "show", "app"]).assert().success());
    // The stored bytes, plus the newline a terminal needs.
    let stored = fs::read(env.data.join("refs").join(&new)).unwrap();
    assert_eq!(shown.as_bytes(), [stored, b"\n".to_vec()].concat());
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(v["name"], "app");
    assert!(shown.starts_with("{\n  \"name\": \"app\",\n  \"created_at\": "), "{shown}");
    let by_file = stdout(&env.cairn().args(["manifest", "show", &new]).assert().success());
    assert_eq!(by_file, shown);
}

#[test]
fn manifest_rm_removes_the_newest_version_and_all_removes_every_version() {
    let env = Env::new();
    let old = snapshot(&env, "app", b"old");
    let new = snapshot(&env, "app", b"newer");
    let other = snapshot(&env, "other", b"x");
    env.cairn().args(["manifest", "rm", "app"]).assert().success().stdout(format!("removed {new}\n"));
    assert!(!env.data.join("refs").join(&new).exists());
    assert!(env.data.join("refs").join(&old).exists());
    snapshot(&env, "app", b"third");
    let out = env.cairn().args(["manifest", "rm", "--all", "app"]).assert().success();
    assert_eq!(stdout(&out).lines().count(), 2);
    let left: Vec<_> = fs::read_dir(env.data.join("refs")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from(other)]);
}

#[test]
fn manifest_commands_on_unknown_names_exit_1_and_on_unsafe_names_exit_2() {
    let env = Env::new();
    snapshot(&env, "app", b"x");
    for sub in ["show", "rm"] {
        let out = env.cairn().args(["manifest", sub, "nosuch"]).assert().code(1);
        assert!(stderr(&out).contains("nosuch"), "{}", stderr(&out));
        for bad in ["../refs/app", "a/b.json", "x\\y"] {
            let out = env.cairn().args(["manifest", sub, bad]).assert().code(2);
            assert!(stderr(&out).starts_with("cairn: looking up manifest"), "{bad}: {}", stderr(&out));
        }
    }
    assert_eq!(fs::read_dir(env.data.join("refs")).unwrap().count(), 1);
}
