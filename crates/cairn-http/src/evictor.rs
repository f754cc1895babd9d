//! The bounded cache's evictor: a task that runs [`cairn_store::Store::evict`]
//! when a commit takes the store past `cache.max_bytes` (the store wakes
//! it) and on a short interval (for `cache.min_free`, which other writers on
//! the filesystem can pass). The store counts what it deletes (metrics read
//! it when scraped); the caller sees each run's report.

use std::sync::Arc;
use std::time::Duration;

use cairn_store::cache::{EvictReport, Watermarks};

use crate::state::AppState;

/// How often the evictor checks the limits without being woken.
pub const EVICT_INTERVAL: Duration = Duration::from_secs(10);

/// Starts the evictor of `state`'s store (whose cache must be on, see
/// [`cairn_store::Store::enable_cache`]); `None` when it is off. A failed
/// run is logged and the next one tried. `on_run` sees every run's report
/// (`serve` logs those that deleted something).
pub fn spawn_evictor(
    state: Arc<AppState>,
    every: Duration,
    on_run: impl Fn(&EvictReport) + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    let store = state.cluster.store().clone();
    let w: Watermarks = store.cache_watermarks()?;
    let wake = store.cache_wakeup()?;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tick.tick() => {}
            }
            match store.run(move |s| s.evict(w)).await {
                Ok(r) => on_run(&r),
                Err(e) => tracing::warn!(error = %e, "eviction failed; it is tried again on the next write or tick"),
            }
        }
    }))
}
