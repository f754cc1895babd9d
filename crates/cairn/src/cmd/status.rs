//! `cairn status [--json]`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use indicatif::HumanBytes;

pub fn run(data_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let store = super::common::open_ro(data_dir)?;
    let st = store.stats().with_context(|| format!("counting blobs in {}", data_dir.display()))?;
    if json {
        let v = serde_json::json!({"data_dir": data_dir, "blobs": st.blobs, "bytes": st.bytes, "manifests": st.refs});
        outln!("{v}");
    } else {
        outln!(
            "data dir:  {}\nblobs:     {}\nbytes:     {} ({})\nmanifests: {}",
            data_dir.display(),
            st.blobs,
            st.bytes,
            HumanBytes(st.bytes),
            st.refs
        );
    }
    Ok(ExitCode::SUCCESS)
}
