//! `cairn get DIGEST [-o FILE]`: stream a blob to stdout or, atomically, a file.

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use cairn_store::StoreError;

use crate::exit::{Exit, NOT_FOUND};

pub fn run(data_dir: &Path, digest: &str, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    let d = super::common::digest(digest)?;
    let store = super::common::open_ro(data_dir)?;
    let blob = match store.get(&d) {
        Err(StoreError::BlobNotFound(_)) => {
            let msg = format!("get {d}: no such blob in {} (`cairn ls` lists the stored ones)", data_dir.display());
            return Err(Exit { code: NOT_FOUND, msg }.into());
        }
        res => res.with_context(|| format!("get {d}"))?,
    };
    let (file, len) = blob.into_parts();
    // `Take<File>` keeps std's copy_file_range/splice fast path.
    let mut src = file.take(len);
    match output {
        None => {
            let mut out = io::stdout().lock();
            io::copy(&mut src, &mut out).with_context(|| format!("get {d}: writing to stdout"))?;
            out.flush().with_context(|| format!("get {d}: writing to stdout"))?;
        }
        Some(path) => {
            let ctx = || format!("get {d}: writing {}", path.display());
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let mut tmp = tempfile::Builder::new().prefix(".cairn-get-").tempfile_in(dir).with_context(ctx)?;
            io::copy(&mut src, tmp.as_file_mut()).with_context(ctx)?;
            tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).with_context(ctx)?;
            tmp.as_file().sync_all().with_context(ctx)?;
            tmp.persist(path).map_err(|e| e.error).with_context(ctx)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
