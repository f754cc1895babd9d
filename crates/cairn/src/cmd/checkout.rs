//! `cairn checkout NAME DIR [--link] [--preserve-special-bits]`: rebuild a manifest's tree.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use cairn_store::CheckoutOptions;
use indicatif::HumanBytes;

pub fn run(data_dir: &Path, name: &str, dir: &Path, opts: CheckoutOptions, json: bool) -> anyhow::Result<ExitCode> {
    let store = super::common::open_ro(data_dir)?;
    let rf = super::common::resolve(&store, name)?;
    let bar = super::common::bar(0, "checkout");
    let progress = super::common::on_progress(&bar);
    let res = store.checkout(&rf, dir, opts, &progress);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let r = res.with_context(|| format!("checkout {rf} into {}", dir.display()))?;
    if json {
        super::print_json(&serde_json::json!({
            "ref_file": rf.as_str(),
            "dir": dir,
            "files": r.files,
            "bytes": r.bytes,
            "linked": r.linked,
            "cloned": r.cloned,
            "copied": r.copied,
            "symlinks": r.symlinks,
            "dirs": r.dirs,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{rf} -> {}: {} files ({}; {} linked, {} cloned, {} copied), {} symlinks, {} directories",
        dir.display(),
        r.files,
        HumanBytes(r.bytes),
        r.linked,
        r.cloned,
        r.copied,
        r.symlinks,
        r.dirs
    );
    Ok(ExitCode::SUCCESS)
}
