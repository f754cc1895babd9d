//! Test helpers for Cairn's network layers (dev-only).
//!
//! Every server here runs on its own Tokio runtime, bound to `127.0.0.1:0`
//! before it is spawned, so it is ready when the constructor returns.
//! Stopping a server shuts its runtime down: listeners and every open
//! connection die at once, like a killed process.
//!
//! - [`TestNode`] / [`start_cluster`]: real Cairn nodes, each with its own
//!   temp data dir, wired as peers.
//! - [`TestOrigin`]: an HTTP origin that counts its requests.
//! - [`HostilePeer`]: a peer that lies (wrong bytes, truncation, stalls, death
//!   mid-stream, malformed JSON, unsafe manifests).
//! - [`registry`]: a real upstream registry, a token server, an image
//!   pusher, and the skopeo helpers.
//! - [`netns`]: network namespaces for mDNS tests.
//! - [`containerd`]: a real containerd and `ctr`, every path in a temp dir.
//! - [`s3`]: a real S3 server (moto) with a bucket, and boto3 to check it.
//! - [`tls`]: a test CA and the certificates it signs, as PEM files.
//! - [`BrokenRegistry`]: an upstream registry that tampers, is down or hangs.
//! - [`paced`]: an origin with a first-byte delay and shared bandwidth.
//! - [`NodeProcess`], [`free_port`]: a `cairn serve` process killed on drop.
//! - [`blob`], [`read_all`], [`dead_addr`]: seeded bytes, whole bodies, a
//!   refused address.

mod broken;
pub mod containerd;
mod data;
mod disk;
mod hostile;
pub mod netns;
mod node;
mod origin;
pub mod paced;
mod process;
pub mod registry;
pub mod s3;
pub mod s3fault;
mod server;
pub mod tls;

pub use broken::{Breakage, BrokenRegistry};
pub use data::{blob, dead_addr, free_port, promtool_check, read_all, ref_file_for, wait_for};
pub use disk::TinyDisk;
pub use hostile::{HUGE_LENGTH, HostilePeer, Hostility, SECRET};
pub use node::{NodeSpec, TestNode, start_cluster};
pub use origin::{OriginMode, TestOrigin};
pub use process::{NodeProcess, health_ok};
pub use server::{Counters, Server};
