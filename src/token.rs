//! The token format v1: blocks, signatures, proof, binary and text forms
//! (spec/token.md §2–§5), and offline attenuation.
//!
//! [`UnverifiedToken`] is a token whose structure, canonical encoding,
//! limits and monotonicity have been checked, but whose signatures have not.
//! It can be inspected and attenuated (a holder needs no key to delegate),
//! never authorized. [`Token`] is only produced by minting or by
//! [`crate::Verifier`], so a `Token` value always carries valid signatures.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::hazmat::{ExpandedSecretKey, raw_sign};
use ed25519_dalek::{Sha512, Signature, Signer as _, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::authority::{Authority, Authorization, Request};
use crate::caveat::Caveat;
use crate::cbor::{self, Reader, Writer};
use crate::error::{AttenuateError, ChainError, ParseError, ProofError, VerifyError};
use crate::holder::{HolderKey, HolderPublicKey};
use crate::keys::{self, BlockId, Kid, RootKey};
use crate::limits::{MAX_BLOCKS, MAX_CAVEATS_PER_BLOCK, MAX_TOKEN_BYTES, MAX_TOKEN_TEXT};
use crate::proof::{Audience, HolderProof, ProveError};
use crate::sig;
use crate::verifier::AuthorizeError;

/// The prefix of a token's text form: names the format and its version.
pub use crate::limits::TEXT_PREFIX;
/// The format version this crate reads and writes.
pub const FORMAT_VERSION: u64 = 1;

/// Domain-separation tags. Each signed message starts with one, then the
/// format version byte (spec/token.md §5.2).
const TAG_ROOT: &[u8] = b"baton/v1/root\0";
const TAG_BLOCK: &[u8] = b"baton/v1/block\0";
const TAG_SEAL: &[u8] = b"baton/v1/seal\0";
const VERSION_BYTE: u8 = 1;

/// One block: its exact payload bytes, what they say, and its signature.
#[derive(Clone)]
pub(crate) struct Block {
    pub(crate) payload: Vec<u8>,
    pub(crate) kid: Option<Kid>,
    /// The next signer's public key, as encoded. Checked on its bytes at
    /// parse time; decompressed only when a signature must be checked with it.
    pub(crate) next_key: [u8; 32],
    pub(crate) caveats: Vec<Caveat>,
    pub(crate) signature: Signature,
    pub(crate) id: BlockId,
}

/// How the holder proves possession: the last ephemeral secret, a seal,
/// or nothing in the token at all for a holder-bound chain, whose holder
/// proves possession per request (spec/token.md §12).
/// A chain built in this process also keeps the secret's signing key, so
/// attenuating it again does not re-derive the public key.
#[derive(Clone)]
pub(crate) enum Proof {
    Secret(Zeroizing<[u8; 32]>, Option<SigningKey>),
    Seal(Signature),
    Bound,
}

/// The key that signs the next block (or the seal).
enum Signer {
    Key(SigningKey),
    /// The proof secret of a parsed token, with the public key its last
    /// block declares. Signing this way skips re-deriving the public key (a
    /// scalar multiplication). Signing with a public key that does not match
    /// the secret could leak the secret to whoever picked that key; here
    /// that party already holds the token, secret included, so nothing is
    /// revealed, and the resulting block simply fails verification.
    Expanded(Box<ExpandedSecretKey>, VerifyingKey),
}

impl Signer {
    fn sign(&self, message: &[u8]) -> Signature {
        match self {
            Self::Key(k) => k.sign(message),
            Self::Expanded(esk, vk) => raw_sign::<Sha512>(esk, message, vk),
        }
    }
}

/// A parsed chain: everything but signature validity.
#[derive(Clone)]
pub(crate) struct Chain {
    pub(crate) blocks: Vec<Block>,
    pub(crate) proof: Proof,
    pub(crate) authority: Authority,
    pub(crate) ids: Vec<BlockId>,
    /// The canonical binary form.
    pub(crate) bytes: Vec<u8>,
}

/// The message block `index` signs: tag, version, then for blocks after
/// the first the previous signature, then the payload.
pub(crate) fn block_message(prev: Option<&Signature>, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(TAG_BLOCK.len() + 1 + 64 + payload.len());
    match prev {
        None => m.extend_from_slice(TAG_ROOT),
        Some(_) => m.extend_from_slice(TAG_BLOCK),
    }
    m.push(VERSION_BYTE);
    if let Some(p) = prev {
        m.extend_from_slice(&p.to_bytes());
    }
    m.extend_from_slice(payload);
    m
}

pub(crate) fn seal_message(last: &Signature) -> Vec<u8> {
    let mut m = Vec::with_capacity(TAG_SEAL.len() + 1 + 64);
    m.extend_from_slice(TAG_SEAL);
    m.push(VERSION_BYTE);
    m.extend_from_slice(&last.to_bytes());
    m
}

/// Encodes a block body: `[kid / null, next_key, [caveats...]]`, from
/// caveats already encoded and in canonical order.
fn encode_body(kid: Option<&Kid>, next_key: &[u8; 32], encoded: &[Vec<u8>]) -> Vec<u8> {
    let mut w = Writer::with_capacity(48 + encoded.iter().map(Vec::len).sum::<usize>());
    // Block 0 names its root key; later blocks are signed by the key the
    // block before them names, so they carry no kid.
    match kid {
        Some(k) => w.array(3).bytes(&k.0),
        None => w.array(2),
    };
    w.bytes(next_key).array(encoded.len());
    for e in encoded {
        w.raw(e);
    }
    w.finish()
}

/// Puts caveats in canonical order (ascending encoded bytes) and checks the
/// per-block rules: count, validity, no duplicates. Returns each caveat
/// with its encoding.
fn canonical_caveats(
    block: usize,
    caveats: Vec<Caveat>,
) -> Result<(Vec<Caveat>, Vec<Vec<u8>>), ParseError> {
    if caveats.len() > MAX_CAVEATS_PER_BLOCK {
        return Err(ParseError::TooManyCaveats { block });
    }
    for c in &caveats {
        c.validate(block)?;
    }
    let mut pairs: Vec<(Vec<u8>, Caveat)> = caveats
        .into_iter()
        .map(|c| (cbor::encode(&c.to_value()), c))
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let (encoded, caveats): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
    check_duplicates(block, &caveats)?;
    Ok((caveats, encoded))
}

fn check_duplicates(block: usize, caveats: &[Caveat]) -> Result<(), ParseError> {
    let mut seen = std::collections::BTreeSet::new();
    for c in caveats {
        if !seen.insert(c.dedup_key()) {
            return Err(ParseError::DuplicateCaveat {
                block,
                kind: c.kind(),
            });
        }
    }
    Ok(())
}

fn encode_token(blocks: &[Block], proof: &Proof) -> Vec<u8> {
    let size = 48 + blocks.iter().map(|b| b.payload.len() + 72).sum::<usize>();
    let mut w = Writer::with_capacity(size);
    // Blocks are flattened as payload, signature, payload, signature...; the
    // proof is told apart by its length (32-byte secret or 64-byte seal).
    w.array(3).uint(FORMAT_VERSION).array(2 * blocks.len());
    for b in blocks {
        w.bytes(&b.payload).bytes(&b.signature.to_bytes());
    }
    match proof {
        Proof::Secret(secret, _) => w.bytes(secret.as_ref()),
        Proof::Seal(seal) => w.bytes(&seal.to_bytes()),
        Proof::Bound => w.bytes(&[]),
    };
    w.finish()
}

impl Chain {
    /// Parses and checks everything that needs no key (spec/token.md §6 steps 1–6).
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, VerifyError> {
        if bytes.len() > MAX_TOKEN_BYTES {
            return Err(ParseError::TooLarge.into());
        }
        let mut r = Reader::new(bytes);
        let len = r.array("token is not an array")?;
        // The version comes first so that a future format fails as such, not
        // as malformed. It is read like any other item (spec/token.md §3.3):
        // a break byte is `cbor_malformed`, an indefinite length
        // `non_canonical`, and only then a non-integer `malformed`.
        if len == 0 {
            return Err(ParseError::Malformed("token does not start with a version").into());
        }
        if r.uint("token does not start with a version")? != FORMAT_VERSION {
            return Err(ParseError::UnsupportedVersion.into());
        }
        if len != 3 {
            return Err(ParseError::Malformed("token is not [version, blocks, proof]").into());
        }
        let items = r.array("blocks is not an array")?;
        if items % 2 != 0 {
            return Err(
                ParseError::Malformed("blocks is not a list of payload, signature pairs").into(),
            );
        }
        let n = items / 2;
        if n == 0 {
            return Err(ParseError::NoBlocks.into());
        }
        if n > MAX_BLOCKS {
            return Err(ParseError::TooManyBlocks.into());
        }
        let mut authority = Authority::default();
        let mut blocks: Vec<Block> = Vec::with_capacity(n);
        let mut ids: Vec<BlockId> = Vec::with_capacity(n);
        for index in 0..n {
            let payload = r.bytes("payload is not a byte string")?;
            let signature = Signature::from_bytes(&r.bytes_n::<64>("signature is not 64 bytes")?);
            let block = parse_block(index, payload, signature, ids.last())?;
            authority.push_block(&block.caveats)?;
            ids.push(block.id);
            blocks.push(block);
        }
        let proof = r.bytes("proof is not a byte string")?;
        let proof = if proof.is_empty() {
            Proof::Bound
        } else if let Ok(secret) = <[u8; 32]>::try_from(proof) {
            Proof::Secret(Zeroizing::new(secret), None)
        } else if let Ok(seal) = <[u8; 64]>::try_from(proof) {
            Proof::Seal(Signature::from_bytes(&seal))
        } else {
            return Err(ParseError::Malformed(
                "proof is neither empty, a 32-byte secret nor a 64-byte seal",
            )
            .into());
        };
        r.finish()?;
        // An empty proof means "bound"; a bound chain never carries the
        // holder's secret (spec/token.md §12.1).
        match (&proof, authority.holder.is_some()) {
            (Proof::Bound, false) => {
                return Err(ChainError::HolderUnbound { block: n - 1 }.into());
            }
            (Proof::Secret(..), true) => {
                return Err(ParseError::Malformed("a bound token carries no proof secret").into());
            }
            _ => {}
        }
        Ok(Self {
            blocks,
            proof,
            authority,
            ids,
            bytes: bytes.to_vec(),
        })
    }

    /// Appends a block signed with the current proof secret (or, for the
    /// authority block, the root key) and returns the new chain.
    /// The signer for the next block or the seal.
    fn signer(&self) -> Result<Signer, AttenuateError> {
        match &self.proof {
            Proof::Seal(_) => Err(AttenuateError::Sealed),
            Proof::Bound => Err(AttenuateError::HolderMismatch),
            Proof::Secret(_, Some(key)) => Ok(Signer::Key(key.clone())),
            Proof::Secret(seed, None) => {
                let last = self.blocks.len() - 1;
                let declared = VerifyingKey::from_bytes(&self.blocks[last].next_key)
                    .map_err(|_| ParseError::BadKey { block: last })?;
                let seed: &[u8; 32] = seed;
                Ok(Signer::Expanded(
                    Box::new(ExpandedSecretKey::from(seed)),
                    declared,
                ))
            }
        }
    }

    fn append(&self, caveats: Vec<Caveat>, next_seed: &[u8; 32]) -> Result<Self, AttenuateError> {
        let secret = self.signer()?;
        self.append_signed(&secret, caveats, next_seed)
    }

    /// The signer of a bound chain: the holder's own key, if it is the one
    /// the chain is bound to.
    fn holder_signer(&self, holder: &HolderKey) -> Result<Signer, AttenuateError> {
        match &self.proof {
            Proof::Seal(_) => Err(AttenuateError::Sealed),
            Proof::Bound if self.authority.holder == Some(holder.public()) => {
                Ok(Signer::Key(holder.key.clone()))
            }
            _ => Err(AttenuateError::HolderMismatch),
        }
    }

    fn append_as_holder(
        &self,
        holder: &HolderKey,
        caveats: Vec<Caveat>,
        next_seed: &[u8; 32],
    ) -> Result<Self, AttenuateError> {
        let signer = self.holder_signer(holder)?;
        self.append_signed(&signer, caveats, next_seed)
    }

    fn append_signed(
        &self,
        secret: &Signer,
        caveats: Vec<Caveat>,
        next_seed: &[u8; 32],
    ) -> Result<Self, AttenuateError> {
        let index = self.blocks.len();
        let prev = self.blocks.last().map(|b| &b.signature);
        Self::build(
            self.clone_prefix(),
            index,
            None,
            secret,
            prev,
            caveats,
            next_seed,
        )
    }

    fn clone_prefix(&self) -> (Vec<Block>, Authority, Vec<BlockId>) {
        (
            self.blocks.clone(),
            self.authority.clone(),
            self.ids.clone(),
        )
    }

    fn build(
        (mut blocks, mut authority, mut ids): (Vec<Block>, Authority, Vec<BlockId>),
        index: usize,
        kid: Option<Kid>,
        signer: &Signer,
        prev: Option<&Signature>,
        caveats: Vec<Caveat>,
        next_seed: &[u8; 32],
    ) -> Result<Self, AttenuateError> {
        if index >= MAX_BLOCKS {
            return Err(ParseError::TooManyBlocks.into());
        }
        let (caveats, encoded) = canonical_caveats(index, caveats)?;
        authority.push_block(&caveats)?;
        // A block that binds a holder names the holder's key as the next
        // signer, and the token then carries no secret.
        let holder = caveats.iter().find_map(|c| match c {
            Caveat::Holder(k) => Some(*k),
            _ => None,
        });
        let next = SigningKey::from_bytes(next_seed);
        let next_key = match holder {
            Some(k) => k.to_bytes(),
            None => next.verifying_key().to_bytes(),
        };
        let payload = encode_body(kid.as_ref(), &next_key, &encoded);
        let signature = signer.sign(&block_message(prev, &payload));
        let id = BlockId::derive(ids.last(), &signature.to_bytes());
        ids.push(id);
        blocks.push(Block {
            payload,
            kid,
            next_key,
            caveats,
            signature,
            id,
        });
        let proof = match holder {
            Some(_) => Proof::Bound,
            None => Proof::Secret(Zeroizing::new(*next_seed), Some(next)),
        };
        let bytes = encode_token(&blocks, &proof);
        if bytes.len() > MAX_TOKEN_BYTES {
            return Err(ParseError::TooLarge.into());
        }
        Ok(Self {
            blocks,
            proof,
            authority,
            ids,
            bytes,
        })
    }

    fn seal(&self) -> Result<Self, AttenuateError> {
        let secret = self.signer()?;
        self.seal_with(&secret)
    }

    fn seal_with(&self, secret: &Signer) -> Result<Self, AttenuateError> {
        let last = &self
            .blocks
            .last()
            .expect("a chain always has at least one block")
            .signature;
        let proof = Proof::Seal(secret.sign(&seal_message(last)));
        let bytes = encode_token(&self.blocks, &proof);
        // A seal is 32 bytes longer than the secret it replaces.
        if bytes.len() > MAX_TOKEN_BYTES {
            return Err(ParseError::TooLarge.into());
        }
        Ok(Self {
            blocks: self.blocks.clone(),
            proof,
            authority: self.authority.clone(),
            ids: self.ids.clone(),
            bytes,
        })
    }

    fn to_text(&self) -> String {
        let mut s = String::with_capacity(TEXT_PREFIX.len() + self.bytes.len().div_ceil(3) * 4);
        s.push_str(TEXT_PREFIX);
        URL_SAFE_NO_PAD.encode_string(&self.bytes, &mut s);
        s
    }

    pub(crate) fn root_kid(&self) -> Kid {
        self.blocks[0]
            .kid
            .expect("parse guarantees block 0 has a kid")
    }
}

/// Parses one block's payload (spec/token.md §4): `[kid, next_key, caveats]`
/// for block 0, `[next_key, caveats]` after it.
fn parse_block(
    index: usize,
    payload: &[u8],
    signature: Signature,
    prev_id: Option<&BlockId>,
) -> Result<Block, VerifyError> {
    let mut r = Reader::new(payload);
    let kid = match (index, r.array("block body is not an array")?) {
        (0, 3) => Some(Kid(r.bytes_n::<8>("kid is not 8 bytes")?)),
        (1.., 2) => None,
        (_, 2 | 3) => return Err(ParseError::KidPlacement.into()),
        _ => {
            return Err(ParseError::Malformed(
                "block body is not [kid, next_key, caveats] or [next_key, caveats]",
            )
            .into());
        }
    };
    let next_key = r.bytes_n::<32>("next_key is not 32 bytes")?;
    if !sig::acceptable_key_bytes(&next_key) {
        return Err(ParseError::BadKey { block: index }.into());
    }
    let n = r.array("caveats is not an array")?;
    if n > MAX_CAVEATS_PER_BLOCK {
        return Err(ParseError::TooManyCaveats { block: index }.into());
    }
    let mut caveats = Vec::with_capacity(n);
    let mut prev: Option<&[u8]> = None;
    for _ in 0..n {
        let start = r.pos();
        let caveat = Caveat::read(&mut r, index)?;
        let encoded = r.slice(start, r.pos());
        // Caveats are in strictly ascending order of their encodings.
        match prev.map(|p| p.cmp(encoded)) {
            Some(std::cmp::Ordering::Equal) => {
                return Err(ParseError::DuplicateCaveat {
                    block: index,
                    kind: caveat.kind(),
                }
                .into());
            }
            Some(std::cmp::Ordering::Greater) => return Err(ParseError::NonCanonical.into()),
            _ => {}
        }
        prev = Some(encoded);
        caveats.push(caveat);
    }
    r.finish()?;
    check_duplicates(index, &caveats)?;
    // The holder a block binds must be the key that signs what follows.
    let holder_ok = caveats.iter().all(|c| match c {
        Caveat::Holder(k) => k.as_bytes() == &next_key,
        _ => true,
    });
    if !holder_ok {
        return Err(ChainError::HolderMismatch { block: index }.into());
    }
    let id = BlockId::derive(prev_id, &signature.to_bytes());
    Ok(Block {
        payload: payload.to_vec(),
        kid,
        next_key,
        caveats,
        signature,
        id,
    })
}

/// Decodes the text form (spec/token.md §2) into binary, with a specific
/// error for each common way text gets mangled.
pub(crate) fn decode_text(text: &str) -> Result<Vec<u8>, ParseError> {
    if text.len() > MAX_TOKEN_TEXT {
        return Err(ParseError::TooLarge);
    }
    let body = text
        .strip_prefix(TEXT_PREFIX)
        .ok_or(ParseError::BadPrefix)?;
    if let Some(b) = body
        .bytes()
        .find(|b| matches!(b, b'=' | b'+' | b'/') || b.is_ascii_whitespace())
    {
        return Err(match b {
            b'=' => ParseError::Base64Padding,
            b'+' | b'/' => ParseError::Base64StandardAlphabet,
            _ => ParseError::Base64Whitespace,
        });
    }
    URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| ParseError::Base64Invalid)
}

/// What every token view can show without a key.
macro_rules! inspect_methods {
    () => {
        /// The effective authority of the whole chain.
        pub fn authority(&self) -> &Authority {
            &self.chain.authority
        }

        /// The number of blocks, authority block included.
        pub fn len(&self) -> usize {
            self.chain.blocks.len()
        }

        /// Always false: a token has at least one block.
        pub fn is_empty(&self) -> bool {
            false
        }

        /// The id of each block, authority block first.
        pub fn block_ids(&self) -> &[BlockId] {
            &self.chain.ids
        }

        /// The caveats each block declares, authority block first.
        pub fn block_caveats(&self) -> impl Iterator<Item = &[Caveat]> {
            self.chain.blocks.iter().map(|b| b.caveats.as_slice())
        }

        /// The key id named by the authority block.
        pub fn root_kid(&self) -> Kid {
            self.chain.root_kid()
        }

        /// The holder key the token is bound to, if it is bound. A bound
        /// token is attenuated, sealed and used only with that key's secret.
        pub fn holder(&self) -> Option<&HolderPublicKey> {
            self.chain.authority.holder()
        }

        /// Signs a proof of possession for `request` at Unix second `ts`,
        /// for the verifier known as `audience`, with the holder's secret.
        /// The proof covers this token's last block.
        pub fn prove(
            &self,
            holder: &HolderKey,
            audience: &Audience,
            request: &Request,
            ts: u64,
        ) -> Result<HolderProof, ProveError> {
            let last = self.check_holder(holder)?;
            HolderProof::sign(holder, audience, &last, request, ts)
        }

        fn check_holder(&self, holder: &HolderKey) -> Result<BlockId, ProveError> {
            match self.holder() {
                None => Err(ProveError::Unbound),
                Some(k) if *k != holder.public() => Err(ProveError::HolderMismatch),
                Some(_) => Ok(*self
                    .chain
                    .ids
                    .last()
                    .expect("a chain always has at least one block")),
            }
        }

        /// Whether the token is sealed (no further blocks may be appended).
        pub fn is_sealed(&self) -> bool {
            matches!(self.chain.proof, Proof::Seal(_))
        }

        /// The canonical binary form.
        pub fn to_bytes(&self) -> &[u8] {
            &self.chain.bytes
        }

        /// The text form: `baton_v1_` and unpadded base64url.
        pub fn to_text(&self) -> String {
            self.chain.to_text()
        }
    };
}

/// A token whose signatures have **not** been checked. Good for inspecting
/// and for attenuating offline; never for authorizing.
#[derive(Clone)]
pub struct UnverifiedToken {
    pub(crate) chain: Chain,
}

impl UnverifiedToken {
    /// Parses the text form, checking everything but signatures.
    pub fn from_text(text: &str) -> Result<Self, VerifyError> {
        Self::from_bytes(&decode_text(text)?)
    }

    /// Parses the binary form, checking everything but signatures.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VerifyError> {
        Ok(Self {
            chain: Chain::from_bytes(bytes)?,
        })
    }

    inspect_methods!();

    /// Appends a block with `caveats`, signed with this token's proof secret,
    /// under a fresh ephemeral key. Refuses a block that would widen authority.
    pub fn attenuate(&self, caveats: Vec<Caveat>) -> Result<Self, AttenuateError> {
        let seed = keys::random_seed().map_err(|_| AttenuateError::Rng)?;
        self.attenuate_seeded(caveats, &seed)
    }

    /// [`Self::attenuate`] with a caller-chosen ephemeral seed. For
    /// reproducible test vectors only (feature `forge`): a seed must be
    /// uniformly random and never reused.
    #[cfg(feature = "forge")]
    pub fn attenuate_with_seed(
        &self,
        caveats: Vec<Caveat>,
        seed: &[u8; 32],
    ) -> Result<Self, AttenuateError> {
        self.attenuate_seeded(caveats, seed)
    }

    pub(crate) fn attenuate_seeded(
        &self,
        caveats: Vec<Caveat>,
        seed: &[u8; 32],
    ) -> Result<Self, AttenuateError> {
        Ok(Self {
            chain: self.chain.append(caveats, seed)?,
        })
    }

    /// Seals the token: replaces the proof secret with a signature, so no
    /// block can follow.
    pub fn seal(&self) -> Result<Self, AttenuateError> {
        Ok(Self {
            chain: self.chain.seal()?,
        })
    }

    /// Appends a block to a holder-bound token, signed with the holder's
    /// secret key. The block must declare a holder again: the same key to
    /// narrow the token for its own use, or a child's key to delegate.
    pub fn attenuate_as_holder(
        &self,
        holder: &HolderKey,
        caveats: Vec<Caveat>,
    ) -> Result<Self, AttenuateError> {
        let seed = keys::random_seed().map_err(|_| AttenuateError::Rng)?;
        Ok(Self {
            chain: self.chain.append_as_holder(holder, caveats, &seed)?,
        })
    }

    /// Seals a holder-bound token with the holder's secret key.
    pub fn seal_as_holder(&self, holder: &HolderKey) -> Result<Self, AttenuateError> {
        let signer = self.chain.holder_signer(holder)?;
        Ok(Self {
            chain: self.chain.seal_with(&signer)?,
        })
    }
}

impl std::fmt::Debug for UnverifiedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "UnverifiedToken({} blocks, kid {})",
            self.len(),
            self.root_kid()
        )
    }
}

/// A token whose every signature and proof has been verified against a
/// trusted root key. Cheap to clone.
#[derive(Clone)]
pub struct Token {
    pub(crate) chain: Arc<Chain>,
}

impl Token {
    /// Mints a root token: block 0, signed by `root`, declaring `caveats`.
    pub fn mint(root: &RootKey, caveats: Vec<Caveat>) -> Result<Self, AttenuateError> {
        let seed = keys::random_seed().map_err(|_| AttenuateError::Rng)?;
        Self::mint_seeded(root, caveats, &seed)
    }

    /// [`Self::mint`] with a caller-chosen ephemeral seed. For reproducible
    /// test vectors only (feature `forge`).
    #[cfg(feature = "forge")]
    pub fn mint_with_seed(
        root: &RootKey,
        caveats: Vec<Caveat>,
        seed: &[u8; 32],
    ) -> Result<Self, AttenuateError> {
        Self::mint_seeded(root, caveats, seed)
    }

    pub(crate) fn mint_seeded(
        root: &RootKey,
        caveats: Vec<Caveat>,
        seed: &[u8; 32],
    ) -> Result<Self, AttenuateError> {
        let empty = (Vec::new(), Authority::default(), Vec::new());
        let signer = Signer::Key(root.key.clone());
        let chain = Chain::build(empty, 0, Some(root.kid()), &signer, None, caveats, seed)?;
        Ok(Self {
            chain: Arc::new(chain),
        })
    }

    inspect_methods!();

    /// Appends a block offline; see [`UnverifiedToken::attenuate`]. The
    /// child is as verified as its parent: only this holder's own new
    /// signature was added.
    pub fn attenuate(&self, caveats: Vec<Caveat>) -> Result<Self, AttenuateError> {
        let seed = keys::random_seed().map_err(|_| AttenuateError::Rng)?;
        self.attenuate_seeded(caveats, &seed)
    }

    /// [`Self::attenuate`] with a caller-chosen seed. For test vectors only
    /// (feature `forge`).
    #[cfg(feature = "forge")]
    pub fn attenuate_with_seed(
        &self,
        caveats: Vec<Caveat>,
        seed: &[u8; 32],
    ) -> Result<Self, AttenuateError> {
        self.attenuate_seeded(caveats, seed)
    }

    pub(crate) fn attenuate_seeded(
        &self,
        caveats: Vec<Caveat>,
        seed: &[u8; 32],
    ) -> Result<Self, AttenuateError> {
        Ok(Self {
            chain: Arc::new(self.chain.append(caveats, seed)?),
        })
    }

    /// Seals the token.
    pub fn seal(&self) -> Result<Self, AttenuateError> {
        Ok(Self {
            chain: Arc::new(self.chain.seal()?),
        })
    }

    /// Appends a block to a holder-bound token with the holder's secret
    /// key; see [`UnverifiedToken::attenuate_as_holder`].
    pub fn attenuate_as_holder(
        &self,
        holder: &HolderKey,
        caveats: Vec<Caveat>,
    ) -> Result<Self, AttenuateError> {
        let seed = keys::random_seed().map_err(|_| AttenuateError::Rng)?;
        Ok(Self {
            chain: Arc::new(self.chain.append_as_holder(holder, caveats, &seed)?),
        })
    }

    /// Decides `request` with no clock skew allowance. Gateways normally use
    /// [`crate::Verifier::authorize`], which applies the verifier's skew.
    ///
    /// A holder-bound token is always refused here: checking its proof
    /// needs a verifier's audience and replay store (`proof_missing`
    /// without a proof, `proof_unavailable` with one).
    pub fn authorize(&self, request: &Request) -> Result<Authorization, AuthorizeError> {
        if self.chain.authority.holder().is_some() {
            return Err(match request.proof_input() {
                None => ProofError::Missing,
                Some(_) => ProofError::Unavailable,
            }
            .into());
        }
        Ok(self
            .chain
            .authority
            .authorize(request, 0, &self.chain.ids)?)
    }

    /// Forgets that the signatures were verified.
    pub fn to_unverified(&self) -> UnverifiedToken {
        UnverifiedToken {
            chain: (*self.chain).clone(),
        }
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({} blocks, kid {})", self.len(), self.root_kid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caveat::Unit;

    fn root() -> RootKey {
        RootKey::from_seed(&[1; 32])
    }

    #[test]
    fn text_errors_are_specific() {
        let t = Token::mint_seeded(&root(), vec![Caveat::tools(["a"]).unwrap()], &[2; 32]).unwrap();
        let text = t.to_text();
        assert!(UnverifiedToken::from_text(&text).is_ok());
        let code = |s: &str| UnverifiedToken::from_text(s).unwrap_err().code();
        assert_eq!(code(&text[1..]), "bad_prefix");
        assert_eq!(code(&format!("{text}=")), "base64_padding");
        assert_eq!(code(&format!("{text} ")), "base64_whitespace");
        assert_eq!(code(&format!("{text}\n")), "base64_whitespace");
        assert_eq!(
            code(&format!("{TEXT_PREFIX}ab+/")),
            "base64_standard_alphabet"
        );
        assert_eq!(code(&format!("{TEXT_PREFIX}a")), "base64_invalid");
        assert_eq!(
            code(&format!("{TEXT_PREFIX}{}", "A".repeat(MAX_TOKEN_TEXT))),
            "too_large"
        );
    }

    #[test]
    fn parse_round_trips_and_rejects_trailing_bytes() {
        let t = Token::mint_seeded(
            &root(),
            vec![
                Caveat::budget(Unit::Calls, 3),
                Caveat::tools(["*"]).unwrap(),
            ],
            &[2; 32],
        )
        .unwrap()
        .attenuate_seeded(vec![Caveat::Depth(0)], &[3; 32])
        .unwrap();
        let u = UnverifiedToken::from_bytes(t.to_bytes()).unwrap();
        assert_eq!(u.to_bytes(), t.to_bytes());
        let mut extra = t.to_bytes().to_vec();
        extra.push(0);
        assert_eq!(
            UnverifiedToken::from_bytes(&extra).unwrap_err().code(),
            "trailing_bytes"
        );
    }

    #[test]
    fn attenuating_a_parsed_token_signs_with_its_declared_key() {
        let root = root();
        let t = Token::mint_seeded(&root, vec![Caveat::tools(["a.*"]).unwrap()], &[2; 32]).unwrap();
        let parsed = UnverifiedToken::from_text(&t.to_text()).unwrap();
        let child = parsed
            .attenuate_seeded(vec![Caveat::tools(["a.b"]).unwrap()], &[3; 32])
            .unwrap();
        let sealed = parsed.seal().unwrap();
        // The same block as signing in-process: deterministic Ed25519.
        let direct = t
            .attenuate_seeded(vec![Caveat::tools(["a.b"]).unwrap()], &[3; 32])
            .unwrap();
        assert_eq!(child.to_bytes(), direct.to_bytes());
        assert_eq!(sealed.to_bytes(), t.seal().unwrap().to_bytes());
        let v = crate::Verifier::new(crate::Keyset::new().with(root.public()));
        assert!(v.verify(&child).is_ok());
        assert!(v.verify(&sealed).is_ok());
    }

    #[test]
    fn attenuate_refuses_widening_and_sealed() {
        let t = Token::mint_seeded(
            &root(),
            vec![Caveat::tools(["crm.*"]).unwrap(), Caveat::Depth(1)],
            &[2; 32],
        )
        .unwrap();
        let err = t
            .attenuate_seeded(vec![Caveat::tools(["email.send"]).unwrap()], &[3; 32])
            .unwrap_err();
        assert_eq!(err.code(), "widening_tools");
        let child = t.attenuate_seeded(vec![], &[3; 32]).unwrap();
        assert_eq!(
            child.attenuate_seeded(vec![], &[4; 32]).unwrap_err().code(),
            "depth_exceeded"
        );
        let sealed = t.seal().unwrap();
        assert_eq!(
            sealed.attenuate_seeded(vec![], &[3; 32]).unwrap_err(),
            AttenuateError::Sealed
        );
        let dup = t
            .attenuate_seeded(vec![Caveat::Depth(0), Caveat::Depth(0)], &[3; 32])
            .unwrap_err();
        assert_eq!(dup.code(), "duplicate_caveat");
    }
}
