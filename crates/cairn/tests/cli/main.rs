//! User-story tests of the `cairn` binary, one module per area.

mod blobs;
mod compat;
mod concurrency;
mod crash;
mod docs;
mod full_disk;
mod gc;
mod json;
mod manifests;
mod mirror;
mod trees;
mod util;
mod verify;
