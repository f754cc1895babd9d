//! `cairn has DIGEST`: exit 0 when present, 1 when not.

use std::path::Path;
use std::process::ExitCode;

use cairn_store::{Access, Store, StoreOptions};

pub fn run(data_dir: &Path, digest: &str) -> anyhow::Result<ExitCode> {
    let d = super::common::digest(digest)?;
    // A data dir that does not exist yet holds no blobs: that is a plain "no".
    let opts = StoreOptions { access: Access::ReadOnly, ..Default::default() };
    let present = Store::open_with(data_dir, opts).is_ok_and(|s| s.exists(&d));
    Ok(if present { ExitCode::SUCCESS } else { ExitCode::from(crate::exit::NOT_FOUND) })
}
