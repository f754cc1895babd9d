//! A fault-injecting HTTP proxy in front of an S3 server (moto): point an
//! S3 client at [`FaultProxy::endpoint`] and choose what the "bucket" does:
//! throttle (503 `SlowDown`), refuse (403 `AccessDenied`), stall (accept
//! and never answer), refuse server-side copies (as S3 does above 5 GiB),
//! or die (connection refused, open connections cut), at once or at the
//! first part of a multipart upload. Everything else is forwarded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// What the proxy does to requests (besides [`FaultProxy::slow_down_next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forwards every request.
    #[default]
    Forward,
    /// 503 `SlowDown` to every `k`-th request (a fraction 1/k), forwards the rest.
    SlowDownEvery(usize),
    /// 403 `AccessDenied` to every request.
    Forbidden,
    /// Accepts every request and never answers.
    Stall,
    /// 400 to server-side copies (`x-amz-copy-source`), as S3 answers a
    /// copy of an object over 5 GiB; forwards the rest.
    RefuseCopies,
    /// Forwards until the first `UploadPart` arrives, then dies as
    /// [`FaultProxy::kill`] (that part is never answered).
    DieAtFirstPart,
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    fault: Mutex<Fault>,
    slow_left: AtomicUsize,
    seen: AtomicUsize,
    injected: AtomicUsize,
    log: Mutex<Vec<String>>,
    die: Mutex<Option<mpsc::Sender<()>>>,
}

/// The proxy, on its own runtime and port; dies when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`: where clients send requests.
    pub endpoint: String,
    s: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy on 127.0.0.1 (port 0) forwarding to `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> FaultProxy {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fault proxy");
        l.set_nonblocking(true).expect("nonblocking listener");
        let addr: SocketAddr = l.local_addr().expect("proxy address");
        let (die_tx, die_rx) = mpsc::channel();
        let s = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder().no_proxy().build().expect("proxy's client"),
            fault: Mutex::new(Fault::Forward),
            slow_left: AtomicUsize::new(0),
            seen: AtomicUsize::new(0),
            injected: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            die: Mutex::new(Some(die_tx)),
        });
        let state = Arc::clone(&s);
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("fault proxy runtime");
            rt.spawn(async move {
                let l = tokio::net::TcpListener::from_std(l).expect("tokio listener");
                let app = axum::Router::new().fallback(handle).with_state(state);
                let _ = ready_tx.send(());
                let _ = axum::serve(l, app).await;
            });
            // Killed, or dropped: every socket closes with the runtime.
            let _ = die_rx.recv();
            rt.shutdown_timeout(Duration::from_secs(5));
        });
        ready_rx.recv().expect("fault proxy started");
        FaultProxy { endpoint: format!("http://{addr}"), s, thread: Some(thread) }
    }

    /// Sets what happens to the following requests.
    pub fn set(&self, f: Fault) {
        *self.s.fault.lock().unwrap_or_else(|p| p.into_inner()) = f;
    }

    /// Answers 503 `SlowDown` to the next `n` requests (before any [`Fault`]).
    pub fn slow_down_next(&self, n: usize) {
        self.s.slow_left.store(n, Ordering::SeqCst);
    }

    /// Requests received.
    pub fn seen(&self) -> usize {
        self.s.seen.load(Ordering::SeqCst)
    }

    /// Requests answered with an injected fault.
    pub fn injected(&self) -> usize {
        self.s.injected.load(Ordering::SeqCst)
    }

    /// `METHOD path?query -> what happened`, one line per request.
    pub fn log(&self) -> Vec<String> {
        self.s.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Dies now: the port refuses connections, open ones are cut.
    pub fn kill(&mut self) {
        kill(&self.s);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.kill();
    }
}

fn kill(s: &Shared) {
    if let Some(tx) = s.die.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = tx.send(());
    }
}

fn s3_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    (status, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

async fn handle(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let n = s.seen.fetch_add(1, Ordering::SeqCst) + 1;
    let what = format!("{} {}", req.method(), req.uri());
    let note = |outcome: &str| s.log.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{what} -> {outcome}"));
    let slow = s.slow_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(1)).is_ok();
    let fault = *s.fault.lock().unwrap_or_else(|p| p.into_inner());
    let injected = |r: Response, outcome: &str| {
        s.injected.fetch_add(1, Ordering::SeqCst);
        note(outcome);
        r
    };
    let slow_down = || s3_error(StatusCode::SERVICE_UNAVAILABLE, "SlowDown", "Please reduce your request rate.");
    if slow {
        return injected(slow_down(), "503 SlowDown");
    }
    match fault {
        Fault::SlowDownEvery(k) if k > 0 && n.is_multiple_of(k) => {
            return injected(slow_down(), "503 SlowDown");
        }
        Fault::Forbidden => {
            return injected(s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Access Denied"), "403 AccessDenied");
        }
        Fault::Stall => {
            note("stalled");
            s.injected.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        Fault::RefuseCopies if req.headers().contains_key("x-amz-copy-source") => {
            let msg =
                "The specified copy source is larger than the maximum allowable size for a copy source: 5368709120";
            return injected(s3_error(StatusCode::BAD_REQUEST, "InvalidRequest", msg), "400 copy refused");
        }
        Fault::DieAtFirstPart if req.uri().query().is_some_and(|q| q.contains("partNumber=")) => {
            note("died");
            s.injected.fetch_add(1, Ordering::SeqCst);
            kill(&s);
            std::future::pending::<()>().await;
        }
        _ => {}
    }
    let r = forward(&s, req).await;
    note(&format!("forwarded: {}", r.status()));
    r
}

async fn forward(s: &Shared, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let url = format!("{}{}", s.upstream, parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    let body = match axum::body::to_bytes(body, 256 << 20).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("proxy: reading the body: {e}")).into_response(),
    };
    let hop = |n: &HeaderName| n == header::CONNECTION || n == header::TRANSFER_ENCODING;
    let mut up = s.client.request(parts.method, url).body(body);
    for (n, v) in parts.headers.iter().filter(|(n, _)| !hop(n)) {
        up = up.header(n, v);
    }
    let resp = match up.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("proxy: upstream: {e}")).into_response(),
    };
    let mut out = Response::builder().status(resp.status());
    for (n, v) in resp.headers().iter().filter(|(n, _)| !hop(n)) {
        out = out.header(n, v);
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    out.body(Body::from(bytes)).unwrap_or_else(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response())
}
