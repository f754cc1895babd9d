//! Helpers shared by the HTTP integration tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Sends a raw HTTP/1.1 request (so paths reach the server unnormalised)
/// and returns the status and body.
pub fn raw(addr: &str, request: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// `GET path` as a raw request.
pub fn raw_get(addr: &str, path: &str) -> (u16, String) {
    raw(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
}

/// Polls `cond` until it holds or `limit` passes.
pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Waits until `store` holds a verified copy of `d` and no temp file is
/// left: a fetched blob is synced and linked just after its response ends.
pub async fn cached(store: &cairn_store::Store, dir: &std::path::Path, d: &cairn_store::Digest) -> bool {
    wait_until(Duration::from_secs(10), || store.verify_blob(d).unwrap_or(false) && tmp_entries(dir) == 0).await
}

/// Entries in a store's temp dir (should be none after any transfer ends).
pub fn tmp_entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("tmp")).map(|r| r.count()).unwrap_or(0)
}

/// Reads a whole response body, or the error that cut it.
pub async fn body_of(resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    resp.bytes().await.map(|b| b.to_vec())
}
