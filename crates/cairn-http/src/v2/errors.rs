//! OCI error codes, registered once with message and HTTP status, the one
//! mapping from registry errors to them, and the one writer of error bodies
//! (`{"errors":[{"code","message","detail"}]}`).

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_cluster::ClusterError;
use cairn_store::StoreError;
use cairn_store::oci::OciError;
use serde_json::{Value, json};

use crate::v2::store::{ReadError, RemoteError};

/// One registered error code.
#[derive(Debug, PartialEq, Eq)]
pub struct Code {
    /// The code, as the spec spells it.
    pub code: &'static str,
    /// The spec's message.
    pub message: &'static str,
    /// The status it is answered with unless a case says otherwise.
    pub status: StatusCode,
}

macro_rules! codes {
    ($($name:ident = $code:literal, $msg:literal, $status:ident;)*) => {
        $(
            #[doc = concat!("`", $code, "`: ", $msg, ".")]
            pub const $name: Code = Code { code: $code, message: $msg, status: StatusCode::$status };
        )*
        /// Every code this registry answers with.
        pub const ALL: &[&Code] = &[$(&$name),*];
    };
}

codes! {
    BLOB_UNKNOWN = "BLOB_UNKNOWN", "blob unknown to registry", NOT_FOUND;
    BLOB_UPLOAD_INVALID = "BLOB_UPLOAD_INVALID", "blob upload invalid", BAD_REQUEST;
    BLOB_UPLOAD_UNKNOWN = "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", NOT_FOUND;
    DIGEST_INVALID = "DIGEST_INVALID", "provided digest did not match uploaded content", BAD_REQUEST;
    MANIFEST_BLOB_UNKNOWN = "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry", BAD_REQUEST;
    MANIFEST_INVALID = "MANIFEST_INVALID", "manifest invalid", BAD_REQUEST;
    MANIFEST_UNKNOWN = "MANIFEST_UNKNOWN", "manifest unknown to registry", NOT_FOUND;
    NAME_INVALID = "NAME_INVALID", "invalid repository name", BAD_REQUEST;
    NAME_UNKNOWN = "NAME_UNKNOWN", "repository name not known to registry", NOT_FOUND;
    SIZE_INVALID = "SIZE_INVALID", "provided length did not match content length", BAD_REQUEST;
    UNAUTHORIZED = "UNAUTHORIZED", "authentication required", UNAUTHORIZED;
    DENIED = "DENIED", "requested access to the resource is denied", FORBIDDEN;
    UNSUPPORTED = "UNSUPPORTED", "the operation is unsupported", METHOD_NOT_ALLOWED;
    TOOMANYREQUESTS = "TOOMANYREQUESTS", "too many requests", TOO_MANY_REQUESTS;
    UNKNOWN = "UNKNOWN", "unknown error", INTERNAL_SERVER_ERROR;
}

/// An error answer of the /v2 API: one or more codes, each with a detail.
#[derive(Debug)]
pub struct V2Error {
    status: StatusCode,
    entries: Vec<(&'static Code, Value)>,
    headers: Vec<(HeaderName, String)>,
}

impl V2Error {
    /// An error with `code` and a detail (a string or JSON object).
    pub fn new(code: &'static Code, detail: impl Into<Value>) -> Self {
        V2Error { status: code.status, entries: vec![(code, detail.into())], headers: Vec::new() }
    }

    fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    fn with_header(mut self, name: HeaderName, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// A request body that went silent (408) or was cut (400), under `code`.
    pub fn body(code: &'static Code, what: &str, e: crate::body::BodyError) -> Self {
        let status = match e {
            crate::body::BodyError::Idle { .. } => StatusCode::REQUEST_TIMEOUT,
            crate::body::BodyError::Cut { .. } => StatusCode::BAD_REQUEST,
            crate::body::BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        };
        V2Error::new(code, format!("{what}: {e}")).with_status(status)
    }

    /// A blob `Range` with no byte inside the blob: 416, `Content-Range: bytes */<size>`.
    pub fn range_outside_blob(size: u64) -> Self {
        V2Error::new(&SIZE_INVALID, format!("requested range is outside the blob of {size} bytes"))
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
            .with_header(header::CONTENT_RANGE, format!("bytes */{size}"))
    }

    /// An upload chunk whose `Content-Range` does not parse: 416.
    pub fn malformed_chunk_range(text: &str) -> Self {
        V2Error::new(
            &BLOB_UPLOAD_INVALID,
            format!(
                "malformed Content-Range {text:?}; send <start>-<end> (inclusive, start <= end, at most 2^64-1 bytes)"
            ),
        )
        .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
    }

    /// A pagination `n` that is not a count: 400.
    pub fn bad_page_size(n: &str) -> Self {
        V2Error::new(&UNSUPPORTED, format!("n={n:?} must be a non-negative integer"))
            .with_status(StatusCode::BAD_REQUEST)
    }

    /// No or wrong credentials: 401 with the Basic challenge clients log in on.
    pub fn unauthorized(realm: &str, detail: impl Into<Value>) -> Self {
        V2Error::new(&UNAUTHORIZED, detail).with_header(header::WWW_AUTHENTICATE, format!("Basic realm=\"{realm}\""))
    }

    /// A `/v2` path that is no endpoint: 404.
    pub fn no_endpoint(path: &str) -> Self {
        V2Error::new(&UNSUPPORTED, format!("no /v2 endpoint at {path}")).with_status(StatusCode::NOT_FOUND)
    }

    /// A manifest of a type the request's `Accept` excludes: 404, as for any manifest the client cannot take.
    pub fn not_acceptable(media_type: &str) -> Self {
        V2Error::new(
            &MANIFEST_UNKNOWN,
            format!("the manifest is {media_type}, which is not in the request's Accept header"),
        )
    }

    /// Points a 416 answer of an upload at its session, so the client knows where to resume.
    pub fn at_session(self, location: String) -> Self {
        if self.status == StatusCode::RANGE_NOT_SATISFIABLE {
            self.with_header(header::LOCATION, location)
        } else {
            self
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The first code (for logs and tests).
    pub fn code(&self) -> &'static Code {
        self.entries[0].0
    }
}

/// The one mapping from registry errors to OCI codes and statuses.
impl From<OciError> for V2Error {
    fn from(e: OciError) -> Self {
        let msg = e.to_string();
        match e {
            OciError::Name(_) => V2Error::new(&NAME_INVALID, msg),
            OciError::NameUnknown(_) => V2Error::new(&NAME_UNKNOWN, msg),
            OciError::Tag(_) => V2Error::new(&MANIFEST_INVALID, msg),
            OciError::Digest(_) | OciError::DigestMissing => V2Error::new(&DIGEST_INVALID, msg),
            OciError::DigestMismatch { expected, .. } => {
                V2Error::new(&DIGEST_INVALID, json!({"digest": expected.oci(), "reason": msg}))
            }
            OciError::BlobUnknown { digest, .. } => {
                V2Error::new(&BLOB_UNKNOWN, json!({"digest": digest.oci(), "reason": msg}))
            }
            OciError::ManifestUnknown { .. } => V2Error::new(&MANIFEST_UNKNOWN, msg),
            OciError::ManifestInvalid(_) => V2Error::new(&MANIFEST_INVALID, msg),
            // The spec asks for 413 on a manifest over the registry's limit.
            OciError::ManifestTooLarge { .. } => {
                V2Error::new(&MANIFEST_INVALID, msg).with_status(StatusCode::PAYLOAD_TOO_LARGE)
            }
            OciError::ManifestUnsupported(_) => {
                V2Error::new(&UNSUPPORTED, msg).with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            }
            OciError::ManifestBlobUnknown(missing) => V2Error {
                status: MANIFEST_BLOB_UNKNOWN.status,
                entries: missing.iter().map(|d| (&MANIFEST_BLOB_UNKNOWN, json!({"digest": d.oci()}))).collect(),
                headers: Vec::new(),
            },
            OciError::UploadUnknown(_) => V2Error::new(&BLOB_UPLOAD_UNKNOWN, msg),
            OciError::UploadInvalid { .. } | OciError::Body { .. } => V2Error::new(&BLOB_UPLOAD_INVALID, msg),
            OciError::UploadRange { size, .. } => V2Error::new(&BLOB_UPLOAD_INVALID, msg)
                .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
                .with_header(header::RANGE, format!("0-{}", size.saturating_sub(1))),
            OciError::SizeInvalid { .. } => V2Error::new(&SIZE_INVALID, msg),
            OciError::TooManyUploads { .. } => V2Error::new(&TOOMANYREQUESTS, msg),
            // No spec code says "lost a race": 409 with the message.
            OciError::TagMoved { now, .. } => {
                V2Error::new(&UNKNOWN, json!({"tag_now": now.map(|d| d.oci()), "reason": msg}))
                    .with_status(StatusCode::CONFLICT)
            }
            OciError::Store(s) => from_store(s),
            _ => V2Error::new(&UNKNOWN, msg),
        }
    }
}

fn from_store(s: StoreError) -> V2Error {
    let msg = s.to_string();
    match s {
        StoreError::DigestMismatch { expected, .. } => {
            V2Error::new(&DIGEST_INVALID, json!({"digest": expected.oci(), "reason": msg}))
        }
        StoreError::Digest(_) => V2Error::new(&DIGEST_INVALID, msg),
        StoreError::BlobNotFound(d) => V2Error::new(&BLOB_UNKNOWN, json!({"digest": d.oci()})),
        StoreError::Io { op: "read input", .. } => V2Error::new(&BLOB_UPLOAD_INVALID, msg),
        StoreError::ReadOnly(_) => V2Error::new(&DENIED, msg),
        StoreError::CacheFull { .. } => V2Error::new(&UNKNOWN, msg).with_status(StatusCode::INSUFFICIENT_STORAGE),
        _ => {
            tracing::error!(error = %msg, "registry request failed");
            V2Error::new(&UNKNOWN, msg)
        }
    }
}

/// A failed read of the registry: the registry's own error, a remote
/// source's failure, or a dead worker.
impl From<ReadError> for V2Error {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Registry(e) => e.into(),
            ReadError::Remote { kind, subject, source } => {
                V2Error::new(&UNKNOWN, json!({kind: subject, "reason": source.to_string()}))
                    .with_status(remote_status(&source))
            }
            ReadError::Worker(e) => V2Error::new(&UNKNOWN, format!("registry worker failed: {e}")),
        }
    }
}

/// The status of a remote source's failure (one that is not "absent"):
/// the cluster's errors get the status `/v1` gives them ([`crate::error`]):
/// 502 for an upstream or a peer that failed, 503 when this node's store
/// cannot take writes, 504 for one that timed out, 507 when this node's
/// disk is full, 500 for this node's own faults. Anything else is 502.
pub fn remote_status(e: &RemoteError) -> StatusCode {
    match e.downcast_ref::<ClusterError>() {
        Some(e) => crate::error::cluster_status(e),
        None => StatusCode::BAD_GATEWAY,
    }
}

/// Writes the spec's error body for `entries`.
pub fn error_body(entries: &[(&'static Code, Value)]) -> Vec<u8> {
    let errors: Vec<Value> =
        entries.iter().map(|(c, d)| json!({"code": c.code, "message": c.message, "detail": d})).collect();
    json!({ "errors": errors }).to_string().into_bytes()
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        // Remote callers never see the node's paths (the log has the full
        // error); a 400 only echoes the caller's own input.
        let entries: Vec<_> = if self.status == StatusCode::BAD_REQUEST {
            self.entries.clone()
        } else {
            self.entries.iter().map(|(c, d)| (*c, redact_paths(d))).collect()
        };
        let mut r = (self.status, [(header::CONTENT_TYPE, "application/json")], error_body(&entries)).into_response();
        for (n, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                r.headers_mut().insert(n, v);
            }
        }
        r
    }
}

/// `v` with absolute paths redacted from every string in it.
fn redact_paths(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(crate::redact::error_message(s)),
        Value::Array(a) => Value::Array(a.iter().map(redact_paths).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), redact_paths(v))).collect()),
        v => v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_registered_once_in_upper_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for c in ALL {
            assert!(seen.insert(c.code), "{} twice", c.code);
            assert!(c.code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
            assert!(c.status.is_client_error() || c.status.is_server_error());
        }
    }

    #[test]
    fn error_body_has_code_message_and_detail() {
        let v: Value = serde_json::from_slice(&error_body(&[(&BLOB_UNKNOWN, json!({"digest": "sha256:x"}))])).unwrap();
        assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(v["errors"][0]["message"], "blob unknown to registry");
        assert_eq!(v["errors"][0]["detail"]["digest"], "sha256:x");
    }

    #[test]
    fn a_tag_moved_by_a_concurrent_push_is_a_409_that_names_where_it_went() {
        let (now, pushed) = (cairn_store::Digest::of(b"won"), cairn_store::Digest::of(b"lost"));
        let e = OciError::TagMoved {
            repo: cairn_store::oci::RepoName::parse("r").unwrap(),
            tag: cairn_store::oci::Tag::parse("latest").unwrap(),
            now: Some(now),
            pushed,
        };
        let v = V2Error::from(e);
        assert_eq!(v.status(), StatusCode::CONFLICT);
        let reason = v.entries[0].1["reason"].as_str().unwrap().to_owned();
        assert!(reason.contains(&now.oci()) && reason.contains("push again"), "{reason}");
        assert_eq!(v.entries[0].1["tag_now"], now.oci());
    }

    /// The issue's bug: `/v2` gave every remote failure 502 (or a 404 for
    /// a tag), where `/v1` tells a timeout (504) and an unavailable store
    /// (503) apart. Each kind now gets the one status `/v1` gives it.
    #[test]
    fn v2_remote_failures_get_the_status_v1_gives_them() {
        use std::time::Duration;
        let d = cairn_store::Digest::of(b"x");
        let secs = Duration::from_secs(1);
        let timeout = || ClusterError::PeerTimeout { peer: "p:1".into(), what: "GET".into(), after: secs };
        let cases: Vec<(ClusterError, u16)> = vec![
            (ClusterError::Unavailable { digest: d, tried: vec!["registry r: unreachable".into()] }, 502),
            (ClusterError::TagUnavailable { repo: "r".into(), tag: "t".into(), tried: vec![] }, 502),
            (ClusterError::Origin { origin: "o".into(), digest: d, reason: "HTTP 500".into() }, 502),
            (ClusterError::PeerUnreachable { peer: "p:1".into(), reason: "refused".into() }, 502),
            (ClusterError::Corrupt { source_name: "o".into(), expected: d, actual: d }, 502),
            (timeout(), 504),
            (ClusterError::Shared(std::sync::Arc::new(timeout())), 504),
            (ClusterError::Stalled { source_name: "o".into(), digest: d, after: secs }, 504),
            (ClusterError::TooSlow { source_name: "o".into(), digest: d, bytes: 1, over: secs, min: 2 }, 504),
            (ClusterError::Store(StoreError::ReadOnly("/data".into())), 503),
            (ClusterError::DiskFull { digest: d, need: 2, free: 1, reserve: 1 }, 507),
            (ClusterError::CacheFull { digest: d, need: 2, used: 1, max: 2 }, 507),
            (ClusterError::Task("worker died".into()), 500),
        ];
        for (e, want) in cases {
            let shown = e.to_string();
            let v1 = crate::error::cluster_status(&e);
            let v2 = V2Error::from(ReadError::Remote { kind: "digest", subject: d.oci(), source: Box::new(e) });
            assert_eq!((v2.status().as_u16(), v1.as_u16()), (want, want), "{shown}");
            assert_eq!(v2.code(), &UNKNOWN, "{shown}");
        }
        let other = V2Error::from(ReadError::Remote { kind: "tag", subject: "r:t".into(), source: "refused".into() });
        assert_eq!(other.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(V2Error::from(ReadError::Worker("panicked".into())).status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
