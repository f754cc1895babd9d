//! Opening files inside the data dir without following symlinks: the store
//! never creates a symlink under `objects/`, `refs/` or `registry/`, so one
//! found there was planted and must not lead a read outside the data dir.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::StoreError;

/// True when `e` is what `open(O_NOFOLLOW)` reports for a symlink.
pub(crate) fn is_symlink_error(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

/// `OpenOptions` for reading that refuse a symlink at the last component.
pub(crate) fn read_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    o
}

/// Opens `p` for reading; a symlink is an `ELOOP` error (see [`is_symlink_error`]).
pub(crate) fn open(p: &Path) -> io::Result<File> {
    read_options().open(p)
}

/// True when `p` is a regular file itself (a symlink to one is not).
pub(crate) fn is_file(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.is_file())
}

/// Maps an open error on `p`: a symlink becomes [`StoreError::Symlink`].
pub(crate) fn error(op: &'static str, p: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let p = p.to_owned();
    move |e| {
        if is_symlink_error(&e) {
            tracing::warn!(path = %p.display(), "refused to follow a symlink in the data dir");
            StoreError::Symlink(p)
        } else {
            StoreError::Io { op, path: p, source: e }
        }
    }
}
