//! Resumable upload sessions: the backend keeps the bytes received so far
//! (`registry/uploads/<id>/data` on disk) and who they are for, so a
//! session survives a restart. Finishing checks the digest and links the
//! data into the blobs (a hard link on disk, so a large blob is never
//! copied); a mismatch stores nothing.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::{UploadData, keys};
use crate::blob::{COPY_BUF, PutOutcome};
use crate::digest::{Digest, Hasher};
use crate::error::StoreError;
use crate::oci::Registry;
use crate::oci::error::{OciError, OciResult};
use crate::oci::repo::RepoName;

/// Longest pause between sweeps of expired uploads by a running registry.
const SWEEP_EVERY_SECS: u64 = 600;

/// An upload session id: 32 lowercase hex characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UploadId(String);

impl UploadId {
    /// A fresh random id.
    pub fn random() -> Self {
        UploadId(format!("{:032x}", rand::random::<u128>()))
    }
    /// Checks an id from a URL; anything else is an unknown upload.
    pub fn parse(s: &str) -> OciResult<Self> {
        if s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(UploadId(s.to_owned()))
        } else {
            Err(OciError::UploadUnknown(s.chars().take(80).collect()))
        }
    }
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UploadId({})", self.0)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Info {
    repo: String,
    started: u64,
    // Who opened the session (absent in sessions of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client: Option<IpAddr>,
}

/// The address a per-client cap counts by: an IPv6 client by its /64 (one
/// host usually holds a whole /64), an IPv4-mapped address as IPv4.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

/// Open upload sessions of this process's registry, for the caps.
#[derive(Default)]
pub(crate) struct Sessions {
    // Session id -> the client key that opened it (None: unknown).
    open: HashMap<String, Option<IpAddr>>,
    per_client: HashMap<IpAddr, usize>,
}

impl Sessions {
    fn insert(&mut self, id: &str, client: Option<IpAddr>) {
        if self.open.insert(id.to_owned(), client).is_none()
            && let Some(c) = client
        {
            *self.per_client.entry(c).or_default() += 1;
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some(Some(c)) = self.open.remove(id)
            && let Some(n) = self.per_client.get_mut(&c)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_client.remove(&c);
            }
        }
    }

    /// The cap one more session of `client` would pass, if any.
    fn over_cap(&self, client: Option<IpAddr>, opts: &crate::oci::RegistryOptions) -> Option<OciError> {
        if let Some(c) = client
            && self.per_client.get(&c).copied().unwrap_or(0) >= opts.max_upload_sessions_per_client
        {
            return Some(OciError::TooManyUploads {
                scope: format!("for client {c}"),
                limit: opts.max_upload_sessions_per_client,
            });
        }
        (self.open.len() >= opts.max_upload_sessions)
            .then(|| OciError::TooManyUploads { scope: "on this registry".into(), limit: opts.max_upload_sessions })
    }
}

fn io_err(op: &'static str, p: &std::path::Path) -> impl FnOnce(io::Error) -> OciError {
    let f = StoreError::io(op, p);
    move |e| f(e).into()
}

impl Registry {
    /// Starts an upload session for `repo` (a local caller: only the total cap applies).
    pub fn start_upload(&self, repo: &RepoName) -> OciResult<UploadId> {
        self.start_upload_for(repo, None)
    }

    /// Starts an upload session for `repo` opened by `client`; fails with
    /// [`OciError::TooManyUploads`] when the client's or the total cap is reached.
    pub fn start_upload_for(&self, repo: &RepoName, client: Option<IpAddr>) -> OciResult<UploadId> {
        self.store.check_writable()?;
        // Abandoned sessions of a long-running server are swept now and then.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let every = self.opts.upload_ttl.as_secs().clamp(1, SWEEP_EVERY_SECS);
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= every
            && self.last_sweep.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.sweep_uploads()?;
        }
        let client = client.map(client_key);
        let id = UploadId::random();
        self.reserve_session(&id, client, now)?;
        let res = self.create_session(repo, &id, client);
        if res.is_err() {
            let _ = self.remove_upload(&id);
        }
        res.map(|()| id)
    }

    /// Counts `id` as open for `client`, unless that passes a cap. At a cap,
    /// expired sessions are swept first (at most once a second).
    fn reserve_session(&self, id: &UploadId, client: Option<IpAddr>, now: u64) -> OciResult<()> {
        let mut swept = false;
        loop {
            let mut t = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let Some(over) = t.over_cap(client, &self.opts) else {
                t.insert(id.as_str(), client);
                return Ok(());
            };
            drop(t);
            let last = self.last_sweep.load(Ordering::Relaxed);
            if swept
                || now <= last
                || self.last_sweep.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                // Debug, not warn: a client hammering at its cap must not flood the log.
                tracing::debug!(?client, error = %over, "upload session refused");
                return Err(over);
            }
            self.sweep_uploads()?;
            swept = true;
        }
    }

    fn create_session(&self, repo: &RepoName, id: &UploadId, client: Option<IpAddr>) -> OciResult<()> {
        let be = self.store.backend();
        be.create_upload(id.as_str())?;
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let info_key = keys::upload_info(id.as_str());
        let info = serde_json::to_vec(&Info { repo: repo.as_str().to_owned(), started, client })
            .map_err(io::Error::other)
            .map_err(io_err("encode", &be.locate(&info_key)))?;
        self.store.write_atomic(&info_key, &info)?;
        Ok(())
    }

    /// Counts the sessions already stored (left by an earlier run) against the caps.
    pub(crate) fn count_open_uploads(&self) -> OciResult<()> {
        let be = self.store.backend();
        let mut t = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        for n in be.list_uploads()? {
            let Ok(id) = UploadId::parse(&n) else { continue };
            let client = be
                .get(&keys::upload_info(id.as_str()), u64::MAX - 1)
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice::<Info>(&b).ok())
                .and_then(|i| i.client);
            t.insert(id.as_str(), client);
        }
        Ok(())
    }

    /// Upload sessions open now (counted against `max_upload_sessions`).
    pub fn open_uploads(&self) -> usize {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).open.len()
    }

    /// How often a server should call [`Registry::sweep_uploads`]: a few
    /// times per `upload_ttl`, between 100 ms and a minute.
    pub fn sweep_interval(&self) -> Duration {
        (self.opts.upload_ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
    }

    /// Opens the data of a live session of `repo`, locked for this request.
    fn open_upload(&self, repo: &RepoName, id: &UploadId) -> OciResult<Box<dyn UploadData>> {
        let be = self.store.backend();
        let unknown = || OciError::UploadUnknown(id.to_string());
        let info: Info = match be.get(&keys::upload_info(id.as_str()), u64::MAX - 1)? {
            Some(b) => serde_json::from_slice(&b).map_err(|_| unknown())?,
            None => return Err(unknown()),
        };
        if info.repo != repo.as_str() {
            return Err(unknown());
        }
        let Some(mut f) = be.open_upload(id.as_str())? else { return Err(unknown()) };
        if self.expired(&*f) {
            self.remove_upload(id)?;
            return Err(unknown());
        }
        match f.try_lock() {
            Ok(true) => Ok(f),
            Ok(false) => Err(OciError::UploadInvalid {
                id: id.to_string(),
                reason: "another request is writing to this upload; retry when it has finished".into(),
            }),
            Err(e) => Err(io_err("lock", f.location())(e)),
        }
    }

    fn expired(&self, f: &dyn UploadData) -> bool {
        let age = f.modified().and_then(|t| SystemTime::now().duration_since(t).ok());
        age.is_some_and(|a| a > self.opts.upload_ttl)
    }

    fn remove_upload(&self, id: &UploadId) -> OciResult<()> {
        self.hashers.lock().unwrap_or_else(|p| p.into_inner()).remove(id.as_str());
        let res = self.store.backend().remove_upload(id.as_str());
        // Only a session that is gone stops counting against the caps.
        if res.is_ok() {
            self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(id.as_str());
        }
        Ok(res?)
    }

    /// Bytes received so far by a session.
    pub fn upload_size(&self, repo: &RepoName, id: &UploadId) -> OciResult<u64> {
        let f = self.open_upload(repo, id)?;
        f.len().map_err(io_err("stat", f.location()))
    }

    /// Hash state covering the first `len` bytes of the data: cached when
    /// this process wrote them, else rebuilt by reading the data.
    fn hasher_for(&self, id: &UploadId, f: &mut dyn UploadData, len: u64) -> OciResult<Hasher> {
        let cached = self.hashers.lock().unwrap_or_else(|p| p.into_inner()).remove(id.as_str());
        if let Some((n, h)) = cached
            && n == len
        {
            return Ok(h);
        }
        let mut h = Hasher::new();
        f.read_prefix(len, &mut |b| h.update(b)).map_err(io_err("read", f.location()))?;
        Ok(h)
    }

    /// Appends a chunk read from `body` (see [`Registry::begin_append`]).
    /// On any failure the session keeps its old length.
    pub fn append_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        start: Option<u64>,
        declared: Option<u64>,
        mut body: impl Read,
    ) -> OciResult<u64> {
        let mut a = self.begin_append(repo, id, start)?;
        let mut buf = vec![0u8; COPY_BUF];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(OciError::Body { received: a.received, reason: e.to_string() }),
            };
            a.write(&buf[..n])?;
        }
        a.finish(declared)
    }

    /// Opens a session to append one chunk: `start`, from `Content-Range`,
    /// must equal the bytes already received. The session stays locked
    /// until the [`Append`] is finished or dropped; dropping it unfinished
    /// (a cut or stalled body) truncates the data back to its old length.
    pub fn begin_append(&self, repo: &RepoName, id: &UploadId, start: Option<u64>) -> OciResult<Append> {
        let mut f = self.open_upload(repo, id)?;
        let p = f.location().to_owned();
        let size = f.len().map_err(io_err("stat", &p))?;
        if let Some(s) = start
            && s != size
        {
            return Err(OciError::UploadRange { id: id.to_string(), start: s, size });
        }
        let hasher = self.hasher_for(id, &mut *f, size)?;
        f.begin_append(size).map_err(io_err("seek", &p))?;
        Ok(Append {
            reg: self.clone(),
            id: id.clone(),
            data: Some(f),
            path: p,
            size,
            received: 0,
            hasher: Some(hasher),
        })
    }

    /// Finishes a session: the bytes must hash to `expected`. On success the
    /// blob is in the store and linked into `repo`; on a mismatch nothing is
    /// stored and the session is gone.
    pub fn finish_upload(&self, repo: &RepoName, id: &UploadId, expected: &Digest) -> OciResult<PutOutcome> {
        let mut f = self.open_upload(repo, id)?;
        let size = f.len().map_err(io_err("stat", f.location()))?;
        let actual = self.hasher_for(id, &mut *f, size)?.finish();
        if actual != *expected {
            drop(f);
            self.remove_upload(id)?;
            return Err(OciError::DigestMismatch { expected: *expected, actual });
        }
        self.store.check_writable()?;
        if let Some(t) = self.store.tier() {
            // Durable in the bucket before the blob is visible here, so a
            // client that sees it (HEAD) never skips a push the bucket lacks.
            t.upload_with(expected, &mut |feed| f.read_prefix(size, feed))?;
        }
        // The data may be older than the GC grace: keep GC out until it is linked.
        let _gc = self.store.gc_shared()?;
        let existed = f.commit(expected)?;
        self.store.cache_committed(*expected, size, crate::cache::Provenance::Local);
        drop(f);
        self.link_pushed_blob(repo, expected)?;
        self.remove_upload(id)?;
        Ok(PutOutcome { digest: *expected, size, existed })
    }

    /// Cancels a session and drops its bytes.
    pub fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> OciResult<()> {
        drop(self.open_upload(repo, id)?);
        self.remove_upload(id)
    }

    /// Removes sessions idle for longer than the upload TTL (and sessions
    /// left without data by a crash); returns how many were removed.
    pub fn sweep_uploads(&self) -> OciResult<usize> {
        let be = self.store.backend();
        let mut removed = 0;
        for n in be.list_uploads()? {
            let Ok(id) = UploadId::parse(&n) else { continue };
            let stale = match be.open_upload(id.as_str()) {
                // A session with a request writing to it is not idle.
                Ok(Some(mut f)) => self.expired(&*f) && f.try_lock().is_ok_and(|got| got),
                // A session killed between mkdir and its data file.
                _ => be
                    .upload_created(id.as_str())
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_none_or(|a| a > Duration::from_secs(60)),
            };
            if stale {
                self.remove_upload(&id)?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed expired upload sessions");
        }
        Ok(removed)
    }
}

/// One chunk being appended to an upload session (see
/// [`Registry::begin_append`]): feed it with [`Append::write`], then
/// [`Append::finish`]. Dropped unfinished, it rolls the session back.
pub struct Append {
    reg: Registry,
    id: UploadId,
    data: Option<Box<dyn UploadData>>,
    path: std::path::PathBuf,
    /// The session's length before this chunk.
    size: u64,
    received: u64,
    hasher: Option<Hasher>,
}

impl Append {
    /// The session's length before this chunk.
    pub fn session_size(&self) -> u64 {
        self.size
    }

    /// Bytes of this chunk written so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Appends `bytes` (already received: this only writes to disk).
    pub fn write(&mut self, bytes: &[u8]) -> OciResult<()> {
        let (Some(f), Some(h)) = (self.data.as_mut(), self.hasher.as_mut()) else {
            return Err(io_err("write", &self.path)(io::Error::other("upload chunk already finished")));
        };
        f.append(bytes).map_err(io_err("write", &self.path))?;
        h.update(bytes);
        self.received = self.received.checked_add(bytes.len() as u64).ok_or(OciError::SizeInvalid {
            what: "chunk (past 2^64-1 bytes)",
            declared: u64::MAX,
            received: self.received,
        })?;
        Ok(())
    }

    /// Ends the chunk: `declared` (its length, when known) must match what
    /// arrived. Returns the session's new length.
    pub fn finish(mut self, declared: Option<u64>) -> OciResult<u64> {
        let received = self.received;
        if let Some(f) = self.data.as_mut() {
            f.end_append().map_err(io_err("fsync", &self.path))?;
        }
        if let Some(d) = declared
            && d != received
        {
            return Err(OciError::SizeInvalid { what: "chunk", declared: d, received });
        }
        let total = self.size.checked_add(received).ok_or(OciError::SizeInvalid {
            what: "upload (past 2^64-1 bytes)",
            declared: self.size,
            received,
        })?;
        let h = self.hasher.take().unwrap_or_default();
        self.data = None;
        self.reg.hashers.lock().unwrap_or_else(|p| p.into_inner()).insert(self.id.to_string(), (total, h));
        Ok(total)
    }
}

impl Drop for Append {
    fn drop(&mut self) {
        let Some(mut f) = self.data.take() else { return };
        let _ = f.end_append();
        // Back to the last good length, so the client can resend the chunk.
        if let Err(e) = f.truncate(self.size) {
            tracing::warn!(upload = %self.id, error = %e, "could not roll an upload back to its last good length");
            // The cached hash no longer describes the data; it is rebuilt next time.
            self.reg.hashers.lock().unwrap_or_else(|p| p.into_inner()).remove(self.id.as_str());
        }
    }
}
