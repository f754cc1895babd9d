//! The crate's modules form layers: none imports a module of its own layer
//! or above, so there is no import loop (a loop once ran through nine files:
//! `health`/`owner` needed the fetch pipeline's internals, `peer` and
//! `upstream` imported each other).

use std::collections::HashMap;
use std::path::Path;

/// Each top-level module and its layer, lowest first (as in `lib.rs`).
const LAYERS: &[&[&str]] = &[
    &["error", "net", "discovery", "membership", "rendezvous", "advertise", "swarm"],
    &["peer", "swarm_run"],
    &["ratelimit", "stream", "health", "upstream"],
    &["origin"],
    &["fetch"],
    &["replicate"],
    &["listing", "sync"],
    &["push", "mirror"],
];

/// Names `lib.rs` re-exports at the crate root, and where they live.
const ROOT: &[(&str, &str)] = &[
    ("Result", "error"),
    ("ClusterError", "error"),
    ("BlobBody", "fetch"),
    ("Cluster", "fetch"),
    ("ClusterConfig", "fetch"),
    ("ClusterStats", "listing"),
    ("Origin", "origin"),
    ("ByteStream", "peer"),
    ("ManifestEntry", "peer"),
    ("PeerApi", "peer"),
    ("PeerHealth", "peer"),
    ("PeerSet", "peer"),
    ("PeerStatus", "peer"),
    ("RemoteBlob", "peer"),
    ("SyncEvent", "sync"),
    ("SyncReport", "sync"),
    ("owner", "fetch"),
];

/// `crate::NAME` references in the code of `text` (not comments, not tests).
fn references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            // `mod tests;` is one line; an inline test module ends the file.
            match lines.next() {
                Some(item) if item.trim_end().ends_with(';') => continue,
                _ => break,
            }
        }
        if code.starts_with("//") {
            continue;
        }
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.push(name);
        }
    }
    out
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_imports_a_module_of_its_layer_or_above() {
    let layer: HashMap<&str, usize> =
        LAYERS.iter().enumerate().flat_map(|(i, ms)| ms.iter().map(move |m| (*m, i))).collect();
    let root: HashMap<&str, &str> = ROOT.iter().copied().collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut wrong = Vec::new();
    for path in all {
        let rel = path.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        let module = rel.split('/').next().unwrap().trim_end_matches(".rs").to_owned();
        if module == "lib" {
            continue;
        }
        let Some(&mine) = layer.get(module.as_str()) else {
            panic!("module {module} has no layer: add it to LAYERS here and to the list in lib.rs");
        };
        let text = std::fs::read_to_string(&path).unwrap();
        for name in references(&text) {
            let target = root.get(name.as_str()).copied().unwrap_or(name.as_str());
            if target == module {
                continue;
            }
            match layer.get(target) {
                Some(&theirs) if theirs < mine => {}
                _ => wrong.push(format!("{rel} uses crate::{name} ({target})")),
            }
        }
    }
    assert!(wrong.is_empty(), "imports that run sideways or up a layer:\n{}", wrong.join("\n"));
}
