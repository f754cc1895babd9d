//! The durable tier (a data dir in front of a bucket) against a real S3
//! server (moto) and an independent client (boto3); skipped when moto is
//! not installed.

use std::time::Duration;

use cairn_store::backend::object::{ObjectBackend, PART_SIZE, S3Options};
use cairn_store::cache::Provenance;
use cairn_store::oci::{Registry, RegistryOptions, RepoName};
use cairn_store::tier::TierOptions;
use cairn_store::{Digest, Manifest, RefName, Store, StoreOptions};
use cairn_testkit::s3::MotoServer;

fn bucket(m: &MotoServer) -> ObjectBackend {
    let mut o = S3Options::new(&m.bucket, &m.region);
    o.endpoint = Some(m.endpoint.clone());
    o.credentials = Some((m.access_key.clone(), m.secret_key.clone()));
    o.prefix = "tier".into();
    ObjectBackend::s3(&o).unwrap()
}

fn tiered(m: &MotoServer) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_tiered(dir.path(), StoreOptions::default(), bucket(m), TierOptions::default()).unwrap();
    (dir, s)
}

fn big(seed: u8) -> Vec<u8> {
    (0..PART_SIZE * 2 + 4321).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn keys_under(m: &MotoServer, prefix: &str) -> Vec<String> {
    m.keys().into_iter().filter(|k| k.starts_with(prefix)).collect()
}

#[test]
fn a_put_is_in_the_bucket_when_it_returns_and_boto3_reads_it_back() {
    let Some(m) = MotoServer::start("a_put_is_in_the_bucket_when_it_returns_and_boto3_reads_it_back") else {
        return;
    };
    let (_d, s) = tiered(&m);
    let data = big(1);
    let want = Digest::of(&data);
    // Digest known up front (a push by digest): uploaded at its final name.
    let by_digest = s.put_reader(&data[..], Some(&want)).unwrap();
    assert!(!by_digest.existed);
    // Digest unknown (a plain put): through tmp/ and a copy.
    let other = big(2);
    let plain = s.put_reader(&other[..], None).unwrap().digest;
    let small = s.put_reader(&b"small"[..], None).unwrap().digest;
    for d in [want, plain, small] {
        assert_eq!(m.sha256_of(&format!("tier/objects/{d}")), d.to_string(), "boto3 hashes {d} to its name");
        assert!(s.exists(&d), "the local copy is there too");
    }
    assert!(keys_under(&m, "tier/tmp/").is_empty(), "no temp object is left: {:?}", m.keys());
    assert_eq!(s.tier().unwrap().stats().uploads, 3);
    // A second put of what the bucket has uploads nothing.
    assert!(s.put_reader(&data[..], Some(&want)).unwrap().existed);
    assert_eq!(s.tier().unwrap().stats().uploads, 3);
}

#[test]
fn a_wrong_digest_leaves_nothing_in_the_bucket_or_on_disk() {
    let Some(m) = MotoServer::start("a_wrong_digest_leaves_nothing_in_the_bucket_or_on_disk") else { return };
    let (_d, s) = tiered(&m);
    let data = big(3);
    let claimed = Digest::of(b"something else");
    let e = s.put_reader(&data[..], Some(&claimed)).unwrap_err();
    assert!(e.to_string().contains("mismatch") || e.to_string().contains("expected"), "{e}");
    assert!(keys_under(&m, "tier/objects/").is_empty(), "nothing under objects/: {:?}", m.keys());
    assert!(!s.exists(&claimed) && !s.exists(&Digest::of(&data)));
    assert_eq!(s.temporaries().unwrap(), 0);
}

#[test]
fn refs_saved_through_one_store_are_seen_by_another_sharing_the_bucket() {
    let Some(m) = MotoServer::start("refs_saved_through_one_store_are_seen_by_another_sharing_the_bucket") else {
        return;
    };
    let (_a_dir, a) = tiered(&m);
    let (_b_dir, b) = tiered(&m);
    let d = a.put_reader(&b"layer"[..], None).unwrap().digest;
    let mut man = Manifest::new(&RefName::parse("app").unwrap());
    man.objects.insert("layer".into(), d);
    let rf = a.save_manifest(&man).unwrap();
    assert_eq!(b.resolve("app").unwrap(), rf, "B resolves the name A saved");
    assert_eq!(b.load_manifest(&rf).unwrap().digests(), vec![d]);
    assert!(!b.exists(&d), "B has the ref, not the blob: its fetch pipeline reads the bucket");
    assert_eq!(m.sha256_of(&format!("tier/objects/{d}")), d.to_string());
}

#[test]
fn a_snapshot_is_durable_in_the_bucket_when_it_returns() {
    let Some(m) = MotoServer::start("a_snapshot_is_durable_in_the_bucket_when_it_returns") else { return };
    let (_d, s) = tiered(&m);
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("a"), b"file a").unwrap();
    std::fs::create_dir(tree.path().join("sub")).unwrap();
    std::fs::write(tree.path().join("sub/b"), big(4)).unwrap();
    let r = s.snapshot(tree.path(), &RefName::parse("tree").unwrap(), &|_, _| {}).unwrap();
    let man = s.load_manifest(&r.ref_file).unwrap();
    for d in man.digests() {
        assert_eq!(m.sha256_of(&format!("tier/objects/{d}")), d.to_string());
    }
    assert!(m.keys().contains(&format!("tier/refs/{}", r.ref_file)));
}

#[test]
fn a_registry_upload_is_durable_in_the_bucket_before_it_is_visible() {
    let Some(m) = MotoServer::start("a_registry_upload_is_durable_in_the_bucket_before_it_is_visible") else {
        return;
    };
    let (_d, s) = tiered(&m);
    let r = Registry::new(s.clone(), RegistryOptions::default()).unwrap();
    let repo = RepoName::parse("team/app").unwrap();
    let data = big(5);
    let d = Digest::of(&data);
    let id = r.start_upload(&repo).unwrap();
    let half = data.len() / 2;
    r.append_upload(&repo, &id, Some(0), None, &data[..half]).unwrap();
    r.append_upload(&repo, &id, Some(half as u64), None, &data[half..]).unwrap();
    r.finish_upload(&repo, &id, &d).unwrap();
    assert_eq!(m.sha256_of(&format!("tier/objects/{d}")), d.to_string());
    assert!(s.exists(&d));
}

#[test]
fn a_dead_bucket_fails_the_put_and_leaves_no_local_blob() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{}", cairn_testkit::dead_addr());
    let mut o = S3Options::new("cairn-test", "us-east-1");
    o.endpoint = Some(endpoint.clone());
    o.credentials = Some(("testing".into(), "testing".into()));
    o.max_retries = 1;
    o.retry_timeout = Duration::from_secs(2);
    o.connect_timeout = Duration::from_secs(1);
    let b = ObjectBackend::s3(&o).unwrap();
    let s = Store::open_tiered(dir.path(), StoreOptions::default(), b, TierOptions::default()).unwrap();
    let data = b"must not be acknowledged".to_vec();
    let e = s.put_reader(&data[..], None).unwrap_err().to_string();
    assert!(e.contains(&endpoint) && e.contains("reachable"), "the error names the bucket and what to check: {e}");
    assert!(!s.exists(&Digest::of(&data)), "no local copy of an unacknowledged put");
    assert_eq!(s.temporaries().unwrap(), 0);
    assert!(s.tier().unwrap().stats().upload_errors >= 1);
}

#[test]
fn fetched_blobs_are_cached_locally_and_copied_to_the_bucket_in_the_background() {
    let Some(m) = MotoServer::start("fetched_blobs_are_cached_locally_and_copied_to_the_bucket_in_the_background")
    else {
        return;
    };
    let (_d, s) = tiered(&m);
    let data = big(6);
    let mut w = s.writer_for(Provenance::Fetched).unwrap();
    std::io::Write::write_all(&mut w, &data).unwrap();
    let d = w.commit(None).unwrap().digest;
    assert!(keys_under(&m, "tier/objects/").is_empty(), "a fetched copy is not written through");
    assert!(s.tier().unwrap().upload_in_background(d));
    let t = s.tier().unwrap();
    cairn_testkit::wait_for(Duration::from_secs(30), "the background copy", || t.stats().uploads == 1);
    assert_eq!(m.sha256_of(&format!("tier/objects/{d}")), d.to_string());
    // Evicted before its turn: skipped quietly, not an error.
    let gone = Digest::of(b"not here");
    assert!(t.upload_in_background(gone));
    cairn_testkit::wait_for(Duration::from_secs(30), "the skipped copy", || {
        t.stats().background_queued == 2 && t.stats().background_errors == 0
    });
}

#[test]
fn without_write_fetched_nothing_is_queued() {
    let Some(m) = MotoServer::start("without_write_fetched_nothing_is_queued") else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_tiered(dir.path(), StoreOptions::default(), bucket(&m), TierOptions { write_fetched: false })
        .unwrap();
    assert!(!s.tier().unwrap().upload_in_background(Digest::of(b"x")));
    assert_eq!(s.tier().unwrap().stats().background_queued, 0);
}
