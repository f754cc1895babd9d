//! The bounded cache: the eviction order ([`policy::Recency`]), the
//! watermarks ([`policy::Watermarks`]), sizes as the config writes them
//! ([`size::Limit`]), and the store's live state ([`state`]): the order fed
//! by the store's commits, reads and removals, and eviction
//! ([`crate::Store::evict`], [`crate::Store::make_room`]).

pub mod policy;
pub mod size;
pub mod state;

pub use policy::{Provenance, Recency, Watermarks};
pub use size::{Limit, SizeError};
pub use state::{EvictReport, InUse, Reservation, Room};
