//! A discrete-event simulation of Cairn's piece swarm.
//!
//! It drives the real [`swarm::Scheduler`] and [`swarm::Tracker`]: the
//! module is compiled here from cairn-cluster's own source files, not
//! re-implemented. What is modelled is only what lies outside that code:
//! links, request latency, upload slots, failures. See [`sim`].

#[path = "../../../crates/cairn-cluster/src/swarm/mod.rs"]
pub mod swarm;

pub mod sim;
