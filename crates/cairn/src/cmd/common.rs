//! Helpers shared by the commands: opening the store, parsing arguments,
//! progress bars.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context;
use cairn_store::{Access, Digest, RefFile, Store, StoreOptions};
use indicatif::{ProgressBar, ProgressStyle};

/// Opens the data dir for writing (creating it), with a shared lock; in
/// front of the bucket when `$CAIRN_CONFIG`'s `storage` names one, so a
/// put is durable there when it returns.
pub fn open_rw(data_dir: &Path) -> anyhow::Result<Store> {
    crate::storage::open_store(data_dir, storage()?.as_ref(), StoreOptions::default())
        .with_context(|| format!("opening data dir {} for writing", data_dir.display()))
}

/// Opens the data dir for reading: no lock, nothing created.
pub fn open_ro(data_dir: &Path) -> anyhow::Result<Store> {
    let opts = StoreOptions { access: Access::ReadOnly, ..Default::default() };
    crate::storage::open_store(data_dir, storage()?.as_ref(), opts)
}

/// The durable tier's bucket alone, as a store (for `gc --bucket`).
pub fn open_bucket() -> anyhow::Result<Store> {
    let Some(s) = storage()? else {
        anyhow::bail!(
            "--bucket needs a storage section with backend: s3 in the config file $CAIRN_CONFIG names (it is unset or has none)"
        );
    };
    let b = cairn_store::backend::object::ObjectBackend::s3(&s.s3)
        .with_context(|| format!("storage: bucket {}", s.s3.bucket))?;
    Ok(Store::with_backend(Box::new(b), StoreOptions::default()))
}

/// The `storage` section of the config file `$CAIRN_CONFIG` names, if any.
fn storage() -> anyhow::Result<Option<crate::storage::StorageConfig>> {
    let Some(path) = std::env::var_os("CAIRN_CONFIG").filter(|p| !p.is_empty()) else { return Ok(None) };
    let path = std::path::PathBuf::from(path);
    let file = crate::config::read_file(&path).context("reading $CAIRN_CONFIG for its storage section")?;
    crate::storage::check(file.storage.as_ref()).with_context(|| format!("config file {}", path.display()))
}

/// Parses a digest argument (bare hex or `sha256:<hex>`).
pub fn digest(arg: &str) -> anyhow::Result<Digest> {
    Digest::parse(arg).context("bad digest argument")
}

/// Resolves a manifest name (newest version) or ref file.
pub fn resolve(store: &Store, name: &str) -> anyhow::Result<RefFile> {
    store.resolve(name).with_context(|| format!("looking up manifest {name:?}"))
}

/// A byte progress bar, only when stderr is a terminal.
pub fn bar(total: u64, what: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    b.set_style(style);
    b.set_message(what.to_owned());
    Some(b)
}

/// A progress callback for store functions, drawing on `bar` if any.
pub fn on_progress(bar: &Option<ProgressBar>) -> impl Fn(u64, u64) + Sync + '_ {
    move |done, total| {
        if let Some(b) = bar {
            b.set_length(total);
            b.set_position(done);
        }
    }
}
