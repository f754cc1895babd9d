//! Public-API tests of blob put/get, on both backends (filesystem-only
//! ones say so).

mod common;

use std::io::{Read, Write};

use cairn_store::{Digest, Store, StoreError};
use common::Env;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("data")).unwrap();
    (dir, s)
}

both_backends!(
    put_then_get_returns_same_bytes_under_sha256_name,
    put_with_wrong_expected_digest_stores_nothing,
    putting_an_existing_blob_reports_it_and_keeps_the_object,
    dropped_writer_leaves_no_temp_file_and_no_object,
    concurrent_puts_of_one_blob_all_succeed_with_one_intact_copy,
    putting_an_existing_blob_refreshes_its_mtime_for_gc_grace,
    stats_count_blobs_bytes_and_manifests,
    saving_a_manifest_with_absent_blobs_names_them_and_writes_nothing,
    chunks_handed_over_and_written_mixed_are_hashed_in_order,
    handed_over_chunks_with_a_wrong_digest_store_nothing,
);
// Not on S3: an object's mtime cannot be refreshed (GC grace counts from creation).
s3_backend!(
    put_then_get_returns_same_bytes_under_sha256_name,
    put_with_wrong_expected_digest_stores_nothing,
    putting_an_existing_blob_reports_it_and_keeps_the_object,
    dropped_writer_leaves_no_temp_file_and_no_object,
    concurrent_puts_of_one_blob_all_succeed_with_one_intact_copy,
    stats_count_blobs_bytes_and_manifests,
    saving_a_manifest_with_absent_blobs_names_them_and_writes_nothing,
    chunks_handed_over_and_written_mixed_are_hashed_in_order,
    handed_over_chunks_with_a_wrong_digest_store_nothing,
);

fn put_then_get_returns_same_bytes_under_sha256_name(env: &Env) {
    let s = env.store();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = s.put_reader(&data[..], None).unwrap();
    assert_eq!(out.digest, Digest::of(&data));
    assert!(!out.existed);
    if let Some(dir) = env.data_dir() {
        assert!(dir.join("objects").join(out.digest.to_string()).is_file());
    }
    let mut back = Vec::new();
    s.get(&out.digest).unwrap().read_to_end(&mut back).unwrap();
    assert_eq!(back, data);
    let mut part = Vec::new();
    s.get_range(&out.digest, 10, Some(5)).unwrap().read_to_end(&mut part).unwrap();
    assert_eq!(part, &data[10..15]);
    assert!(matches!(s.get_range(&out.digest, 0, Some(data.len() as u64 + 1)), Err(StoreError::Range { .. })));
    assert_eq!(s.size(&out.digest).unwrap(), data.len() as u64);
    assert_eq!(s.list().unwrap().map(Result::unwrap).collect::<Vec<_>>(), vec![out.digest]);
}

fn put_with_wrong_expected_digest_stores_nothing(env: &Env) {
    let s = env.store();
    let wrong = Digest::of(b"other");
    let e = s.put_reader(&b"hello"[..], Some(&wrong)).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&wrong.to_string()) && msg.contains(&Digest::of(b"hello").to_string()), "{msg}");
    assert_eq!(s.list().unwrap().count(), 0);
    assert_eq!(s.temporaries().unwrap(), 0);
}

fn putting_an_existing_blob_reports_it_and_keeps_the_object(env: &Env) {
    let s = env.store();
    let a = s.put_reader(&b"same"[..], None).unwrap();
    let p = env.data_dir().map(|d| d.join("objects").join(a.digest.to_string()));
    let ino = p.as_ref().map(|p| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap()));
    let b = s.put_reader(&b"same"[..], None).unwrap();
    assert!(b.existed);
    assert_eq!(ino, p.as_ref().map(|p| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap())));
}

fn dropped_writer_leaves_no_temp_file_and_no_object(env: &Env) {
    let s = env.store();
    let mut w = s.writer().unwrap();
    w.write_all(b"partial").unwrap();
    assert_eq!(s.temporaries().unwrap(), 1, "the write in flight is counted");
    drop(w);
    assert_eq!(s.temporaries().unwrap(), 0);
    assert_eq!(s.list().unwrap().count(), 0);
}

fn concurrent_puts_of_one_blob_all_succeed_with_one_intact_copy(env: &Env) {
    let s = env.store();
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let outs: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8).map(|_| sc.spawn(|| s.put_reader(&data[..], None))).collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    assert!(outs.iter().all(|o| o.digest == Digest::of(&data)));
    assert!(s.verify_blob(&outs[0].digest).unwrap());
    assert_eq!(s.list().unwrap().count(), 1);
}

/// Filesystem only: crash leftovers in `tmp/`.
#[test]
fn reopening_sweeps_temp_files_left_by_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    drop(Store::open(&root).unwrap());
    std::fs::write(root.join("tmp/deadbeef.part"), b"half").unwrap();
    let s = Store::open(&root).unwrap();
    assert_eq!(s.temporaries().unwrap(), 0);
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
}

/// Filesystem only: the data-dir lock between processes.
#[test]
fn open_does_not_sweep_while_another_handle_is_writing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let first = Store::open(&root).unwrap();
    let mut w = first.writer().unwrap();
    w.write_all(b"in flight").unwrap();
    let _second = Store::open(&root).unwrap();
    let out = w.commit(None).unwrap();
    assert!(first.exists(&out.digest));
}

fn putting_an_existing_blob_refreshes_its_mtime_for_gc_grace(env: &Env) {
    let s = env.store();
    let d = s.put_reader(&b"old"[..], None).unwrap().digest;
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
    env.age(&d, 86_400);
    assert!(env.mtime(&d) <= long_ago + std::time::Duration::from_secs(60));
    assert!(s.put_reader(&b"old"[..], None).unwrap().existed);
    let mtime = env.mtime(&d);
    assert!(mtime > long_ago + std::time::Duration::from_secs(3600), "mtime not refreshed");
}

/// Filesystem only: file modes.
#[test]
fn stored_objects_are_read_only_files() {
    let (t, s) = store();
    let d = s.put_reader(&b"ro"[..], None).unwrap().digest;
    let p = t.path().join("data/objects").join(d.to_string());
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions());
    assert_eq!(mode & 0o222, 0, "object is writable: {mode:o}");
}

fn stats_count_blobs_bytes_and_manifests(env: &Env) {
    let s = env.store();
    let a = s.put_reader(&b"12345"[..], None).unwrap().digest;
    s.put_reader(&b"678"[..], None).unwrap();
    let mut m = cairn_store::Manifest::new(&cairn_store::RefName::parse("m").unwrap());
    m.objects.insert("a".into(), a);
    s.save_manifest(&m).unwrap();
    assert_eq!(s.stats().unwrap(), cairn_store::Stats { blobs: 2, bytes: 8, refs: 1 });
}

fn saving_a_manifest_with_absent_blobs_names_them_and_writes_nothing(env: &Env) {
    let s = env.store();
    let here = s.put_reader(&b"here"[..], None).unwrap().digest;
    let absent = Digest::of(b"absent");
    let mut m = cairn_store::Manifest::new(&cairn_store::RefName::parse("m").unwrap());
    m.objects.insert("a".into(), here);
    m.objects.insert("b".into(), absent);
    match s.save_manifest(&m) {
        Err(StoreError::MissingBlobs { missing, .. }) => assert_eq!(missing, vec![absent]),
        other => panic!("{other:?}"),
    }
    assert!(s.list_manifests().unwrap().is_empty());
    assert_eq!(s.temporaries().unwrap(), 0);
}

#[test]
fn read_aligned_returns_the_bytes_in_a_page_aligned_region_then_an_empty_range_at_eof() {
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    let mut r = &data[..];
    let (buf, range) = cairn_store::blob::read_aligned(&mut r, 8192).unwrap();
    assert_eq!(buf[range.clone()].as_ptr() as usize % 4096, 0);
    assert_eq!(&buf[range], &data[..8192]);
    let (buf, range) = cairn_store::blob::read_aligned(&mut r, 8192).unwrap();
    assert_eq!(&buf[range], &data[8192..]);
    let (_, range) = cairn_store::blob::read_aligned(&mut r, 8192).unwrap();
    assert!(range.is_empty());
}

fn chunks_handed_over_and_written_mixed_are_hashed_in_order(env: &Env) {
    let s = env.store();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut w = s.writer().unwrap();
    w.write_all(&data[..1000]).unwrap();
    for c in data[1000..2_000_000].chunks(300_000) {
        w.write_owned(c.to_vec()).unwrap();
    }
    w.write_all(&data[2_000_000..]).unwrap();
    let out = w.commit(Some(&Digest::of(&data))).unwrap();
    assert_eq!(out.size, data.len() as u64);
    assert!(s.verify_blob(&out.digest).unwrap());
}

fn handed_over_chunks_with_a_wrong_digest_store_nothing(env: &Env) {
    let s = env.store();
    let mut w = s.writer().unwrap();
    w.write_owned(b"not what was promised".to_vec()).unwrap();
    let want = Digest::of(b"promised");
    assert!(matches!(w.commit(Some(&want)), Err(StoreError::DigestMismatch { .. })));
    assert!(!s.exists(&want));
    assert_eq!(s.temporaries().unwrap(), 0);
}
