//! The limits of a transfer: the source's rate, and the data dir's free space.

use std::time::Duration;

use cairn_store::Digest;
use cairn_store::cache::{Reservation, Room};

use super::{Inner, blocking};
use crate::error::{ClusterError, Result};

/// Watches a source's transfer rate: after its first byte, each
/// `window` of time spent waiting on it must bring `min` bytes per second.
/// Time spent on the disk or the callers is not the source's and is not
/// counted.
pub(crate) struct RateWatch {
    min: u64,
    window: Duration,
    started: bool,
    waited: Duration,
    bytes: u64,
}

impl RateWatch {
    pub(crate) fn new(min: u64, window: Duration) -> Self {
        RateWatch {
            min,
            window: window.max(Duration::from_millis(1)),
            started: false,
            waited: Duration::ZERO,
            bytes: 0,
        }
    }

    /// How long the next wait on the source may last: the idle timeout,
    /// cut at the end of the current window.
    pub(crate) fn budget(&self, idle: Duration) -> Duration {
        if self.min == 0 || !self.started {
            return idle;
        }
        idle.min(self.window.saturating_sub(self.waited).max(Duration::from_millis(1)))
    }

    /// Records `bytes` received after `waited`. Returns the bytes and time
    /// of a finished window that fell short of the minimum rate.
    pub(crate) fn record(&mut self, bytes: u64, waited: Duration) -> Option<(u64, Duration)> {
        if self.min == 0 {
            return None;
        }
        if !self.started {
            // The first byte's wait is the idle timeout's business.
            self.started = bytes > 0;
            return None;
        }
        self.waited = self.waited.saturating_add(waited);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.waited < self.window {
            return None;
        }
        let need = u128::from(self.min).saturating_mul(self.waited.as_millis());
        let short = u128::from(self.bytes).saturating_mul(1000) < need;
        let seen = (self.bytes, self.waited);
        self.waited = Duration::ZERO;
        self.bytes = 0;
        short.then_some(seen)
    }
}

/// True when `need` bytes fit in `free` while keeping `reserve` free.
pub(crate) fn room_for(need: u64, free: u64, reserve: u64) -> bool {
    free.checked_sub(reserve).is_some_and(|room| need <= room)
}

/// Refuses a blob of `size` bytes that would leave the data dir with less
/// than `min_free_space` free.
pub(crate) async fn check_free_space(inner: &Inner, d: Digest, size: u64) -> Result<()> {
    let reserve = inner.cfg.min_free_space;
    let store = inner.store.clone();
    let free = match blocking(move || store.free_space()).await? {
        // A backend without a local disk has no free space to keep.
        None => return Ok(()),
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            // Not knowing is no reason to refuse: the write reports a full disk itself.
            tracing::warn!(error = %e, "could not read the data dir's free space");
            return Ok(());
        }
    };
    if room_for(size, free, reserve) {
        Ok(())
    } else {
        Err(ClusterError::DiskFull { digest: d, need: size, free, reserve })
    }
}

/// Room under the cache's cap for one fetched blob: made on the blocking
/// pool while the blob's bytes arrive (eviction took a fifth of a 1 GiB
/// pull when done first), so the store may pass its cap by this one blob
/// meanwhile. The reservation is held until the blob is committed.
pub(crate) enum PendingRoom {
    /// Made (or no cache to make it in).
    Ready(Reservation),
    /// Being made.
    Making(tokio::task::JoinHandle<Result<Reservation>>),
}

impl PendingRoom {
    /// Waits for the room; an error when the blob cannot fit even after
    /// eviction ([`ClusterError::CacheFull`]).
    pub(crate) async fn ready(self) -> Result<Reservation> {
        match self {
            PendingRoom::Ready(r) => Ok(r),
            PendingRoom::Making(h) => h.await.map_err(|e| ClusterError::Task(e.to_string()))?,
        }
    }
}

/// Checks a fetched blob of `size` bytes can be stored: under the cache's
/// cap (eviction starts now and runs beside the transfer) and within the
/// disk's free space. A blob larger than the cap itself is refused at once.
pub(crate) async fn room_for_blob(inner: &Inner, d: Digest, size: u64) -> Result<PendingRoom> {
    let store = inner.store.clone();
    let Some(w) = store.cache_watermarks() else {
        check_free_space(inner, d, size).await?;
        return Ok(PendingRoom::Ready(Reservation::default()));
    };
    if size > w.max_bytes {
        let used = store.cache_used().unwrap_or(0);
        return Err(ClusterError::CacheFull { digest: d, need: size, used, max: w.max_bytes });
    }
    let (decided_tx, decided) = tokio::sync::oneshot::channel();
    let making = PendingRoom::Making(tokio::spawn(make_room(store, d, size, decided_tx)));
    // Whether it fits is known once the victims are picked; their deletes go on.
    if decided.await == Ok(false) {
        return making.ready().await.map(PendingRoom::Ready);
    }
    if check_free_space(inner, d, size).await.is_ok() {
        return Ok(making);
    }
    // Eviction may be what frees the disk: wait for it, then look again.
    let held = making.ready().await?;
    check_free_space(inner, d, size).await?;
    Ok(PendingRoom::Ready(held))
}

/// Makes room under the cache's cap (`cache.max_bytes`) for a fetched blob
/// of `size` bytes, evicting least recently used blobs; refuses it when it
/// cannot fit even then.
async fn make_room(
    store: cairn_store::Store,
    d: Digest,
    size: u64,
    decided: tokio::sync::oneshot::Sender<bool>,
) -> Result<Reservation> {
    let room = blocking(move || {
        store.make_room_then(size, |fits| {
            let _ = decided.send(fits);
        })
    })
    .await??;
    match room {
        Room::Fits(r, held) => {
            if !r.blobs.is_empty() {
                tracing::info!(digest = %d, blobs = r.blobs.len(), bytes = r.bytes, "evicted to make room for a fetched blob");
            }
            Ok(held)
        }
        Room::Full { used, max, .. } => Err(ClusterError::CacheFull { digest: d, need: size, used, max }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_check_keeps_the_reserve_and_never_overflows() {
        assert!(room_for(100, 1_000, 900));
        assert!(!room_for(101, 1_000, 900));
        assert!(!room_for(1, 100, 200), "less free than the reserve fits nothing");
        assert!(!room_for(u64::MAX, u64::MAX, 1));
        assert!(room_for(0, 0, 0));
        let t = tempfile::tempdir().unwrap();
        let free = cairn_store::Store::open(t.path()).unwrap().free_space().unwrap().unwrap();
        assert!(free > 0 && !room_for(free.saturating_add(1), free, 0), "a blob over the free space is refused");
    }

    #[test]
    fn rate_watch_gives_the_first_byte_grace_and_judges_each_full_window() {
        let ms = Duration::from_millis;
        let mut w = RateWatch::new(1000, ms(1000));
        assert_eq!(w.budget(ms(5000)), ms(5000), "the first byte waits the idle timeout");
        assert_eq!(w.record(1, ms(4000)), None, "a slow first byte is not judged by the rate");
        assert_eq!(w.budget(ms(5000)), ms(1000), "later waits end with the window");
        assert_eq!(w.record(600, ms(600)), None);
        assert_eq!(w.budget(ms(5000)), ms(400));
        assert_eq!(w.record(500, ms(400)), None, "1100 bytes in 1 s is fast enough");
        assert_eq!(w.record(10, ms(1000)), Some((10, ms(1000))), "10 bytes in 1 s is too slow");
        let mut off = RateWatch::new(0, ms(1000));
        off.record(1, ms(1));
        assert_eq!(off.record(0, ms(60_000)), None, "0 turns the check off");
    }
}
