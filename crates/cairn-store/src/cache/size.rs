//! Cache sizes as people write them: `50GiB`, `500MB`, `1073741824`, or a
//! share of the data dir's filesystem, `10%`.

use std::fmt;
use std::str::FromStr;

/// A size limit, in bytes or as a share of the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A number of bytes.
    Bytes(u64),
    /// Percent (0 to 100) of the filesystem's size.
    Percent(u8),
}

/// A size that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a size: {why}; write bytes (1073741824), a unit (500MB, 50GiB) or a share of the disk (10%)")]
pub struct SizeError {
    text: String,
    why: &'static str,
}

const UNITS: [(&str, u64); 9] = [
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

impl FromStr for Limit {
    type Err = SizeError;

    fn from_str(s: &str) -> Result<Limit, SizeError> {
        let err = |why| SizeError { text: s.to_owned(), why };
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let n: u8 = p.trim().parse().map_err(|_| err("the percentage is not a whole number"))?;
            if n > 100 {
                return Err(err("a share of the disk is at most 100%"));
            }
            return Ok(Limit::Percent(n));
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(err("it does not start with a number"));
        }
        let n: u64 = num.parse().map_err(|_| err("the number is too large"))?;
        let unit = unit.trim().to_ascii_lowercase();
        let mult = match unit.as_str() {
            "" => 1,
            u => UNITS.iter().find(|(name, _)| *name == u).map(|(_, m)| *m).ok_or_else(|| err("unknown unit"))?,
        };
        n.checked_mul(mult).map(Limit::Bytes).ok_or_else(|| err("it is more than 16 EiB"))
    }
}

impl Limit {
    /// Bytes, for a filesystem of `total` bytes.
    pub fn resolve(self, total: u64) -> u64 {
        match self {
            Limit::Bytes(n) => n,
            Limit::Percent(p) => total / 100 * u64::from(p) + total % 100 * u64::from(p) / 100,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Bytes(n) => write!(f, "{n}"),
            Limit::Percent(p) => write!(f, "{p}%"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_read_with_decimal_and_binary_units_and_percentages() {
        let ok = |s: &str| s.parse::<Limit>().unwrap();
        assert_eq!(ok("1073741824"), Limit::Bytes(1 << 30));
        assert_eq!(ok("50GiB"), Limit::Bytes(50 << 30));
        assert_eq!(ok("500 MB"), Limit::Bytes(500_000_000));
        assert_eq!(ok("2tib"), Limit::Bytes(2 << 40));
        assert_eq!(ok("10%"), Limit::Percent(10));
        assert_eq!(ok("10%").resolve(1000), 100);
        assert_eq!(ok("100%").resolve(u64::MAX), u64::MAX);
    }

    #[test]
    fn bad_sizes_say_why_and_how_to_write_one() {
        for (s, why) in [
            ("", "does not start with a number"),
            ("GiB", "does not start with a number"),
            ("12 parsecs", "unknown unit"),
            ("101%", "at most 100%"),
            ("-5%", "not a whole number"),
            ("99999999999999999999", "too large"),
            ("20000000TiB", "more than 16 EiB"),
        ] {
            let e = s.parse::<Limit>().unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("50GiB"), "{s:?}: {e}");
        }
    }

    proptest! {
        #[test]
        fn any_text_parses_or_fails_without_panic_and_bytes_round_trip(s in ".{0,24}", n in any::<u64>()) {
            let _ = s.parse::<Limit>();
            prop_assert_eq!(n.to_string().parse::<Limit>(), Ok(Limit::Bytes(n)));
            prop_assert_eq!(Limit::Bytes(n).to_string().parse::<Limit>(), Ok(Limit::Bytes(n)));
        }

        #[test]
        fn a_percentage_of_any_filesystem_is_at_most_its_size(p in 0u8..=100, total in any::<u64>()) {
            prop_assert!(Limit::Percent(p).resolve(total) <= total);
        }
    }
}
