//! `cairn put FILE...|-`: store files, print `<hex>  <file>` like sha256sum.

use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use cairn_store::{Digest, PutOutcome, Store};

use crate::exit;

/// Files smaller than this get no progress bar.
const BAR_MIN: u64 = 64 << 20;

pub fn run(data_dir: &Path, files: &[std::path::PathBuf], json: bool) -> anyhow::Result<ExitCode> {
    let store = super::common::open_rw(data_dir)?;
    let mut out = io::stdout().lock();
    let mut code = 0u8;
    let mut stored = Vec::new();
    // Like sha256sum: one bad file does not stop the others; the exit code
    // is the worst failure's.
    for f in files {
        match put_one(&store, f) {
            Ok(o) if json => stored.push(serde_json::json!({
                "file": f.to_string_lossy(),
                "digest": o.digest.oci(),
                "size": o.size,
                "existed": o.existed,
            })),
            Ok(o) => {
                out.write_all(&line(&o.digest, f.as_os_str().as_bytes())).context(crate::exit::STDOUT)?;
                out.flush().context(crate::exit::STDOUT)?;
            }
            Err(e) => {
                exit::print_error(&e);
                code = code.max(exit::code_num(&e));
            }
        }
    }
    drop(out);
    if json {
        super::print_json(&stored)?;
    }
    Ok(ExitCode::from(code))
}

fn put_one(store: &Store, f: &Path) -> anyhow::Result<PutOutcome> {
    if f.as_os_str() == "-" {
        return store.put_reader(io::stdin().lock(), None).context("put -: storing standard input");
    }
    let ctx = || format!("put {}", f.display());
    let meta = std::fs::metadata(f).with_context(ctx)?;
    if meta.is_dir() {
        return Err(exit::Exit {
            code: exit::BAD_INPUT,
            msg: format!("put {}: is a directory; store trees with `cairn snapshot DIR --name NAME`", f.display()),
        }
        .into());
    }
    let bar = if meta.len() >= BAR_MIN { super::common::bar(meta.len(), &f.display().to_string()) } else { None };
    match bar {
        Some(bar) => {
            let file = std::fs::File::open(f).with_context(ctx)?;
            let res = store.put_reader(bar.wrap_read(file), None).with_context(ctx);
            bar.finish_and_clear();
            res
        }
        None => store.put_file(f).with_context(ctx),
    }
}

/// One output line in sha256sum's format, escaping names as it does.
fn line(d: &Digest, name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(70 + name.len());
    let escape = name.iter().any(|b| matches!(b, b'\\' | b'\n' | b'\r'));
    if escape {
        v.push(b'\\');
    }
    v.extend_from_slice(d.to_string().as_bytes());
    v.extend_from_slice(b"  ");
    for &b in name {
        match b {
            b'\\' if escape => v.extend_from_slice(b"\\\\"),
            b'\n' => v.extend_from_slice(b"\\n"),
            b'\r' => v.extend_from_slice(b"\\r"),
            _ => v.push(b),
        }
    }
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_backslash_or_newline_are_escaped_like_sha256sum() {
        let d = Digest::of(b"");
        assert_eq!(line(&d, b"plain"), format!("{d}  plain\n").into_bytes());
        assert_eq!(line(&d, b"a\\b\nc"), format!("\\{d}  a\\\\b\\nc\n").into_bytes());
    }
}
