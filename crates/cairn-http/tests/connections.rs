//! The connection layer: header and idle timeouts, the connection cap, the
//! client address for handlers, and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use cairn_http::ServeLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

struct Held {
    entered: AtomicUsize,
    release: Semaphore,
}

struct TestServer {
    addr: SocketAddr,
    held: Arc<Held>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(limits: ServeLimits) -> TestServer {
    let held = Arc::new(Held { entered: AtomicUsize::new(0), release: Semaphore::new(0) });
    let h = Arc::clone(&held);
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/who", get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }))
        .route(
            "/hold",
            get(move || {
                let h = Arc::clone(&h);
                async move {
                    h.entered.fetch_add(1, Ordering::SeqCst);
                    let _p = h.release.acquire().await;
                    "released"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = rx.await;
    };
    let task = tokio::spawn(cairn_http::serve_with(listener, app, shutdown, Duration::from_secs(5), limits));
    TestServer { addr, held, stop: Some(tx), task }
}

/// Reads until the server closes the connection (or `limit` passes: a failure).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> String {
    let mut got = Vec::new();
    let r = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(r.is_ok(), "the server kept the connection open for {limit:?}");
    String::from_utf8_lossy(&got).into_owned()
}

async fn get_on(s: &mut TcpStream, path: &str) -> String {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") || !response_complete(&got) {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the answer: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn response_complete(got: &[u8]) -> bool {
    let text = String::from_utf8_lossy(got);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    body.len() >= len
}

#[tokio::test]
async fn a_client_that_does_not_finish_its_headers_is_disconnected_after_header_timeout() {
    let limits = ServeLimits { header_timeout: Duration::from_millis(300), ..Default::default() };
    let srv = start(limits).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Half: ").await.unwrap();
    let t = Instant::now();
    closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(t.elapsed() < limits.idle_timeout, "closed by the header timeout, not the idle one");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let limits = ServeLimits { idle_timeout: Duration::from_millis(300), ..Default::default() };
    let srv = start(limits).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    assert!(get_on(&mut s, "/").await.starts_with("HTTP/1.1 200"));
    // Still usable while not idle for long: a second request on the same connection.
    assert!(get_on(&mut s, "/").await.starts_with("HTTP/1.1 200"));
    closed_within(&mut s, Duration::from_secs(5)).await;
    // A connection that never sends a byte is idle too.
    let mut quiet = TcpStream::connect(srv.addr).await.unwrap();
    closed_within(&mut quiet, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_long_request_is_not_cut_by_the_idle_timeout() {
    let limits = ServeLimits { idle_timeout: Duration::from_millis(200), ..Default::default() };
    let srv = start(limits).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    // Held for longer than the idle timeout, then released.
    let t = Instant::now();
    while srv.held.entered.load(Ordering::SeqCst) == 0 || t.elapsed() < limits.idle_timeout * 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    srv.held.release.add_permits(1);
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn connections_past_max_connections_wait_and_the_server_stays_reachable() {
    let limits = ServeLimits { max_connections: 4, idle_timeout: Duration::from_secs(60), ..Default::default() };
    let srv = start(limits).await;
    // Four requests in progress fill the cap.
    let mut holders = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        holders.push(s);
    }
    let t = Instant::now();
    while srv.held.entered.load(Ordering::SeqCst) < 4 {
        assert!(t.elapsed() < Duration::from_secs(5), "the holders never reached the handler");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A fifth connection is not served while they are...
    let mut fifth = TcpStream::connect(srv.addr).await.unwrap();
    let fifth_get = async move { get_on(&mut fifth, "/").await };
    let mut fifth_get = Box::pin(fifth_get);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut fifth_get).await.is_err(),
        "a fifth connection was served past max_connections = 4"
    );
    // ...and is as soon as one of them ends.
    srv.held.release.add_permits(1);
    let mut first = holders.remove(0);
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), first.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(5), fifth_get).await.expect("served once a slot is free");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    srv.held.release.add_permits(3);
}

#[tokio::test]
async fn idle_connections_past_the_cap_do_not_lock_out_a_client_once_they_time_out() {
    let limits = ServeLimits { max_connections: 8, idle_timeout: Duration::from_millis(300), ..Default::default() };
    let srv = start(limits).await;
    let idle: Vec<TcpStream> = {
        let mut v = Vec::new();
        for _ in 0..40 {
            v.push(TcpStream::connect(srv.addr).await.unwrap());
        }
        v
    };
    let c = reqwest::Client::new();
    let r = tokio::time::timeout(Duration::from_secs(10), c.get(format!("http://{}/", srv.addr)).send())
        .await
        .expect("a normal client got in once the idle connections timed out")
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(idle);
}

#[tokio::test]
async fn handlers_see_the_client_address() {
    let srv = start(ServeLimits::default()).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let me = s.local_addr().unwrap();
    let answer = get_on(&mut s, "/who").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(&me.to_string()), "{answer} should name {me}");
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_a_request_in_progress_finish() {
    let mut srv = start(ServeLimits::default()).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let t = Instant::now();
    while srv.held.entered.load(Ordering::SeqCst) == 0 {
        assert!(t.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    srv.stop.take().unwrap().send(()).unwrap();
    let t = Instant::now();
    while TcpStream::connect(srv.addr).await.is_ok() {
        assert!(t.elapsed() < Duration::from_secs(5), "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    srv.held.release.add_permits(1);
    let answer = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("released"), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), srv.task).await.unwrap().unwrap().unwrap();
}
