//! `cairn serve` as a child process, for tests of the binary's start-up,
//! signals and limits.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to start before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A node process (`cairn serve`) and the address it listens on; killed and
/// reaped when dropped, so a failing test leaves no process behind. Its
/// stderr goes to a temp file (a pipe nobody drains would stall a node that
/// logs a lot), read with [`NodeProcess::log`].
pub struct NodeProcess {
    /// The process.
    pub child: Child,
    /// Its `host:port`.
    pub addr: String,
    log: tempfile::NamedTempFile,
}

impl NodeProcess {
    /// Starts `BIN serve --config CFG` (the test's `env!("CARGO_BIN_EXE_cairn")`)
    /// with `$CAIRN_CONFIG` unset and returns once the node answers on
    /// `addr`, its `listen_addr`. Panics with the node's log when it exits
    /// first or does not answer within 20 s.
    pub fn serve(bin: &str, cfg: &Path, addr: &str) -> NodeProcess {
        NodeProcess::start(bin, cfg, addr, None)
    }

    /// Like [`NodeProcess::serve`], with `RUST_LOG=info`, for tests that
    /// read the node's log.
    pub fn serve_logged(bin: &str, cfg: &Path, addr: &str) -> NodeProcess {
        NodeProcess::start(bin, cfg, addr, Some("info"))
    }

    fn start(bin: &str, cfg: &Path, addr: &str, rust_log: Option<&str>) -> NodeProcess {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--config"]).arg(cfg).env_remove("CAIRN_CONFIG");
        if let Some(level) = rust_log {
            cmd.env("RUST_LOG", level);
        }
        NodeProcess::spawn(cmd, addr)
    }

    /// Runs `cmd`, a `cairn serve` command line the test built itself (under
    /// `ulimit`, with its own environment), with stderr into the log, and
    /// returns once it answers on `addr`.
    pub fn spawn(cmd: Command, addr: &str) -> NodeProcess {
        let target = addr.to_owned();
        NodeProcess::spawn_until(cmd, addr, move || answers(&target))
    }

    /// Like [`NodeProcess::spawn`], ready when `ready` holds (for a node this
    /// process cannot reach directly, e.g. in another network namespace).
    pub fn spawn_until(mut cmd: Command, addr: &str, ready: impl Fn() -> bool) -> NodeProcess {
        let log = tempfile::NamedTempFile::new().expect("temp file for the node's log");
        let stderr = log.reopen().expect("reopen the node's log");
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::from(stderr)).spawn().expect("start cairn serve");
        let mut node = NodeProcess { child, addr: addr.to_owned(), log };
        node.wait_ready(ready);
        node
    }

    /// Polls `ready` until it holds; panics with the node's log if the
    /// process exits first or `ready` does not hold within 20 s.
    pub fn wait_ready(&mut self, ready: impl Fn() -> bool) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !ready() {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("cairn serve exited with {st}: {}", self.log());
            }
            if Instant::now() >= deadline {
                let addr = self.addr.clone();
                panic!("node on {addr} not ready within 20 s: {}", self.stop_and_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the node has logged so far.
    pub fn log(&self) -> String {
        let mut out = String::new();
        if let Ok(mut f) = self.log.reopen() {
            let _ = f.read_to_string(&mut out);
        }
        out
    }

    /// Waits until the log contains `what`; panics with the log after 10 s.
    pub fn wait_log(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(what) {
            assert!(Instant::now() < deadline, "no {what:?} in the node's log within 10 s: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A memory figure of the node from `/proc/PID/status`, in MiB: `VmRSS`
    /// (resident now) or `VmHWM` (the peak).
    pub fn memory_mib(&self, field: &str) -> u64 {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the node's /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
        kib / 1024
    }

    /// Stops the node and returns what it logged.
    pub fn stop_and_log(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when the accept loop on `addr` is running: a request gets an
/// answer, a TLS alert or a close back, whatever the protocol. A listener
/// that is bound but not yet serving leaves the request unanswered.
fn answers(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").is_err() {
        return true;
    }
    // Data or a close both prove it; only a silent timeout does not.
    let mut b = [0u8; 1];
    match s.read_exact(&mut b) {
        Ok(()) => true,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

/// True when a node on `addr` answers `GET /v1/health` with 200 and status
/// `ok` (one short connection; for polling a node's health).
pub fn health_ok(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200") && out.contains("\"status\":\"ok\"")
}
