//! `cairn get DIGEST [-o FILE]`: stream a blob to stdout or, atomically, a file.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
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
    let mut src = blob;
    match output {
        None => {
            let ctx = || format!("get {d}: {}", crate::exit::STDOUT);
            // std's kernel-copy path splices into a pipe 64 KiB at a time (half
            // cat's speed); large plain writes to the raw fd keep up with cat.
            let mut out = std::fs::File::from(io::stdout().as_fd().try_clone_to_owned().with_context(ctx)?);
            let (mut raw, region) = cairn_store::blob::aligned_buf(128 << 10);
            let buf = &mut raw[region];
            loop {
                let n = match src.read(buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e).with_context(|| format!("get {d}: reading the blob")),
                };
                out.write_all(&buf[..n]).with_context(ctx)?;
            }
        }
        Some(path) => {
            let ctx = || format!("get {d}: writing {}", path.display());
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let mut tmp = tempfile::Builder::new().prefix(".cairn-get-").tempfile_in(dir).with_context(ctx)?;
            // A file to a file: the kernel copies (copy_file_range).
            src.copy_to_file(tmp.as_file_mut()).with_context(ctx)?;
            tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).with_context(ctx)?;
            tmp.as_file().sync_all().with_context(ctx)?;
            tmp.persist(path).map_err(|e| e.error).with_context(ctx)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
