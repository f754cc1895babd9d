//! GC with zero grace racing puts and manifest saves from another handle.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use cairn_store::{GcOptions, Manifest, RefName, StoreError, StoreOptions};
use common::Env;

both_backends!(gc_with_zero_grace_never_deletes_a_blob_of_a_saved_manifest);
// Not on S3: 400 rounds of requests to moto take ~25 s.

fn gc_with_zero_grace_never_deletes_a_blob_of_a_saved_manifest(env: &Env) {
    // fsync is not what this test is about; without it the race runs hot.
    let opts = StoreOptions { fsync: false, ..Default::default() };
    let writer = env.store_with(opts.clone());
    let collector = env.store_with(opts);
    let done = AtomicBool::new(false);
    let zero = GcOptions { grace: std::time::Duration::ZERO, dry_run: false };

    let (saved, lost, collected) = std::thread::scope(|s| {
        let gc = s.spawn(|| {
            let mut collected = 0;
            while !done.load(Ordering::Relaxed) {
                collected += collector.gc(zero).unwrap().blobs.len();
            }
            collected
        });
        let mut saved = Vec::new();
        let mut lost = 0;
        for i in 0..400u32 {
            let blob = writer.put_reader(&format!("blob {i}").into_bytes()[..], None).unwrap().digest;
            let mut m = Manifest::new(&RefName::parse(&format!("m{i}")).unwrap());
            m.objects.insert("f".into(), blob);
            match writer.save_manifest(&m) {
                Ok(_) => {
                    assert!(writer.exists(&blob), "blob of saved manifest m{i} vanished at once");
                    saved.push(blob);
                }
                // Collected between put and save: the save must say so.
                Err(StoreError::MissingBlobs { missing, .. }) => {
                    assert_eq!(missing, vec![blob]);
                    lost += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        done.store(true, Ordering::Relaxed);
        (saved, lost, gc.join().unwrap())
    });
    for d in &saved {
        assert!(writer.exists(d), "GC deleted {d}, which a saved manifest references");
    }
    assert_eq!(collected, lost, "GC deleted blobs that were never reported missing");
    assert_eq!(saved.len() + lost, 400);
}
