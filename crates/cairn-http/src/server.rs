//! The server: shared state, the merged router, and serving with graceful
//! shutdown. New APIs (`/v2`, metrics) are merged in [`app`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::http::Uri;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use cairn_store::Store;

use crate::state::AppState;

/// How long `/v1/health` waits for the store to answer a stat.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Checks that the store answers a quick stat through the blocking pool
/// (where every store call runs): a full pool or a hung disk make the node
/// degraded, not silently slow. At most one check runs at a time, so a
/// stuck store does not pile up checks.
#[derive(Default)]
pub struct StoreProbe {
    serial: tokio::sync::Mutex<()>,
    running: Arc<std::sync::atomic::AtomicBool>,
}

impl StoreProbe {
    /// `Err(reason)` when the store did not answer in time or failed.
    pub async fn check(&self, store: &Store) -> Result<(), String> {
        use std::sync::atomic::Ordering;
        let _one = self.serial.lock().await;
        if self.running.load(Ordering::Acquire) {
            return Err("an earlier check of the store has not finished: the disk or the blocking pool is stuck".into());
        }
        self.running.store(true, Ordering::Release);
        let running = Arc::clone(&self.running);
        let stat = store.run(move |s| {
            let r = s.probe();
            running.store(false, Ordering::Release);
            r
        });
        match tokio::time::timeout(STORE_PROBE_TIMEOUT, stat).await {
            Err(_) => Err(format!(
                "the store did not answer a stat of its objects directory within {}s (disk or blocking pool stuck)",
                STORE_PROBE_TIMEOUT.as_secs()
            )),
            Ok(Err(e @ cairn_store::StoreError::Task(_))) => {
                self.running.store(false, Ordering::Release);
                Err(format!("the store check failed: {e}"))
            }
            Ok(Err(cairn_store::StoreError::Io { source, .. }))
                if source.kind() == std::io::ErrorKind::NotADirectory =>
            {
                Err("the objects directory is not a directory".into())
            }
            // The error kind only: remote callers are not shown local paths.
            Ok(Err(cairn_store::StoreError::Io { source, .. })) => {
                Err(format!("stat of the objects directory failed: {}", source.kind()))
            }
            Ok(Err(e)) => Err(format!("the store check failed: {e}")),
            Ok(Ok(())) => Ok(()),
        }
    }
}

/// Every API, merged (one `.merge` line per API), with one debug log line
/// per request and every request counted in the metrics. `/v2` is there
/// when the node has a registry.
pub fn app(state: Arc<AppState>) -> Router {
    let mut app = Router::new().merge(crate::v1::router(Arc::clone(&state)));
    if let Some(v2) = state.v2_state() {
        app = app.merge(crate::v2::router(v2));
    }
    app = app.merge(crate::metrics::router(Arc::clone(&state)));
    app.fallback(no_endpoint)
        .layer(middleware::from_fn_with_state(Arc::clone(&state.auth), crate::auth::check))
        .layer(middleware::from_fn_with_state(Arc::clone(&state.metrics), crate::metrics::track))
        .layer(middleware::from_fn(log_request))
}

/// Any other path: a JSON 404 in the body format of the API the path is under.
async fn no_endpoint(uri: Uri) -> Response {
    let path = uri.path();
    if path == "/v2" || path.starts_with("/v2/") {
        crate::v2::unknown_path(uri).await
    } else {
        crate::ApiError::NoEndpoint(path.chars().take(200).collect()).into_response()
    }
}

async fn log_request(req: Request, next: Next) -> Response {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return next.run(req).await;
    }
    let start = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let resp = next.run(req).await;
    tracing::debug!(%method, %uri, status = resp.status().as_u16(), took = ?start.elapsed(), "request");
    resp
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and gives in-flight requests up to `grace` to finish; with
/// the default [`crate::ServeLimits`] (see [`crate::serve_with`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    crate::conn::serve_with(listener, app, shutdown, grace, crate::ServeLimits::default()).await
}

/// The soft limit on open files (`None`: unlimited).
pub fn nofile_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit,
/// so the connection cap, not a default of 1024 descriptors, bounds a busy
/// node. Returns the soft limit now in force (`None`: unlimited).
pub fn raise_nofile_limit() -> std::io::Result<Option<u64>> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    // An unlimited hard limit is still capped by the kernel's fs.nr_open.
    let target = maximum
        .or_else(|| std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse::<u64>().ok()));
    if target.is_none() || current >= target {
        return Ok(current);
    }
    setrlimit(Resource::Nofile, Rlimit { current: target, maximum })?;
    Ok(getrlimit(Resource::Nofile).current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        (d, s)
    }

    #[test]
    fn health_is_degraded_when_the_blocking_pool_cannot_reach_the_store() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(1).build().unwrap();
        let (_d, s) = store();
        let probe = StoreProbe::default();
        rt.block_on(async {
            assert_eq!(probe.check(&s).await, Ok(()));
            // The only blocking thread is taken until the test lets it go.
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let held = tokio::task::spawn_blocking(move || rx.recv());
            let e = probe.check(&s).await.unwrap_err();
            assert!(e.contains("did not answer") && e.contains("within 2s"), "{e}");
            // The stuck check is not queued again.
            let e = probe.check(&s).await.unwrap_err();
            assert!(e.contains("has not finished"), "{e}");
            tx.send(()).unwrap();
            held.await.unwrap().unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while probe.check(&s).await.is_err() {
                assert!(Instant::now() < deadline, "the probe never recovered");
                tokio::task::yield_now().await;
            }
        });
    }

    #[tokio::test]
    async fn health_is_degraded_when_the_objects_directory_is_gone() {
        let (d, s) = store();
        std::fs::remove_dir_all(d.path().join("objects")).unwrap();
        let e = StoreProbe::default().check(&s).await.unwrap_err();
        assert!(e.contains("stat of the objects directory failed"), "{e}");
        assert!(!e.contains(&d.path().display().to_string()), "no local path in {e}");
    }
}
