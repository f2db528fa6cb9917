//! The one reader for format v1's CBOR (spec/token.md §3).
//!
//! ciborium accepts many encodings of one value (long-form integers,
//! indefinite lengths, unsorted maps). Format v1 allows exactly one: the
//! deterministic encoding of RFC 8949 §4.2. Rather than audit every case of
//! the decoder, [`decode`] reads the bytes into a [`Value`] and the caller
//! re-encodes the typed result and compares bytes ([`ensure_canonical`]). Any
//! byte that differs from the canonical form, including a reordered set or a
//! duplicate entry, is therefore rejected.

use ciborium::Value;

use crate::error::ParseError;
use crate::limits::MAX_CBOR_DEPTH;

/// Decodes exactly one CBOR item from `bytes`, with nesting capped at
/// [`MAX_CBOR_DEPTH`]. Bytes after the item are an error.
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
/// lengths, which is the deterministic encoding for the types format v1 uses
/// (it has no maps and no floats).
pub(crate) fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Writing to a Vec cannot fail, and every Value we build is encodable.
    ciborium::ser::into_writer(value, &mut out).expect("encoding a Value into a Vec is infallible");
    out
}

/// Fails with [`ParseError::NonCanonical`] unless `value` encodes to exactly `bytes`.
pub(crate) fn ensure_canonical(value: &Value, bytes: &[u8]) -> Result<(), ParseError> {
    if encode(value) == bytes {
        Ok(())
    } else {
        Err(ParseError::NonCanonical)
    }
}

pub(crate) fn array(v: Value, what: &'static str) -> Result<Vec<Value>, ParseError> {
    match v {
        Value::Array(a) => Ok(a),
        _ => Err(ParseError::Malformed(what)),
    }
}

pub(crate) fn uint(v: &Value, what: &'static str) -> Result<u64, ParseError> {
    match v {
        Value::Integer(i) => u64::try_from(*i).map_err(|_| ParseError::Malformed(what)),
        _ => Err(ParseError::Malformed(what)),
    }
}

pub(crate) fn int(v: &Value, what: &'static str) -> Result<i64, ParseError> {
    match v {
        Value::Integer(i) => i64::try_from(*i).map_err(|_| ParseError::Malformed(what)),
        _ => Err(ParseError::Malformed(what)),
    }
}

pub(crate) fn text(v: Value, what: &'static str) -> Result<String, ParseError> {
    match v {
        Value::Text(t) if t.len() <= crate::limits::MAX_STRING_BYTES => Ok(t),
        Value::Text(_) => Err(ParseError::TooLong),
        _ => Err(ParseError::Malformed(what)),
    }
}

pub(crate) fn bytes_n<const N: usize>(
    v: &Value,
    what: &'static str,
) -> Result<[u8; N], ParseError> {
    match v {
        Value::Bytes(b) => b
            .as_slice()
            .try_into()
            .map_err(|_| ParseError::Malformed(what)),
        _ => Err(ParseError::Malformed(what)),
    }
}

pub(crate) fn u64_value(n: u64) -> Value {
    Value::Integer(n.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_trailing_and_truncated() {
        assert_eq!(decode(&[0x01, 0x00]), Err(ParseError::TrailingBytes));
        assert_eq!(decode(&[0x82, 0x01]), Err(ParseError::Cbor));
        assert_eq!(decode(&[]), Err(ParseError::Cbor));
    }

    #[test]
    fn non_shortest_integer_is_not_canonical() {
        // 0x18 0x01 is 1 in a one-byte argument; the canonical form is 0x01.
        let v = decode(&[0x18, 0x01]).unwrap();
        assert_eq!(
            ensure_canonical(&v, &[0x18, 0x01]),
            Err(ParseError::NonCanonical)
        );
        assert_eq!(ensure_canonical(&v, &[0x01]), Ok(()));
    }

    #[test]
    fn indefinite_length_is_not_canonical() {
        // [_ 1] (indefinite array) versus [1].
        let v = decode(&[0x9f, 0x01, 0xff]).unwrap();
        assert_eq!(
            ensure_canonical(&v, &[0x9f, 0x01, 0xff]),
            Err(ParseError::NonCanonical)
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = [0x81u8; 64];
        let mut input = deep.to_vec();
        input.push(0x00);
        assert_eq!(decode(&input), Err(ParseError::Cbor));
    }
}
