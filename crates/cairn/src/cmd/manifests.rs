//! `cairn manifests [--json]`: every manifest version.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

pub fn run(data_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let store = super::common::open_ro(data_dir)?;
    let list =
        store.list_manifests().with_context(|| format!("listing manifests in data dir {}", data_dir.display()))?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&list).context("encoding the manifest list")?);
        return Ok(ExitCode::SUCCESS);
    }
    let w_name = list.iter().map(|s| s.name.len()).max().unwrap_or(0).max(4);
    let w_file = list.iter().map(|s| s.ref_file.as_str().len()).max().unwrap_or(0).max(8);
    outln!("{:w_name$}  {:w_file$}  {:>6}  CREATED_AT", "NAME", "REF_FILE", "BLOBS");
    for s in &list {
        outln!("{:w_name$}  {:w_file$}  {:>6}  {}", s.name, s.ref_file.as_str(), s.blob_count, s.created_at);
    }
    Ok(ExitCode::SUCCESS)
}
