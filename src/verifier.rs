//! Verification against a keyset, with revocation and a bounded cache of
//! verified signature chains (spec/token.md §6–§7).
//!
//! The cache remembers only that some exact bytes carried valid signatures
//! under some root key. Expiry, revocation and authorization are decided
//! afresh on every call, so a cached token that has expired or been revoked
//! is refused like any other. It never changes an answer: a signature is
//! valid under one rule whether it is checked alone or in any batch
//! (`sig`), so which blocks a cached prefix spares from the batch does not
//! matter (tests/cofactored.rs checks every cache state).

use std::collections::HashSet;
use std::sync::Arc;

use ed25519_dalek::{SigningKey, VerifyingKey};
use quick_cache::sync::Cache;

use crate::authority::{Authorization, Request};
use crate::error::{Denied, VerifyError};
use crate::keys::{BlockId, Keyset};
use crate::sig;
use crate::token::{
    Chain, Proof, Token, UnverifiedToken, block_message, decode_text, seal_message,
};

/// The verified-chain cache: whole tokens by the hash of their bytes, and
/// signature-chain prefixes by their chain hash (spec/token.md §7.3).
struct ChainCache {
    /// Token bytes hash to the chain and the root key it verified under.
    tokens: Cache<[u8; 32], (Arc<Chain>, [u8; 32])>,
    prefixes: Cache<[u8; 32], ()>,
}

/// Checks tokens against a set of trusted root keys.
///
/// ```
/// use baton::{Caveat, Keyset, Request, RootKey, Token, Unit, Verifier};
/// let root = RootKey::from_seed(&[7; 32]);
/// let token = Token::mint(&root, vec![Caveat::tools(["crm.*"]).unwrap(), Caveat::budget(Unit::Calls, 10)]).unwrap();
/// let child = token.attenuate(vec![Caveat::tools(["crm.read"]).unwrap()]).unwrap();
///
/// let verifier = Verifier::new(Keyset::new().with(root.public())).with_cache(1024);
/// let verified = verifier.verify_text(&child.to_text()).unwrap();
/// let ok = verifier.authorize(&verified, &Request::new("crm.read", 0).unwrap()).unwrap();
/// assert_eq!(ok.budgets.len(), 1);
/// assert!(verifier.authorize(&verified, &Request::new("crm.write", 0).unwrap()).is_err());
/// ```
pub struct Verifier {
    keys: Keyset,
    revoked: HashSet<BlockId>,
    skew: u64,
    cache: Option<ChainCache>,
}

impl Verifier {
    /// A verifier trusting `keys`, with no revocations, a 30-second clock
    /// skew allowance and no cache.
    pub fn new(keys: Keyset) -> Self {
        Self {
            keys,
            revoked: HashSet::new(),
            skew: 30,
            cache: None,
        }
    }

    /// Enables the verified-chain cache with room for `capacity` tokens
    /// (and as many chain prefixes).
    pub fn with_cache(mut self, capacity: usize) -> Self {
        self.cache = Some(ChainCache {
            tokens: Cache::new(capacity.max(1)),
            prefixes: Cache::new(capacity.max(1)),
        });
        self
    }

    /// Sets the clock skew allowance, in seconds, applied to `not_after` and `not_before`.
    pub fn with_skew(mut self, seconds: u64) -> Self {
        self.skew = seconds;
        self
    }

    /// Replaces the set of revoked block ids. A token is refused if any of
    /// its blocks is revoked, so revoking a block revokes its descendants.
    pub fn set_revoked(&mut self, revoked: impl IntoIterator<Item = BlockId>) {
        self.revoked = revoked.into_iter().collect();
    }

    /// Adds one revoked block id.
    pub fn revoke(&mut self, id: BlockId) {
        self.revoked.insert(id);
    }

    /// The clock skew allowance, in seconds.
    pub fn skew(&self) -> u64 {
        self.skew
    }

    /// The trusted keys.
    pub fn keyset(&self) -> &Keyset {
        &self.keys
    }

    /// The trusted keys, to change them in place (key rotation). Safe with
    /// the cache: a cached chain counts only while the keyset still holds
    /// the very key it was verified under.
    pub fn keyset_mut(&mut self) -> &mut Keyset {
        &mut self.keys
    }

    /// Parses and verifies a token in text form.
    pub fn verify_text(&self, text: &str) -> Result<Token, VerifyError> {
        self.verify_bytes(&decode_text(text)?)
    }

    /// Parses and verifies a token in binary form.
    pub fn verify_bytes(&self, bytes: &[u8]) -> Result<Token, VerifyError> {
        // The size cap comes before hashing, parsing or any crypto.
        if bytes.len() > crate::limits::MAX_TOKEN_BYTES {
            return Err(crate::error::ParseError::TooLarge.into());
        }
        let token_key = self.cache.as_ref().map(|_| *blake3::hash(bytes).as_bytes());
        if let (Some(cache), Some(k)) = (&self.cache, &token_key)
            && let Some((chain, root)) = cache.tokens.get(k)
            // The chain was verified under the key its kid named then; the
            // entry counts only while the keyset holds that same key.
            && self.root_key(&chain).is_ok_and(|key| key.as_bytes() == &root)
        {
            self.check_revoked(&chain)?;
            return Ok(Token { chain });
        }
        let chain = Chain::from_bytes(bytes)?;
        let root = self.verify_chain(&chain)?;
        let chain = Arc::new(chain);
        if let (Some(cache), Some(k)) = (&self.cache, token_key) {
            cache.tokens.insert(k, (chain.clone(), root.to_bytes()));
        }
        Ok(Token { chain })
    }

    /// Verifies the signatures of a token parsed earlier.
    pub fn verify(&self, token: &UnverifiedToken) -> Result<Token, VerifyError> {
        self.verify_bytes(token.to_bytes())
    }

    /// Decides `request` against a verified token, applying this verifier's
    /// clock skew. Revocation is checked again, so a token verified before a
    /// revocation is refused after it.
    pub fn authorize(
        &self,
        token: &Token,
        request: &Request,
    ) -> Result<Authorization, AuthorizeError> {
        self.check_revoked(&token.chain)?;
        Ok(token
            .chain
            .authority
            .authorize(request, self.skew, &token.chain.ids)?)
    }

    fn root_key(&self, chain: &Chain) -> Result<VerifyingKey, VerifyError> {
        self.keys
            .get(&chain.root_kid())
            .map(|k| k.key)
            .ok_or(VerifyError::UnknownKid)
    }

    fn check_revoked(&self, chain: &Chain) -> Result<(), VerifyError> {
        if self.revoked.is_empty() {
            return Ok(());
        }
        match chain.ids.iter().position(|id| self.revoked.contains(id)) {
            Some(block) => Err(VerifyError::Revoked { block }),
            None => Ok(()),
        }
    }

    /// Checks every signature and the proof; returns the root key used.
    fn verify_chain(&self, chain: &Chain) -> Result<VerifyingKey, VerifyError> {
        let root = self.root_key(chain)?;
        // prefix[i] names "blocks 0..=i under this root key", so a hit means
        // those signatures were checked before and need not be again.
        let prefixes = self.cache.as_ref().map(|_| prefix_hashes(&root, chain));
        let first_unverified = match (&self.cache, &prefixes) {
            (Some(cache), Some(p)) => p
                .iter()
                .rposition(|h| cache.prefixes.get(h).is_some())
                .map_or(0, |i| i + 1),
            _ => 0,
        };
        let n = chain.blocks.len();
        let mut keys = Vec::with_capacity(n + 1);
        let mut messages = Vec::with_capacity(n + 1);
        let mut sigs = Vec::with_capacity(n + 1);
        for i in first_unverified..n {
            let block = &chain.blocks[i];
            keys.push(if i == 0 {
                root
            } else {
                block_key(chain, i - 1)?
            });
            let prev = (i > 0).then(|| &chain.blocks[i - 1].signature);
            messages.push(block_message(prev, &block.payload));
            sigs.push(block.signature);
        }
        let last = &chain.blocks[n - 1];
        match &chain.proof {
            Proof::Secret(secret, _) => {
                // Deriving the public half proves the holder has the last
                // ephemeral secret; dropping trailing blocks breaks this.
                if SigningKey::from_bytes(secret).verifying_key().as_bytes() != &last.next_key {
                    return Err(VerifyError::BadProof);
                }
            }
            Proof::Seal(seal) => {
                keys.push(block_key(chain, n - 1)?);
                messages.push(seal_message(&last.signature));
                sigs.push(*seal);
            }
        }
        let message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        if !sig::verify_all(&keys, &message_refs, &sigs) {
            // Failure is the slow path: find out whether the seal is what failed.
            let seal_failed = matches!(chain.proof, Proof::Seal(_))
                && !sig::verify_all(
                    &keys[keys.len() - 1..],
                    &message_refs[keys.len() - 1..],
                    &sigs[keys.len() - 1..],
                );
            return Err(if seal_failed {
                VerifyError::BadProof
            } else {
                VerifyError::BadSignature
            });
        }
        if let (Some(cache), Some(p)) = (&self.cache, &prefixes) {
            for h in &p[first_unverified..] {
                cache.prefixes.insert(*h, ());
            }
        }
        self.check_revoked(chain)?;
        Ok(root)
    }
}

/// The public key named by block `i`, decompressed.
fn block_key(chain: &Chain, i: usize) -> Result<VerifyingKey, VerifyError> {
    sig::decompress_key(&chain.blocks[i].next_key).ok_or(VerifyError::Parse(
        crate::error::ParseError::BadKey { block: i },
    ))
}

/// `h_0 = H(root key, payload_0, sig_0)`, `h_i = H(h_{i-1}, payload_i, sig_i)`.
fn prefix_hashes(root: &VerifyingKey, chain: &Chain) -> Vec<[u8; 32]> {
    let mut out: Vec<[u8; 32]> = Vec::with_capacity(chain.blocks.len());
    for (i, b) in chain.blocks.iter().enumerate() {
        let mut h = blake3::Hasher::new_derive_key("baton/v1 verified prefix");
        match out.last() {
            None => h.update(root.as_bytes()),
            Some(prev) => h.update(prev),
        };
        // Length-prefix the payload so that (payload, signature) splits one way only.
        h.update(&(b.payload.len() as u64).to_le_bytes());
        h.update(&b.payload);
        h.update(&b.signature.to_bytes());
        debug_assert!(i == out.len());
        out.push(*h.finalize().as_bytes());
    }
    out
}

/// Why [`Verifier::authorize`] said no: the token is no longer valid
/// (revoked), or it does not allow the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorizeError {
    /// The token is invalid (for authorize: revoked).
    #[error(transparent)]
    Invalid(#[from] VerifyError),
    /// The token does not allow the request.
    #[error(transparent)]
    Denied(#[from] Denied),
}

impl AuthorizeError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(e) => e.code(),
            Self::Denied(e) => e.code(),
        }
    }
}
