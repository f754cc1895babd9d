//! In-process servers on their own runtime, and request counters.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use futures_util::StreamExt as _;

/// A server on its own runtime.
pub struct Server {
    addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl Server {
    /// Serves `app` on an already bound listener.
    pub fn spawn(listener: std::net::TcpListener, app: Router) -> Server {
        Server::spawn_tls(listener, app, None)
    }

    /// Binds `127.0.0.1:0` and serves `app` over HTTPS with `tls`.
    pub fn start_tls(app: Router, tls: Arc<cairn_http::tls::ServerTls>) -> Server {
        Server::spawn_tls(std::net::TcpListener::bind("127.0.0.1:0").expect("bind"), app, Some(tls))
    }

    fn spawn_tls(listener: std::net::TcpListener, app: Router, tls: Option<Arc<cairn_http::tls::ServerTls>>) -> Server {
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        {
            let _g = rt.enter();
            let l = tokio::net::TcpListener::from_std(listener).expect("listener");
            // The node's own connection layer, so handlers see client addresses as in production.
            let limits = cairn_http::ServeLimits::default();
            rt.spawn(cairn_http::serve_tls_with(l, app, std::future::pending(), Duration::ZERO, limits, tls));
        }
        Server { addr, rt: Some(rt) }
    }

    /// Binds `127.0.0.1:0` and serves `app`.
    pub fn start(app: Router) -> Server {
        Server::spawn(std::net::TcpListener::bind("127.0.0.1:0").expect("bind"), app)
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Kills the server and every open connection.
    pub fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    /// Runs `f` inside this server's runtime (to spawn tasks on it).
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        let _g = self.rt.as_ref().expect("server running").enter();
        f()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Request counts by `METHOD /v1/<first segment>`, e.g. `GET /v1/blobs`;
/// the same key with ` done` counts handlers that have returned.
#[derive(Default, Debug)]
pub struct Counters {
    map: std::sync::Mutex<HashMap<String, usize>>,
    /// Per key: requests being handled now, and the most at once.
    in_flight: std::sync::Mutex<HashMap<String, (usize, usize)>>,
    hang_after: std::sync::Mutex<Option<(String, usize)>>,
}

impl Counters {
    /// How many requests matched `key` (`"GET /v1/blobs"`).
    pub fn get(&self, key: &str) -> usize {
        self.map.lock().expect("counters").get(key).copied().unwrap_or(0)
    }
    /// The most requests matching `key` that were being handled at once.
    pub fn max_in_flight(&self, key: &str) -> usize {
        self.in_flight.lock().expect("counters").get(key).map_or(0, |e| e.1)
    }

    fn enter(&self, method: &Method, path: &str, delta: isize) {
        let prefix: String = path.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
        let mut map = self.in_flight.lock().expect("counters");
        let e = map.entry(format!("{method} {prefix}")).or_default();
        e.0 = e.0.saturating_add_signed(delta);
        e.1 = e.1.max(e.0);
    }

    /// Requests matching `key` beyond the first `n` hang until the node is
    /// stopped: a deterministic point at which to kill it mid-work.
    pub fn hang_after(&self, key: &str, n: usize) {
        *self.hang_after.lock().expect("counters") = Some((key.to_owned(), n));
    }

    fn hit(&self, method: &Method, path: &str, suffix: &str) -> bool {
        let prefix: String = path.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
        let key = format!("{method} {prefix}{suffix}");
        let mut map = self.map.lock().expect("counters");
        let n = map.entry(key.clone()).or_default();
        *n += 1;
        let count = *n;
        drop(map);
        matches!(&*self.hang_after.lock().expect("counters"), Some((k, limit)) if *k == key && count > *limit)
    }
}

pub(crate) async fn count(State(c): State<Arc<Counters>>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    if c.hit(&method, &path, "") {
        std::future::pending::<()>().await;
    }
    c.enter(&method, &path, 1);
    // In flight until the body is sent (or dropped), not just its head.
    let guard = InFlight(Arc::clone(&c), method.clone(), path.clone());
    let resp = next.run(req).await;
    c.hit(&method, &path, " done");
    // A body of known size is sent at once (and keeps its framing).
    if axum::body::HttpBody::size_hint(resp.body()).exact().is_some() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let body = body.into_data_stream().map(move |x| {
        let _held = &guard;
        x
    });
    Response::from_parts(parts, Body::from_stream(body))
}

struct InFlight(Arc<Counters>, Method, String);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.enter(&self.1, &self.2, -1);
    }
}
