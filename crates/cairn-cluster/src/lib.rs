//! Cairn's cluster layer: peers, health, discovery, and the fetch pipeline
//! local -> peers -> origin. It talks to peers only through a client trait
//! of its own, implemented by `cairn-http`.
//!
//! - [`peer`]: the [`PeerApi`] trait and the [`PeerSet`] (health, latency).
//! - [`health`]: the probe loop with backoff.
//! - [`origin`]: origins tried after the peers.
//! - [`fetch`]: the [`Cluster`] and its single-flight, verified pull-through;
//!   its sources share one trait (see the module's "Where a new source goes").
//! - [`push`]: client uploads of blobs and manifests.
//! - [`listing`]: manifest listings across the cluster and cluster stats.
//! - [`sync`]: pulling a peer's manifest and its missing blobs.
//! - [`replicate`]: `replicas: k` copies of pushed blobs, and their repair.
//! - [`upstream`]: an upstream OCI registry as an origin (token auth, tag cache).
//! - [`mirror`]: tag resolution for the `/v2` mirror: cache, peers, upstreams.
//! - [`rendezvous`]: the owner ranking of a digest over the healthy nodes.
//! - [`owner`]: one origin fetch per cluster (misses go to the digest's owner).
//! - [`net`]: HTTP client helpers shared by peers, origins and upstreams.
//! - [`discovery`]: static peers, mDNS (`_cairn._tcp.local.`) and a DNS name's addresses.
//! - [`advertise`]: the address a node announces.
//! - [`ratelimit`]: the token bucket of `egress_limit`.
//! - [`stream`]: a local blob file as a body (the GET path of `/v1` and `/v2`).
//! - [`swarm`]: the piece swarm's pure scheduling code (pieces, bitfields,
//!   piece hashes, scheduler, tracker); no I/O, shared with `bench/swarm-sim`.
//! - [`swarm_run`]: one swarm transfer driven over an I/O trait; the node's side
//!   (`swarm: true`) is [`fetch::swarm_node`].
//! - [`error`]: the cluster's error type, [`ClusterError`].
//!
//! Layers, lowest first; no module imports one above it: `error`, `net`,
//! `discovery`, `membership`, `rendezvous`, `swarm` (which imports nothing
//! of the crate); `peer`, `swarm_run`; `ratelimit`, `stream`,
//! `health`, `upstream`, `origin`; `fetch`; `replicate`; `listing`, `sync`; `push`, `mirror`.

pub mod error;
pub mod fetch;
pub mod health;
pub mod listing;
pub mod membership;
pub mod mirror;
pub mod net;
pub mod origin;
pub mod peer;
pub mod push;
pub mod replicate;
pub mod swarm;
pub mod swarm_run;
pub mod sync;
pub mod upstream;

pub use fetch::owner;
pub use fetch::swarm_node;

pub use error::{ClusterError, Result};
pub use fetch::{BlobBody, Cluster, ClusterConfig};
pub use listing::ClusterStats;
pub use origin::Origin;
pub use peer::{ByteStream, ManifestEntry, PeerApi, PeerHealth, PeerSet, PeerStatus, RemoteBlob};
pub use sync::{SyncEvent, SyncReport};
pub mod advertise;
pub mod discovery;
pub mod ratelimit;
pub mod rendezvous;
pub mod stream;
