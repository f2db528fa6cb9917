//! Proof of possession: the per-request signature a bound token's holder
//! sends beside the token (spec/token.md §12.3, spec/http.md §2.3).
//!
//! A [`HolderProof`] is an Ed25519 signature by the holder key over one
//! fixed-width message: a domain tag, the verifier's [`Audience`], the
//! token's last block id, the exact Unix second, a random 16-byte nonce and
//! the request hash. The request hash is never sent: the client computes it
//! from the [`Request`] it means to make and the verifier from the request
//! it is about to execute, with the same function ([`request_hash`]), so a
//! proof made for one action, resource, argument set or body fails for any
//! other. On the wire the proof is one header value: `baton_proof_v1_` and
//! the unpadded base64url of `ts ‖ nonce ‖ signature` (88 bytes).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signature;

use crate::authority::Request;
use crate::caveat::ArgValue;
use crate::holder::{HolderKey, HolderPublicKey};
use crate::keys::{self, BlockId};

/// The prefix of a proof's header value.
pub const PROOF_PREFIX: &str = "baton_proof_v1_";
/// The HTTP header that carries a proof.
pub const PROOF_HEADER: &str = "Baton-Proof";
/// The binary length of a proof: 8-byte time, 16-byte nonce, 64-byte signature.
pub const PROOF_BYTES: usize = 8 + 16 + 64;
/// The exact length of a proof's header value.
pub const PROOF_TEXT_LEN: usize = PROOF_PREFIX.len() + 118;
/// The longest audience, in bytes.
pub const MAX_AUDIENCE: usize = 255;
/// The operation a [`Request`] names unless told otherwise.
pub const DEFAULT_OPERATION: &str = "call";

/// Domain tag of the signed proof message (spec/token.md §12.3).
const TAG_PROOF: &[u8] = b"baton/v1/proof\0";
const VERSION_BYTE: u8 = 1;
/// Length of the signed message: tag, version, audience, block id, ts, nonce, request hash.
const MESSAGE_LEN: usize = TAG_PROOF.len() + 1 + 32 + 32 + 8 + 16 + 32;

/// A proof could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProveError {
    /// The token is not bound to a holder, so it takes no proof.
    #[error("the token is not bound to a holder")]
    Unbound,
    /// The key given is not the token's holder key.
    #[error("the key is not the token's holder key")]
    HolderMismatch,
    /// The audience is not 1 to 255 bytes of visible ASCII.
    #[error("an audience is 1 to 255 bytes of visible ASCII")]
    InvalidAudience,
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Rng,
}

impl ProveError {
    /// The stable reason code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unbound => "holder_unbound",
            Self::HolderMismatch => "holder_mismatch",
            Self::InvalidAudience => "invalid_audience",
            Self::Rng => "rng_failed",
        }
    }
}

/// The identity a verifier answers to: 1 to 255 bytes of visible ASCII
/// (0x21–0x7e). A proof names its audience by digest, so a proof for
/// gateway A fails at gateway B and at the ledger.
#[derive(Clone, PartialEq, Eq)]
pub struct Audience {
    name: String,
    digest: [u8; 32],
}

impl Audience {
    /// Checks and digests an audience name.
    pub fn new(name: &str) -> Result<Self, ProveError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_AUDIENCE
            && name.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(ProveError::InvalidAudience);
        }
        let digest = *blake3::Hasher::new_derive_key("baton/v1 proof audience")
            .update(name.as_bytes())
            .finalize()
            .as_bytes();
        Ok(Self {
            name: name.to_owned(),
            digest,
        })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Audience({:?})", self.name)
    }
}

/// The digest of a raw request body: BLAKE3 derive-key `baton/v1 proof body`.
pub fn body_digest(body: &[u8]) -> [u8; 32] {
    *blake3::Hasher::new_derive_key("baton/v1 proof body")
        .update(body)
        .finalize()
        .as_bytes()
}

/// The request hash a proof signs (spec/token.md §12.3): BLAKE3 derive-key
/// `baton/v1 proof request` over the length-prefixed operation, action,
/// optional resource, the arguments in ascending byte order of their
/// names, and the body digest. Every field is length-prefixed, so the
/// encoding splits one way only.
pub fn request_hash(request: &Request) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("baton/v1 proof request");
    let field16 = |h: &mut blake3::Hasher, s: &[u8]| {
        // Every field is capped far below 2^16 by its own type.
        h.update(&(s.len() as u16).to_be_bytes());
        h.update(s);
    };
    field16(&mut h, request.operation_str().as_bytes());
    field16(&mut h, request.action().as_str().as_bytes());
    match request.resource_name() {
        None => {
            h.update(&[0]);
        }
        Some(r) => {
            h.update(&[1]);
            field16(&mut h, r.as_bytes());
        }
    }
    let args = request.args();
    h.update(&(args.len() as u16).to_be_bytes());
    // A BTreeMap<String, _> iterates in ascending byte order of its keys.
    for (name, value) in args {
        h.update(&[name.len() as u8]);
        h.update(name.as_bytes());
        match value {
            ArgValue::Int(n) => {
                h.update(&[0]);
                h.update(&n.to_be_bytes());
            }
            ArgValue::Str(s) => {
                h.update(&[1]);
                h.update(&(s.len() as u32).to_be_bytes());
                h.update(s.as_bytes());
            }
        }
    }
    h.update(request.body_digest());
    *h.finalize().as_bytes()
}

/// The exact message a proof signs.
pub(crate) fn proof_message(
    audience: &Audience,
    last_block: &BlockId,
    ts: u64,
    nonce: &[u8; 16],
    request_hash: &[u8; 32],
) -> [u8; MESSAGE_LEN] {
    let mut m = [0u8; MESSAGE_LEN];
    let mut at = 0;
    for part in [
        TAG_PROOF,
        &[VERSION_BYTE],
        &audience.digest,
        &last_block.0,
        &ts.to_be_bytes(),
        nonce,
        request_hash,
    ] {
        m[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    debug_assert_eq!(at, MESSAGE_LEN);
    m
}

/// The id of a proof, as the replay store and the ledger's idempotency
/// records know it: BLAKE3 derive-key `baton/v1 proof id` over the holder
/// key and the nonce. Never the signature bytes, which a holder could
/// vary for the same nonce.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProofId(pub [u8; 32]);

impl ProofId {
    /// The id of the proof with `nonce` by `holder`.
    pub fn of(holder: &HolderPublicKey, nonce: &[u8; 16]) -> Self {
        let mut h = blake3::Hasher::new_derive_key("baton/v1 proof id");
        h.update(holder.as_bytes());
        h.update(nonce);
        Self(*h.finalize().as_bytes())
    }
}

impl fmt::Display for ProofId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::hex::encode(&self.0, &mut [0u8; 64]))
    }
}

impl fmt::Debug for ProofId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProofId({self})")
    }
}

/// A proof of possession as sent: time, nonce and signature. Which key
/// signed it is not in the proof; it is the holder the token names.
#[derive(Clone, PartialEq, Eq)]
pub struct HolderProof {
    ts: u64,
    nonce: [u8; 16],
    signature: Signature,
}

/// Why a proof's header value is not a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the proof is not baton_proof_v1_ and 118 characters of canonical base64url")]
pub struct MalformedProof;

impl HolderProof {
    /// Signs a proof for `request` at Unix second `ts`, with a fresh nonce.
    pub fn sign(
        holder: &HolderKey,
        audience: &Audience,
        last_block: &BlockId,
        request: &Request,
        ts: u64,
    ) -> Result<Self, ProveError> {
        let seed = keys::random_seed().map_err(|_| ProveError::Rng)?;
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&seed[..16]);
        Ok(Self::sign_with_nonce(
            holder, audience, last_block, request, ts, nonce,
        ))
    }

    /// [`Self::sign`] with a caller-chosen nonce. For test vectors only: a
    /// nonce must be random and never reused.
    pub fn sign_with_nonce(
        holder: &HolderKey,
        audience: &Audience,
        last_block: &BlockId,
        request: &Request,
        ts: u64,
        nonce: [u8; 16],
    ) -> Self {
        let m = proof_message(audience, last_block, ts, &nonce, &request_hash(request));
        Self {
            ts,
            nonce,
            signature: holder.sign(&m),
        }
    }

    /// Parses a header value. The size is checked before anything else;
    /// the base64url must be canonical (no padding, zero trailing bits).
    pub fn from_header(value: &str) -> Result<Self, MalformedProof> {
        if value.len() != PROOF_TEXT_LEN {
            return Err(MalformedProof);
        }
        let body = value.strip_prefix(PROOF_PREFIX).ok_or(MalformedProof)?;
        let mut bytes = [0u8; PROOF_BYTES + 2];
        let n = URL_SAFE_NO_PAD
            .decode_slice(body, &mut bytes)
            .map_err(|_| MalformedProof)?;
        if n != PROOF_BYTES {
            return Err(MalformedProof);
        }
        Ok(Self::from_bytes(
            bytes[..PROOF_BYTES]
                .try_into()
                .expect("length checked just above"),
        ))
    }

    /// The proof from its 88 bytes. Any 88 bytes are a proof in form;
    /// whether the signature holds is for the verifier.
    pub fn from_bytes(bytes: &[u8; PROOF_BYTES]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&bytes[..8]);
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&bytes[8..24]);
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&bytes[24..]);
        Self {
            ts: u64::from_be_bytes(ts),
            nonce,
            signature: Signature::from_bytes(&sig),
        }
    }

    /// The 88-byte binary form.
    pub fn to_bytes(&self) -> [u8; PROOF_BYTES] {
        let mut out = [0u8; PROOF_BYTES];
        out[..8].copy_from_slice(&self.ts.to_be_bytes());
        out[8..24].copy_from_slice(&self.nonce);
        out[24..].copy_from_slice(&self.signature.to_bytes());
        out
    }

    /// The header value: `baton_proof_v1_` and unpadded base64url.
    pub fn to_header(&self) -> String {
        let mut s = String::with_capacity(PROOF_TEXT_LEN);
        s.push_str(PROOF_PREFIX);
        URL_SAFE_NO_PAD.encode_string(self.to_bytes(), &mut s);
        s
    }

    /// The Unix second the holder signed.
    pub fn ts(&self) -> u64 {
        self.ts
    }

    /// The nonce.
    pub fn nonce(&self) -> &[u8; 16] {
        &self.nonce
    }

    /// This proof's id under `holder`.
    pub fn id(&self, holder: &HolderPublicKey) -> ProofId {
        ProofId::of(holder, &self.nonce)
    }

    pub(crate) fn signature(&self) -> &Signature {
        &self.signature
    }
}

impl fmt::Debug for HolderProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HolderProof(ts={}, nonce={})",
            self.ts,
            crate::hex::encode(&self.nonce, &mut [0u8; 32])
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proof() -> HolderProof {
        let k = HolderKey::from_seed(&[5; 32]);
        let req = Request::new("crm.read", 100).unwrap();
        HolderProof::sign_with_nonce(
            &k,
            &Audience::new("gw-a").unwrap(),
            &BlockId([1; 32]),
            &req,
            100,
            [7; 16],
        )
    }

    #[test]
    fn header_round_trips_with_fixed_length() {
        let p = proof();
        let h = p.to_header();
        assert_eq!(h.len(), PROOF_TEXT_LEN);
        assert_eq!(HolderProof::from_header(&h).unwrap(), p);
    }

    #[test]
    fn header_rejects_every_other_form() {
        let h = proof().to_header();
        let body = &h[PROOF_PREFIX.len()..];
        let cases = [
            String::new(),
            h[1..].to_owned(),
            format!("{h}A"),
            format!("{h}="),
            format!("baton_proof_v2_{body}"),
            format!("{PROOF_PREFIX}{}+", &body[..body.len() - 1]),
            format!(" {}", &h[1..]),
        ];
        for c in cases {
            assert_eq!(HolderProof::from_header(&c), Err(MalformedProof), "{c:?}");
        }
        // Non-zero trailing bits: the last character carries 2 padding bits.
        let mut last = body.as_bytes()[body.len() - 1];
        last = if last == b'A' { b'B' } else { b'A' };
        let mut bad = h.clone();
        bad.pop();
        bad.push(last as char);
        let flipped = HolderProof::from_header(&bad);
        // Either it decodes to a different proof that re-encodes to `bad`, or it is refused.
        if let Ok(p) = flipped {
            assert_eq!(p.to_header(), bad);
        }
    }

    #[test]
    fn request_hash_binds_every_field() {
        let base = Request::new("refund.issue", 5).unwrap();
        let h = request_hash(&base);
        let variants = [
            base.clone().operation("POST /x").unwrap(),
            Request::new("refund.issues", 5).unwrap(),
            base.clone().resource("customer:1").unwrap(),
            base.clone().arg("amount", ArgValue::Int(1)).unwrap(),
            base.clone()
                .arg("amount", ArgValue::Str("1".into()))
                .unwrap(),
            base.clone().body(b"{}"),
        ];
        for v in &variants {
            assert_ne!(request_hash(v), h, "{v:?}");
        }
        // Time and the proof itself are not part of the request hash.
        assert_eq!(request_hash(&Request::new("refund.issue", 99).unwrap()), h);
        // Field boundaries: moving bytes between two fields changes the hash.
        let a = Request::new("a.b", 0).unwrap().operation("xy").unwrap();
        let b = Request::new("a.b", 0).unwrap().operation("x").unwrap();
        assert_ne!(request_hash(&a), request_hash(&b));
    }

    #[test]
    fn audiences_are_checked() {
        assert!(Audience::new("ledger.example.com").is_ok());
        for bad in ["", "has space", "tab\t", &"a".repeat(256), "é"] {
            assert_eq!(Audience::new(bad), Err(ProveError::InvalidAudience));
        }
    }
}
