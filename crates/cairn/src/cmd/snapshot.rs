//! `cairn snapshot DIR --name NAME`: store a tree; prints the new ref file.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use cairn_store::RefName;
use indicatif::HumanBytes;

pub fn run(data_dir: &Path, dir: &Path, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let name = RefName::parse(name).context("bad --name")?;
    let store = super::common::open_rw(data_dir)?;
    let bar = super::common::bar(0, "snapshot");
    let progress = super::common::on_progress(&bar);
    let res = store.snapshot(dir, &name, &progress);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let r = res.with_context(|| format!("snapshot {} as {name}", dir.display()))?;
    for p in &r.skipped {
        eprintln!("cairn: snapshot: skipped {} (sockets, FIFOs, devices and the data dir are not stored)", p.display());
    }
    if json {
        super::print_json(&serde_json::json!({
            "name": name.as_str(),
            "ref_file": r.ref_file.as_str(),
            "files": r.files,
            "bytes": r.bytes,
            "new_blobs": r.new_blobs,
            "symlinks": r.symlinks,
            "dirs": r.dirs,
            "skipped": r.skipped,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("{}", r.ref_file);
    eprintln!(
        "{name}: {} files ({}), {} new blobs, {} symlinks, {} directories",
        r.files,
        HumanBytes(r.bytes),
        r.new_blobs,
        r.symlinks,
        r.dirs
    );
    Ok(ExitCode::SUCCESS)
}
