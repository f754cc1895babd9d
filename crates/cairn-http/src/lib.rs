//! Cairn's HTTP layer: axum routers for the /v1 node API and the /v2 OCI
//! registry, and the typed client peers use to call /v1.
pub mod v2;
