//! The status page for people (`GET /`) and the JSON it reads besides
//! `/v1/health` and `/v1/peers` (`GET /v1/status`). The page is one file
//! with its script and style inline: no external assets, no build step, so
//! it works offline and from any node.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;
use crate::v1::wire::NodeStatus;

const PAGE: &str = include_str!("status.html");

/// `GET /` and `GET /v1/status`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new().route("/", get(page)).route("/v1/status", get(status)).with_state(state)
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The page runs only its own inline script and talks only to this node.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}

async fn status(State(st): State<Arc<AppState>>) -> Json<NodeStatus> {
    Json(node_status(&st))
}

/// The node's status now: counters it keeps and one `statvfs`.
pub fn node_status(st: &AppState) -> NodeStatus {
    let m = &st.metrics;
    let disk = crate::metrics::disk(st.cluster.store().root()).ok();
    let (hits, misses) = m.hits_and_misses();
    NodeStatus {
        node_id: st.info.node_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: m.uptime().as_secs(),
        disk_size_bytes: disk.map(|d| d.0),
        disk_used_bytes: disk.map(|d| d.1),
        disk_free_bytes: disk.map(|d| d.2),
        cache_max_bytes: st.cluster.store().cache_watermarks().map(|w| w.max_bytes).filter(|m| *m != u64::MAX),
        hits,
        misses,
        origin_egress_bytes: m.origin_egress(),
        transfers_in_flight: st.cluster.transfers_in_flight() as u64,
        recent_transfers: m.recent(),
        cache_used_bytes: st.cluster.store().cache_used(),
    }
}
