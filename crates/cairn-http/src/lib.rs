//! Cairn's HTTP layer: axum routers for the /v1 node API and the /v2 OCI
//! registry, and the typed client peers use to call /v1.
//!
//! - [`v1`]: the node API routes; [`v1::wire`] holds every /v1 body,
//!   query and header, written by the handlers and read by [`client`];
//!   [`v1::oci`] is `/v1/oci/tag`, peers' tag lookups for the mirror.
//! - [`state`]: what handlers reach ([`AppState`], [`v2::V2State`]) and how
//!   each is built (a node's `/v2` reads go through the mirror).
//! - [`server`]: [`server::app`] (merges every router), serving, the store probe.
//! - [`client`]: the typed `/v1` client; implements the cluster's `PeerApi`.
//! - [`error`]: the one mapping from errors to HTTP status + JSON body for
//!   /v1; `v2/errors.rs` is its /v2 twin and maps a cluster error the same way.
//! - [`v2`]: the OCI distribution API (registry) and its error codes. Its
//!   read handlers call one interface, [`v2::store::RegistryStore`], and do
//!   not know whether a repository is local or mirrored.
//! - [`mirror`]: the `/v2` mirror: [`mirror::Mirrored`] wraps the local
//!   registry's reads ([`v2::store::LocalRegistry`]) and falls back to a
//!   [`mirror::RemoteSource`] on a miss ([`mirror::ClusterRemote`]: the
//!   cluster pipeline). Another kind of remote (e.g. a test fake) is a new
//!   `RemoteSource`; another kind of read wrapper is a new `RegistryStore`.
//! - [`status`]: the status page for people (`GET /`) and `GET /v1/status`.
//! - [`range`]: byte ranges (`Range`, `Content-Range`, upload chunks) for both APIs.
//! - [`auth`]: who may do what: request kinds, credentials, rights.
//! - [`conn`]: the connection layer (caps, header and idle timeouts, client address).
//! - [`tls`]: HTTPS for the listeners and the peer client, reloadable certificates.
//! - [`body`]: request bodies, read asynchronously and written in batches.
//! - [`redact`]: what of an error remote callers may see.
//! - [`metrics`]: `GET /metrics` (Prometheus), the pipeline's recorder and the request counting layer.
//! - [`evictor`]: the bounded cache's evictor task (woken by writes, and on a timer).

pub mod auth;
pub mod body;
pub mod client;
pub mod conn;
pub mod error;
pub mod evictor;
pub mod metrics;
pub mod mirror;
pub mod range;
pub mod redact;
pub mod server;
pub mod state;
pub mod status;
pub mod tls;
pub mod v1;
pub mod v2;

pub use client::Client;
pub use conn::{ServeLimits, serve_tls_with, serve_with};
pub use error::ApiError;
pub use server::{app, serve};
pub use state::AppState;
