//! The object-store backend: blobs and metadata in a bucket, through the
//! `object_store` crate (S3 today; the code only needs an
//! [`ObjectStore`], so GCS and Azure can follow with a constructor).
//!
//! ```text
//! <prefix>/objects/<64 hex>    one blob per object, plain bytes (the on-disk names)
//! <prefix>/tmp/<random>        a large blob's multipart upload, completed, before
//!                              its create-only copy to objects/ (deleted after; a
//!                              GC removes leftovers older than its grace)
//! <prefix>/touched/<64 hex>    empty; its last-modified time is the blob's last
//!                              refresh (an object's own time cannot be set)
//! <prefix>/quarantine/<64 hex> blobs moved aside by `quarantine`
//! <prefix>/registry/uploads/<id>/created, info.json, data/<16 hex offset>
//!                              an upload session: marker, info, data pieces
//! <prefix>/<key>               metadata documents under their `backend::keys` names
//!                              (refs/…, registry/repositories/…)
//! ```
//!
//! The store's traits are blocking; this backend owns a small Tokio runtime
//! and runs each request on it, the calling thread waiting on a channel
//! (see `ObjectBackend::run`). Not provided yet: a GC lock or
//! upload-session lock shared between processes (both are in-process), and
//! everything [`super::Backend::fs`] gives.
//!
//! GC across nodes sharing a bucket has no lock: it is safe because of the
//! grace period and the order of a push. A blob is written (a new object,
//! so young) or refreshed (`touched/`, when it already existed) before the
//! manifest, ref or tag that links it; a GC deletes only blobs that no
//! link in the bucket names *and* whose newest time is older than the
//! grace, and re-reads the links and re-stats each candidate just before
//! deleting it. So a push finishing within the grace always finds its
//! blobs. What is left: a push reusing an old unreferenced blob whose
//! refresh lands in the milliseconds between another node's re-stat and
//! delete of it; then the push's manifest names a blob that is gone, and a
//! pull of it fails until the blob is pushed again.

use std::any::Any;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::path::Path as ObjPath;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetRange, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, UpdateVersion,
};

use super::mem::GcLock;
use super::{Backend, BlobBackend, BlobSink, Guard, MetaBackend, UploadBackend, UploadData};
use crate::blob::BlobReader;
use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::oci::cache::Stamp;

/// Bytes buffered before a blob write becomes a multipart upload, and the
/// size of each part.
pub const PART_SIZE: usize = 8 << 20;

/// What to check when a request failed for a reason other than permissions.
const GENERIC_HINT: &str = "check that the object store is reachable, the bucket exists and the credentials allow it; \
     throttling and unreachable endpoints were retried with backoff up to the configured limits";

/// The largest object S3 copies server-side (`CopyObject`, `UploadPartCopy`).
pub const COPY_LIMIT: u64 = 5 << 30;

/// Parts of one blob uploading at once while the next fills: a writer
/// holds at most `PARTS_IN_FLIGHT + 1` parts (40 MiB). Two kept a 1 GiB
/// push at 0.72-0.83x of boto3's ten threads on moto; four reach 0.94x.
const PARTS_IN_FLIGHT: usize = 4;

/// Where an S3 bucket is and how to reach it.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// The bucket.
    pub bucket: String,
    /// Key prefix inside the bucket (`/`-separated, may be empty).
    pub prefix: String,
    /// `http(s)://host:port` of an S3-compatible server; `None` for AWS.
    pub endpoint: Option<String>,
    /// The region to sign for.
    pub region: String,
    /// Access key id and secret; `None` takes them from the environment
    /// (`AWS_ACCESS_KEY_ID`, …) or instance metadata.
    pub credentials: Option<(String, String)>,
    /// Retries of a failed request (0: none).
    pub max_retries: usize,
    /// No retry starts after this long since the first attempt.
    pub retry_timeout: Duration,
    /// Connecting to the endpoint gives up after this long.
    pub connect_timeout: Duration,
    /// One request (one attempt, body included) gives up after this long,
    /// so a stalled endpoint fails (or is retried) instead of hanging. A
    /// blob part is 8 MiB: keep it above what a part takes on a slow link.
    pub request_timeout: Duration,
}

impl S3Options {
    /// A bucket on AWS in `region`, credentials from the environment,
    /// object_store's default retries.
    pub fn new(bucket: impl Into<String>, region: impl Into<String>) -> S3Options {
        S3Options {
            bucket: bucket.into(),
            prefix: String::new(),
            endpoint: None,
            region: region.into(),
            credentials: None,
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Counts of what this backend asked of the object store since it was
/// opened, for metrics. `object_store` retries inside one call, out of
/// sight, so requests are counted per HTTP attempt by a connector wrapped
/// around its HTTP client (below its retry loop); an S3 backend only (one
/// over another [`ObjectStore`] counts errors alone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectStats {
    /// HTTP attempts sent (a retry is one more).
    pub attempts: u64,
    /// Attempts answered 503 or 429 (throttling).
    pub throttled: u64,
    /// Attempts answered with another 5xx.
    pub server_errors: u64,
    /// Attempts without an answer: refused, timed out, cut.
    pub transport_errors: u64,
    /// Operations that failed (after any retries) with an error to the caller.
    pub errors: u64,
}

impl ObjectStats {
    /// Attempts that failed in a way `object_store` retries.
    pub fn retryable_failures(&self) -> u64 {
        self.throttled.saturating_add(self.server_errors).saturating_add(self.transport_errors)
    }

    /// Retries made: every retryable failure was retried unless it was the
    /// last attempt of an operation that then failed, so this lower bound
    /// (failures minus errors) is exact when nothing failed for good.
    pub fn retries(&self) -> u64 {
        self.retryable_failures().saturating_sub(self.errors)
    }
}

#[derive(Debug, Default)]
struct Counters {
    attempts: AtomicU64,
    throttled: AtomicU64,
    server_errors: AtomicU64,
    transport_errors: AtomicU64,
    errors: AtomicU64,
}

/// Wraps `object_store`'s HTTP client to count each attempt.
#[derive(Debug)]
struct CountingConnector(Arc<Counters>);

#[derive(Debug)]
struct Counting {
    inner: object_store::client::HttpClient,
    c: Arc<Counters>,
}

impl object_store::client::HttpConnector for CountingConnector {
    fn connect(&self, o: &object_store::ClientOptions) -> object_store::Result<object_store::client::HttpClient> {
        let inner = object_store::client::ReqwestConnector::default().connect(o)?;
        Ok(object_store::client::HttpClient::new(Counting { inner, c: Arc::clone(&self.0) }))
    }
}

type HttpResult = std::result::Result<object_store::client::HttpResponse, object_store::client::HttpError>;

impl object_store::client::HttpService for Counting {
    // The trait is `async_trait`; this is its desugared signature.
    fn call<'a, 'f>(
        &'a self,
        req: object_store::client::HttpRequest,
    ) -> std::pin::Pin<Box<dyn Future<Output = HttpResult> + Send + 'f>>
    where
        'a: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            self.c.attempts.fetch_add(1, Ordering::Relaxed);
            let r = self.inner.execute(req).await;
            let counter = match &r {
                Ok(resp) if resp.status().as_u16() == 503 || resp.status().as_u16() == 429 => Some(&self.c.throttled),
                Ok(resp) if resp.status().is_server_error() => Some(&self.c.server_errors),
                Ok(_) => None,
                Err(_) => Some(&self.c.transport_errors),
            };
            if let Some(c) = counter {
                c.fetch_add(1, Ordering::Relaxed);
            }
            r
        })
    }
}

/// A store in an object store bucket; cheap to clone.
#[derive(Debug, Clone)]
pub struct ObjectBackend {
    s: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    store: Arc<dyn ObjectStore>,
    // The same bucket for whole-blob reads: no total request timeout,
    // only one on each pause in the body.
    streams: Arc<dyn ObjectStore>,
    // The same bucket for blobs' multipart uploads: parts sent unsigned.
    bulk: Arc<dyn ObjectStore>,
    // Key segments every object name starts with.
    prefix: Vec<String>,
    // `<endpoint>/<bucket>/<prefix>`: every error names it.
    root: PathBuf,
    rt: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    gc: Arc<GcLock>,
    open_sinks: AtomicUsize,
    // Blobs larger than this are streamed again rather than copied out of `tmp/`.
    copy_limit: AtomicU64,
    // `tmp/` names of this process's live sinks: a sweep leaves them.
    live_tmp: std::sync::Mutex<std::collections::HashSet<String>>,
    // Upload sessions locked by a handle of this process.
    upload_locks: std::sync::Mutex<std::collections::HashSet<String>>,
    counters: Arc<Counters>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // `Runtime`'s own drop panics when the last handle goes inside async code.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl ObjectBackend {
    /// Opens the bucket described by `o` (no request is made until used).
    pub fn s3(o: &S3Options) -> Result<ObjectBackend> {
        use object_store::aws::{AmazonS3Builder, S3ConditionalPut, S3CopyIfNotExists};
        // Without explicit credentials: `AWS_*` variables, then instance metadata.
        let base = if o.credentials.is_some() { AmazonS3Builder::new() } else { AmazonS3Builder::from_env() };
        let counters = Arc::<Counters>::default();
        let b = base
            .with_http_connector(CountingConnector(Arc::clone(&counters)))
            .with_bucket_name(&o.bucket)
            .with_region(&o.region)
            // Native S3 (and moto, MinIO) completes a multipart upload only if absent.
            .with_copy_if_not_exists(S3CopyIfNotExists::Multipart)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(object_store::RetryConfig {
                backoff: object_store::BackoffConfig::default(),
                max_retries: o.max_retries,
                retry_timeout: o.retry_timeout,
            });
        // Whole-blob reads may take far longer than any request timeout: a
        // second client bounds only each pause between reads of their bodies.
        // (Client options first: `with_allow_http` below is one of them.)
        let streams = b.clone().with_client_options(
            object_store::ClientOptions::new()
                .with_connect_timeout(o.connect_timeout)
                .with_timeout_disabled()
                .with_read_timeout(o.request_timeout),
        );
        let b = b.with_client_options(
            object_store::ClientOptions::new().with_connect_timeout(o.connect_timeout).with_timeout(o.request_timeout),
        );
        // Blob parts are sent unsigned: their bytes are named by their
        // digest and checked on every read, so signing them (a second
        // SHA-256 of every byte) protects nothing and costs a core.
        let bulk = b.clone().with_unsigned_payload(true);
        let place = |mut b: object_store::aws::AmazonS3Builder| {
            if let Some(e) = &o.endpoint {
                b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
            }
            if let Some((id, secret)) = &o.credentials {
                b = b.with_access_key_id(id).with_secret_access_key(secret);
            }
            b
        };
        let (b, streams, bulk) = (place(b), place(streams), place(bulk));
        let endpoint = o.endpoint.clone().unwrap_or_else(|| format!("s3://{}", o.bucket));
        let root = match &o.endpoint {
            Some(_) => format!("{endpoint}/{}", o.bucket),
            None => endpoint,
        };
        let built = |b: object_store::aws::AmazonS3Builder| {
            b.build().map_err(|e| StoreError::Io {
                op: "configure object store",
                path: PathBuf::from(&root),
                source: io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
            })
        };
        let (store, streams, bulk) = (built(b)?, built(streams)?, built(bulk)?);
        let mut be = ObjectBackend::with_counters(Arc::new(store), &root, &o.prefix, counters)?;
        if let Some(s) = Arc::get_mut(&mut be.s) {
            s.streams = Arc::new(streams);
            s.bulk = Arc::new(bulk);
        }
        Ok(be)
    }

    /// A backend over any object store; `root` names it in messages (an
    /// URL without the prefix), `prefix` is prepended to every key.
    pub fn new(store: Arc<dyn ObjectStore>, root: &str, prefix: &str) -> Result<ObjectBackend> {
        ObjectBackend::with_counters(store, root, prefix, Arc::default())
    }

    fn with_counters(
        store: Arc<dyn ObjectStore>,
        root: &str,
        prefix: &str,
        counters: Arc<Counters>,
    ) -> Result<ObjectBackend> {
        let prefix: Vec<String> = prefix.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
        let mut root_path = PathBuf::from(root);
        root_path.extend(&prefix);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-object-store")
            .enable_all()
            .build()
            .map_err(StoreError::io("start object store runtime", &root_path))?;
        let handle = rt.handle().clone();
        Ok(ObjectBackend {
            s: Arc::new(Shared {
                streams: Arc::clone(&store),
                bulk: Arc::clone(&store),
                store,
                prefix,
                root: root_path,
                rt: Some(rt),
                handle,
                gc: Arc::default(),
                open_sinks: AtomicUsize::new(0),
                copy_limit: AtomicU64::new(COPY_LIMIT),
                live_tmp: Default::default(),
                upload_locks: Default::default(),
                counters,
            }),
        })
    }

    /// Requests, failures and retries so far (see [`ObjectStats`]).
    pub fn stats(&self) -> ObjectStats {
        let c = &self.s.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ObjectStats {
            attempts: get(&c.attempts),
            throttled: get(&c.throttled),
            server_errors: get(&c.server_errors),
            transport_errors: get(&c.transport_errors),
            errors: get(&c.errors),
        }
    }

    /// Counts an operation that failed for good.
    fn failed(&self) {
        self.s.counters.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the largest blob committed by a server-side copy out of `tmp/`
    /// (default [`COPY_LIMIT`], S3's); a larger one is streamed from `tmp/`
    /// into a new multipart upload at its name. For stores with another
    /// limit, and for tests.
    pub fn set_copy_limit(&self, bytes: u64) {
        self.s.copy_limit.store(bytes, Ordering::Relaxed);
    }

    /// Runs `fut` on the backend's runtime and waits for it. The future is
    /// spawned there and the caller blocks on a std channel rather than
    /// `block_on`: `block_on` panics when the caller is itself on a Tokio
    /// runtime, and the store is called from such threads (its callers
    /// mostly use `spawn_blocking`, but a quick `exists` may not).
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> io::Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.s.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| io::Error::other("object store task stopped (runtime shut down?)"))
    }

    /// Runs an object store request; errors name `op` and `at`.
    fn call<T: Send + 'static>(
        &self,
        op: &'static str,
        at: &ObjPath,
        fut: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> Result<std::result::Result<T, object_store::Error>> {
        let r = self.run(fut).map_err(|e| StoreError::Io { op, path: self.path_of(at), source: e })?;
        match r {
            Ok(v) => Ok(Ok(v)),
            // Expected outcomes the caller decides on.
            Err(
                e @ (object_store::Error::NotFound { .. }
                | object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }),
            ) => Ok(Err(e)),
            Err(e) => Err(self.error(op, at, e)),
        }
    }

    fn error(&self, op: &'static str, at: &ObjPath, e: object_store::Error) -> StoreError {
        self.failed();
        let (kind, hint) = match e {
            object_store::Error::NotFound { .. } => (io::ErrorKind::NotFound, GENERIC_HINT),
            object_store::Error::NotSupported { .. } | object_store::Error::NotImplemented { .. } => {
                (io::ErrorKind::Unsupported, GENERIC_HINT)
            }
            // Not retried: a retry would be refused the same way.
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => (
                io::ErrorKind::PermissionDenied,
                "the object store refused these credentials: check the access key and secret (or the \
                 role the node runs as) and that their policy allows listing the bucket and getting, \
                 putting and deleting objects under the prefix",
            ),
            _ => (io::ErrorKind::Other, GENERIC_HINT),
        };
        let msg = format!("{e} ({hint})");
        StoreError::Io { op, path: self.path_of(at), source: io::Error::new(kind, msg) }
    }

    /// The outcome of a create-only write: `true` when it created the
    /// object, `false` when one was there. Anything else (a missing bucket
    /// answers "not found") is an error, never "it existed".
    fn created(&self, op: &'static str, at: &ObjPath, r: std::result::Result<(), object_store::Error>) -> Result<bool> {
        match r {
            Ok(()) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.error(op, at, e)),
        }
    }

    fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.s.store)
    }

    /// The client for blobs' multipart uploads (see `Shared::bulk`).
    fn bulk(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.s.bulk)
    }

    /// The client for reading whole blobs (see `Shared::streams`).
    fn streams(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.s.streams)
    }

    fn obj(&self, key: &str) -> ObjPath {
        ObjPath::from_iter(self.s.prefix.iter().map(String::as_str).chain(key.split('/').filter(|s| !s.is_empty())))
    }

    fn blob(&self, d: &Digest) -> ObjPath {
        self.obj(&format!("objects/{d}"))
    }

    /// The marker whose time is the blob's last refresh.
    fn touched(&self, d: &Digest) -> ObjPath {
        self.obj(&format!("touched/{d}"))
    }

    /// Deletes an object, absent or not.
    fn remove(&self, op: &'static str, at: &ObjPath) -> Result<()> {
        let (st, p) = (self.store(), at.clone());
        self.call(op, at, async move { st.delete(&p).await })?.ok();
        Ok(())
    }

    /// A sink writing to `tmp/`, or, when the digest is known before the
    /// bytes (`direct`), a multipart upload at the blob's own name.
    fn sink(&self, direct: Option<&Digest>) -> ObjectSink {
        self.s.open_sinks.fetch_add(1, Ordering::SeqCst);
        let tmp = match direct {
            Some(d) => self.blob(d),
            None => {
                let t = self.obj(&format!("tmp/{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>()));
                self.s.live_tmp.lock().unwrap_or_else(|p| p.into_inner()).insert(t.to_string());
                t
            }
        };
        let at = self.path_of(&tmp);
        ObjectSink {
            be: self.clone(),
            buf: Vec::new(),
            tmp,
            at,
            upload: None,
            in_flight: std::collections::VecDeque::new(),
            tmp_written: false,
            direct: direct.copied(),
            len: 0,
        }
    }

    /// The object's full name, for messages.
    fn path_of(&self, at: &ObjPath) -> PathBuf {
        let mut p = self.s.root.clone();
        let rel = at.parts().skip(self.s.prefix.len()).map(|p| p.as_ref().to_owned()).collect::<Vec<_>>();
        p.extend(rel);
        p
    }

    fn head(&self, op: &'static str, at: &ObjPath) -> Result<Option<ObjectMeta>> {
        let (st, p) = (self.store(), at.clone());
        Ok(self.call(op, at, async move { st.head(&p).await })?.ok())
    }

    /// A stream driven from a blocking thread, one item per call.
    fn blocking<T: Send + 'static>(&self, s: BoxStream<'static, object_store::Result<T>>) -> Blocking<T> {
        Blocking { be: self.clone(), s: Some(s) }
    }

    /// Every object under `key/`.
    fn list_under(&self, key: &str) -> Blocking<ObjectMeta> {
        let p = self.obj(key);
        self.blocking(self.s.store.list(Some(&p)))
    }
}

/// A stream of an object store, pulled from a blocking thread.
struct Blocking<T> {
    be: ObjectBackend,
    s: Option<BoxStream<'static, object_store::Result<T>>>,
}

impl<T: Send + 'static> Blocking<T> {
    /// The next item; `None` at the end.
    fn next_item(&mut self) -> io::Result<Option<T>> {
        let Some(mut s) = self.s.take() else { return Ok(None) };
        // The stream travels to the runtime and back: a `'static` future.
        let (s, item) = self.be.run(async move {
            let item = s.next().await;
            (s, item)
        })?;
        match item {
            Some(Ok(v)) => {
                self.s = Some(s);
                Ok(Some(v))
            }
            Some(Err(e)) => {
                self.be.failed();
                Err(io::Error::other(e.to_string()))
            }
            None => Ok(None),
        }
    }
}

/// A blob's bytes as they arrive: one chunk in memory at a time. A body
/// that ends before `left` bytes is an error, never a short blob.
struct ObjectRead {
    chunks: Blocking<Bytes>,
    cur: Bytes,
    left: u64,
    at: PathBuf,
}

impl Read for ObjectRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        while self.cur.is_empty() {
            match self.chunks.next_item()? {
                Some(b) => self.cur = b,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{}: the object store's answer ended {} bytes early", self.at.display(), self.left),
                    ));
                }
            }
        }
        let n = buf.len().min(self.cur.len()).min(usize::try_from(self.left).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        self.left -= n as u64;
        Ok(n)
    }
}

fn mtime(m: &ObjectMeta) -> SystemTime {
    SystemTime::from(m.last_modified)
}

fn stamp(m: &ObjectMeta) -> Stamp {
    // The ETag (and version) name one version of the object.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&m.e_tag, &m.version).hash(&mut h);
    let t = mtime(m).duration_since(UNIX_EPOCH).unwrap_or_default();
    let t = (i64::try_from(t.as_secs()).unwrap_or(i64::MAX), i64::from(t.subsec_nanos()));
    Stamp::new(0, h.finish(), m.size, t, t)
}

impl BlobBackend for ObjectBackend {
    fn stat(&self, d: &Digest) -> Result<u64> {
        self.head("stat", &self.blob(d))?.map(|m| m.size).ok_or(StoreError::BlobNotFound(*d))
    }

    fn stat_mtime(&self, d: &Digest) -> Result<Option<(u64, SystemTime)>> {
        let Some(m) = self.head("stat", &self.blob(d))? else { return Ok(None) };
        let touched = self.head("stat", &self.touched(d))?.map_or(UNIX_EPOCH, |t| mtime(&t));
        Ok(Some((m.size, mtime(&m).max(touched))))
    }

    fn stat_mode(&self, d: &Digest) -> Option<(u64, u32)> {
        self.head("stat", &self.blob(d)).ok().flatten().map(|m| (m.size, 0o100444))
    }

    fn read(&self, d: &Digest, offset: u64, len: Option<u64>) -> Result<BlobReader> {
        let at = self.blob(d);
        let size = self.stat(d)?;
        let remaining = crate::blob::check_range(d, offset, len, size)?;
        let path = self.path_of(&at);
        if remaining == 0 {
            return Ok(BlobReader::from_bytes(Bytes::new(), path, size, offset));
        }
        // In range, so the end does not overflow.
        let range = GetRange::Bounded(offset..offset + remaining);
        let (st, p) = (self.streams(), at.clone());
        let got = self.call("read", &at, async move {
            st.get_opts(&p, GetOptions { range: Some(range), ..Default::default() }).await
        })?;
        let got = got.map_err(|_| StoreError::BlobNotFound(*d))?;
        let r = ObjectRead {
            chunks: self.blocking(got.into_stream()),
            cur: Bytes::new(),
            left: remaining,
            at: path.clone(),
        };
        Ok(BlobReader::from_reader(Box::new(r), path, size, offset, remaining))
    }

    fn create(&self) -> Result<Box<dyn BlobSink>> {
        Ok(Box::new(self.sink(None)))
    }

    fn delete_blob(&self, d: &Digest) -> Result<bool> {
        let at = self.blob(d);
        // S3 deletes are idempotent and do not say whether anything was there.
        if self.head("stat", &at)?.is_none() {
            return Ok(false);
        }
        self.remove("delete", &at)?;
        self.remove("delete", &self.touched(d))?;
        Ok(true)
    }

    fn sync_deletes(&self) -> Result<()> {
        Ok(())
    }

    fn list_blobs(&self) -> Result<Box<dyn Iterator<Item = Result<Digest>> + Send>> {
        let dir = self.obj("objects");
        let mut it = self.list_under("objects");
        let path = self.path_of(&dir);
        Ok(Box::new(std::iter::from_fn(move || {
            loop {
                match it.next_item() {
                    Ok(Some(m)) => {
                        if let Some(d) = m.location.filename().and_then(|n| Digest::parse(n).ok()) {
                            return Some(Ok(d));
                        }
                    }
                    Ok(None) => return None,
                    Err(e) => return Some(Err(StoreError::Io { op: "list", path: path.clone(), source: e })),
                }
            }
        })))
    }

    fn touch(&self, d: &Digest) -> Result<()> {
        // An object's time cannot be set: an empty marker's is the refresh.
        self.stat(d)?;
        let at = self.touched(d);
        let (st, p) = (self.store(), at.clone());
        self.call("touch", &at, async move { st.put(&p, PutPayload::default()).await })?
            .map_err(|e| self.error("touch", &at, e))?;
        Ok(())
    }

    fn quarantine(&self, d: &Digest) -> Result<PathBuf> {
        let (from, to) = (self.blob(d), self.obj(&format!("quarantine/{d}")));
        let (st, f, t) = (self.store(), from.clone(), to.clone());
        self.call("quarantine", &from, async move { st.copy(&f, &t).await })?
            .map_err(|_| StoreError::BlobNotFound(*d))?;
        self.remove("quarantine", &from)?;
        self.remove("quarantine", &self.touched(d))?;
        Ok(self.path_of(&to))
    }

    fn temporaries(&self) -> Result<usize> {
        let mut n = self.s.open_sinks.load(Ordering::SeqCst);
        let mut it = self.list_under("tmp");
        let path = self.path_of(&self.obj("tmp"));
        while it.next_item().map_err(|e| StoreError::Io { op: "list", path: path.clone(), source: e })?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    fn sweep_temporaries(&self, before: SystemTime) -> Result<usize> {
        let mut stale = Vec::new();
        let path = self.path_of(&self.obj("tmp"));
        let mut it = self.list_under("tmp");
        while let Some(m) = it.next_item().map_err(StoreError::io("list", &path))? {
            if mtime(&m) < before {
                stale.push(m.location);
            }
        }
        // Listed first: a sink started later has no object in the list.
        {
            let live = self.s.live_tmp.lock().unwrap_or_else(|p| p.into_inner());
            stale.retain(|p| !live.contains(p.as_ref()));
        }
        // Markers of blobs deleted behind the store's back.
        let path = self.path_of(&self.obj("touched"));
        let mut it = self.list_under("touched");
        while let Some(m) = it.next_item().map_err(StoreError::io("list", &path))? {
            if mtime(&m) < before
                && let Some(d) = m.location.filename().and_then(|n| Digest::parse(n).ok())
                && self.head("stat", &self.blob(&d))?.is_none()
            {
                stale.push(m.location);
            }
        }
        for p in &stale {
            tracing::info!(at = %self.path_of(p).display(), "removing a stale temporary object");
            self.remove("remove temporary", p)?;
        }
        Ok(stale.len())
    }
}

/// A blob being written: buffered up to [`PART_SIZE`], then a multipart
/// upload under `tmp/`, a few parts at a time.
struct ObjectSink {
    be: ObjectBackend,
    buf: Vec<u8>,
    tmp: ObjPath,
    at: PathBuf,
    upload: Option<Box<dyn MultipartUpload>>,
    // Parts being uploaded, oldest first.
    in_flight: std::collections::VecDeque<mpsc::Receiver<object_store::Result<()>>>,
    // The upload completed: the temp object exists until removed.
    tmp_written: bool,
    // The digest the caller knew in advance: the upload is at its name.
    direct: Option<Digest>,
    // Bytes written.
    len: u64,
}

impl ObjectSink {
    /// Sends the buffer as the next part, starting the upload first. Up to
    /// [`PARTS_IN_FLIGHT`] parts upload while the writer fills the next.
    fn send_part(&mut self) -> io::Result<()> {
        let up = match &mut self.upload {
            Some(u) => u,
            None => {
                let (st, p) = (self.be.bulk(), self.tmp.clone());
                let u = self.be.run(async move { st.put_multipart(&p).await })?.map_err(io::Error::other)?;
                self.upload.insert(u)
            }
        };
        let part = up.put_part(PutPayload::from(std::mem::take(&mut self.buf)));
        let (tx, rx) = mpsc::sync_channel(1);
        self.be.s.handle.spawn(async move {
            let _ = tx.send(part.await);
        });
        self.in_flight.push_back(rx);
        while self.in_flight.len() > PARTS_IN_FLIGHT {
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn wait_oldest(&mut self) -> io::Result<()> {
        let Some(rx) = self.in_flight.pop_front() else { return Ok(()) };
        rx.recv().map_err(|_| io::Error::other("object store task stopped (runtime shut down?)"))?.map_err(|e| {
            self.be.failed();
            io::Error::other(e)
        })
    }

    fn wait_all(&mut self) -> io::Result<()> {
        let mut first = Ok(());
        while !self.in_flight.is_empty() {
            let r = self.wait_oldest();
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    fn completed(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.send_part().map_err(StoreError::io("upload part", &self.at))?;
        }
        self.wait_all().map_err(StoreError::io("upload part", &self.at))?;
        let Some(mut up) = self.upload.take() else { return Ok(()) };
        let done =
            self.be.run(async move { up.complete().await }).map_err(StoreError::io("complete upload", &self.at))?;
        done.map_err(|e| self.be.error("complete upload", &self.tmp, e))?;
        // A direct upload completed at the blob's name: nothing to remove.
        self.tmp_written = self.direct.is_none();
        Ok(())
    }

    /// Streams the completed `tmp/` object into a new multipart upload at
    /// `dest` (for blobs over the copy limit), one part at a time.
    fn reupload(&mut self, dest: &ObjPath) -> Result<()> {
        let be = self.be.clone();
        let at = self.at.clone();
        let (st, p) = (be.streams(), self.tmp.clone());
        let got = be.call("read", &self.tmp, async move { st.get(&p).await })?;
        let got = got.map_err(|e| be.error("read", &self.tmp, e))?;
        let mut chunks = be.blocking(got.into_stream());
        let (st, p) = (be.bulk(), dest.clone());
        let mut up = be
            .run(async move { st.put_multipart(&p).await })
            .map_err(StoreError::io("start upload", &at))?
            .map_err(|e| be.error("start upload", dest, e))?;
        let mut sent = || -> Result<()> {
            let mut buf = Vec::with_capacity(PART_SIZE);
            loop {
                let next = chunks.next_item().map_err(StoreError::io("read", &at))?;
                let end = next.is_none();
                if let Some(b) = next {
                    buf.extend_from_slice(&b);
                }
                while buf.len() >= PART_SIZE || (end && !buf.is_empty()) {
                    let part: Vec<u8> = buf.drain(..buf.len().min(PART_SIZE)).collect();
                    let fut = up.put_part(PutPayload::from(part));
                    be.run(fut)
                        .map_err(StoreError::io("upload part", &at))?
                        .map_err(|e| be.error("upload part", dest, e))?;
                }
                if end {
                    return Ok(());
                }
            }
        };
        if let Err(e) = sent() {
            let _ = be.run(async move { up.abort().await });
            return Err(e);
        }
        // Content-addressed and verified: a concurrent completion of the
        // same name wrote the same bytes.
        be.run(async move { up.complete().await })
            .map_err(StoreError::io("complete upload", &at))?
            .map_err(|e| be.error("complete upload", dest, e))?;
        Ok(())
    }
}

impl BlobSink for ObjectSink {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            if self.buf.capacity() == 0 {
                // One allocation per part: growing by doubling left the
                // allocator holding many freed sizes (a 1 GiB push peaked
                // at ~300 MiB of RSS).
                self.buf.reserve_exact(PART_SIZE);
            }
            let n = (PART_SIZE - self.buf.len()).min(buf.len());
            self.buf.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            self.len = self.len.saturating_add(n as u64);
            if self.buf.len() == PART_SIZE {
                self.send_part()?;
            }
        }
        Ok(())
    }

    fn commit(mut self: Box<Self>, d: &Digest) -> Result<bool> {
        let dest = self.be.blob(d);
        let be = self.be.clone();
        // An existing blob is refreshed, not replaced: a GC (here or on
        // another node) that scanned before keeps it for this push.
        let existed = |created: bool| -> Result<bool> {
            if !created {
                be.touch(d)?;
            }
            Ok(!created)
        };
        if self.be.head("stat", &dest)?.is_some() {
            return existed(false);
        }
        if let Some(want) = self.direct
            && want != *d
        {
            return Err(StoreError::Io {
                op: "commit",
                path: self.at.clone(),
                source: io::Error::other(format!("a sink opened for {want} cannot commit {d}")),
            });
        }
        if self.upload.is_none() {
            // Small: one create-only put straight to its name.
            let (st, p, bytes) = (be.store(), dest.clone(), std::mem::take(&mut self.buf));
            let put = be.call("write", &dest, async move {
                st.put_opts(&p, PutPayload::from(bytes), PutOptions::from(PutMode::Create)).await.map(drop)
            })?;
            return existed(be.created("write", &dest, put)?);
        }
        self.completed()?;
        if self.direct.is_some() {
            // Completed at its name, verified by the caller: a concurrent
            // completion of the same name wrote the same bytes.
            return Ok(false);
        }
        if self.len > be.s.copy_limit.load(Ordering::Relaxed) {
            // Too large for a server-side copy; absent a moment ago.
            self.reupload(&dest)?;
            return Ok(false);
        }
        let (st, from, to) = (be.store(), self.tmp.clone(), dest.clone());
        let copy = be.call("copy into objects", &dest, async move {
            st.copy_opts(&from, &to, CopyOptions { mode: CopyMode::Create, ..Default::default() }).await
        })?;
        // Drop removes the temp object.
        existed(be.created("copy into objects", &dest, copy)?)
    }

    fn location(&self) -> &Path {
        &self.at
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

impl Drop for ObjectSink {
    fn drop(&mut self) {
        // Parts still uploading would outlive an abort as orphans.
        let _ = self.wait_all();
        if let Some(mut up) = self.upload.take()
            && let Err(e) = self.be.run(async move { up.abort().await }).and_then(|r| r.map_err(io::Error::other))
        {
            tracing::warn!(at = %self.at.display(), error = %e, "could not abort a multipart upload");
        }
        if self.tmp_written {
            let (st, p) = (self.be.store(), self.tmp.clone());
            if let Err(e) = self.be.run(async move { st.delete(&p).await }).and_then(|r| r.map_err(io::Error::other)) {
                tracing::warn!(at = %self.at.display(), error = %e, "could not remove a temp object");
            }
        }
        if self.direct.is_none() {
            self.be.s.live_tmp.lock().unwrap_or_else(|p| p.into_inner()).remove(self.tmp.as_ref());
        }
        self.be.s.open_sinks.fetch_sub(1, Ordering::SeqCst);
    }
}

impl MetaBackend for ObjectBackend {
    fn get(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let at = self.obj(key);
        let (st, p) = (self.store(), at.clone());
        let Ok(got) = self.call("read", &at, async move { st.get(&p).await })? else { return Ok(None) };
        let cap = usize::try_from(max.saturating_add(1)).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut chunks = self.blocking(got.into_stream());
        while out.len() < cap {
            match chunks.next_item().map_err(StoreError::io("read", &self.path_of(&at)))? {
                Some(b) => out.extend_from_slice(&b[..b.len().min(cap - out.len())]),
                None => break,
            }
        }
        Ok(Some(out))
    }

    fn get_stamped(&self, key: &str) -> Result<Option<(Vec<u8>, Stamp)>> {
        let at = self.obj(key);
        let (st, p) = (self.store(), at.clone());
        let got = self.call("read", &at, async move {
            let g = st.get(&p).await?;
            let meta = g.meta.clone();
            Ok((g.bytes().await?, meta))
        })?;
        // The stamp is of the very version read.
        Ok(got.ok().map(|(b, m)| (b.to_vec(), stamp(&m))))
    }

    fn stamp(&self, key: &str) -> Option<Stamp> {
        self.head("stat", &self.obj(key)).ok().flatten().map(|m| stamp(&m))
    }

    fn exists(&self, key: &str) -> bool {
        self.head("stat", &self.obj(key)).ok().flatten().is_some()
    }

    fn is_dir(&self, key: &str) -> bool {
        self.list_under(key).next_item().ok().flatten().is_some()
    }

    fn modified(&self, key: &str) -> Option<SystemTime> {
        if let Some(m) = self.head("stat", &self.obj(key)).ok().flatten() {
            return Some(mtime(&m));
        }
        // A "directory": its newest object.
        let mut it = self.list_under(key);
        let mut newest = None;
        while let Ok(Some(m)) = it.next_item() {
            newest = newest.max(Some(mtime(&m)));
        }
        newest
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let at = self.obj(key);
        let (st, p, b) = (self.store(), at.clone(), Bytes::copy_from_slice(bytes));
        // A PUT is atomic: readers see the old object or the new one.
        self.call("write", &at, async move { st.put(&p, PutPayload::from(b)).await })?
            .map_err(|e| self.error("write", &at, e))?;
        Ok(())
    }

    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<bool> {
        let at = self.obj(key);
        let (st, p, b) = (self.store(), at.clone(), Bytes::copy_from_slice(bytes));
        let put = self.call("write", &at, async move {
            st.put_opts(&p, PutPayload::from(b), PutOptions::from(PutMode::Create)).await.map(drop)
        })?;
        self.created("write", &at, put)
    }

    fn put_if(&self, key: &str, bytes: &[u8], seen: Option<Stamp>) -> Result<bool> {
        let Some(seen) = seen else { return self.put_new(key, bytes) };
        let at = self.obj(key);
        // The stamp is a hash of the ETag: find the ETag of the version
        // there now, and write only if it is still that version (If-Match),
        // so a change between this HEAD and the PUT fails the PUT. An S3
        // ETag is the MD5 of the content: rewriting the same bytes keeps
        // the version, which orders that no-op write before this one.
        let Some(m) = self.head("stat", &at)? else { return Ok(false) };
        if stamp(&m) != seen {
            return Ok(false);
        }
        let mode = PutMode::Update(UpdateVersion { e_tag: m.e_tag, version: m.version });
        let (st, p, b) = (self.store(), at.clone(), Bytes::copy_from_slice(bytes));
        let put =
            self.call("write", &at, async move { st.put_opts(&p, PutPayload::from(b), PutOptions::from(mode)).await })?;
        match put {
            Ok(_) => Ok(true),
            // S3 answers 404 to If-Match on an object deleted meanwhile.
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. }
                | object_store::Error::NotFound { .. },
            ) => Ok(false),
            Err(e) => Err(self.error("write", &at, e)),
        }
    }

    fn delete(&self, key: &str) -> Result<bool> {
        let at = self.obj(key);
        if self.head("stat", &at)?.is_none() {
            return Ok(false);
        }
        let (st, p) = (self.store(), at.clone());
        self.call("remove", &at, async move { st.delete(&p).await })?.ok();
        Ok(true)
    }

    fn children(&self, key: &str) -> Result<Vec<String>> {
        let at = self.obj(key);
        let (st, p) = (self.store(), at.clone());
        let Ok(l) = self.call("list", &at, async move { st.list_with_delimiter(Some(&p)).await })? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<String> = l
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .chain(l.objects.iter().filter_map(|m| m.location.filename().map(str::to_owned)))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn locate(&self, key: &str) -> PathBuf {
        self.path_of(&self.obj(key))
    }
}

/// `registry/uploads/<id>`: a session's marker, `info.json` and data.
fn upload_key(id: &str) -> String {
    format!("registry/uploads/{id}")
}

impl UploadBackend for ObjectBackend {
    fn create_upload(&self, id: &str) -> Result<()> {
        self.put(&format!("{}/created", upload_key(id)), b"")
    }

    fn open_upload(&self, id: &str) -> Result<Option<Box<dyn UploadData>>> {
        let dir = upload_key(id);
        if !self.exists(&format!("{dir}/created")) {
            return Ok(None);
        }
        let at = self.locate(&format!("{dir}/data"));
        Ok(Some(Box::new(ObjectUpload {
            be: self.clone(),
            id: id.to_owned(),
            dir,
            locked: false,
            at,
            pending: Vec::new(),
            pending_at: 0,
        })))
    }

    fn remove_upload(&self, id: &str) -> Result<()> {
        let dir = upload_key(id);
        let mut it = self.list_under(&dir);
        let path = self.locate(&dir);
        while let Some(m) = it.next_item().map_err(StoreError::io("list", &path))? {
            let (st, p) = (self.store(), m.location.clone());
            self.call("remove", &m.location, async move { st.delete(&p).await })?.ok();
        }
        Ok(())
    }

    fn list_uploads(&self) -> Result<Vec<String>> {
        self.children("registry/uploads")
    }

    fn upload_created(&self, id: &str) -> Option<SystemTime> {
        self.modified(&format!("{}/created", upload_key(id)))
    }
}

/// An upload session's data: objects `data/<16 hex offset>` of at most
/// [`PART_SIZE`] bytes each, in offset order; appends are buffered up to
/// one part. The lock is in-process.
struct ObjectUpload {
    be: ObjectBackend,
    id: String,
    dir: String,
    locked: bool,
    at: PathBuf,
    pending: Vec<u8>,
    pending_at: u64,
}

impl ObjectUpload {
    /// The stored pieces: (offset, size, name), in order.
    fn pieces(&self) -> io::Result<Vec<(u64, u64, ObjPath)>> {
        let mut it = self.be.list_under(&format!("{}/data", self.dir));
        let mut out = Vec::new();
        while let Some(m) = it.next_item()? {
            if let Some(off) = m.location.filename().and_then(|n| u64::from_str_radix(n, 16).ok()) {
                out.push((off, m.size, m.location));
            }
        }
        out.sort_by_key(|p| p.0);
        Ok(out)
    }

    fn get(&self, p: &ObjPath) -> io::Result<Bytes> {
        let (st, p) = (self.be.store(), p.clone());
        self.be.run(async move { st.get(&p).await?.bytes().await })?.map_err(io::Error::other)
    }

    fn put_piece(&self, off: u64, bytes: Bytes) -> io::Result<()> {
        let (st, p) = (self.be.store(), self.be.obj(&format!("{}/data/{off:016x}", self.dir)));
        self.be.run(async move { st.put(&p, PutPayload::from(bytes)).await })?.map(drop).map_err(io::Error::other)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let b = Bytes::from(std::mem::take(&mut self.pending));
        let n = b.len() as u64;
        self.put_piece(self.pending_at, b)?;
        self.pending_at += n;
        Ok(())
    }
}

impl UploadData for ObjectUpload {
    fn len(&self) -> io::Result<u64> {
        let stored = self.pieces()?.last().map_or(0, |(off, size, _)| off + size);
        Ok(stored.max(self.pending_at) + self.pending.len() as u64)
    }

    fn modified(&self) -> Option<SystemTime> {
        self.be.modified(&self.dir)
    }

    fn try_lock(&mut self) -> io::Result<bool> {
        if self.locked {
            return Ok(true);
        }
        let mut held = self.be.s.upload_locks.lock().unwrap_or_else(|p| p.into_inner());
        self.locked = held.insert(self.id.clone());
        Ok(self.locked)
    }

    fn read_prefix(&mut self, len: u64, f: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        self.flush()?;
        for (off, _, p) in self.pieces()? {
            if off >= len {
                break;
            }
            let b = self.get(&p)?;
            let n = usize::try_from(len - off).unwrap_or(usize::MAX).min(b.len());
            f(&b[..n]);
        }
        Ok(())
    }

    fn begin_append(&mut self, at: u64) -> io::Result<()> {
        self.truncate(at)?;
        self.pending_at = at;
        Ok(())
    }

    fn append(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = (PART_SIZE - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.pending.len() == PART_SIZE {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn end_append(&mut self) -> io::Result<()> {
        self.flush()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.flush()?;
        for (off, size, p) in self.pieces()? {
            if off >= len {
                let (st, p) = (self.be.store(), p.clone());
                self.be.run(async move { st.delete(&p).await })?.map_err(io::Error::other)?;
            } else if off + size > len {
                let b = self.get(&p)?;
                // off < len < off + size, so the cut is inside the piece.
                self.put_piece(off, b.slice(..(len - off) as usize))?;
            }
        }
        self.pending_at = self.pending_at.min(len);
        Ok(())
    }

    fn commit(&mut self, d: &Digest) -> Result<bool> {
        self.flush().map_err(StoreError::io("write", &self.at))?;
        // The digest is known: a large blob uploads straight to its name
        // (no copy, so no size limit from one).
        let mut sink = self.be.sink(Some(d));
        for (_, _, p) in self.pieces().map_err(StoreError::io("list", &self.at))? {
            let b = self.get(&p).map_err(StoreError::io("read", &self.at))?;
            sink.write(&b).map_err(StoreError::io("write", sink.location()))?;
        }
        Box::new(sink).commit(d)
    }

    fn location(&self) -> &Path {
        &self.at
    }
}

impl Drop for ObjectUpload {
    fn drop(&mut self) {
        if self.locked {
            self.be.s.upload_locks.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
        }
    }
}

impl Backend for ObjectBackend {
    fn root(&self) -> &Path {
        &self.s.root
    }

    fn lock_gc(&self, exclusive: bool) -> Result<Guard> {
        Ok(GcLock::lock(&self.s.gc, exclusive))
    }

    fn probe(&self) -> Result<()> {
        let at = self.obj("objects");
        let (st, p) = (self.store(), at.clone());
        self.call("list", &at, async move { st.list_with_delimiter(Some(&p)).await })?
            .map_err(|e| self.error("list", &at, e))?;
        Ok(())
    }
}

/// What the durable tier needs beyond the store's traits: writes whose
/// digest is known up front, and async reads for the fetch pipeline.
impl ObjectBackend {
    /// A sink for the blob `d` (its digest known before its bytes): a large
    /// one is uploaded straight at `objects/<d>` and becomes visible when
    /// the upload completes, with no copy (S3 copies are slow, and limited
    /// to 5 GiB). The upload completes only in `commit(d)`, after the
    /// caller verified the bytes; dropped, it is aborted. When the bucket
    /// already holds `d`, the sink discards the bytes.
    pub fn create_for(&self, d: &Digest) -> Result<Box<dyn BlobSink>> {
        let dest = self.blob(d);
        if self.head("stat", &dest)?.is_some() {
            return Ok(Box::new(Present { be: self.clone(), at: self.path_of(&dest), d: *d }));
        }
        Ok(Box::new(self.sink(Some(d))))
    }

    /// Opens blob `d` for streaming from async code: its size and its bytes,
    /// `None` when the bucket lacks it. The request is sent from the
    /// backend's runtime; the body is then read by the caller's task
    /// directly (no hop through a channel per chunk).
    pub fn open_blob_stream(
        &self,
        d: &Digest,
    ) -> impl Future<Output = Result<Option<(u64, BoxStream<'static, io::Result<Bytes>>)>>> + Send + 'static {
        let (at, st) = (self.blob(d), self.streams());
        let be = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let p = at.clone();
        self.s.handle.spawn(async move {
            let _ = tx.send(st.get(&p).await);
        });
        async move {
            let got = match rx.await {
                Ok(Ok(g)) => g,
                Ok(Err(object_store::Error::NotFound { .. })) => return Ok(None),
                Ok(Err(e)) => return Err(be.error("read", &at, e)),
                Err(_) => {
                    return Err(StoreError::Io {
                        op: "read",
                        path: be.path_of(&at),
                        source: io::Error::other("object store task stopped (runtime shut down?)"),
                    });
                }
            };
            let size = got.meta.size;
            let body = got
                .into_stream()
                .map(|r| r.map_err(|e| io::Error::other(format!("reading the object store's answer: {e}"))));
            Ok(Some((size, body.boxed())))
        }
    }

    /// True when the bucket holds blob `d`.
    pub fn has_blob(&self, d: &Digest) -> Result<bool> {
        Ok(self.head("stat", &self.blob(d))?.is_some())
    }
}

/// The sink of a blob the bucket already holds: the bytes are dropped,
/// and the commit refreshes the blob as a rewrite would (GC grace).
struct Present {
    be: ObjectBackend,
    at: PathBuf,
    d: Digest,
}

impl BlobSink for Present {
    fn write(&mut self, _buf: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn commit(self: Box<Self>, d: &Digest) -> Result<bool> {
        if *d != self.d {
            return Err(StoreError::DigestMismatch { expected: self.d, actual: *d });
        }
        self.be.touch(d)?;
        Ok(true)
    }

    fn location(&self) -> &Path {
        &self.at
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn the_backend_works_and_drops_when_called_from_inside_an_async_task() {
        // Even on a one-thread runtime: the work runs on the backend's own.
        let be = ObjectBackend::new(Arc::new(object_store::memory::InMemory::new()), "memory://", "p").unwrap();
        assert!(be.put_new("refs/a.json", b"one").unwrap());
        assert_eq!(be.get("refs/a.json", 100).unwrap().unwrap(), b"one");
        let mut s = be.create().unwrap();
        s.write(b"blob").unwrap();
        assert!(!s.commit(&Digest::of(b"blob")).unwrap());
        drop(be);
    }

    /// `put_if` relies on the server refusing a PUT whose `If-Match` names
    /// a version that is gone (or `If-None-Match: *` over an object); a
    /// server ignoring the headers would make it last-writer-wins.
    #[test]
    fn the_s3_server_refuses_a_put_if_match_with_a_stale_etag_and_a_create_over_an_object() {
        let Some(m) = cairn_testkit::s3::MotoServer::start(
            "the_s3_server_refuses_a_put_if_match_with_a_stale_etag_and_a_create_over_an_object",
        ) else {
            return;
        };
        let mut o = S3Options::new(&m.bucket, &m.region);
        o.endpoint = Some(m.endpoint.clone());
        o.credentials = Some((m.access_key.clone(), m.secret_key.clone()));
        let be = ObjectBackend::s3(&o).unwrap();
        be.put("k", b"one").unwrap();
        let stale = be.head("stat", &be.obj("k")).unwrap().unwrap();
        be.put("k", b"two").unwrap();
        let (st, p) = (be.store(), be.obj("k"));
        let mode = PutMode::Update(UpdateVersion { e_tag: stale.e_tag, version: stale.version });
        let r = be.run(async move { st.put_opts(&p, PutPayload::from_static(b"three"), mode.into()).await }).unwrap();
        assert!(matches!(r, Err(object_store::Error::Precondition { .. })), "{r:?}");
        let (st, p) = (be.store(), be.obj("k"));
        let r = be
            .run(async move { st.put_opts(&p, PutPayload::from_static(b"four"), PutMode::Create.into()).await })
            .unwrap();
        assert!(matches!(r, Err(object_store::Error::AlreadyExists { .. })), "{r:?}");
        assert_eq!(be.get("k", 100).unwrap().unwrap(), b"two");
    }

    #[test]
    fn a_body_that_ends_early_is_an_error_not_a_short_blob() {
        let be = ObjectBackend::new(Arc::new(object_store::memory::InMemory::new()), "memory://", "").unwrap();
        let body = futures_util::stream::iter(vec![Ok(Bytes::from_static(b"0123"))]).boxed();
        let mut r = ObjectRead { chunks: be.blocking(body), cur: Bytes::new(), left: 10, at: PathBuf::from("x") };
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
        assert_eq!(out, b"0123");
    }
}
