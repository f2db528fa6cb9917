//! The one reader and writer for format v1's CBOR (spec/token.md §3).
//!
//! ciborium accepts many encodings of one value (long-form integers,
//! indefinite lengths, floats, tags). Format v1 allows exactly one: the
//! deterministic encoding of RFC 8949 §4.2. [`Reader`] pulls one header at a
//! time with ciborium's low-level decoder and refuses, as it goes, any header
//! whose argument is not in its shortest form, any indefinite length and any
//! type the schema does not expect. The typed parsers in `caveat` and
//! `token` then check the orderings that CBOR itself leaves open (sets and
//! caveats sorted, no duplicates). Nothing is decoded into an intermediate
//! tree, so parsing allocates only the strings a caveat keeps.
//!
//! [`Writer`] emits the same canonical form, so `parse(write(x)) == x` and
//! `write(parse(b)) == b` for every accepted `b`.

use ciborium::Value;
use ciborium_ll::{Decoder, Encoder, Header};

use crate::error::ParseError;

/// Nesting limit of the lenient decoder below. The strict [`Reader`] needs
/// none: the schema fixes its nesting (at most four levels).
const MAX_CBOR_DEPTH: usize = 8;

/// The length of the shortest header encoding an argument of `arg`.
fn canonical_header_len(arg: u64) -> usize {
    match arg {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// A strict, zero-copy reader over one canonical CBOR item.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// The current offset, for slicing out the bytes of an item just read.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The bytes between two offsets.
    pub(crate) fn slice(&self, from: usize, to: usize) -> &'a [u8] {
        &self.buf[from..to]
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Pulls one header, refusing non-shortest arguments and indefinite lengths.
    fn header(&mut self) -> Result<Header, ParseError> {
        let mut dec = Decoder::from(&self.buf[self.pos..]);
        let header = dec.pull().map_err(|_| ParseError::Cbor)?;
        let used = dec.offset();
        let arg = match header {
            Header::Positive(n) | Header::Negative(n) | Header::Tag(n) => n,
            Header::Bytes(Some(n))
            | Header::Text(Some(n))
            | Header::Array(Some(n))
            | Header::Map(Some(n)) => n as u64,
            Header::Simple(n) => u64::from(n),
            Header::Bytes(None) | Header::Text(None) | Header::Array(None) | Header::Map(None) => {
                return Err(ParseError::NonCanonical);
            }
            Header::Break => return Err(ParseError::Cbor),
            Header::Float(_) => return Err(ParseError::Malformed("floats are not allowed")),
        };
        if used != canonical_header_len(arg) {
            return Err(ParseError::NonCanonical);
        }
        self.pos += used;
        Ok(header)
    }

    /// Reads an array header and returns its length. A length that the
    /// remaining bytes cannot hold is refused before anyone allocates for it.
    pub(crate) fn array(&mut self, what: &'static str) -> Result<usize, ParseError> {
        match self.header()? {
            Header::Array(Some(n)) if n <= self.remaining() => Ok(n),
            Header::Array(Some(_)) => Err(ParseError::Cbor),
            _ => Err(ParseError::Malformed(what)),
        }
    }

    /// Reads an unsigned integer.
    pub(crate) fn uint(&mut self, what: &'static str) -> Result<u64, ParseError> {
        match self.header()? {
            Header::Positive(n) => Ok(n),
            _ => Err(ParseError::Malformed(what)),
        }
    }

    /// Reads an integer that fits in an `i64`.
    pub(crate) fn int(&mut self, what: &'static str) -> Result<i64, ParseError> {
        match self.header()? {
            Header::Positive(n) => i64::try_from(n).map_err(|_| ParseError::Malformed(what)),
            // CBOR negative n means -1 - n.
            Header::Negative(n) => i64::try_from(n)
                .map(|n| -1 - n)
                .map_err(|_| ParseError::Malformed(what)),
            _ => Err(ParseError::Malformed(what)),
        }
    }

    /// Reads a byte string, borrowing it.
    pub(crate) fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], ParseError> {
        match self.header()? {
            Header::Bytes(Some(n)) => self.take(n),
            _ => Err(ParseError::Malformed(what)),
        }
    }

    /// Reads a byte string of exactly `N` bytes.
    pub(crate) fn bytes_n<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], ParseError> {
        self.bytes(what)?
            .try_into()
            .map_err(|_| ParseError::Malformed(what))
    }

    /// Reads a text string of at most [`crate::limits::MAX_STRING_BYTES`] bytes.
    pub(crate) fn text(&mut self, what: &'static str) -> Result<&'a str, ParseError> {
        match self.header()? {
            Header::Text(Some(n)) if n > crate::limits::MAX_STRING_BYTES => {
                Err(ParseError::TooLong)
            }
            Header::Text(Some(n)) => {
                std::str::from_utf8(self.take(n)?).map_err(|_| ParseError::Cbor)
            }
            _ => Err(ParseError::Malformed(what)),
        }
    }

    /// The major type of the next item, if any.
    pub(crate) fn peek_major(&self) -> Option<u8> {
        self.buf.get(self.pos).map(|b| b >> 5)
    }

    /// Consumes a `null` if one is next.
    pub(crate) fn null(&mut self) -> bool {
        // 0xf6 is the only canonical encoding of null.
        let is_null = self.buf.get(self.pos) == Some(&0xf6);
        if is_null {
            self.pos += 1;
        }
        is_null
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        if n > self.remaining() {
            return Err(ParseError::Cbor);
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Succeeds only if every byte has been read.
    pub(crate) fn finish(&self) -> Result<(), ParseError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(ParseError::TrailingBytes)
        }
    }
}

/// Writes canonical CBOR headers and items into a buffer.
pub(crate) struct Writer {
    out: Vec<u8>,
}

impl Writer {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            out: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, h: Header) {
        // ciborium_ll writes the shortest header form; writing to a Vec cannot fail.
        Encoder::from(&mut self.out)
            .push(h)
            .expect("writing to a Vec is infallible");
    }

    pub(crate) fn array(&mut self, len: usize) -> &mut Self {
        self.push(Header::Array(Some(len)));
        self
    }

    pub(crate) fn uint(&mut self, n: u64) -> &mut Self {
        self.push(Header::Positive(n));
        self
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.push(Header::Bytes(Some(b.len())));
        self.out.extend_from_slice(b);
        self
    }

    /// Appends bytes that are already a canonical encoding.
    pub(crate) fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b);
        self
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// Decodes one CBOR item into a [`Value`], leniently. Only for tools that
/// take tokens apart on purpose (the `forge` feature); parsing never uses it.
#[cfg_attr(not(feature = "forge"), allow(dead_code))]
pub(crate) fn decode(bytes: &[u8]) -> Result<Value, ParseError> {
    let mut reader = bytes;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut reader, MAX_CBOR_DEPTH)
        .map_err(|_| ParseError::Cbor)?;
    if !reader.is_empty() {
        return Err(ParseError::TrailingBytes);
    }
    Ok(value)
}

/// Encodes a value. ciborium writes shortest-form integers and definite
/// lengths, which is the deterministic encoding for the types format v1
/// uses (it has no maps and no floats).
pub(crate) fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // Writing to a Vec cannot fail, and every Value we build is encodable.
    ciborium::ser::into_writer(value, &mut out).expect("encoding a Value into a Vec is infallible");
    out
}

pub(crate) fn u64_value(n: u64) -> Value {
    Value::Integer(n.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_trailing_and_truncated() {
        let mut r = Reader::new(&[0x01, 0x00]);
        assert_eq!(r.uint("x"), Ok(1));
        assert_eq!(r.finish(), Err(ParseError::TrailingBytes));
        assert_eq!(Reader::new(&[0x42, 0x01]).bytes("x"), Err(ParseError::Cbor));
        assert_eq!(Reader::new(&[]).uint("x"), Err(ParseError::Cbor));
    }

    #[test]
    fn non_shortest_headers_are_refused() {
        // 1 as a one-byte argument; canonical is 0x01.
        assert_eq!(
            Reader::new(&[0x18, 0x01]).uint("x"),
            Err(ParseError::NonCanonical)
        );
        // 255 as a two-byte argument.
        assert_eq!(
            Reader::new(&[0x19, 0x00, 0xff]).uint("x"),
            Err(ParseError::NonCanonical)
        );
        // A one-element array with its length in a following byte.
        assert_eq!(
            Reader::new(&[0x98, 0x01, 0x00]).array("x"),
            Err(ParseError::NonCanonical)
        );
        // Shortest forms pass, at every width boundary.
        for n in [
            0u64,
            23,
            24,
            255,
            256,
            65535,
            65536,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
            u64::MAX,
        ] {
            let mut w = Writer::with_capacity(9);
            w.uint(n);
            let b = w.finish();
            assert_eq!(b.len(), canonical_header_len(n));
            assert_eq!(Reader::new(&b).uint("x"), Ok(n));
        }
    }

    #[test]
    fn indefinite_lengths_floats_and_huge_lengths_are_refused() {
        assert_eq!(
            Reader::new(&[0x9f, 0x01, 0xff]).array("x"),
            Err(ParseError::NonCanonical)
        );
        assert_eq!(
            Reader::new(&[0x5f, 0x41, 0x00, 0xff]).bytes("x"),
            Err(ParseError::NonCanonical)
        );
        assert!(matches!(
            Reader::new(&[0xf9, 0x3c, 0x00]).uint("x"),
            Err(ParseError::Malformed(_))
        ));
        // An array claiming 2^32 items in a 5-byte buffer.
        assert_eq!(
            Reader::new(&[0x9b, 0, 0, 0, 1, 0, 0, 0, 0]).array("x"),
            Err(ParseError::Cbor)
        );
    }

    #[test]
    fn integers_and_text() {
        assert_eq!(Reader::new(&[0x20]).int("x"), Ok(-1));
        assert_eq!(
            Reader::new(&[0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).int("x"),
            Ok(i64::MIN)
        );
        assert!(
            Reader::new(&[0x3b, 0x80, 0, 0, 0, 0, 0, 0, 0])
                .int("x")
                .is_err()
        );
        assert_eq!(Reader::new(&[0x62, b'h', b'i']).text("x"), Ok("hi"));
        assert_eq!(
            Reader::new(&[0x62, 0xff, 0xfe]).text("x"),
            Err(ParseError::Cbor)
        );
        let mut r = Reader::new(&[0xf6, 0xf6]);
        assert!(r.null());
        assert!(r.null());
        assert!(!r.null());
    }

    #[test]
    fn writer_matches_ciborium() {
        let v = Value::Array(vec![
            u64_value(1),
            Value::Bytes(vec![7; 40]),
            u64_value(70_000),
        ]);
        let mut w = Writer::with_capacity(64);
        w.array(3).uint(1).bytes(&[7; 40]).uint(70_000);
        assert_eq!(w.finish(), encode(&v));
    }
}
