//! Exit codes: 0 ok, 1 not found (or another failure), 2 bad input,
//! 3 corruption found.

use std::process::ExitCode;

use cairn_store::{DigestError, NameError, StoreError};

/// Not found, or a failure with no more specific code.
pub const NOT_FOUND: u8 = 1;
/// Bad input: malformed digest, unsafe name, wrong digest, bad config.
pub const BAD_INPUT: u8 = 2;
/// Corruption found (verify).
pub const CORRUPT: u8 = 3;

/// An error that carries its own exit code.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct Exit {
    /// The code.
    pub code: u8,
    /// What to print.
    pub msg: String,
}

/// Picks the exit code for an error by looking through its chain.
pub fn code_for(err: &anyhow::Error) -> ExitCode {
    ExitCode::from(code_num(err))
}

/// Prints `err` for the user, with what to do when the cause says it.
pub fn print_error(err: &anyhow::Error) {
    eprintln!("cairn: {err:#}");
    if is_disk_full(err) {
        eprintln!(
            "cairn: the data dir's filesystem is full; nothing of it was stored. Free space (`cairn gc`, \
             `cairn manifest rm`) or move the data dir (--data-dir) to a larger disk"
        );
    }
}

/// True when `err` comes from a full filesystem (`ENOSPC`).
fn is_disk_full(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::StorageFull))
}

/// The context of every failed write to standard output.
pub const STDOUT: &str = "writing to stdout";

/// True when `err` comes from writing command output into a pipe whose
/// reader is gone. A broken pipe elsewhere (a node that hung up) is a
/// failure like any other.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    let pipe = err
        .chain()
        .any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe));
    pipe && err.chain().any(|c| c.to_string().ends_with(STDOUT))
}

/// [`code_for`] as a number, so several failures can be compared.
pub fn code_num(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<Exit>() {
            return e.code;
        }
        if cause.is::<DigestError>() || cause.is::<NameError>() {
            return BAD_INPUT;
        }
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            if e.is_bad_input() {
                return BAD_INPUT;
            }
            if e.is_not_found() {
                return NOT_FOUND;
            }
        }
    }
    NOT_FOUND
}
