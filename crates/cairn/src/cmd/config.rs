//! `cairn config check FILE`: validate a config and print the effective
//! one, so an operator sees every default the node will use.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Map, Value, json};

use crate::config::{FileConfig, LogFormat, NodeConfig, OriginConfig, Overrides, read_file};
use crate::exit::{BAD_INPUT, Exit};

/// Checks `file` the way `serve` would, then prints the effective config.
pub fn check(file: &Path) -> anyhow::Result<ExitCode> {
    let flags = Overrides { config: Some(file.to_owned()), ..Default::default() };
    let node = NodeConfig::load(&flags, None).map_err(|e| {
        let msg = format!("{e:#}");
        let named = msg.contains(&file.display().to_string());
        Exit { code: BAD_INPUT, msg: if named { msg } else { format!("config file {}: {msg}", file.display()) } }
    })?;
    // The sections kept as written (origins, auth, tls) come from the file itself.
    let sections = read_file(file)?;
    super::print_json(&effective(&node, &sections)).context("printing the effective config")?;
    eprintln!("{}: ok", file.display());
    Ok(ExitCode::SUCCESS)
}

fn secs(d: std::time::Duration) -> Value {
    Value::from(humantime::format_duration(d).to_string())
}

/// The config `node` was built from, with every default written out, in
/// the file's own keys. Passwords are never printed.
pub fn effective(node: &NodeConfig, file: &FileConfig) -> Value {
    let origins: Vec<Value> = file.origins.iter().flatten().map(origin).collect();
    json!({
        "node_id": node.cluster.node_id,
        "listen_addr": node.listen_addr,
        "peers": node.cluster.peers,
        "advertise_addr": node.advertise_addr,
        "peer_timeout": secs(node.cluster.peer_timeout),
        "enable_cdn_fallback": node.cluster.enable_cdn_fallback,
        "data_dir": node.data_dir,
        "origins": origins,
        "health_interval": secs(node.cluster.health_interval),
        "max_concurrent_fetches": node.cluster.max_concurrent_fetches,
        "shutdown_grace": secs(node.shutdown_grace),
        "discovery": node.discovery.as_str(),
        "egress_limit": node.cluster.egress_limit,
        "elect_owner": node.cluster.elect_owner,
        "registry_addr": node.registry_bind.map(|a| a.to_string()),
        "upload_ttl": secs(node.upload_ttl),
        "max_upload_sessions": node.max_upload_sessions,
        "max_upload_sessions_per_client": node.max_upload_sessions_per_client,
        "min_transfer_rate": node.cluster.min_transfer_rate,
        "rate_window": secs(node.cluster.rate_window),
        "max_blob_size": node.cluster.max_blob_size,
        "min_free_space": node.cluster.min_free_space,
        "max_manifest_objects": node.cluster.max_manifest_objects,
        "body_timeout": secs(node.cluster.body_timeout),
        "header_timeout": secs(node.header_timeout),
        "idle_timeout": secs(node.idle_timeout),
        "max_connections": node.max_connections,
        "peer_tags": node.cluster.peer_tags.to_string(),
        "auth": node.auth,
        "cluster_secret_file": file.cluster_secret_file,
        "tls": node.tls,
        "log_format": match node.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        },
        "log_level": node.log_level,
        "gc_interval": node.gc_interval.map_or(Value::from("off"), secs),
        "gc_grace": secs(node.gc_grace),
        "metrics_addr": node.metrics_bind.map(|a| a.to_string()),
        "dns_name": node.dns_name,
        "cache": node.cache.map(|c| json!({
            "max_bytes": c.max_bytes.map(|l| l.to_string()),
            "min_free": c.min_free.map(|l| l.to_string()),
        })),
        "storage": node.storage.as_ref().map(storage),
        "replicas": node.cluster.replicas,
        "swarm": node.cluster.swarm,
    })
}

/// The `storage` section of `backend: s3`, every default filled in.
fn storage(s: &crate::storage::StorageConfig) -> Value {
    json!({
        "backend": "s3",
        "bucket": s.s3.bucket,
        "prefix": s.s3.prefix,
        "endpoint": s.s3.endpoint,
        "region": s.s3.region,
        "credentials_file": s.credentials_file,
        "write_fetched": s.tier.write_fetched,
        "max_retries": s.s3.max_retries,
        "retry_timeout": secs(s.s3.retry_timeout),
        "connect_timeout": secs(s.s3.connect_timeout),
        "request_timeout": secs(s.s3.request_timeout),
    })
}

/// One origin entry as written, its password replaced.
fn origin(o: &OriginConfig) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            m.insert(k.to_owned(), v);
        }
    };
    put("url", json!(o.url));
    put("registry", json!(o.registry));
    put("username", json!(o.username));
    put("password", json!(o.password.as_ref().map(|_| "<redacted>")));
    put("tag_ttl", json!(o.tag_ttl));
    put("timeout", json!(o.timeout));
    put("retries", json!(o.retries));
    put("ca_file", json!(o.ca_file));
    put("insecure_skip_verify", json!(o.insecure_skip_verify));
    put("password_file", json!(o.password_file));
    put("password_env", json!(o.password_env));
    Value::Object(m)
}
