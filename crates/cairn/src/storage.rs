//! The `storage` section: where the store keeps what must survive this
//! machine. `backend: local` (the default) is the data dir alone;
//! `backend: s3` puts a bucket behind it (the durable tier, see
//! [`cairn_store::tier`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_store::backend::object::{ObjectBackend, S3Options};
use cairn_store::tier::TierOptions;
use cairn_store::{Store, StoreOptions};
use serde::Deserialize;

/// The `storage` section as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// `local` (default) or `s3`.
    pub backend: Option<String>,
    /// The bucket (s3: required).
    pub bucket: Option<String>,
    /// Key prefix inside the bucket (default: none).
    pub prefix: Option<String>,
    /// `http(s)://host:port` of an S3-compatible server (default: AWS).
    pub endpoint: Option<String>,
    /// The region to sign for (default: `$AWS_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// An AWS shared-credentials file (`[default]` with
    /// `aws_access_key_id` and `aws_secret_access_key`); default: the
    /// `AWS_*` environment variables, then instance metadata.
    pub credentials_file: Option<PathBuf>,
    /// Copy blobs fetched from origins to the bucket in the background (default true).
    pub write_fetched: Option<bool>,
    /// Retries of a failed bucket request (default 10).
    pub max_retries: Option<usize>,
    /// No retry starts this long after a request's first try (default `3m`).
    pub retry_timeout: Option<String>,
    /// Connecting to the endpoint gives up after this long (default `5s`).
    pub connect_timeout: Option<String>,
    /// One bucket request (a part, a metadata document) gives up after
    /// this long, and a blob download after this long without a byte
    /// (default `30s`).
    pub request_timeout: Option<String>,
}

/// The checked `storage` section of `backend: s3`.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The bucket and how to reach it.
    pub s3: S3Options,
    /// The credentials file, when credentials come from one.
    pub credentials_file: Option<PathBuf>,
    /// The tier's behaviour.
    pub tier: TierOptions,
}

/// Checks the section; `None` for `backend: local` or no section.
pub fn check(section: Option<&StorageSection>) -> anyhow::Result<Option<StorageConfig>> {
    let Some(s) = section else { return Ok(None) };
    match s.backend.as_deref().unwrap_or("local") {
        "local" => {
            if s.bucket.is_some() || s.endpoint.is_some() {
                bail!("storage.bucket and storage.endpoint need storage.backend: s3");
            }
            return Ok(None);
        }
        "s3" => {}
        other => bail!("storage.backend {other:?} is not a backend; use local or s3"),
    }
    let Some(bucket) = s.bucket.clone().filter(|b| !b.is_empty()) else {
        bail!("storage.backend s3 needs storage.bucket (the bucket's name)");
    };
    if !bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        || !(3..=63).contains(&bucket.len())
    {
        bail!("storage.bucket {bucket:?} is not an S3 bucket name (3 to 63 of a-z, 0-9, '-', '.')");
    }
    let region = s
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()))
        .unwrap_or_else(|| "us-east-1".to_owned());
    let mut o = S3Options::new(bucket, region);
    if let Some(p) = &s.prefix {
        if p.split('/').any(|seg| seg == "." || seg == "..") {
            bail!("storage.prefix {p:?} has a '.' or '..' segment; use plain names separated by '/'");
        }
        o.prefix = p.clone();
    }
    if let Some(e) = s.endpoint.as_deref().filter(|e| !e.is_empty()) {
        let rest = e.strip_prefix("http://").or_else(|| e.strip_prefix("https://"));
        let host = rest.map(|r| r.split('/').next().unwrap_or_default());
        if !host.is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic() && b != b'@')) {
            bail!("storage.endpoint {e:?} must be http(s)://host[:port]");
        }
        o.endpoint = Some(e.trim_end_matches('/').to_owned());
    }
    if let Some(n) = s.max_retries {
        o.max_retries = n;
    }
    if let Some(t) = &s.retry_timeout {
        o.retry_timeout = duration("storage.retry_timeout", t)?;
    }
    if let Some(t) = &s.connect_timeout {
        o.connect_timeout = duration("storage.connect_timeout", t)?;
    }
    if let Some(t) = &s.request_timeout {
        o.request_timeout = duration("storage.request_timeout", t)?;
        if o.request_timeout.is_zero() {
            bail!("storage.request_timeout 0 would fail every request; give a duration such as 30s");
        }
    }
    if let Some(f) = &s.credentials_file {
        o.credentials = Some(read_credentials(f)?);
    }
    Ok(Some(StorageConfig {
        s3: o,
        credentials_file: s.credentials_file.clone(),
        tier: TierOptions { write_fetched: s.write_fetched.unwrap_or(true) },
    }))
}

fn duration(key: &str, v: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(v).with_context(|| format!("{key} {v:?} is not a duration such as 5s or 3m"))
}

/// Reads the `[default]` profile of an AWS shared-credentials file.
pub fn read_credentials(path: &Path) -> anyhow::Result<(String, String)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading storage.credentials_file {}", path.display()))?;
    let (mut profile, mut id, mut secret) = (String::new(), None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(p) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            profile = p.trim().to_owned();
            continue;
        }
        if profile != "default" {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        match k.trim() {
            "aws_access_key_id" => id = Some(v.trim().to_owned()),
            "aws_secret_access_key" => secret = Some(v.trim().to_owned()),
            _ => {}
        }
    }
    match (id, secret) {
        (Some(i), Some(s)) if !i.is_empty() && !s.is_empty() => Ok((i, s)),
        _ => bail!(
            "storage.credentials_file {}: no [default] profile with aws_access_key_id and aws_secret_access_key",
            path.display()
        ),
    }
}

/// Opens the data dir, with the bucket behind it when `storage` says so.
pub fn open_store(data_dir: &Path, storage: Option<&StorageConfig>, opts: StoreOptions) -> anyhow::Result<Store> {
    match storage {
        None => Store::open_with(data_dir, opts).with_context(|| format!("opening data dir {}", data_dir.display())),
        Some(s) => {
            let bucket = ObjectBackend::s3(&s.s3).with_context(|| format!("storage: bucket {}", s.s3.bucket))?;
            Store::open_tiered(data_dir, opts, bucket, s.tier.clone())
                .with_context(|| format!("opening data dir {} in front of bucket {}", data_dir.display(), s.s3.bucket))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(yaml: &str) -> StorageSection {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn local_or_absent_is_no_tier_and_s3_needs_a_valid_bucket() {
        assert!(check(None).unwrap().is_none());
        assert!(check(Some(&section("backend: local"))).unwrap().is_none());
        let e = format!("{:#}", check(Some(&section("backend: s3"))).unwrap_err());
        assert!(e.contains("storage.bucket"), "{e}");
        let e = format!("{:#}", check(Some(&section("backend: s3\nbucket: Bad_Name"))).unwrap_err());
        assert!(e.contains("not an S3 bucket name"), "{e}");
        let e = format!("{:#}", check(Some(&section("backend: gcs\nbucket: b"))).unwrap_err());
        assert!(e.contains("local or s3"), "{e}");
        let e = format!("{:#}", check(Some(&section("bucket: abc"))).unwrap_err());
        assert!(e.contains("backend: s3"), "{e}");
    }

    #[test]
    fn unsafe_prefixes_and_endpoints_are_refused() {
        let e = format!("{:#}", check(Some(&section("backend: s3\nbucket: abc\nprefix: a/../b"))).unwrap_err());
        assert!(e.contains("'..'"), "{e}");
        let e = format!("{:#}", check(Some(&section("backend: s3\nbucket: abc\nendpoint: ftp://x"))).unwrap_err());
        assert!(e.contains("http(s)"), "{e}");
        let e = format!("{:#}", check(Some(&section("backend: s3\nbucket: abc\nretry_timeout: soon"))).unwrap_err());
        assert!(e.contains("storage.retry_timeout"), "{e}");
    }

    #[test]
    fn every_key_reaches_the_options() {
        let dir = tempfile::tempdir().unwrap();
        let cred = dir.path().join("creds");
        std::fs::write(
            &cred,
            "[other]\naws_access_key_id = no\n[default]\naws_access_key_id = AK\naws_secret_access_key = SK\n",
        )
        .unwrap();
        let yaml = format!(
            "backend: s3\nbucket: my-bucket\nprefix: cl/a\nendpoint: http://127.0.0.1:9000/\nregion: eu-west-1\n\
             credentials_file: {}\nwrite_fetched: false\nmax_retries: 2\nretry_timeout: 7s\nconnect_timeout: 1s\n\
             request_timeout: 9s\n",
            cred.display()
        );
        let c = check(Some(&section(&yaml))).unwrap().unwrap();
        assert_eq!(c.s3.bucket, "my-bucket");
        assert_eq!(c.s3.prefix, "cl/a");
        assert_eq!(c.s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.s3.region, "eu-west-1");
        assert_eq!(c.s3.credentials, Some(("AK".into(), "SK".into())));
        assert_eq!(
            (c.s3.max_retries, c.s3.retry_timeout, c.s3.connect_timeout),
            (2, Duration::from_secs(7), Duration::from_secs(1))
        );
        assert_eq!(c.s3.request_timeout, Duration::from_secs(9));
        assert!(!c.tier.write_fetched);
    }

    #[test]
    fn a_credentials_file_without_a_default_profile_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let cred = dir.path().join("creds");
        std::fs::write(&cred, "[prod]\naws_access_key_id = AK\naws_secret_access_key = SK\n").unwrap();
        let e = format!("{:#}", read_credentials(&cred).unwrap_err());
        assert!(e.contains("[default]") && e.contains("creds"), "{e}");
        let e = format!("{:#}", read_credentials(&dir.path().join("absent")).unwrap_err());
        assert!(e.contains("absent"), "{e}");
    }
}
