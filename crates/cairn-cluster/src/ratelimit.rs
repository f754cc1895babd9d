//! A token bucket for a node's egress to its peers (`egress_limit`), so a
//! popular node is not saturated by the blobs it serves.
//!
//! Takers reserve their bytes at once and sleep off any debt, so concurrent
//! streams share the rate in arrival order and the total never exceeds
//! `burst + rate * elapsed`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use crate::peer::ByteStream;

/// A token bucket of bytes.
#[derive(Debug)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// May go negative: a debt the next takers wait out.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate` bytes per second (at least 1), with a burst of a tenth of a
    /// second's worth, at least 64 KiB so one read chunk fits.
    pub fn new(rate: u64) -> Self {
        let rate = rate.max(1);
        Self::with_burst(rate, (rate / 10).max(64 << 10))
    }

    /// `rate` bytes per second, holding at most `burst` unused bytes.
    pub fn with_burst(rate: u64, burst: u64) -> Self {
        let rate = rate.max(1);
        TokenBucket { rate, burst, state: Mutex::new(State { tokens: burst as f64, last: Instant::now() }) }
    }

    /// The rate, bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Reserves `n` bytes and returns how long the caller must wait before sending them.
    fn reserve(&self, n: u64) -> Duration {
        // Plain numbers inside; a panic elsewhere cannot leave them invalid.
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.saturating_duration_since(s.last).as_secs_f64() * self.rate as f64;
        s.tokens = (s.tokens + refill).min(self.burst as f64);
        s.last = now;
        s.tokens -= n as f64;
        if s.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-s.tokens / self.rate as f64) }
    }

    /// Waits until `n` more bytes may be sent.
    pub async fn take(&self, n: u64) {
        let wait = self.reserve(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// `stream`, with each chunk let through only when `bucket` allows it.
pub fn limit(stream: ByteStream, bucket: Arc<TokenBucket>) -> ByteStream {
    Box::pin(stream.then(move |item| {
        let bucket = Arc::clone(&bucket);
        async move {
            if let Ok(b) = &item {
                bucket.take(b.len() as u64).await;
            }
            item
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test(start_paused = true)]
    async fn takes_beyond_the_burst_wait_for_the_rate() {
        let b = TokenBucket::with_burst(1 << 20, 1 << 20);
        let start = Instant::now();
        for _ in 0..10 {
            b.take(1 << 20).await;
        }
        // The first MiB is the burst; nine more at 1 MiB/s.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(8990) && took <= Duration::from_millis(9100), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_refills_only_up_to_its_burst() {
        let b = TokenBucket::with_burst(1000, 500);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        b.take(500).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        b.take(1000).await;
        assert!(start.elapsed() >= Duration::from_millis(999), "{:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_takers_share_the_rate() {
        let b = Arc::new(TokenBucket::with_burst(1 << 20, 64 << 10));
        let start = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let b = Arc::clone(&b);
                tokio::spawn(async move {
                    for _ in 0..16 {
                        b.take(64 << 10).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // 4 MiB in all at 1 MiB/s, less the 64 KiB burst.
        let took = start.elapsed().as_secs_f64();
        assert!((3.9..4.1).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_limited_stream_yields_every_chunk_at_the_rate() {
        let chunks: Vec<crate::Result<Bytes>> = (0..8).map(|i| Ok(Bytes::from(vec![i as u8; 100_000]))).collect();
        let s: ByteStream = Box::pin(futures_util::stream::iter(chunks));
        let start = Instant::now();
        let out: Vec<Bytes> =
            limit(s, Arc::new(TokenBucket::with_burst(200_000, 100_000))).map(|c| c.unwrap()).collect().await;
        assert_eq!(out.len(), 8);
        assert!(out.iter().enumerate().all(|(i, c)| c.len() == 100_000 && c[0] == i as u8));
        let took = start.elapsed().as_secs_f64();
        assert!((3.4..3.6).contains(&took), "700 KB over the burst at 200 KB/s: {took}");
    }
}
