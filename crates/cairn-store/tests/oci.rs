//! The registry metadata: manifests, tags, uploads, GC roots, on both
//! backends (filesystem-only ones say so).

mod common;

use std::time::Duration;

use cairn_store::oci::manifest::{OCI_INDEX, OCI_MANIFEST};
use cairn_store::oci::{OciError, Reference, Registry, RegistryOptions, RepoName, Tag, UploadId};
use cairn_store::{Digest, Store, StoreOptions};
use common::Env;

both_backends!(
    manifest_with_missing_layer_is_refused_and_stores_nothing,
    pushed_manifest_resolves_by_tag_and_digest_and_delete_removes_its_tags,
    manifest_pushed_by_wrong_digest_is_a_mismatch,
    chunked_upload_survives_a_new_registry_handle_and_rejects_out_of_order_chunks,
    fsynced_chunked_upload_past_the_write_back_threshold_keeps_every_byte_and_a_cut_chunk_rolls_back,
    upload_of_other_repository_or_malformed_id_is_unknown,
    finished_upload_with_wrong_digest_stores_nothing_and_ends_the_session,
    idle_uploads_expire_after_the_ttl,
    registry_roots_keep_tagged_closure_and_referrers_but_not_old_untagged_manifests,
    cache_pins_pushed_manifests_tagged_or_not_and_fresh_pushed_blobs_but_not_what_the_mirror_fetched,
    referrers_list_only_live_manifests_and_filter_by_artifact_type,
    gc_with_zero_grace_keeps_tagged_images_and_deletes_old_untagged_ones,
    tag_repointed_by_another_handle_is_served_at_its_new_manifest_by_a_caching_handle,
    tag_or_manifest_deleted_by_another_handle_is_unknown_to_a_caching_handle,
    manifest_object_removed_behind_a_caching_handle_is_unknown,
    caching_handle_sees_its_own_repush_and_deletes,
    default_handle_does_not_cache_a_tag_written_just_now,
    upload_sessions_left_by_an_earlier_run_count_against_the_caps_after_a_restart,
);
s3_backend!(
    chunked_upload_survives_a_new_registry_handle_and_rejects_out_of_order_chunks,
    fsynced_chunked_upload_past_the_write_back_threshold_keeps_every_byte_and_a_cut_chunk_rolls_back,
    upload_of_other_repository_or_malformed_id_is_unknown,
    finished_upload_with_wrong_digest_stores_nothing_and_ends_the_session,
    idle_uploads_expire_after_the_ttl,
    upload_sessions_left_by_an_earlier_run_count_against_the_caps_after_a_restart,
    manifest_with_missing_layer_is_refused_and_stores_nothing,
    pushed_manifest_resolves_by_tag_and_digest_and_delete_removes_its_tags,
    manifest_pushed_by_wrong_digest_is_a_mismatch,
    registry_roots_keep_tagged_closure_and_referrers_but_not_old_untagged_manifests,
    cache_pins_pushed_manifests_tagged_or_not_and_fresh_pushed_blobs_but_not_what_the_mirror_fetched,
    referrers_list_only_live_manifests_and_filter_by_artifact_type,
    gc_with_zero_grace_keeps_tagged_images_and_deletes_old_untagged_ones,
    tag_repointed_by_another_handle_is_served_at_its_new_manifest_by_a_caching_handle,
    tag_or_manifest_deleted_by_another_handle_is_unknown_to_a_caching_handle,
    manifest_object_removed_behind_a_caching_handle_is_unknown,
    caching_handle_sees_its_own_repush_and_deletes,
    default_handle_does_not_cache_a_tag_written_just_now,
);

fn open(env: &Env) -> Registry {
    Registry::new(env.store_with(StoreOptions { fsync: false, ..Default::default() }), RegistryOptions::default())
        .unwrap()
}

fn open_dir(dir: &std::path::Path) -> Registry {
    let s = Store::open_with(dir, StoreOptions { fsync: false, ..Default::default() }).unwrap();
    Registry::new(s, RegistryOptions::default()).unwrap()
}

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

fn tag(s: &str) -> Reference {
    Reference::Tag(Tag::parse(s).unwrap())
}

fn put_blob(r: &Registry, bytes: &[u8]) -> Digest {
    r.store().put_reader(bytes, None).unwrap().digest
}

fn image(config: &Digest, layers: &[Digest], extra: &str) -> Vec<u8> {
    let ls: Vec<String> = layers
        .iter()
        .map(|l| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":1}}"#, l.oci()))
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{}]{extra}}}"#,
        config.oci(),
        ls.join(",")
    )
    .into_bytes()
}

fn index(children: &[Digest]) -> Vec<u8> {
    let ms: Vec<String> = children
        .iter()
        .map(|c| format!(r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1}}"#, c.oci()))
        .collect();
    format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#, ms.join(",")).into_bytes()
}

fn manifest_with_missing_layer_is_refused_and_stores_nothing(env: &Env) {
    let r = open(env);
    let c = put_blob(&r, b"{}");
    let missing = Digest::of(b"absent");
    let m = image(&c, &[missing], "");
    match r.put_manifest(&repo("a/b"), &tag("v1"), &m, None) {
        Err(OciError::ManifestBlobUnknown(v)) => assert_eq!(v, vec![missing]),
        other => panic!("{other:?}"),
    }
    assert!(!r.store().exists(&Digest::of(&m)));
    assert!(matches!(r.tags(&repo("a/b")), Err(OciError::NameUnknown(_))));
}

fn pushed_manifest_resolves_by_tag_and_digest_and_delete_removes_its_tags(env: &Env) {
    let r = open(env);
    let c = put_blob(&r, b"{}");
    let l = put_blob(&r, b"layer");
    let m = image(&c, &[l], "");
    let rp = repo("x");
    let pushed = r.put_manifest(&rp, &tag("v1"), &m, Some(OCI_MANIFEST)).unwrap();
    r.put_manifest(&rp, &tag("v2"), &m, None).unwrap();
    assert_eq!(pushed.digest, Digest::of(&m));
    assert_eq!(r.get_manifest(&rp, &tag("v1")).unwrap().bytes, m);
    assert_eq!(r.get_manifest(&rp, &Reference::Digest(pushed.digest)).unwrap().media_type, OCI_MANIFEST);
    assert_eq!(r.tags(&rp).unwrap(), ["v1", "v2"]);
    assert_eq!(r.catalog().unwrap(), ["x"]);
    assert!(r.has_blob(&rp, &l), "layers are linked into the repository");
    r.delete_manifest(&rp, &tag("v2")).unwrap();
    assert_eq!(r.tags(&rp).unwrap(), ["v1"]);
    r.delete_manifest(&rp, &Reference::Digest(pushed.digest)).unwrap();
    assert!(r.tags(&rp).unwrap().is_empty());
    assert!(matches!(r.get_manifest(&rp, &Reference::Digest(pushed.digest)), Err(OciError::ManifestUnknown { .. })));
}

fn manifest_pushed_by_wrong_digest_is_a_mismatch(env: &Env) {
    let r = open(env);
    let c = put_blob(&r, b"{}");
    let m = image(&c, &[], "");
    let e = r.put_manifest(&repo("x"), &Reference::Digest(Digest::of(b"other")), &m, None).unwrap_err();
    assert!(matches!(e, OciError::DigestMismatch { .. }));
}

fn chunked_upload_survives_a_new_registry_handle_and_rejects_out_of_order_chunks(env: &Env) {
    let rp = repo("up");
    let id = {
        let r = open(env);
        let id = r.start_upload(&rp).unwrap();
        assert_eq!(r.append_upload(&rp, &id, Some(0), Some(5), &b"hello"[..]).unwrap(), 5);
        id
    };
    // A new handle has no cached hash state: it must rebuild it from the file.
    let r = open(env);
    assert_eq!(r.upload_size(&rp, &id).unwrap(), 5);
    let e = r.append_upload(&rp, &id, Some(3), None, &b"xx"[..]).unwrap_err();
    assert!(matches!(e, OciError::UploadRange { start: 3, size: 5, .. }), "{e:?}");
    let e = r.append_upload(&rp, &id, Some(5), Some(10), &b" world"[..]).unwrap_err();
    assert!(matches!(e, OciError::SizeInvalid { declared: 10, received: 6, .. }), "{e:?}");
    assert_eq!(r.upload_size(&rp, &id).unwrap(), 5, "a failed chunk leaves the old length");
    r.append_upload(&rp, &id, Some(5), None, &b" world"[..]).unwrap();
    let want = Digest::of(b"hello world");
    let out = r.finish_upload(&rp, &id, &want).unwrap();
    assert_eq!((out.digest, out.size), (want, 11));
    assert!(r.has_blob(&rp, &want));
    assert!(matches!(r.upload_size(&rp, &id), Err(OciError::UploadUnknown(_))));
}

/// A reader that yields `good` bytes of `bytes`, then fails like a dropped connection.
struct CutShort<'a> {
    bytes: &'a [u8],
    good: usize,
}

impl std::io::Read for CutShort<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.good == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "client went away"));
        }
        let n = buf.len().min(self.good);
        buf[..n].copy_from_slice(&self.bytes[..n]);
        (self.bytes, self.good) = (&self.bytes[n..], self.good - n);
        Ok(n)
    }
}

fn fsynced_chunked_upload_past_the_write_back_threshold_keeps_every_byte_and_a_cut_chunk_rolls_back(env: &Env) {
    const MIB: usize = 1 << 20;
    let s = env.store_with(StoreOptions { fsync: true, ..Default::default() });
    let r = Registry::new(s, RegistryOptions::default()).unwrap();
    let rp = repo("big");
    let bytes: Vec<u8> = (0..70 * MIB + 3).map(|i| (i * 13 % 251) as u8).collect();
    let id = r.start_upload(&rp).unwrap();
    // Chunks of uneven sizes, the second crossing 64 MiB (write-back starts there).
    assert_eq!(r.append_upload(&rp, &id, Some(0), None, &bytes[..40 * MIB]).unwrap(), (40 * MIB) as u64);
    let cut = CutShort { bytes: &bytes[40 * MIB..], good: 29 * MIB };
    assert!(matches!(r.append_upload(&rp, &id, Some((40 * MIB) as u64), None, cut), Err(OciError::Body { .. })));
    assert_eq!(r.upload_size(&rp, &id).unwrap(), (40 * MIB) as u64, "a cut chunk leaves the old length");
    r.append_upload(&rp, &id, Some((40 * MIB) as u64), None, &bytes[40 * MIB..69 * MIB]).unwrap();
    r.append_upload(&rp, &id, Some((69 * MIB) as u64), None, &bytes[69 * MIB..]).unwrap();
    let want = Digest::of(&bytes);
    let out = r.finish_upload(&rp, &id, &want).unwrap();
    assert_eq!((out.digest, out.size, out.existed), (want, bytes.len() as u64, false));
    assert!(r.store().verify_blob(&want).unwrap());
}

fn upload_of_other_repository_or_malformed_id_is_unknown(env: &Env) {
    let r = open(env);
    let id = r.start_upload(&repo("a")).unwrap();
    assert!(matches!(r.upload_size(&repo("b"), &id), Err(OciError::UploadUnknown(_))));
    assert!(matches!(UploadId::parse("../../etc"), Err(OciError::UploadUnknown(_))));
}

fn finished_upload_with_wrong_digest_stores_nothing_and_ends_the_session(env: &Env) {
    let r = open(env);
    let rp = repo("a");
    let id = r.start_upload(&rp).unwrap();
    r.append_upload(&rp, &id, None, None, &b"bytes"[..]).unwrap();
    let claimed = Digest::of(b"other");
    assert!(matches!(r.finish_upload(&rp, &id, &claimed), Err(OciError::DigestMismatch { .. })));
    assert!(!r.store().exists(&claimed));
    assert!(!r.store().exists(&Digest::of(b"bytes")));
    assert_eq!(r.store().list().unwrap().count(), 0);
    assert!(matches!(r.upload_size(&rp, &id), Err(OciError::UploadUnknown(_))));
}

fn idle_uploads_expire_after_the_ttl(env: &Env) {
    let rp = repo("a");
    let id = open(env).start_upload(&rp).unwrap();
    let s = env.store_with(StoreOptions { fsync: false, ..Default::default() });
    let r = Registry::new(s, RegistryOptions { upload_ttl: Duration::ZERO, ..Default::default() }).unwrap();
    assert!(matches!(r.upload_size(&rp, &id), Err(OciError::UploadUnknown(_))));
    assert!(!env.children("registry/uploads").contains(&id.to_string()));
}

fn registry_roots_keep_tagged_closure_and_referrers_but_not_old_untagged_manifests(env: &Env) {
    let r = open(env);
    let rp = repo("gc/x");
    let c = put_blob(&r, b"{}");
    let l1 = put_blob(&r, b"l1");
    let l2 = put_blob(&r, b"l2");
    let child = r
        .put_manifest(&rp, &Reference::Digest(Digest::of(&image(&c, &[l1], ""))), &image(&c, &[l1], ""), None)
        .unwrap();
    let idx = index(&[child.digest]);
    let top = r.put_manifest(&rp, &tag("latest"), &idx, None).unwrap();
    let sig_blob = put_blob(&r, b"sig");
    let subj =
        format!(r#","subject":{{"mediaType":"{OCI_INDEX}","digest":"{}","size":{}}}"#, top.digest.oci(), idx.len());
    let sig = image(&c, &[sig_blob], &subj);
    let referrer = r.put_manifest(&rp, &Reference::Digest(Digest::of(&sig)), &sig, None).unwrap();
    let orphan_m = image(&c, &[l2], "");
    let orphan = r.put_manifest(&rp, &Reference::Digest(Digest::of(&orphan_m)), &orphan_m, None).unwrap();

    let roots = r.store().registry_roots(Duration::ZERO).unwrap();
    for k in [top.digest, child.digest, c, l1, referrer.digest, sig_blob] {
        assert!(roots.contains(&k), "{k} should be kept");
    }
    assert!(!roots.contains(&orphan.digest) && !roots.contains(&l2), "old untagged manifest is not a root");

    let young = r.store().registry_roots(Duration::from_secs(3600)).unwrap();
    assert!(young.contains(&orphan.digest) && young.contains(&l2), "within grace everything is kept");
}

fn cache_pins_pushed_manifests_tagged_or_not_and_fresh_pushed_blobs_but_not_what_the_mirror_fetched(env: &Env) {
    let r = open(env);
    let rp = repo("pins/x");
    let c = put_blob(&r, b"{}");
    let l1 = put_blob(&r, b"pushed layer");
    let pushed_m = image(&c, &[l1], "");
    // Pushed by digest, no tag: a GC with no grace would take it, the cache must not.
    let pushed = r.put_manifest(&rp, &Reference::Digest(Digest::of(&pushed_m)), &pushed_m, None).unwrap();
    // What the mirror fetched: linked, never marked pushed.
    let l2 = put_blob(&r, b"mirrored layer");
    let mirrored_m = image(&c, &[l2], "");
    let mirrored = put_blob(&r, &mirrored_m);
    r.link_blob(&rp, &l2).unwrap();
    r.link_manifest(&rp, &mirrored, OCI_MANIFEST).unwrap();
    // A layer pushed just now whose manifest has not come yet.
    let fresh = put_blob(&r, b"layer of a push in progress");
    r.link_pushed_blob(&rp, &fresh).unwrap();

    let pins = r.store().registry_pins().unwrap();
    for k in [pushed.digest, c, l1, fresh] {
        assert!(pins.contains(&k), "{k} should be pinned");
    }
    assert!(!pins.contains(&mirrored) && !pins.contains(&l2), "the mirror's copies are evictable");
    let gc = r.store().registry_roots(Duration::ZERO).unwrap();
    assert!(!gc.contains(&pushed.digest), "GC keeps its own rule: untagged and old is not a root");
    // Deleting the pushed manifest unpins it.
    r.delete_manifest(&rp, &Reference::Digest(pushed.digest)).unwrap();
    assert!(!r.store().registry_pins().unwrap().contains(&pushed.digest));
}

fn referrers_list_only_live_manifests_and_filter_by_artifact_type(env: &Env) {
    let r = open(env);
    let rp = repo("ref");
    let c = put_blob(&r, b"{}");
    let subject = Digest::of(b"subject-not-pushed-yet");
    let mk = |t: &str| {
        let extra = format!(
            r#","artifactType":"{t}","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1}}"#,
            subject.oci()
        );
        let m = image(&c, &[], &extra);
        r.put_manifest(&rp, &Reference::Digest(Digest::of(&m)), &m, None).unwrap()
    };
    let a = mk("x/sig");
    let b = mk("x/sbom");
    assert_eq!(a.subject, Some(subject));
    assert_eq!(r.referrers(&rp, &subject, None).unwrap().len(), 2);
    let only = r.referrers(&rp, &subject, Some("x/sbom")).unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["digest"], b.digest.oci());
    r.delete_manifest(&rp, &Reference::Digest(a.digest)).unwrap();
    assert_eq!(r.referrers(&rp, &subject, None).unwrap().len(), 1);
}

fn gc_with_zero_grace_keeps_tagged_images_and_deletes_old_untagged_ones(env: &Env) {
    let r = open(env);
    let rp = repo("gc/run");
    let c = put_blob(&r, b"{\"config\":1}");
    let kept_layer = put_blob(&r, b"kept layer");
    let lost_layer = put_blob(&r, b"lost layer");
    let tagged = r.put_manifest(&rp, &tag("v1"), &image(&c, &[kept_layer], ""), None).unwrap();
    let orphan_m = image(&c, &[lost_layer], "");
    let orphan = r.put_manifest(&rp, &Reference::Digest(Digest::of(&orphan_m)), &orphan_m, None).unwrap();

    let report = r.store().gc(cairn_store::gc::GcOptions { grace: Duration::ZERO, dry_run: false }).unwrap();
    let deleted: Vec<Digest> = report.blobs.iter().map(|b| b.0).collect();
    for k in [tagged.digest, c, kept_layer] {
        assert!(r.store().exists(&k), "{k} of the tagged image was collected");
    }
    assert!(deleted.contains(&orphan.digest) && deleted.contains(&lost_layer), "deleted {deleted:?}");
    assert!(!r.store().exists(&lost_layer));
}

/// A handle whose manifest cache keeps files the test has just written.
fn open_caching(env: &Env) -> Registry {
    open(env).with_cache_settle(Duration::ZERO)
}

/// Pushes an image with one distinct layer under `t` in `rp`; its manifest bytes.
fn push_image(r: &Registry, rp: &RepoName, t: &str, layer: &[u8]) -> Vec<u8> {
    let c = put_blob(r, b"{}");
    let l = put_blob(r, layer);
    let m = image(&c, &[l], "");
    r.put_manifest(rp, &tag(t), &m, Some(OCI_MANIFEST)).unwrap();
    m
}

fn tag_repointed_by_another_handle_is_served_at_its_new_manifest_by_a_caching_handle(env: &Env) {
    let (server, cli) = (open_caching(env), open(env));
    let rp = repo("x");
    let old = push_image(&cli, &rp, "v1", b"old layer");
    assert_eq!(server.get_manifest(&rp, &tag("v1")).unwrap().bytes, old);
    // The second GET is answered from memory.
    assert_eq!(server.cached_manifest(&rp, &tag("v1")).unwrap().bytes, old);
    let new = push_image(&cli, &rp, "v1", b"new layer");
    assert!(server.cached_manifest(&rp, &tag("v1")).is_none(), "the tag file changed on disk");
    let got = server.get_manifest(&rp, &tag("v1")).unwrap();
    assert_eq!((got.digest, got.bytes), (Digest::of(&new), new));
}

fn tag_or_manifest_deleted_by_another_handle_is_unknown_to_a_caching_handle(env: &Env) {
    let (server, cli) = (open_caching(env), open(env));
    let rp = repo("x");
    let m = push_image(&cli, &rp, "v1", b"layer");
    cli.put_manifest(&rp, &tag("v2"), &m, None).unwrap();
    let by_digest = Reference::Digest(Digest::of(&m));
    for r in [tag("v1"), tag("v2"), by_digest.clone()] {
        server.get_manifest(&rp, &r).unwrap();
        assert!(server.cached_manifest(&rp, &r).is_some());
    }
    cli.delete_manifest(&rp, &tag("v1")).unwrap();
    assert!(matches!(server.get_manifest(&rp, &tag("v1")), Err(OciError::ManifestUnknown { .. })));
    assert_eq!(server.get_manifest(&rp, &tag("v2")).unwrap().bytes, m);
    cli.delete_manifest(&rp, &by_digest).unwrap();
    for r in [tag("v2"), by_digest] {
        assert!(matches!(server.get_manifest(&rp, &r), Err(OciError::ManifestUnknown { .. })), "{r}");
    }
}

fn manifest_object_removed_behind_a_caching_handle_is_unknown(env: &Env) {
    let server = open_caching(env);
    let rp = repo("x");
    let m = push_image(&server, &rp, "v1", b"layer");
    server.get_manifest(&rp, &tag("v1")).unwrap();
    assert!(server.cached_manifest(&rp, &tag("v1")).is_some());
    // What a GC or verify in another process does to the object.
    env.remove_blob_raw(&Digest::of(&m));
    assert!(server.cached_manifest(&rp, &tag("v1")).is_none());
    assert!(matches!(server.get_manifest(&rp, &tag("v1")), Err(OciError::ManifestUnknown { .. })));
}

fn caching_handle_sees_its_own_repush_and_deletes(env: &Env) {
    let r = open_caching(env);
    let rp = repo("x");
    push_image(&r, &rp, "v1", b"one");
    r.get_manifest(&rp, &tag("v1")).unwrap();
    let two = push_image(&r, &rp, "v1", b"two");
    assert_eq!(r.get_manifest(&rp, &tag("v1")).unwrap().bytes, two);
    r.delete_manifest(&rp, &tag("v1")).unwrap();
    assert!(matches!(r.get_manifest(&rp, &tag("v1")), Err(OciError::ManifestUnknown { .. })));
}

fn default_handle_does_not_cache_a_tag_written_just_now(env: &Env) {
    let r = open(env);
    let rp = repo("x");
    push_image(&r, &rp, "v1", b"one");
    r.get_manifest(&rp, &tag("v1")).unwrap();
    // Its inode number could come back within the timestamp granularity.
    assert!(r.cached_manifest(&rp, &tag("v1")).is_none());
}

fn upload_sessions_left_by_an_earlier_run_count_against_the_caps_after_a_restart(env: &Env) {
    let rp = repo("a");
    let client: std::net::IpAddr = "2001:db8::1".parse().unwrap();
    let opts = RegistryOptions { max_upload_sessions: 3, max_upload_sessions_per_client: 2, ..Default::default() };
    let reopen = || {
        let s = env.store_with(StoreOptions { fsync: false, ..Default::default() });
        Registry::new(s, opts.clone()).unwrap()
    };
    let r = reopen();
    r.start_upload_for(&rp, Some(client)).unwrap();
    // Another address in the same /64 is the same client.
    r.start_upload_for(&rp, Some("2001:db8::2".parse().unwrap())).unwrap();
    drop(r);
    let r = reopen();
    assert_eq!(r.open_uploads(), 2);
    let err = r.start_upload_for(&rp, Some("2001:db8::ffff".parse().unwrap())).unwrap_err();
    assert!(matches!(err, OciError::TooManyUploads { limit: 2, .. }), "{err}");
    let other = r.start_upload_for(&rp, Some("2001:db8:0:1::1".parse().unwrap())).unwrap();
    assert!(matches!(r.start_upload(&rp), Err(OciError::TooManyUploads { limit: 3, .. })));
    r.cancel_upload(&rp, &other).unwrap();
    r.start_upload(&rp).unwrap();
}

/// Filesystem only: symlinks.
#[test]
fn symlinks_planted_in_the_registry_metadata_are_not_followed() {
    let d = tempfile::tempdir().unwrap();
    let r = open_dir(d.path());
    let c = put_blob(&r, b"{}");
    let m = image(&c, &[], "");
    let x = repo("x");
    let pushed = r.put_manifest(&x, &tag("v1"), &m, Some(OCI_MANIFEST)).unwrap();
    let repos = d.path().join("registry/repositories");
    // A tag pointing at a file outside the data dir.
    let outside = d.path().join("outside-tag");
    std::fs::write(&outside, pushed.digest.oci()).unwrap();
    let t = Tag::parse("planted").unwrap();
    std::os::unix::fs::symlink(&outside, repos.join("x/_tags").join(t.as_str())).unwrap();
    assert!(matches!(r.get_manifest(&x, &tag("planted")), Err(OciError::ManifestUnknown { .. })));
    // A manifest link in another repository borrowing x's through a symlink.
    let y = repo("y");
    std::fs::create_dir_all(repos.join("y/_manifests")).unwrap();
    let hex = pushed.digest.to_string();
    std::os::unix::fs::symlink(repos.join("x/_manifests").join(&hex), repos.join("y/_manifests").join(&hex)).unwrap();
    assert!(matches!(r.get_manifest(&y, &Reference::Digest(pushed.digest)), Err(OciError::ManifestUnknown { .. })));
    // The real ones still work.
    assert_eq!(r.get_manifest(&x, &tag("v1")).unwrap().bytes, m);
}
