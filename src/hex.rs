//! Lower-case hexadecimal for ids (block ids, key ids, reservation ids).
//!
//! Ten lines the core would otherwise take a dependency for: every id the
//! spec prints is lower-case hex, and reading accepts lower-case only
//! (spec/token.md §5, spec/http.md §1.4), so one strict table suffices.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes `src` as lower-case hex into `dst` (exactly twice as long) and
/// returns it as text.
pub(crate) fn encode<'a>(src: &[u8], dst: &'a mut [u8]) -> &'a str {
    debug_assert_eq!(dst.len(), src.len() * 2);
    for (byte, pair) in src.iter().zip(dst.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    // Only ASCII digits were written, so this cannot fail; the fallback
    // keeps the function total anyway.
    std::str::from_utf8(dst).unwrap_or_default()
}

/// The value of one lower-case hex digit.
fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Reads lower-case hex of exactly `out.len() * 2` characters into `out`;
/// `None` for any other length or character (upper case included).
pub(crate) fn decode(s: &str, out: &mut [u8]) -> Option<()> {
    let s = s.as_bytes();
    if s.len() != out.len() * 2 {
        return None;
    }
    for (pair, byte) in s.chunks_exact(2).zip(out.iter_mut()) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_upper_case_and_bad_lengths() {
        let bytes = [0x00, 0x9f, 0xa0, 0xff];
        let mut buf = [0u8; 8];
        assert_eq!(encode(&bytes, &mut buf), "009fa0ff");
        let mut out = [0u8; 4];
        assert_eq!(decode("009fa0ff", &mut out), Some(()));
        assert_eq!(out, bytes);
        assert_eq!(decode("009FA0FF", &mut out), None);
        assert_eq!(decode("009fa0f", &mut out), None);
        assert_eq!(decode("009fa0ff00", &mut out), None);
        assert_eq!(decode("009fa0fg", &mut out), None);
    }
}
