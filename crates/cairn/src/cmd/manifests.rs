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
    let mut t = super::table::Table::new(&["NAME", "REF_FILE", "BLOBS", "CREATED_AT"]).right(2);
    for s in &list {
        t.row(vec![s.name.clone(), s.ref_file.as_str().to_owned(), s.blob_count.to_string(), s.created_at.clone()]);
    }
    t.print();
    Ok(ExitCode::SUCCESS)
}
