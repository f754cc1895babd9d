//! Cairn's HTTP layer: axum routers for the /v1 node API and the /v2 OCI
//! registry, and the typed client peers use to call /v1.
//!
//! - [`v1`]: the node API routes and wire types.
//! - [`server`]: shared state, [`server::app`] (merges every router), serving.
//! - [`client`]: the typed `/v1` client; implements the cluster's `PeerApi`.
//! - [`error`]: the one mapping from errors to HTTP status + JSON body.
//! - [`v2`]: the OCI distribution API (registry) and its error codes.
//! - [`mirror`]: the `/v2` mirror's HTTP side (peer tag lookups).
//! - [`auth`]: who may do what: request kinds, credentials, rights.
//! - [`conn`]: the connection layer (caps, header and idle timeouts, client address).
//! - [`tls`]: HTTPS for the listeners and the peer client, reloadable certificates.
//! - [`body`]: request bodies, read asynchronously and written in batches.

pub mod auth;
pub mod body;
pub mod client;
pub mod conn;
pub mod error;
pub mod mirror;
pub mod range;
pub mod redact;
pub mod server;
pub mod state;
pub mod tls;
pub mod v1;
pub mod v2;

pub use client::Client;
pub use conn::{ServeLimits, serve_tls_with, serve_with};
pub use error::ApiError;
pub use server::{app, serve};
pub use state::AppState;
