//! `cairn verify [DIGEST...]`: re-hash blobs; exit 3 when any is corrupt.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use indicatif::HumanBytes;

use crate::exit::{CORRUPT, NOT_FOUND};

pub fn run(data_dir: &Path, digests: &[String], json: bool) -> anyhow::Result<ExitCode> {
    let only = digests.iter().map(|d| super::common::digest(d)).collect::<anyhow::Result<Vec<_>>>()?;
    let store = super::common::open_rw(data_dir)?;
    let bar = super::common::bar(0, "verify");
    let progress = super::common::on_progress(&bar);
    let res = store.verify(if only.is_empty() { None } else { Some(&only) }, &progress);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let r = res.with_context(|| format!("verifying blobs in data dir {}", data_dir.display()))?;
    for c in &r.corrupt {
        eprintln!(
            "cairn: corrupt blob {}: its bytes do not hash to its name; moved to {} so it is no longer served \
             (put the original file again to restore it)",
            c.digest,
            c.quarantined.display()
        );
    }
    for d in &r.missing {
        eprintln!("cairn: blob {d} not found in the store (list stored blobs with `cairn ls`)");
    }
    if json {
        let corrupt: Vec<_> = r
            .corrupt
            .iter()
            .map(|c| serde_json::json!({"digest": c.digest.oci(), "quarantined": c.quarantined}))
            .collect();
        let missing: Vec<_> = r.missing.iter().map(|d| d.oci()).collect();
        super::print_json(&serde_json::json!({
            "checked": r.checked,
            "bytes": r.bytes,
            "corrupt": corrupt,
            "missing": missing,
        }))?;
    } else {
        outln!(
            "verified {} blobs ({}): {} corrupt, {} missing",
            r.checked,
            HumanBytes(r.bytes),
            r.corrupt.len(),
            r.missing.len()
        );
    }
    Ok(if !r.corrupt.is_empty() {
        ExitCode::from(CORRUPT)
    } else if !r.missing.is_empty() {
        ExitCode::from(NOT_FOUND)
    } else {
        ExitCode::SUCCESS
    })
}
