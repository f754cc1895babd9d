//! The object backend when the bucket misbehaves: a fault proxy
//! ([`cairn_testkit::s3fault::FaultProxy`]) in front of moto throttles,
//! refuses, stalls, dies or refuses server-side copies. In every case the
//! operation succeeds after retries or fails within the configured limits
//! with an error naming the endpoint, and no wrong or half-written blob
//! becomes visible. Skipped when moto is not installed.

use std::time::{Duration, Instant};

use cairn_store::backend::object::{ObjectBackend, PART_SIZE, S3Options};
use cairn_store::backend::{BlobBackend, UploadBackend};
use cairn_store::{Digest, Store, StoreOptions};
use cairn_testkit::s3::MotoServer;
use cairn_testkit::s3fault::{Fault, FaultProxy};

/// A backend reaching moto through `p`, with test-sized limits.
fn via(m: &MotoServer, p: &FaultProxy) -> (ObjectBackend, S3Options) {
    let mut o = S3Options::new(&m.bucket, &m.region);
    o.endpoint = Some(p.endpoint.clone());
    o.credentials = Some((m.access_key.clone(), m.secret_key.clone()));
    o.prefix = "cairn".into();
    o.max_retries = 4;
    o.retry_timeout = Duration::from_secs(10);
    o.connect_timeout = Duration::from_secs(1);
    o.request_timeout = Duration::from_secs(5);
    (ObjectBackend::s3(&o).unwrap(), o)
}

fn store(b: &ObjectBackend) -> Store {
    Store::with_backend(Box::new(b.clone()), StoreOptions::default())
}

/// A handle straight on moto, to look behind the proxy.
fn direct(m: &MotoServer) -> Store {
    let mut o = S3Options::new(&m.bucket, &m.region);
    o.endpoint = Some(m.endpoint.clone());
    o.credentials = Some((m.access_key.clone(), m.secret_key.clone()));
    o.prefix = "cairn".into();
    store(&ObjectBackend::s3(&o).unwrap())
}

fn big(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| ((i % 251) as u8) ^ salt).collect()
}

fn blob_keys(m: &MotoServer) -> Vec<String> {
    m.keys().into_iter().filter(|k| k.contains("/objects/") || k.contains("/tmp/")).collect()
}

#[test]
fn throttled_requests_are_retried_with_backoff_and_the_blobs_are_stored_whole() {
    let Some(m) = MotoServer::start("throttled_requests_are_retried_with_backoff_and_the_blobs_are_stored_whole")
    else {
        return;
    };
    let p = FaultProxy::start(&m.endpoint);
    let (b, _) = via(&m, &p);
    let s = store(&b);
    // The first requests all answer 503 SlowDown.
    p.slow_down_next(3);
    let small = s.put_reader(&b"throttled"[..], None).unwrap().digest;
    assert_eq!(p.injected(), 3, "{:?}", p.log());
    // A third of the requests of a multipart upload and its reads.
    p.set(Fault::SlowDownEvery(3));
    let data = big(PART_SIZE + 99, 1);
    let d = s.put_reader(&data[..], None).unwrap().digest;
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut s.get(&d).unwrap(), &mut back).unwrap();
    assert!(back == data, "read back whole through the throttling");
    assert!(p.injected() >= 3 + 3, "three more throttled answers, each retried: {:?}", p.log());
    for x in [small, d] {
        assert_eq!(m.sha256_of(&format!("cairn/objects/{x}")), x.to_string());
    }
    assert!(!m.keys().iter().any(|k| k.contains("/tmp/")), "no temp object left");
}

#[test]
fn a_403_fails_fast_with_an_error_naming_the_bucket_and_the_credentials_to_check() {
    let Some(m) = MotoServer::start("a_403_fails_fast_with_an_error_naming_the_bucket_and_the_credentials_to_check")
    else {
        return;
    };
    let p = FaultProxy::start(&m.endpoint);
    let (b, _) = via(&m, &p);
    let s = store(&b);
    p.set(Fault::Forbidden);
    let started = Instant::now();
    let e = s.put_reader(&b"denied"[..], None).unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(2), "not retried: {:?}", started.elapsed());
    assert_eq!(p.injected(), 1, "the first request fails the put, not retried: {:?}", p.log());
    assert!(e.contains(&p.endpoint) && e.contains(&m.bucket), "names where: {e}");
    assert!(e.contains("credentials") && e.contains("policy"), "says what to check: {e}");
    assert!(s.probe().is_err());
    assert!(!direct(&m).exists(&Digest::of(b"denied")));
    assert!(blob_keys(&m).is_empty());
}

#[test]
fn a_stalled_endpoint_fails_within_the_request_timeout_and_stores_nothing() {
    let Some(m) = MotoServer::start("a_stalled_endpoint_fails_within_the_request_timeout_and_stores_nothing") else {
        return;
    };
    let p = FaultProxy::start(&m.endpoint);
    let mut o = S3Options::new(&m.bucket, &m.region);
    o.endpoint = Some(p.endpoint.clone());
    o.credentials = Some((m.access_key.clone(), m.secret_key.clone()));
    o.max_retries = 1;
    o.retry_timeout = Duration::from_secs(3);
    o.request_timeout = Duration::from_millis(500);
    let s = store(&ObjectBackend::s3(&o).unwrap());
    p.set(Fault::Stall);
    let started = Instant::now();
    let e = s.put_reader(&b"stalled"[..], None).unwrap_err().to_string();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "bounded by the timeouts: {took:?}");
    assert!(e.contains(&p.endpoint), "{e}");
    let e = s.get(&Digest::of(b"x")).unwrap_err().to_string();
    assert!(e.contains(&p.endpoint), "{e}");
    assert!(blob_keys(&m).is_empty());
}

#[test]
fn an_endpoint_killed_mid_multipart_upload_leaves_no_blob_and_the_writer_gets_the_error() {
    let Some(m) =
        MotoServer::start("an_endpoint_killed_mid_multipart_upload_leaves_no_blob_and_the_writer_gets_the_error")
    else {
        return;
    };
    let p = FaultProxy::start(&m.endpoint);
    let (b, _) = via(&m, &p);
    let s = store(&b);
    p.set(Fault::DieAtFirstPart);
    let data = big(2 * PART_SIZE + 7, 2);
    let started = Instant::now();
    let e = s.put_reader(&data[..], None).unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    assert!(e.contains(&p.endpoint), "{e}");
    assert!(p.log().iter().any(|l| l.ends_with("died")), "{:?}", p.log());
    // Behind the proxy: no blob, no temp object.
    let d = Digest::of(&data);
    assert!(!direct(&m).exists(&d));
    assert!(blob_keys(&m).is_empty(), "{:?}", m.keys());
    assert_eq!(b.temporaries().unwrap_or(0), 0, "the sink is gone");
    // The dead endpoint: later calls fail within the timeouts too.
    let started = Instant::now();
    assert!(s.put_reader(&b"after"[..], None).unwrap_err().to_string().contains(&p.endpoint));
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
}

#[test]
fn a_blob_over_the_copy_limit_is_committed_without_a_server_side_copy() {
    let Some(m) = MotoServer::start("a_blob_over_the_copy_limit_is_committed_without_a_server_side_copy") else {
        return;
    };
    let p = FaultProxy::start(&m.endpoint);
    let (b, _) = via(&m, &p);
    // As S3 above 5 GiB, here above one part.
    p.set(Fault::RefuseCopies);
    b.set_copy_limit(PART_SIZE as u64);
    let s = store(&b);
    let data = big(PART_SIZE + 5, 3);
    let d = s.put_reader(&data[..], None).unwrap().digest;
    assert_eq!(m.sha256_of(&format!("cairn/objects/{d}")), d.to_string());
    assert!(!p.log().iter().any(|l| l.contains("copy refused")), "{:?}", p.log());
    assert_eq!(blob_keys(&m), vec![format!("cairn/objects/{d}")], "no temp object left");
    // Written again: reported as existing, never replaced.
    assert!(s.put_reader(&data[..], None).unwrap().existed);
}

#[test]
fn a_finished_upload_of_a_known_digest_completes_at_its_name_without_a_copy() {
    let Some(m) = MotoServer::start("a_finished_upload_of_a_known_digest_completes_at_its_name_without_a_copy") else {
        return;
    };
    let p = FaultProxy::start(&m.endpoint);
    let (b, _) = via(&m, &p);
    p.set(Fault::RefuseCopies);
    let data = big(PART_SIZE + 1, 4);
    let d = Digest::of(&data);
    b.create_upload("u1").unwrap();
    let mut u = b.open_upload("u1").unwrap().unwrap();
    assert!(u.try_lock().unwrap());
    u.begin_append(0).unwrap();
    u.append(&data).unwrap();
    u.end_append().unwrap();
    assert!(!u.commit(&d).unwrap());
    drop(u);
    b.remove_upload("u1").unwrap();
    assert_eq!(m.sha256_of(&format!("cairn/objects/{d}")), d.to_string());
    assert!(!p.log().iter().any(|l| l.contains("copy refused")), "{:?}", p.log());
    assert_eq!(blob_keys(&m), vec![format!("cairn/objects/{d}")]);
}

#[test]
fn bucket_stats_count_every_attempt_throttling_retries_and_errors() {
    let Some(m) = MotoServer::start("bucket_stats_count_every_attempt_throttling_retries_and_errors") else {
        return;
    };
    let p = FaultProxy::start(&m.endpoint);
    let (b, _) = via(&m, &p);
    let s = store(&b);
    p.slow_down_next(3);
    s.put_reader(&b"counted"[..], None).unwrap();
    let st = b.stats();
    assert_eq!(st.attempts as usize, p.seen(), "every attempt, retries included: {st:?}");
    assert_eq!((st.throttled, st.retries(), st.errors), (3, 3, 0), "{st:?}");
    p.set(Fault::Forbidden);
    assert!(s.put_reader(&b"refused"[..], None).is_err());
    let st = b.stats();
    assert_eq!(st.attempts as usize, p.seen());
    assert_eq!((st.throttled, st.errors), (3, 1), "a 403 is one error, not retried: {st:?}");
    p.set(Fault::Stall);
    let mut o = S3Options::new(&m.bucket, &m.region);
    o.endpoint = Some(p.endpoint.clone());
    o.credentials = Some((m.access_key.clone(), m.secret_key.clone()));
    o.max_retries = 2;
    o.retry_timeout = Duration::from_secs(5);
    o.request_timeout = Duration::from_millis(300);
    let b = ObjectBackend::s3(&o).unwrap();
    assert!(b.stat(&Digest::of(b"x")).is_err());
    let st = b.stats();
    assert_eq!((st.attempts, st.transport_errors, st.errors), (3, 3, 1), "timed out, retried twice: {st:?}");
    assert_eq!(st.retries(), 2);
}

#[test]
fn a_finished_upload_cut_mid_multipart_leaves_no_blob_at_its_name() {
    let Some(m) = MotoServer::start("a_finished_upload_cut_mid_multipart_leaves_no_blob_at_its_name") else {
        return;
    };
    let p = FaultProxy::start(&m.endpoint);
    let (b, _) = via(&m, &p);
    let data = big(PART_SIZE + 1, 5);
    let d = Digest::of(&data);
    b.create_upload("u1").unwrap();
    let mut u = b.open_upload("u1").unwrap().unwrap();
    assert!(u.try_lock().unwrap());
    u.begin_append(0).unwrap();
    u.append(&data).unwrap();
    u.end_append().unwrap();
    // The multipart upload goes straight to objects/<hex>: cut it there.
    p.set(Fault::DieAtFirstPart);
    let e = u.commit(&d).unwrap_err().to_string();
    assert!(e.contains(&p.endpoint), "{e}");
    drop(u);
    assert!(!direct(&m).exists(&d), "nothing at its name");
    assert!(blob_keys(&m).is_empty(), "{:?}", m.keys());
}
