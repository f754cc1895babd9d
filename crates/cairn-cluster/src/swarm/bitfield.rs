//! Which pieces a node holds: one bit a piece. Its wire form is the bytes,
//! piece 0 in the high bit of byte 0 (as BitTorrent), in hex.

use super::SwarmError;

/// A set of piece indexes below a fixed count.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bitfield {
    count: u32,
    ones: u32,
    words: Vec<u64>,
}

impl Bitfield {
    /// An empty set for `count` pieces.
    pub fn new(count: u32) -> Self {
        let words = vec![0; count.div_ceil(64) as usize];
        Bitfield { count, ones: 0, words }
    }

    /// The full set for `count` pieces.
    pub fn full(count: u32) -> Self {
        let mut b = Bitfield::new(count);
        for i in 0..count {
            b.set(i);
        }
        b
    }

    /// The number of pieces it is for.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Pieces in the set.
    pub fn ones(&self) -> u32 {
        self.ones
    }

    /// True when every piece is in the set.
    pub fn is_full(&self) -> bool {
        self.ones == self.count
    }

    /// Whether piece `i` is in the set (false outside the count).
    pub fn get(&self, i: u32) -> bool {
        i < self.count && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Adds piece `i`; returns whether it was new. Ignores `i` outside the count.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.count || self.get(i) {
            return false;
        }
        self.words[(i / 64) as usize] |= 1 << (i % 64);
        self.ones += 1;
        true
    }

    /// Removes piece `i`; returns whether it was there.
    pub fn clear(&mut self, i: u32) -> bool {
        if !self.get(i) {
            return false;
        }
        self.words[(i / 64) as usize] &= !(1 << (i % 64));
        self.ones -= 1;
        true
    }

    /// The words, 64 pieces each, piece `i` in bit `i % 64` of word `i / 64`.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Whether `self` holds a piece `other` lacks.
    pub fn has_any_missing_from(&self, other: &Bitfield) -> bool {
        self.words.iter().zip(&other.words).any(|(a, b)| a & !b != 0)
    }

    /// The pieces in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &bits)| {
            let mut bits = bits;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                Some(w as u32 * 64 + b)
            })
        })
    }

    /// The wire form: `ceil(count / 8)` bytes in lowercase hex.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(self.count.div_ceil(8) as usize * 2);
        for byte in 0..self.count.div_ceil(8) {
            let mut v = 0u8;
            for bit in 0..8 {
                if self.get(byte * 8 + bit) {
                    v |= 0x80 >> bit;
                }
            }
            out.push_str(&format!("{v:02x}"));
        }
        out
    }

    /// Reads the wire form for `count` pieces: exactly the right length,
    /// hex, no bit set past the last piece.
    pub fn from_hex(count: u32, hex: &str) -> Result<Self, SwarmError> {
        let want = u64::from(count.div_ceil(8)) * 2;
        if hex.len() as u64 != want {
            return Err(SwarmError::Length { what: "bitfield (hex digits)", got: hex.len() as u64, want });
        }
        let mut b = Bitfield::new(count);
        for (byte, pair) in hex.as_bytes().chunks(2).enumerate() {
            let v = decode_byte(pair).ok_or(SwarmError::Length { what: "bitfield (hex digits)", got: 0, want })?;
            for bit in 0..8u32 {
                if v & (0x80 >> bit) != 0 {
                    let i = byte as u32 * 8 + bit;
                    if i >= count {
                        return Err(SwarmError::StrayBits { count });
                    }
                    b.set(i);
                }
            }
        }
        Ok(b)
    }
}

/// Two hex digits as a byte.
pub(super) fn decode_byte(pair: &[u8]) -> Option<u8> {
    let d = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    match pair {
        [h, l] => Some(d(*h)? << 4 | d(*l)?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_clear_count_and_iterate() {
        let mut b = Bitfield::new(130);
        assert!(b.set(0) && b.set(64) && b.set(129));
        assert!(!b.set(129), "setting twice is not new");
        assert!(!b.set(130), "outside the count is ignored");
        assert_eq!(b.ones(), 3);
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 64, 129]);
        assert!(b.clear(64) && !b.clear(64));
        assert!(!b.get(64) && !b.get(1000));
        assert!(Bitfield::full(130).is_full());
        assert!(Bitfield::new(0).is_full(), "no pieces: nothing missing");
    }

    #[test]
    fn hex_round_trips_and_puts_piece_zero_in_the_high_bit() {
        let mut b = Bitfield::new(10);
        b.set(0);
        b.set(9);
        assert_eq!(b.to_hex(), "8040");
        assert_eq!(Bitfield::from_hex(10, "8040").unwrap(), b);
        assert_eq!(Bitfield::from_hex(0, "").unwrap(), Bitfield::new(0));
    }

    #[test]
    fn hostile_bitfields_are_refused() {
        assert!(matches!(Bitfield::from_hex(10, "80"), Err(SwarmError::Length { .. })));
        assert!(matches!(Bitfield::from_hex(10, "804000"), Err(SwarmError::Length { .. })));
        assert!(Bitfield::from_hex(10, "zz40").is_err());
        assert!(Bitfield::from_hex(10, "8A40").is_err(), "uppercase is not the wire form");
        // Bit 10 set, past the 10 pieces.
        assert!(matches!(Bitfield::from_hex(10, "8020"), Err(SwarmError::StrayBits { count: 10 })));
        assert!(Bitfield::from_hex(10, "é0").is_err());
    }

    #[test]
    fn has_any_missing_from() {
        let mut a = Bitfield::new(70);
        let mut b = Bitfield::new(70);
        assert!(!a.has_any_missing_from(&b));
        a.set(69);
        assert!(a.has_any_missing_from(&b));
        b.set(69);
        assert!(!a.has_any_missing_from(&b));
    }
}
