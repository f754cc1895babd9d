//! Completions, man pages, and output into a pipe whose reader is gone.

use std::process::{Command, Stdio};

use crate::util::{Env, bin};

#[test]
fn completion_scripts_name_every_command_and_bash_accepts_the_bash_one() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Env::new().cairn().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
        let script = String::from_utf8(out.stdout).unwrap();
        for word in ["serve", "snapshot", "checkout", "registry", "data-dir"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
        if shell == "bash" {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("cairn.bash");
            std::fs::write(&f, &script).unwrap();
            let check = Command::new("bash").arg("-n").arg(&f).output().unwrap();
            assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));
        }
    }
    let out = Env::new().cairn().args(["completions", "tcsh-or-so"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown shell is a usage error");
}

#[test]
fn man_writes_a_page_per_command_with_its_flags() {
    let env = Env::new();
    let dir = env.path("man");
    let out = env.cairn().args(["man", "--out"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = String::from_utf8(out.stdout).unwrap();
    let main = std::fs::read_to_string(dir.join("cairn.1")).unwrap();
    assert!(main.starts_with(".ie") || main.contains(".TH cairn 1"), "a roff page: {}", &main[..main.len().min(200)]);
    let serve = std::fs::read_to_string(dir.join("cairn-serve.1")).unwrap();
    assert!(serve.contains("listen\\-addr"), "cairn-serve(1) documents --listen-addr");
    assert!(std::fs::read_to_string(dir.join("cairn-registry-ls.1")).is_ok(), "nested commands get pages");
    assert!(listed.lines().any(|l| l.ends_with("cairn-serve.1")), "the paths written are printed: {listed}");
}

/// Runs `cairn ARGS` with standard output a pipe whose read end is closed.
fn into_closed_pipe(env: &Env, args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut c = Command::new(bin());
    c.env_remove("CAIRN_DATA_DIR").env_remove("RUST_LOG").arg("--data-dir").arg(&env.data).args(args);
    c.stdout(Stdio::from(writer)).stderr(Stdio::piped()).output().unwrap()
}

#[test]
fn output_into_a_pipe_whose_reader_left_ends_quietly_instead_of_panicking() {
    let env = Env::new();
    let f = env.write("a.txt", b"a blob");
    env.cairn().arg("put").arg(&f).assert().success();
    for args in [&["ls"][..], &["completions", "bash"], &["status"]] {
        let out = into_closed_pipe(&env, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "cairn {args:?}: {err}");
        assert!(out.status.success(), "cairn {args:?} exited {:?}: {err}", out.status);
    }
}

#[test]
fn get_into_a_pipe_whose_reader_left_is_not_an_error_but_a_missing_blob_still_is() {
    let env = Env::new();
    let f = env.write("big.bin", &cairn_testkit::blob(3, 1 << 20));
    let put = env.cairn().arg("put").arg(&f).output().unwrap();
    let digest = String::from_utf8(put.stdout).unwrap().split_whitespace().next().unwrap().to_owned();
    let out = into_closed_pipe(&env, &["get", &digest]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let missing = "0".repeat(64);
    let out = into_closed_pipe(&env, &["get", &missing]);
    assert_eq!(out.status.code(), Some(1), "a missing blob fails even when nobody reads the output");
}
