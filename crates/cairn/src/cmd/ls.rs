//! `cairn ls [--json]`: every blob and its size, streamed (unsorted).

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use cairn_store::StoreError;

pub fn run(data_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let store = super::common::open_ro(data_dir)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let w = crate::exit::STDOUT;
    if json {
        out.write_all(b"[").context(w)?;
    }
    let mut first = true;
    for d in store.list().context("listing blobs")? {
        let d = d.context("listing blobs")?;
        let size = match store.size(&d) {
            Ok(n) => n,
            // Removed by a GC since it was listed.
            Err(StoreError::BlobNotFound(_)) => continue,
            Err(e) => return Err(e).context("listing blobs"),
        };
        if json {
            let sep = if first { "" } else { "," };
            write!(out, "{sep}\n  {{\"digest\": \"{d}\", \"size\": {size}}}").context(w)?;
        } else {
            writeln!(out, "{d}  {size}").context(w)?;
        }
        first = false;
    }
    if json {
        out.write_all(if first { b"]\n" } else { b"\n]\n" }).context(w)?;
    }
    out.flush().context(w)?;
    Ok(ExitCode::SUCCESS)
}
