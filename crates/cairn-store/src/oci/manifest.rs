//! Manifest JSON: media types, and the descriptors a manifest references
//! (what must exist before it is accepted, and what GC must keep).

use serde_json::{Map, Value};

use crate::digest::Digest;
use crate::oci::error::{OciError, OciResult};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list, schema 2.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Every manifest media type the registry stores and serves.
pub const MANIFEST_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// Largest manifest accepted, as distribution and containers/image use.
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// A content descriptor inside a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Its media type.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Its artifact type, when given.
    pub artifact_type: Option<String>,
    /// True when the content lives elsewhere (`urls` on a foreign or
    /// non-distributable layer), so it need not be in the registry.
    pub external: bool,
}

/// A checked manifest.
#[derive(Debug, Clone)]
pub struct ParsedManifest {
    /// The media type (one of [`MANIFEST_TYPES`]).
    pub media_type: String,
    /// Config and layers (image manifests).
    pub blobs: Vec<Descriptor>,
    /// Child manifests (indexes).
    pub manifests: Vec<Descriptor>,
    /// The `subject`, for a referrer.
    pub subject: Option<Descriptor>,
    /// `artifactType`, else the config media type (what the referrers API shows).
    pub artifact_type: Option<String>,
    /// The manifest's annotations.
    pub annotations: Option<Map<String, Value>>,
}

fn invalid(reason: impl Into<String>) -> OciError {
    OciError::ManifestInvalid(reason.into())
}

fn descriptor(v: &Value, at: &str) -> OciResult<Descriptor> {
    let o = v.as_object().ok_or_else(|| invalid(format!("{at} is not an object")))?;
    let media_type = o
        .get("mediaType")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{at}.mediaType is missing or not a string")))?
        .to_owned();
    let ds = o.get("digest").and_then(Value::as_str).ok_or_else(|| invalid(format!("{at}.digest is missing")))?;
    if !ds.starts_with("sha256:") {
        return Err(invalid(format!("{at}.digest {ds:?} is not a sha256:<hex> digest")));
    }
    let digest = Digest::parse(ds).map_err(|e| invalid(format!("{at}.digest: {e}")))?;
    let size =
        o.get("size").and_then(Value::as_u64).ok_or_else(|| invalid(format!("{at}.size is missing or negative")))?;
    let artifact_type = o.get("artifactType").and_then(Value::as_str).map(str::to_owned);
    let has_urls = o.get("urls").and_then(Value::as_array).is_some_and(|u| !u.is_empty());
    let external = has_urls && (media_type.contains("foreign") || media_type.contains("nondistributable"));
    Ok(Descriptor { media_type, digest, size, artifact_type, external })
}

fn descriptors(o: &Map<String, Value>, key: &str) -> OciResult<Vec<Descriptor>> {
    match o.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a.iter().enumerate().map(|(i, v)| descriptor(v, &format!("{key}[{i}]"))).collect(),
        Some(_) => Err(invalid(format!("{key} is not an array"))),
    }
}

/// Strips parameters and case from a `Content-Type` value.
pub fn bare_media_type(ct: &str) -> String {
    ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Parses and checks a manifest body. `content_type` is the request's
/// `Content-Type`, if any; it must agree with the body's `mediaType`.
pub fn parse_manifest(bytes: &[u8], content_type: Option<&str>) -> OciResult<ParsedManifest> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let o = v.as_object().ok_or_else(|| invalid("the manifest is not a JSON object"))?;
    let header = content_type
        .map(bare_media_type)
        .filter(|t| !t.is_empty() && t != "application/json" && t != "application/octet-stream");
    let body = o
        .get("mediaType")
        .map(|m| m.as_str().map(str::to_owned).ok_or_else(|| invalid("mediaType is not a string")))
        .transpose()?;
    let media_type = match (header, body) {
        (Some(h), Some(b)) if h != b => {
            return Err(invalid(format!("Content-Type {h:?} differs from the manifest's mediaType {b:?}")));
        }
        (Some(h), _) => h,
        (None, Some(b)) => b,
        (None, None) if o.contains_key("manifests") => OCI_INDEX.to_owned(),
        (None, None) => OCI_MANIFEST.to_owned(),
    };
    if !MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(OciError::ManifestUnsupported(media_type));
    }
    if o.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    let is_index = media_type == OCI_INDEX || media_type == DOCKER_LIST;
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    if is_index {
        if !o.get("manifests").is_some_and(Value::is_array) {
            return Err(invalid("an index needs a manifests array"));
        }
        manifests = descriptors(o, "manifests")?;
    } else {
        let config = o.get("config").ok_or_else(|| invalid("an image manifest needs a config descriptor"))?;
        blobs.push(descriptor(config, "config")?);
        if !o.get("layers").is_some_and(Value::is_array) {
            return Err(invalid("an image manifest needs a layers array"));
        }
        blobs.extend(descriptors(o, "layers")?);
    }
    let subject = o.get("subject").map(|s| descriptor(s, "subject")).transpose()?;
    let artifact_type = o
        .get("artifactType")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| if is_index { None } else { blobs.first().map(|c| c.media_type.clone()) });
    let annotations = o.get("annotations").and_then(Value::as_object).cloned();
    Ok(ParsedManifest { media_type, blobs, manifests, subject, artifact_type, annotations })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_json_like_input(s in "[{}\\[\\]\",:a-z0-9 ]{0,80}") {
            let _ = parse_manifest(s.as_bytes(), None);
        }

        #[test]
        fn parsed_descriptors_always_carry_valid_digests(hex in "[0-9a-f]{64}", size in 0u64..1000) {
            let body = format!(
                r#"{{"schemaVersion":2,"config":{{"mediaType":"a","digest":"sha256:{hex}","size":{size}}},"layers":[]}}"#
            );
            let m = parse_manifest(body.as_bytes(), None).unwrap();
            prop_assert_eq!(m.blobs[0].digest.to_string(), hex);
            prop_assert_eq!(m.blobs[0].size, size);
        }
    }

    /// A descriptor as a client or upstream might write it: mostly valid,
    /// sometimes with a broken field.
    fn descriptor_json() -> impl Strategy<Value = Value> {
        let media = prop_oneof![
            Just(Value::from("application/vnd.oci.image.layer.v1.tar+gzip")),
            Just(Value::from(OCI_MANIFEST)),
            Just(Value::from("application/vnd.oci.image.layer.nondistributable.v1.tar")),
            "\\PC{0,12}".prop_map(Value::from),
        ];
        let media = prop_oneof![16 => media, 1 => Just(Value::from(7))];
        let digest = prop_oneof![
            16 => any::<[u8; 32]>().prop_map(|b| Value::from(Digest::from_bytes(b).oci())),
            1 => "[0-9a-f]{64}".prop_map(Value::from),
            1 => "sha(256|512):[0-9a-fA-F]{0,66}".prop_map(Value::from),
            1 => Just(Value::Null),
        ];
        let size = prop_oneof![
            16 => any::<u64>().prop_map(Value::from),
            1 => any::<i64>().prop_map(Value::from),
            1 => Just(Value::from(1.5)),
            1 => Just(Value::from("12")),
        ];
        let urls = proptest::option::of(proptest::collection::vec("[a-z:/.]{0,10}", 0..2));
        (media, digest, size, proptest::option::of("[a-z/]{1,10}"), urls, proptest::bool::weighted(0.05)).prop_map(
            |(m, d, s, at, urls, drop_size)| {
                let mut o = serde_json::json!({"mediaType": m, "digest": d});
                if !drop_size {
                    o["size"] = s;
                }
                if let Some(a) = at {
                    o["artifactType"] = Value::from(a);
                }
                if let Some(u) = urls {
                    o["urls"] = Value::from(u);
                }
                o
            },
        )
    }

    /// An image manifest or index, near valid.
    fn manifest_json() -> impl Strategy<Value = Value> {
        let media = proptest::option::of(prop_oneof![
            proptest::sample::select(MANIFEST_TYPES.to_vec()).prop_map(Value::from),
            Just(Value::from("application/json")),
            Just(Value::from(2)),
        ]);
        let version = prop_oneof![8 => Just(Value::from(2)), 1 => Just(Value::from(1)), 1 => Just(Value::from("2"))];
        let list = || proptest::option::weighted(0.8, proptest::collection::vec(descriptor_json(), 0..3));
        let annotations = proptest::option::of(proptest::collection::btree_map("[a-z.]{1,8}", "\\PC{0,8}", 0..3));
        (
            media,
            version,
            proptest::option::weighted(0.8, descriptor_json()),
            list(),
            list(),
            proptest::option::of(descriptor_json()),
            proptest::option::of("[a-z/]{1,10}"),
            annotations,
        )
            .prop_map(|(media, version, config, layers, manifests, subject, at, ann)| {
                let mut o = serde_json::json!({"schemaVersion": version});
                let fields = [
                    ("mediaType", media),
                    ("config", config),
                    ("layers", layers.map(Value::from)),
                    ("manifests", manifests.map(Value::from)),
                    ("subject", subject),
                    ("artifactType", at.map(Value::from)),
                    ("annotations", ann.map(|a| serde_json::to_value(a).unwrap())),
                ];
                for (k, v) in fields {
                    if let Some(v) = v {
                        o[k] = v;
                    }
                }
                o
            })
    }

    /// A checked manifest written back as JSON.
    fn render(m: &ParsedManifest) -> Value {
        let desc = |d: &Descriptor| {
            let mut o = serde_json::json!({"mediaType": d.media_type, "digest": d.digest.oci(), "size": d.size});
            if let Some(a) = &d.artifact_type {
                o["artifactType"] = Value::from(a.as_str());
            }
            if d.external {
                o["urls"] = serde_json::json!(["https://elsewhere.example/l"]);
            }
            o
        };
        let mut o = serde_json::json!({"schemaVersion": 2, "mediaType": m.media_type});
        if m.media_type == OCI_INDEX || m.media_type == DOCKER_LIST {
            o["manifests"] = m.manifests.iter().map(desc).collect();
        } else {
            o["config"] = desc(&m.blobs[0]);
            o["layers"] = m.blobs[1..].iter().map(desc).collect();
        }
        if let Some(s) = &m.subject {
            o["subject"] = desc(s);
        }
        if let Some(a) = &m.artifact_type {
            o["artifactType"] = Value::from(a.as_str());
        }
        if let Some(a) = &m.annotations {
            o["annotations"] = Value::Object(a.clone());
        }
        o
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parse_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            ct in proptest::option::of("\\PC{0,40}"),
        ) {
            let _ = parse_manifest(&bytes, ct.as_deref());
        }

        #[test]
        fn near_valid_manifests_and_indexes_parse_or_fail_cleanly_and_accepted_ones_round_trip(
            v in manifest_json(),
            ct in proptest::option::of(proptest::sample::select(vec![OCI_MANIFEST, OCI_INDEX, DOCKER_LIST, "application/json", "text/plain"])),
        ) {
            let bytes = serde_json::to_vec(&v).unwrap();
            if let Ok(m) = parse_manifest(&bytes, ct) {
                prop_assert!(MANIFEST_TYPES.contains(&m.media_type.as_str()));
                let again = serde_json::to_vec(&render(&m)).unwrap();
                let back = parse_manifest(&again, Some(&m.media_type)).unwrap();
                prop_assert_eq!(&back.media_type, &m.media_type);
                prop_assert_eq!(&back.blobs, &m.blobs);
                prop_assert_eq!(&back.manifests, &m.manifests);
                prop_assert_eq!(&back.subject, &m.subject);
                prop_assert_eq!(&back.artifact_type, &m.artifact_type);
                prop_assert_eq!(&back.annotations, &m.annotations);
            }
        }
    }

    fn image(extra: &str) -> String {
        let c = Digest::of(b"c").oci();
        let l = Digest::of(b"l").oci();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{c}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{l}","size":1}}]{extra}}}"#
        )
    }

    #[test]
    fn image_manifest_lists_config_and_layers_and_artifact_type_falls_back_to_config() {
        let m = parse_manifest(image("").as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(m.blobs[1].digest, Digest::of(b"l"));
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
        assert!(m.subject.is_none());
    }

    #[test]
    fn subject_and_artifact_type_are_read() {
        let s = Digest::of(b"s").oci();
        let extra =
            format!(r#","artifactType":"x/sig","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{s}","size":9}}"#);
        let m = parse_manifest(image(&extra).as_bytes(), None).unwrap();
        assert_eq!(m.subject.unwrap().digest, Digest::of(b"s"));
        assert_eq!(m.artifact_type.as_deref(), Some("x/sig"));
    }

    #[test]
    fn content_type_disagreeing_with_media_type_is_invalid() {
        let e = parse_manifest(image("").as_bytes(), Some(DOCKER_MANIFEST)).unwrap_err();
        assert!(matches!(e, OciError::ManifestInvalid(r) if r.contains("differs")));
    }

    #[test]
    fn broken_manifests_are_refused_with_reason() {
        let cases = [
            ("not json", "not JSON"),
            ("[]", "not a JSON object"),
            (r#"{"schemaVersion":1,"config":{},"layers":[]}"#, "schemaVersion"),
            (r#"{"schemaVersion":2,"layers":[]}"#, "config"),
            (
                r#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:00","size":1},"layers":[]}"#,
                "config.digest",
            ),
            (
                &format!(
                    r#"{{"schemaVersion":2,"config":{{"mediaType":"a","digest":"{}","size":-1}},"layers":[]}}"#,
                    Digest::of(b"").oci()
                ),
                "size",
            ),
        ];
        for (body, want) in cases {
            match parse_manifest(body.as_bytes(), None) {
                Err(OciError::ManifestInvalid(r)) => assert!(r.contains(want), "{body}: {r}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn schema1_manifest_is_unsupported() {
        let e = parse_manifest(b"{}", Some("application/vnd.docker.distribution.manifest.v1+prettyjws")).unwrap_err();
        assert!(matches!(e, OciError::ManifestUnsupported(_)));
    }

    #[test]
    fn index_without_media_type_is_detected_from_manifests_field() {
        let d = Digest::of(b"m").oci();
        let body =
            format!(r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":3}}]}}"#);
        let m = parse_manifest(body.as_bytes(), Some("application/json")).unwrap();
        assert_eq!(m.media_type, OCI_INDEX);
        assert_eq!(m.manifests.len(), 1);
        assert!(m.artifact_type.is_none());
    }
}
