//! Async access for async callers: [`Store::run`] is the one place a store
//! call leaves an async task for the blocking pool, and
//! [`Store::read_stream`] streams a range of a blob.
//!
//! A stream over a file reads [`READ_CHUNK`] bytes at a time into
//! page-aligned buffers, on the blocking pool, one read ahead of the
//! consumer so the disk read of the next chunk overlaps the socket write of
//! this one. No thread is held between reads, so a slow client costs no
//! thread. Buffers come back to one pool shared by every stream when the
//! consumer has written them: zeroing a fresh megabyte per chunk cost about
//! a fifth of a server's CPU per byte served, and many short downloads that
//! each allocated their own buffers on the blocking pool (freed on another
//! thread) left the allocator holding about a gigabyte. A range already in
//! memory (the in-memory backend) is handed out in slices, without a copy.

use std::io::{self, Read};
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::Stream;
use tokio::task::JoinHandle;

use crate::blob::BlobReader;
use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::oci::Registry;
use crate::store::Store;

/// Bytes per read of a stream.
pub const READ_CHUNK: usize = 1 << 20;

/// Free [`READ_CHUNK`] buffers kept for all streams together: enough for
/// 16 downloads at full speed (one chunk being written, one read ahead),
/// and the most memory idle buffers hold.
const KEEP_BUFFERS: usize = 32;

/// A blob's bytes as a stream; a read error (or a blob shorter than
/// promised) ends it with an error.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// Runs `f` on the blocking pool: the workspace's one hand-off of disk
/// work, so every caller gets the same answer for a task that panicked or
/// was cancelled, [`StoreError::Task`] (an internal error, never bad input).
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Task(e.to_string()))
}

impl Store {
    /// Runs `f` on the blocking pool. A panicked or cancelled task is
    /// [`StoreError::Task`] (an internal error).
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Store) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let s = self.clone();
        blocking(move || f(&s)).await?
    }

    /// Streams `len` bytes (or the rest) of blob `d` from `offset`.
    /// Returns the whole blob's size, the bytes the stream yields, and the stream.
    pub async fn read_stream(&self, d: Digest, offset: u64, len: Option<u64>) -> Result<(u64, u64, BlobStream)> {
        let r = self.run(move |s| s.get_range(&d, offset, len)).await?;
        Ok((r.blob_size(), r.remaining(), blob_stream(r)))
    }
}

impl Registry {
    /// Runs `f` on the blocking pool, like [`Store::run`].
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Registry) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let r = self.clone();
        blocking(move || f(&r)).await?
    }
}

/// Streams the bytes `blob` has left (see the module docs). A blob that
/// ends early ends the stream with an error naming it, so a client never
/// takes a short body for a whole one.
pub fn blob_stream(blob: BlobReader) -> BlobStream {
    stream_from(blob, shared_pool())
}

fn stream_from(mut blob: BlobReader, pool: Arc<Pool>) -> BlobStream {
    if let Some(b) = blob.take_shared() {
        let chunks: Vec<Result<Bytes>> =
            (0..b.len()).step_by(READ_CHUNK).map(|i| Ok(b.slice(i..(i + READ_CHUNK).min(b.len())))).collect();
        // The stream keeps the blob from eviction until it is dropped.
        let hold = blob.hold.take();
        return Box::pin(futures_util::StreamExt::map(futures_util::stream::iter(chunks), move |c| {
            let _ = &hold;
            c
        }));
    }
    let (remaining, path) = (blob.remaining(), blob.location().to_owned());
    let mut s = FileStream { blob: Some(blob), left: remaining, reading: None, pool, path };
    s.start_read();
    Box::pin(s)
}

fn shared_pool() -> Arc<Pool> {
    static POOL: std::sync::OnceLock<Arc<Pool>> = std::sync::OnceLock::new();
    Arc::clone(POOL.get_or_init(Arc::default))
}

/// Buffers returned by the chunks streams produced.
#[derive(Default)]
struct Pool {
    free: Mutex<Vec<AlignedBuf>>,
}

impl Pool {
    /// A free buffer whose region holds `want` bytes, or a fresh one (of
    /// [`READ_CHUNK`] bytes when it is that long, so it can be kept).
    fn take(&self, want: usize) -> AlignedBuf {
        lock(&self.free).pop().unwrap_or_else(|| {
            let (raw, region) = crate::blob::aligned_buf(want.max(1));
            AlignedBuf { raw, region }
        })
    }

    /// Keeps a whole-chunk buffer while the pool has room; drops the rest.
    fn give_back(&self, buf: AlignedBuf) {
        if buf.region.len() < READ_CHUNK {
            return;
        }
        let mut free = lock(&self.free);
        if free.len() < KEEP_BUFFERS {
            free.push(buf);
        }
    }
}

/// A buffer and its page-aligned region.
struct AlignedBuf {
    raw: Vec<u8>,
    region: Range<usize>,
}

/// The bytes of one read; its buffer goes back to the pool when dropped.
struct Chunk {
    buf: AlignedBuf,
    len: usize,
    pool: Arc<Pool>,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        let start = self.buf.region.start;
        &self.buf.raw[start..start + self.len]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let buf = std::mem::replace(&mut self.buf, AlignedBuf { raw: Vec::new(), region: 0..0 });
        self.pool.give_back(buf);
    }
}

type ReadResult = io::Result<(BlobReader, Bytes)>;

struct FileStream {
    /// The blob, when no read holds it.
    blob: Option<BlobReader>,
    /// Bytes not yet asked of a read.
    left: u64,
    reading: Option<JoinHandle<ReadResult>>,
    pool: Arc<Pool>,
    path: PathBuf,
}

impl FileStream {
    /// Starts reading the next chunk on the blocking pool, if any is left.
    fn start_read(&mut self) {
        if self.left == 0 || self.reading.is_some() {
            return;
        }
        let Some(blob) = self.blob.take() else { return };
        let want = self.left.min(READ_CHUNK as u64) as usize;
        self.left -= want as u64;
        let pool = Arc::clone(&self.pool);
        // Taken here, on the async side where the chunks are also dropped:
        // memory allocated on a blocking thread and freed on another is
        // slow to come back to the allocator.
        let buf = pool.take(want);
        self.reading = Some(tokio::task::spawn_blocking(move || read_chunk(blob, want, buf, pool)));
    }
}

/// Reads exactly `want` bytes into `buf` (from `pool`); fewer is an error.
fn read_chunk(mut blob: BlobReader, want: usize, mut buf: AlignedBuf, pool: Arc<Pool>) -> ReadResult {
    let start = buf.region.start;
    let dst = &mut buf.raw[start..start + want];
    let mut got = 0;
    while got < want {
        match blob.read(&mut dst[got..]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob file shrank while being served")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((blob, Bytes::from_owner(Chunk { buf, len: want, pool })))
}

impl Stream for FileStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(reading) = self.reading.as_mut() else { return Poll::Ready(None) };
        let res = ready!(Pin::new(reading).poll(cx));
        self.reading = None;
        match res {
            Ok(Ok((blob, chunk))) => {
                self.blob = Some(blob);
                // Read ahead while the caller writes this chunk.
                self.start_read();
                Poll::Ready(Some(Ok(chunk)))
            }
            Ok(Err(source)) => {
                self.left = 0;
                Poll::Ready(Some(Err(StoreError::Io { op: "read", path: self.path.clone(), source })))
            }
            Err(e) => {
                self.left = 0;
                Poll::Ready(Some(Err(StoreError::Task(e.to_string()))))
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data is a list of buffers, valid after a panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Write;

    use futures_util::StreamExt;

    use super::*;

    fn seeded(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn temp_file(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(bytes).unwrap();
        let f = File::open(t.path()).unwrap();
        (t, f)
    }

    /// A reader promising `remaining` bytes of `f` from `offset`.
    fn blob(t: &tempfile::NamedTempFile, mut f: File, offset: u64, remaining: u64) -> BlobReader {
        use std::io::{Seek, SeekFrom};
        f.seek(SeekFrom::Start(offset)).unwrap();
        let size = f.metadata().unwrap().len();
        BlobReader::from_file(f, t.path().into(), size, offset, remaining)
    }

    async fn collect(mut s: BlobStream) -> (Vec<u8>, Vec<usize>, Option<StoreError>) {
        let (mut out, mut sizes) = (Vec::new(), Vec::new());
        while let Some(c) = s.next().await {
            match c {
                Ok(c) => {
                    sizes.push(c.len());
                    out.extend_from_slice(&c);
                }
                Err(e) => return (out, sizes, Some(e)),
            }
        }
        (out, sizes, None)
    }

    #[tokio::test]
    async fn file_stream_yields_every_byte_in_read_chunk_pieces_when_the_file_spans_several_chunks() {
        let data = seeded(2 * READ_CHUNK + 12345);
        let (t, f) = temp_file(&data);
        let (out, sizes, err) = collect(blob_stream(blob(&t, f, 0, data.len() as u64))).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(out, data);
        assert_eq!(sizes, vec![READ_CHUNK, READ_CHUNK, 12345]);
    }

    #[tokio::test]
    async fn file_stream_yields_only_the_range_when_started_at_an_offset_with_fewer_bytes_left() {
        let data = seeded(READ_CHUNK + 5000);
        let (t, f) = temp_file(&data);
        let (out, _, err) = collect(blob_stream(blob(&t, f, 777, READ_CHUNK as u64))).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(out, &data[777..777 + READ_CHUNK]);
    }

    #[tokio::test]
    async fn file_stream_ends_with_an_error_naming_the_file_when_it_is_shorter_than_promised() {
        let data = seeded(READ_CHUNK + 10);
        let (t, f) = temp_file(&data);
        let (out, _, err) = collect(blob_stream(blob(&t, f, 0, data.len() as u64 + 100))).await;
        let err = err.expect("a short file must end the stream with an error");
        assert!(err.to_string().contains(&t.path().display().to_string()), "{err}");
        assert!(out.len() < data.len() + 100);
        assert_eq!(out, &data[..out.len()]);
    }

    #[tokio::test]
    async fn file_stream_of_zero_bytes_ends_at_once() {
        let (t, f) = temp_file(b"abc");
        let (out, sizes, err) = collect(blob_stream(blob(&t, f, 0, 0))).await;
        assert!(out.is_empty() && sizes.is_empty() && err.is_none());
    }

    #[tokio::test]
    async fn short_downloads_reuse_the_shared_buffers_and_idle_ones_stay_bounded() {
        let pool = Arc::new(Pool::default());
        let data = seeded(READ_CHUNK + 100);
        let (t, _) = temp_file(&data);
        // One download: its buffers go back to the pool when it ends.
        let (out, _, err) =
            collect(stream_from(blob(&t, File::open(t.path()).unwrap(), 0, data.len() as u64), Arc::clone(&pool)))
                .await;
        assert!(err.is_none() && out == data);
        let kept: Vec<usize> = lock(&pool.free).iter().map(|b| b.raw[b.region.clone()].as_ptr() as usize).collect();
        assert_eq!(kept.len(), 1, "the whole-chunk buffer is kept, the short one is not");
        // The next download reads into the kept buffer instead of a fresh one.
        let mut s = stream_from(blob(&t, File::open(t.path()).unwrap(), 0, data.len() as u64), Arc::clone(&pool));
        let first = s.next().await.unwrap().unwrap();
        assert_eq!(first.as_ptr() as usize, kept[0], "a kept buffer is reused across downloads");
        drop((first, s));
        // Many downloads at once: what stays idle afterwards is bounded.
        let streams: Vec<BlobStream> = (0..3 * KEEP_BUFFERS)
            .map(|_| stream_from(blob(&t, File::open(t.path()).unwrap(), 0, data.len() as u64), Arc::clone(&pool)))
            .collect();
        for (out, _, err) in futures_util::future::join_all(streams.into_iter().map(collect)).await {
            assert!(err.is_none() && out == data);
        }
        let idle = lock(&pool.free).len();
        assert!(idle <= KEEP_BUFFERS, "{idle} idle buffers kept, at most {KEEP_BUFFERS}");
    }

    #[tokio::test]
    async fn chunks_hand_their_buffer_back_to_the_pool_when_dropped() {
        let data = seeded(4 * READ_CHUNK);
        let (t, f) = temp_file(&data);
        let mut s = stream_from(blob(&t, f, 0, data.len() as u64), Arc::default());
        let first = s.next().await.unwrap().unwrap();
        let first_ptr = first.as_ptr();
        drop(first);
        // The read ahead may have started before the drop; the read after it did not.
        let second = s.next().await.unwrap().unwrap();
        let third = s.next().await.unwrap().unwrap();
        assert!(second.as_ptr() == first_ptr || third.as_ptr() == first_ptr, "no buffer was reused");
        assert_eq!(&second[..], &data[READ_CHUNK..2 * READ_CHUNK]);
        assert_eq!(&third[..], &data[2 * READ_CHUNK..3 * READ_CHUNK]);
        assert_eq!(first_ptr as usize % 4096, 0, "chunks are page-aligned");
    }

    #[tokio::test]
    async fn a_range_in_memory_streams_as_slices_of_the_stored_bytes_in_read_chunk_pieces() {
        let s = Store::in_memory();
        let data = seeded(2 * READ_CHUNK + 10);
        let d = s.put_reader(&data[..], None).unwrap().digest;
        let (size, len, st) = s.read_stream(d, 5, Some(READ_CHUNK as u64 + 2)).await.unwrap();
        assert_eq!((size, len), (data.len() as u64, READ_CHUNK as u64 + 2));
        let (out, sizes, err) = collect(st).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(out, &data[5..READ_CHUNK + 7]);
        assert_eq!(sizes, vec![READ_CHUNK, 2]);
        // Both reads hand out the same stored bytes: no copy per download.
        let first = |st: BlobStream| async { futures_util::StreamExt::into_future(st).await.0.unwrap().unwrap() };
        let a = first(s.read_stream(d, 0, None).await.unwrap().2).await;
        let b = first(s.read_stream(d, 0, None).await.unwrap().2).await;
        assert_eq!(a.as_ptr(), b.as_ptr());
    }

    #[tokio::test]
    async fn read_stream_of_a_stored_blob_yields_the_range_on_both_backends() {
        let t = tempfile::tempdir().unwrap();
        for s in [Store::open(t.path()).unwrap(), Store::in_memory()] {
            let data = seeded(READ_CHUNK + 300);
            let d = s.put_reader(&data[..], None).unwrap().digest;
            let (size, len, st) = s.read_stream(d, 100, None).await.unwrap();
            assert_eq!((size, len), (data.len() as u64, data.len() as u64 - 100));
            let (out, _, err) = collect(st).await;
            assert!(err.is_none(), "{err:?}");
            assert_eq!(out, &data[100..]);
            let absent = s.read_stream(Digest::of(b"absent"), 0, None).await;
            assert!(matches!(absent, Err(StoreError::BlobNotFound(_))));
        }
    }

    #[tokio::test]
    async fn a_panicking_store_task_is_an_internal_error_never_bad_input() {
        let s = Store::in_memory();
        let e = s.run(|_| -> Result<()> { panic!("boom") }).await.unwrap_err();
        assert!(matches!(e, StoreError::Task(_)), "{e:?}");
        assert!(!e.is_bad_input() && !e.is_not_found(), "{e:?}");
        let reg = Registry::new(s, crate::oci::RegistryOptions::default()).unwrap();
        let e = reg.run(|_| -> Result<(), crate::oci::OciError> { panic!("boom") }).await.unwrap_err();
        assert!(matches!(e, crate::oci::OciError::Store(StoreError::Task(_))), "{e:?}");
    }
}
