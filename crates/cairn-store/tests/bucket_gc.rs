//! GC of a store in a bucket (moto), with two nodes sharing the bucket:
//! one pushes, the other collects. No lock is shared between them, as
//! between nodes; the grace period and the order of a push keep it safe.
//! Skipped when moto is not installed.

use std::time::{Duration, Instant, SystemTime};

use cairn_store::backend::BlobBackend;
use cairn_store::backend::MetaBackend;
use cairn_store::backend::object::{ObjectBackend, S3Options};
use cairn_store::oci::{Reference, Registry, RegistryOptions, RepoName, Tag};
use cairn_store::{Digest, GcOptions, Manifest, RefName, Store, StoreOptions};
use cairn_testkit::s3::MotoServer;

/// Short, so the tests wait little; S3 times have whole seconds.
const GRACE: Duration = Duration::from_secs(2);

fn node(m: &MotoServer) -> ObjectBackend {
    let mut o = S3Options::new(&m.bucket, &m.region);
    o.endpoint = Some(m.endpoint.clone());
    o.credentials = Some((m.access_key.clone(), m.secret_key.clone()));
    o.prefix = "cairn".into();
    ObjectBackend::s3(&o).unwrap()
}

fn store(b: &ObjectBackend) -> Store {
    Store::with_backend(Box::new(b.clone()), StoreOptions::default())
}

fn gc(s: &Store, grace: Duration) -> cairn_store::GcReport {
    s.gc(GcOptions { grace, dry_run: false }).unwrap()
}

/// Waits (polling, with a deadline) until every blob's newest time is
/// more than `GRACE` ago, as the bucket reports it.
fn wait_older_than_grace(b: &ObjectBackend, ds: &[Digest]) {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let now = SystemTime::now();
        let old = ds.iter().all(|d| {
            let (_, t) = b.stat_mtime(d).unwrap().unwrap();
            now.duration_since(t).is_ok_and(|age| age > GRACE + Duration::from_millis(100))
        });
        if old {
            return;
        }
        assert!(Instant::now() < end, "blobs did not age past the grace");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn image(config: &Digest, layer: &Digest) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":5}}]}}"#,
        config.oci(),
        layer.oci()
    )
    .into_bytes()
}

#[test]
fn gc_on_a_bucket_deletes_only_what_no_manifest_tag_or_ref_in_the_bucket_references() {
    let Some(m) = MotoServer::start("gc_on_a_bucket_deletes_only_what_no_manifest_tag_or_ref_in_the_bucket_references")
    else {
        return;
    };
    let (a, b) = (node(&m), node(&m));
    let sa = store(&a);
    let reg = Registry::new(sa.clone(), RegistryOptions::default()).unwrap();
    let config = sa.put_reader(&b"{}"[..], None).unwrap().digest;
    let layer = sa.put_reader(&b"layer"[..], None).unwrap().digest;
    let repo = RepoName::parse("app").unwrap();
    let tagged = reg
        .put_manifest(&repo, &Reference::Tag(Tag::parse("v1").unwrap()), &image(&config, &layer), None)
        .unwrap()
        .digest;
    let in_ref = sa.put_reader(&b"in a ref"[..], None).unwrap().digest;
    let mut mf = Manifest::new(&RefName::parse("tree").unwrap());
    mf.objects.insert("f".into(), in_ref);
    sa.save_manifest(&mf).unwrap();
    let garbage = sa.put_reader(&b"garbage"[..], None).unwrap().digest;
    wait_older_than_grace(&a, &[config, layer, tagged, in_ref, garbage]);
    let young = sa.put_reader(&b"young garbage"[..], None).unwrap().digest;

    // Collected by the other node, from what the bucket holds.
    let sb = store(&b);
    let dry = sb.gc(GcOptions { grace: GRACE, dry_run: true }).unwrap();
    assert_eq!(dry.blobs, vec![(garbage, 7)], "{dry:?}");
    let r = gc(&sb, GRACE);
    assert_eq!((r.blobs, r.referenced, r.young), (vec![(garbage, 7)], 4, 1));
    for d in [config, layer, tagged, in_ref, young] {
        assert!(sb.exists(&d), "{d} was kept");
    }
    let keys = m.keys();
    assert!(!keys.contains(&format!("cairn/objects/{garbage}")), "{keys:?}");
    assert!(keys.contains(&format!("cairn/objects/{young}")));
}

#[test]
fn a_blob_pushed_on_one_node_is_kept_by_a_gc_on_another_until_its_manifest_links_it() {
    let Some(m) = MotoServer::start("a_blob_pushed_on_one_node_is_kept_by_a_gc_on_another_until_its_manifest_links_it")
    else {
        return;
    };
    let (a, b) = (node(&m), node(&m));
    let (sa, sb) = (store(&a), store(&b));
    // An old unreferenced blob, small (one PUT) and large (multipart).
    let big: Vec<u8> = (0..cairn_store::backend::object::PART_SIZE + 3).map(|i| (i % 241) as u8).collect();
    let old = sa.put_reader(&b"pushed before"[..], None).unwrap().digest;
    let old_big = sa.put_reader(&big[..], None).unwrap().digest;
    wait_older_than_grace(&a, &[old, old_big]);

    // Node A pushes it again, and a new one: blobs first...
    assert!(sa.put_reader(&b"pushed before"[..], None).unwrap().existed);
    assert!(sa.put_reader(&big[..], None).unwrap().existed);
    let new = sa.put_reader(&b"pushed now"[..], None).unwrap().digest;
    // ...then node B collects, before A's manifest exists: all are young.
    let r = gc(&sb, GRACE);
    assert!(r.blobs.is_empty(), "a blob just pushed (or pushed again) was collected: {r:?}");
    assert_eq!(r.young, 3);
    // ...then the manifest links them: kept whatever the grace.
    let mut mf = Manifest::new(&RefName::parse("app").unwrap());
    mf.objects.insert("old".into(), old);
    mf.objects.insert("big".into(), old_big);
    mf.objects.insert("new".into(), new);
    sa.save_manifest(&mf).unwrap();
    let r = gc(&sb, Duration::ZERO);
    assert!(r.blobs.is_empty(), "{r:?}");
    assert_eq!(r.referenced, 3);
    for d in [old, old_big, new] {
        assert!(sb.exists(&d));
    }
}

#[test]
fn gc_on_a_bucket_sweeps_stale_tmp_objects_and_orphan_markers() {
    let Some(m) = MotoServer::start("gc_on_a_bucket_sweeps_stale_tmp_objects_and_orphan_markers") else {
        return;
    };
    let a = node(&m);
    let s = store(&a);
    // What a failed commit leaves: a completed upload in tmp/ never copied.
    a.put("tmp/0123456789abcdef0123456789abcdef", b"leftover").unwrap();
    // And the refresh marker of a blob deleted behind the store's back.
    let gone = Digest::of(b"gone");
    a.put(&format!("touched/{gone}"), b"").unwrap();
    assert_eq!(a.temporaries().unwrap(), 1);
    let r = gc(&s, Duration::from_secs(3600));
    assert_eq!(r.temporaries, 0, "young temporaries are left alone");
    let r = gc(&s, Duration::ZERO);
    assert_eq!(r.temporaries, 2);
    assert_eq!(a.temporaries().unwrap(), 0);
    assert!(m.keys().is_empty(), "{:?}", m.keys());
}

#[test]
fn a_manifest_push_refreshes_the_old_blobs_it_references_for_a_gc_on_another_node() {
    let Some(m) = MotoServer::start("a_manifest_push_refreshes_the_old_blobs_it_references_for_a_gc_on_another_node")
    else {
        return;
    };
    let a = node(&m);
    let sa = store(&a);
    let reg = Registry::new(sa.clone(), RegistryOptions::default()).unwrap();
    // Layers already in the bucket, old and unreferenced: a client that
    // finds them (HEAD) pushes only the manifest.
    let config = sa.put_reader(&b"{}"[..], None).unwrap().digest;
    let layer = sa.put_reader(&b"layer"[..], None).unwrap().digest;
    wait_older_than_grace(&a, &[config, layer]);
    let repo = RepoName::parse("app").unwrap();
    reg.put_manifest(&repo, &Reference::Tag(Tag::parse("v2").unwrap()), &image(&config, &layer), None).unwrap();
    // A GC that read the roots before the push re-stats each candidate
    // just before deleting it: it must find them young.
    let now = SystemTime::now();
    for d in [config, layer] {
        let (_, t) = a.stat_mtime(&d).unwrap().unwrap();
        let age = now.duration_since(t).unwrap_or_default();
        assert!(age < GRACE, "{d} was refreshed by the push ({age:?} old)");
    }
}
