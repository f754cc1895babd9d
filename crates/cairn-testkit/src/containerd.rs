//! A real containerd (Debian's `containerd` 1.6, with `ctr`) started by a
//! test as a child process, every path in a temp dir, so tests can pull
//! images through Cairn with the configuration a user would write.
//!
//! containerd needs root. Without it, or without the binaries, [`Containerd::start`]
//! returns `None` after printing why (the test skips), or panics when
//! `CAIRN_REQUIRE_TOOLS=1`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::registry::tool_available;

/// The containerd daemon.
pub const CONTAINERD: &str = "/usr/bin/containerd";

/// containerd's command-line client.
pub const CTR: &str = "/usr/bin/ctr";

/// The namespace the helpers pull into.
pub const NAMESPACE: &str = "cairn-test";

/// A running containerd; killed and reaped on drop.
pub struct Containerd {
    child: Option<Child>,
    sock: PathBuf,
    // Held for its lifetime: the daemon's root, state and socket live here.
    dir: tempfile::TempDir,
}

/// True when this process runs as root (`/proc/self` belongs to the
/// effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl Containerd {
    /// Writes a config under a new temp dir, starts containerd and waits
    /// until `ctr version` answers. `None` when it cannot run here and
    /// tools are not required (the caller skips).
    pub fn start() -> Option<Containerd> {
        if !tool_available(CONTAINERD) || !tool_available(CTR) {
            return None;
        }
        if !is_root() {
            if crate::netns::tools_required() {
                panic!("containerd needs root and CAIRN_REQUIRE_TOOLS=1: run the suite as root");
            }
            eprintln!("skipping: containerd needs root");
            return None;
        }
        // Short prefix: the socket path must fit a sockaddr_un (108 bytes).
        let dir = tempfile::Builder::new().prefix("ctd").tempdir().expect("tempdir");
        let p = dir.path();
        let sock = p.join("c.sock");
        // Only the content store, metadata, snapshotters and the services
        // ctr talks to are needed; CRI would want CNI and a runtime.
        // The `opt` plugin defaults to /opt/containerd: keep it in the temp dir.
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ntemp = \"{tmp}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n\
             [grpc]\n  address = \"{sock}\"\n\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
            root = p.join("root").display(),
            state = p.join("state").display(),
            tmp = p.join("tmp").display(),
            sock = sock.display(),
            opt = p.join("opt").display(),
        );
        std::fs::create_dir(p.join("tmp")).expect("containerd temp dir");
        let cfg = p.join("config.toml");
        std::fs::write(&cfg, config).expect("write containerd config");
        let log = std::fs::File::create(p.join("containerd.log")).expect("log file");
        let child = Command::new(CONTAINERD)
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let mut c = Containerd { child: Some(child), sock, dir };
        c.wait_ready();
        Some(c)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.ctr(&["version"]).status.success() {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("containerd exited with {status}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "containerd did not answer within 20 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's socket.
    pub fn socket(&self) -> &Path {
        &self.sock
    }

    /// Everything containerd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Runs `ctr --address SOCK <args>`, whatever its outcome.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new(CTR).arg("--address").arg(&self.sock).args(args).stdin(Stdio::null()).output().expect("run ctr")
    }

    /// Runs `ctr --address SOCK <args>`; panics with its output (and the
    /// daemon's log) when it fails, else returns its stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed: {}\n{}\ncontainerd log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        out.stdout
    }

    /// `ctr images pull` of `reference` into [`NAMESPACE`], with registry
    /// hosts configured by `hosts_dir` (`<dir>/<host:port>/hosts.toml`).
    /// The native snapshotter unpacks the layers (checking them against
    /// the config's diff ids) without needing overlayfs.
    pub fn pull(&self, hosts_dir: &Path, reference: &str) {
        let hosts = hosts_dir.to_str().expect("utf-8 temp path");
        self.ctr_ok(&["-n", NAMESPACE, "images", "pull", "--snapshotter", "native", "--hosts-dir", hosts, reference]);
    }

    /// The digests (`sha256:...`) in [`NAMESPACE`]'s content store.
    pub fn content_digests(&self) -> BTreeSet<String> {
        let out = self.ctr_ok(&["-n", NAMESPACE, "content", "ls", "-q"]);
        String::from_utf8_lossy(&out).lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    /// The bytes of one blob in [`NAMESPACE`]'s content store.
    pub fn content(&self, digest: &str) -> Vec<u8> {
        self.ctr_ok(&["-n", NAMESPACE, "content", "get", digest])
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
