//! Crash safety: `cairn put` SIGKILLed at random moments.

use std::collections::HashSet;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_store::{Digest, Store};

use crate::util::{Env, bin, seeded};

/// Waits until a temp file shows up (a put is in flight) or the child exits.
fn wait_for_write_in_flight(env: &Env, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if env.data.join("tmp").is_dir() && !env.tmp_entries().is_empty() {
            return;
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            return;
        }
        std::thread::yield_now();
    }
}

#[test]
fn put_killed_at_random_moments_leaves_a_store_that_opens_clean_and_verifies() {
    let env = Env::new();
    let mut expected = HashSet::new();
    // Round 0 runs to the end and times a whole put; the others are killed
    // at a random moment within that time.
    let mut full_run = Duration::ZERO;
    for round in 0..7u64 {
        let mut files = Vec::new();
        for i in 0..6u64 {
            let len = if i % 2 == 0 { 3 << 20 } else { 1000 * (i as usize + 1) };
            let data = seeded(len, round * 100 + i);
            expected.insert(Digest::of(&data));
            files.push(env.write(&format!("r{round}/f{i}"), &data));
        }
        let mut child = Command::new(bin())
            .arg("--data-dir")
            .arg(&env.data)
            .arg("put")
            .args(&files)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if round == 0 {
            let started = Instant::now();
            assert!(child.wait().unwrap().success());
            full_run = started.elapsed();
            continue;
        }
        wait_for_write_in_flight(&env, &mut child);
        std::thread::sleep(full_run.mul_f64(rand::random_range(0.0..1.0)));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    // A put from stdin killed mid-stream always leaves a partial temp file.
    let mut child = Command::new(bin())
        .arg("--data-dir")
        .arg(&env.data)
        .args(["put", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&seeded(1 << 20, 999)).unwrap();
    stdin.flush().unwrap();
    wait_for_write_in_flight(&env, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert!(!env.tmp_entries().is_empty(), "the killed stdin put left no temp file to clean");

    let store = Store::open(&env.data).unwrap();
    assert!(env.tmp_entries().is_empty(), "temp files survived reopening: {:?}", env.tmp_entries());
    let mut visible = 0;
    for d in store.list().unwrap() {
        let d = d.unwrap();
        assert!(expected.contains(&d), "unexpected blob {d}");
        assert!(store.verify_blob(&d).unwrap(), "visible blob {d} is not intact");
        visible += 1;
    }
    drop(store);
    assert!(visible >= 6, "round 0's blobs are missing");
    let out = assert_cmd::Command::new(bin()).arg("--data-dir").arg(&env.data).arg("verify").assert().success();
    assert!(crate::util::stdout(&out).contains(&format!("verified {visible} blobs")));
}
