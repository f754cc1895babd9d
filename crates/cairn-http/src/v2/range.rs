//! `Content-Range` of upload chunks. A blob GET's `Range` is parsed by
//! [`crate::v1::range::parse`], the same for both APIs.

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

    #[test]
    fn chunk_ranges_accept_spec_form_and_refuse_garbage() {
        assert_eq!(chunk_range("0-99"), Some((0, 99)));
        assert_eq!(chunk_range("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(chunk_range("5-4"), None);
        assert_eq!(chunk_range("a-b"), None);
        assert_eq!(chunk_range("-5"), None);
    }
}
