//! Seeded bytes, whole response bodies, free and dead addresses.

/// Deterministic pseudo-random bytes (xorshift), so big blobs are generated, not committed.
pub fn blob(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The ref file a manifest named `name` with these exact bytes must be
/// saved under: `<name>-<first 12 hex of their SHA-256>.json`.
pub fn ref_file_for(name: &str, bytes: &[u8]) -> cairn_store::RefFile {
    let name = cairn_store::RefName::parse(name).unwrap_or_else(|e| panic!("test manifest name {name:?}: {e}"));
    cairn_store::RefFile::for_manifest(&name, bytes).unwrap_or_else(|e| panic!("test ref file for {name}: {e}"))
}

/// Reads a response body to the end; `Err` when the server cut it.
pub async fn read_all(r: reqwest::Response) -> Result<Vec<u8>, String> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut s = r.bytes_stream();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// A port that was free a moment ago, for a process that must be told
/// its address up front (in-process servers bind port 0 instead).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// An address nothing listens on (connections are refused).
pub fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a.to_string()
}

/// Polls `cond` every 50 ms until it holds; fails the test after `limit`,
/// saying `what` did not happen.
pub fn wait_for(limit: std::time::Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + limit;
    while !cond() {
        assert!(std::time::Instant::now() < end, "{what} within {limit:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `promtool check metrics` (Prometheus' own linter) on a scrape: `Err`
/// with its complaints, `Ok(false)` when promtool is not installed (a
/// failure under `CAIRN_REQUIRE_TOOLS=1`), `Ok(true)` when it is clean.
pub fn promtool_check(text: &str) -> Result<bool, String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(
            !crate::netns::tools_required(),
            "promtool is required (CAIRN_REQUIRE_TOOLS=1) but missing; run scripts/test.sh to install it"
        );
        eprintln!("skipping the promtool check: not installed (scripts/test.sh installs the prometheus package)");
        return Ok(false);
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running promtool: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).map_err(|e| format!("feeding promtool: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("waiting for promtool: {e}"))?;
    if out.status.success() && out.stdout.is_empty() && out.stderr.is_empty() {
        Ok(true)
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}
