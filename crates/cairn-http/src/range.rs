//! Byte ranges, for `/v1` and `/v2` alike: the `Range` header of a blob
//! GET (single byte ranges only), the `Content-Range` of an answer, and
//! the `Content-Range` of a `/v2` upload chunk. Each API keeps its own
//! error answer (`/v1`: [`crate::ApiError::RangeNotSatisfiable`], `/v2`:
//! [`crate::v2::V2Error::range_outside_blob`] and
//! [`crate::v2::V2Error::malformed_chunk_range`]).

/// What a `Range` header asks of a blob of a known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No usable range: send the whole blob (200).
    Full,
    /// `len` bytes from `start` (206).
    Part {
        /// First byte.
        start: u64,
        /// Number of bytes (at least 1).
        len: u64,
    },
    /// A range wholly outside the blob (416).
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n` against `size`. Other
/// forms (other units, several ranges, garbage) are ignored, as RFC 9110
/// allows, and the whole blob is sent.
pub fn parse(header: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    // Spaces around the numbers are tolerated, as Go's net/http does.
    let (a, b) = (a.trim(), b.trim());
    match (a.is_empty(), num(a), num(b)) {
        // Suffix: the last n bytes.
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                ByteRange::Unsatisfiable
            } else {
                let len = n.min(size);
                ByteRange::Part { start: size - len, len }
            }
        }
        (false, Some(start), end) if b.is_empty() || end.is_some() => {
            if start >= size {
                return ByteRange::Unsatisfiable;
            }
            let last = match end {
                Some(e) if e < start => return ByteRange::Full,
                Some(e) => e.min(size - 1),
                None => size - 1,
            };
            ByteRange::Part { start, len: last - start + 1 }
        }
        _ => ByteRange::Full,
    }
}

/// A decimal number of digits only (no sign, no spaces); `None` past `u64`.
fn num(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) { None } else { s.parse().ok() }
}

/// The `Content-Range` of a 206 answer: `bytes <first>-<last>/<size>`
/// (`len` is at least 1, as [`ByteRange::Part`] guarantees).
pub fn content_range(start: u64, len: u64, size: u64) -> String {
    format!("bytes {start}-{}/{size}", start.saturating_add(len.saturating_sub(1)))
}

/// Parses an upload chunk's `Content-Range: <start>-<end>` (inclusive; a
/// `bytes ` prefix and a `/<total>` suffix are tolerated) into its start
/// and length. `None` when malformed, or when the length does not fit in
/// a `u64` (`0-18446744073709551615` is 2^64 bytes, never an empty chunk).
pub fn chunk_range(h: &str) -> Option<(u64, u64)> {
    let s = h.trim();
    let s = s.strip_prefix("bytes ").or_else(|| s.strip_prefix("bytes=")).unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-')?;
    let (start, end) = (num(a.trim())?, num(b.trim())?);
    let len = end.checked_sub(start)?.checked_add(1)?;
    Some((start, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn common_forms_are_understood() {
        assert_eq!(parse(Some("bytes=0-9"), 100), ByteRange::Part { start: 0, len: 10 });
        assert_eq!(parse(Some("bytes=90-"), 100), ByteRange::Part { start: 90, len: 10 });
        assert_eq!(parse(Some("bytes=-5"), 100), ByteRange::Part { start: 95, len: 5 });
        assert_eq!(parse(Some("bytes=-500"), 100), ByteRange::Part { start: 0, len: 100 });
        assert_eq!(parse(Some("bytes=50-5000"), 100), ByteRange::Part { start: 50, len: 50 });
        assert_eq!(parse(Some("bytes=0-3"), 10), ByteRange::Part { start: 0, len: 4 });
        assert_eq!(parse(Some("bytes=5-"), 10), ByteRange::Part { start: 5, len: 5 });
        assert_eq!(parse(Some("bytes=5-100"), 10), ByteRange::Part { start: 5, len: 5 });
        assert_eq!(parse(Some("bytes=-3"), 10), ByteRange::Part { start: 7, len: 3 });
        assert_eq!(parse(Some("bytes=-30"), 10), ByteRange::Part { start: 0, len: 10 });
        assert_eq!(parse(Some("bytes= 2 - 3"), 10), ByteRange::Part { start: 2, len: 2 });
    }

    #[test]
    fn ranges_outside_the_blob_are_unsatisfiable() {
        assert_eq!(parse(Some("bytes=100-"), 100), ByteRange::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 100), ByteRange::Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-0"), 0), ByteRange::Unsatisfiable);
        assert_eq!(parse(Some("bytes=10-"), 10), ByteRange::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 10), ByteRange::Unsatisfiable);
    }

    #[test]
    fn odd_headers_fall_back_to_the_whole_blob() {
        for h in ["items=0-1", "bytes=0-1,5-6", "bytes=5-1", "bytes=x-", "bytes=", "bytes=--1", "bytes=+1-2"] {
            assert_eq!(parse(Some(h), 100), ByteRange::Full, "{h}");
        }
        for h in ["bytes=0-1,3-4", "items=0-1", "bytes=4-2"] {
            assert_eq!(parse(Some(h), 10), ByteRange::Full, "{h}");
        }
        assert_eq!(parse(None, 100), ByteRange::Full);
    }

    proptest! {
        #[test]
        fn every_part_lies_inside_the_blob(h in "bytes=[0-9]{0,4}-[0-9]{0,4}", size in 0u64..5000) {
            if let ByteRange::Part { start, len } = parse(Some(&h), size) {
                prop_assert!(len >= 1);
                prop_assert!(start + len <= size);
            }
        }

        /// Any header text, any size (up to `u64::MAX`): no panic, no
        /// overflow, and a part is inside the blob and reads back the same
        /// when written as `bytes=<first>-<last>`.
        #[test]
        fn any_range_header_parses_without_panic_and_parts_round_trip(
            h in prop_oneof![
                "\\PC{0,40}",
                "[ ]?bytes[ ]?=[ ]?[0-9 ]{0,21}-[0-9 ]{0,21}(,[0-9]{0,3}-[0-9]{0,3})?",
                (any::<u64>(), any::<u64>()).prop_map(|(a, b)| format!("bytes={a}-{b}")),
                any::<u64>().prop_map(|n| format!("bytes=-{n}")),
                any::<u64>().prop_map(|n| format!("bytes={n}-")),
            ],
            size in prop_oneof![0u64..10_000, Just(u64::MAX), any::<u64>()],
        ) {
            let r = parse(Some(&h), size);
            if let ByteRange::Part { start, len } = r {
                prop_assert!(len >= 1);
                let end = start.checked_add(len);
                prop_assert!(end.is_some_and(|e| e <= size), "{} of {}: {:?}", h, size, r);
                let last = start + (len - 1);
                prop_assert_eq!(parse(Some(&format!("bytes={start}-{last}")), size), r);
            }
        }
    }

    #[test]
    fn chunk_ranges_accept_spec_form_and_refuse_garbage() {
        assert_eq!(chunk_range("0-99"), Some((0, 100)));
        assert_eq!(chunk_range("bytes 100-199/*"), Some((100, 100)));
        assert_eq!(chunk_range("5-4"), None);
        assert_eq!(chunk_range("a-b"), None);
        assert_eq!(chunk_range("-5"), None);
    }

    #[test]
    fn a_chunk_range_whose_length_overflows_u64_is_refused_not_wrapped_to_zero() {
        assert_eq!(chunk_range("0-18446744073709551615"), None);
        assert_eq!(chunk_range("1-18446744073709551615"), Some((1, u64::MAX)));
        assert_eq!(chunk_range("0-18446744073709551616"), None, "past u64");
        assert_eq!(chunk_range("18446744073709551615-18446744073709551615"), Some((u64::MAX, 1)));
    }

    proptest! {
        #[test]
        fn chunk_range_never_panics(h in "\\PC{0,60}") {
            let _ = chunk_range(&h);
        }

        #[test]
        fn chunk_range_never_panics_on_number_shaped_input(h in "(bytes[ =])?[0-9]{0,22}-[0-9]{0,22}(/[0-9*]{0,22})?") {
            if let Some((start, len)) = chunk_range(&h) {
                prop_assert!(len >= 1);
                prop_assert!(start.checked_add(len - 1).is_some());
            }
        }

        #[test]
        fn accepted_chunk_ranges_round_trip(a in any::<u64>(), b in any::<u64>()) {
            let (start, end) = (a.min(b), a.max(b));
            let parsed = chunk_range(&format!("{start}-{end}"));
            if start == 0 && end == u64::MAX {
                prop_assert_eq!(parsed, None);
            } else {
                let (s, len) = parsed.expect("a valid range parses");
                prop_assert_eq!(s, start);
                prop_assert_eq!(s + (len - 1), end);
            }
        }
    }
}
