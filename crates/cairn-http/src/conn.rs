//! The connection layer: accepting, bounding and timing out client
//! connections (HTTP/1.1, as before: registry clients and peers use it).
//!
//! - At most `max_connections` are open per listener: past it the accept
//!   loop waits for a free slot and new clients wait in the kernel's backlog.
//! - A connection with no request in progress is closed after
//!   `idle_timeout`; a client that starts a request must finish its headers
//!   within `header_timeout`; a client that stops reading a response is
//!   dropped once its writes have been blocked for `idle_timeout`. (Request
//!   bodies have their own bound, `body_timeout`, see [`crate::body`].)
//! - A handler may give its response a deadline ([`SendDeadline`], e.g. a
//!   swarm piece): a response not all taken by then ends the connection.
//! - Accept errors (e.g. out of file descriptors) back off instead of
//!   spinning, and never stop the server.
//! - Every request carries [`ConnectInfo<SocketAddr>`] of its client.
//! - With TLS, the handshake runs in the connection's task (a slow one
//!   never holds up the accept loop) and must finish within `header_timeout`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// Bounds of the connection layer (config keys `header_timeout`,
/// `idle_timeout`, `max_connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// A client that has started a request must have sent all its headers within this.
    pub header_timeout: Duration,
    /// A connection with no request in progress is closed after this; so is
    /// one whose client has not read any of its response for this long.
    pub idle_timeout: Duration,
    /// Open connections at most; more wait in the listen backlog.
    pub max_connections: usize,
}

/// Unsent bytes a served connection's socket may hold before a write
/// waits (`TCP_NOTSENT_LOWAT`): enough to keep a 10 Gbit/s link busy
/// between two wake-ups of the writer, not megabytes.
pub const NOTSENT_LOWAT: u32 = 128 * 1024;

/// Default of `max_connections` (lowered to fit the open-file limit, see [`ServeLimits::fitting`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl ServeLimits {
    /// The default connection cap for a soft open-file limit `nofile`: at
    /// most three quarters of it, so that each connection keeps room for a
    /// temp file and the node for its own files and peer connections.
    pub fn fitting(nofile: Option<u64>) -> usize {
        let room = nofile.map_or(u64::MAX, |n| n / 4 * 3);
        usize::try_from(room).unwrap_or(usize::MAX).clamp(16, DEFAULT_MAX_CONNECTIONS)
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves,
/// then stops accepting and gives open connections up to `grace` to finish
/// their requests.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    limits: ServeLimits,
) -> io::Result<()> {
    serve_tls_with(listener, app, shutdown, grace, limits, None).await
}

/// [`serve_with`], over TLS when `tls` is given.
pub async fn serve_tls_with(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    limits: ServeLimits,
    tls: Option<Arc<crate::tls::ServerTls>>,
) -> io::Result<()> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = AcceptBackoff::default();
    loop {
        let slot = tokio::select! {
            s = Arc::clone(&slots).acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((sock, peer)) => {
                backoff.reset();
                let acceptor = tls.as_ref().map(|t| t.acceptor());
                tokio::spawn(serve_conn(sock, peer, app.clone(), limits, stop_rx.clone(), slot, acceptor));
            }
            Err(e) => {
                drop(slot);
                if let Some(pause) = backoff.on_error(&e) {
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = &mut shutdown => break,
                    }
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends.
    let all = slots.acquire_many(max as u32);
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::warn!(?grace, "in-flight requests did not finish within the shutdown deadline; closing them");
    }
    Ok(())
}

/// Pauses of the accept loop after errors: none for a client that went
/// away before it was accepted, growing ones (10 ms doubling to 1 s) for
/// anything else, e.g. `EMFILE` when the node is out of descriptors.
#[derive(Default)]
struct AcceptBackoff {
    pause: Option<Duration>,
    logged: Option<Instant>,
    suppressed: u64,
}

impl AcceptBackoff {
    fn reset(&mut self) {
        self.pause = None;
    }

    fn on_error(&mut self, e: &io::Error) -> Option<Duration> {
        use io::ErrorKind::*;
        if matches!(e.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock) {
            return None;
        }
        let pause = self.pause.map_or(Duration::from_millis(10), |p| (p * 2).min(Duration::from_secs(1)));
        self.pause = Some(pause);
        // One line every 10 s at most: a node out of descriptors would log thousands.
        if self.logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!(
                error = %e,
                suppressed = self.suppressed,
                ?pause,
                "accepting a connection failed; pausing (out of file descriptors? raise `ulimit -n` or lower max_connections)"
            );
            self.logged = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        Some(pause)
    }
}

/// What the watchdog of one connection knows about it.
struct Activity {
    start: Instant,
    /// Requests in progress (until their response body is dropped).
    busy: AtomicUsize,
    /// Milliseconds since `start` of the last read, write or request end.
    last: AtomicU64,
    /// Milliseconds since `start` (+1) when bytes of a new request arrived
    /// with none in progress; 0 when none did.
    head: AtomicU64,
    /// Milliseconds since `start` (+1) since when a write has been blocked; 0 when none is.
    blocked: AtomicU64,
    /// Milliseconds since `start` (+1) by which the response in progress
    /// must be sent ([`SendDeadline`]); 0 when it has none.
    cut: AtomicU64,
    /// Wakes the watchdog when its deadline may have moved closer.
    changed: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            busy: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            head: AtomicU64::new(0),
            blocked: AtomicU64::new(0),
            cut: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn read(&self, n: usize) {
        if n == 0 {
            return;
        }
        let now = self.now();
        self.last.store(now, Ordering::Relaxed);
        if self.busy.load(Ordering::Acquire) == 0
            && self.head.compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn wrote(&self, ready: bool) {
        if ready {
            self.last.store(self.now(), Ordering::Relaxed);
            self.blocked.store(0, Ordering::Relaxed);
        } else if self.blocked.compare_exchange(0, self.now() + 1, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            self.changed.notify_one();
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.head.store(0, Ordering::Release);
        Busy(Arc::clone(self))
    }

    /// When the connection must be closed, if nothing changes (ms since `start`).
    fn deadline(&self, l: &ServeLimits) -> u64 {
        self.limits_deadline(l).min(self.send_deadline())
    }

    /// The response's own deadline, while it is in progress.
    fn send_deadline(&self) -> u64 {
        match self.cut.load(Ordering::Acquire) {
            0 => u64::MAX,
            _ if self.busy.load(Ordering::Acquire) == 0 => u64::MAX,
            c => c - 1,
        }
    }

    fn limits_deadline(&self, l: &ServeLimits) -> u64 {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let blocked = self.blocked.load(Ordering::Acquire);
        if blocked != 0 {
            return (blocked - 1).saturating_add(ms(l.idle_timeout));
        }
        if self.busy.load(Ordering::Acquire) > 0 {
            return u64::MAX;
        }
        match self.head.load(Ordering::Acquire) {
            0 => self.last.load(Ordering::Relaxed).saturating_add(ms(l.idle_timeout)),
            h => (h - 1).saturating_add(ms(l.header_timeout)),
        }
    }
}

/// The deadline of the response to one request, in its extensions: a
/// handler whose response must not be held by a client that stops reading
/// (a swarm piece, whose upload slot others wait for) sets it, and the
/// connection is closed if the response is not all handed to the socket
/// by then. Body streams are not polled while the socket is full, so an
/// error from the body alone could not end it.
#[derive(Clone)]
pub struct SendDeadline(Arc<Activity>);

impl SendDeadline {
    /// The response must be sent by `at`.
    pub fn set(&self, at: Instant) {
        let a = &self.0;
        let ms = u64::try_from(at.saturating_duration_since(a.start).as_millis()).unwrap_or(u64::MAX - 1);
        a.cut.store(ms.saturating_add(1), Ordering::Release);
        a.changed.notify_one();
    }
}

/// One request in progress; its end counts as activity.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        // The next request on this connection has no deadline of this one's.
        self.0.cut.store(0, Ordering::Release);
        self.0.last.store(self.0.now(), Ordering::Relaxed);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request counted as in progress.
struct Guarded {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> SizeHint {
        hyper::body::Body::size_hint(&self.body)
    }
}

/// A client socket that reports its reads and writes to the watchdog.
struct Watched {
    sock: TcpStream,
    act: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.sock).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.act.read(buf.filled().len() - before);
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.sock).poll_write(cx, buf);
        self.act.wrote(r.is_ready());
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.sock).poll_write_vectored(cx, bufs);
        self.act.wrote(r.is_ready());
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.sock.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.sock).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.sock).poll_shutdown(cx)
    }
}

/// Serves one connection until it ends, times out, or shutdown is asked
/// and its requests are done. `_slot` frees the connection's place when dropped.
async fn serve_conn(
    sock: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ServeLimits,
    stop: watch::Receiver<bool>,
    _slot: tokio::sync::OwnedSemaphorePermit,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let _ = sock.set_nodelay(true);
    // A response's write completes only once most of it left the socket,
    // not when megabytes sit unsent in its buffer: what the node believes
    // it is sending (an upload slot's piece, a stalled reader's bytes) is
    // what is on the wire, and a busy uplink's queue stays short.
    let _ = socket2::SockRef::from(&sock).set_tcp_notsent_lowat(NOTSENT_LOWAT);
    let act = Arc::new(Activity::new());
    let watched = Watched { sock, act: Arc::clone(&act) };
    let Some(acceptor) = tls else {
        return serve_http(TokioIo::new(watched), peer, app, limits, stop, act).await;
    };
    match tokio::time::timeout(limits.header_timeout, acceptor.accept(watched)).await {
        Ok(Ok(stream)) => {
            // The handshake's bytes were no request: the idle clock starts now.
            act.head.store(0, Ordering::Release);
            act.last.store(act.now(), Ordering::Relaxed);
            serve_http(TokioIo::new(stream), peer, app, limits, stop, act).await
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake not done within header_timeout; closing"),
    }
}

/// Serves HTTP/1.1 on one (plain or TLS) connection, watched by `act`.
async fn serve_http<I>(
    io: TokioIo<I>,
    peer: SocketAddr,
    app: Router,
    limits: ServeLimits,
    mut stop: watch::Receiver<bool>,
    act: Arc<Activity>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_act = Arc::clone(&act);
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let busy = svc_act.begin();
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(SendDeadline(Arc::clone(&svc_act)));
        let app = app.clone();
        async move {
            let resp = app.oneshot(req).await;
            resp.map(|r| r.map(|body| Guarded { body, _busy: busy }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The watchdog below bounds headers and idle time; hyper's own header
    // timer would also close idle keep-alive connections at header_timeout.
    builder.header_read_timeout(None);
    let conn = builder.serve_connection(io, svc).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        let due = act.deadline(&limits);
        let wait = Duration::from_millis(due.saturating_sub(act.now()));
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = act.changed.notified() => {}
            () = tokio::time::sleep(wait.min(Duration::from_secs(3600))) => {
                // Recomputed: a request may have started or ended meanwhile.
                if act.send_deadline() <= act.now() {
                    tracing::debug!(%peer, "closing a connection: its response was not taken by the deadline its handler set");
                    return;
                }
                if act.deadline(&limits) <= act.now() {
                    tracing::debug!(%peer, "closing a connection: idle, headers too slow, or its client stopped reading");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_of_one_client_do_not_pause_but_running_out_of_descriptors_backs_off() {
        let mut b = AcceptBackoff::default();
        assert_eq!(b.on_error(&io::Error::from(io::ErrorKind::ConnectionAborted)), None);
        let emfile = io::Error::from_raw_os_error(24);
        let pauses: Vec<_> = (0..10).map(|_| b.on_error(&emfile).unwrap()).collect();
        assert_eq!(pauses[0], Duration::from_millis(10));
        assert_eq!(pauses[1], Duration::from_millis(20));
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]), "{pauses:?}");
        assert_eq!(*pauses.last().unwrap(), Duration::from_secs(1), "capped");
        assert_eq!(b.suppressed, 9, "logged once, the rest counted");
        b.reset();
        assert_eq!(b.on_error(&emfile), Some(Duration::from_millis(10)));
    }

    #[test]
    fn the_default_connection_cap_fits_the_open_file_limit() {
        assert_eq!(ServeLimits::fitting(Some(1024)), 768);
        assert_eq!(ServeLimits::fitting(Some(1 << 20)), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(ServeLimits::fitting(None), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(ServeLimits::fitting(Some(8)), 16);
    }
}
