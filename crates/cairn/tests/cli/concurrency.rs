//! Several processes on one data dir.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_store::Digest;

use crate::util::{Env, bin, seeded, stdout};

#[test]
fn the_same_blob_put_by_several_processes_at_once_succeeds_everywhere_with_one_copy() {
    let env = Env::new();
    let data = seeded(8 << 20, 42);
    let file = env.write("big", &data);
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(bin())
                .arg("--data-dir")
                .arg(&env.data)
                .arg("put")
                .arg(&file)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let want = format!("{}  {}\n", Digest::of(&data), file.display());
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
    }
    assert_eq!(std::fs::read_dir(env.data.join("objects")).unwrap().count(), 1);
    assert!(env.tmp_entries().is_empty());
    env.cairn().arg("verify").assert().success();
}

#[test]
fn gc_with_zero_grace_racing_snapshots_never_deletes_a_blob_of_a_saved_manifest() {
    let env = Env::new();
    env.put(b"warm up");
    let done = AtomicBool::new(false);
    let saved: Vec<String> = std::thread::scope(|s| {
        let gc = s.spawn(|| {
            let mut runs = 0;
            while !done.load(Ordering::Relaxed) || runs < 3 {
                env.cairn().args(["gc", "--grace", "0s"]).assert().success();
                runs += 1;
            }
            runs
        });
        let mut saved = Vec::new();
        for i in 0..20u64 {
            let dir = format!("t{i}");
            env.write(&format!("{dir}/unique"), &seeded(50_000, i));
            env.write(&format!("{dir}/shared"), b"in every tree");
            // A loose put, collectable at once, to give the GC work.
            env.put(&seeded(10_000, 1000 + i));
            let out = env.cairn().arg("snapshot").arg(env.path(&dir)).args(["--name", &dir]).assert().success();
            saved.push(stdout(&out).trim().to_owned());
        }
        done.store(true, Ordering::Relaxed);
        assert!(gc.join().unwrap() >= 3);
        saved
    });
    for (i, rf) in saved.iter().enumerate() {
        let dest = env.path(&format!("out{i}"));
        env.cairn().args(["checkout", rf]).arg(&dest).assert().success();
        assert_eq!(std::fs::read(dest.join("unique")).unwrap(), seeded(50_000, i as u64));
    }
    env.cairn().arg("verify").assert().success();
}
