//! `cairn manifest show NAME` and `cairn manifest rm NAME [--all]`.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use cairn_store::RefName;

use crate::cli::ManifestCommand;

pub fn run(data_dir: &Path, cmd: ManifestCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ManifestCommand::Show { name } => {
            let store = super::common::open_ro(data_dir)?;
            let rf = super::common::resolve(&store, &name)?;
            let bytes = store.manifest_bytes(&rf).with_context(|| format!("reading manifest {rf}"))?;
            let mut out = io::stdout().lock();
            out.write_all(&bytes).context(crate::exit::STDOUT)?;
            if !bytes.ends_with(b"\n") {
                out.write_all(b"\n").context(crate::exit::STDOUT)?;
            }
        }
        ManifestCommand::Rm { name, all, json } => {
            let store = super::common::open_rw(data_dir)?;
            let rf = super::common::resolve(&store, &name)?;
            let mut doomed = vec![rf];
            if all && let Ok(n) = RefName::parse(&name) {
                let versions = store.list_manifests().context("listing manifests")?;
                doomed = versions.into_iter().filter(|s| s.name == n.as_str()).map(|s| s.ref_file).collect();
            }
            let mut removed = Vec::new();
            for rf in doomed {
                store.delete_manifest(&rf).with_context(|| format!("removing manifest {rf}"))?;
                if !json {
                    outln!("removed {rf}");
                }
                removed.push(rf.as_str().to_owned());
            }
            if json {
                super::print_json(&serde_json::json!({ "removed": removed }))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
