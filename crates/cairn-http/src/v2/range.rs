//! `Range` request headers for blob GETs, and `Content-Range` of upload chunks.

/// A request's `Range` against a blob of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No usable single range: send the whole blob (RFC 9110 lets a server
    /// ignore malformed or multi-part ranges).
    Full,
    /// Send `len` bytes from `start` with 206.
    Part {
        /// First byte.
        start: u64,
        /// Byte count (at least 1).
        len: u64,
    },
    /// No byte of the range is in the blob: 416.
    Unsatisfiable,
}

/// Interprets a `Range` header value for a blob of `size` bytes.
pub fn blob_range(h: Option<&str>, size: u64) -> RangeAnswer {
    let Some(spec) = h.and_then(|h| h.trim().strip_prefix("bytes=")) else { return RangeAnswer::Full };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return RangeAnswer::Full };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| if s.bytes().all(|c| c.is_ascii_digit()) { s.parse::<u64>().ok() } else { None };
    match (a.is_empty(), b.is_empty()) {
        (true, true) => RangeAnswer::Full,
        // Suffix: the last `n` bytes.
        (true, false) => match num(b) {
            None => RangeAnswer::Full,
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(_) if size == 0 => RangeAnswer::Unsatisfiable,
            Some(n) => {
                let len = n.min(size);
                RangeAnswer::Part { start: size - len, len }
            }
        },
        (false, _) => {
            let Some(start) = num(a) else { return RangeAnswer::Full };
            let end = if b.is_empty() { Some(u64::MAX) } else { num(b) };
            match end {
                None => RangeAnswer::Full,
                Some(end) if end < start => RangeAnswer::Full,
                Some(_) if start >= size => RangeAnswer::Unsatisfiable,
                Some(end) => RangeAnswer::Part { start, len: end.min(size - 1) - start + 1 },
            }
        }
    }
}

/// Parses an upload chunk's `Content-Range: <start>-<end>` (inclusive; a
/// `bytes ` prefix and a `/<total>` suffix are tolerated). `None` when malformed.
pub fn chunk_range(h: &str) -> Option<(u64, u64)> {
    let s = h.trim();
    let s = s.strip_prefix("bytes ").or_else(|| s.strip_prefix("bytes=")).unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-')?;
    let num =
        |x: &str| if !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit()) { x.parse::<u64>().ok() } else { None };
    let (start, end) = (num(a.trim())?, num(b.trim())?);
    (end >= start).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn blob_ranges_follow_rfc_9110() {
        use RangeAnswer::*;
        assert_eq!(blob_range(None, 10), Full);
        assert_eq!(blob_range(Some("bytes=0-3"), 10), Part { start: 0, len: 4 });
        assert_eq!(blob_range(Some("bytes=5-"), 10), Part { start: 5, len: 5 });
        assert_eq!(blob_range(Some("bytes=5-100"), 10), Part { start: 5, len: 5 });
        assert_eq!(blob_range(Some("bytes=-3"), 10), Part { start: 7, len: 3 });
        assert_eq!(blob_range(Some("bytes=-30"), 10), Part { start: 0, len: 10 });
        assert_eq!(blob_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(blob_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(blob_range(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(blob_range(Some("items=0-1"), 10), Full);
        assert_eq!(blob_range(Some("bytes=4-2"), 10), Full);
    }

    #[test]
    fn chunk_ranges_accept_spec_form_and_refuse_garbage() {
        assert_eq!(chunk_range("0-99"), Some((0, 99)));
        assert_eq!(chunk_range("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(chunk_range("5-4"), None);
        assert_eq!(chunk_range("a-b"), None);
        assert_eq!(chunk_range("-5"), None);
    }

    proptest! {
        #[test]
        fn part_ranges_always_lie_inside_the_blob(h in "bytes=[0-9]{0,4}-[0-9]{0,4}", size in 0u64..5000) {
            if let RangeAnswer::Part { start, len } = blob_range(Some(&h), size) {
                prop_assert!(len >= 1 && start + len <= size);
            }
        }
    }
}
