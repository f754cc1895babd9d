//! Ref files are bound to their bytes and never replaced.

mod common;

use cairn_store::name::MAX_REF_NAME_LEN;
use cairn_store::{Digest, RefFile, RefName, StoreError};
use common::Env;

both_backends!(
    a_ref_file_not_named_after_its_bytes_and_inner_name_is_refused,
    an_existing_ref_file_is_never_replaced_by_other_bytes,
    concurrent_saves_of_one_ref_file_leave_one_intact_copy,
    the_longest_allowed_name_is_saved_listed_and_resolved,
);
s3_backend!(
    a_ref_file_not_named_after_its_bytes_and_inner_name_is_refused,
    an_existing_ref_file_is_never_replaced_by_other_bytes,
    concurrent_saves_of_one_ref_file_leave_one_intact_copy,
    the_longest_allowed_name_is_saved_listed_and_resolved,
);

fn json(name: &str, d: &Digest, created: &str) -> Vec<u8> {
    format!(r#"{{"name":"{name}","created_at":"{created}","objects":{{"f":"{d}"}}}}"#).into_bytes()
}

fn rf_for(name: &str, bytes: &[u8]) -> RefFile {
    RefFile::for_manifest(&RefName::parse(name).unwrap(), bytes).unwrap()
}

fn a_ref_file_not_named_after_its_bytes_and_inner_name_is_refused(env: &Env) {
    let s = env.store();
    let d = s.put_reader(&b"x"[..], None).unwrap().digest;
    let bytes = json("app", &d, "2999-01-01T00:00:00Z");
    let right = rf_for("app", &bytes);
    let hex = &right.as_str()["app-".len().."app-".len() + 12];
    // A wrong suffix, another name with the right suffix, and a name that is a prefix.
    for bad in ["app-000000000000.json".to_owned(), format!("base-{hex}.json"), "app.json".to_owned()] {
        let rf = RefFile::parse(&bad).unwrap();
        match s.save_manifest_bytes(&rf, &bytes) {
            Err(e @ StoreError::RefFileMismatch { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&bad) && msg.contains(right.as_str()), "{msg}");
                assert!(e.is_bad_input());
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert!(env.children("refs").is_empty());
    assert_eq!(s.save_manifest_bytes(&right, &bytes).unwrap().name, "app");
}

fn an_existing_ref_file_is_never_replaced_by_other_bytes(env: &Env) {
    let s = env.store();
    let d = s.put_reader(&b"x"[..], None).unwrap().digest;
    let bytes = json("app", &d, "2024-01-01T00:00:00Z");
    let rf = rf_for("app", &bytes);
    // Same bytes twice: idempotent.
    s.save_manifest_bytes(&rf, &bytes).unwrap();
    s.save_manifest_bytes(&rf, &bytes).unwrap();
    assert_eq!(s.manifest_bytes(&rf).unwrap(), bytes);

    // A file already there under that name with other bytes (one the original
    // wrote, or a 48-bit suffix collision) is kept as it is.
    let other = json("app", &d, "2023-01-01T00:00:00Z");
    let key = format!("refs/{rf}");
    env.plant(&key, &other);
    match s.save_manifest_bytes(&rf, &bytes) {
        Err(e @ StoreError::RefConflict(_)) => assert!(e.to_string().contains(rf.as_str()), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(s.check_ref_free(&rf, &bytes), Err(StoreError::RefConflict(_))));
    assert_eq!(env.raw(&key), other);
    assert_eq!(s.temporaries().unwrap(), 0, "no temp file left");
}

fn concurrent_saves_of_one_ref_file_leave_one_intact_copy(env: &Env) {
    let s = env.store();
    let d = s.put_reader(&b"x"[..], None).unwrap().digest;
    let bytes = json("race", &d, "2024-01-01T00:00:00Z");
    let rf = rf_for("race", &bytes);
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8).map(|_| sc.spawn(|| s.save_manifest_bytes(&rf, &bytes).map(|_| ()))).collect();
        for h in hs {
            h.join().unwrap().unwrap();
        }
    });
    assert_eq!(s.manifest_bytes(&rf).unwrap(), bytes);
}

fn the_longest_allowed_name_is_saved_listed_and_resolved(env: &Env) {
    let s = env.store();
    let d = s.put_reader(&b"x"[..], None).unwrap().digest;
    let name = "n".repeat(MAX_REF_NAME_LEN);
    let bytes = json(&name, &d, "2024-01-01T00:00:00Z");
    let rf = rf_for(&name, &bytes);
    assert_eq!(rf.as_str().len(), 255);
    s.save_manifest_bytes(&rf, &bytes).unwrap();
    assert_eq!(s.list_manifests().unwrap()[0].ref_file, rf);
    assert_eq!(s.resolve(&name).unwrap(), rf);
    // One byte more is refused as a name, before anything is written.
    let long = "n".repeat(MAX_REF_NAME_LEN + 1);
    let e = env.store().save_manifest_bytes(&rf, &json(&long, &d, "")).unwrap_err();
    assert!(e.to_string().contains("at most 237"), "{e}");
}
