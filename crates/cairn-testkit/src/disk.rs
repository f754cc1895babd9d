//! A small filesystem for full-disk and eviction tests.

use std::path::PathBuf;

/// A tmpfs mounted on a temp dir (needs root); lazily unmounted and its
/// mount point removed on drop, so keep it alive longer than anything
/// (a node) using the dir.
pub struct TinyDisk {
    path: PathBuf,
}

impl TinyDisk {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `16m`) on a fresh
    /// temp dir, returned with it (hand the dir to a node as its data dir
    /// owner). `None` with a message when that fails (not root), unless
    /// `CAIRN_REQUIRE_TOOLS=1`, where the test fails instead.
    pub fn mount(size: &str) -> Option<(TinyDisk, tempfile::TempDir)> {
        let dir = tempfile::tempdir().expect("temp dir for the tmpfs");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some((TinyDisk { path: dir.path().to_owned() }, dir));
        }
        assert!(!crate::netns::tools_required(), "mounting a tmpfs failed (needs root) and CAIRN_REQUIRE_TOOLS=1");
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        None
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        // Lazily: a process still holding files on it must not make this fail.
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}
