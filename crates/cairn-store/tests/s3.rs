//! The object-store backend against a real S3 server (moto) and an
//! independent client (boto3); skipped when moto is not installed.

mod common;

use std::time::{Duration, Instant};

use cairn_store::backend::object::{ObjectBackend, PART_SIZE, S3Options};
use cairn_store::{Digest, Manifest, RefName, Store, StoreOptions};
use common::Env;

#[test]
fn blobs_and_manifests_written_through_cairn_read_back_with_boto3_under_their_digests() {
    let Some(env) = Env::s3("blobs_and_manifests_written_through_cairn_read_back_with_boto3_under_their_digests")
    else {
        return;
    };
    let s = env.store();
    // One blob through a single create-only PUT, one through a multipart upload.
    let small = s.put_reader(&b"a small blob"[..], None).unwrap().digest;
    let big: Vec<u8> = (0..PART_SIZE * 2 + 777).map(|i| (i * 7 % 251) as u8).collect();
    let big = s.put_reader(&big[..], None).unwrap().digest;
    let mut m = Manifest::new(&RefName::parse("app").unwrap());
    m.objects.insert("small".into(), small);
    m.objects.insert("big".into(), big);
    let rf = s.save_manifest(&m).unwrap();

    let moto = env.moto().unwrap();
    for d in [small, big] {
        assert_eq!(moto.sha256_of(&format!("cairn/objects/{d}")), d.to_string(), "boto3 hashes {d} to its name");
    }
    let mut keys = moto.keys();
    keys.sort();
    // The save refreshed its blobs (GC grace): their `touched/` markers.
    let mut want = vec![
        format!("cairn/objects/{small}"),
        format!("cairn/objects/{big}"),
        format!("cairn/refs/{rf}"),
        format!("cairn/touched/{small}"),
        format!("cairn/touched/{big}"),
    ];
    want.sort();
    assert_eq!(keys, want, "only the documented keys, no temp object left");
}

#[test]
fn a_dead_endpoint_is_an_error_naming_it_not_a_panic_or_a_blob() {
    // An address nothing listens on: connections are refused.
    let endpoint = format!("http://{}", cairn_testkit::dead_addr());
    let mut o = S3Options::new("cairn-test", "us-east-1");
    o.endpoint = Some(endpoint.clone());
    o.credentials = Some(("testing".into(), "testing".into()));
    o.max_retries = 1;
    o.retry_timeout = Duration::from_secs(2);
    o.connect_timeout = Duration::from_secs(1);
    let s = Store::with_backend(Box::new(ObjectBackend::s3(&o).unwrap()), StoreOptions::default());
    let started = Instant::now();
    let names_it = |e: cairn_store::StoreError| {
        let msg = e.to_string();
        assert!(msg.contains(&endpoint), "the error names the endpoint: {msg}");
        assert!(msg.contains("reachable"), "the error says what to check: {msg}");
    };
    names_it(s.probe().unwrap_err());
    names_it(s.get(&Digest::of(b"x")).unwrap_err());
    names_it(s.put_reader(&b"some bytes"[..], None).unwrap_err());
    assert!(!s.exists(&Digest::of(b"some bytes")));
    assert!(started.elapsed() < Duration::from_secs(20), "failed fast: {:?}", started.elapsed());
}

#[test]
fn a_missing_bucket_is_an_error_naming_it_not_an_existing_blob() {
    let Some(moto) =
        cairn_testkit::s3::MotoServer::start("a_missing_bucket_is_an_error_naming_it_not_an_existing_blob")
    else {
        return;
    };
    let mut o = S3Options::new("no-such-bucket", &moto.region);
    o.endpoint = Some(moto.endpoint.clone());
    o.credentials = Some((moto.access_key.clone(), moto.secret_key.clone()));
    let s = Store::with_backend(Box::new(ObjectBackend::s3(&o).unwrap()), StoreOptions::default());
    let e = s.put_reader(&b"bytes for nowhere"[..], None).unwrap_err();
    assert!(e.to_string().contains("no-such-bucket"), "{e}");
    let big = vec![7u8; PART_SIZE + 1];
    let e = s.put_reader(&big[..], None).unwrap_err();
    assert!(e.to_string().contains("no-such-bucket"), "{e}");
    assert!(s.probe().is_err());
}
