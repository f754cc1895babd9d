//! `cairn completions` and `cairn man`: generated from the clap definition,
//! so they never drift from the real flags.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::Cli;

/// Prints the completion script for `shell` to standard output.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    // clap_complete panics on a failed write: generate first, then write.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "cairn", &mut script);
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(&script).and_then(|()| out.flush()) {
        crate::cmd::stdout_failed(e);
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `cairn.1` and a page per command (`cairn-serve.1`, `cairn-registry-ls.1`, ...)
/// into `out`; prints the paths written.
pub fn man(out: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(out).with_context(|| format!("creating man page directory {}", out.display()))?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd, out).with_context(|| format!("writing man pages into {}", out.display()))?;
    let mut pages: Vec<_> = std::fs::read_dir(out)
        .with_context(|| format!("listing {}", out.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    for p in pages {
        outln!("{}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
