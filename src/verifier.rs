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
use crate::error::{Denied, ProofError, VerifyError};
use crate::holder::HolderPublicKey;
use crate::keys::{BlockId, Keyset};
use crate::proof::{Audience, ProofId, proof_message, request_hash};
use crate::replay::ReplayStore;
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
    /// Who this verifier is, for proofs of possession; without one, bound
    /// tokens are refused with `proof_unavailable`.
    audience: Option<Audience>,
    require_holder: bool,
    window: ProofWindow,
    replay: ReplayStore,
}

/// How far a proof's time may lie from the verifier's clock.
#[derive(Debug, Clone, Copy)]
struct ProofWindow {
    past: u64,
    future: u64,
}

/// The default proof window: 60 seconds back, 10 ahead.
pub const DEFAULT_PROOF_PAST: u64 = 60;
/// See [`DEFAULT_PROOF_PAST`].
pub const DEFAULT_PROOF_FUTURE: u64 = 10;
/// The widest window a verifier accepts, whatever it is configured with.
pub const MAX_PROOF_PAST: u64 = 300;
/// See [`MAX_PROOF_PAST`].
pub const MAX_PROOF_FUTURE: u64 = 60;

/// What a bound token's proof check needs once its form and time are
/// known good: the signature to verify, and the replay entry to record.
struct ProofCheck {
    key: VerifyingKey,
    message: [u8; 136],
    signature: ed25519_dalek::Signature,
    holder: HolderPublicKey,
    nonce: [u8; 16],
    expires: u64,
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
            audience: None,
            require_holder: false,
            window: ProofWindow {
                past: DEFAULT_PROOF_PAST,
                future: DEFAULT_PROOF_FUTURE,
            },
            replay: ReplayStore::default(),
        }
    }

    /// Sets this verifier's identity. Proofs of possession name it, so a
    /// proof made for another verifier fails here (`proof_invalid`).
    pub fn with_audience(mut self, audience: Audience) -> Self {
        self.audience = Some(audience);
        self
    }

    /// Sets this verifier's identity in place; see [`Self::with_audience`].
    pub fn set_audience(&mut self, audience: Audience) {
        self.audience = Some(audience);
    }

    /// Refuses tokens that are not bound to a holder (`holder_required`).
    pub fn with_require_holder(mut self, require: bool) -> Self {
        self.require_holder = require;
        self
    }

    /// Sets how old (`past`) and how far ahead (`future`) of the request
    /// time a proof's time may be, in seconds. Capped at
    /// [`MAX_PROOF_PAST`] and [`MAX_PROOF_FUTURE`]: a wider window would
    /// only lengthen how long a captured proof could be tried.
    pub fn with_proof_window(mut self, past: u64, future: u64) -> Self {
        self.window = ProofWindow {
            past: past.min(MAX_PROOF_PAST),
            future: future.min(MAX_PROOF_FUTURE),
        };
        self
    }

    /// Replaces the replay store with one for `capacity` live proofs, at
    /// most `per_holder` from one holder.
    pub fn with_replay_capacity(mut self, capacity: usize, per_holder: usize) -> Self {
        self.replay = ReplayStore::new(capacity, per_holder);
        self
    }

    /// The audience, if set.
    pub fn audience(&self) -> Option<&Audience> {
        self.audience.as_ref()
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
        if let Some(token) = self.cached(token_key.as_ref()) {
            return token;
        }
        let chain = Chain::from_bytes(bytes)?;
        let (root, _) = self.verify_chain(&chain, None)?;
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
    ///
    /// For a token bound to a holder, `request` must carry the holder's
    /// proof ([`Request::with_proof`]); it is checked here, signature
    /// included, and recorded in the replay store once everything else
    /// has passed. The cache never skips this.
    pub fn authorize(
        &self,
        token: &Token,
        request: &Request,
    ) -> Result<Authorization, AuthorizeError> {
        self.check_revoked(&token.chain)?;
        let check = self.proof_check(&token.chain, request)?;
        if let Some(c) = &check
            && !sig::verify_all(&[c.key], &[&c.message], &[c.signature])
        {
            return Err(ProofError::Invalid.into());
        }
        self.finish_authorize(&token.chain, request, check.as_ref())
    }

    /// Checks a bound token's proof for `request` and records it in the
    /// replay store, without deciding the request: for a service whose
    /// endpoints authorize (or not) after authenticating, like the ledger.
    /// Returns the proof's id, or `None` for an unbound token. The order of
    /// errors is that of [`Self::authorize`] up to the proof checks; the
    /// proof is recorded even if the request is later denied.
    pub fn check_proof(
        &self,
        token: &Token,
        request: &Request,
    ) -> Result<Option<ProofId>, AuthorizeError> {
        self.check_revoked(&token.chain)?;
        let Some(c) = self.proof_check(&token.chain, request)? else {
            return Ok(None);
        };
        if !sig::verify_all(&[c.key], &[&c.message], &[c.signature]) {
            return Err(ProofError::Invalid.into());
        }
        self.replay
            .insert(&c.holder, &c.nonce, c.expires, request.time())?;
        Ok(Some(ProofId::of(&c.holder, &c.nonce)))
    }

    /// Decides `request` for a token whose proof, if it is bound, the caller
    /// has already checked with [`Self::check_proof`] for this same
    /// request. Crate-private: only the ledger's HTTP layer, which checks
    /// the proof when it authenticates, uses it.
    #[cfg(feature = "server")]
    pub(crate) fn authorize_after_proof(
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

    /// Verifies a token in text form and decides `request` in one call:
    /// the gateway path. For a bound token the proof's signature is checked
    /// in the same batch as the chain's; if that batch fails, the chain is
    /// checked alone so the error names the part that failed. Errors come
    /// in the order of spec/token.md §12.4: every token error first.
    pub fn authorize_text(
        &self,
        text: &str,
        request: &Request,
    ) -> Result<(Token, Authorization), AuthorizeError> {
        let bytes = decode_text(text).map_err(VerifyError::from)?;
        if bytes.len() > crate::limits::MAX_TOKEN_BYTES {
            return Err(VerifyError::from(crate::error::ParseError::TooLarge).into());
        }
        let token_key = self
            .cache
            .as_ref()
            .map(|_| *blake3::hash(&bytes).as_bytes());
        if let Some(token) = self.cached(token_key.as_ref()) {
            let token = token?;
            let auth = self.authorize(&token, request)?;
            return Ok((token, auth));
        }
        let chain = Chain::from_bytes(&bytes)?;
        let check = match self.proof_check(&chain, request) {
            Ok(c) => c,
            Err(e) => {
                // Token errors come first: check the chain alone.
                self.verify_chain(&chain, None)?;
                return Err(e.into());
            }
        };
        let extra = check.as_ref().map(|c| (c.key, &c.message[..], c.signature));
        let (root, proof_ok) = self.verify_chain(&chain, extra)?;
        let chain = Arc::new(chain);
        if let (Some(cache), Some(k)) = (&self.cache, token_key) {
            cache.tokens.insert(k, (chain.clone(), root.to_bytes()));
        }
        if !proof_ok {
            return Err(ProofError::Invalid.into());
        }
        let auth = self.finish_authorize(&chain, request, check.as_ref())?;
        Ok((Token { chain }, auth))
    }

    /// The cached token for these bytes, if the cache holds it under a key
    /// the keyset still holds; revocation is checked again.
    fn cached(&self, token_key: Option<&[u8; 32]>) -> Option<Result<Token, VerifyError>> {
        let (cache, k) = (self.cache.as_ref()?, token_key?);
        let (chain, root) = cache.tokens.get(k)?;
        // The chain was verified under the key its kid named then; the
        // entry counts only while the keyset holds that same key.
        if !self
            .root_key(&chain)
            .is_ok_and(|key| key.as_bytes() == &root)
        {
            return None;
        }
        Some(self.check_revoked(&chain).map(|()| Token { chain }))
    }

    /// Everything about a bound token's proof that needs no signature
    /// check, in the reporting order of spec/token.md §12.4. `None` for an
    /// unbound token (whose proof, if any, is ignored).
    fn proof_check(
        &self,
        chain: &Chain,
        request: &Request,
    ) -> Result<Option<ProofCheck>, ProofError> {
        let Some(holder) = chain.authority.holder() else {
            return if self.require_holder {
                Err(ProofError::HolderRequired)
            } else {
                Ok(None)
            };
        };
        let proof = match request.proof_input() {
            None => return Err(ProofError::Missing),
            Some(Err(_)) => return Err(ProofError::Malformed),
            Some(Ok(p)) => p,
        };
        let audience = self.audience.as_ref().ok_or(ProofError::Unavailable)?;
        let now = request.time();
        if proof.ts() < now.saturating_sub(self.window.past)
            || proof.ts() > now.saturating_add(self.window.future)
        {
            return Err(ProofError::OutsideWindow);
        }
        // The holder key is the chain's last next_key, already checked on
        // its bytes; a key that is not a curve point verifies nothing.
        let key = holder.verifying_key().ok_or(ProofError::Invalid)?;
        let last = chain
            .ids
            .last()
            .expect("a chain always has at least one block");
        Ok(Some(ProofCheck {
            key,
            message: proof_message(
                audience,
                last,
                proof.ts(),
                proof.nonce(),
                &request_hash(request),
            ),
            signature: *proof.signature(),
            holder: *holder,
            nonce: *proof.nonce(),
            expires: proof.ts().saturating_add(self.window.past),
        }))
    }

    /// The decision, then (for a bound token) the replay record: the insert
    /// is the last check, so a refused request never uses up a proof.
    fn finish_authorize(
        &self,
        chain: &Chain,
        request: &Request,
        check: Option<&ProofCheck>,
    ) -> Result<Authorization, AuthorizeError> {
        let auth = chain.authority.authorize(request, self.skew, &chain.ids)?;
        if let Some(c) = check {
            self.replay
                .insert(&c.holder, &c.nonce, c.expires, request.time())?;
        }
        Ok(auth)
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

    /// Checks every signature and the proof; returns the root key used,
    /// and whether `extra` verified. `extra` is a holder's proof of
    /// possession to check in the same batch; if the batch fails, the chain
    /// is checked again alone, so a chain error is reported as such and
    /// otherwise the proof is the part that failed.
    fn verify_chain(
        &self,
        chain: &Chain,
        extra: Option<(VerifyingKey, &[u8], ed25519_dalek::Signature)>,
    ) -> Result<(VerifyingKey, bool), VerifyError> {
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
            // Possession is proved per request, by the holder's proof.
            Proof::Bound => {}
        }
        let mut message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        if let Some((key, message, signature)) = extra {
            keys.push(key);
            message_refs.push(message);
            sigs.push(signature);
            if !sig::verify_all(&keys, &message_refs, &sigs) {
                // Failure is the slow path: name the part that failed.
                let (root, _) = self.verify_chain(chain, None)?;
                return Ok((root, false));
            }
        } else if !sig::verify_all(&keys, &message_refs, &sigs) {
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
        Ok((root, true))
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
/// (revoked), its holder's proof was refused, or it does not allow the
/// request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorizeError {
    /// The token is invalid (for authorize: revoked).
    #[error(transparent)]
    Invalid(#[from] VerifyError),
    /// The holder's proof of possession was refused, or a bound token was
    /// required.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// The token does not allow the request.
    #[error(transparent)]
    Denied(#[from] Denied),
}

impl AuthorizeError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(e) => e.code(),
            Self::Proof(e) => e.code(),
            Self::Denied(e) => e.code(),
        }
    }
}
