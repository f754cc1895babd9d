//! `cairn status`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use cairn_store::{Access, Store, StoreOptions};

pub fn run(data_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open_with(data_dir, StoreOptions { access: Access::ReadOnly, ..Default::default() })
        .with_context(|| format!("opening data dir {}", data_dir.display()))?;
    let mut blobs = 0u64;
    let mut bytes = 0u64;
    for d in store.list()? {
        let d = d?;
        blobs += 1;
        bytes += store.size(&d)?;
    }
    let manifests = store.list_manifests()?.len();
    if json {
        let v = serde_json::json!({"data_dir": data_dir, "blobs": blobs, "bytes": bytes, "manifests": manifests});
        println!("{v}");
    } else {
        println!("data dir:  {}\nblobs:     {blobs}\nbytes:     {bytes}\nmanifests: {manifests}", data_dir.display());
    }
    Ok(ExitCode::SUCCESS)
}
