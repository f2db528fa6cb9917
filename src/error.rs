//! Every way a token can be rejected, one enum per concern.
//!
//! Each variant has a stable reason code ([`ParseError::code`] and friends).
//! The codes are part of the public contract: the CLI prints them, the spec
//! lists them (spec/token.md §9) and the test vectors name them. Variants
//! carry only what helps the holder fix their request; cryptographic failures
//! carry no detail that would help an attacker.

/// The token could not be read: its text, its binary encoding or its
/// structure is not a valid format v1 token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The text does not start with the `baton_v1_` prefix.
    #[error("token text does not start with the baton_v1_ prefix")]
    BadPrefix,
    /// The text contains `=` padding, which format v1 forbids.
    #[error("token text contains base64 padding")]
    Base64Padding,
    /// The text uses the standard base64 alphabet (`+` or `/`) instead of base64url.
    #[error("token text uses the standard base64 alphabet, not base64url")]
    Base64StandardAlphabet,
    /// The text contains whitespace.
    #[error("token text contains whitespace")]
    Base64Whitespace,
    /// The text is not valid unpadded base64url (bad character, length or trailing bits).
    #[error("token text is not valid base64url")]
    Base64Invalid,
    /// The encoded token exceeds [`crate::limits::MAX_TOKEN_BYTES`].
    #[error("token exceeds the size limit")]
    TooLarge,
    /// The bytes are not well-formed CBOR (truncated, bad UTF-8, a length
    /// longer than the input).
    #[error("token is not well-formed CBOR")]
    Cbor,
    /// The CBOR is well-formed but not in the deterministic encoding of RFC 8949 §4.2
    /// with the orderings of spec/token.md §3.
    #[error("token encoding is not canonical")]
    NonCanonical,
    /// Bytes follow the encoded token.
    #[error("trailing bytes after the token")]
    TrailingBytes,
    /// The format version is not 1.
    #[error("unsupported token format version")]
    UnsupportedVersion,
    /// A structure has the wrong CBOR type, arity or value.
    #[error("malformed token structure: {0}")]
    Malformed(&'static str),
    /// The token has no blocks.
    #[error("token has no blocks")]
    NoBlocks,
    /// The token has more than [`crate::limits::MAX_BLOCKS`] blocks.
    #[error("token has too many blocks")]
    TooManyBlocks,
    /// A block has more than [`crate::limits::MAX_CAVEATS_PER_BLOCK`] caveats.
    #[error("block {block} has too many caveats")]
    TooManyCaveats {
        /// Index of the offending block.
        block: usize,
    },
    /// A string or list exceeds its documented limit.
    #[error("a string or list exceeds its limit")]
    TooLong,
    /// A caveat type this verifier does not know. Unknown means deny.
    #[error("block {block} has an unknown caveat type {code}")]
    UnknownCaveat {
        /// Index of the offending block.
        block: usize,
        /// The unknown type code.
        code: u64,
    },
    /// A block declares the same caveat twice (same kind and, for budgets and
    /// argument bounds, the same key).
    #[error("block {block} declares {kind} twice")]
    DuplicateCaveat {
        /// Index of the offending block.
        block: usize,
        /// Which caveat is duplicated.
        kind: CaveatKind,
    },
    /// A caveat's value is invalid on its own (bad pattern, empty set, reversed range...).
    #[error("block {block}: invalid {kind}: {reason}")]
    InvalidCaveat {
        /// Index of the offending block.
        block: usize,
        /// Which caveat is invalid.
        kind: CaveatKind,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A public key is not a canonical encoding of a curve point, or is a
    /// small-order (weak) point.
    #[error("block {block} names an invalid public key")]
    BadKey {
        /// Index of the block naming the key.
        block: usize,
    },
    /// Block 0 lacks a key id, or a later block carries one.
    #[error("key id missing from block 0 or present in a later block")]
    KidPlacement,
}

impl ParseError {
    /// The stable reason code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadPrefix => "bad_prefix",
            Self::Base64Padding => "base64_padding",
            Self::Base64StandardAlphabet => "base64_standard_alphabet",
            Self::Base64Whitespace => "base64_whitespace",
            Self::Base64Invalid => "base64_invalid",
            Self::TooLarge => "too_large",
            Self::Cbor => "cbor_malformed",
            Self::NonCanonical => "non_canonical",
            Self::TrailingBytes => "trailing_bytes",
            Self::UnsupportedVersion => "unsupported_version",
            Self::Malformed(_) => "malformed",
            Self::NoBlocks => "no_blocks",
            Self::TooManyBlocks => "too_many_blocks",
            Self::TooManyCaveats { .. } => "too_many_caveats",
            Self::TooLong => "too_long",
            Self::UnknownCaveat { .. } => "unknown_caveat",
            Self::DuplicateCaveat { .. } => "duplicate_caveat",
            Self::InvalidCaveat { .. } => "invalid_caveat",
            Self::BadKey { .. } => "bad_key",
            Self::KidPlacement => "kid_placement",
        }
    }
}

/// A block declares authority wider than the effective authority of the
/// blocks before it, or the delegation depth is exhausted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// Block `block` widens the effective authority through caveat `kind`.
    #[error("block {block} widens its parent's {kind}: {reason}")]
    Widening {
        /// Index of the widening block.
        block: usize,
        /// The caveat that widens.
        kind: CaveatKind,
        /// What exactly is wider.
        reason: &'static str,
    },
    /// Block `block` was appended after the remaining delegation depth reached zero.
    #[error("block {block} exceeds the delegation depth")]
    DepthExceeded {
        /// Index of the block that is one too many.
        block: usize,
    },
    /// Block `block` declares a holder that is not its own `next_key`: the
    /// holder key must be the key that signs what follows.
    #[error("block {block} declares a holder other than its next key")]
    HolderMismatch {
        /// Index of the offending block.
        block: usize,
    },
    /// Block `block` follows a holder-bound block but declares no holder
    /// (dropping the binding would widen), or the token carries no proof
    /// secret though its chain is not bound.
    #[error("block {block} drops the holder binding")]
    HolderUnbound {
        /// Index of the offending block.
        block: usize,
    },
}

impl ChainError {
    /// The stable reason code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Widening { kind, .. } => kind.widening_code(),
            Self::DepthExceeded { .. } => "depth_exceeded",
            Self::HolderMismatch { .. } => "holder_mismatch",
            Self::HolderUnbound { .. } => "holder_unbound",
        }
    }
}

/// The token is not valid: it failed to parse, its chain is not monotonic,
/// or a signature or the proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The token could not be parsed.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The chain widens authority or exceeds its depth.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// Block 0 names a key id that is not in the verifier's keyset.
    #[error("unknown root key id")]
    UnknownKid,
    /// A block signature or the seal does not verify.
    #[error("signature verification failed")]
    BadSignature,
    /// The proof does not match the last block: a wrong secret, or blocks were dropped.
    #[error("proof does not match the last block")]
    BadProof,
    /// A block of the chain has been revoked.
    #[error("block {block} has been revoked")]
    Revoked {
        /// Index of the first revoked block.
        block: usize,
    },
}

impl VerifyError {
    /// The stable reason code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Parse(e) => e.code(),
            Self::Chain(e) => e.code(),
            Self::UnknownKid => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::BadProof => "bad_proof",
            Self::Revoked { .. } => "revoked",
        }
    }
}

/// A valid token does not allow the requested action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denied {
    /// The request time is after the token's `not_after` (plus skew).
    #[error("token has expired")]
    Expired,
    /// The request time is before the token's `not_before` (minus skew).
    #[error("token is not yet valid")]
    NotYetValid,
    /// The request's action name is not a valid action name.
    #[error("invalid action name")]
    InvalidAction,
    /// The action is not allowed by the token's tools caveat.
    #[error("action not allowed")]
    ActionNotAllowed,
    /// The resource is missing, invalid, or not allowed by the resources caveat.
    #[error("resource not allowed")]
    ResourceNotAllowed,
    /// An argument constrained for this action is absent from the request.
    #[error("argument {0} is required by a bound but missing")]
    ArgMissing(String),
    /// The request's arguments are malformed: a bad name, a repeated name, or
    /// more than [`crate::limits::MAX_REQUEST_ARGS`].
    #[error("invalid request arguments")]
    InvalidArgs,
    /// An argument is outside a bound (or of the wrong type for it).
    #[error("argument {0} is out of bounds")]
    ArgOutOfBounds(String),
    /// The request's operation is not 1 to 256 bytes of printable ASCII.
    #[error("invalid operation name")]
    InvalidOperation,
}

impl Denied {
    /// The stable reason code of this denial.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::InvalidAction => "invalid_action",
            Self::ActionNotAllowed => "action_not_allowed",
            Self::ResourceNotAllowed => "resource_not_allowed",
            Self::InvalidArgs => "invalid_args",
            Self::ArgMissing(_) => "arg_missing",
            Self::ArgOutOfBounds(_) => "arg_out_of_bounds",
            Self::InvalidOperation => "invalid_operation",
        }
    }
}

/// A new block could not be appended to a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttenuateError {
    /// The token is sealed; no block may follow.
    #[error("token is sealed")]
    Sealed,
    /// The new block would be invalid on its own (limits, duplicates, bad values).
    #[error(transparent)]
    Invalid(#[from] ParseError),
    /// The new block would widen authority or exceed the depth.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// The token is bound to a holder, and the block (or seal) must be
    /// signed with the holder's secret key, which was not given or is not
    /// the holder's.
    #[error("a bound token is attenuated only with its holder's secret key")]
    HolderMismatch,
}

impl AttenuateError {
    /// The stable reason code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Sealed => "sealed",
            Self::Invalid(e) => e.code(),
            Self::Chain(e) => e.code(),
            Self::Rng => "rng_failed",
            Self::HolderMismatch => "holder_mismatch",
        }
    }
}

/// A bound token's proof of possession was refused, or a bearer token was
/// presented where a bound one is required (spec/token.md §12.4). Reported
/// in the order listed, after every token error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The verifier requires bound tokens and this one is not bound.
    #[error("this verifier accepts only holder-bound tokens")]
    HolderRequired,
    /// The token is bound and no proof came with the request.
    #[error("a holder-bound token needs a proof of possession")]
    Missing,
    /// The proof is not `baton_proof_v1_` and 118 characters of canonical base64url.
    #[error("the proof is malformed")]
    Malformed,
    /// The proof's time is outside the verifier's window (too old, or from
    /// the future). Its code is `proof_expired`.
    #[error("the proof is outside its time window")]
    OutsideWindow,
    /// The proof's signature does not verify under the holder key for this
    /// audience, token and request.
    #[error("the proof does not verify")]
    Invalid,
    /// A proof with this holder and nonce was already accepted.
    #[error("the proof was already used")]
    Replayed,
    /// The verifier cannot check proofs now: its replay store is full or
    /// it has no audience configured. Retry later.
    #[error("proofs cannot be checked now")]
    Unavailable,
}

impl ProofError {
    /// The stable reason code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::HolderRequired => "holder_required",
            Self::Missing => "proof_missing",
            Self::Malformed => "proof_malformed",
            Self::OutsideWindow => "proof_expired",
            Self::Invalid => "proof_invalid",
            Self::Replayed => "proof_replayed",
            Self::Unavailable => "proof_unavailable",
        }
    }
}

/// Which kind of caveat; used in errors and reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum CaveatKind {
    /// [`crate::Caveat::Budget`].
    Budget,
    /// [`crate::Caveat::Tools`].
    Tools,
    /// [`crate::Caveat::Depth`].
    Depth,
    /// [`crate::Caveat::Expiry`].
    Expiry,
    /// [`crate::Caveat::Resources`].
    Resources,
    /// [`crate::Caveat::ArgBound`].
    ArgBound,
    /// [`crate::Caveat::Label`].
    Label,
    /// [`crate::Caveat::Holder`].
    Holder,
}

impl CaveatKind {
    /// The reason code of a chain that widens this caveat.
    pub fn widening_code(self) -> &'static str {
        match self {
            Self::Budget => "widening_budget",
            Self::Tools => "widening_tools",
            Self::Depth => "widening_depth",
            Self::Expiry => "widening_expiry",
            Self::Resources => "widening_resources",
            Self::ArgBound => "widening_arg_bound",
            Self::Label => "widening_label",
            // Dropping a binding is reported as holder_unbound; this code
            // exists only so that every kind has one.
            Self::Holder => "holder_unbound",
        }
    }
}

impl std::fmt::Display for CaveatKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Budget => "budget",
            Self::Tools => "tools",
            Self::Depth => "depth",
            Self::Expiry => "expiry",
            Self::Resources => "resources",
            Self::ArgBound => "arg bound",
            Self::Label => "label",
            Self::Holder => "holder",
        })
    }
}
