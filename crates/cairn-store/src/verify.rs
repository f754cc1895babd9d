//! Verify: re-hash blobs on all cores and quarantine the corrupt ones.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::store::Store;

/// A blob whose bytes did not hash to its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    /// The blob's name.
    pub digest: Digest,
    /// Where it was moved (no longer served).
    pub quarantined: PathBuf,
}

/// What a verify run found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blobs re-hashed.
    pub checked: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Corrupt blobs, now in `quarantine/`.
    pub corrupt: Vec<Corrupt>,
    /// Requested digests that are not in the store.
    pub missing: Vec<Digest>,
}

impl VerifyReport {
    /// True when nothing was corrupt or missing.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty()
    }
}

impl Store {
    /// Re-hashes `only` (or every blob when `None`) in parallel and moves the
    /// corrupt ones to `quarantine/`. `progress(done_bytes, total_bytes)` is
    /// called after each blob, from any thread.
    pub fn verify(&self, only: Option<&[Digest]>, progress: &(dyn Fn(u64, u64) + Sync)) -> Result<VerifyReport> {
        self.check_writable()?;
        let mut report = VerifyReport::default();
        let mut todo = Vec::new();
        let all;
        let wanted: Box<dyn Iterator<Item = Result<Digest>>> = match only {
            Some(ds) => Box::new(ds.iter().copied().map(Ok)),
            None => {
                all = self.list()?;
                Box::new(all)
            }
        };
        let corrupt = Mutex::new(Vec::new());
        for d in wanted {
            let d = d?;
            match self.size(&d) {
                Ok(n) => todo.push((d, n)),
                // The store never makes one: it was planted. Moved aside, not read through.
                Err(StoreError::Symlink(p)) => {
                    tracing::warn!(digest = %d, path = %p.display(), "object is a symlink; moving it to quarantine");
                    let quarantined = self.quarantine(&d)?;
                    corrupt.lock().unwrap_or_else(|p| p.into_inner()).push(Corrupt { digest: d, quarantined });
                }
                // Listed blobs that vanish meanwhile were removed by GC, not lost.
                Err(StoreError::BlobNotFound(_)) if only.is_none() => {}
                Err(StoreError::BlobNotFound(_)) => report.missing.push(d),
                Err(e) => return Err(e),
            }
        }
        todo.sort_unstable();
        todo.dedup();
        let total: u64 = todo.iter().map(|t| t.1).sum();
        let done = AtomicU64::new(0);
        todo.par_iter().try_for_each(|&(d, size)| -> Result<()> {
            let ok = match self.verify_blob(&d) {
                Ok(ok) => ok,
                Err(StoreError::BlobNotFound(_)) => true,
                Err(e) => return Err(e),
            };
            if !ok {
                tracing::info!(digest = %d, "blob is corrupt; moving it to quarantine");
                let quarantined = self.quarantine(&d)?;
                corrupt.lock().unwrap_or_else(|p| p.into_inner()).push(Corrupt { digest: d, quarantined });
            }
            progress(done.fetch_add(size, Ordering::Relaxed) + size, total);
            Ok(())
        })?;
        report.checked = todo.len() as u64;
        report.bytes = total;
        report.corrupt = corrupt.into_inner().unwrap_or_else(|p| p.into_inner());
        report.corrupt.sort_by_key(|c| c.digest);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Env, both_backends};

    both_backends!(verify_quarantines_corrupt_blobs_and_keeps_good_ones, verify_of_given_digests_reports_missing_ones);

    fn verify_quarantines_corrupt_blobs_and_keeps_good_ones(env: &Env) {
        let s = env.store();
        let good = s.put_reader(&b"good"[..], None).unwrap().digest;
        let bad = s.put_reader(&b"bad"[..], None).unwrap().digest;
        env.corrupt(&bad, b"flipped");
        let calls = AtomicU64::new(0);
        let r = s
            .verify(None, &|done, total| {
                calls.fetch_add(1, Ordering::Relaxed);
                assert!(done <= total);
            })
            .unwrap();
        assert_eq!(r.checked, 2);
        assert_eq!(calls.load(Ordering::Relaxed), 2);
        let quarantined = s.root().join("quarantine").join(bad.to_string());
        assert_eq!(r.corrupt, vec![Corrupt { digest: bad, quarantined: quarantined.clone() }]);
        assert!(!s.exists(&bad));
        if let Env::Fs(_) = env {
            assert!(quarantined.is_file());
        }
        assert!(s.exists(&good));
        assert!(s.verify(None, &|_, _| {}).unwrap().is_clean());
    }

    fn verify_of_given_digests_reports_missing_ones(env: &Env) {
        let s = env.store();
        let good = s.put_reader(&b"good"[..], None).unwrap().digest;
        let absent = Digest::of(b"absent");
        let r = s.verify(Some(&[good, absent]), &|_, _| {}).unwrap();
        assert!(!r.is_clean());
        assert_eq!((r.checked, r.missing), (1, vec![absent]));
        assert!(r.corrupt.is_empty());
    }
}
