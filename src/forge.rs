//! Building invalid tokens on purpose, for test vectors, property tests and
//! fuzzing. Compiled only with the `forge` feature.
//!
//! Everything here signs with keys the caller already holds (the proof
//! secret of a token it has), which is exactly what a malicious holder can
//! do. It grants nothing a verifier would accept: that is what the tests
//! built on it show.

use ciborium::Value;
use ed25519_dalek::{Signer, SigningKey};

use crate::caveat::Caveat;
use crate::cbor;
use crate::token::block_message;

/// Why a forge helper could not work on its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ForgeError {
    /// The input is not a structurally valid unsealed token.
    #[error("input is not an unsealed format v1 token")]
    NotAToken,
}

/// Encodes a block body exactly as given: caveats in the given order, no
/// validation, no duplicate check.
pub fn raw_payload(kid: Option<[u8; 8]>, next_key: &[u8; 32], caveats: &[Caveat]) -> Vec<u8> {
    raw_payload_values(
        kid,
        next_key,
        caveats.iter().map(Caveat::to_value).collect(),
    )
}

/// Encodes a block body from raw CBOR caveat values (for unknown caveat types).
pub fn raw_payload_values(
    kid: Option<[u8; 8]>,
    next_key: &[u8; 32],
    caveats: Vec<Value>,
) -> Vec<u8> {
    let mut body = vec![];
    if let Some(k) = kid {
        body.push(Value::Bytes(k.to_vec()));
    }
    body.extend([Value::Bytes(next_key.to_vec()), Value::Array(caveats)]);
    cbor::encode(&Value::Array(body))
}

/// Appends a block whose payload is `payload` (any bytes), signed with the
/// token's proof secret, with a proof for `next_seed`. No check of any kind
/// is applied to the payload.
pub fn append_raw(
    token: &[u8],
    payload: Vec<u8>,
    next_seed: &[u8; 32],
) -> Result<Vec<u8>, ForgeError> {
    let mut top = match cbor::decode(token) {
        Ok(Value::Array(a)) if a.len() == 3 => a,
        _ => return Err(ForgeError::NotAToken),
    };
    let secret = bytes_n::<32>(&top[2])?;
    let Value::Array(blocks) = &mut top[1] else {
        return Err(ForgeError::NotAToken);
    };
    let prev_sig = bytes_n::<64>(blocks.last().ok_or(ForgeError::NotAToken)?)?;
    let signer = SigningKey::from_bytes(&secret);
    let sig = signer.sign(&block_message(
        Some(&ed25519_dalek::Signature::from_bytes(&prev_sig)),
        &payload,
    ));
    blocks.push(Value::Bytes(payload));
    blocks.push(Value::Bytes(sig.to_bytes().to_vec()));
    top[2] = Value::Bytes(next_seed.to_vec());
    Ok(cbor::encode(&Value::Array(top)))
}

/// Appends a block whose payload is `payload`, signed with the key of
/// `signer_seed` whoever that is (a thief's own key, say), and replaces the
/// proof field with `proof` (empty for a holder-bound token). Works on
/// bound, unbound and sealed tokens alike.
pub fn append_signed_by(
    token: &[u8],
    payload: Vec<u8>,
    signer_seed: &[u8; 32],
    proof: &[u8],
) -> Result<Vec<u8>, ForgeError> {
    let mut top = match cbor::decode(token) {
        Ok(Value::Array(a)) if a.len() == 3 => a,
        _ => return Err(ForgeError::NotAToken),
    };
    let Value::Array(blocks) = &mut top[1] else {
        return Err(ForgeError::NotAToken);
    };
    let prev_sig = bytes_n::<64>(blocks.last().ok_or(ForgeError::NotAToken)?)?;
    let sig = SigningKey::from_bytes(signer_seed).sign(&block_message(
        Some(&ed25519_dalek::Signature::from_bytes(&prev_sig)),
        &payload,
    ));
    blocks.push(Value::Bytes(payload));
    blocks.push(Value::Bytes(sig.to_bytes().to_vec()));
    top[2] = Value::Bytes(proof.to_vec());
    Ok(cbor::encode(&Value::Array(top)))
}

/// Replaces a token's proof field with `proof`, as given.
pub fn replace_proof(token: &[u8], proof: &[u8]) -> Result<Vec<u8>, ForgeError> {
    let mut top = match cbor::decode(token) {
        Ok(Value::Array(a)) if a.len() == 3 => a,
        _ => return Err(ForgeError::NotAToken),
    };
    top[2] = Value::Bytes(proof.to_vec());
    Ok(cbor::encode(&Value::Array(top)))
}

fn bytes_n<const N: usize>(v: &Value) -> Result<[u8; N], ForgeError> {
    match v {
        Value::Bytes(b) => b.as_slice().try_into().map_err(|_| ForgeError::NotAToken),
        _ => Err(ForgeError::NotAToken),
    }
}

/// Appends a block declaring `caveats` as given, skipping the monotonicity,
/// duplicate and ordering checks that [`crate::Token::attenuate`] applies.
pub fn append_unchecked(
    token: &[u8],
    caveats: &[Caveat],
    next_seed: &[u8; 32],
) -> Result<Vec<u8>, ForgeError> {
    let next_key = SigningKey::from_bytes(next_seed).verifying_key().to_bytes();
    append_raw(token, raw_payload(None, &next_key, caveats), next_seed)
}

/// The public key for an ephemeral seed.
pub fn public_of(seed: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(seed).verifying_key().to_bytes()
}

/// Appends a block whose payload is `payload` and whose signature is what
/// `sign` returns for the block's signed message (spec/token.md §5.2), and
/// sets the proof to `proof`. Neither is checked: the signature may come
/// from any key and any arithmetic, which is how the tests build
/// signatures with mixed-order points (spec/token.md §7.2).
pub fn append_signed_with(
    token: &[u8],
    payload: Vec<u8>,
    sign: impl FnOnce(&[u8]) -> [u8; 64],
    proof: &[u8],
) -> Result<Vec<u8>, ForgeError> {
    let mut top = match cbor::decode(token) {
        Ok(Value::Array(a)) if a.len() == 3 => a,
        _ => return Err(ForgeError::NotAToken),
    };
    let Value::Array(blocks) = &mut top[1] else {
        return Err(ForgeError::NotAToken);
    };
    let prev_sig = bytes_n::<64>(blocks.last().ok_or(ForgeError::NotAToken)?)?;
    let sig = sign(&block_message(
        Some(&ed25519_dalek::Signature::from_bytes(&prev_sig)),
        &payload,
    ));
    blocks.push(Value::Bytes(payload));
    blocks.push(Value::Bytes(sig.to_vec()));
    top[2] = Value::Bytes(proof.to_vec());
    Ok(cbor::encode(&Value::Array(top)))
}

/// Replaces the proof of `token` by the seal `sign` returns for the seal
/// message of its last block (spec/token.md §5.3), with no check.
pub fn seal_with(
    token: &[u8],
    sign: impl FnOnce(&[u8]) -> [u8; 64],
) -> Result<Vec<u8>, ForgeError> {
    let mut top = match cbor::decode(token) {
        Ok(Value::Array(a)) if a.len() == 3 => a,
        _ => return Err(ForgeError::NotAToken),
    };
    let Value::Array(blocks) = &top[1] else {
        return Err(ForgeError::NotAToken);
    };
    let last = bytes_n::<64>(blocks.last().ok_or(ForgeError::NotAToken)?)?;
    let seal = sign(&crate::token::seal_message(
        &ed25519_dalek::Signature::from_bytes(&last),
    ));
    top[2] = Value::Bytes(seal.to_vec());
    Ok(cbor::encode(&Value::Array(top)))
}
