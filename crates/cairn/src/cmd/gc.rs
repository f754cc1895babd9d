//! `cairn gc [--dry-run] [--grace DURATION] [--bucket]`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use cairn_store::GcOptions;
use indicatif::HumanBytes;

use crate::exit::{BAD_INPUT, Exit};

pub fn run(data_dir: &Path, dry_run: bool, grace: &str, json: bool, bucket: bool) -> anyhow::Result<ExitCode> {
    let grace = humantime::parse_duration(grace).map_err(|e| Exit {
        code: BAD_INPUT,
        msg: format!("bad --grace {grace:?}: {e}; give a duration such as 30m, 1h or 2days"),
    })?;
    let (store, what) = if bucket {
        let s = super::common::open_bucket()?;
        let what = format!("bucket {}", s.root().display());
        (s, what)
    } else {
        (super::common::open_rw(data_dir)?, format!("data dir {}", data_dir.display()))
    };
    let r = store.gc(GcOptions { grace, dry_run }).with_context(|| format!("gc of {what}"))?;
    if json {
        let blobs: Vec<_> =
            r.blobs.iter().map(|(d, size)| serde_json::json!({"digest": d.oci(), "size": size})).collect();
        super::print_json(&serde_json::json!({
            "dry_run": dry_run,
            "deleted": blobs,
            "bytes": r.bytes,
            "referenced": r.referenced,
            "young": r.young,
            "grace_seconds": grace.as_secs(),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    for (d, size) in &r.blobs {
        outln!("{verb} {d}  {size}");
    }
    outln!(
        "gc: {verb} {} blobs, {} ({} bytes); kept {} referenced and {} younger than {}",
        r.blobs.len(),
        HumanBytes(r.bytes),
        r.bytes,
        r.referenced,
        r.young,
        humantime::format_duration(grace)
    );
    Ok(ExitCode::SUCCESS)
}
