//! A temp data dir plus a `cairn` command builder.

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use cairn_store::Digest;

/// A temp dir holding a data dir (`data/`, not created) and test files.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub data: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        Env { tmp, data }
    }

    /// `cairn --data-dir <data>`, isolated from the caller's environment.
    pub fn cairn(&self) -> Command {
        let mut c = Command::new(bin());
        c.env_remove("CAIRN_DATA_DIR").env_remove("RUST_LOG").arg("--data-dir").arg(&self.data);
        c
    }

    /// A path inside the temp dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Writes a file (creating parents) and returns its path.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        p
    }

    /// Stores `bytes` with `cairn put` and returns the printed digest.
    pub fn put(&self, bytes: &[u8]) -> String {
        let out = self.cairn().arg("put").arg("-").write_stdin(bytes.to_vec()).assert().success();
        let line = String::from_utf8(out.get_output().stdout.clone()).unwrap();
        let hex = line.split_whitespace().next().unwrap().to_owned();
        assert_eq!(hex, Digest::of(bytes).to_string());
        hex
    }

    /// `objects/<hex>`.
    pub fn object(&self, hex: &str) -> PathBuf {
        self.data.join("objects").join(hex)
    }

    /// Entries of `tmp/` in the data dir.
    pub fn tmp_entries(&self) -> Vec<PathBuf> {
        fs::read_dir(self.data.join("tmp")).unwrap().map(|e| e.unwrap().path()).collect()
    }
}

/// The binary under test.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cairn"))
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn seeded(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// stdout of a finished command, as text.
pub fn stdout(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(a.get_output().stdout.clone()).unwrap()
}

/// stderr of a finished command, as text.
pub fn stderr(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8(a.get_output().stderr.clone()).unwrap()
}
