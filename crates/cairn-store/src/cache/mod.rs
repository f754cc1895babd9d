//! The bounded cache's pieces that need no disk: the eviction order
//! ([`policy::Recency`]), the watermarks ([`policy::Watermarks`]) and sizes
//! as the config writes them ([`size::Limit`]). The node feeds the order
//! from the store's commits and reads, and deletes what it picks.

pub mod policy;
pub mod size;

pub use policy::{Provenance, Recency, Watermarks};
pub use size::{Limit, SizeError};
