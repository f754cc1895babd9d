//! `Content-Range` of upload chunks. A blob GET's `Range` is parsed by
//! [`crate::v1::range::parse`], the same for both APIs.

/// Parses an upload chunk's `Content-Range: <start>-<end>` (inclusive; a
/// `bytes ` prefix and a `/<total>` suffix are tolerated) into its start
/// and length. `None` when malformed, or when the length does not fit in
/// a `u64` (`0-18446744073709551615` is 2^64 bytes, never an empty chunk).
pub fn chunk_range(h: &str) -> Option<(u64, u64)> {
    let s = h.trim();
    let s = s.strip_prefix("bytes ").or_else(|| s.strip_prefix("bytes=")).unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-')?;
    let num =
        |x: &str| if !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit()) { x.parse::<u64>().ok() } else { None };
    let (start, end) = (num(a.trim())?, num(b.trim())?);
    let len = end.checked_sub(start)?.checked_add(1)?;
    Some((start, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
